//! The reference model: `docs/semantics.md` executed op by op, as plainly as possible.
//!
//! Every live entry is a plain [`Entry`] in a `BTreeMap` keyed by its cache key string; every
//! lookup is a linear scan; time is a `u64` of milliseconds that only moves in
//! [`Op::Advance`] and [`Op::AdvanceToDeadline`]. Comments cite the SPEC rule ids (R1…R23) and
//! the helper names of `docs/semantics.md` ("start request", "maybe request", "arm", "re-arm if
//! unused", "remove"); the stream ops (R21) follow "Stream attachments" there.

use std::collections::{BTreeMap, BTreeSet};

use livecache::core::{
    AddCause, RemoveCause, RequestReason, StreamStatus, TraceEvent, TraceKind, UpdateSource,
};
use livecache::core::{MAX_KEEP_MS, PatchSet, Phase, Refetch, Status, TRACE_TEXT_CAP, Version};

use crate::{
    Config, Data, KeyRef, Observation, Op, OpResult, PatchError, Recipe, STREAM_FAILURE,
    STREAM_SKIP_REASON, StreamObservation, UpdateError,
};

mod live;
mod polling;
mod restart;
mod tags;

/// A text as the trace records it (R23, `TRACE_TEXT_CAP`): whole if it has at most
/// `TRACE_TEXT_CAP` bytes; else its longest prefix ending on a char boundary that leaves room for
/// the marker `…[truncated, N bytes]` (N its length in bytes), then the marker.
pub fn trace_text(text: &str) -> String {
    if text.len() <= TRACE_TEXT_CAP {
        return text.to_string();
    }
    let marker = format!("…[truncated, {} bytes]", text.len());
    let mut end = TRACE_TEXT_CAP - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &text[..end], marker)
}

/// The keep time of an endpoint the configuration does not list (the api default, 60 s).
const DEFAULT_KEEP_MS: u64 = 60_000;

/// Why a stream attachment ended (the `reason` of `stream_ended`, R21): its entry was removed…
const ENDED_REMOVED: &str = "entry removed";
/// …before its first data (the held messages are dropped with it)…
const ENDED_REMOVED_BEFORE_LOADED: &str = "entry removed before its data loaded";
/// …or its lifecycle handler was restarted (R30)…
const ENDED_RESTARTED: &str = "handler restarted";
/// …or the stream ended by itself (a failure's reason is `stream failed: <error>`).
const ENDED_BY_ITSELF: &str = "stream ended";

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Remove the entry (R4, R5).
    Removal,
    /// Poll it (R37).
    Poll,
    /// Retry its request (R36).
    Retry,
}

/// An armed deadline (removal, poll or retry): when it fires, and the arming sequence number
/// that orders deadlines falling on the same millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    /// The time the entry is removed, in milliseconds.
    pub at_ms: u64,
    /// The arming sequence number (deadlines fire in `(at_ms, seq)` order).
    pub seq: u64,
}

/// The whole state of one live entry (one lifetime of one key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Which endpoint and argument the entry is for.
    pub key_ref: KeyRef,
    /// The lifetime id.
    pub lifetime: u64,
    /// `Loading`, `Loaded` or `Streaming` (`Added` is transient and never stored).
    pub phase: Phase,
    /// `Pending`, `Fulfilled` or `Rejected`.
    pub status: Status,
    /// The data; present iff the phase is `Loaded` or `Streaming`.
    pub data: Option<Data>,
    /// The last rejection's text, cleared by a fulfil or an upsert.
    pub error: Option<String>,
    /// The time of the last fulfil or upsert.
    pub fulfilled_at: Option<u64>,
    /// The running request's id, if any.
    pub in_flight: Option<u64>,
    /// The live subscription ids.
    pub subscriptions: BTreeSet<u64>,
    /// The armed removal deadline, if any.
    pub deadline: Option<Deadline>,
    /// The message stream the lifecycle handler attached, if one is attached (R21).
    pub stream: Option<Stream>,
    /// Its live state: stream status, watermark, held messages, rebase log (R24–R28, R33).
    pub live: Live,
    /// The generation of its current lifecycle handler: 0, one more per restart (R30).
    pub handler: u32,
    /// The polling interval each of its polling subscriptions asked for (R37).
    pub polls: BTreeMap<u64, u64>,
    /// The armed poll deadline, if any: armed exactly while it has a polling subscription and
    /// no request in flight (R37).
    pub poll: Option<Deadline>,
    /// Retries of the request in flight so far (R36).
    pub retries: u32,
    /// The armed retry deadline, if any (R36).
    pub retry: Option<Deadline>,
    /// The tags it provides, sorted (R38).
    pub tags: Vec<livecache::core::Tag>,
    /// An invalidation reached it while it had no subscribers: it refetches when next
    /// subscribed or prefetched (R38).
    pub invalidated: bool,
}

/// The live state of an entry (R24–R28, R33), as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Live {
    /// What the source last reported (or what its attachment's start and end said).
    pub source: StreamStatus,
    /// Since when a resync is under way (the data is stale), if one is.
    pub stale_since: Option<u64>,
    /// Messages were dropped from a full held queue, or a snapshot could not be rebased: only
    /// a snapshot with a watermark or `resync_done` ends the resync.
    pub awaiting_snapshot: bool,
    /// The version of the newest change the data reflects.
    pub watermark: Option<u64>,
    /// Messages past a gap, by version (R26).
    pub held: BTreeMap<u64, Recipe>,
    /// Messages applied while a request is in flight, in order (R27).
    pub rebase: Vec<(u64, Recipe)>,
    /// The rebase log overflowed during the request in flight.
    pub rebase_overflowed: bool,
    /// The watermark when the request in flight started (R27).
    pub rebase_base: Option<u64>,
    /// Messages dropped as stale or duplicates (R24).
    pub stale: u64,
}

impl Live {
    /// The stream status an observer sees: `Resyncing` while stale over a well source.
    pub fn status(&self) -> StreamStatus {
        match (self.stale_since, &self.source) {
            (
                Some(since_ms),
                StreamStatus::Idle | StreamStatus::Connecting | StreamStatus::Live,
            ) => StreamStatus::Resyncing { since_ms },
            (_, source) => source.clone(),
        }
    }
}

/// A message stream attached to one lifetime by its lifecycle handler (R21).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    /// The messages that arrived before the lifetime's first data, in arrival order, each with
    /// its version if it has one; `None` once the data has landed (messages are then applied as
    /// they arrive).
    pub held: Option<Vec<(Option<u64>, Recipe)>>,
    /// Before the first data only: the stream finished, with this end reason. It delivers
    /// nothing more; the attachment ends right after its held messages are applied.
    pub finished: Option<String>,
    /// Messages applied to the entry so far (a message that changes nothing counts too).
    pub applied: u64,
    /// Bad frames skipped so far.
    pub skipped: u64,
    /// Before the first data only: held messages were dropped (a versioned stream's buffer
    /// overflowed, R33); the entry resyncs once the data lands.
    pub lost: bool,
}

/// Something an op did to a lifetime with an attached stream, carried out right after the
/// op's own events, in the order it happened (R21).
#[derive(Clone, Debug)]
enum StreamDue {
    /// The lifetime's first data landed (a fulfil or an upsert).
    FirstData {
        /// The entry's key.
        key: String,
        /// The lifetime.
        lifetime: u64,
    },
    /// The lifetime's handler was restarted; the old handler's attachment ends (R30).
    Restarted {
        /// The entry's key.
        key: String,
        /// The lifetime.
        lifetime: u64,
        /// The attachment as it was at the restart.
        stream: Stream,
    },
    /// The lifetime was removed; its attachment ends.
    Removed {
        /// The entry's key.
        key: String,
        /// The lifetime.
        lifetime: u64,
        /// The attachment as it was at the removal.
        stream: Stream,
    },
}

/// The whole model state except the trace; two models with equal snapshots behave the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// The model's clock, in milliseconds.
    pub now: u64,
    /// How many lifetime ids have been issued.
    pub lifetimes_issued: u64,
    /// How many request ids have been issued.
    pub requests_issued: u64,
    /// How many subscription ids have been issued.
    pub subscriptions_issued: u64,
    /// How many removal deadlines have been armed (the arming sequence counter).
    pub armings: u64,
    /// Time let pass with no tick ([`Op::Late`]): the next op arrives at `now + late`.
    pub late: u64,
    /// Every live entry, by cache key.
    pub entries: BTreeMap<String, Entry>,
}

/// The reference model of one api instance.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    /// The clock, in milliseconds; never goes backwards.
    now: u64,
    /// Time let pass with no tick ([`Op::Late`]): the next op arrives at `now + late`.
    late: u64,
    /// How many lifetime ids have been issued (ids start at 1, never reset).
    lifetimes_issued: u64,
    /// How many request ids have been issued (ids start at 1, never reset).
    requests_issued: u64,
    /// How many subscription ids have been issued (ids start at 1, never reset).
    subscriptions_issued: u64,
    /// How many deadlines have been armed: the next arming takes `armings + 1`.
    armings: u64,
    /// Every live entry, by cache key (ascending byte order).
    entries: BTreeMap<String, Entry>,
    /// Every event recorded so far.
    trace: Vec<TraceEvent>,
    /// What the op being applied did to attached streams (empty between ops).
    due: Vec<StreamDue>,
    /// Applying a stream's burst (R34): consecutive updates of one entry are one event.
    batching: bool,
    /// In a burst, the newest event is an update the burst recorded (without patches).
    batch_folds: bool,
}

/// The JSON form of the data: exactly what `serde_json::to_value(&Vec<u8>)` produces (an array
/// of integers), built directly so that it cannot fail.
fn to_json(data: &Data) -> serde_json::Value {
    serde_json::Value::Array(data.iter().map(|b| serde_json::Value::from(*b)).collect())
}

