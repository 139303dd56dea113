//! An entry fed by a source's own task, with no lifecycle handler and no task of its own (R21,
//! R24–R26, R33): the source hands each message to the entry's [`Feed`], which holds it until
//! the first data, then delivers it by the same rules as a stream a handler attaches
//! ([`EntryHandle::stream`], [`EntryHandle::stream_versioned`]), and ends the attachment when
//! the entry is removed or its lifecycle restarted. A streaming entry then costs its entry and a
//! few hundred bytes, where a handler's future and task cost kilobytes.
//!
//! [`EntryHandle::stream`]: crate::EntryHandle::stream
//! [`EntryHandle::stream_versioned`]: crate::EntryHandle::stream_versioned

use std::marker::PhantomData;
use std::sync::Arc;

use crate::core::{Attachment, CacheKey, HandlerOutcome, LifetimePlace, Received};
use crate::core::{StreamEndReason, Versioning};
use crate::runtime::applier::{Applier, Destination, Refusal, deliver_counted, land_first_data};
pub(crate) use crate::runtime::driver::ResumeHook;
use crate::runtime::driver::Shared;
use crate::runtime::erased::Data;
#[cfg(feature = "ws")]
pub(crate) use crate::runtime::error::panic_message;
use crate::runtime::signal;
use crate::runtime::source_link::SourceLink;
use crate::runtime::stream::MAX_BUFFERED;

/// What a source's task does with one entry's messages ([`Feed`] carries them out). Every method
/// returns `false` once the attachment has ended: the source then forgets the entry.
#[cfg_attr(not(feature = "ws"), allow(dead_code))]
pub(crate) trait EntryInlet<Msg>: Send {
    /// A message: held before the entry's first data, delivered after it.
    fn message(&mut self, message: Msg) -> bool;
    /// An item the source could not read for this entry (a bad frame): counted, traced.
    fn skipped(&mut self, reason: String) -> bool;
    /// The entry's first data landed: what was held is delivered.
    fn data_loaded(&mut self) -> bool;
    /// The source cannot feed the entry: the attachment ends, failed, with `error`.
    fn failed(&mut self, error: String);
    /// The entry was removed, or (`restarted`) its lifecycle restarted (R30): the attachment
    /// ends.
    fn detached(&mut self, restarted: bool);
}

/// The runtime's side of a source attached to one entry lifetime, kept with the lifetime: told
/// when the first data lands, detached at removal or restart. Called under the cache's lock, so
/// it only passes the word on to the source's task.
pub(crate) trait AttachedSource: Send + Sync {
    /// The lifetime's first data landed.
    fn data_loaded(&self);
    /// The lifetime ended, or (`restarted`) its lifecycle restarted (R30).
    fn detach(self: Box<Self>, restarted: bool);
}

/// What a source is given for a new entry lifetime (under the cache's lock: it must not take
/// it).
pub(crate) struct SourceStart {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: CacheKey,
    pub(crate) place: LifetimePlace,
    pub(crate) changed: signal::Notifier,
    /// The entry's endpoint's version rules (`None`: unversioned).
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) versioning: Option<Versioning>,
}

impl SourceStart {
    /// The link the source's driver keeps to the entry: its status, its resyncs (R28, R32).
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn link(&self) -> SourceLink {
        SourceLink::new(Arc::clone(&self.shared), self.place, self.changed.clone())
    }

    /// The entry's feed, delivering with `apply`.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub(crate) fn feed<T: Data, Msg, A: Applier<T, Msg>>(&self, apply: A) -> Feed<T, Msg, A> {
        let attachment =
            Attachment::before_data_bounded(self.place.handler(), MAX_BUFFERED, apply.overflow());
        Feed {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            place: self.place,
            changed: self.changed.clone(),
            attachment: Some(attachment),
            attached: false,
            apply,
            _data: PhantomData,
        }
    }
}

/// What a source attaching to a lifetime gives back: its side kept with the lifetime, and the
/// hook the core's resumes of the entry go to, if its endpoint resyncs by resuming.
pub(crate) struct Attached {
    pub(crate) source: Box<dyn AttachedSource>,
    pub(crate) resume: Option<ResumeHook>,
}

