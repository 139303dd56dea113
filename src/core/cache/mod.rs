//! The cache state machine: entries of mixed states, subscriptions, removal deadlines, request
//! matching, updates and the trace. Every SPEC rule is decided here; `docs/semantics.md` states
//! each operation's exact behaviour and event order.
//!
//! The shape is quinn-proto's: feed it events with the current time, drain the [`Effect`]s it
//! queues with [`Cache::poll_effect`], ask [`Cache::poll_timeout`] when to call
//! [`Cache::handle_timeout`]. It never blocks, spawns, sleeps or reads a clock.
//!
//! ```
//! use livecache::core::{Cache, CacheConfig, EndpointConfig, Effect, Refetch, Status};
//! use livecache::core::CacheKey;
//!
//! let mut cache: Cache<Vec<String>> = Cache::new(CacheConfig::default());
//! let messages = cache.add_endpoint("getMessages", EndpointConfig::default())?;
//! let key = CacheKey::verbatim("getMessages(\"redux\")");
//!
//! let sub = cache.subscribe(0, messages, &key, Refetch::IfMissing)?;
//! let Some(Effect::StartRequest { request, .. }) =
//!     std::iter::from_fn(|| cache.poll_effect()).find(|e| matches!(e, Effect::StartRequest { .. }))
//! else { unreachable!() };
//! cache.fulfil(120, &key, request, vec!["hello".into()]);
//! assert_eq!(cache.entry(&key).map(|e| e.status), Some(Status::Fulfilled));
//!
//! cache.unsubscribe(1_000, sub);                    // removal scheduled at 61 s (R4)
//! assert_eq!(cache.poll_timeout(), Some(61_000));
//! cache.handle_timeout(61_000);
//! assert!(cache.entry(&key).is_none());
//! for event in cache.trace() {
//!     println!("{event}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod deadlines;
mod effect;
mod lifetimes;
mod live;
mod polling;
mod requests;
mod restart;
mod retrying;
mod store;
mod streams;
mod subscriptions;
mod tags;
mod undo;
mod updates;
mod versions;

use std::collections::VecDeque;
use std::fmt;

use crate::core::config::{EndpointConfig, Keep};
use crate::core::data::CacheData;
use crate::core::ids::IdMap;
use crate::core::key::CacheKey;
use crate::core::status::{Phase, Status};
use crate::core::stream_status::StreamStatus;
use crate::core::trace::{Recording, TraceEvent, TraceKind, TraceLog};
use crate::core::version::Version;

use deadlines::Deadlines;
pub use effect::{
    Effect, KeyInUse, NameTaken, Notify, PatchError, RequestEvent, RestartRefused, UpdateRefused,
    UpsertError,
};
pub use store::LifetimePlace;
use store::{Entries, Slot};
pub use undo::Undo;
pub use versions::Delivery;

/// Identifies an endpoint registered with [`Cache::add_endpoint`]. An id the cache did not give
/// out is treated as an endpoint with the default configuration ([`EndpointConfig::default`]).
///
/// ```
/// use livecache::core::{Cache, EndpointConfig};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let id = cache.add_endpoint("a", EndpointConfig::default())?;
/// assert_eq!(id, livecache::core::EndpointId(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(
    /// The endpoint's index, in the order endpoints were added.
    pub usize,
);

/// Identifies a subscription; unique for the cache, never reused.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// let first = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing)?;
/// let second = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing)?;
/// assert_ne!(first, second);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(
    /// The id's number (unique for the cache, never reused).
    pub u64,
);

/// Identifies one lifetime of an entry: from its creation to its removal (R7a). Unique for the
/// cache and never reused, so a handle of an ended lifetime can never reach a later entry of the
/// same key. The trace records its number.
///
/// ```
/// use livecache::core::{Cache, CacheKey, EndpointConfig, LifetimeId};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// let key = CacheKey::verbatim("a(1)");
/// cache.upsert(0, ep, &key, 1)?;
/// assert_eq!(cache.entry(&key).map(|e| e.lifetime), Some(LifetimeId(1)));
/// cache.remove(1, &key);
/// cache.upsert(2, ep, &key, 1)?;
/// assert_eq!(cache.entry(&key).map(|e| e.lifetime), Some(LifetimeId(2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LifetimeId(
    /// The id's number (unique for the cache, never reused).
    pub u64,
);