impl Model {
    /// A fresh model: no entries, clock at 0, every counter at 0 (the first id issued is 1).
    pub fn new(config: Config) -> Model {
        Model {
            config,
            now: 0,
            late: 0,
            lifetimes_issued: 0,
            requests_issued: 0,
            subscriptions_issued: 0,
            armings: 0,
            entries: BTreeMap::new(),
            trace: Vec::new(),
            due: Vec::new(),
            batching: false,
            batch_folds: false,
        }
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model's clock, in milliseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Every event recorded so far (SPEC R23).
    pub fn trace(&self) -> &[TraceEvent] {
        &self.trace
    }

    /// The earliest armed deadline (a removal or a poll), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries
            .values()
            .flat_map(|e| [e.deadline, e.poll, e.retry])
            .flatten()
            .map(|d| d.at_ms)
            .min()
    }

    /// Every live entry as an observer sees it, sorted by key string.
    pub fn observe(&self) -> Vec<Observation> {
        // A BTreeMap iterates in ascending key order already.
        self.entries
            .iter()
            .map(|(key, e)| Observation {
                key: key.clone(),
                lifetime: e.lifetime,
                phase: e.phase,
                status: self.displayed_status(e),
                data: e.data.clone(),
                error: e.error.clone(),
                in_flight: e.in_flight,
                fulfilled_at: e.fulfilled_at,
                subscriptions: e.subscriptions.iter().copied().collect(),
                removal_deadline: e.deadline.map(|d| d.at_ms),
                poll_deadline: e.poll.map(|d| d.at_ms),
                retry_deadline: e.retry.map(|d| d.at_ms),
                tags: e.tags.clone(),
                invalidated: e.invalidated,
                stream: e.stream.as_ref().map(|s| StreamObservation {
                    held: s.held.as_ref().map_or(0, Vec::len),
                    reading: s.finished.is_none(),
                }),
                stream_status: e.live.status(),
                watermark: e.live.watermark.map(Version::new),
                stale_messages: e.live.stale,
                handler: e.handler,
            })
            .collect()
    }

    /// Every request in flight: (key, request id), in key order.
    pub fn in_flight(&self) -> Vec<(KeyRef, u64)> {
        self.entries
            .values()
            .filter_map(|e| e.in_flight.map(|r| (e.key_ref, r)))
            .collect()
    }

    /// The requests in flight whose query function is running: not those waiting for a retry
    /// (R36), which no result can come from until the retry runs.
    pub fn running(&self) -> Vec<(KeyRef, u64)> {
        self.entries
            .values()
            .filter(|e| e.retry.is_none())
            .filter_map(|e| e.in_flight.map(|r| (e.key_ref, r)))
            .collect()
    }