/// One entry's attachment to a source that feeds it: the core's [`Attachment`] decides what is
/// held and how it ends; the [`Applier`] delivers.
pub(crate) struct Feed<T, Msg, A> {
    shared: Arc<Shared>,
    key: CacheKey,
    place: LifetimePlace,
    changed: signal::Notifier,
    /// `None` once ended.
    attachment: Option<Attachment<Msg>>,
    /// Whether the first data landed (and the attachment was reported attached).
    attached: bool,
    apply: A,
    _data: PhantomData<fn(T)>,
}

impl<T: Data, Msg, A: Applier<T, Msg>> Feed<T, Msg, A> {
    /// Carry out a step of the attachment: `Err` ends it (`Ok(Some(reason))` too); `false`
    /// then.
    fn step(&mut self, outcome: Result<Option<StreamEndReason>, Refusal>) -> bool {
        let reason = match outcome {
            Ok(None) => return true,
            Ok(Some(reason)) | Err(Refusal::Ends(reason)) => reason,
            Err(Refusal::Gone) => self.gone(),
        };
        self.end(reason);
        false
    }

    /// Why the attachment ends now that the entry refused it: the lifetime was restarted (it
    /// still lives) or removed.
    fn gone(&mut self) -> StreamEndReason {
        let lives = self
            .shared
            .lock()
            .cache
            .lifetime_entry(self.place.lifetime())
            .is_some();
        match self.attachment.as_mut() {
            Some(_) if lives => StreamEndReason::HandlerRestarted,
            Some(attachment) => attachment.removed(),
            None => StreamEndReason::EntryRemoved,
        }
    }

    /// End the attachment: its end is recorded, and the lifecycle it stands for is over.
    fn end(&mut self, reason: StreamEndReason) {
        let Some(attachment) = self.attachment.take() else {
            return;
        };
        let handler = self.place.handler();
        let end = attachment.end(reason);
        let key = &self.key;
        self.shared.with(|state, now| {
            state.cache.stream_ended(now, key, handler, &end);
            state
                .cache
                .lifecycle_ended(now, key, handler, HandlerOutcome::Finished);
        });
    }
}

impl<T: Data, Msg: Send, A: Applier<T, Msg> + Send> EntryInlet<Msg> for Feed<T, Msg, A> {
    fn message(&mut self, message: Msg) -> bool {
        let Some(attachment) = self.attachment.as_mut() else {
            return false;
        };
        let Received::Apply(message) = attachment.message(message) else {
            return true;
        };
        let to = Destination {
            shared: &self.shared,
            place: self.place,
            changed: &self.changed,
        };
        let outcome = deliver_counted(&to, &mut self.apply, attachment, [message]);
        self.step(outcome.map(|()| None))
    }

    fn skipped(&mut self, reason: String) -> bool {
        let Some(attachment) = self.attachment.as_mut() else {
            return false;
        };
        attachment.skipped();
        let (key, lifetime) = (&self.key, self.place.lifetime());
        self.shared
            .with(|state, now| state.cache.stream_skipped(now, key, lifetime, reason));
        true
    }

    fn data_loaded(&mut self) -> bool {
        let Some(attachment) = self.attachment.as_mut() else {
            return false;
        };
        if self.attached {
            return true;
        }
        self.attached = true;
        let to = Destination {
            shared: &self.shared,
            place: self.place,
            changed: &self.changed,
        };
        let outcome = land_first_data(&to, &mut self.apply, attachment);
        self.step(outcome)
    }

    fn failed(&mut self, error: String) {
        self.end(StreamEndReason::StreamFailed(error));
    }

    fn detached(&mut self, restarted: bool) {
        let reason = match self.attachment.as_mut() {
            None => return,
            Some(_) if restarted => StreamEndReason::HandlerRestarted,
            Some(attachment) => attachment.removed(),
        };
        self.end(reason);
    }
}
