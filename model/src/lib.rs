//! The reference model of livecache: its specification (`docs/spec.md`, with
//! `docs/semantics.md`) stated as obviously as possible. Plain enums, `BTreeMap`s, linear scans,
//! time as a `u64` of milliseconds, no performance concerns. It shares nothing with the
//! implementation but the public vocabulary: trace events, statuses, patch sets and refetch
//! policies from `livecache::core`.
//!
//! The same [`Op`] alphabet drives this model, the sans-IO core and the runtime; the tests in
//! the `livecache` package compare their observations after every op. What drives the core with
//! these ops and compares it with the model (the harness), and the fuzz bodies, are in the
//! `livecache-check` crate (`check/`): this crate is the model alone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod connection;
mod invariants;
mod model;

pub use connection::{ConnEvent, ConnectionModel, REFUSED, RESET, TopicId};
pub use invariants::check_invariants;
pub use model::{Deadline, Entry, Live, Model, Snapshot, Stream, trace_text};

use livecache::core::{PatchSet, Phase, Refetch, RetryPolicy, Status, StreamStatus, Version};
use serde::{Deserialize, Serialize};

/// RFC 6902 patches for a `Vec<u8>`: some apply, some fail an operation, some break the schema.
/// The vocabulary of `PatchQueryData` ops for the property tests and the fuzzer alike.
pub const PATCH_TEMPLATES: &[&str] = &[
    r#"[{"op":"add","path":"/-","value":1}]"#,
    r#"[{"op":"replace","path":"/0","value":3}]"#,
    r#"[{"op":"test","path":"/0","value":0},{"op":"remove","path":"/0"}]"#,
    r#"[{"op":"remove","path":"/5"}]"#,
    r#"[{"op":"add","path":"/-","value":2},{"op":"remove","path":"/9"}]"#,
    r#"[{"op":"add","path":"/0","value":"x"}]"#,
    r#"[{"op":"add","path":"/-","value":300}]"#,
    r#"[{"op":"replace","path":"","value":[]}]"#,
    r#"[{"op":"replace","path":"","value":{"not":"a list"}}]"#,
    r#"[{"op":"move","from":"/0","path":"/-"}]"#,
    r#"[{"op":"copy","from":"/0","path":"/0"}]"#,
    r#"[{"op":"replace","path":"/0","value":0}]"#,
    r#"[]"#,
];

/// The reason text of every `StreamSkip` (a bad frame, R22): `stream_skipped { reason }`.
pub const STREAM_SKIP_REASON: &str = "bad frame";

/// The error text of a failed stream (`StreamFinish { failed: true }`): the attachment ends
/// with the reason `stream failed: connection reset`.
pub const STREAM_FAILURE: &str = "connection reset";

/// The data type the model caches: a small list of bytes.
pub type Data = Vec<u8>;

/// One endpoint of the model's universe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// Its name: keys are `name(arg)`.
    pub name: String,
    /// Keep time in milliseconds (already clamped); `None` = never removed automatically.
    pub keep_ms: Option<u64>,
    /// Whether it has an `on_cache_entry_added` handler.
    pub lifecycle: bool,
    /// Whether its messages and snapshots carry versions (R24–R27, R33); `None`: unversioned.
    #[serde(default)]
    pub versions: Option<VersionSpec>,
    /// Unversioned only: the most messages a stream holds before the first data; one more
    /// fails the stream (R33). `None`: unbounded. (A versioned endpoint holds `max_queued`,
    /// then drops them and resyncs.)
    #[serde(default)]
    pub max_buffered: Option<usize>,
    /// A failed stream makes the query status `Rejected` too, while it is `Failed` (R28).
    #[serde(default)]
    pub stream_failure_rejects: bool,
    /// Its retry policy (R36); the model's universe has no jitter (`jitter_percent` 0: the
    /// core's jitter is a pure function, unit-tested there).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

/// How a versioned endpoint of the model keeps its messages in order (R24–R27, R33).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionSpec {
    /// Each message's version is the previous one's plus one: one further ahead is a gap (R26).
    pub contiguous: bool,
    /// A resync resumes the source from the watermark's next version (else it refetches).
    pub resume: bool,
    /// The most messages held across a gap, and the most kept for a rebase (R33).
    pub max_queued: usize,
}

/// The model's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The endpoints; [`KeyRef::endpoint`] indexes this list.
    pub endpoints: Vec<EndpointSpec>,
    /// Whether `updated` events carry their patches (recording mode "events with patches").
    pub record_patches: bool,
}

