//! The trace: one serde event type recorded for every transition (SPEC R23).
//!
//! The core, the reference model (`livecache-model`) and, later, the tokio runtime all emit these
//! events; property tests compare them and snapshot tests print them. Time is logical: milliseconds
//! on the api's clock, never a wall clock, so a trace is deterministic.
//!
//! ```
//! use livecache::core::{TraceEvent, TraceKind, AddCause};
//!
//! let event = TraceEvent {
//!     at_ms: 0,
//!     key: "getMessages(\"redux\")".into(),
//!     kind: TraceKind::EntryAdded { lifetime: 1, cause: AddCause::Subscribe },
//! };
//! assert_eq!(event.to_string(), "0ms getMessages(\"redux\") entry_added lifetime=1 cause=subscribe");
//! let json = serde_json::to_value(&event)?;
//! assert_eq!(json["event"], "entry_added");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::config::Resync;
use crate::core::key::CacheKey;
use crate::core::patch::PatchSet;
use crate::core::stream_status::StreamStatus;
use crate::core::version::Version;

#[cfg(feature = "tracing")]
pub(crate) mod emit;
mod log;

pub(crate) use log::{TraceKeyRef, TraceLog};

/// The most bytes of one text the trace keeps: an error's or a skip reason's display, a
/// handler's failure or panic message. A peer controls these texts (a server's error body, a
/// frame quoted in a schema error), so a longer one is cut on a `char` boundary and ends with a
/// marker that gives its original length in bytes: `…[truncated, N bytes]`, the whole kept text
/// (marker included) at most this long. Only what the trace records is cut: an entry's own
/// error `E` is the caller's data and is stored whole.
///
/// ```
/// use livecache::core::{Cache, CacheKey, EndpointConfig, LifetimeId, TraceKind, TRACE_TEXT_CAP};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let reason = "a".repeat(1 << 20);
/// cache.stream_skipped(0, &CacheKey::verbatim("a(1)"), LifetimeId(1), reason);
/// let TraceKind::StreamSkipped { reason, .. } = &cache.trace()[0].kind else { unreachable!() };
/// assert!(reason.len() <= TRACE_TEXT_CAP);
/// assert!(reason.starts_with("aaa"));
/// assert!(reason.ends_with("…[truncated, 1048576 bytes]"));
/// ```
pub const TRACE_TEXT_CAP: usize = 1024;

/// `text` as the trace keeps it: whole if it fits in [`TRACE_TEXT_CAP`] bytes, else cut (see
/// there).
pub(crate) fn bound_text(text: String) -> String {
    if text.len() <= TRACE_TEXT_CAP {
        return text;
    }
    cut(&text, text.len())
}

/// The first bytes of a text of `total` bytes (more than the cap) that `prefix` begins, cut to
/// leave room for the marker, on a `char` boundary, and the marker.
fn cut(prefix: &str, total: usize) -> String {
    let marker = format!("…[truncated, {total} bytes]");
    let mut end = TRACE_TEXT_CAP
        .saturating_sub(marker.len())
        .min(prefix.len());
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    let mut kept = String::with_capacity(end + marker.len());
    kept.push_str(&prefix[..end]);
    kept.push_str(&marker);
    kept
}

/// [`bound_text`] of `value`'s display, without ever holding more than [`TRACE_TEXT_CAP`] bytes
/// of it: a 100 MiB error body is counted, not copied.
pub(crate) fn bounded_display(value: &dyn fmt::Display) -> String {
    let mut out = Bounded {
        kept: String::new(),
        full: false,
        total: 0,
    };
    // A `Display` that fails is kept as far as it wrote.
    let _ = fmt::Write::write_fmt(&mut out, format_args!("{value}"));
    if out.total <= TRACE_TEXT_CAP {
        out.kept
    } else {
        cut(&out.kept, out.total)
    }
}

