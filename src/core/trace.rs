//! The trace: one serde event type recorded for every transition (SPEC R23).
//!
//! The core, the reference model (`livecache-model`) and, later, the tokio runtime all emit these
//! events; property tests compare them and snapshot tests print them. Time is logical: milliseconds
//! on the api's clock, never a wall clock, so a trace is deterministic.
//!
//! ```
//! use livecache::core::trace::{TraceEvent, TraceKind, AddCause};
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

use crate::core::key::CacheKey;
use crate::core::patch::PatchSet;

/// How much the core records (SPEC R23).
///
/// The default, [`Recording::Events`], never computes patches, so it adds nothing proportional to
/// the size of an entry to an update.
///
/// ```
/// use livecache::core::trace::Recording;
/// assert_eq!(Recording::default(), Recording::Events);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// use livecache::core::trace::{TraceEvent, TraceKind};
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
/// use livecache::core::trace::AddCause;
/// assert_eq!(serde_json::to_string(&AddCause::Prefetch).unwrap(), "\"prefetch\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// use livecache::core::trace::RemoveCause;
/// assert_eq!(RemoveCause::Expired.to_string(), "expired");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// use livecache::core::trace::UpdateSource;
/// assert_eq!(UpdateSource::Lifecycle.to_string(), "lifecycle");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// use livecache::core::trace::HandlerOutcome;
/// let o = HandlerOutcome::Failed { error: "socket refused".into() };
/// assert_eq!(o.to_string(), "failed: socket refused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
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
/// use livecache::core::trace::TraceKind;
/// let k = TraceKind::RequestStarted { request: 3 };
/// assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"event":"request_started","request":3}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
    /// The lifecycle handler of a lifetime ended (R16).
    LifecycleEnded {
        /// The lifetime.
        lifetime: u64,
        /// How it ended.
        #[serde(flatten)]
        outcome: HandlerOutcome,
    },
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
            TraceKind::RequestStarted { request } => write!(f, "request_started request={request}"),
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
            TraceKind::DataLoaded { lifetime, request } => match request {
                Some(r) => write!(f, "data_loaded lifetime={lifetime} request={r}"),
                None => write!(f, "data_loaded lifetime={lifetime} by=upsert"),
            },
            TraceKind::Upserted { data_changed } => {
                write!(f, "upserted data_changed={data_changed}")
            }
            TraceKind::Updated { source, patches } => {
                write!(f, "updated source={source}")?;
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
            TraceKind::LifecycleEnded { lifetime, outcome } => {
                write!(f, "lifecycle_ended lifetime={lifetime} {outcome}")
            }
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms {} {}", self.at_ms, self.key, self.kind)
    }
}

// ===== The core's bounded event log =====

/// The largest limit: 2^30 events (a generation's indices fit in 30 bits).
const MAX_LIMIT: usize = 1 << 30;

/// Where the core keeps its trace: two generations of at most `limit` events each; when the
/// current one is full, the old one is dropped and the current one becomes old, so the log holds
/// between `limit` and twice `limit` events. An event is a 16-byte record with nothing to drop:
/// its key is an index into its generation's key table (a key is cloned into the table when it
/// differs from the last one added, or — for an entry's updates — once per generation, the entry
/// remembering its index in a [`TraceKeyRef`]), and its kind is stored in the record when it is
/// an update without patches, otherwise set aside in the generation: whole, in 24 bytes with
/// nothing to drop, when it holds no text or patches ([`Aside`]: with [`Recording::Events`],
/// every event of a lifecycle that loads and ends without an error but a stream's end and a
/// skipped frame, which carry text), in the generation's table of kinds when it does.
/// Recording an update so copies its key (one reference count) at most once per generation;
/// recording allocates nothing once the generation's storage has grown, and dropping a
/// generation only visits its keys and its kinds with text or patches.
/// [`TraceLog::events`] builds the public [`TraceEvent`]s.
#[derive(Clone, Debug)]
pub(crate) struct TraceLog {
    limit: usize,
    old: Generation,
    current: Generation,
    /// The current generation's number, counted from 1.
    generation: u64,
}

/// Where a key sits in a [`TraceLog`]'s current generation, remembered by whoever records for
/// that key often (an entry): its updates then add the key to the generation's table once, not
/// whenever another key was recorded in between.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TraceKeyRef {
    /// The generation it was valid in; 0: none.
    generation: u64,
    index: u32,
}

