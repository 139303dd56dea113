//! The live part of an entry, as plainly as possible: the stream status (R28), versions and the
//! watermark (R24), the snapshot/stream handshake (R25), gaps (R26), the refetch rebase (R27)
//! and the bounded queues (R33). `docs/semantics.md`, "Live entries", says the same in prose.

use livecache::core::{Resync, StreamStatus, TraceKind, UpdateSource, Version};

use super::Model;
use crate::{Recipe, Report, VersionSpec};

impl Model {
    /// The query status an observer sees (R28): `Rejected` while the stream is `Failed` on an
    /// endpoint whose failed streams reject its queries; the requests' status otherwise.
    pub(super) fn displayed_status(&self, entry: &super::Entry) -> livecache::core::Status {
        let rejects = self
            .config
            .endpoints
            .get(entry.key_ref.endpoint)
            .is_some_and(|spec| spec.stream_failure_rejects);
        if rejects && matches!(entry.live.status(), StreamStatus::Failed { .. }) {
            livecache::core::Status::Rejected
        } else {
            entry.status
        }
    }

    /// The version rules of the entry's endpoint, if it declares versions.
    pub(super) fn versions(&self, key: &str) -> Option<VersionSpec> {
        let key_ref = self.entries.get(key)?.key_ref;
        self.config.endpoints.get(key_ref.endpoint)?.versions
    }

    /// The entry's stream status, `Idle` for an absent entry.
    pub(super) fn stream_status_of(&self, key: &str) -> StreamStatus {
        self.entries
            .get(key)
            .map_or(StreamStatus::Idle, |e| e.live.status())
    }