/// Identifies one lifecycle handler of an entry lifetime (R30): the lifetime, and which of its
/// handlers — 0 for the one started with the entry, one more for each
/// [`restart`](Cache::restart). Everything a handler's handle does to its entry names it; once
/// the lifetime ends or its handler is restarted, a handle of the old handler is refused
/// ([`UpdateRefused::NotLive`]). A bare [`LifetimeId`] names the lifetime's first handler.
///
/// ```
/// # use livecache::core::Patches;
/// use livecache::core::{Cache, CacheKey, EndpointConfig, HandlerId, LifetimeId, UpdateRefused};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig { has_lifecycle: true, ..Default::default() })?;
/// let key = CacheKey::verbatim("a(1)");
/// cache.upsert(0, ep, &key, vec![])?;
/// let first = HandlerId::from(LifetimeId(1));
/// let second = cache.restart(1, &key)?;
/// assert_eq!(second, HandlerId { lifetime: LifetimeId(1), generation: 1 });
/// let refused = cache.update_cached(2, first, Patches::NotWanted, |d| d.push(1));
/// assert_eq!(refused, Err(UpdateRefused::NotLive));
/// assert!(cache.update_cached(2, second, Patches::NotWanted, |d| d.push(1)).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId {
    /// The entry lifetime the handler belongs to.
    pub lifetime: LifetimeId,
    /// Which handler of that lifetime: 0 for the first, then one more per restart.
    pub generation: u32,
}

impl From<LifetimeId> for HandlerId {
    fn from(lifetime: LifetimeId) -> Self {
        HandlerId {
            lifetime,
            generation: 0,
        }
    }
}

/// Identifies one request: one run of the query function for an entry, reported back with
/// [`Cache::fulfil`] or [`Cache::reject`] under this id (R8–R10). Unique for the cache.
///
/// ```
/// use livecache::core::{Cache, CacheKey, Effect, EndpointConfig, Refetch, RequestId};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// let key = CacheKey::verbatim("a(1)");
/// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
/// assert_eq!(cache.poll_effect(), Some(Effect::StartRequest { key, request: RequestId(1) }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(
    /// The id's number (unique for the cache, never reused).
    pub u64,
);

/// Whether an update through a lifecycle handle should compute RFC 6902 patches of its change
/// ([`Cache::update_cached`]). Computing them costs a serialisation of the data before and after.
///
/// ```
/// use livecache::core::Patches;
/// assert_ne!(Patches::Wanted, Patches::NotWanted);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patches {
    /// Compute and return the patches (and their inverse).
    Wanted,
    /// Do not compute them (unless the trace records patches).
    NotWanted,
}

/// How many trace events a cache keeps at least by default (at most twice as many). See
/// [`Cache::set_trace_limit`].
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, CacheKey, DEFAULT_TRACE_LIMIT};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// for n in 0..3 * DEFAULT_TRACE_LIMIT as u64 {
///     cache.upsert(n, ep, &CacheKey::verbatim("a(1)"), n as u32)?;
/// }
/// let kept = cache.trace_len();
/// assert!((DEFAULT_TRACE_LIMIT..=2 * DEFAULT_TRACE_LIMIT).contains(&kept));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_TRACE_LIMIT: usize = 25_000;

/// How many queued effects' room the effect queue keeps once drained; a burst beyond it (a
/// reset of many entries) gives the rest back.
const EFFECTS_KEPT: usize = 1024;

/// How many bytes of text the trace holds at most by default: 4 MiB. See
/// [`Cache::set_trace_byte_budget`].
///
/// ```
/// use livecache::core::{Cache, CacheKey, LifetimeId, DEFAULT_TRACE_BYTE_BUDGET};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// for n in 0..10_000 {
///     cache.stream_skipped(n, &CacheKey::verbatim("a(1)"), LifetimeId(1), "x".repeat(2_000));
/// }
/// assert!(cache.trace_text_bytes() <= DEFAULT_TRACE_BYTE_BUDGET);
/// assert!(cache.trace_len() < 10_000); // fewer events than the limit: the texts are large
/// ```
pub const DEFAULT_TRACE_BYTE_BUDGET: usize = 4 << 20;

