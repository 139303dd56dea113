//! The link a source driver (the shared connection's, R31, R32) keeps to an entry's handler.

use std::sync::Arc;

use crate::core::{LifetimePlace, Resync, StreamStatus, Version, Versioning};
use crate::runtime::driver::{Hint, Shared};
use crate::runtime::erased::Data;
use crate::runtime::lifecycle::{EntryHandle, HandleState};
use crate::runtime::signal;

/// What a source driver (the shared connection's, R31, R32) needs of an entry's handler,
/// whatever the handle's state: report the source's status, resync the entry, the version to
/// resume from. Every decision is the core's; this only carries the calls. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SourceLink {
    shared: Arc<Shared>,
    place: LifetimePlace,
    changed: signal::Notifier,
}

impl<S: HandleState, T: Data, M> EntryHandle<S, T, M> {
    /// The link a source driver keeps to this handler.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn source_link(&self) -> SourceLink {
        SourceLink {
            shared: Arc::clone(&self.shared),
            place: self.place,
            changed: self.changed.clone(),
        }
    }
}

#[cfg_attr(not(feature = "ws"), allow(dead_code))]
impl SourceLink {
    pub(crate) fn new(
        shared: Arc<Shared>,
        place: LifetimePlace,
        changed: signal::Notifier,
    ) -> Self {
        SourceLink {
            shared,
            place,
            changed,
        }
    }

    fn hint(&self) -> Hint<'_> {
        Hint {
            lifetime: self.place.lifetime(),
            changed: &self.changed,
        }
    }

    /// Report the source's status (R28); false once the entry is gone for the handler.
    pub(crate) fn report(&self, status: StreamStatus) -> bool {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            (
                state.cache.stream_status(now, handler, status).is_ok(),
                false,
            )
        })
    }

    /// The source may have missed messages: the entry resyncs (R32).
    pub(crate) fn resync(&self) -> bool {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            (state.cache.source_resync(now, handler).is_ok(), false)
        })
    }

    /// The version a resumed subscription replays from, on an endpoint that resumes.
    /// Tell `hook` of each resume the core asks of the entry's source.
    pub(crate) fn on_resume(&self, hook: crate::runtime::driver::ResumeHook) {
        self.shared
            .lock()
            .add_resume_hook(self.place.lifetime(), hook);
    }

    /// The source replayed what a resume asked for.
    pub(crate) fn resync_done(&self) -> bool {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            (state.cache.resync_done(now, handler).is_ok(), false)
        })
    }

    pub(crate) fn resume_from(&self) -> Option<Version> {
        let handler = self.place.handler();
        self.shared.lock().cache.resume_from(handler)
    }

    /// The entry's endpoint's version rules (`None`: unversioned, or the entry is gone).
    fn versioning(&self) -> Option<Versioning> {
        let state = self.shared.lock();
        let entry = state.cache.lifetime_entry(self.place.lifetime())?;
        state.cache.endpoint(entry.endpoint).versions
    }

    /// Whether the entry's endpoint resyncs by resuming (only then does the core ask its
    /// source to replay).
    pub(crate) fn resumes(&self) -> bool {
        self.versioning().map(|v| v.resync) == Some(Resync::Resume)
    }

    /// Whether the entry's endpoint declares versions (a queue overflow then resyncs it; an
    /// unversioned one fails, R33).
    pub(crate) fn is_versioned(&self) -> bool {
        self.versioning().is_some()
    }

    /// Whether the entry is resyncing (its displayed stream status says so).
    pub(crate) fn resyncing(&self) -> bool {
        let state = self.shared.lock();
        let entry = state.cache.lifetime_entry(self.place.lifetime());
        entry.is_some_and(|entry| matches!(entry.stream, StreamStatus::Resyncing { .. }))
    }
}