impl Config {
    /// The standard test universe: `a` (keep 60 s, lifecycle), `b` (keep 0, no lifecycle),
    /// `c` (keep never, lifecycle).
    pub fn standard(record_patches: bool) -> Config {
        let ep = |name: &str, keep_ms, lifecycle| EndpointSpec {
            name: name.to_string(),
            keep_ms,
            lifecycle,
            versions: None,
            max_buffered: None,
            stream_failure_rejects: false,
            retry: None,
        };
        // `c` retries a failed request twice, after 100 then 150 ms (R36).
        let retrying = EndpointSpec {
            retry: Some(RetryPolicy {
                max_retries: 2,
                base_ms: 100,
                max_ms: 150,
                jitter_percent: 0,
                seed: 0,
            }),
            ..ep("c", None, true)
        };
        Config {
            endpoints: vec![
                ep("a", Some(60_000), true),
                ep("b", Some(0), false),
                retrying,
            ],
            record_patches,
        }
    }

    /// The standard universe (with `a`'s pre-data buffer bounded to 2 messages) and three
    /// versioned endpoints, each with a lifecycle and queues of at most 2 messages: `v` (keep 60 s, contiguous, resyncs by refetch), `r` (keep never,
    /// contiguous, resyncs by resuming) and `n` (keep 60 s, not contiguous: no gaps, only
    /// stale messages and the refetch rebase).
    pub fn versioned(record_patches: bool) -> Config {
        let mut config = Config::standard(record_patches);
        let ep = |name: &str, keep_ms, contiguous, resume| EndpointSpec {
            name: name.to_string(),
            keep_ms,
            lifecycle: true,
            versions: Some(VersionSpec {
                contiguous,
                resume,
                max_queued: 2,
            }),
            max_buffered: None,
            // `r`'s failed streams reject its queries (R28's option).
            stream_failure_rejects: resume,
            retry: None,
        };
        // `a`'s streams hold at most 2 messages before the first data, then fail.
        if let Some(a) = config.endpoints.first_mut() {
            a.max_buffered = Some(2);
        }
        config.endpoints.extend([
            ep("v", Some(60_000), true, false),
            ep("r", None, true, true),
            ep("n", Some(60_000), false, false),
        ]);
        config
    }

    /// The cache key of a [`KeyRef`]: `name(arg)`.
    pub fn key(&self, key: KeyRef) -> String {
        let name = self
            .endpoints
            .get(key.endpoint)
            .map_or("?", |e| e.name.as_str());
        format!("{name}({})", key.arg)
    }
}

/// A cache key in the model's universe: an endpoint index and a small integer argument.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyRef {
    /// Index into [`Config::endpoints`].
    pub endpoint: usize,
    /// The argument; the key is `name(arg)`.
    pub arg: u8,
}

/// An update recipe, described as data so that model and implementation run the same one.
///
/// "Touching" means taking mutable access to the draft: every recipe but `Noop` touches, even
/// when the resulting value is equal (e.g. `Pop` on an empty list).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipe {
    /// Reads the data, changes nothing, never takes mutable access.
    Noop,
    /// Appends a byte.
    Push(u8),
    /// Removes the last byte, if any.
    Pop,
    /// Sets the first byte, if any.
    SetFirst(u8),
}

impl Recipe {
    /// Whether the recipe takes mutable access (and so counts as an applied update).
    pub fn touches(self) -> bool {
        !matches!(self, Recipe::Noop)
    }

    /// Apply the recipe to plain data.
    pub fn apply(self, data: &mut Data) {
        match self {
            Recipe::Noop => {}
            Recipe::Push(b) => data.push(b),
            Recipe::Pop => {
                data.pop();
            }
            Recipe::SetFirst(b) => {
                if let Some(first) = data.first_mut() {
                    *first = b;
                }
            }
        }
    }
}