/// A display being written: its first bytes (a prefix of it, at most the cap) and its length.
struct Bounded {
    kept: String,
    full: bool,
    total: usize,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total = self.total.saturating_add(s.len());
        if !self.full {
            let room = TRACE_TEXT_CAP - self.kept.len();
            let mut end = room.min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.kept.push_str(&s[..end]);
            // Once a piece did not fit whole, nothing after it may follow (a prefix).
            self.full = end < s.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn a_display_written_in_pieces_is_held_within_the_cap_on_a_char_boundary() {
        let mut out = Bounded {
            kept: String::new(),
            full: false,
            total: 0,
        };
        // Pieces of 3-byte chars: the cap falls inside one.
        for _ in 0..1_000 {
            let _ = out.write_str("€€€€€€€");
        }
        assert!(
            out.kept.len() <= TRACE_TEXT_CAP,
            "{} bytes held",
            out.kept.len()
        );
        assert!(out.kept.len() > TRACE_TEXT_CAP - 3);
        assert_eq!(out.total, 21_000);
        assert!(out.kept.chars().all(|c| c == '€'));
        // After a piece that did not fit whole, nothing more is kept, even what would fit: the
        // kept text stays a prefix of the whole.
        let _ = out.write_str("x");
        assert!(out.kept.chars().all(|c| c == '€'));
        assert_eq!(out.total, 21_001);
    }

    #[test]
    fn update_sources_display_as_their_names() {
        let names: Vec<String> = [
            UpdateSource::Lifecycle,
            UpdateSource::UpdateQueryData,
            UpdateSource::PatchQueryData,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            ["lifecycle", "update_query_data", "patch_query_data"]
        );
    }
}

impl HandlerOutcome {
    /// The outcome with its text bounded as the trace keeps it.
    pub(crate) fn bounded(self) -> Self {
        match self {
            HandlerOutcome::Finished => HandlerOutcome::Finished,
            HandlerOutcome::Failed { error } => HandlerOutcome::Failed {
                error: bound_text(error),
            },
            HandlerOutcome::Panicked { message } => HandlerOutcome::Panicked {
                message: bound_text(message),
            },
        }
    }
}

impl TraceKind {
    /// The bytes of text this kind holds (its error, reason or outcome text).
    pub(crate) fn text_len(&self) -> usize {
        match self {
            TraceKind::RequestRejected { error: text, .. }
            | TraceKind::RequestRetrying { error: text, .. }
            | TraceKind::StreamSkipped { reason: text, .. }
            | TraceKind::StreamEnded { reason: text, .. }
            | TraceKind::DataPanicked { message: text }
            | TraceKind::LifecycleEnded {
                outcome:
                    HandlerOutcome::Failed { error: text } | HandlerOutcome::Panicked { message: text },
                ..
            } => text.len(),
            TraceKind::StreamStatusChanged { status, .. } => status.text().map_or(0, str::len),
            _ => 0,
        }
    }
}

/// How much the core records (SPEC R23).
///
/// The default, [`Recording::Events`], never computes patches, so it adds nothing proportional to
/// the size of an entry to an update.
///
/// ```
/// use livecache::core::Recording;
/// assert_eq!(Recording::default(), Recording::Events);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Recording {
    /// Record nothing.
    Off,
    /// Record every event; updates carry no patches.
    #[default]
    Events,
    /// Record every event; updates carry their RFC 6902 patches (costs a diff per update).
    EventsWithPatches,
}

/// One recorded event: when, for which cache key, and what happened.
///
/// ```
/// use livecache::core::{TraceEvent, TraceKind};
/// let e = TraceEvent { at_ms: 60_000, key: "a(1)".into(), kind: TraceKind::RemovalCancelled };
/// assert_eq!(e.to_string(), "60000ms a(1) removal_cancelled");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Logical time in milliseconds on the api's clock.
    pub at_ms: u64,
    /// The cache key of the entry concerned (shared text: recording an event copies no string).
    pub key: CacheKey,
    /// What happened.
    #[serde(flatten)]
    pub kind: TraceKind,
}

/// Why an entry was created.
///
/// ```
/// use livecache::core::AddCause;
/// assert_eq!(serde_json::to_string(&AddCause::Prefetch).unwrap(), "\"prefetch\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AddCause {
    /// A subscription to an absent key (R1).
    Subscribe,
    /// A prefetch of an absent key (R6).
    Prefetch,
    /// An upsert of an absent key (R20).
    Upsert,
}

/// Why an entry was removed.
///
/// ```
/// use livecache::core::RemoveCause;
/// assert_eq!(RemoveCause::Expired.to_string(), "expired");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoveCause {
    /// Its removal deadline passed with zero subscribers (R4, R5).
    Expired,
    /// `remove(key)` (R7).
    Removed,
    /// `reset()` (R7).
    Reset,
}