#[derive(Clone, Debug, Default)]
struct Generation {
    /// The keys named by this generation's events, by index (a key may appear more than once).
    keys: Vec<CacheKey>,
    events: Vec<Recorded>,
    /// The kinds not stored in their [`Recorded`], by index.
    aside: Vec<Aside>,
    /// The kinds with text or patches, by index, in the order of their events.
    kinds: Vec<TraceKind>,
}

/// One event: 16 bytes, nothing to drop.
#[derive(Clone, Copy, Debug)]
struct Recorded {
    at_ms: u64,
    key: u32,
    kind: Packed,
}

/// An event's kind in 32 bits: an update without patches — most events of a streaming entry —
/// is stored whole (its source in the low two bits, 1 to 3); any other kind is set aside in the
/// generation's `aside`, at the index in the upper 30 bits (low bits 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed(u32);

impl Packed {
    fn updated(source: UpdateSource) -> Self {
        Packed(match source {
            UpdateSource::Lifecycle => 1,
            UpdateSource::UpdateQueryData => 2,
            UpdateSource::PatchQueryData => 3,
        })
    }

    /// `index` < 2^30: kinds are only set aside in the current generation, which no lower limit
    /// drains, so when one is there are no more of them than events, fewer than the limit, at
    /// most [`MAX_LIMIT`].
    fn other(index: u32) -> Self {
        Packed(index << 2)
    }

    /// The kind as set aside: an update's is in the record, any other's in `aside`.
    fn aside(self, aside: &[Aside]) -> Option<Aside> {
        match self.unpack() {
            Ok(source) => Some(Aside::Updated { source }),
            Err(index) => aside.get(index).copied(),
        }
    }

    /// The update's source, or the index of the kind kept aside.
    fn unpack(self) -> Result<UpdateSource, usize> {
        match self.0 & 3 {
            0 => Err((self.0 >> 2) as usize),
            1 => Ok(UpdateSource::Lifecycle),
            2 => Ok(UpdateSource::UpdateQueryData),
            _ => Ok(UpdateSource::PatchQueryData),
        }
    }
}

/// A kind set aside from its record ([`Packed`]): whole when it holds no text or patches (the
/// same fields as its [`TraceKind`], with nothing to drop), otherwise the index of the kind in
/// its generation's `kinds`. An update without patches is one too, on its way into its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aside {
    EntryAdded {
        lifetime: u64,
        cause: AddCause,
    },
    Subscribed {
        subscription: u64,
        subscribers: usize,
    },
    Unsubscribed {
        subscription: u64,
        subscribers: usize,
    },
    LifecycleStarted {
        lifetime: u64,
    },
    RequestStarted {
        request: u64,
    },
    RequestJoined {
        request: u64,
    },
    RequestFulfilled {
        request: u64,
        data_changed: bool,
    },
    ResultIgnored {
        request: u64,
    },
    /// `request` is meaningful when `by_request` (an `Option<u64>` would take 8 more bytes).
    DataLoaded {
        lifetime: u64,
        request: u64,
        by_request: bool,
    },
    Upserted {
        data_changed: bool,
    },
    RemovalScheduled {
        deadline_ms: u64,
    },
    RemovalCancelled,
    RequestAborted {
        request: u64,
    },
    EntryRemoved {
        lifetime: u64,
        cause: RemoveCause,
        loaded: bool,
    },
    StreamAttached {
        lifetime: u64,
        buffered: usize,
    },
    /// `LifecycleEnded` with [`HandlerOutcome::Finished`].
    LifecycleFinished {
        lifetime: u64,
    },
    /// `Updated` without patches: never kept in `aside`, its record holds it ([`Packed`]).
    Updated {
        source: UpdateSource,
    },
    /// Any other kind: its index in the generation's `kinds` (< 2^30, like the events).
    Kept(u32),
}