/// One operation of the shared alphabet (see `docs/semantics.md` for each one's meaning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Subscribe to a key.
    Subscribe {
        /// The key.
        key: KeyRef,
        /// Whether a cache hit refetches.
        refetch: Refetch,
    },
    /// Drop a subscription (possibly stale, possibly twice).
    Unsubscribe {
        /// The subscription id.
        subscription: u64,
    },
    /// Refetch through a subscription.
    Refetch {
        /// The subscription id.
        subscription: u64,
    },
    /// Prefetch a key (no subscription).
    Prefetch {
        /// The key.
        key: KeyRef,
        /// Whether a cache hit refetches.
        refetch: Refetch,
    },
    /// Advance the clock by `ms` and run a timer tick.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
    /// Advance the clock exactly to the next removal deadline (if any) and run a timer tick.
    AdvanceToDeadline,
    /// Let `ms` pass with no timer tick: the next op arrives that much later, and whatever fell
    /// due strictly before it expires first, stamped at its deadline (the catch-up expiry of an
    /// event that arrives late). A tick op takes the lateness with it.
    Late {
        /// Milliseconds.
        ms: u64,
    },
    /// A request result with data.
    Fulfil {
        /// The key the result is for.
        key: KeyRef,
        /// The request id (current or stale).
        request: u64,
        /// The data.
        data: Data,
    },
    /// A request failure.
    Reject {
        /// The key the result is for.
        key: KeyRef,
        /// The request id (current or stale).
        request: u64,
        /// The error text.
        error: String,
    },
    /// `update_cached_data` through the lifecycle handle of a lifetime.
    UpdateCached {
        /// The lifetime of the handle.
        lifetime: u64,
        /// Which of the lifetime's handlers holds the handle (R30): `None` its current one,
        /// else that generation (0 the first, one more per restart), perhaps an ended one.
        #[serde(default)]
        generation: Option<u32>,
        /// The recipe.
        recipe: Recipe,
        /// Whether the caller asks for the patch set.
        patches: bool,
    },
    /// `update_query_data` from outside.
    UpdateQueryData {
        /// The key.
        key: KeyRef,
        /// The recipe.
        recipe: Recipe,
    },
    /// `patch_query_data` with RFC 6902 patches.
    PatchQueryData {
        /// The key.
        key: KeyRef,
        /// The patches (often invalid on purpose).
        patch: json_patch::Patch,
    },
    /// `upsert_query_data`.
    Upsert {
        /// The key.
        key: KeyRef,
        /// The data.
        data: Data,
    },
    /// `remove(key)`.
    Remove {
        /// The key.
        key: KeyRef,
    },
    /// `reset()`.
    Reset,
    /// The lifecycle handler of `lifetime` attaches a message stream (R21): held until the
    /// lifetime's first data if it has none yet, live at once if it has.
    StreamAttach {
        /// The lifetime of the handle.
        lifetime: u64,
    },
    /// The stream attached to `lifetime` delivers a message, applied as `recipe` (an update
    /// through the lifecycle handle without patches), now or once the first data lands. On a
    /// versioned endpoint a message with a version follows R24–R26 (`None` there, or a version
    /// on an unversioned endpoint: applied as an unversioned message).
    StreamMessage {
        /// The lifetime the stream is attached to.
        lifetime: u64,
        /// What the message does to the data.
        recipe: Recipe,
        /// Its version.
        #[serde(default)]
        version: Option<u64>,
    },
    /// The stream attached to `lifetime` yields a bad frame: skipped, counted and traced with
    /// [`STREAM_SKIP_REASON`] (R22); the stream goes on.
    StreamSkip {
        /// The lifetime the stream is attached to.
        lifetime: u64,
    },
    /// The stream attached to `lifetime` finishes: it ends by itself, or fails with
    /// [`STREAM_FAILURE`].
    StreamFinish {
        /// The lifetime the stream is attached to.
        lifetime: u64,
        /// Whether it failed (else it ended).
        failed: bool,
    },
    /// A request result with data and its watermark (R24, R27); on an unversioned endpoint the
    /// watermark is ignored.
    FulfilVersioned {
        /// The key the result is for.
        key: KeyRef,
        /// The request id (current or stale).
        request: u64,
        /// The data.
        data: Data,
        /// The snapshot's watermark.
        watermark: u64,
    },
    /// `upsert_query_data` with a watermark (R20, R24).
    UpsertVersioned {
        /// The key.
        key: KeyRef,
        /// The data.
        data: Data,
        /// The snapshot's watermark.
        watermark: u64,
    },
    /// The source of `lifetime`'s stream reports its status (R28).
    StreamReport {
        /// The lifetime.
        lifetime: u64,
        /// What it reports.
        report: Report,
    },
    /// The source of `lifetime`'s stream replayed what a resume asked for (R26, R33).
    ResyncDone {
        /// The lifetime.
        lifetime: u64,
    },
    /// The lifecycle handler of `lifetime` refetches its entry through its handle (R29).
    RefetchLifetime {
        /// The lifetime of the handle.
        lifetime: u64,
    },
    /// The source of `lifetime`'s stream may have missed messages (it reconnected, R32): the
    /// entry resyncs — by its policy if versioned, else a refetch. Whether the lifetime is live.
    SourceResync {
        /// The lifetime.
        lifetime: u64,
    },
    /// `restart(arg)` on the key's endpoint (R30): its entry's lifecycle handler is replaced
    /// by a new one; the entry keeps its data, subscribers and watermark. Whether it did.
    Restart {
        /// The key.
        key: KeyRef,
    },
    /// Poll the entry of `subscription` every `interval` ms (R37); 0 stops its polling. Whether
    /// the subscription is live.
    SetPolling {
        /// The subscription id.
        subscription: u64,
        /// The interval in ms (0: none).
        interval: u64,
    },
    /// The entry of `key` provides `tags` from now on (R38). Whether it is live.
    ProvideTags {
        /// The key.
        key: KeyRef,
        /// The tags.
        tags: Vec<livecache::core::Tag>,
    },
    /// Invalidate `tags` (R38).
    Invalidate {
        /// The tags.
        tags: Vec<livecache::core::Tag>,
    },
}