    /// Every live subscription id, ascending.
    pub fn live_subscriptions(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .entries
            .values()
            .flat_map(|e| e.subscriptions.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }

    /// Every live lifetime id, ascending.
    pub fn live_lifetimes(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.entries.values().map(|e| e.lifetime).collect();
        all.sort_unstable();
        all
    }

    /// How many (lifetimes, requests, subscriptions) have been issued so far.
    pub fn issued(&self) -> (u64, u64, u64) {
        (
            self.lifetimes_issued,
            self.requests_issued,
            self.subscriptions_issued,
        )
    }

    /// The whole state except the trace.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            now: self.now,
            lifetimes_issued: self.lifetimes_issued,
            requests_issued: self.requests_issued,
            subscriptions_issued: self.subscriptions_issued,
            armings: self.armings,
            late: self.late,
            entries: self.entries.clone(),
        }
    }

    /// Execute one op (see `docs/semantics.md`), recording its trace events.
    pub fn apply(&mut self, op: &Op) -> OpResult {
        let result = self.apply_op(op);
        // R21: what the op did to attached streams comes right after its own events.
        self.settle_streams();
        result
    }

    fn apply_op(&mut self, op: &Op) -> OpResult {
        match op {
            // Timer ticks move the clock (taking any lateness with them).
            Op::Advance { ms } => {
                let to = self.now.saturating_add(self.late).saturating_add(*ms);
                self.late = 0;
                self.tick(to);
                OpResult::Unit
            }
            Op::AdvanceToDeadline => {
                // No deadline armed: nothing at all happens.
                if let Some(at) = self.next_deadline() {
                    let to = at.max(self.now.saturating_add(self.late));
                    self.late = 0;
                    self.tick(to);
                }
                OpResult::Unit
            }
            // Time passes, but nobody tells the cache until the next op.
            Op::Late { ms } => {
                self.late = self.late.saturating_add(*ms);
                OpResult::Unit
            }
            // The stream ops are the runtime's side: they happen at `now`, and lateness waits for
            // the next op that tells the cache (the attachment tells it nothing of time itself).
            stream if stream.is_stream_op() => self.apply_at_now(stream),
            // Every other op happens when it arrives, at `now + late`: first the entries whose
            // deadline is strictly before that are removed, stamped at their deadlines (after a
            // tick nothing is, since a tick removes every deadline `<= now`).
            other => {
                self.arrive();
                self.apply_at_now(other)
            }
        }
    }

    // ===== Ops at `now` =====

    fn apply_at_now(&mut self, op: &Op) -> OpResult {
        match op {
            Op::Advance { .. } | Op::AdvanceToDeadline | Op::Late { .. } => OpResult::Unit,
            Op::Subscribe { key, refetch } => OpResult::Subscribed(self.subscribe(*key, *refetch)),
            Op::Unsubscribe { subscription } => OpResult::Done(self.unsubscribe(*subscription)),
            Op::Refetch { subscription } => OpResult::Done(self.refetch(*subscription)),
            Op::Prefetch { key, refetch } => {
                self.prefetch(*key, *refetch);
                OpResult::Unit
            }
            Op::Fulfil { key, request, data } => {
                self.fulfil(*key, *request, data, None);
                OpResult::Unit
            }
            Op::FulfilVersioned {
                key,
                request,
                data,
                watermark,
            } => {
                self.fulfil(*key, *request, data, Some(*watermark));
                OpResult::Unit
            }
            Op::UpsertVersioned {
                key,
                data,
                watermark,
            } => {
                self.upsert(*key, data, Some(*watermark));
                OpResult::Unit
            }
            Op::StreamReport { lifetime, report } => {
                OpResult::Done(self.stream_report(*lifetime, *report))
            }
            Op::ResyncDone { lifetime } => OpResult::Done(self.resync_done(*lifetime)),
            Op::SourceResync { lifetime } => OpResult::Done(self.source_resync(*lifetime)),
            Op::RefetchLifetime { lifetime } => OpResult::Done(self.refetch_lifetime(*lifetime)),
            Op::Reject {
                key,
                request,
                error,
            } => {
                self.reject(*key, *request, error);
                OpResult::Unit
            }
            Op::UpdateCached {
                lifetime,
                generation,
                recipe,
                patches,
            } => OpResult::Updated(self.update_cached(*lifetime, *generation, *recipe, *patches)),
            Op::Restart { key } => OpResult::Done(self.restart(*key)),
            Op::SetPolling {
                subscription,
                interval,
            } => OpResult::Done(self.set_polling(*subscription, *interval)),
            Op::ProvideTags { key, tags } => OpResult::Done(self.provide_tags(*key, tags)),
            Op::Invalidate { tags } => {
                self.invalidate(tags);
                OpResult::Unit
            }
            Op::UpdateQueryData { key, recipe } => {
                OpResult::QueryDataUpdated(self.update_query_data(*key, *recipe))
            }
            Op::PatchQueryData { key, patch } => {
                OpResult::Patched(self.patch_query_data(*key, patch))
            }
            Op::Upsert { key, data } => {
                self.upsert(*key, data, None);
                OpResult::Unit
            }
            Op::Remove { key } => OpResult::Done(self.remove_key(*key)),
            Op::Reset => {
                self.reset();
                OpResult::Unit
            }
            Op::StreamAttach { lifetime } => OpResult::Done(self.stream_attach(*lifetime)),
            Op::StreamMessage {
                lifetime,
                recipe,
                version,
            } => OpResult::Done(self.stream_message(*lifetime, *recipe, *version)),
            Op::StreamSkip { lifetime } => OpResult::Done(self.stream_skip(*lifetime)),
            Op::StreamFinish { lifetime, failed } => {
                OpResult::Done(self.stream_finish(*lifetime, *failed))
            }
        }
    }

    /// Subscribe (R1, R2): returns the new subscription id.
    fn subscribe(&mut self, key_ref: KeyRef, refetch: Refetch) -> u64 {
        // A subscription id is taken on every subscribe call.
        self.subscriptions_issued += 1;
        let s = self.subscriptions_issued;
        let key = self.config.key(key_ref);
        if self.entries.contains_key(&key) {
            // R2: present key: add the subscriber, cancel a pending removal, maybe request.
            let n = match self.entries.get_mut(&key) {
                Some(entry) => {
                    entry.subscriptions.insert(s);
                    entry.subscriptions.len()
                }
                None => return s,
            };
            self.record(
                &key,
                TraceKind::Subscribed {
                    subscription: s,
                    subscribers: n,
                },
            );
            let had_deadline = match self.entries.get_mut(&key) {
                Some(entry) => entry.deadline.take().is_some(),
                None => false,
            };
            if had_deadline {
                self.record(&key, TraceKind::RemovalCancelled);
            }
            self.maybe_request(&key, refetch);
        } else {
            // R1: absent key: create, subscribe, start the handler, then the request.
            let lifetime = self.create_entry(key_ref, &key, AddCause::Subscribe);
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.subscriptions.insert(s);
            }
            self.record(
                &key,
                TraceKind::Subscribed {
                    subscription: s,
                    subscribers: 1,
                },
            );
            self.start_lifecycle_if_any(key_ref, &key, lifetime);
            self.start_request(&key, RequestReason::Load);
        }
        s
    }

    /// Prefetch (R6): no subscription.
    fn prefetch(&mut self, key_ref: KeyRef, refetch: Refetch) {
        let key = self.config.key(key_ref);
        if self.entries.contains_key(&key) {
            // R6: a cache hit without a subscription does not touch the deadline.
            self.maybe_request(&key, refetch);
        } else {
            let lifetime = self.create_entry(key_ref, &key, AddCause::Prefetch);
            self.start_lifecycle_if_any(key_ref, &key, lifetime);
            self.start_request(&key, RequestReason::Load);
            // R4, R6: zero subscribers, so a removal deadline is armed (if keep is finite).
            self.arm_if_finite(&key);
        }
    }

    /// Unsubscribe (R4, R7a): whether it did anything.
    fn unsubscribe(&mut self, s: u64) -> bool {
        // R7a: a subscription no live entry holds (never issued, already dropped, or its
        // lifetime ended) does nothing.
        let Some(key) = self.key_holding(s) else {
            return false;
        };
        let n = match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.subscriptions.remove(&s);
                entry.subscriptions.len()
            }
            None => return false,
        };
        // R37: it polls no more.
        if self
            .entries
            .get_mut(&key)
            .is_some_and(|entry| entry.polls.remove(&s).is_some())
        {
            self.poll_follows(&key);
        }
        self.record(
            &key,
            TraceKind::Unsubscribed {
                subscription: s,
                subscribers: n,
            },
        );
        if n == 0 {
            // R4: the last subscriber left: schedule removal (never removal right here).
            self.arm_if_finite(&key);
        }
        true
    }

    /// Refetch through a subscription (R3, R11): whether it did anything.
    fn refetch(&mut self, s: u64) -> bool {
        let Some(key) = self.key_holding(s) else {
            return false; // R7a
        };
        let in_flight = self.entries.get(&key).and_then(|e| e.in_flight);
        match in_flight {
            // R3: join the running request.
            Some(request) => self.record(&key, TraceKind::RequestJoined { request }),
            // R11: status pending, data kept.
            None => self.start_request(&key, RequestReason::Refetch),
        }
        true
    }

    /// `RefetchLifetime` (R29): the lifecycle handler of `lifetime` refetches its entry, as a
    /// subscription's refetch does. Whether the lifetime is live (R7a).
    fn refetch_lifetime(&mut self, lifetime: u64) -> bool {
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return false;
        };
        let in_flight = self.entries.get(&key).and_then(|e| e.in_flight);
        match in_flight {
            Some(request) => self.record(&key, TraceKind::RequestJoined { request }),
            None => self.start_request(&key, RequestReason::Refetch),
        }
        true
    }

    /// A request result with data (R8, R10).
    fn fulfil(&mut self, key_ref: KeyRef, request: u64, data: &Data, watermark: Option<u64>) {
        let key = self.config.key(key_ref);
        let now = self.now;
        let stale = watermark.is_some_and(|w| self.snapshot_is_stale(&key, w));
        let Some(entry) = self.entries.get_mut(&key) else {
            // R10: absent entry: ignored, never re-created.
            self.record(&key, TraceKind::ResultIgnored { request });
            return;
        };
        if entry.in_flight != Some(request) {
            // R10: stale request id.
            self.record(&key, TraceKind::ResultIgnored { request });
            return;
        }
        entry.in_flight = None;
        // R36: the request settled: its retries end.
        entry.retries = 0;
        entry.retry = None;
        // R8: changed iff there was no data or the new data differs (PartialEq); R27: a stale
        // snapshot leaves the data as it is.
        let data_changed = !stale && entry.data.as_ref() != Some(data);
        if data_changed {
            entry.data = Some(data.clone());
        }
        entry.status = Status::Fulfilled;
        entry.error = None;
        entry.fulfilled_at = Some(now);
        let was_loading = entry.phase == Phase::Loading;
        if was_loading {
            entry.phase = Phase::Loaded;
        }
        let lifetime = entry.lifetime;
        self.record(
            &key,
            TraceKind::RequestFulfilled {
                request,
                data_changed,
            },
        );
        if was_loading {
            // R8, R13: the first data of this lifetime resolves data_loaded.
            self.record(
                &key,
                TraceKind::DataLoaded {
                    lifetime,
                    request: Some(request),
                },
            );
            self.first_data_landed(&key, lifetime);
        }
        // R24, R27: a versioned snapshot sets the watermark and is rebased.
        let before = self.stream_status_of(&key);
        self.snapshot_landed(&key, lifetime, watermark, true, stale);
        self.status_follows(&key, lifetime, before);
        // R4: a request settling with zero subscribers re-arms from the settle time.
        self.rearm_if_unused(&key);
        self.poll_follows(&key); // R37
    }

    /// A request failure (R9, R10).
    fn reject(&mut self, key_ref: KeyRef, request: u64, error: &str) {
        let key = self.config.key(key_ref);
        let Some(entry) = self.entries.get_mut(&key) else {
            self.record(&key, TraceKind::ResultIgnored { request }); // R10
            return;
        };
        if entry.in_flight != Some(request) {
            self.record(&key, TraceKind::ResultIgnored { request }); // R10
            return;
        }
        // R36: retries left: the request stays in flight, the status pending; it runs again
        // `base × 2^(attempt-1)` ms from now (at most `max`).
        let retry = self
            .config
            .endpoints
            .get(key_ref.endpoint)
            .and_then(|spec| spec.retry);
        if let Some(policy) = retry.filter(|p| entry.retries < p.max_retries) {
            entry.retries += 1;
            let attempt = entry.retries;
            let delay_ms = policy
                .base_ms
                .saturating_mul(1u64 << (attempt - 1).min(63))
                .min(policy.max_ms);
            self.armings += 1;
            entry.retry = Some(Deadline {
                at_ms: self.now.saturating_add(delay_ms),
                seq: self.armings,
            });
            self.record(
                &key,
                TraceKind::RequestRetrying {
                    request,
                    attempt,
                    delay_ms,
                    error: trace_text(error),
                },
            );
            return;
        }
        // R9: status rejected, error stored, data and phase kept (data_loaded stays pending).
        let before = entry.live.status();
        entry.in_flight = None;
        entry.retries = 0;
        entry.retry = None;
        entry.status = Status::Rejected;
        entry.error = Some(error.to_string());
        // R27: the rebase log of the rejected request is dropped; the data is kept.
        entry.live.rebase.clear();
        entry.live.rebase_overflowed = false;
        let lifetime = entry.lifetime;
        self.record(
            &key,
            TraceKind::RequestRejected {
                request,
                error: trace_text(error),
            },
        );
        self.status_follows(&key, lifetime, before);
        self.rearm_if_unused(&key); // R4
        self.poll_follows(&key); // R37
    }

    /// `update_cached_data` through the lifecycle handle of `lifetime` (R15, R7a).
    fn update_cached(
        &mut self,
        lifetime: u64,
        generation: Option<u32>,
        recipe: Recipe,
        want_patches: bool,
    ) -> Result<Option<PatchSet>, UpdateError> {
        // R7a: a handle of an ended lifetime touches nothing; R30: nor one of a handler that
        // was restarted.
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return Err(UpdateError::NotLive);
        };
        let current = self.entries.get(&key).map(|e| e.handler);
        if generation.is_some_and(|g| Some(g) != current) {
            return Err(UpdateError::NotLive);
        }
        let has_data = self.entries.get(&key).is_some_and(|e| e.phase.has_data());
        if !has_data {
            return Err(UpdateError::NotLoaded);
        }
        let set = self.run_recipe(&key, recipe, UpdateSource::Lifecycle);
        if want_patches {
            Ok(Some(set))
        } else {
            Ok(None)
        }
    }

    /// `update_query_data` from outside the lifecycle (R18).
    fn update_query_data(&mut self, key_ref: KeyRef, recipe: Recipe) -> PatchSet {
        let key = self.config.key(key_ref);
        let has_data = self.entries.get(&key).is_some_and(|e| e.phase.has_data());
        if !has_data {
            // R18: absent or no data: the recipe is not called, empty patches, no event.
            return PatchSet::default();
        }
        self.run_recipe(&key, recipe, UpdateSource::UpdateQueryData)
    }

    /// Run a recipe on an entry that has data (R15): returns the patch set of the change.
    ///
    /// A recipe that never takes mutable access changed nothing: empty patches, no event. A
    /// recipe that does is an applied update even when the value ends up equal.
    fn run_recipe(&mut self, key: &str, recipe: Recipe, source: UpdateSource) -> PatchSet {
        if !recipe.touches() {
            return PatchSet::default();
        }
        let record_patches = self.config.record_patches;
        let Some(entry) = self.entries.get_mut(key) else {
            return PatchSet::default();
        };
        let Some(data) = entry.data.as_mut() else {
            return PatchSet::default();
        };
        let before = to_json(data);
        recipe.apply(data);
        let after = to_json(data);
        let set = PatchSet::between(&before, &after);
        // The first applied update moves loaded → streaming.
        entry.phase = Phase::Streaming;
        let patches = if record_patches {
            Some(set.clone())
        } else {
            None
        };
        self.record_update(key, source, patches);
        set
    }

    /// Record an update; in a batch (R34), one without patches right after an update of the
    /// same key, source and time (also without patches) adds to that event's count instead.
    fn record_update(&mut self, key: &str, source: UpdateSource, patches: Option<PatchSet>) {
        let now = self.now;
        if self.batch_folds
            && patches.is_none()
            && let Some(TraceEvent {
                at_ms,
                key: last_key,
                kind:
                    TraceKind::Updated {
                        source: last_source,
                        patches: None,
                        count,
                    },
            }) = self.trace.last_mut()
            && *at_ms == now
            && last_key.as_str() == key
            && *last_source == source
        {
            *count += 1;
            return;
        }
        let count = 1;
        let patched = patches.is_some();
        self.record(
            key,
            TraceKind::Updated {
                source,
                patches,
                count,
            },
        );
        self.batch_folds = self.batching && !patched;
    }

    /// `patch_query_data` with RFC 6902 patches (R19).
    fn patch_query_data(
        &mut self,
        key_ref: KeyRef,
        patch: &json_patch::Patch,
    ) -> Result<(), PatchError> {
        let key = self.config.key(key_ref);
        let record_patches = self.config.record_patches;
        let Some(entry) = self.entries.get_mut(&key) else {
            return Err(PatchError::NoEntry);
        };
        let Some(old) = entry.data.as_ref() else {
            return Err(PatchError::NoData);
        };
        let before = to_json(old);
        // Patch a copy: on any failure nothing changes and nothing is recorded. The copy is
        // thrown away on failure, so no rollback is needed (`json_patch::patch`'s rollback
        // panics when undoing a move to an ancestor fails).
        let mut doc = before.clone();
        if json_patch::patch_unsafe(&mut doc, patch).is_err() {
            return Err(PatchError::Apply);
        }
        let new: Data = match serde_json::from_value(doc) {
            Ok(new) => new,
            Err(_) => return Err(PatchError::Schema),
        };
        if &new == old {
            // Equal data: Ok, no event, no phase change.
            return Ok(());
        }
        let after = to_json(&new);
        entry.data = Some(new);
        entry.phase = Phase::Streaming;
        let patches = if record_patches {
            Some(PatchSet::between(&before, &after))
        } else {
            None
        };
        self.record(
            &key,
            TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches,
                count: 1,
            },
        );
        Ok(())
    }

    /// `upsert_query_data` (R20).
    fn upsert(&mut self, key_ref: KeyRef, data: &Data, watermark: Option<u64>) {
        let key = self.config.key(key_ref);
        let now = self.now;
        if !self.entries.contains_key(&key) {
            // Absent: Added → Loaded, lifecycle started, data_loaded with no request.
            let lifetime = self.create_entry(key_ref, &key, AddCause::Upsert);
            self.start_lifecycle_if_any(key_ref, &key, lifetime);
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.data = Some(data.clone());
                entry.status = Status::Fulfilled;
                entry.fulfilled_at = Some(now);
                entry.phase = Phase::Loaded;
            }
            self.record(&key, TraceKind::Upserted { data_changed: true });
            self.record(
                &key,
                TraceKind::DataLoaded {
                    lifetime,
                    request: None,
                },
            );
            let before = self.stream_status_of(&key);
            self.snapshot_landed(&key, lifetime, watermark, false, false);
            self.status_follows(&key, lifetime, before);
            // R20: zero subscribers → removal scheduled.
            self.arm_if_finite(&key);
            return;
        }
        let stale = watermark.is_some_and(|w| self.snapshot_is_stale(&key, w));
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let data_changed = !stale && entry.data.as_ref() != Some(data);
        if data_changed {
            entry.data = Some(data.clone());
        }
        entry.status = Status::Fulfilled;
        entry.error = None;
        entry.fulfilled_at = Some(now);
        // `in_flight` is untouched: the running request's result still applies (last wins).
        let was_loading = entry.phase == Phase::Loading;
        if was_loading {
            entry.phase = Phase::Loaded;
        }
        let lifetime = entry.lifetime;
        self.record(&key, TraceKind::Upserted { data_changed });
        if was_loading {
            self.record(
                &key,
                TraceKind::DataLoaded {
                    lifetime,
                    request: None,
                },
            );
            self.first_data_landed(&key, lifetime);
        }
        let before = self.stream_status_of(&key);
        self.snapshot_landed(&key, lifetime, watermark, false, stale);
        self.status_follows(&key, lifetime, before);
        self.rearm_if_unused(&key);
    }

    /// `remove(key)` (R7): whether it did anything.
    fn remove_key(&mut self, key_ref: KeyRef) -> bool {
        let key = self.config.key(key_ref);
        if !self.entries.contains_key(&key) {
            return false;
        }
        self.remove(&key, RemoveCause::Removed);
        true
    }

    /// `reset()` (R7): remove every entry, in ascending byte order of the keys.
    fn reset(&mut self) {
        // BTreeMap<String, _> keys are in ascending byte order.
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        for key in keys {
            self.remove(&key, RemoveCause::Reset);
        }
    }

    // ===== Stream attachments (R21) =====

    /// `StreamAttach`: the lifecycle handler of `lifetime` attaches a stream. Whether it did.
    fn stream_attach(&mut self, lifetime: u64) -> bool {
        // Not live: the handler's handle is of an ended lifetime (R7a).
        let Some(key) = self.key_of_lifetime(lifetime) else {
            return false;
        };
        let Some(key_ref) = self.entries.get(&key).map(|e| e.key_ref) else {
            return false;
        };
        // No lifecycle handler: no handle exists to attach with.
        if !self.has_lifecycle(key_ref) {
            return false;
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        // One attachment at a time: a second one while the first has not ended is ignored.
        if entry.stream.is_some() {
            return false;
        }
        if entry.phase.has_data() {
            // Attached with data: live at once, nothing held.
            entry.stream = Some(Stream {
                held: None,
                finished: None,
                applied: 0,
                skipped: 0,
                lost: false,
            });
            entry.phase = Phase::Streaming;
            self.record(
                &key,
                TraceKind::StreamAttached {
                    lifetime,
                    buffered: 0,
                },
            );
            // R28: an attached stream is live.
            self.set_source(&key, lifetime, StreamStatus::Live);
        } else {
            // Before the first data: messages are held until it lands; nothing is recorded yet.
            entry.stream = Some(Stream {
                held: Some(Vec::new()),
                finished: None,
                applied: 0,
                skipped: 0,
                lost: false,
            });
        }
        true
    }

    /// The stream attached to `lifetime`, if one is and it is still read (not finished):
    /// its key. Streams live in their entry, so a removed lifetime has none.
    fn reading_stream(&self, lifetime: u64) -> Option<String> {
        let key = self.key_of_lifetime(lifetime)?;
        let stream = self.entries.get(&key)?.stream.as_ref()?;
        if stream.finished.is_some() {
            // It finished before the first data: it delivers nothing more.
            return None;
        }
        Some(key)
    }

    /// `StreamMessage`: held before the first data, applied now after it. Whether a stream
    /// took it.
    fn stream_message(&mut self, lifetime: u64, recipe: Recipe, version: Option<u64>) -> bool {
        let Some(key) = self.reading_stream(lifetime) else {
            return false;
        };
        // R33: a versioned stream holds at most `max_queued` before the data, then drops them
        // and resyncs once the data lands; an unversioned one fails at its `max_buffered`.
        let bound = match self.versions(&key) {
            Some(spec) => Some((spec.max_queued, true)),
            None => self.buffer_bound(&key).map(|max| (max, false)),
        };
        let Some(stream) = self.entries.get_mut(&key).and_then(|e| e.stream.as_mut()) else {
            return false;
        };
        match &mut stream.held {
            Some(held) => match bound {
                Some((max, false)) if held.len() >= max => {
                    // Dropped, and the stream fails after what it holds is applied.
                    let error = format!("more than {max} messages arrived before the first data");
                    stream.finished = Some(format!("stream failed: {error}"));
                }
                Some((max, true)) if held.len() >= max => {
                    held.clear();
                    held.push((version, recipe));
                    stream.lost = true;
                }
                _ => held.push((version, recipe)),
            },
            None => {
                // Delivered now: counted, then applied as an update through the lifecycle
                // handle without patches, or by the version rules (R24–R26) — a burst of one
                // message, one batch (R34: what it makes follow on folds into one update).
                stream.applied += 1;
                self.batching = true;
                self.batch_folds = false;
                self.deliver(&key, lifetime, recipe, version);
                self.batching = false;
                self.batch_folds = false;
            }
        }
        true
    }

    /// `StreamSkip`: a bad frame, counted and traced at once (before the data too). Whether a
    /// stream took it.
    fn stream_skip(&mut self, lifetime: u64) -> bool {
        let Some(key) = self.reading_stream(lifetime) else {
            return false;
        };
        let Some(stream) = self.entries.get_mut(&key).and_then(|e| e.stream.as_mut()) else {
            return false;
        };
        stream.skipped += 1;
        self.record(
            &key,
            TraceKind::StreamSkipped {
                lifetime,
                reason: STREAM_SKIP_REASON.to_string(),
            },
        );
        true
    }

    /// `StreamFinish`: with data the attachment ends now; before the data the reason waits
    /// until the held messages are applied. Whether a stream took it.
    fn stream_finish(&mut self, lifetime: u64, failed: bool) -> bool {
        let Some(key) = self.reading_stream(lifetime) else {
            return false;
        };
        let reason = if failed {
            format!("stream failed: {STREAM_FAILURE}")
        } else {
            ENDED_BY_ITSELF.to_string()
        };
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        let Some(stream) = entry.stream.as_mut() else {
            return false;
        };
        if stream.held.is_some() {
            stream.finished = Some(reason);
            return true;
        }
        let (applied, skipped) = (stream.applied, stream.skipped);
        entry.stream = None;
        self.record(
            &key,
            TraceKind::StreamEnded {
                lifetime,
                reason: reason.clone(),
                applied,
                skipped,
            },
        );
        self.stream_finished(&key, lifetime, &reason);
        true
    }

    /// The first data of `lifetime` (under `key`) landed in the op being applied: if a stream
    /// is attached, its held messages are applied after the op.
    fn first_data_landed(&mut self, key: &str, lifetime: u64) {
        if self.entries.get(key).is_some_and(|e| e.stream.is_some()) {
            self.due.push(StreamDue::FirstData {
                key: key.to_string(),
                lifetime,
            });
        }
    }

    /// After an op: carry out, in order, what it did to attached streams.
    fn settle_streams(&mut self) {
        for due in std::mem::take(&mut self.due) {
            match due {
                StreamDue::FirstData { key, lifetime } => self.apply_held(&key, lifetime),
                StreamDue::Restarted {
                    key,
                    lifetime,
                    stream,
                } => {
                    // Held messages are dropped with it; the entry's status is not its to say.
                    self.record(
                        &key,
                        TraceKind::StreamEnded {
                            lifetime,
                            reason: ENDED_RESTARTED.to_string(),
                            applied: stream.applied,
                            skipped: stream.skipped,
                        },
                    );
                }
                StreamDue::Removed {
                    key,
                    lifetime,
                    stream,
                } => {
                    // Held messages are dropped with the entry.
                    let reason = if stream.held.is_some() {
                        ENDED_REMOVED_BEFORE_LOADED
                    } else {
                        ENDED_REMOVED
                    };
                    self.record(
                        &key,
                        TraceKind::StreamEnded {
                            lifetime,
                            reason: reason.to_string(),
                            applied: stream.applied,
                            skipped: stream.skipped,
                        },
                    );
                }
            }
        }
    }

    /// The first data landed for a lifetime with a stream attached before it: the attachment is
    /// live (`stream_attached` with the number held), the held messages are applied in arrival
    /// order, and a stream that finished meanwhile ends after them.
    fn apply_held(&mut self, key: &str, lifetime: u64) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.lifetime != lifetime {
            return;
        }
        let Some(stream) = entry.stream.as_mut() else {
            return;
        };
        let Some(held) = stream.held.take() else {
            return;
        };
        let finished = stream.finished.take();
        let lost = std::mem::take(&mut stream.lost);
        entry.phase = Phase::Streaming;
        self.record(
            key,
            TraceKind::StreamAttached {
                lifetime,
                buffered: held.len(),
            },
        );
        self.set_source(key, lifetime, StreamStatus::Live);
        // R25: on a versioned endpoint, in version order (those without one first, in arrival
        // order); the version rules then drop those at or below the snapshot's watermark.
        let mut held = held;
        if self.versions(key).is_some() {
            held.sort_by_key(|(version, _)| *version);
        }
        // R34: the held messages are one burst, applied as one batch.
        self.batching = true;
        self.batch_folds = false;
        for (version, recipe) in held {
            if let Some(stream) = self.entries.get_mut(key).and_then(|e| e.stream.as_mut()) {
                stream.applied += 1;
            }
            self.deliver(key, lifetime, recipe, version);
        }
        self.batching = false;
        self.batch_folds = false;
        if lost {
            self.stream_lost(key, lifetime);
        }
        if let Some(reason) = finished {
            let Some(entry) = self.entries.get_mut(key) else {
                return;
            };
            let Some(stream) = entry.stream.take() else {
                return;
            };
            self.record(
                key,
                TraceKind::StreamEnded {
                    lifetime,
                    reason: reason.clone(),
                    applied: stream.applied,
                    skipped: stream.skipped,
                },
            );
            self.stream_finished(key, lifetime, &reason);
        }
    }

    /// R28: a stream that finished by itself says so in its entry's stream status: `Ended`, or
    /// `Failed` with the stream's error.
    fn stream_finished(&mut self, key: &str, lifetime: u64, reason: &str) {
        let status = match reason.strip_prefix("stream failed: ") {
            Some(error) => StreamStatus::Failed {
                error: error.to_string(),
            },
            None => StreamStatus::Ended {
                reason: reason.to_string(),
            },
        };
        self.set_source(key, lifetime, status);
    }

    /// An unversioned endpoint's bound on what a stream holds before the first data (R33).
    fn buffer_bound(&self, key: &str) -> Option<usize> {
        let key_ref = self.entries.get(key)?.key_ref;
        self.config.endpoints.get(key_ref.endpoint)?.max_buffered
    }

    // ===== Timers =====

    /// A timer tick at `to` (R4, R5): every entry whose deadline is `<= to` is removed with cause
    /// `expired`, in `(deadline, sequence)` order, each stamped at its deadline; then the clock
    /// is `to` (never backwards).
    fn tick(&mut self, to: u64) {
        while let Some((key, deadline, due)) = self.earliest_deadline() {
            if deadline.at_ms > to {
                break;
            }
            self.fall_due(&key, deadline, due);
        }
        self.now = self.now.max(to);
    }

    /// Before any non-tick event, arriving at `now + late`: remove the entries whose deadline is
    /// strictly before the arrival, stamped at their deadlines, then move the clock to it.
    fn arrive(&mut self) {
        let arrival = self.now.saturating_add(self.late);
        self.late = 0;
        while let Some((key, deadline, due)) = self.earliest_deadline() {
            if deadline.at_ms >= arrival {
                break;
            }
            self.fall_due(&key, deadline, due);
        }
        self.now = self.now.max(arrival);
    }

    /// A deadline fell due, stamped at the deadline: a removal deadline removes the entry (R5),
    /// a poll deadline starts its poll request (R37), a retry deadline runs its request again
    /// (R36).
    fn fall_due(&mut self, key: &str, deadline: Deadline, due: Due) {
        if due == Due::Removal {
            self.expire(key, deadline);
            return;
        }
        self.now = self.now.max(deadline.at_ms);
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if due == Due::Poll {
            entry.poll = None;
            self.start_request(key, RequestReason::Poll);
            return;
        }
        entry.retry = None;
        let attempt = entry.retries;
        if let Some(request) = entry.in_flight {
            self.record(key, TraceKind::RequestRetried { request, attempt });
        }
    }

    /// Remove one entry whose deadline fired, stamping its events at the deadline.
    fn expire(&mut self, key: &str, deadline: Deadline) {
        // R5: only an entry with zero subscribers has a deadline (R4 invariant), and the
        // deadline belongs to the entry now under that key (it is dropped on removal), so a
        // stale timer can never remove a re-created entry.
        self.now = self.now.max(deadline.at_ms);
        self.remove(key, RemoveCause::Expired);
    }

    /// The entry with the earliest `(deadline, sequence)` of any kind, if any, and its kind.
    fn earliest_deadline(&self) -> Option<(String, Deadline, Due)> {
        let mut best: Option<(String, Deadline, Due)> = None;
        for (key, entry) in &self.entries {
            let deadlines = [
                (entry.deadline, Due::Removal),
                (entry.poll, Due::Poll),
                (entry.retry, Due::Retry),
            ];
            for (d, due) in deadlines {
                let Some(d) = d else { continue };
                let better = match &best {
                    None => true,
                    Some((_, b, _)) => d < *b,
                };
                if better {
                    best = Some((key.clone(), d, due));
                }
            }
        }
        best
    }

    /// *arm*: if the entry's keep time is finite, replace any armed deadline (silently) with
    /// `now + keep`, taking the next sequence number, and record `removal_scheduled`.
    fn arm_if_finite(&mut self, key: &str) {
        let Some(key_ref) = self.entries.get(key).map(|e| e.key_ref) else {
            return;
        };
        // R4: keep None = never removed automatically.
        let Some(keep) = self.keep_ms(key_ref) else {
            return;
        };
        let at_ms = self.now.saturating_add(keep);
        self.armings += 1;
        let seq = self.armings;
        if let Some(entry) = self.entries.get_mut(key) {
            entry.deadline = Some(Deadline { at_ms, seq });
        }
        self.record(key, TraceKind::RemovalScheduled { deadline_ms: at_ms });
    }

    /// *re-arm if unused*: with zero subscribers (and a finite keep), *arm* again (R4).
    fn rearm_if_unused(&mut self, key: &str) {
        let unused = self
            .entries
            .get(key)
            .is_some_and(|e| e.subscriptions.is_empty());
        if unused {
            self.arm_if_finite(key);
        }
    }

    // ===== Entry helpers =====

    /// Create an entry for an absent key: take the next lifetime id and record `entry_added`.
    /// The entry starts in `Loading`/`Pending` with nothing else set; callers fill it in.
    fn create_entry(&mut self, key_ref: KeyRef, key: &str, cause: AddCause) -> u64 {
        self.lifetimes_issued += 1;
        let lifetime = self.lifetimes_issued;
        self.entries.insert(
            key.to_string(),
            Entry {
                key_ref,
                lifetime,
                phase: Phase::Loading,
                status: Status::Pending,
                data: None,
                error: None,
                fulfilled_at: None,
                in_flight: None,
                subscriptions: BTreeSet::new(),
                deadline: None,
                stream: None,
                live: Live::default(),
                handler: 0,
                polls: BTreeMap::new(),
                poll: None,
                retries: 0,
                retry: None,
                tags: Vec::new(),
                invalidated: false,
            },
        );
        self.record(key, TraceKind::EntryAdded { lifetime, cause });
        lifetime
    }

    /// R1, R12: start the endpoint's lifecycle handler, if it has one.
    fn start_lifecycle_if_any(&mut self, key_ref: KeyRef, key: &str, lifetime: u64) {
        if self.has_lifecycle(key_ref) {
            self.record(key, TraceKind::LifecycleStarted { lifetime });
        }
    }

    /// *start request*: next request id, `in_flight`, status pending, `request_started` with
    /// why (R29).
    fn start_request(&mut self, key: &str, reason: RequestReason) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.requests_issued += 1;
        let request = self.requests_issued;
        entry.in_flight = Some(request);
        entry.status = Status::Pending;
        // R27: its snapshot must reach the watermark it starts from to be rebased.
        entry.live.rebase_base = entry.live.watermark;
        // R37: no poll while a request is in flight (its settle arms the next); R36: a new
        // request has no retries yet.
        entry.poll = None;
        entry.retries = 0;
        entry.retry = None;
        // R38: a request fetches fresh data: an invalidation is answered.
        entry.invalidated = false;
        self.record(key, TraceKind::RequestStarted { request, reason });
    }

    /// *maybe request* for an existing entry with a refetch policy (R2, R3).
    fn maybe_request(&mut self, key: &str, refetch: Refetch) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        // R38: an entry an invalidation reached while unused refetches now.
        let want = refetch_wanted(refetch, entry.fulfilled_at, self.now) || entry.invalidated;
        if let Some(request) = entry.in_flight {
            // R3: no second request while one is in flight; a wanted refetch joins it.
            if want {
                self.record(key, TraceKind::RequestJoined { request });
            }
        } else if entry.data.is_none() {
            // Never loaded (e.g. its request was rejected): always request.
            self.start_request(key, RequestReason::Load);
        } else if want {
            self.start_request(key, RequestReason::Mount);
        }
    }

    /// *remove* (R5, R7): abort the in-flight request, drop the deadline (no event), record
    /// `entry_removed`; the entry and its subscriptions are gone.
    fn remove(&mut self, key: &str, cause: RemoveCause) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        if let Some(request) = entry.in_flight {
            self.record(key, TraceKind::RequestAborted { request });
        }
        let loaded = entry.phase.has_data();
        self.record(
            key,
            TraceKind::EntryRemoved {
                lifetime: entry.lifetime,
                cause,
                loaded,
            },
        );
        // R21: the removal ends the lifetime's stream attachment (after the op's events).
        if let Some(stream) = entry.stream {
            self.due.push(StreamDue::Removed {
                key: key.to_string(),
                lifetime: entry.lifetime,
                stream,
            });
        }
    }

    /// The key of the live entry holding subscription `s`, if any.
    fn key_holding(&self, s: u64) -> Option<String> {
        self.entries
            .iter()
            .find(|(_, e)| e.subscriptions.contains(&s))
            .map(|(k, _)| k.clone())
    }

    /// The key of the live entry with lifetime `lifetime`, if any.
    fn key_of_lifetime(&self, lifetime: u64) -> Option<String> {
        self.entries
            .iter()
            .find(|(_, e)| e.lifetime == lifetime)
            .map(|(k, _)| k.clone())
    }

    /// The keep time of the endpoint in milliseconds, clamped to `MAX_KEEP_MS`; `None` = never.
    /// An endpoint the configuration does not list keeps for the default 60 s.
    fn keep_ms(&self, key_ref: KeyRef) -> Option<u64> {
        match self.config.endpoints.get(key_ref.endpoint) {
            Some(spec) => spec.keep_ms.map(|ms| ms.min(MAX_KEEP_MS)),
            None => Some(DEFAULT_KEEP_MS),
        }
    }

    /// Whether the endpoint has an `on_cache_entry_added` handler (unknown endpoint: no).
    fn has_lifecycle(&self, key_ref: KeyRef) -> bool {
        self.config
            .endpoints
            .get(key_ref.endpoint)
            .is_some_and(|spec| spec.lifecycle)
    }

    /// Append one event at the current time (R23).
    fn record(&mut self, key: &str, kind: TraceKind) {
        self.trace.push(TraceEvent {
            at_ms: self.now,
            key: key.into(),
            kind,
        });
        self.batch_folds = false;
    }
}