impl Aside {
    /// `kind` set aside whole, or given back when it holds text or patches. Inlined, so that
    /// where the kind is known this is no work at all.
    #[inline(always)]
    fn of(kind: TraceKind) -> Result<Aside, TraceKind> {
        // Only kinds with nothing to drop are set aside, so none is dropped here: this saves a
        // call of the kind's drop glue per event, where the compiler keeps it even though the
        // kind is known. (Were a kind with text set aside by mistake, its text would leak; a
        // test checks that none is.)
        let kind = std::mem::ManuallyDrop::new(kind);
        Ok(match *kind {
            TraceKind::EntryAdded { lifetime, cause } => Aside::EntryAdded { lifetime, cause },
            TraceKind::Subscribed {
                subscription,
                subscribers,
            } => Aside::Subscribed {
                subscription,
                subscribers,
            },
            TraceKind::Unsubscribed {
                subscription,
                subscribers,
            } => Aside::Unsubscribed {
                subscription,
                subscribers,
            },
            TraceKind::LifecycleStarted { lifetime } => Aside::LifecycleStarted { lifetime },
            TraceKind::RequestStarted { request } => Aside::RequestStarted { request },
            TraceKind::RequestJoined { request } => Aside::RequestJoined { request },
            TraceKind::RequestFulfilled {
                request,
                data_changed,
            } => Aside::RequestFulfilled {
                request,
                data_changed,
            },
            TraceKind::ResultIgnored { request } => Aside::ResultIgnored { request },
            TraceKind::DataLoaded { lifetime, request } => Aside::DataLoaded {
                lifetime,
                request: request.unwrap_or(0),
                by_request: request.is_some(),
            },
            TraceKind::Upserted { data_changed } => Aside::Upserted { data_changed },
            TraceKind::RemovalScheduled { deadline_ms } => Aside::RemovalScheduled { deadline_ms },
            TraceKind::RemovalCancelled => Aside::RemovalCancelled,
            TraceKind::RequestAborted { request } => Aside::RequestAborted { request },
            TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            } => Aside::EntryRemoved {
                lifetime,
                cause,
                loaded,
            },
            TraceKind::StreamAttached { lifetime, buffered } => {
                Aside::StreamAttached { lifetime, buffered }
            }
            TraceKind::LifecycleEnded {
                lifetime,
                outcome: HandlerOutcome::Finished,
            } => Aside::LifecycleFinished { lifetime },
            TraceKind::Updated {
                source,
                patches: None,
            } => Aside::Updated { source },
            _ => return Err(std::mem::ManuallyDrop::into_inner(kind)),
        })
    }

    /// The kind set aside whole, or the index of the one kept in `kinds`.
    fn kind(self) -> Result<TraceKind, usize> {
        Ok(match self {
            Aside::EntryAdded { lifetime, cause } => TraceKind::EntryAdded { lifetime, cause },
            Aside::Subscribed {
                subscription,
                subscribers,
            } => TraceKind::Subscribed {
                subscription,
                subscribers,
            },
            Aside::Unsubscribed {
                subscription,
                subscribers,
            } => TraceKind::Unsubscribed {
                subscription,
                subscribers,
            },
            Aside::LifecycleStarted { lifetime } => TraceKind::LifecycleStarted { lifetime },
            Aside::RequestStarted { request } => TraceKind::RequestStarted { request },
            Aside::RequestJoined { request } => TraceKind::RequestJoined { request },
            Aside::RequestFulfilled {
                request,
                data_changed,
            } => TraceKind::RequestFulfilled {
                request,
                data_changed,
            },
            Aside::ResultIgnored { request } => TraceKind::ResultIgnored { request },
            Aside::DataLoaded {
                lifetime,
                request,
                by_request,
            } => TraceKind::DataLoaded {
                lifetime,
                request: by_request.then_some(request),
            },
            Aside::Upserted { data_changed } => TraceKind::Upserted { data_changed },
            Aside::RemovalScheduled { deadline_ms } => TraceKind::RemovalScheduled { deadline_ms },
            Aside::RemovalCancelled => TraceKind::RemovalCancelled,
            Aside::RequestAborted { request } => TraceKind::RequestAborted { request },
            Aside::EntryRemoved {
                lifetime,
                cause,
                loaded,
            } => TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            },
            Aside::StreamAttached { lifetime, buffered } => {
                TraceKind::StreamAttached { lifetime, buffered }
            }
            Aside::LifecycleFinished { lifetime } => TraceKind::LifecycleEnded {
                lifetime,
                outcome: HandlerOutcome::Finished,
            },
            Aside::Updated { source } => TraceKind::Updated {
                source,
                patches: None,
            },
            Aside::Kept(index) => return Err(index as usize),
        })
    }
}