/// Api-wide settings of the core.
///
/// ```
/// use livecache::core::{CacheConfig, Keep, Recording};
/// let cfg = CacheConfig::default();
/// assert_eq!((cfg.keep, cfg.recording), (Keep::For(60_000), Recording::Events));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// The api's keep time for unused entries (endpoints may override it).
    pub keep: Keep,
    /// What the trace records.
    pub recording: Recording,
}

/// A read-only view of one live entry.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Phase, CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// cache.upsert(0, ep, &CacheKey::verbatim("a(1)"), 5)?;
/// let view = cache.entry(&CacheKey::verbatim("a(1)")).expect("upserted");
/// assert_eq!((view.phase, view.data, view.subscribers), (Phase::Loaded, Some(&5), 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, PartialEq)]
pub struct EntryView<'a, D, E> {
    /// The key.
    pub key: &'a CacheKey,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The lifetime id.
    pub lifetime: LifetimeId,
    /// The lifetime's current lifecycle handler (R30): the one whose handle may update it.
    pub handler: HandlerId,
    /// The lifecycle phase.
    pub phase: Phase,
    /// The query status.
    pub status: Status,
    /// The data, if any.
    pub data: Option<&'a D>,
    /// The last error, if not cleared.
    pub error: Option<&'a E>,
    /// The request in flight, if any (`is_fetching`).
    pub in_flight: Option<RequestId>,
    /// When the data was last fulfilled or upserted.
    pub fulfilled_at: Option<u64>,
    /// How many subscriptions hold the entry.
    pub subscribers: usize,
    /// The armed removal deadline, if any.
    pub removal_deadline: Option<u64>,
    /// When the entry next polls (R37): armed while a subscription polls it and no request is
    /// in flight.
    pub poll_deadline: Option<u64>,
    /// When the entry's failed request is retried (R36), if it is waiting to be.
    pub retry_deadline: Option<u64>,
    /// The tags it provides (R38), sorted.
    pub tags: &'a [crate::core::Tag],
    /// Whether an invalidation reached it while it had no subscribers: it refetches when next
    /// subscribed or prefetched (R38).
    pub invalidated: bool,
    /// The health of its live source (R28).
    pub stream: StreamStatus,
    /// The version of the newest change its data reflects, on a versioned endpoint (R24).
    pub watermark: Option<Version>,
    /// How many messages its streams delivered that were dropped as stale or duplicates: at or
    /// below the watermark, or held already (R24). Counted for the entry's lifetime, across
    /// its handlers.
    pub stale_messages: u64,
}