/// Whether a cache hit refetches under `refetch` (R2), stated here rather than asked of the
/// core: `Always` does, `IfMissing` does not (a missing entry is requested anyway), and
/// `IfOlderThan(ms)` does when the data was never fulfilled or is at least `ms` old.
fn refetch_wanted(refetch: Refetch, fulfilled_at: Option<u64>, now: u64) -> bool {
    match refetch {
        Refetch::Always => true,
        Refetch::IfMissing => false,
        Refetch::IfOlderThan(ms) => match fulfilled_at {
            None => true,
            Some(at) => now.saturating_sub(at) >= ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_invariants;

    const A: KeyRef = KeyRef {
        endpoint: 0,
        arg: 1,
    };
    const B: KeyRef = KeyRef {
        endpoint: 1,
        arg: 1,
    };
    const C: KeyRef = KeyRef {
        endpoint: 2,
        arg: 1,
    };

    fn model() -> Model {
        Model::new(Config::standard(true))
    }

    fn lines(m: &Model) -> Vec<String> {
        m.trace().iter().map(|e| e.to_string()).collect()
    }

    fn sub(m: &mut Model, key: KeyRef) -> u64 {
        match m.apply(&Op::Subscribe {
            key,
            refetch: Refetch::IfMissing,
        }) {
            OpResult::Subscribed(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn assert_ok(m: &Model) {
        if let Err(e) = check_invariants(m.config(), m.trace()) {
            panic!("invariants: {e}\n{:#?}", lines(m));
        }
    }

    #[test]
    fn json_form_matches_serde() {
        let data: Data = vec![0, 7, 255];
        assert_eq!(to_json(&data), serde_json::to_value(&data).unwrap());
    }

    #[test]
    fn r05_subscribe_fulfil_unsubscribe_advance_removes() {
        let mut m = model();
        let s = sub(&mut m, A);
        assert_eq!(s, 1);
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![1],
        });
        assert_eq!(
            m.apply(&Op::Unsubscribe { subscription: s }),
            OpResult::Done(true)
        );
        assert_eq!(m.next_deadline(), Some(60_000));
        m.apply(&Op::Advance { ms: 59_999 });
        assert_eq!(m.observe().len(), 1);
        m.apply(&Op::Advance { ms: 1 });
        assert!(m.observe().is_empty());
        assert_eq!(m.now(), 60_000);
        assert_eq!(
            lines(&m),
            [
                "0ms a(1) entry_added lifetime=1 cause=subscribe",
                "0ms a(1) subscribed subscription=1 subscribers=1",
                "0ms a(1) lifecycle_started lifetime=1",
                "0ms a(1) request_started request=1 reason=load",
                "0ms a(1) request_fulfilled request=1 data_changed=true",
                "0ms a(1) data_loaded lifetime=1 request=1",
                "0ms a(1) unsubscribed subscription=1 subscribers=0",
                "0ms a(1) removal_scheduled deadline=60000ms",
                "60000ms a(1) entry_removed lifetime=1 cause=expired loaded=true",
            ]
        );
        // R7a: a second unsubscribe does nothing.
        assert_eq!(
            m.apply(&Op::Unsubscribe { subscription: s }),
            OpResult::Done(false)
        );
        assert_eq!(m.issued(), (1, 1, 1));
        assert_ok(&m);
    }

    #[test]
    fn r02_resubscribe_cancels_removal() {
        let mut m = model();
        let s1 = sub(&mut m, A);
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![1],
        });
        m.apply(&Op::Unsubscribe { subscription: s1 });
        m.apply(&Op::Advance { ms: 30_000 });
        let s2 = sub(&mut m, A);
        assert_eq!(s2, 2);
        assert_eq!(m.next_deadline(), None);
        m.apply(&Op::Advance { ms: 60_000 });
        assert_eq!(m.live_lifetimes(), vec![1]);
        assert_eq!(m.live_subscriptions(), vec![2]);
        let tail: Vec<String> = lines(&m).into_iter().skip(8).collect();
        assert_eq!(
            tail,
            [
                "30000ms a(1) subscribed subscription=2 subscribers=1",
                "30000ms a(1) removal_cancelled"
            ]
        );
        // IfMissing on a loaded entry: no request.
        assert!(m.in_flight().is_empty());
        assert_ok(&m);
    }

    #[test]
    fn r04_keep_zero_removed_only_on_a_tick() {
        let mut m = model();
        let s = sub(&mut m, B);
        m.apply(&Op::Unsubscribe { subscription: s });
        assert_eq!(m.next_deadline(), Some(0));
        // Not removed inside the unsubscribe, nor by another event at the same instant.
        assert_eq!(m.observe().len(), 1);
        m.apply(&Op::Fulfil {
            key: B,
            request: 1,
            data: vec![2],
        });
        assert_eq!(m.observe().len(), 1);
        assert_eq!(m.next_deadline(), Some(0));
        m.apply(&Op::AdvanceToDeadline);
        assert!(m.observe().is_empty());
        assert_eq!(m.now(), 0);
        assert_eq!(
            lines(&m),
            [
                "0ms b(1) entry_added lifetime=1 cause=subscribe",
                "0ms b(1) subscribed subscription=1 subscribers=1",
                "0ms b(1) request_started request=1 reason=load",
                "0ms b(1) unsubscribed subscription=1 subscribers=0",
                "0ms b(1) removal_scheduled deadline=0ms",
                "0ms b(1) request_fulfilled request=1 data_changed=true",
                "0ms b(1) data_loaded lifetime=1 request=1",
                "0ms b(1) removal_scheduled deadline=0ms",
                "0ms b(1) entry_removed lifetime=1 cause=expired loaded=true",
            ]
        );
        // No deadline: AdvanceToDeadline does nothing.
        m.apply(&Op::AdvanceToDeadline);
        assert_eq!(m.trace().len(), 9);
        assert_ok(&m);
    }

    #[test]
    fn r06_prefetch_arms_a_deadline() {
        let mut m = model();
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::IfMissing,
        });
        assert_eq!(m.next_deadline(), Some(60_000));
        assert_eq!(m.in_flight(), vec![(A, 1)]);
        m.apply(&Op::Advance { ms: 10_000 });
        // A cache hit without a subscription does not extend the lifetime; in flight: no join.
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::IfMissing,
        });
        assert_eq!(m.next_deadline(), Some(60_000));
        // A forced prefetch joins the running request.
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::Always,
        });
        // Settling re-arms from the settle time.
        m.apply(&Op::Reject {
            key: A,
            request: 1,
            error: "boom".into(),
        });
        assert_eq!(m.next_deadline(), Some(70_000));
        let obs = m.observe();
        assert_eq!(obs[0].status, Status::Rejected);
        assert_eq!(obs[0].phase, Phase::Loading);
        assert_eq!(obs[0].error.as_deref(), Some("boom"));
        m.apply(&Op::AdvanceToDeadline);
        assert_eq!(
            lines(&m),
            [
                "0ms a(1) entry_added lifetime=1 cause=prefetch",
                "0ms a(1) lifecycle_started lifetime=1",
                "0ms a(1) request_started request=1 reason=load",
                "0ms a(1) removal_scheduled deadline=60000ms",
                "10000ms a(1) request_joined request=1",
                "10000ms a(1) request_rejected request=1 error=\"boom\"",
                "10000ms a(1) removal_scheduled deadline=70000ms",
                "70000ms a(1) entry_removed lifetime=1 cause=expired loaded=false",
            ]
        );
        assert_ok(&m);
    }

    #[test]
    fn r10_stale_results_ignored() {
        let mut m = model();
        let s = sub(&mut m, A);
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![1],
        });
        m.apply(&Op::Refetch { subscription: s }); // request 2
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![9],
        }); // stale
        m.apply(&Op::Remove { key: A });
        m.apply(&Op::Fulfil {
            key: A,
            request: 2,
            data: vec![9],
        }); // absent
        m.apply(&Op::Reject {
            key: A,
            request: 2,
            error: "x".into(),
        }); // absent
        assert!(m.observe().is_empty());
        assert_eq!(
            m.apply(&Op::Refetch { subscription: s }),
            OpResult::Done(false)
        );
        let tail: Vec<String> = lines(&m).into_iter().skip(6).collect();
        assert_eq!(
            tail,
            [
                "0ms a(1) request_started request=2 reason=refetch",
                "0ms a(1) result_ignored request=1",
                "0ms a(1) request_aborted request=2",
                "0ms a(1) entry_removed lifetime=1 cause=removed loaded=true",
                "0ms a(1) result_ignored request=2",
                "0ms a(1) result_ignored request=2",
            ]
        );
        assert_ok(&m);
    }

    #[test]
    fn r20_upsert_creates_and_loads() {
        let mut m = model();
        m.apply(&Op::Upsert {
            key: C,
            data: vec![3],
        });
        m.apply(&Op::Upsert {
            key: C,
            data: vec![3],
        });
        let obs = m.observe();
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].phase, Phase::Loaded);
        assert_eq!(obs[0].status, Status::Fulfilled);
        assert_eq!(obs[0].data, Some(vec![3]));
        assert_eq!(obs[0].removal_deadline, None); // keep never
        assert_eq!(
            lines(&m),
            [
                "0ms c(1) entry_added lifetime=1 cause=upsert",
                "0ms c(1) lifecycle_started lifetime=1",
                "0ms c(1) upserted data_changed=true",
                "0ms c(1) data_loaded lifetime=1 by=upsert",
                "0ms c(1) upserted data_changed=false",
            ]
        );
        // Updates through the lifecycle handle now apply.
        let r = m.apply(&Op::UpdateCached {
            lifetime: 1,
            generation: None,
            recipe: Recipe::Push(4),
            patches: true,
        });
        match r {
            OpResult::Updated(Ok(Some(set))) => assert_eq!(set.patches.0.len(), 1),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(m.observe()[0].phase, Phase::Streaming);
        assert_eq!(m.observe()[0].data, Some(vec![3, 4]));
        let r = m.apply(&Op::UpdateCached {
            lifetime: 1,
            generation: None,
            recipe: Recipe::Noop,
            patches: true,
        });
        assert_eq!(r, OpResult::Updated(Ok(Some(PatchSet::default()))));
        let r = m.apply(&Op::UpdateCached {
            lifetime: 1,
            generation: None,
            recipe: Recipe::Noop,
            patches: false,
        });
        assert_eq!(r, OpResult::Updated(Ok(None)));
        let r = m.apply(&Op::UpdateCached {
            lifetime: 2,
            generation: None,
            recipe: Recipe::Pop,
            patches: false,
        });
        assert_eq!(r, OpResult::Updated(Err(UpdateError::NotLive)));
        assert_ok(&m);
    }

    #[test]
    fn r15_update_before_load_and_patch_errors() {
        let mut m = model();
        sub(&mut m, A);
        let r = m.apply(&Op::UpdateCached {
            lifetime: 1,
            generation: None,
            recipe: Recipe::Pop,
            patches: false,
        });
        assert_eq!(r, OpResult::Updated(Err(UpdateError::NotLoaded)));
        let r = m.apply(&Op::UpdateQueryData {
            key: A,
            recipe: Recipe::Push(1),
        });
        assert_eq!(r, OpResult::QueryDataUpdated(PatchSet::default()));
        let empty = json_patch::Patch(vec![]);
        let r = m.apply(&Op::PatchQueryData {
            key: A,
            patch: empty.clone(),
        });
        assert_eq!(r, OpResult::Patched(Err(PatchError::NoData)));
        let r = m.apply(&Op::PatchQueryData {
            key: B,
            patch: empty,
        });
        assert_eq!(r, OpResult::Patched(Err(PatchError::NoEntry)));
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![1],
        });
        let bad: json_patch::Patch =
            serde_json::from_value(serde_json::json!([{"op": "remove", "path": "/5"}])).unwrap();
        let r = m.apply(&Op::PatchQueryData { key: A, patch: bad });
        assert_eq!(r, OpResult::Patched(Err(PatchError::Apply)));
        let schema: json_patch::Patch =
            serde_json::from_value(serde_json::json!([{"op": "add", "path": "/-", "value": 300}]))
                .unwrap();
        let r = m.apply(&Op::PatchQueryData {
            key: A,
            patch: schema,
        });
        assert_eq!(r, OpResult::Patched(Err(PatchError::Schema)));
        let good: json_patch::Patch =
            serde_json::from_value(serde_json::json!([{"op": "add", "path": "/-", "value": 2}]))
                .unwrap();
        let r = m.apply(&Op::PatchQueryData {
            key: A,
            patch: good,
        });
        assert_eq!(r, OpResult::Patched(Ok(())));
        assert_eq!(m.observe()[0].data, Some(vec![1, 2]));
        let r = m.apply(&Op::UpdateQueryData {
            key: A,
            recipe: Recipe::Pop,
        });
        match r {
            OpResult::QueryDataUpdated(set) => assert!(!set.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        let tail: Vec<String> = lines(&m).into_iter().skip(6).collect();
        assert_eq!(
            tail,
            [
                r#"0ms a(1) updated source=patch_query_data patches=[{"op":"add","path":"/1","value":2}]"#,
                r#"0ms a(1) updated source=update_query_data patches=[{"op":"remove","path":"/1"}]"#,
            ]
        );
        assert_ok(&m);
    }

    #[test]
    fn r07_reset_order() {
        let mut m = model();
        sub(&mut m, C);
        m.apply(&Op::Upsert {
            key: B,
            data: vec![],
        });
        sub(&mut m, A);
        let before = m.trace().len();
        m.apply(&Op::Reset);
        assert!(m.observe().is_empty());
        let tail: Vec<String> = lines(&m).into_iter().skip(before).collect();
        assert_eq!(
            tail,
            [
                "0ms a(1) request_aborted request=2",
                "0ms a(1) entry_removed lifetime=3 cause=reset loaded=false",
                "0ms b(1) entry_removed lifetime=2 cause=reset loaded=true",
                "0ms c(1) request_aborted request=1",
                "0ms c(1) entry_removed lifetime=1 cause=reset loaded=false",
            ]
        );
        // Counters are never reset; the api is usable again.
        assert_eq!(sub(&mut m, A), 3);
        assert_eq!(m.live_lifetimes(), vec![4]);
        assert_ok(&m);
    }

    #[test]
    fn r05_deadlines_fire_in_order_at_their_own_time() {
        let mut m = model();
        let s1 = sub(&mut m, A);
        m.apply(&Op::Advance { ms: 5 });
        m.apply(&Op::Prefetch {
            key: KeyRef {
                endpoint: 0,
                arg: 2,
            },
            refetch: Refetch::IfMissing,
        });
        m.apply(&Op::Unsubscribe { subscription: s1 });
        // a(2) armed at 60005 first (seq 1), a(1) at 60005 second (seq 2).
        m.apply(&Op::Advance { ms: u64::MAX });
        assert_eq!(m.now(), u64::MAX);
        let removed: Vec<(u64, String)> = m
            .trace()
            .iter()
            .filter(|e| matches!(e.kind, TraceKind::EntryRemoved { .. }))
            .map(|e| (e.at_ms, e.key.to_string()))
            .collect();
        assert_eq!(
            removed,
            [(60_005, "a(2)".to_string()), (60_005, "a(1)".to_string())]
        );
        // Saturating time arithmetic: arming at u64::MAX does not overflow.
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::IfMissing,
        });
        assert_eq!(m.next_deadline(), Some(u64::MAX));
        assert_ok(&m);
    }

    /// A deterministic pseudo-random walk over the op alphabet: every model trace satisfies the
    /// trace invariants, and `observe` keeps the R4 invariant (zero subscribers ⇔ deadline armed,
    /// for a finite keep).
    #[test]
    fn random_walks_satisfy_invariants() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for record_patches in [false, true] {
            for _ in 0..200 {
                let mut m = Model::new(Config::standard(record_patches));
                for _ in 0..60 {
                    let key = KeyRef {
                        endpoint: next(3) as usize,
                        arg: next(2) as u8,
                    };
                    let refetch = match next(3) {
                        0 => Refetch::IfMissing,
                        1 => Refetch::Always,
                        _ => Refetch::IfOlderThan(next(3) * 20_000),
                    };
                    let (_, requests, subs) = m.issued();
                    let request = next(requests + 1) + 1;
                    let subscription = next(subs + 1) + 1;
                    let recipe = match next(4) {
                        0 => Recipe::Noop,
                        1 => Recipe::Push(next(3) as u8),
                        2 => Recipe::Pop,
                        _ => Recipe::SetFirst(next(3) as u8),
                    };
                    let data = vec![next(2) as u8; next(3) as usize];
                    let lifetime = next(m.issued().0 + 1) + 1;
                    let op = match next(17) {
                        0 => Op::Subscribe { key, refetch },
                        1 => Op::Unsubscribe { subscription },
                        2 => Op::Refetch { subscription },
                        3 => Op::Prefetch { key, refetch },
                        4 => Op::Advance {
                            ms: next(4) * 20_000,
                        },
                        5 => Op::AdvanceToDeadline,
                        6 => Op::Fulfil { key, request, data },
                        7 => Op::Reject {
                            key,
                            request,
                            error: "e".into(),
                        },
                        8 => Op::UpdateCached {
                            lifetime: next(m.issued().0 + 1) + 1,
                            generation: None,
                            recipe,
                            patches: next(2) == 0,
                        },
                        9 => Op::UpdateQueryData { key, recipe },
                        10 => Op::Upsert { key, data },
                        11 => Op::Remove { key },
                        12 => Op::Reset,
                        13 => Op::StreamAttach { lifetime },
                        14 => Op::StreamMessage {
                            lifetime,
                            recipe,
                            version: None,
                        },
                        15 => Op::StreamSkip { lifetime },
                        _ => Op::StreamFinish {
                            lifetime,
                            failed: next(2) == 0,
                        },
                    };
                    m.apply(&op);
                    for o in m.observe() {
                        let finite = !o.key.starts_with("c(");
                        let unused = o.subscriptions.is_empty();
                        assert_eq!(unused && finite, o.removal_deadline.is_some(), "{o:?}");
                        assert_eq!(o.phase.has_data(), o.data.is_some(), "{o:?}");
                        if let Some(stream) = o.stream {
                            // R21: with data, an attached stream is live and the entry streams.
                            if o.phase.has_data() {
                                assert_eq!(o.phase, Phase::Streaming, "{o:?}");
                                assert!(stream.held == 0 && stream.reading, "{o:?}");
                            }
                        }
                    }
                }
                assert_ok(&m);
            }
        }
    }

    fn done(m: &mut Model, op: Op) -> bool {
        match m.apply(&op) {
            OpResult::Done(done) => done,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn r21_messages_before_the_data_are_held_then_applied_in_order_then_the_stream_ends() {
        let mut m = model();
        sub(&mut m, A);
        assert!(done(&mut m, Op::StreamAttach { lifetime: 1 }));
        for recipe in [Recipe::Push(1), Recipe::Noop, Recipe::Push(2)] {
            assert!(done(
                &mut m,
                Op::StreamMessage {
                    version: None,
                    lifetime: 1,
                    recipe
                }
            ));
        }
        assert!(done(&mut m, Op::StreamSkip { lifetime: 1 }));
        let held = m.observe()[0].stream;
        assert_eq!(
            held,
            Some(StreamObservation {
                held: 3,
                reading: true
            })
        );
        assert!(done(
            &mut m,
            Op::StreamFinish {
                lifetime: 1,
                failed: true
            }
        ));
        // Finished before the data: it delivers nothing more, and waits for the data.
        assert!(!done(
            &mut m,
            Op::StreamMessage {
                version: None,
                lifetime: 1,
                recipe: Recipe::Pop
            }
        ));
        assert!(!done(&mut m, Op::StreamSkip { lifetime: 1 }));
        assert_eq!(m.observe()[0].phase, Phase::Loading);
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![0],
        });
        let obs = &m.observe()[0];
        assert_eq!(obs.data, Some(vec![0, 1, 2]));
        assert_eq!(obs.phase, Phase::Streaming);
        assert_eq!(obs.stream, None);
        let tail: Vec<String> = lines(&m).into_iter().skip(4).collect();
        assert_eq!(
            tail,
            [
                r#"0ms a(1) stream_skipped lifetime=1 reason="bad frame""#,
                "0ms a(1) request_fulfilled request=1 data_changed=true",
                "0ms a(1) data_loaded lifetime=1 request=1",
                "0ms a(1) stream_attached lifetime=1 buffered=3",
                "0ms a(1) stream_status lifetime=1 live",
                r#"0ms a(1) updated source=lifecycle patches=[{"op":"add","path":"/1","value":1}]"#,
                r#"0ms a(1) updated source=lifecycle patches=[{"op":"add","path":"/2","value":2}]"#,
                r#"0ms a(1) stream_ended lifetime=1 reason="stream failed: connection reset" applied=3 skipped=1"#,
                "0ms a(1) stream_status lifetime=1 failed: connection reset",
            ]
        );
        assert_ok(&m);
    }

    #[test]
    fn r21_attach_with_data_is_live_at_once_and_only_one_at_a_time() {
        let mut m = model();
        // Not live, and no lifecycle handler (b): nothing.
        assert!(!done(&mut m, Op::StreamAttach { lifetime: 1 }));
        m.apply(&Op::Upsert {
            key: B,
            data: vec![],
        });
        assert!(!done(&mut m, Op::StreamAttach { lifetime: 1 }));
        m.apply(&Op::Upsert {
            key: C,
            data: vec![7],
        });
        let before = m.trace().len();
        assert!(done(&mut m, Op::StreamAttach { lifetime: 2 }));
        assert_eq!(m.observe()[1].phase, Phase::Streaming);
        // A second attachment while the first has not ended: ignored.
        assert!(!done(&mut m, Op::StreamAttach { lifetime: 2 }));
        assert!(done(
            &mut m,
            Op::StreamMessage {
                version: None,
                lifetime: 2,
                recipe: Recipe::SetFirst(8)
            }
        ));
        assert!(done(
            &mut m,
            Op::StreamMessage {
                version: None,
                lifetime: 2,
                recipe: Recipe::Noop
            }
        ));
        assert!(done(
            &mut m,
            Op::StreamFinish {
                lifetime: 2,
                failed: false
            }
        ));
        // Ended: it takes nothing more, and a new one may attach.
        assert!(!done(
            &mut m,
            Op::StreamFinish {
                lifetime: 2,
                failed: false
            }
        ));
        assert!(done(&mut m, Op::StreamAttach { lifetime: 2 }));
        let tail: Vec<String> = lines(&m).into_iter().skip(before).collect();
        assert_eq!(
            tail,
            [
                "0ms c(1) stream_attached lifetime=2 buffered=0",
                "0ms c(1) stream_status lifetime=2 live",
                r#"0ms c(1) updated source=lifecycle patches=[{"op":"replace","path":"/0","value":8}]"#,
                r#"0ms c(1) stream_ended lifetime=2 reason="stream ended" applied=2 skipped=0"#,
                "0ms c(1) stream_status lifetime=2 ended: stream ended",
                "0ms c(1) stream_attached lifetime=2 buffered=0",
                "0ms c(1) stream_status lifetime=2 live",
            ]
        );
        assert_eq!(m.observe()[1].data, Some(vec![8]));
        assert_ok(&m);
    }

    #[test]
    fn r21_removal_ends_the_attachment_after_the_removal_events() {
        let mut m = model();
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::IfMissing,
        });
        m.apply(&Op::Upsert {
            key: C,
            data: vec![],
        });
        assert!(done(&mut m, Op::StreamAttach { lifetime: 1 }));
        assert!(done(&mut m, Op::StreamAttach { lifetime: 2 }));
        for lifetime in [1, 2] {
            assert!(done(
                &mut m,
                Op::StreamMessage {
                    version: None,
                    lifetime,
                    recipe: Recipe::Push(5)
                }
            ));
        }
        let before = m.trace().len();
        m.apply(&Op::Reset);
        assert!(!done(&mut m, Op::StreamSkip { lifetime: 1 }));
        let tail: Vec<String> = lines(&m).into_iter().skip(before).collect();
        assert_eq!(
            tail,
            [
                "0ms a(1) request_aborted request=1",
                "0ms a(1) entry_removed lifetime=1 cause=reset loaded=false",
                "0ms c(1) entry_removed lifetime=2 cause=reset loaded=true",
                r#"0ms a(1) stream_ended lifetime=1 reason="entry removed before its data loaded" applied=0 skipped=0"#,
                r#"0ms c(1) stream_ended lifetime=2 reason="entry removed" applied=1 skipped=0"#,
            ]
        );
        // Expiry: the stream ends after the removal, at the tick's time.
        m.apply(&Op::Prefetch {
            key: A,
            refetch: Refetch::IfMissing,
        });
        assert!(done(&mut m, Op::StreamAttach { lifetime: 3 }));
        let before = m.trace().len();
        m.apply(&Op::Advance { ms: 70_000 });
        let tail: Vec<String> = lines(&m).into_iter().skip(before).collect();
        assert_eq!(
            tail,
            [
                "60000ms a(1) request_aborted request=2",
                "60000ms a(1) entry_removed lifetime=3 cause=expired loaded=false",
                r#"70000ms a(1) stream_ended lifetime=3 reason="entry removed before its data loaded" applied=0 skipped=0"#,
            ]
        );
        assert_ok(&m);
    }

    #[test]
    fn snapshot_excludes_trace() {
        let mut m = model();
        let s = sub(&mut m, A);
        let snap = m.snapshot();
        m.apply(&Op::Unsubscribe { subscription: 99 });
        assert_eq!(m.snapshot(), snap);
        m.apply(&Op::Unsubscribe { subscription: s });
        assert_ne!(m.snapshot(), snap);
    }
    #[test]
    fn r33_an_unversioned_buffer_fails_at_its_bound_after_applying_what_it_held() {
        let mut m = Model::new(Config::versioned(false));
        let sub = sub(&mut m, A);
        assert_eq!(sub, 1);
        assert!(done(&mut m, Op::StreamAttach { lifetime: 1 }));
        for b in 1..=3 {
            let op = Op::StreamMessage {
                lifetime: 1,
                recipe: Recipe::Push(b),
                version: None,
            };
            // The third is past the bound: dropped, and the stream reads nothing more.
            assert!(done(&mut m, op) || b == 3);
        }
        assert_eq!(
            m.observe()[0].stream.map(|s| (s.held, s.reading)),
            Some((2, false))
        );
        m.apply(&Op::Fulfil {
            key: A,
            request: 1,
            data: vec![0],
        });
        let obs = &m.observe()[0];
        assert_eq!(obs.data, Some(vec![0, 1, 2]));
        let error = "more than 2 messages arrived before the first data".to_string();
        assert_eq!(obs.stream_status, StreamStatus::Failed { error });
        assert!(lines(&m).iter().any(|l| l.contains(
            r#"stream_ended lifetime=1 reason="stream failed: more than 2 messages arrived before the first data" applied=2"#
        )));
        assert_ok(&m);
    }
}