impl Generation {
    /// Add `key` to the key table, returning its index.
    fn add_key(&mut self, key: &CacheKey) -> u32 {
        // Fewer keys than events, and fewer events than the limit, at most MAX_LIMIT: it fits.
        let index = self.keys.len() as u32;
        self.keys.push(key.clone());
        index
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.events.clear();
        self.aside.clear();
        self.kinds.clear();
    }

    /// Append an event whose kind is `aside` (an update without patches is stored in the record).
    fn push(&mut self, at_ms: u64, key: u32, aside: Aside) {
        let kind = match aside {
            Aside::Updated { source } => Packed::updated(source),
            other => {
                let index = self.aside.len() as u32;
                self.aside.push(other);
                Packed::other(index)
            }
        };
        self.events.push(Recorded { at_ms, key, kind });
    }

    /// [`Generation::events`], moving the kinds with text or patches out instead of cloning
    /// them: those are in the order of the events that name them (some first ones may belong
    /// to events a lower limit dropped, and are skipped).
    fn into_events(self) -> impl Iterator<Item = TraceEvent> {
        let Generation {
            keys,
            events,
            aside,
            kinds,
        } = self;
        let mut kinds = kinds.into_iter().enumerate();
        events.into_iter().filter_map(move |r| {
            let kind = match r.kind.aside(&aside)?.kind() {
                Ok(kind) => kind,
                // Kinds are appended in event order and only the first ones can have lost their
                // events (to a lower limit), so the search finds `index` ahead.
                Err(index) => loop {
                    let (i, kind) = kinds.next()?;
                    if i == index {
                        break kind;
                    }
                },
            };
            Some(TraceEvent {
                at_ms: r.at_ms,
                key: keys.get(r.key as usize)?.clone(),
                kind,
            })
        })
    }

    fn events(&self) -> impl Iterator<Item = TraceEvent> + '_ {
        self.events.iter().filter_map(|r| {
            let kind = match r.kind.aside(&self.aside)?.kind() {
                Ok(kind) => kind,
                Err(index) => self.kinds.get(index)?.clone(),
            };
            Some(TraceEvent {
                at_ms: r.at_ms,
                key: self.keys.get(r.key as usize)?.clone(),
                kind,
            })
        })
    }
}

impl TraceLog {
    /// An empty log keeping at least the last `limit` events (at least 1) and at most twice that.
    pub(crate) fn new(limit: usize) -> Self {
        TraceLog {
            limit: limit.clamp(1, MAX_LIMIT),
            old: Generation::default(),
            current: Generation::default(),
            generation: 1,
        }
    }