/// The sans-IO cache: entries keyed by [`CacheKey`], with data `D` and errors `E`.
///
/// # Driving it
///
/// A driver (the tokio runtime of this crate, a UI event loop, a test) owns the clock and does
/// the I/O; the cache owns every decision. The contract:
///
/// 1. **Events in, with the time.** Every method that changes the cache takes `now` (milliseconds
///    on the driver's clock, never going back): [`subscribe`](Cache::subscribe),
///    [`unsubscribe`](Cache::unsubscribe), [`prefetch`](Cache::prefetch),
///    [`refetch`](Cache::refetch), [`fulfil`](Cache::fulfil) / [`reject`](Cache::reject) with the
///    request id the cache gave out, [`upsert`](Cache::upsert), the update methods,
///    [`remove`](Cache::remove), [`reset`](Cache::reset), and the lifecycle's reports
///    ([`stream_attached`](Cache::stream_attached), [`lifecycle_ended`](Cache::lifecycle_ended)…).
///    An event first expires whatever fell due strictly before `now`, so a late timer tick loses
///    nothing.
/// 2. **Effects out.** After each event, drain [`poll_effect`](Cache::poll_effect) until it
///    returns `None` and carry each [`Effect`] out in order: start a lifecycle handler, start or
///    abort a request, resolve data-loaded, report a removal, wake subscribers.
/// 3. **Timers.** After draining, ask [`poll_timeout`](Cache::poll_timeout) for the earliest
///    deadline and call [`handle_timeout`](Cache::handle_timeout) when the clock reaches it
///    (then drain the effects again). Calling it early or late is harmless.
/// 4. **Reads** ([`entry`](Cache::entry), [`lifetime_entry`](Cache::lifetime_entry),
///    [`trace`](Cache::trace), …) change nothing and may come at any time.
///
/// The hot path of a driver that streams into one lifetime is
/// [`lifetime_place`](Cache::lifetime_place) once, then
/// [`update_cached_at`](Cache::update_cached_at) or
/// [`update_cached_deferring_notify`](Cache::update_cached_deferring_notify) per message.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing)?;
/// assert_eq!(cache.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Cache<D, E = String> {
    config: CacheConfig,
    now: u64,
    endpoints: Vec<(String, EndpointConfig)>,
    entries: Entries<D, E>,
    /// Subscription → (key, lifetime). Entries of ended lifetimes stay until unsubscribed and are
    /// then recognised as stale (R7a).
    subscriptions: IdMap<u64, (CacheKey, u64)>,
    deadlines: Deadlines,
    next_lifetime: u64,
    next_request: u64,
    next_subscription: u64,
    effects: VecDeque<Effect<D>>,
    trace: TraceLog,
    /// Inside [`Cache::batch`]: consecutive updates of one entry are traced as one (R34).
    batching: bool,
    /// In a batch, the newest event is an update the batch recorded: the next update of the
    /// same entry folds into it.
    batch_folds: bool,
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// An empty cache at time 0.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.len(), 0);
    /// ```
    pub fn new(config: CacheConfig) -> Self {
        Cache {
            config,
            now: 0,
            endpoints: Vec::new(),
            entries: Entries::new(),
            subscriptions: IdMap::default(),
            deadlines: Deadlines::default(),
            next_lifetime: 1,
            next_request: 1,
            next_subscription: 1,
            effects: VecDeque::new(),
            trace: TraceLog::new(DEFAULT_TRACE_LIMIT, DEFAULT_TRACE_BYTE_BUDGET),
            batching: false,
            batch_folds: false,
        }
    }

    /// Run `f` as one batch (R34) — what a stream's driver does with a burst of messages it
    /// applies under one lock: consecutive updates of one entry in it are traced as one
    /// `updated { count }` (those recording patches keep one event each, with its patch).
    /// Nothing else changes: each update is applied, decided and notified as outside a batch.
    /// A batch inside a batch is part of it (its updates fold with the outer ones).
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, Patches};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, TraceKind};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// cache.upsert(0, ep, &CacheKey::verbatim("a(1)"), vec![])?;
    /// cache.batch(|cache| {
    ///     for n in 0..3 {
    ///         let _ = cache.update_cached(1, LifetimeId(1), Patches::NotWanted, |d| d.push(n));
    ///     }
    /// });
    /// let last = cache.trace().pop().map(|e| e.kind);
    /// assert!(matches!(last, Some(TraceKind::Updated { count: 3, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        // A batch inside a batch is part of it: only the outermost starts and ends the run.
        let outer = std::mem::replace(&mut self.batching, true);
        if !outer {
            self.batch_folds = false;
        }
        // A panic in `f` (a core user's recipe) ends the batch too, then goes on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        self.batching = outer;
        if !outer {
            self.batch_folds = false;
        }
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Register an endpoint. Names are unique: a name already registered is refused.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, NameTaken};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let id = cache.add_endpoint("getUser", EndpointConfig::default())?;
    /// assert_eq!(cache.endpoint_name(id), Some("getUser"));
    /// let again = cache.add_endpoint("getUser", EndpointConfig::default());
    /// assert_eq!(again, Err(NameTaken { name: "getUser".into() }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_endpoint(
        &mut self,
        name: impl Into<String>,
        config: EndpointConfig,
    ) -> Result<EndpointId, NameTaken> {
        let name = name.into();
        if self.endpoints.iter().any(|(taken, _)| *taken == name) {
            return Err(NameTaken { name });
        }
        self.endpoints.push((name, config));
        Ok(EndpointId(self.endpoints.len() - 1))
    }

    /// Whether `endpoint` may act on `key`: a key belongs to the endpoint whose live entry holds
    /// it, so another endpoint's operation on it is refused (custom key serialisers can make two
    /// endpoints' keys collide). [`subscribe`](Cache::subscribe), [`prefetch`](Cache::prefetch)
    /// and [`upsert`](Cache::upsert) check it themselves; a driver that reads or updates by key
    /// on an endpoint's behalf asks it first.
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, KeyInUse};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let a = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let b = cache.add_endpoint("b", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("shared");
    /// cache.upsert(0, a, &key, 1)?;
    /// assert_eq!(cache.claim(a, &key), Ok(()));
    /// assert_eq!(cache.claim(b, &key), Err(KeyInUse { key: key.clone(), owner: "a".into() }));
    /// assert!(cache.upsert(1, b, &key, 2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&self, endpoint: EndpointId, key: &CacheKey) -> Result<(), KeyInUse> {
        match self.entries.get(key) {
            Some(slot) if slot.endpoint != endpoint => Err(KeyInUse {
                key: key.clone(),
                owner: self
                    .endpoint_name(slot.endpoint)
                    .unwrap_or_default()
                    .to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The name of an endpoint.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.endpoint_name(livecache::core::EndpointId(0)), None);
    /// ```
    pub fn endpoint_name(&self, endpoint: EndpointId) -> Option<&str> {
        self.endpoints
            .get(endpoint.0)
            .map(|(name, _)| name.as_str())
    }

    /// The configuration of an endpoint (the default for an id the cache did not give out).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Versioning};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// assert_eq!(cache.endpoint(ep).versions, versions);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoint(&self, endpoint: EndpointId) -> EndpointConfig {
        self.endpoint_config(endpoint)
    }

    /// The core's current time (milliseconds).
    ///
    /// ```
    /// let mut cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// cache.handle_timeout(5);
    /// assert_eq!(cache.now(), 5);
    /// ```
    pub fn now(&self) -> u64 {
        self.now
    }

    /// How many live entries there are.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache has no entries.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.is_empty(), cache.len() == 0);
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A view of the entry for `key`, if there is one.
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey};
    /// let cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.entry(&CacheKey::verbatim("a(1)")).is_none());
    /// ```
    pub fn entry(&self, key: &CacheKey) -> Option<EntryView<'_, D, E>> {
        let (key, slot) = self.entries.get_key_value(key)?;
        Some(self.view(key, slot))
    }

    /// A view of `lifetime`'s entry while that lifetime lives: what a holder of a subscription
    /// or lifecycle handle of that lifetime may read. Once the lifetime has ended, nothing, even
    /// when a new lifetime of the same key is live (R7a).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, EndpointConfig, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 1)?;
    /// assert_eq!(cache.lifetime_entry(LifetimeId(1)).map(|e| e.data), Some(Some(&1)));
    /// cache.remove(1, &key);
    /// cache.upsert(2, ep, &key, 2)?;                 // lifetime 2 of the same key
    /// assert!(cache.lifetime_entry(LifetimeId(1)).is_none());  // lifetime 1 reads nothing of it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lifetime_entry(&self, lifetime: LifetimeId) -> Option<EntryView<'_, D, E>> {
        let key = self.entries.key_of(lifetime.0)?;
        let (key, slot) = self.entries.get_key_value(key)?;
        Some(self.view(key, slot))
    }

    fn view<'a>(&self, key: &'a CacheKey, slot: &'a Slot<D, E>) -> EntryView<'a, D, E> {
        let stream = slot.live().map_or(StreamStatus::Idle, |live| live.status());
        // R28: an endpoint may choose that a failed stream rejects the query too.
        let failure_rejects = matches!(stream, StreamStatus::Failed { .. })
            && self.endpoint_config(slot.endpoint).stream_failure_rejects;
        let status = if failure_rejects {
            Status::Rejected
        } else {
            slot.entry.status()
        };
        EntryView {
            key,
            endpoint: slot.endpoint,
            lifetime: LifetimeId(slot.entry.lifetime()),
            handler: HandlerId {
                lifetime: LifetimeId(slot.entry.lifetime()),
                generation: slot.handler,
            },
            phase: slot.entry.phase(),
            status,
            data: slot.entry.data(),
            error: slot.entry.error(),
            in_flight: slot.entry.in_flight().map(RequestId),
            fulfilled_at: slot.entry.fulfilled_at(),
            subscribers: slot.subscribers,
            removal_deadline: slot.deadline.map(|armed| armed.at),
            poll_deadline: slot
                .polling
                .as_ref()
                .and_then(|p| p.armed)
                .map(|armed| armed.at),
            retry_deadline: slot
                .retrying
                .as_ref()
                .and_then(|r| r.armed)
                .map(|armed| armed.at),
            tags: slot.tags.as_ref().map_or(&[], |t| t.provided.as_slice()),
            invalidated: slot.tags.as_ref().is_some_and(|t| t.invalidated),
            stream,
            watermark: slot.live().and_then(|live| live.watermark),
            stale_messages: slot.live().map_or(0, |live| live.stale),
        }
    }

    /// The keys of all live entries, in ascending order.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.keys().is_empty());
    /// ```
    pub fn keys(&self) -> Vec<&CacheKey> {
        let mut keys: Vec<&CacheKey> = self.entries.keys().collect();
        keys.sort();
        keys
    }

    /// The key of a live lifetime.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.key_of_lifetime(LifetimeId(1)), None);
    /// ```
    pub fn key_of_lifetime(&self, lifetime: LifetimeId) -> Option<&CacheKey> {
        self.entries.key_of(lifetime.0)
    }

    /// Whether an effect is queued ([`Cache::poll_effect`] would return one).
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(!cache.has_effects());
    /// ```
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// The next queued effect.
    ///
    /// ```
    /// let mut cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.poll_effect().is_none());
    /// ```
    #[must_use = "an effect is the driver's to carry out; dropping it loses it"]
    #[inline]
    pub fn poll_effect(&mut self) -> Option<Effect<D>> {
        let effect = self.effects.pop_front();
        if effect.is_none() && self.effects.capacity() > EFFECTS_KEPT {
            self.shrink_effects();
        }
        effect
    }

    /// A burst (a reset of many entries) is over: give back what it grew the effect queue to.
    #[cold]
    fn shrink_effects(&mut self) {
        self.effects.shrink_to(EFFECTS_KEPT);
    }

    /// The events recorded so far — the most recent ones: the trace is bounded, so that a
    /// long-running cache does not grow forever. It keeps at least the last
    /// [`Cache::set_trace_limit`] events ([`DEFAULT_TRACE_LIMIT`] by default) and at most twice
    /// that; older events are dropped in batches. The cache stores compact records; the events
    /// are built when asked for, O(events) ([`Cache::trace_len`] only counts them).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, CacheKey, TraceKind};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.trace().is_empty());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// cache.upsert(5, ep, &CacheKey::verbatim("a(1)"), 7)?;
    /// let trace = cache.trace();
    /// assert_eq!(trace.len(), cache.trace_len());
    /// assert!(matches!(trace[0].kind, TraceKind::EntryAdded { .. }));
    /// assert!(trace.iter().all(|e| e.at_ms == 5 && e.key == "a(1)"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.trace.events()
    }

    /// How many events [`Cache::trace`] would return, without building them.
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.trace_len(), 0);
    /// ```
    pub fn trace_len(&self) -> usize {
        self.trace.len()
    }

    /// Keep at least the last `limit` events in the trace (at least 1, at most 2^30) and at most
    /// twice that; lowering the limit drops the oldest events beyond it at once. Recording
    /// nothing at all is [`Recording::Off`].
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.set_trace_limit(2);
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// for n in 0..10 {
    ///     cache.upsert(n, ep, &CacheKey::verbatim("a(1)"), n as u32)?;
    /// }
    /// assert!((2..=4).contains(&cache.trace().len()));
    /// assert_eq!(cache.trace().last().map(|e| e.at_ms), Some(9));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_trace_limit(&mut self, limit: usize) {
        self.trace.set_limit(limit);
    }

    /// Hold at most `bytes` of text in the trace (at least twice [`TRACE_TEXT_CAP`](crate::core::TRACE_TEXT_CAP);
    /// [`DEFAULT_TRACE_BYTE_BUDGET`], 4 MiB, by default), whatever the event limit: the texts
    /// events carry (errors, skip and end reasons, a handler's failure; each cut to
    /// [`TRACE_TEXT_CAP`](crate::core::TRACE_TEXT_CAP) bytes) come from peers, so the trace is bounded in bytes as well as in
    /// events. When the texts of the newest events would pass half the budget, the older half
    /// of the trace is dropped early (so fewer than [`Cache::set_trace_limit`] events may be
    /// kept); lowering the budget below what is held drops the oldest events at once. Events
    /// without text (most of them) and patches are not counted.
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, LifetimeId, TRACE_TEXT_CAP};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.set_trace_byte_budget(64 * 1024);
    /// for n in 0..1_000 {
    ///     cache.stream_skipped(n, &CacheKey::verbatim("a(1)"), LifetimeId(1), "x".repeat(5_000));
    /// }
    /// assert!(cache.trace_text_bytes() <= 64 * 1024);
    /// let texts: usize = cache.trace().iter().map(|e| match &e.kind {
    ///     livecache::core::TraceKind::StreamSkipped { reason, .. } => reason.len(),
    ///     _ => 0,
    /// }).sum();
    /// assert!(texts <= 64 * 1024 && cache.trace().len() >= 64 * 1024 / 2 / TRACE_TEXT_CAP - 1);
    /// assert_eq!(cache.trace().last().map(|e| e.at_ms), Some(999));
    /// ```
    pub fn set_trace_byte_budget(&mut self, bytes: usize) {
        self.trace.set_byte_budget(bytes);
    }

    /// How many bytes of text the trace holds now (at most the byte budget, see
    /// [`Cache::set_trace_byte_budget`]).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.stream_skipped(0, &CacheKey::verbatim("a(1)"), LifetimeId(1), "not JSON".into());
    /// assert_eq!(cache.trace_text_bytes(), 8);
    /// ```
    pub fn trace_text_bytes(&self) -> usize {
        self.trace.text_bytes()
    }

    /// Take the events recorded so far (built as [`Cache::trace`] does), leaving the trace empty
    /// and its storage released.
    ///
    /// ```
    /// let mut cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.take_trace().is_empty());
    /// ```
    #[must_use = "the events taken are gone from the cache"]
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.trace.take()
    }

    #[inline(always)]
    fn record(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        if self.config.recording != Recording::Off {
            self.trace.record(at_ms, key, kind);
        }
        self.batch_folds = false;
    }

    fn endpoint_config(&self, endpoint: EndpointId) -> EndpointConfig {
        config_of(&self.endpoints, endpoint)
    }

    fn wants_data_loaded(&self, endpoint: EndpointId) -> bool {
        self.endpoint_config(endpoint).has_lifecycle
    }
}