    /// The source says `status`; the entry's status follows.
    pub(super) fn set_source(&mut self, key: &str, lifetime: u64, status: StreamStatus) {
        let before = self.stream_status_of(key);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.live.source = status;
        }
        self.status_follows(key, lifetime, before);
    }

    /// After anything live happened to an entry: it is stale (resyncing) exactly while messages
    /// are held or missing, since the first time they were; a changed status is traced (R28).
    pub(super) fn status_follows(&mut self, key: &str, lifetime: u64, before: StreamStatus) {
        let now = self.now;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let live = &mut entry.live;
        let missing = !live.held.is_empty() || live.awaiting_snapshot || live.rebase_overflowed;
        if !missing {
            live.stale_since = None;
        } else if live.stale_since.is_none() {
            live.stale_since = Some(now);
        }
        let status = live.status();
        if status != before {
            self.record(key, TraceKind::StreamStatusChanged { lifetime, status });
        }
    }

    /// `StreamReport`: the source reports a status (R28). Whether the lifetime is live.
    pub(super) fn stream_report(&mut self, lifetime: u64, report: Report) -> bool {
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return false;
        };
        let status = report.status(self.now);
        self.set_source(&key, lifetime, status);
        true
    }

    /// `ResyncDone`: the source replayed what was asked; a resync waiting for dropped messages
    /// ends. Whether the lifetime is live.
    pub(super) fn resync_done(&mut self, lifetime: u64) -> bool {
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return false;
        };
        let before = self.stream_status_of(&key);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.live.awaiting_snapshot = false;
        }
        self.status_follows(&key, lifetime, before);
        true
    }

    /// `SourceResync` (R32): the source may have missed messages. A versioned entry awaits a
    /// snapshot and resyncs by its policy; an unversioned one refetches (reason `resync`).
    /// Whether the lifetime is live.
    pub(super) fn source_resync(&mut self, lifetime: u64) -> bool {
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return false;
        };
        let Some(spec) = self.versions(&key) else {
            let in_flight = self.entries.get(&key).and_then(|e| e.in_flight);
            match in_flight {
                Some(request) => self.record(&key, TraceKind::RequestJoined { request }),
                None => self.start_request(&key, livecache::core::RequestReason::Resync),
            }
            return true;
        };
        let before = self.stream_status_of(&key);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.live.awaiting_snapshot = true;
        }
        self.resync(&key, lifetime, spec);
        self.status_follows(&key, lifetime, before);
        true
    }

    /// R33: a versioned stream's buffer dropped messages before the first data; once the data
    /// landed and what it still held was delivered, the entry resyncs, stale until a snapshot.
    pub(super) fn stream_lost(&mut self, key: &str, lifetime: u64) {
        let Some(spec) = self.versions(key) else {
            return;
        };
        let before = self.stream_status_of(key);
        let queue = livecache::core::Queue::Buffered;
        self.record(key, TraceKind::QueueOverflowed { lifetime, queue });
        if let Some(entry) = self.entries.get_mut(key) {
            entry.live.awaiting_snapshot = true;
        }
        self.resync(key, lifetime, spec);
        self.status_follows(key, lifetime, before);
    }

    /// A message delivered to an entry with data: by the version rules when both the endpoint
    /// and the message have versions, else applied as an unversioned update.
    pub(super) fn deliver(
        &mut self,
        key: &str,
        lifetime: u64,
        recipe: Recipe,
        version: Option<u64>,
    ) {
        match (self.versions(key), version) {
            (Some(spec), Some(version)) => {
                let before = self.stream_status_of(key);
                self.versioned_message(key, lifetime, spec, version, recipe);
                self.status_follows(key, lifetime, before);
            }
            _ => {
                self.run_recipe(key, recipe, UpdateSource::Lifecycle);
            }
        }
    }

    /// R24–R26 for one message.
    fn versioned_message(
        &mut self,
        key: &str,
        lifetime: u64,
        spec: VersionSpec,
        version: u64,
        recipe: Recipe,
    ) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let live = &mut entry.live;
        let watermark = live.watermark;
        // R24: at or below the watermark (or already held): stale or a duplicate.
        if watermark.is_some_and(|w| version <= w) || live.held.contains_key(&version) {
            live.stale += 1;
            let version = Version::new(version);
            self.record(key, TraceKind::StreamStale { lifetime, version });
            return;
        }
        // R26: past the watermark's next version on a contiguous endpoint: held.
        let gap = spec.contiguous && watermark.is_some_and(|w| w.checked_add(1) != Some(version));
        if gap {
            let was_stale = live.stale_since.is_some();
            live.held.insert(version, recipe);
            // R33: a full queue is dropped; the resync starts again.
            let overflowed = live.held.len() > spec.max_queued;
            if overflowed {
                live.held.clear();
                live.awaiting_snapshot = true;
            }
            let version = Version::new(version);
            self.record(key, TraceKind::StreamHeld { lifetime, version });
            if overflowed {
                let queue = livecache::core::Queue::Held;
                self.record(key, TraceKind::QueueOverflowed { lifetime, queue });
            }
            if overflowed || !was_stale {
                self.resync(key, lifetime, spec);
            }
            return;
        }
        self.apply_versioned(key, lifetime, spec, version, recipe);
        self.drain_held(key, lifetime, spec);
    }

    /// Apply a versioned message: the watermark is its version; while a request is in flight
    /// it is also kept for the rebase (R27), at most `max_queued` (R33).
    fn apply_versioned(
        &mut self,
        key: &str,
        lifetime: u64,
        spec: VersionSpec,
        version: u64,
        recipe: Recipe,
    ) {
        self.run_recipe(key, recipe, UpdateSource::Lifecycle);
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let in_flight = entry.in_flight.is_some();
        let live = &mut entry.live;
        live.watermark = Some(version);
        if !in_flight || live.rebase_overflowed {
            return;
        }
        if live.rebase.len() < spec.max_queued {
            live.rebase.push((version, recipe));
            return;
        }
        live.rebase.clear();
        live.rebase_overflowed = true;
        let queue = livecache::core::Queue::Rebase;
        self.record(key, TraceKind::QueueOverflowed { lifetime, queue });
    }

    /// R26: held messages at or below the watermark are dropped as stale; the one right after
    /// it is applied, and so on while they follow each other.
    fn drain_held(&mut self, key: &str, lifetime: u64, spec: VersionSpec) {
        loop {
            let Some(entry) = self.entries.get_mut(key) else {
                return;
            };
            let live = &mut entry.live;
            let (Some(watermark), Some((&first, &recipe))) =
                (live.watermark, live.held.first_key_value())
            else {
                return;
            };
            if first <= watermark {
                live.held.remove(&first);
                live.stale += 1;
                let version = Version::new(first);
                self.record(key, TraceKind::StreamStale { lifetime, version });
            } else if watermark.checked_add(1) == Some(first) {
                live.held.remove(&first);
                self.apply_versioned(key, lifetime, spec, first, recipe);
            } else {
                return;
            }
        }
    }

    /// R26: a resync by the endpoint's policy: a refetch (joining one in flight), or asking the
    /// source to resume from the watermark's next version.
    pub(super) fn resync(&mut self, key: &str, lifetime: u64, spec: VersionSpec) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let in_flight = entry.in_flight;
        let watermark = entry.live.watermark;
        if spec.resume {
            let from = watermark.map_or(Some(Version::new(0)), |w| Version::new(w).next());
            let policy = Resync::Resume;
            let kind = TraceKind::ResyncStarted {
                lifetime,
                policy,
                from,
            };
            self.record(key, kind);
            return;
        }
        let policy = Resync::Refetch;
        let kind = TraceKind::ResyncStarted {
            lifetime,
            policy,
            from: None,
        };
        self.record(key, kind);
        match in_flight {
            Some(request) => self.record(key, TraceKind::RequestJoined { request }),
            None => self.start_request(key, livecache::core::RequestReason::Resync),
        }
    }

    /// R27: whether a snapshot at `watermark` is older than what the entry's data reflected
    /// when its request started (with none in flight, than its watermark).
    pub(super) fn snapshot_is_stale(&self, key: &str, watermark: u64) -> bool {
        if self.versions(key).is_none() {
            return false;
        }
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if entry.data.is_none() {
            return false;
        }
        let base = if entry.in_flight.is_some() {
            entry.live.rebase_base
        } else {
            entry.live.watermark
        };
        base.is_some_and(|base| watermark < base)
    }

    /// R24, R27: a snapshot landed (a fulfil settling the request in flight, or an upsert). The
    /// rebase log is taken (kept, for an upsert: the request still runs). With a watermark it
    /// is set, the kept messages above it are re-applied in order, held messages it reaches
    /// are applied or dropped, and a gap that remains (or messages lost to a full rebase log)
    /// starts a resync. Without one the snapshot simply wins.
    pub(super) fn snapshot_landed(
        &mut self,
        key: &str,
        lifetime: u64,
        watermark: Option<u64>,
        settles: bool,
        stale: bool,
    ) {
        let Some(spec) = self.versions(key) else {
            return;
        };
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let live = &mut entry.live;
        let kept = live.rebase.clone();
        let overflowed = live.rebase_overflowed;
        if settles {
            live.rebase.clear();
            live.rebase_overflowed = false;
        }
        let Some(watermark) = watermark else {
            return;
        };
        if stale {
            // R27: older than what the data reflected when its request started: the data
            // stays, and a resync it was to end goes on.
            let missing = !live.held.is_empty() || live.awaiting_snapshot;
            if missing || overflowed {
                live.awaiting_snapshot |= overflowed;
            }
            let version = Version::new(watermark);
            let kind = TraceKind::SnapshotStale {
                lifetime,
                watermark: version,
            };
            self.record(key, kind);
            if missing || overflowed {
                self.resync(key, lifetime, spec);
            }
            return;
        }
        live.watermark = Some(watermark);
        let mut reapplied = 0;
        for (version, recipe) in kept.into_iter().filter(|(v, _)| *v > watermark) {
            if let Some(data) = entry.data.as_mut() {
                recipe.apply(data);
            }
            if recipe.touches() {
                entry.phase = livecache::core::Phase::Streaming;
            }
            entry.live.watermark = Some(version);
            reapplied += 1;
        }
        self.record(
            key,
            TraceKind::WatermarkSet {
                lifetime,
                watermark: Version::new(watermark),
                reapplied,
            },
        );
        if let Some(entry) = self.entries.get_mut(key) {
            entry.live.awaiting_snapshot = overflowed;
        }
        self.drain_held(key, lifetime, spec);
        let gap_left = self
            .entries
            .get(key)
            .is_some_and(|e| !e.live.held.is_empty() || e.live.awaiting_snapshot);
        if gap_left {
            self.resync(key, lifetime, spec);
        }
    }
}