    /// Keep at least the last `limit` events (at least 1, at most 2^30) and at most twice that
    /// from now on: a lower limit drops the oldest events beyond it at once.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, MAX_LIMIT);
        self.make_room();
        // Each generation holds at most `limit` events again: the current one does now, the old
        // one keeps its newest `limit` (its key and kind tables stay until it is dropped).
        let excess = self.old.events.len().saturating_sub(self.limit);
        self.old.events.drain(..excess);
    }

    /// Append an event. When the current generation is full it becomes the old one and the old
    /// one is dropped (its storage is reused).
    ///
    /// Inlined: where the kind is known, the kind set aside is built in place.
    #[inline(always)]
    pub(crate) fn record(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        match Aside::of(kind) {
            Ok(aside) => self.record_aside(at_ms, key, aside),
            Err(kept) => self.record_kept(at_ms, key, kept),
        }
    }

    fn record_aside(&mut self, at_ms: u64, key: &CacheKey, aside: Aside) {
        self.make_room();
        let generation = &mut self.current;
        // Events for one key tend to come in runs (a subscription: added, subscribed, lifecycle
        // started, request started): the last key added is reused when it is the same.
        let key = match generation.keys.last() {
            Some(last) if last == key => generation.keys.len() as u32 - 1,
            _ => generation.add_key(key),
        };
        generation.push(at_ms, key, aside);
    }

    /// A kind with text or patches goes to the current generation's `kinds`.
    fn record_kept(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        self.make_room();
        // No more kinds kept than events in the current generation: the index fits (see
        // `Packed::other`).
        let index = self.current.kinds.len() as u32;
        self.current.kinds.push(kind);
        self.record_aside(at_ms, key, Aside::Kept(index));
    }

    /// Record `TraceKind::Updated { source, patches: None }` for a key whose place in the log
    /// `known` remembers (and is updated): the streaming hot path, inlined into it.
    #[inline]
    pub(crate) fn record_update_for(
        &mut self,
        at_ms: u64,
        key: &CacheKey,
        known: &mut TraceKeyRef,
        source: UpdateSource,
    ) {
        self.make_room();
        if known.generation != self.generation {
            *known = TraceKeyRef {
                generation: self.generation,
                index: self.current.add_key(key),
            };
        }
        // What `Generation::push` does for an update, written out: going through it costs this
        // path about 27 instructions (it is not inlined here).
        self.current.events.push(Recorded {
            at_ms,
            key: known.index,
            kind: Packed::updated(source),
        });
    }

    #[inline]
    fn make_room(&mut self) {
        if self.current.events.len() >= self.limit {
            self.rotate();
        }
    }

    /// The current generation becomes the old one; the old one is dropped (its storage reused).
    /// Once per `limit` events: kept out of the recording paths.
    #[cold]
    #[inline(never)]
    fn rotate(&mut self) {
        std::mem::swap(&mut self.old, &mut self.current);
        self.current.clear();
        self.generation += 1;
    }

    /// How many events the log holds.
    pub(crate) fn len(&self) -> usize {
        self.old.events.len() + self.current.events.len()
    }

    /// The events, oldest first.
    pub(crate) fn events(&self) -> Vec<TraceEvent> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.old.events());
        all.extend(self.current.events());
        all
    }

    /// The events, oldest first, leaving the log empty and its storage released.
    pub(crate) fn take(&mut self) -> Vec<TraceEvent> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(std::mem::take(&mut self.old).into_events());
        all.extend(std::mem::take(&mut self.current).into_events());
        self.generation += 1;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn updated(source: UpdateSource) -> TraceKind {
        TraceKind::Updated {
            source,
            patches: None,
        }
    }

    /// Kinds stored whole in a record, set aside whole and kept with their text or patches,
    /// mixed.
    fn kind(n: u64) -> TraceKind {
        match n % 5 {
            0 => TraceKind::RequestStarted { request: n },
            1 => updated(UpdateSource::UpdateQueryData),
            2 => TraceKind::DataLoaded {
                lifetime: n,
                request: n.is_multiple_of(2).then_some(n + 1),
            },
            3 => TraceKind::RequestRejected {
                request: n,
                error: format!("error {n}"),
            },
            _ => TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches: Some(PatchSet::default()),
            },
        }
    }

    /// One of each kind (and of each variant inside a kind that changes where it is kept).
    fn every_kind() -> Vec<TraceKind> {
        let outcomes = [
            HandlerOutcome::Finished,
            HandlerOutcome::Failed { error: "e".into() },
            HandlerOutcome::Panicked {
                message: "p".into(),
            },
        ];
        let mut kinds = vec![
            TraceKind::EntryAdded {
                lifetime: u64::MAX,
                cause: AddCause::Upsert,
            },
            TraceKind::Subscribed {
                subscription: 3,
                subscribers: usize::MAX,
            },
            TraceKind::Unsubscribed {
                subscription: u64::MAX,
                subscribers: 0,
            },
            TraceKind::LifecycleStarted { lifetime: 5 },
            TraceKind::RequestStarted { request: 6 },
            TraceKind::RequestJoined { request: 7 },
            TraceKind::RequestFulfilled {
                request: 8,
                data_changed: true,
            },
            TraceKind::RequestRejected {
                request: 9,
                error: "refused".into(),
            },
            TraceKind::ResultIgnored { request: 10 },
            TraceKind::DataLoaded {
                lifetime: 11,
                request: Some(0),
            },
            TraceKind::DataLoaded {
                lifetime: 11,
                request: None,
            },
            TraceKind::Upserted {
                data_changed: false,
            },
            updated(UpdateSource::Lifecycle),
            TraceKind::Updated {
                source: UpdateSource::UpdateQueryData,
                patches: Some(PatchSet::default()),
            },
            TraceKind::RemovalScheduled {
                deadline_ms: 60_000,
            },
            TraceKind::RemovalCancelled,
            TraceKind::RequestAborted { request: 12 },
            TraceKind::EntryRemoved {
                lifetime: 13,
                cause: RemoveCause::Reset,
                loaded: true,
            },
            TraceKind::StreamAttached {
                lifetime: 14,
                buffered: 15,
            },
            TraceKind::StreamSkipped {
                lifetime: 16,
                reason: "bad frame".into(),
            },
            TraceKind::StreamEnded {
                lifetime: 17,
                reason: "closed".into(),
                applied: 18,
                skipped: 19,
            },
        ];
        kinds.extend(
            outcomes
                .into_iter()
                .map(|outcome| TraceKind::LifecycleEnded {
                    lifetime: 20,
                    outcome,
                }),
        );
        kinds
    }

    proptest! {
        /// R23's bounded trace: whatever mix of plain and remembered-key recordings and limit
        /// changes, the log holds exactly the most recent events, each with the key it was
        /// recorded for, at least `limit` of them (once that many were recorded since the limit
        /// last dropped some) and at most twice that.
        #[test]
        fn log_holds_the_most_recent_events_with_their_keys(
            first_limit in 1usize..8,
            ops in proptest::collection::vec(
                (0usize..4, any::<bool>(), proptest::option::weighted(0.1, 1usize..8)),
                0..80,
            ),
        ) {
            let keys: Vec<CacheKey> = (0..4).map(|k| CacheKey::verbatim(format!("k({k})"))).collect();
            let mut known = [TraceKeyRef::default(); 4];
            let mut limit = first_limit;
            let mut log = TraceLog::new(limit);
            let mut all = Vec::new();
            // How many of the newest events the log must hold.
            let mut owed = 0usize;
            for (n, &(k, remembered, new_limit)) in ops.iter().enumerate() {
                if let Some(new_limit) = new_limit {
                    let before = log.len();
                    limit = new_limit;
                    log.set_limit(limit);
                    let held = log.events();
                    prop_assert!(held.len() <= 2 * limit, "{} events, limit {}", held.len(), limit);
                    prop_assert!(held.len() >= before.min(limit));
                    prop_assert_eq!(&held[..], &all[all.len() - held.len()..]);
                    owed = held.len().min(limit);
                }
                let at = n as u64;
                if remembered {
                    log.record_update_for(at, &keys[k], &mut known[k], UpdateSource::Lifecycle);
                } else {
                    log.record(at, &keys[k], kind(at));
                }
                let recorded = if remembered { updated(UpdateSource::Lifecycle) } else { kind(at) };
                all.push(TraceEvent { at_ms: at, key: keys[k].clone(), kind: recorded });
                owed = (owed + 1).min(limit);
                let held = log.events();
                prop_assert_eq!(held.len(), log.len());
                prop_assert!(held.len() <= 2 * limit, "{} events, limit {}", held.len(), limit);
                prop_assert!(held.len() >= owed, "{} events, {} owed", held.len(), owed);
                prop_assert_eq!(&held[..], &all[all.len() - held.len()..]);
            }
            let held = log.len();
            let taken = log.take();
            prop_assert_eq!(taken.len(), held);
            prop_assert_eq!(&taken[..], &all[all.len() - taken.len()..]);
            prop_assert!(log.events().is_empty());
            // A remembered place from before `take` is not trusted afterwards.
            log.record_update_for(1_000, &keys[0], &mut known[0], UpdateSource::UpdateQueryData);
            prop_assert_eq!(&log.events()[0].key, &keys[0]);
        }
    }

    #[test]
    fn every_kind_comes_back_as_it_was_recorded_read_or_taken() {
        let key = CacheKey::verbatim("a(1)");
        let mut log = TraceLog::new(1_000);
        let kinds = every_kind();
        for (n, kind) in kinds.iter().enumerate() {
            log.record(n as u64, &key, kind.clone());
        }
        let read: Vec<TraceKind> = log.events().into_iter().map(|e| e.kind).collect();
        assert_eq!(read, kinds);
        let taken: Vec<TraceKind> = log.take().into_iter().map(|e| e.kind).collect();
        assert_eq!(taken, kinds);
    }

    #[test]
    fn a_lower_limit_then_take_keeps_the_kinds_of_the_events_left() {
        let key = CacheKey::verbatim("a(1)");
        let mut log = TraceLog::new(10);
        let all: Vec<TraceKind> = (0..25).map(kind).collect();
        for (n, kind) in all.iter().enumerate() {
            log.record(n as u64, &key, kind.clone());
        }
        // The old generation holds events 10..20, with kinds kept aside (text, patches) for
        // 13, 14, 18 and 19; the lower limit drains 10..14, the kept kind of 13 among them.
        log.set_limit(6);
        let read = log.events();
        let times: Vec<u64> = read.iter().map(|e| e.at_ms).collect();
        assert_eq!(times, (14..25).collect::<Vec<_>>());
        let kinds: Vec<TraceKind> = read.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, all[14..]);
        assert_eq!(log.take(), read);
    }

    #[test]
    fn only_kinds_with_text_or_patches_are_kept_with_a_drop() {
        for kind in every_kind() {
            let holds_heap = matches!(
                &kind,
                TraceKind::RequestRejected { .. }
                    | TraceKind::StreamSkipped { .. }
                    | TraceKind::StreamEnded { .. }
                    | TraceKind::Updated {
                        patches: Some(_),
                        ..
                    }
                    | TraceKind::LifecycleEnded {
                        outcome: HandlerOutcome::Failed { .. } | HandlerOutcome::Panicked { .. },
                        ..
                    }
            );
            match Aside::of(kind.clone()) {
                Ok(aside) => {
                    assert!(!holds_heap, "{kind} set aside whole");
                    assert_eq!(aside.kind(), Ok(kind));
                }
                Err(back) => {
                    assert!(holds_heap, "{kind} kept");
                    assert_eq!(back, kind);
                }
            }
        }
        assert!(std::mem::size_of::<Aside>() <= 24);
        assert!(!std::mem::needs_drop::<Aside>());
    }

    #[test]
    fn a_record_is_sixteen_bytes_and_kinds_round_trip() {
        assert_eq!(std::mem::size_of::<Recorded>(), 16);
        for source in [
            UpdateSource::Lifecycle,
            UpdateSource::UpdateQueryData,
            UpdateSource::PatchQueryData,
        ] {
            assert_eq!(Packed::updated(source).unpack(), Ok(source));
        }
        let last = (MAX_LIMIT - 1) as u32;
        for index in [0, 1, 2, 3, 4, last] {
            assert_eq!(Packed::other(index).unpack(), Err(index as usize));
        }
    }

    #[test]
    fn a_lower_limit_drops_the_oldest_events_at_once() {
        let key = CacheKey::verbatim("a(1)");
        for (before, after) in [(50, 3), (50, 1), (7, 5), (3, 40)] {
            let mut log = TraceLog::new(before);
            for n in 0..100 {
                log.record(n, &key, kind(n));
            }
            let held_before = log.len();
            log.set_limit(after);
            let held: Vec<u64> = log.events().iter().map(|e| e.at_ms).collect();
            // The newest events, the new limit's worth if there were as many, at most twice it.
            assert!(
                held.len() <= 2 * after,
                "{before} -> {after}: {}",
                held.len()
            );
            assert!(held.len() >= after.min(held_before), "{before} -> {after}");
            assert_eq!(held, ((100 - held.len() as u64)..100).collect::<Vec<_>>());
            // And the bounds hold as events keep coming.
            let mut owed = held.len();
            for n in 100..200 {
                log.record(n, &key, kind(n));
                owed = (owed + 1).min(after);
                let len = log.len();
                assert!(len <= 2 * after, "{before} -> {after}: {len} at {n}");
                assert!(
                    len >= owed,
                    "{before} -> {after}: {len} at {n}, {owed} owed"
                );
            }
            assert_eq!(log.events().last().map(|e| e.at_ms), Some(199));
        }
    }

    #[test]
    fn a_remembered_place_is_refreshed_in_a_new_generation() {
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("b(1)"));
        let mut log = TraceLog::new(2);
        let mut known_a = TraceKeyRef::default();
        log.record_update_for(0, &a, &mut known_a, UpdateSource::Lifecycle);
        log.record(1, &b, kind(1));
        // The current generation is full: the next event starts a new one, in which `b` is the
        // first key; `a`'s remembered index 0 would name `b` if it were trusted.
        log.record(2, &b, kind(2));
        log.record_update_for(3, &a, &mut known_a, UpdateSource::Lifecycle);
        let keys: Vec<String> = log.events().iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["a(1)", "b(1)", "b(1)", "a(1)"]);
    }
}