/// Where an update came from.
///
/// ```
/// use livecache::core::UpdateSource;
/// assert_eq!(UpdateSource::Lifecycle.to_string(), "lifecycle");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UpdateSource {
    /// `update_cached_data` through a lifecycle handle (R15).
    Lifecycle,
    /// `update_query_data` from outside the lifecycle (R18).
    UpdateQueryData,
    /// `patch_query_data` with RFC 6902 patches, including an undo (R19).
    PatchQueryData,
}

/// How a lifecycle handler ended (R16).
///
/// ```
/// use livecache::core::HandlerOutcome;
/// let o = HandlerOutcome::Failed { error: "socket refused".into() };
/// assert_eq!(o.to_string(), "failed: socket refused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum HandlerOutcome {
    /// It returned `Ok`.
    Finished,
    /// It returned an error.
    Failed {
        /// The error, as displayed.
        error: String,
    },
    /// It panicked.
    Panicked {
        /// The panic message, when it was a string.
        message: String,
    },
}

/// What happened to an entry. Serialised with an `event` tag in snake case.
///
/// ```
/// use livecache::core::TraceKind;
/// use livecache::core::RequestReason;
/// let k = TraceKind::RequestStarted { request: 3, reason: RequestReason::Load };
/// assert_eq!(
///     serde_json::to_string(&k).unwrap(),
///     r#"{"event":"request_started","request":3,"reason":"load"}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TraceKind {
    /// The key was absent and an entry was created (a new lifetime begins).
    EntryAdded {
        /// The new lifetime's id (unique for the api, never reused).
        lifetime: u64,
        /// What created it.
        cause: AddCause,
    },
    /// A subscription was added.
    Subscribed {
        /// The subscription's id.
        subscription: u64,
        /// Subscribers after the change.
        subscribers: usize,
    },
    /// A subscription was dropped.
    Unsubscribed {
        /// The subscription's id.
        subscription: u64,
        /// Subscribers after the change.
        subscribers: usize,
    },
    /// The endpoint's `on_cache_entry_added` handler was started for this lifetime (R1, R12).
    LifecycleStarted {
        /// The lifetime the handler belongs to.
        lifetime: u64,
    },
    /// A request was started (R1, R2, R11).
    RequestStarted {
        /// The request's id (unique for the api).
        request: u64,
        /// Why (R29).
        reason: RequestReason,
    },
    /// A refetch was asked for while a request was in flight and joined it (R3).
    RequestJoined {
        /// The request in flight.
        request: u64,
    },
    /// The current request fulfilled (R8).
    RequestFulfilled {
        /// The request.
        request: u64,
        /// Whether the data differs from what was cached (`PartialEq`).
        data_changed: bool,
    },
    /// The current request was rejected (R9).
    RequestRejected {
        /// The request.
        request: u64,
        /// The error, as displayed.
        error: String,
    },
    /// A result for a stale request, or for an absent key, was ignored (R10).
    ResultIgnored {
        /// The request the result belonged to.
        request: u64,
    },
    /// The entry received its first data of this lifetime: `data_loaded` resolves (R8, R13, R20).
    DataLoaded {
        /// The lifetime.
        lifetime: u64,
        /// The request that brought the data, or `None` for an upsert.
        request: Option<u64>,
    },
    /// `upsert_query_data` replaced or set the data (R20).
    Upserted {
        /// Whether the data differs from what was cached.
        data_changed: bool,
    },
    /// The data was changed by an update (R15, R18, R19).
    Updated {
        /// Where the update came from.
        source: UpdateSource,
        /// The change, when recording with patches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patches: Option<PatchSet>,
        /// How many updates of a batch this one event stands for (R34): a stream's burst,
        /// applied under one lock, records its consecutive updates of one entry as one event
        /// (without patches). 1 for a single update (and then not serialised).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u32,
    },
    /// A removal deadline was armed (R4, R6).
    RemovalScheduled {
        /// The deadline, in milliseconds on the api's clock.
        deadline_ms: u64,
    },
    /// A subscription arrived before the deadline and cancelled it (R2).
    RemovalCancelled,
    /// An in-flight request was aborted because its entry is being removed (R5, R7).
    RequestAborted {
        /// The request.
        request: u64,
    },
    /// The entry left the cache: `entry_removed` resolves; if it never loaded, `data_loaded`
    /// yields "removed before loaded" (R5, R7, R13, R14).
    EntryRemoved {
        /// The lifetime that ended.
        lifetime: u64,
        /// Why.
        cause: RemoveCause,
        /// Whether data had loaded in this lifetime.
        loaded: bool,
    },
    /// A message stream was attached to a lifetime's entry and starts applying messages: the
    /// entry is Streaming (R21).
    StreamAttached {
        /// The lifetime.
        lifetime: u64,
        /// Messages received before the attachment saw the first data, applied now, in order.
        buffered: usize,
    },
    /// A stream item was skipped — a bad frame, say — and the stream goes on (R22).
    StreamSkipped {
        /// The lifetime.
        lifetime: u64,
        /// Why.
        reason: String,
    },
    /// A message stream's attachment ended (R21).
    StreamEnded {
        /// The lifetime.
        lifetime: u64,
        /// Why: the entry was removed, the stream ended, or it failed.
        reason: String,
        /// Messages applied.
        applied: u64,
        /// Items skipped.
        skipped: u64,
    },
    /// The data type's own code (its `PartialEq` or `Serialize`, say) panicked while the core
    /// compared or serialised the entry's data; the panic was contained and the entry kept
    /// (see `docs/semantics.md`, "Panics in the data type's code").
    DataPanicked {
        /// What panicked, and the panic message when it was a string.
        message: String,
    },
    /// A versioned message at or below the watermark was dropped, a stale one or a duplicate
    /// (R24, R25); it changed nothing and notified no one.
    StreamStale {
        /// The lifetime.
        lifetime: u64,
        /// The message's version.
        version: Version,
    },
    /// A versioned message past a gap was held until the gap closes (R26).
    StreamHeld {
        /// The lifetime.
        lifetime: u64,
        /// The message's version.
        version: Version,
    },
    /// A resync started by the endpoint's policy (R26, R33): a refetch follows, or the source is
    /// asked to resume from `from`.
    ResyncStarted {
        /// The lifetime.
        lifetime: u64,
        /// How it resyncs.
        policy: Resync,
        /// With [`Resync::Resume`]: the first version asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Version>,
    },
    /// A snapshot with a watermark landed on a versioned entry (R24, R27): the messages kept
    /// while its request ran and above the watermark were re-applied onto it.
    WatermarkSet {
        /// The lifetime.
        lifetime: u64,
        /// The snapshot's watermark.
        watermark: Version,
        /// Kept messages re-applied onto the snapshot.
        reapplied: usize,
    },
    /// A snapshot older than what the data reflected when its request started (or, for an
    /// upsert, than the watermark) was not taken: rebased, it would have lost the messages
    /// between (R27). The data stays.
    SnapshotStale {
        /// The lifetime.
        lifetime: u64,
        /// The snapshot's watermark.
        watermark: Version,
    },
    /// A queue a remote peer fills reached its bound and was dropped (R33).
    QueueOverflowed {
        /// The lifetime.
        lifetime: u64,
        /// Which queue.
        queue: Queue,
    },
    /// The entry's stream status changed (R28).
    StreamStatusChanged {
        /// The lifetime.
        lifetime: u64,
        /// The new status.
        #[serde(flatten)]
        status: StreamStatus,
    },
    /// A request failed and will be run again (R36): its status stays `Pending`, it stays in
    /// flight, and it is retried `delay_ms` from now.
    RequestRetrying {
        /// The request.
        request: u64,
        /// The retry coming (1 for the first).
        attempt: u32,
        /// When, from now.
        delay_ms: u64,
        /// The failure, as displayed (cut like every text the trace keeps).
        error: String,
    },
    /// A request's retry started: its query function runs again (R36).
    RequestRetried {
        /// The request.
        request: u64,
        /// Which retry (1 for the first).
        attempt: u32,
    },
    /// An invalidation reached the entry (R38): with subscribers it refetches (or joins its
    /// request in flight); without, it refetches when next subscribed.
    Invalidated {
        /// Whether it has subscribers.
        subscribed: bool,
    },
    /// The lifecycle handler of a lifetime ended (R16).
    LifecycleEnded {
        /// The lifetime.
        lifetime: u64,
        /// Which handler of the lifetime (R30): 0 for the first (and then not serialised).
        #[serde(default, skip_serializing_if = "is_zero")]
        generation: u32,
        /// How it ended.
        #[serde(flatten)]
        outcome: HandlerOutcome,
    },
    /// The lifetime's lifecycle handler was restarted (R30): the handler before this generation
    /// is told its entry is gone for it, and a new one starts on the same entry, which keeps
    /// its data, subscribers and watermark.
    LifecycleRestarted {
        /// The lifetime.
        lifetime: u64,
        /// The new handler's generation (1 for the first restart).
        generation: u32,
        /// Whether the entry has data: then the new handler's data-loaded resolves with it at
        /// once.
        loaded: bool,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

// ===== Display: one readable line per event =====

impl fmt::Display for AddCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddCause::Subscribe => "subscribe",
            AddCause::Prefetch => "prefetch",
            AddCause::Upsert => "upsert",
        })
    }
}