/// A status a stream's source reports (R28); `Ended` and `Failed` come with
/// [`Op::StreamFinish`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Report {
    /// `Connecting`.
    Connecting,
    /// `Live`.
    Live,
    /// `Reconnecting { attempt: 1, since_ms: now, last_error: STREAM_LOST }`.
    Reconnecting,
}

/// The `last_error` of every reported `Reconnecting` ([`Report::Reconnecting`]).
pub const STREAM_LOST: &str = "connection lost";

impl Report {
    /// The stream status reported at `now`.
    pub fn status(self, now: u64) -> StreamStatus {
        match self {
            Report::Connecting => StreamStatus::Connecting,
            Report::Live => StreamStatus::Live,
            Report::Reconnecting => StreamStatus::Reconnecting {
                attempt: 1,
                since_ms: now,
                last_error: STREAM_LOST.to_string(),
            },
        }
    }
}

impl Op {
    /// Whether the op is one of the stream ops (R21): the runtime's side of an attachment, which
    /// tells the cache the time only through what it applies or records.
    pub fn is_stream_op(&self) -> bool {
        matches!(
            self,
            Op::StreamAttach { .. }
                | Op::StreamMessage { .. }
                | Op::StreamSkip { .. }
                | Op::StreamFinish { .. }
                | Op::StreamReport { .. }
                | Op::ResyncDone { .. }
                | Op::SourceResync { .. }
        )
    }
}

/// Why an update through a lifecycle handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateError {
    /// No live entry has that lifetime (removed, or never existed).
    NotLive,
    /// The entry has no data yet.
    NotLoaded,
}

/// Why `patch_query_data` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatchError {
    /// No entry for the key.
    NoEntry,
    /// The entry has no data yet.
    NoData,
    /// An operation of the patch did not apply (bad path, failed `test`, …).
    Apply,
    /// The patched JSON is not a value of the data type.
    Schema,
}

/// What an op returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The op returns nothing.
    Unit,
    /// Subscribe: the new subscription id.
    Subscribed(u64),
    /// Unsubscribe, Refetch, Remove and the stream ops: whether it did anything.
    Done(bool),
    /// UpdateCached.
    Updated(Result<Option<PatchSet>, UpdateError>),
    /// UpdateQueryData.
    QueryDataUpdated(PatchSet),
    /// PatchQueryData.
    Patched(Result<(), PatchError>),
}

/// What an observer sees of one live entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Observation {
    /// The cache key.
    pub key: String,
    /// The lifetime id.
    pub lifetime: u64,
    /// The phase (never `Added` at rest).
    pub phase: Phase,
    /// The status (never `Uninitialized` for a live entry).
    pub status: Status,
    /// The data, if any.
    pub data: Option<Data>,
    /// The last error, if not cleared.
    pub error: Option<String>,
    /// The request in flight, if any.
    pub in_flight: Option<u64>,
    /// The time of the last fulfil or upsert.
    pub fulfilled_at: Option<u64>,
    /// The live subscription ids, ascending.
    pub subscriptions: Vec<u64>,
    /// The armed removal deadline, if any.
    pub removal_deadline: Option<u64>,
    /// The armed poll deadline, if any (R37).
    pub poll_deadline: Option<u64>,
    /// The armed retry deadline, if any (R36).
    pub retry_deadline: Option<u64>,
    /// The tags it provides, sorted (R38).
    pub tags: Vec<livecache::core::Tag>,
    /// Whether an invalidation marked it to refetch when next subscribed (R38).
    pub invalidated: bool,
    /// The message stream attached to the lifetime, as its driver sees it (R21); `None` when
    /// none is attached (never was, or it ended).
    pub stream: Option<StreamObservation>,
    /// The stream status (R28).
    pub stream_status: StreamStatus,
    /// The watermark, on a versioned endpoint (R24).
    pub watermark: Option<Version>,
    /// The generation of the lifetime's current lifecycle handler (R30).
    pub handler: u32,
    /// Messages dropped as stale or duplicates (R24).
    pub stale_messages: u64,
}

/// What the driver of an attached stream sees of it (R21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamObservation {
    /// Messages held until the lifetime's first data (0 once it has data).
    pub held: usize,
    /// Whether the stream is still read: not once it finished before the first data (the
    /// attachment then only waits to apply what it holds).
    pub reading: bool,
}