/// The configuration of `endpoint` (the default for an id the cache did not give out); a free
/// function so that a caller holding a mutable borrow of the entries can read it.
fn config_of(endpoints: &[(String, EndpointConfig)], endpoint: EndpointId) -> EndpointConfig {
    endpoints
        .get(endpoint.0)
        .map(|(_, c)| *c)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Refetch;

    /// The core, not its driver, refuses a second endpoint of a name, and every keyed operation
    /// of another endpoint on a key whose live entry is not its own; nothing changes.
    #[test]
    fn endpoint_names_are_unique_and_a_key_belongs_to_its_entrys_endpoint() {
        let mut cache: Cache<u32> = Cache::new(CacheConfig::default());
        let a = cache.add_endpoint("a", EndpointConfig::default());
        let b = cache.add_endpoint("b", EndpointConfig::default());
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("two distinct names are accepted");
        };
        assert_eq!(
            cache.add_endpoint("a", EndpointConfig::default()),
            Err(NameTaken { name: "a".into() })
        );
        let key = CacheKey::verbatim("collides");
        assert_eq!(cache.upsert(0, a, &key, 1), Ok(()));
        let in_use = Err(KeyInUse {
            key: key.clone(),
            owner: "a".into(),
        });
        let trace_before = cache.trace_len();
        assert_eq!(
            cache.subscribe(1, b, &key, Refetch::Always).map(drop),
            in_use
        );
        assert_eq!(cache.prefetch(1, b, &key, Refetch::Always), in_use);
        assert_eq!(
            cache.upsert(1, b, &key, 2).map_err(|e| match e {
                UpsertError::KeyInUse(in_use) => in_use,
                other => panic!("{other}"),
            }),
            in_use
        );
        assert_eq!(cache.claim(b, &key), in_use);
        assert_eq!(
            cache.trace_len(),
            trace_before,
            "a refused operation records nothing"
        );
        let entry = cache
            .entry(&key)
            .map(|e| (e.endpoint, e.subscribers, e.data.copied()));
        assert_eq!(entry, Some((a, 0, Some(1))));
        // Once the entry is gone the key is free for the other endpoint.
        assert!(cache.remove(2, &key));
        assert_eq!(cache.upsert(3, b, &key, 3), Ok(()));
        assert_eq!(
            cache.claim(a, &key).map_err(|e| e.owner),
            Err("b".to_owned())
        );
    }
}