impl fmt::Display for RemoveCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoveCause::Expired => "expired",
            RemoveCause::Removed => "removed",
            RemoveCause::Reset => "reset",
        })
    }
}

impl fmt::Display for UpdateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateSource::Lifecycle => "lifecycle",
            UpdateSource::UpdateQueryData => "update_query_data",
            UpdateSource::PatchQueryData => "patch_query_data",
        })
    }
}

fn one() -> u32 {
    1
}

fn is_one(count: &u32) -> bool {
    *count == 1
}

/// Why a request started (R29): told to the entry's lifecycle with the request.
///
/// ```
/// use livecache::core::RequestReason;
/// assert_eq!(RequestReason::Resync.to_string(), "resync");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestReason {
    /// The entry has no data: its first request, or one after a failed first request.
    Load,
    /// A subscription or a prefetch found the entry and its refetch policy asked for fresh data
    /// (R2, R6).
    Mount,
    /// An explicit refetch, through a subscription (R11) or the lifecycle's handle (R29).
    Refetch,
    /// A resync: messages are missing (R26, R33).
    Resync,
    /// A poll: the entry's polling interval passed (R37).
    Poll,
    /// An invalidation of a tag the entry provides (R38).
    Invalidation,
}

impl fmt::Display for RequestReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestReason::Load => "load",
            RequestReason::Mount => "mount",
            RequestReason::Refetch => "refetch",
            RequestReason::Resync => "resync",
            RequestReason::Poll => "poll",
            RequestReason::Invalidation => "invalidation",
        })
    }
}

