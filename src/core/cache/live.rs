//! An entry's live state (R24–R28, R33): its stream status, its watermark, the messages held
//! across a gap and the rebase log kept while a request is in flight. Plain data; the rules that
//! change it are in `versions.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::core::config::Versioning;
use crate::core::entry::Draft;
use crate::core::stream_status::StreamStatus;
use crate::core::version::Version;

/// A message kept to be applied later (held across a gap) or again (re-applied by a rebase):
/// its recipe, shared so the cache stays `Clone`.
pub(super) type Replay<D> = Arc<dyn Fn(&mut Draft<'_, D>) + Send + Sync>;

/// The live state of one entry. Created the first time something live happens to the entry; an
/// entry without one is `Idle`, unversioned and without a watermark.
pub(super) struct LiveState<D> {
    /// What the source last reported (or what its attachment's start and end said).
    pub(super) source: StreamStatus,
    /// A resync is under way, since this time: the data is stale (R26, R33).
    pub(super) stale_since: Option<u64>,
    /// Messages were dropped (a queue overflowed): only a snapshot with a watermark, or the
    /// source's `resync_done`, ends the resync.
    pub(super) awaiting_snapshot: bool,
    /// The version of the newest change the data reflects (R24).
    pub(super) watermark: Option<Version>,
    /// Messages above `watermark.next()` on a contiguous endpoint, held until the gap closes
    /// (R26). At most `max_queued`.
    pub(super) held: BTreeMap<Version, Replay<D>>,
    /// Messages applied while a request is in flight, in order, for the rebase (R27). At most
    /// `max_queued`.
    pub(super) rebase: Vec<(Version, Replay<D>)>,
    /// The rebase log overflowed during the request in flight: its snapshot cannot be rebased.
    pub(super) rebase_overflowed: bool,
    /// The watermark when the request in flight started: its snapshot must reach it, or the
    /// messages between would be lost to the rebase (R27).
    pub(super) rebase_base: Option<Version>,
    /// How many messages were dropped as stale or duplicates (R24).
    pub(super) stale: u64,
}

impl<D> Default for LiveState<D> {
    fn default() -> Self {
        LiveState {
            source: StreamStatus::Idle,
            stale_since: None,
            awaiting_snapshot: false,
            watermark: None,
            held: BTreeMap::new(),
            rebase: Vec::new(),
            rebase_overflowed: false,
            rebase_base: None,
            stale: 0,
        }
    }
}

impl<D> Clone for LiveState<D> {
    fn clone(&self) -> Self {
        LiveState {
            source: self.source.clone(),
            stale_since: self.stale_since,
            awaiting_snapshot: self.awaiting_snapshot,
            watermark: self.watermark,
            held: self.held.clone(),
            rebase: self.rebase.clone(),
            rebase_overflowed: self.rebase_overflowed,
            rebase_base: self.rebase_base,
            stale: self.stale,
        }
    }
}

impl<D> fmt::Debug for LiveState<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveState")
            .field("source", &self.source)
            .field("stale_since", &self.stale_since)
            .field("awaiting_snapshot", &self.awaiting_snapshot)
            .field("watermark", &self.watermark)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .field(
                "rebase",
                &self.rebase.iter().map(|(v, _)| v).collect::<Vec<_>>(),
            )
            .field("rebase_overflowed", &self.rebase_overflowed)
            .field("rebase_base", &self.rebase_base)
            .field("stale", &self.stale)
            .finish()
    }
}

impl<D> LiveState<D> {
    /// Whether a message at `version` is simply the next one to apply: nothing is held or
    /// missing (no resync under way) and it is above the watermark — on a contiguous endpoint,
    /// right after it.
    pub(super) fn takes_next(&self, versioning: Versioning, version: Version) -> bool {
        self.is_quiet()
            && self
                .watermark
                .is_none_or(|w| follows(versioning, w, version))
    }

    /// Whether nothing is held or missing and the rebase log is whole: the state in which the
    /// slot may keep a copy of the watermark (`Slot::in_order`).
    pub(super) fn is_quiet(&self) -> bool {
        self.held.is_empty()
            && self.stale_since.is_none()
            && !self.awaiting_snapshot
            && !self.rebase_overflowed
    }

    /// The stream status subscribers see (R28): `Resyncing` while a resync is under way and the
    /// source is otherwise well; the source's own trouble (reconnecting, ended, failed) shows
    /// over it.
    pub(super) fn status(&self) -> StreamStatus {
        match (self.stale_since, &self.source) {
            (
                Some(since_ms),
                StreamStatus::Idle | StreamStatus::Connecting | StreamStatus::Live,
            ) => StreamStatus::Resyncing { since_ms },
            (_, source) => source.clone(),
        }
    }
}

/// Whether a message at `version` comes right after the watermark `watermark`: on a contiguous
/// endpoint its successor, otherwise anything above it.
pub(super) fn follows(versioning: Versioning, watermark: Version, version: Version) -> bool {
    if versioning.contiguous {
        watermark.next() == Some(version)
    } else {
        version > watermark
    }
}