/// A bounded queue of an entry's live state (R33), named when it overflows.
///
/// ```
/// assert_eq!(livecache::core::Queue::Rebase.to_string(), "rebase");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Queue {
    /// Messages held across a gap (R26).
    Held,
    /// Messages kept for the rebase of the request in flight (R27).
    Rebase,
    /// Messages held by a stream attachment before the first data (R21, R25).
    Buffered,
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Queue::Held => "held",
            Queue::Rebase => "rebase",
            Queue::Buffered => "buffered",
        })
    }
}

impl fmt::Display for HandlerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerOutcome::Finished => f.write_str("finished"),
            HandlerOutcome::Failed { error } => write!(f, "failed: {error}"),
            HandlerOutcome::Panicked { message } => write!(f, "panicked: {message}"),
        }
    }
}

impl fmt::Display for TraceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceKind::EntryAdded { lifetime, cause } => {
                write!(f, "entry_added lifetime={lifetime} cause={cause}")
            }
            TraceKind::Subscribed {
                subscription,
                subscribers,
            } => {
                write!(
                    f,
                    "subscribed subscription={subscription} subscribers={subscribers}"
                )
            }
            TraceKind::Unsubscribed {
                subscription,
                subscribers,
            } => {
                write!(
                    f,
                    "unsubscribed subscription={subscription} subscribers={subscribers}"
                )
            }
            TraceKind::LifecycleStarted { lifetime } => {
                write!(f, "lifecycle_started lifetime={lifetime}")
            }
            TraceKind::LifecycleRestarted {
                lifetime,
                generation,
                loaded,
            } => write!(
                f,
                "lifecycle_restarted lifetime={lifetime} generation={generation} loaded={loaded}"
            ),
            TraceKind::RequestStarted { request, reason } => {
                write!(f, "request_started request={request} reason={reason}")
            }
            TraceKind::RequestJoined { request } => write!(f, "request_joined request={request}"),
            TraceKind::RequestFulfilled {
                request,
                data_changed,
            } => {
                write!(
                    f,
                    "request_fulfilled request={request} data_changed={data_changed}"
                )
            }
            TraceKind::RequestRejected { request, error } => {
                write!(f, "request_rejected request={request} error={error:?}")
            }
            TraceKind::ResultIgnored { request } => write!(f, "result_ignored request={request}"),
            TraceKind::RequestRetrying {
                request,
                attempt,
                delay_ms,
                error,
            } => write!(
                f,
                "request_retrying request={request} attempt={attempt} delay_ms={delay_ms} error={error:?}"
            ),
            TraceKind::RequestRetried { request, attempt } => {
                write!(f, "request_retried request={request} attempt={attempt}")
            }
            TraceKind::Invalidated { subscribed } => {
                write!(f, "invalidated subscribed={subscribed}")
            }
            TraceKind::DataLoaded { lifetime, request } => match request {
                Some(r) => write!(f, "data_loaded lifetime={lifetime} request={r}"),
                None => write!(f, "data_loaded lifetime={lifetime} by=upsert"),
            },
            TraceKind::Upserted { data_changed } => {
                write!(f, "upserted data_changed={data_changed}")
            }
            TraceKind::Updated {
                source,
                patches,
                count,
            } => {
                write!(f, "updated source={source}")?;
                if *count != 1 {
                    write!(f, " count={count}")?;
                }
                if let Some(p) = patches {
                    let json = serde_json::to_string(&p.patches).map_err(|_| fmt::Error)?;
                    write!(f, " patches={json}")?;
                }
                Ok(())
            }
            TraceKind::RemovalScheduled { deadline_ms } => {
                write!(f, "removal_scheduled deadline={deadline_ms}ms")
            }
            TraceKind::RemovalCancelled => f.write_str("removal_cancelled"),
            TraceKind::RequestAborted { request } => write!(f, "request_aborted request={request}"),
            TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            } => {
                write!(
                    f,
                    "entry_removed lifetime={lifetime} cause={cause} loaded={loaded}"
                )
            }
            TraceKind::StreamAttached { lifetime, buffered } => {
                write!(f, "stream_attached lifetime={lifetime} buffered={buffered}")
            }
            TraceKind::StreamSkipped { lifetime, reason } => {
                write!(f, "stream_skipped lifetime={lifetime} reason={reason:?}")
            }
            TraceKind::StreamEnded {
                lifetime,
                reason,
                applied,
                skipped,
            } => write!(
                f,
                "stream_ended lifetime={lifetime} reason={reason:?} applied={applied} skipped={skipped}"
            ),
            TraceKind::DataPanicked { message } => {
                write!(f, "data_panicked message={message:?}")
            }
            TraceKind::LifecycleEnded {
                lifetime,
                generation: 0,
                outcome,
            } => write!(f, "lifecycle_ended lifetime={lifetime} {outcome}"),
            TraceKind::LifecycleEnded {
                lifetime,
                generation,
                outcome,
            } => {
                write!(
                    f,
                    "lifecycle_ended lifetime={lifetime} generation={generation} {outcome}"
                )
            }
            TraceKind::StreamStale { lifetime, version } => {
                write!(f, "stream_stale lifetime={lifetime} version={version}")
            }
            TraceKind::StreamHeld { lifetime, version } => {
                write!(f, "stream_held lifetime={lifetime} version={version}")
            }
            TraceKind::ResyncStarted {
                lifetime,
                policy,
                from,
            } => {
                write!(f, "resync_started lifetime={lifetime} policy={policy:?}")?;
                match from {
                    Some(from) => write!(f, " from={from}"),
                    None => Ok(()),
                }
            }
            TraceKind::WatermarkSet {
                lifetime,
                watermark,
                reapplied,
            } => write!(
                f,
                "watermark_set lifetime={lifetime} watermark={watermark} reapplied={reapplied}"
            ),
            TraceKind::SnapshotStale {
                lifetime,
                watermark,
            } => write!(
                f,
                "snapshot_stale lifetime={lifetime} watermark={watermark}"
            ),
            TraceKind::QueueOverflowed { lifetime, queue } => {
                write!(f, "queue_overflowed lifetime={lifetime} queue={queue}")
            }
            TraceKind::StreamStatusChanged { lifetime, status } => {
                write!(f, "stream_status lifetime={lifetime} {status}")
            }
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms {} {}", self.at_ms, self.key, self.kind)
    }
}
