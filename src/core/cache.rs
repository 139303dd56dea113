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
//! use livecache::core::key::CacheKey;
//!
//! let mut cache: Cache<Vec<String>> = Cache::new(CacheConfig::default());
//! let messages = cache.add_endpoint("getMessages", EndpointConfig::default());
//! let key = CacheKey::verbatim("getMessages(\"redux\")");
//!
//! let sub = cache.subscribe(0, messages, &key, Refetch::IfMissing);
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
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use crate::core::config::{EndpointConfig, Keep, Refetch};
use crate::core::data::CacheData;
use crate::core::entry::{Added, Draft, Entry, Loaded, Loading, Removed, Streaming, Updated};
use crate::core::ids::IdMap;
use crate::core::key::CacheKey;
use crate::core::patch::{Patch, PatchSet};
use crate::core::status::{Phase, Status};
use crate::core::trace::{
    AddCause, HandlerOutcome, Recording, RemoveCause, TraceEvent, TraceKeyRef, TraceKind, TraceLog,
    UpdateSource,
};

/// Identifies an endpoint registered with [`Cache::add_endpoint`]. An id the cache did not give
/// out is treated as an endpoint with the default configuration ([`EndpointConfig::default`]).
///
/// ```
/// use livecache::core::{Cache, EndpointConfig};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let id = cache.add_endpoint("a", EndpointConfig::default());
/// assert_eq!(id, livecache::core::EndpointId(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(
    /// The endpoint's index, in the order endpoints were added.
    pub usize,
);

/// Identifies a subscription; unique for the cache, never reused.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default());
/// let first = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing);
/// let second = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing);
/// assert_ne!(first, second);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(
    /// The id's number (unique for the cache, never reused).
    pub u64,
);

/// How many trace events a cache keeps at least by default (at most twice as many). See
/// [`Cache::set_trace_limit`].
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, key::CacheKey, DEFAULT_TRACE_LIMIT};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default());
/// for n in 0..3 * DEFAULT_TRACE_LIMIT as u64 {
///     cache.upsert(n, ep, &CacheKey::verbatim("a(1)"), n as u32);
/// }
/// let kept = cache.trace_len();
/// assert!((DEFAULT_TRACE_LIMIT..=2 * DEFAULT_TRACE_LIMIT).contains(&kept));
/// ```
pub const DEFAULT_TRACE_LIMIT: usize = 25_000;

/// Api-wide settings of the core.
///
/// ```
/// use livecache::core::{CacheConfig, Keep, trace::Recording};
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

/// Something the driver of the core must do. Drained with [`Cache::poll_effect`], in order.
///
/// ```
/// use livecache::core::{Cache, Effect, EndpointConfig, Refetch, key::CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default());
/// let key = CacheKey::verbatim("a(1)");
/// cache.subscribe(0, ep, &key, Refetch::IfMissing);
/// assert_eq!(cache.poll_effect(), Some(Effect::StartRequest { key: key.clone(), request: 1 }));
/// assert_eq!(cache.poll_effect(), Some(Effect::Notify { key }));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Effect<D> {
    /// Start the endpoint's `on_cache_entry_added` handler for a new lifetime (R1, R12).
    StartLifecycle {
        /// The key.
        key: CacheKey,
        /// The new lifetime.
        lifetime: u64,
    },
    /// Run the endpoint's query function and report back with `fulfil` or `reject`.
    StartRequest {
        /// The key.
        key: CacheKey,
        /// The request id to report the result under.
        request: u64,
    },
    /// Drop the running request: its entry is being removed (R5, R7).
    AbortRequest {
        /// The key.
        key: CacheKey,
        /// The request.
        request: u64,
    },
    /// Resolve the lifetime's data-loaded with this data (R8, R13, R20). Only for endpoints with
    /// a lifecycle handler.
    ResolveDataLoaded {
        /// The lifetime.
        lifetime: u64,
        /// The request that brought the data (`None`: an upsert, so no meta).
        request: Option<u64>,
        /// The first data.
        data: D,
    },
    /// The lifetime ended: resolve `entry_removed`; if `loaded` is false, data-loaded yields
    /// "removed before loaded" (R13, R14).
    EntryRemoved {
        /// The key.
        key: CacheKey,
        /// The lifetime.
        lifetime: u64,
        /// Whether data had loaded.
        loaded: bool,
    },
    /// Something subscribers of this key can see changed.
    Notify {
        /// The key.
        key: CacheKey,
    },
}

/// Why an update through a lifecycle handle (or `update_query_data`) failed.
///
/// ```
/// use livecache::core::{Cache, UpdateError};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// assert_eq!(cache.update_cached(0, 7, false, |d| d.push(1)), Err(UpdateError::NotLive));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The lifetime has ended (or never existed): the entry was removed (R7a, R14).
    #[error("the cache entry was removed")]
    NotLive,
    /// The entry has no data yet; wait for data-loaded (R15).
    #[error("the cache entry has no data yet")]
    NotLoaded,
    /// The data could not be serialised to compute patches; nothing changed.
    #[error("the cache entry's data could not be serialised for patches: {0}")]
    Serialize(String),
}

/// Why `patch_query_data` failed. In every case the data is unchanged (R19).
///
/// ```
/// use livecache::core::{Cache, PatchError, key::CacheKey};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// let patch = json_patch::Patch(vec![]);
/// assert_eq!(cache.patch_query_data(0, &CacheKey::verbatim("a(1)"), &patch), Err(PatchError::NoEntry));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// No entry for the key.
    #[error("no cache entry for the key")]
    NoEntry,
    /// The entry has no data yet.
    #[error("the cache entry has no data yet")]
    NoData,
    /// An operation did not apply (bad path, failed `test`, …).
    #[error("the patch does not apply: {0}")]
    Apply(String),
    /// The patched JSON is not a value of the entry's data type.
    #[error("the patched data does not fit the data type: {0}")]
    Schema(String),
}

/// A read-only view of one live entry.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Phase, key::CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default());
/// cache.upsert(0, ep, &CacheKey::verbatim("a(1)"), 5);
/// let view = cache.entry(&CacheKey::verbatim("a(1)")).expect("upserted");
/// assert_eq!((view.phase, view.data, view.subscribers), (Phase::Loaded, Some(&5), 0));
/// ```
#[derive(Debug, PartialEq)]
pub struct EntryView<'a, D, E> {
    /// The key.
    pub key: &'a CacheKey,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The lifetime id.
    pub lifetime: u64,
    /// The lifecycle phase.
    pub phase: Phase,
    /// The query status.
    pub status: Status,
    /// The data, if any.
    pub data: Option<&'a D>,
    /// The last error, if not cleared.
    pub error: Option<&'a E>,
    /// The request in flight, if any (`is_fetching`).
    pub in_flight: Option<u64>,
    /// When the data was last fulfilled or upserted.
    pub fulfilled_at: Option<u64>,
    /// How many subscriptions hold the entry.
    pub subscribers: usize,
    /// The armed removal deadline, if any.
    pub removal_deadline: Option<u64>,
}

/// An entry in one of its live typed states: how the map holds entries of mixed states. Only
/// the typed transitions move between variants.
#[derive(Debug)]
enum AnyEntry<D, E> {
    Loading(Entry<Loading, E>),
    Loaded(Entry<Loaded<D>, E>),
    Streaming(Entry<Streaming<D>, E>),
}

/// Cloning a whole cache (for exhaustive exploration, say) makes a separate universe.
impl<D: Clone, E: Clone> Clone for AnyEntry<D, E> {
    fn clone(&self) -> Self {
        match self {
            AnyEntry::Loading(e) => AnyEntry::Loading(e.duplicate()),
            AnyEntry::Loaded(e) => AnyEntry::Loaded(e.duplicate()),
            AnyEntry::Streaming(e) => AnyEntry::Streaming(e.duplicate()),
        }
    }
}

macro_rules! each_state {
    ($any:expr, $e:ident => $body:expr) => {
        match $any {
            AnyEntry::Loading($e) => $body,
            AnyEntry::Loaded($e) => $body,
            AnyEntry::Streaming($e) => $body,
        }
    };
}

impl<D: PartialEq, E> AnyEntry<D, E> {
    fn lifetime(&self) -> u64 {
        each_state!(self, e => e.lifetime())
    }
    fn in_flight(&self) -> Option<u64> {
        each_state!(self, e => e.in_flight())
    }
    fn fulfilled_at(&self) -> Option<u64> {
        each_state!(self, e => e.fulfilled_at())
    }
    fn status(&self) -> Status {
        each_state!(self, e => e.status())
    }
    fn error(&self) -> Option<&E> {
        each_state!(self, e => e.error())
    }
    fn phase(&self) -> Phase {
        match self {
            AnyEntry::Loading(_) => Phase::Loading,
            AnyEntry::Loaded(_) => Phase::Loaded,
            AnyEntry::Streaming(_) => Phase::Streaming,
        }
    }
    fn data(&self) -> Option<&D> {
        match self {
            AnyEntry::Loading(_) => None,
            AnyEntry::Loaded(e) => Some(e.data()),
            AnyEntry::Streaming(e) => Some(e.data()),
        }
    }
    fn settle(&mut self) {
        each_state!(self, e => e.settle())
    }
    fn reject(&mut self, error: E) {
        each_state!(self, e => e.reject(error))
    }
    fn begin_request(&mut self, request: u64) {
        each_state!(self, e => e.begin_request(request))
    }
    fn remove(self) -> Entry<Removed, E> {
        each_state!(self, e => e.remove())
    }
    /// New data from a request or an upsert. Returns (data changed, first data of the lifetime).
    fn receive(self, data: D, now: u64) -> (AnyEntry<D, E>, bool, bool) {
        match self {
            AnyEntry::Loading(e) => (AnyEntry::Loaded(e.load(data, now)), true, true),
            AnyEntry::Loaded(mut e) => {
                let changed = e.replace(data, now);
                (AnyEntry::Loaded(e), changed, false)
            }
            AnyEntry::Streaming(mut e) => {
                let changed = e.replace(data, now);
                (AnyEntry::Streaming(e), changed, false)
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Slot<D, E> {
    endpoint: EndpointId,
    subscribers: usize,
    /// `(deadline, arming sequence)`, mirrored in `Cache::deadlines`.
    deadline: Option<(u64, u64)>,
    /// Incremented whenever the data changes.
    version: u64,
    /// What subscribers were last told about ([`Visible`]); `None` before the first notification.
    notified: Option<Visible>,
    /// Where this entry's key sits in the trace's current generation, if it does.
    trace_key: TraceKeyRef,
    entry: AnyEntry<D, E>,
}

/// What a subscriber can see of an entry: a change to any of these is worth a notification.
/// `fulfilled_at` alone is not: equal data from a request or an upsert notifies no one unless
/// the status, the request in flight or the error changed too (R8).
type Visible = (Status, Phase, Option<u64>, bool, u64);

impl<D: PartialEq, E> Slot<D, E> {
    fn visible(&self) -> Visible {
        let e = &self.entry;
        (
            e.status(),
            e.phase(),
            e.in_flight(),
            e.error().is_some(),
            self.version,
        )
    }

    /// Whether what subscribers can see changed since the last notification; if so, it is now
    /// the notified state.
    fn mark_notified(&mut self) -> bool {
        let visible = self.visible();
        if self.notified == Some(visible) {
            return false;
        }
        self.notified = Some(visible);
        true
    }
}

/// Where a lifetime's entry sits in the store, for a driver that updates it often (a lifecycle
/// handle): an entry keeps its place for its whole lifetime, and a place is reused only by another
/// lifetime, so checking the lifetime found there is as exact as looking the lifetime up, without
/// the lookup. Found with [`Cache::lifetime_place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LifetimePlace {
    lifetime: u64,
    position: usize,
}

impl LifetimePlace {
    /// The lifetime.
    pub(crate) fn lifetime(self) -> u64 {
        self.lifetime
    }

    /// A place no entry has: every update through it finds the lifetime gone.
    pub(crate) fn gone(lifetime: u64) -> Self {
        LifetimePlace {
            lifetime,
            position: usize::MAX,
        }
    }
}

/// The live entries: keyed by [`CacheKey`] for every operation that names a key, and by
/// lifetime for the operations that name a lifetime. The updates that arrive through a lifecycle
/// handle (the streaming hot path) need no lookup at all: the handle holds its entry's place
/// ([`LifetimePlace`]), which an entry keeps for its whole lifetime. The key text is derived from
/// arguments; its hash is seeded per process and computed once, when the key is made (see
/// [`CacheKey`]).
///
/// The entries themselves sit densely in one `Vec` in the order they were made (a removed
/// entry's place is reused), and the two maps hold only positions: the maps stay small enough to
/// stay cached, and entries updated in turn are neighbours in memory instead of scattered over a
/// hash table's buckets.
#[derive(Clone, Debug)]
struct Entries<D, E> {
    /// Key → its live entry's position in `slots`. A key carries its own seeded hash (computed
    /// once, when the key is made), so a lookup only mixes that number.
    by_key: IdMap<CacheKey, usize>,
    /// Lifetime → its entry's position in `slots`.
    by_lifetime: IdMap<u64, usize>,
    /// Each live entry with its key; `None` where an entry was removed, until a new one reuses it.
    slots: Vec<Option<(CacheKey, Slot<D, E>)>>,
    /// The positions in `slots` that are `None`.
    free: Vec<usize>,
}

impl<D: PartialEq, E> Entries<D, E> {
    fn new() -> Self {
        Entries {
            by_key: IdMap::default(),
            by_lifetime: IdMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
    fn len(&self) -> usize {
        self.by_key.len()
    }
    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
    fn contains_key(&self, key: &CacheKey) -> bool {
        self.by_key.contains_key(key)
    }
    fn slot(&self, position: usize) -> Option<&(CacheKey, Slot<D, E>)> {
        self.slots.get(position)?.as_ref()
    }
    fn slot_mut(&mut self, position: usize) -> Option<&mut (CacheKey, Slot<D, E>)> {
        self.slots.get_mut(position)?.as_mut()
    }
    fn get_key_value(&self, key: &CacheKey) -> Option<(&CacheKey, &Slot<D, E>)> {
        let position = *self.by_key.get(key)?;
        self.slot(position).map(|(k, slot)| (k, slot))
    }
    fn get(&self, key: &CacheKey) -> Option<&Slot<D, E>> {
        self.get_key_value(key).map(|(_, slot)| slot)
    }
    fn get_mut(&mut self, key: &CacheKey) -> Option<&mut Slot<D, E>> {
        let position = *self.by_key.get(key)?;
        self.slot_mut(position).map(|(_, slot)| slot)
    }
    fn keys(&self) -> impl Iterator<Item = &CacheKey> {
        self.slots.iter().flatten().map(|(key, _)| key)
    }
    /// The key of a live lifetime.
    fn key_of(&self, lifetime: u64) -> Option<&CacheKey> {
        let position = *self.by_lifetime.get(&lifetime)?;
        self.slot(position).map(|(key, _)| key)
    }
    /// Where a live lifetime's entry sits: the same place for the whole lifetime.
    fn place_of(&self, lifetime: u64) -> Option<LifetimePlace> {
        let position = *self.by_lifetime.get(&lifetime)?;
        Some(LifetimePlace { lifetime, position })
    }
    /// The key and entry at `place`, if its lifetime is still live there.
    fn at_place(&self, place: LifetimePlace) -> Option<(&CacheKey, &Slot<D, E>)> {
        let (key, slot) = self.slot(place.position)?;
        (slot.entry.lifetime() == place.lifetime).then_some((key, slot))
    }
    /// [`Entries::at_place`], mutably.
    fn at_place_mut(&mut self, place: LifetimePlace) -> Option<(&CacheKey, &mut Slot<D, E>)> {
        let (key, slot) = self.slot_mut(place.position)?;
        (slot.entry.lifetime() == place.lifetime).then_some((&*key, slot))
    }
    /// Insert or replace the entry of `key` (a new lifetime replaces the key's old one).
    fn insert(&mut self, key: CacheKey, slot: Slot<D, E>) {
        use std::collections::hash_map::Entry;
        let lifetime = slot.entry.lifetime();
        let position = match self.by_key.entry(key.clone()) {
            Entry::Occupied(at) => {
                let position = *at.get();
                let old = self.slots.get(position).and_then(Option::as_ref);
                let old = old.map(|(_, old)| old.entry.lifetime());
                self.relink(old, lifetime, position);
                position
            }
            Entry::Vacant(at) => {
                let position = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                at.insert(position);
                let taken = self.by_lifetime.insert(lifetime, position);
                debug_assert!(taken.is_none(), "lifetimes are never reused");
                position
            }
        };
        if let Some(place) = self.slots.get_mut(position) {
            *place = Some((key, slot));
        }
    }
    /// Take the entry of `key` out by value for a typestate transition and put back the one `f`
    /// returns, in the same place: `f` must keep the entry's lifetime. The maps are not touched.
    /// If `f` panics (a core user's recipe), the entry is gone from the store, as it would be had
    /// it been removed first, and the panic goes on.
    fn transition<R>(
        &mut self,
        key: &CacheKey,
        f: impl FnOnce(Slot<D, E>) -> (Slot<D, E>, R),
    ) -> Option<R> {
        let position = *self.by_key.get(key)?;
        let (owned_key, slot) = self.slots.get_mut(position)?.take()?;
        let lifetime = slot.entry.lifetime();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(slot))) {
            Ok((slot, result)) => {
                let now_lifetime = slot.entry.lifetime();
                if let Some(place) = self.slots.get_mut(position) {
                    *place = Some((owned_key, slot));
                }
                // Transitions keep the lifetime (entry.rs copies it through every state); should
                // one not, the lifetime map follows rather than pointing at the wrong entry.
                self.relink(Some(lifetime), now_lifetime, position);
                Some(result)
            }
            Err(panic) => {
                self.by_key.remove(key);
                self.by_lifetime.remove(&lifetime);
                self.free_place(position);
                std::panic::resume_unwind(panic)
            }
        }
    }
    /// The entry at `position` now has lifetime `new` (it had `old`, if any).
    fn relink(&mut self, old: Option<u64>, new: u64, position: usize) {
        if old == Some(new) {
            return;
        }
        if let Some(old) = old {
            self.by_lifetime.remove(&old);
        }
        self.by_lifetime.insert(new, position);
    }
    /// `position` no longer holds an entry.
    fn free_place(&mut self, position: usize) {
        if self.by_key.is_empty() {
            // Nothing live: start again from the front (the capacity is kept).
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(position);
        }
    }
    fn remove_entry(&mut self, key: &CacheKey) -> Option<(CacheKey, Slot<D, E>)> {
        let position = self.by_key.remove(key)?;
        let (key, slot) = self.slots.get_mut(position)?.take()?;
        self.by_lifetime.remove(&slot.entry.lifetime());
        self.free_place(position);
        Some((key, slot))
    }
    fn remove(&mut self, key: &CacheKey) -> Option<Slot<D, E>> {
        self.remove_entry(key).map(|(_, slot)| slot)
    }
}

/// The sans-IO cache: entries keyed by [`CacheKey`], with data `D` and errors `E`.
///
/// ```
/// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default());
/// cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing);
/// assert_eq!(cache.len(), 1);
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
    deadlines: BTreeSet<(u64, u64, CacheKey)>,
    next_lifetime: u64,
    next_request: u64,
    next_subscription: u64,
    next_arming: u64,
    effects: VecDeque<Effect<D>>,
    trace: TraceLog,
}

// ===== impl Cache: construction and observation =====

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
            deadlines: BTreeSet::new(),
            next_lifetime: 1,
            next_request: 1,
            next_subscription: 1,
            next_arming: 1,
            effects: VecDeque::new(),
            trace: TraceLog::new(DEFAULT_TRACE_LIMIT),
        }
    }

    /// Register an endpoint.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let id = cache.add_endpoint("getUser", EndpointConfig::default());
    /// assert_eq!(cache.endpoint_name(id), Some("getUser"));
    /// ```
    pub fn add_endpoint(&mut self, name: impl Into<String>, config: EndpointConfig) -> EndpointId {
        self.endpoints.push((name.into(), config));
        EndpointId(self.endpoints.len() - 1)
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
    /// use livecache::core::{Cache, key::CacheKey};
    /// let cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.entry(&CacheKey::verbatim("a(1)")).is_none());
    /// ```
    pub fn entry(&self, key: &CacheKey) -> Option<EntryView<'_, D, E>> {
        let (key, slot) = self.entries.get_key_value(key)?;
        Some(EntryView {
            key,
            endpoint: slot.endpoint,
            lifetime: slot.entry.lifetime(),
            phase: slot.entry.phase(),
            status: slot.entry.status(),
            data: slot.entry.data(),
            error: slot.entry.error(),
            in_flight: slot.entry.in_flight(),
            fulfilled_at: slot.entry.fulfilled_at(),
            subscribers: slot.subscribers,
            removal_deadline: slot.deadline.map(|(at, _)| at),
        })
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
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.key_of_lifetime(1), None);
    /// ```
    pub fn key_of_lifetime(&self, lifetime: u64) -> Option<&CacheKey> {
        self.entries.key_of(lifetime)
    }

    /// The live subscriptions holding `key`, ascending (a linear scan; for tests and tools).
    ///
    /// ```
    /// use livecache::core::{Cache, key::CacheKey};
    /// let cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.subscriptions_of(&CacheKey::verbatim("a(1)")).is_empty());
    /// ```
    pub fn subscriptions_of(&self, key: &CacheKey) -> Vec<SubscriptionId> {
        let Some(slot) = self.entries.get(key) else {
            return Vec::new();
        };
        let lifetime = slot.entry.lifetime();
        let mut subs: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, (k, l))| k == key && *l == lifetime)
            .map(|(s, _)| SubscriptionId(*s))
            .collect();
        subs.sort();
        subs
    }

    /// The earliest armed removal deadline: when to call [`Cache::handle_timeout`].
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.poll_timeout(), None);
    /// ```
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// Whether an effect is queued ([`Cache::poll_effect`] would return one).
    pub(crate) fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// The next queued effect.
    ///
    /// ```
    /// let mut cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.poll_effect().is_none());
    /// ```
    pub fn poll_effect(&mut self) -> Option<Effect<D>> {
        self.effects.pop_front()
    }

    /// The events recorded so far — the most recent ones: the trace is bounded, so that a
    /// long-running cache does not grow forever. It keeps at least the last
    /// [`Cache::set_trace_limit`] events ([`DEFAULT_TRACE_LIMIT`] by default) and at most twice
    /// that; older events are dropped in batches. The cache stores compact records; the events
    /// are built when asked for, O(events) ([`Cache::trace_len`] only counts them).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, key::CacheKey, trace::TraceKind};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.trace().is_empty());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// cache.upsert(5, ep, &CacheKey::verbatim("a(1)"), 7);
    /// let trace = cache.trace();
    /// assert_eq!(trace.len(), cache.trace_len());
    /// assert!(matches!(trace[0].kind, TraceKind::EntryAdded { .. }));
    /// assert!(trace.iter().all(|e| e.at_ms == 5 && e.key == "a(1)"));
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
    /// use livecache::core::{Cache, EndpointConfig, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.set_trace_limit(2);
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// for n in 0..10 {
    ///     cache.upsert(n, ep, &CacheKey::verbatim("a(1)"), n as u32);
    /// }
    /// assert!((2..=4).contains(&cache.trace().len()));
    /// assert_eq!(cache.trace().last().map(|e| e.at_ms), Some(9));
    /// ```
    pub fn set_trace_limit(&mut self, limit: usize) {
        self.trace.set_limit(limit);
    }

    /// Take the events recorded so far (built as [`Cache::trace`] does), leaving the trace empty
    /// and its storage released.
    ///
    /// ```
    /// let mut cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert!(cache.take_trace().is_empty());
    /// ```
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.trace.take()
    }
}

// ===== impl Cache: time =====

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// A timer tick: remove every entry whose deadline is `<= now`, in deadline order, each
    /// stamped at its deadline (R4, R5).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Keep, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("b", EndpointConfig { keep: Some(Keep::For(0)), has_lifecycle: false });
    /// let key = CacheKey::verbatim("b(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.unsubscribe(0, sub);
    /// assert!(cache.entry(&key).is_some());      // keep 0: never inside the unsubscribe
    /// cache.handle_timeout(0);
    /// assert!(cache.entry(&key).is_none());      // removed at the next tick
    /// ```
    pub fn handle_timeout(&mut self, now: u64) {
        self.expire(now, true);
        self.now = self.now.max(now);
    }

    /// Move the clock to `now` before an event: entries whose deadline is strictly before `now`
    /// expired while nobody told the core.
    fn advance(&mut self, now: u64) {
        if self.deadlines.first().is_some_and(|(at, _, _)| *at < now) {
            self.expire(now, false);
        }
        self.now = self.now.max(now);
    }

    fn expire(&mut self, now: u64, inclusive: bool) {
        while let Some((at, _, _)) = self.deadlines.first() {
            let due = *at < now || (inclusive && *at == now);
            if !due {
                break;
            }
            let Some((at, seq, key)) = self.deadlines.pop_first() else {
                break;
            };
            // Only the entry this deadline was armed for (a core user's panicking recipe can
            // take an entry away without disarming its deadline; a new entry of the key keeps
            // its own).
            match self.entries.get_mut(&key) {
                Some(slot) if slot.deadline == Some((at, seq)) => slot.deadline = None,
                _ => continue,
            }
            self.remove_entry(&key, RemoveCause::Expired, at.max(self.now));
        }
    }
}

// ===== impl Cache: subscriptions and requests =====

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Subscribe to `key` of `endpoint` (R1, R2, R3).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.subscribe(0, ep, &key, Refetch::Always); // joins the request in flight (R3)
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!((entry.status, entry.subscribers), (Status::Pending, 2));
    /// ```
    pub fn subscribe(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        refetch: Refetch,
    ) -> SubscriptionId {
        self.advance(now);
        let subscription = self.next_subscription;
        self.next_subscription += 1;
        let now = self.now;
        if let Some(slot) = self.entries.get_mut(key) {
            slot.subscribers += 1;
            let subscribers = slot.subscribers;
            let lifetime = slot.entry.lifetime();
            let cancelled = slot.deadline.take();
            self.add_subscription(now, key, subscription, lifetime, subscribers);
            if let Some((at, seq)) = cancelled {
                self.deadlines.remove(&(at, seq, key.clone()));
                self.record(now, key, TraceKind::RemovalCancelled);
            }
            self.maybe_request(key, refetch);
        } else {
            let lifetime = self.create(key, AddCause::Subscribe);
            self.add_subscription(now, key, subscription, lifetime, 1);
            self.start_lifecycle(key, endpoint, lifetime);
            self.first_request(key, endpoint, Entry::new(lifetime));
            if let Some(slot) = self.entries.get_mut(key) {
                slot.subscribers = 1;
            }
        }
        self.notify(key);
        SubscriptionId(subscription)
    }

    /// Register `subscription` to `lifetime` of `key` and record it (`subscribers` after it).
    fn add_subscription(
        &mut self,
        now: u64,
        key: &CacheKey,
        subscription: u64,
        lifetime: u64,
        subscribers: usize,
    ) {
        self.subscriptions
            .insert(subscription, (key.clone(), lifetime));
        self.record(
            now,
            key,
            TraceKind::Subscribed {
                subscription,
                subscribers,
            },
        );
    }

    /// Prefetch `key` without subscribing (R6): creates the entry with its removal scheduled, or
    /// refetches per `refetch`, never extending an existing entry's lifetime.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.prefetch(0, ep, &key, Refetch::IfMissing);
    /// assert_eq!(cache.entry(&key).unwrap().removal_deadline, Some(60_000));
    /// ```
    pub fn prefetch(&mut self, now: u64, endpoint: EndpointId, key: &CacheKey, refetch: Refetch) {
        self.advance(now);
        if self.entries.contains_key(key) {
            self.maybe_request(key, refetch);
        } else {
            let lifetime = self.create(key, AddCause::Prefetch);
            self.start_lifecycle(key, endpoint, lifetime);
            self.first_request(key, endpoint, Entry::new(lifetime));
            self.arm(key);
        }
        self.notify(key);
    }

    /// Drop a subscription. Returns false, doing nothing, for a subscription that is not live:
    /// already dropped, or of a lifetime that ended (R7a). The last one arms removal (R4).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let sub = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing);
    /// assert!(cache.unsubscribe(10, sub));
    /// assert!(!cache.unsubscribe(20, sub)); // twice: no effect, the deadline stays at 60 010
    /// assert_eq!(cache.poll_timeout(), Some(60_010));
    /// ```
    pub fn unsubscribe(&mut self, now: u64, subscription: SubscriptionId) -> bool {
        self.advance(now);
        let Some(key) = self.live_subscription(subscription) else {
            self.subscriptions.remove(&subscription.0);
            return false;
        };
        self.subscriptions.remove(&subscription.0);
        let Some(slot) = self.entries.get_mut(&key) else {
            return false;
        };
        slot.subscribers = slot.subscribers.saturating_sub(1);
        let subscribers = slot.subscribers;
        self.record(
            self.now,
            &key,
            TraceKind::Unsubscribed {
                subscription: subscription.0,
                subscribers,
            },
        );
        if subscribers == 0 {
            self.arm(&key);
        }
        self.notify(&key);
        true
    }

    /// Refetch through a subscription (R11): joins a request in flight (R3), else starts one.
    /// Returns false, doing nothing, for a subscription that is not live (R7a).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.fulfil(1, &key, 1, 5);
    /// assert!(cache.refetch(2, sub));
    /// assert_eq!(cache.entry(&key).unwrap().in_flight, Some(2));
    /// ```
    pub fn refetch(&mut self, now: u64, subscription: SubscriptionId) -> bool {
        self.advance(now);
        let Some(key) = self.live_subscription(subscription) else {
            return false;
        };
        if let Some(request) = self.entries.get(&key).and_then(|s| s.entry.in_flight()) {
            self.record(self.now, &key, TraceKind::RequestJoined { request });
        } else {
            self.start_request(&key);
        }
        self.notify(&key);
        true
    }

    /// A request fulfilled. Ignored (and traced) unless it is the key's request in flight
    /// (R8, R10).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.fulfil(1, &key, 99, 5);                 // stale id: ignored
    /// assert_eq!(cache.entry(&key).unwrap().status, Status::Pending);
    /// cache.fulfil(1, &key, 1, 5);
    /// assert_eq!(cache.entry(&key).unwrap().data, Some(&5));
    /// ```
    pub fn fulfil(&mut self, now: u64, key: &CacheKey, request: u64, data: D) {
        self.advance(now);
        if !self.is_current(key, request) {
            self.record(self.now, key, TraceKind::ResultIgnored { request });
            return;
        }
        self.receive(key, Some(request), data);
    }

    /// A request was rejected. Ignored (and traced) unless it is the key's request in flight
    /// (R9, R10). Data is kept; data-loaded stays pending.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.reject(1, &key, 1, "offline".to_string());
    /// assert_eq!(cache.entry(&key).unwrap().status, Status::Rejected);
    /// ```
    pub fn reject(&mut self, now: u64, key: &CacheKey, request: u64, error: E) {
        self.advance(now);
        if !self.is_current(key, request) {
            self.record(self.now, key, TraceKind::ResultIgnored { request });
            return;
        }
        let recording = self.config.recording != Recording::Off;
        let text = if recording {
            error.to_string()
        } else {
            String::new()
        };
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        slot.entry.reject(error);
        self.record(
            self.now,
            key,
            TraceKind::RequestRejected {
                request,
                error: text,
            },
        );
        self.rearm_if_unused(key);
        self.notify(key);
    }

    /// Upsert data (R20): creates the entry (lifecycle started, data-loaded resolved without
    /// meta) or replaces its data. A request in flight keeps running and its result still applies.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Phase, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 7);
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!((entry.phase, entry.data, entry.removal_deadline), (Phase::Loaded, Some(&7), Some(60_000)));
    /// ```
    pub fn upsert(&mut self, now: u64, endpoint: EndpointId, key: &CacheKey, data: D) {
        self.advance(now);
        if self.entries.contains_key(key) {
            self.receive(key, None, data);
            return;
        }
        let lifetime = self.create(key, AddCause::Upsert);
        self.start_lifecycle(key, endpoint, lifetime);
        let entry: Entry<Added, E> = Entry::new(lifetime);
        let loaded = entry.load(data, self.now);
        let first = self
            .wants_data_loaded(endpoint)
            .then(|| loaded.data().clone());
        self.insert(key, endpoint, AnyEntry::Loaded(loaded));
        self.record(self.now, key, TraceKind::Upserted { data_changed: true });
        self.data_loaded(key, lifetime, None, first);
        self.arm(key);
        self.notify(key);
    }

    /// Remove the entry for `key` now (R7). Returns whether there was one.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// assert!(cache.remove(1, &key));
    /// assert!(!cache.remove(2, &key));
    /// ```
    pub fn remove(&mut self, now: u64, key: &CacheKey) -> bool {
        self.advance(now);
        if !self.entries.contains_key(key) {
            return false;
        }
        self.remove_entry(key, RemoveCause::Removed, self.now);
        true
    }

    /// Remove every entry now, in ascending key order (R7). The cache stays usable; ids are
    /// never reused.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing);
    /// cache.reset(1);
    /// assert!(cache.is_empty());
    /// ```
    pub fn reset(&mut self, now: u64) {
        self.advance(now);
        let mut keys: Vec<CacheKey> = self.entries.keys().cloned().collect();
        keys.sort();
        for key in keys {
            self.remove_entry(&key, RemoveCause::Reset, self.now);
        }
    }

    /// A message stream starts applying messages to `lifetime`'s entry (R21): a Loaded entry
    /// becomes Streaming. `buffered` messages that arrived before the first data follow.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Phase, UpdateError, key::CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![]);
    /// cache.stream_attached(1, 1, 0)?;
    /// assert_eq!(cache.entry(&key).map(|e| e.phase), Some(Phase::Streaming));
    /// assert_eq!(cache.stream_attached(1, 9, 0), Err(UpdateError::NotLive));
    /// # Ok::<(), UpdateError>(())
    /// ```
    pub fn stream_attached(
        &mut self,
        now: u64,
        lifetime: u64,
        buffered: usize,
    ) -> Result<(), UpdateError> {
        self.advance(now);
        let Some(key) = self.entries.key_of(lifetime).cloned() else {
            return Err(UpdateError::NotLive);
        };
        let attached = self.entries.transition(&key, |mut slot| {
            let attached = match slot.entry {
                AnyEntry::Loaded(e) => {
                    slot.entry = AnyEntry::Streaming(e.start_streaming());
                    Ok(())
                }
                streaming @ AnyEntry::Streaming(_) => {
                    slot.entry = streaming;
                    Ok(())
                }
                loading @ AnyEntry::Loading(_) => {
                    slot.entry = loading;
                    Err(UpdateError::NotLoaded)
                }
            };
            (slot, attached)
        });
        attached.unwrap_or(Err(UpdateError::NotLive))?;
        self.record(
            self.now,
            &key,
            TraceKind::StreamAttached { lifetime, buffered },
        );
        self.notify(&key);
        Ok(())
    }

    /// A stream item was skipped (a bad frame): recorded with the reason (R22).
    ///
    /// ```
    /// use livecache::core::{Cache, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.stream_skipped(0, &CacheKey::verbatim("a(1)"), 1, "not JSON".into());
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn stream_skipped(&mut self, now: u64, key: &CacheKey, lifetime: u64, reason: String) {
        self.advance(now);
        self.record(self.now, key, TraceKind::StreamSkipped { lifetime, reason });
    }

    /// A stream attachment ended (R21): recorded with the reason and its counts, whether or not
    /// the entry lives.
    ///
    /// ```
    /// use livecache::core::{Cache, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.stream_ended(0, &CacheKey::verbatim("a(1)"), 1, "server closed".into(), 3, 1);
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn stream_ended(
        &mut self,
        now: u64,
        key: &CacheKey,
        lifetime: u64,
        reason: String,
        applied: u64,
        skipped: u64,
    ) {
        self.advance(now);
        self.record(
            self.now,
            key,
            TraceKind::StreamEnded {
                lifetime,
                reason,
                applied,
                skipped,
            },
        );
    }

    /// A lifecycle handler ended (R16): recorded under its key, whether or not the entry lives.
    ///
    /// ```
    /// use livecache::core::{Cache, key::CacheKey, trace::HandlerOutcome};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.lifecycle_ended(0, &CacheKey::verbatim("a(1)"), 1, HandlerOutcome::Finished);
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn lifecycle_ended(
        &mut self,
        now: u64,
        key: &CacheKey,
        lifetime: u64,
        outcome: HandlerOutcome,
    ) {
        self.advance(now);
        self.record(
            self.now,
            key,
            TraceKind::LifecycleEnded { lifetime, outcome },
        );
    }
}

// ===== impl Cache: updates =====

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// `update_cached_data` through the lifecycle handle of `lifetime` (R15). The recipe gets a
    /// [`Draft`]; if it takes mutable access the update is applied and subscribers notified once.
    /// Patches are computed only when `want_patches` or the trace records them, so by default an
    /// update costs what the recipe costs.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Phase, key::CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![1]);
    /// let lifetime = cache.entry(&key).unwrap().lifetime;
    /// let patches = cache.update_cached(1, lifetime, true, |d| d.push(2)).unwrap().unwrap();
    /// assert_eq!(patches.patches.0.len(), 1);
    /// assert_eq!(cache.entry(&key).unwrap().phase, Phase::Streaming);
    /// ```
    pub fn update_cached(
        &mut self,
        now: u64,
        lifetime: u64,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateError> {
        self.advance(now);
        // Looked up after `advance`, which may have removed it.
        let place = self
            .entries
            .place_of(lifetime)
            .ok_or(UpdateError::NotLive)?;
        self.update_placed(place, want_patches, recipe)
    }

    /// Where `lifetime`'s entry sits, if it is live, for [`Cache::update_cached_at`].
    pub(crate) fn lifetime_place(&self, lifetime: u64) -> Option<LifetimePlace> {
        self.entries.place_of(lifetime)
    }

    /// [`Cache::update_cached`] of the lifetime at `place`, found without a lookup.
    pub(crate) fn update_cached_at(
        &mut self,
        now: u64,
        place: LifetimePlace,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateError> {
        self.advance(now);
        self.update_placed(place, want_patches, recipe)
    }

    /// [`Cache::update_cached_at`] without patches, for a driver that wakes the lifetime's
    /// subscribers itself: when the update takes the streaming path, the notification the core
    /// decides on is returned (`true`: notify) instead of queued as [`Effect::Notify`]; on any
    /// other path it is queued as usual and `false` is returned.
    pub(crate) fn update_cached_returning_notify(
        &mut self,
        now: u64,
        place: LifetimePlace,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<bool, UpdateError> {
        self.advance(now);
        let recipe = match self.update_streaming(place, false, recipe, false) {
            Ok(notify) => return Ok(notify),
            Err(recipe) => recipe,
        };
        self.update_applied(place, false, recipe).map(|_| false)
    }

    /// An update of the lifetime at `place`, time already advanced.
    fn update_placed(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateError> {
        let recipe = match self.update_streaming(place, want_patches, recipe, true) {
            Ok(_) => return Ok(None),
            Err(recipe) => recipe,
        };
        let set = self.update_applied(place, want_patches, recipe)?;
        Ok(want_patches.then(|| set.unwrap_or_default()))
    }

    /// The streaming hot path: a Streaming entry updated in place, without patches (neither
    /// wanted nor recorded); the same steps, in the same order, as `apply_update` takes for it.
    /// Returns whether subscribers are to be notified (queued as an effect if `queue`, else
    /// left to the caller), or gives the recipe back for [`Cache::update_applied`] when this
    /// path does not apply.
    fn update_streaming<F: FnOnce(&mut Draft<'_, D>)>(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: F,
        queue: bool,
    ) -> Result<bool, F> {
        if want_patches || self.config.recording == Recording::EventsWithPatches {
            return Err(recipe);
        }
        let Some((key, slot)) = self.entries.at_place_mut(place) else {
            return Err(recipe);
        };
        let AnyEntry::Streaming(entry) = &mut slot.entry else {
            return Err(recipe);
        };
        if !entry.update(recipe) {
            return Ok(false);
        }
        slot.version += 1;
        let notify = slot.mark_notified();
        if self.config.recording != Recording::Off {
            self.trace.record_update_for(
                self.now,
                key,
                &mut slot.trace_key,
                UpdateSource::Lifecycle,
            );
        }
        if notify && queue {
            // The effects, not `self`: `key` borrows the entries.
            queue_notify(&mut self.effects, key);
        }
        Ok(notify && !queue)
    }

    /// Any other update of the lifetime at `place`, through the typestate transitions.
    fn update_applied(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateError> {
        let Some(key) = self.entries.at_place(place).map(|(key, _)| key.clone()) else {
            return Err(UpdateError::NotLive);
        };
        self.apply_update(&key, UpdateSource::Lifecycle, want_patches, recipe)
    }

    /// `update_query_data` (R18): on an absent entry or one without data the recipe is not
    /// called and the patch set is empty; otherwise as [`Cache::update_cached`], and the patch
    /// set (for undo) is always computed.
    ///
    /// ```
    /// use livecache::core::{Cache, key::CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let set = cache.update_query_data(0, &CacheKey::verbatim("a(1)"), |_| unreachable!()).unwrap();
    /// assert!(set.is_empty());
    /// ```
    pub fn update_query_data(
        &mut self,
        now: u64,
        key: &CacheKey,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<PatchSet, UpdateError> {
        self.advance(now);
        match self.apply_update(key, UpdateSource::UpdateQueryData, true, recipe) {
            Ok(set) => Ok(set.unwrap_or_default()),
            Err(UpdateError::NotLive | UpdateError::NotLoaded) => Ok(PatchSet::default()),
            Err(e) => Err(e),
        }
    }

    /// `patch_query_data` (R19): apply RFC 6902 patches atomically. A patch that does not apply,
    /// or whose result is not a value of `D`, is an error and leaves the data unchanged.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, PatchError, key::CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default());
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![1]);
    /// let bad: json_patch::Patch = serde_json::from_str(r#"[{"op":"remove","path":"/5"}]"#).unwrap();
    /// assert!(matches!(cache.patch_query_data(1, &key, &bad), Err(PatchError::Apply(_))));
    /// let good: json_patch::Patch = serde_json::from_str(r#"[{"op":"add","path":"/-","value":2}]"#).unwrap();
    /// cache.patch_query_data(1, &key, &good).unwrap();
    /// assert_eq!(cache.entry(&key).unwrap().data, Some(&vec![1, 2]));
    /// ```
    pub fn patch_query_data(
        &mut self,
        now: u64,
        key: &CacheKey,
        patch: &Patch,
    ) -> Result<(), PatchError> {
        self.advance(now);
        let Some(slot) = self.entries.get(key) else {
            return Err(PatchError::NoEntry);
        };
        let Some(old) = slot.entry.data() else {
            return Err(PatchError::NoData);
        };
        let before = old
            .to_json()
            .map_err(|e| PatchError::Schema(e.to_string()))?;
        // Patch a scratch copy: a failed patch leaves the data untouched without json-patch's
        // own rollback, which panics on some inputs (json-patch 5.0, found by the fuzzer).
        let mut after = before.clone();
        json_patch::patch_unsafe(&mut after, &patch.0)
            .map_err(|e| PatchError::Apply(e.to_string()))?;
        let new: D = old
            .same_type_from_json(after)
            .map_err(|e| PatchError::Schema(e.to_string()))?;
        if &new == old {
            return Ok(());
        }
        // The change as the data's own JSON sees it: the type may normalise the patched JSON
        // (a removed optional field is `null` again), so the patch as given may not describe it.
        let patches = if self.config.recording == Recording::EventsWithPatches {
            new.to_json()
                .ok()
                .map(|after| PatchSet::between(&before, &after))
        } else {
            None
        };
        self.overwrite_data(key, new);
        self.record(
            self.now,
            key,
            TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches,
            },
        );
        self.notify(key);
        Ok(())
    }

    /// Run a recipe on the entry's data. `Ok(None)` when no patches were computed.
    fn apply_update(
        &mut self,
        key: &CacheKey,
        source: UpdateSource,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateError> {
        let Some(slot) = self.entries.get(key) else {
            return Err(UpdateError::NotLive);
        };
        if slot.entry.data().is_none() {
            return Err(UpdateError::NotLoaded);
        }
        let record_patches = self.config.recording == Recording::EventsWithPatches;
        let need_patches = want_patches || record_patches;
        let mut patch_result: Result<Option<PatchSet>, UpdateError> = Ok(None);
        let mut touched = false;
        let wrapped = |draft: &mut Draft<'_, D>| {
            if !need_patches {
                recipe(draft);
                touched = draft.touched();
                return;
            }
            let backup: D = (**draft).clone();
            let before = match backup.to_json() {
                Ok(v) => v,
                Err(e) => {
                    patch_result = Err(UpdateError::Serialize(e.to_string()));
                    return;
                }
            };
            recipe(draft);
            touched = draft.touched();
            if !touched {
                return;
            }
            match (**draft).to_json() {
                Ok(after) => patch_result = Ok(Some(PatchSet::between(&before, &after))),
                Err(e) => {
                    **draft = backup;
                    touched = false;
                    patch_result = Err(UpdateError::Serialize(e.to_string()));
                }
            }
        };
        self.update_in_place(key, wrapped);
        let patches = patch_result?;
        if touched {
            let traced = if record_patches {
                patches.clone()
            } else {
                None
            };
            self.record(
                self.now,
                key,
                TraceKind::Updated {
                    source,
                    patches: traced,
                },
            );
            self.notify(key);
        }
        Ok(patches)
    }

    /// Run `recipe` on a Loaded or Streaming entry, moving Loaded to Streaming if it touched.
    /// A Streaming entry is updated in place (the streaming hot path: one map lookup).
    fn update_in_place(&mut self, key: &CacheKey, recipe: impl FnOnce(&mut Draft<'_, D>)) {
        if let Some(slot) = self.entries.get_mut(key)
            && let AnyEntry::Streaming(entry) = &mut slot.entry
        {
            if entry.update(recipe) {
                slot.version += 1;
            }
            return;
        }
        self.entries.transition(key, |mut slot| {
            slot.entry = match slot.entry {
                AnyEntry::Loaded(e) => match e.update(recipe) {
                    Updated::Unchanged(e) => AnyEntry::Loaded(e),
                    Updated::Changed(e) => {
                        slot.version += 1;
                        AnyEntry::Streaming(e)
                    }
                },
                other => other,
            };
            (slot, ())
        });
    }

    /// Replace the data of a Loaded or Streaming entry as an update; it is then Streaming.
    fn overwrite_data(&mut self, key: &CacheKey, data: D) {
        self.entries.transition(key, |mut slot| {
            slot.entry = match slot.entry {
                AnyEntry::Loaded(e) => AnyEntry::Streaming(e.overwrite(data)),
                AnyEntry::Streaming(mut e) => {
                    e.overwrite(data);
                    AnyEntry::Streaming(e)
                }
                loading @ AnyEntry::Loading(_) => loading,
            };
            slot.version += 1;
            (slot, ())
        });
    }
}

/// [`Cache::queue_notify`] on the queue alone, for callers holding a borrow of the entries.
fn queue_notify<D>(effects: &mut VecDeque<Effect<D>>, key: &CacheKey) {
    if let Some(Effect::Notify { key: last }) = effects.back()
        && last == key
    {
        return;
    }
    effects.push_back(Effect::Notify { key: key.clone() });
}

// ===== impl Cache: helpers =====

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    #[inline(always)]
    fn record(&mut self, at_ms: u64, key: &CacheKey, kind: TraceKind) {
        if self.config.recording != Recording::Off {
            self.trace.record(at_ms, key, kind);
        }
    }

    /// Queue a notification for `key` if what its subscribers can see changed since the last
    /// one (always, once the entry is gone).
    fn notify(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.get_mut(key)
            && !slot.mark_notified()
        {
            return;
        }
        self.queue_notify(key);
    }

    /// Queue a notification for `key`, unless the last queued effect is already one for it.
    fn queue_notify(&mut self, key: &CacheKey) {
        queue_notify(&mut self.effects, key);
    }

    fn endpoint_config(&self, endpoint: EndpointId) -> EndpointConfig {
        self.endpoints
            .get(endpoint.0)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    fn wants_data_loaded(&self, endpoint: EndpointId) -> bool {
        self.endpoint_config(endpoint).has_lifecycle
    }

    fn keep(&self, endpoint: EndpointId) -> Keep {
        self.endpoint_config(endpoint).keep_or(self.config.keep)
    }

    /// The key of a subscription that belongs to a live lifetime.
    fn live_subscription(&self, subscription: SubscriptionId) -> Option<CacheKey> {
        let (key, lifetime) = self.subscriptions.get(&subscription.0)?;
        let slot = self.entries.get(key)?;
        (slot.entry.lifetime() == *lifetime).then(|| key.clone())
    }

    fn is_current(&self, key: &CacheKey, request: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|slot| slot.entry.in_flight() == Some(request))
    }

    /// Take a lifetime id and record the new entry's creation (the caller inserts the entry).
    fn create(&mut self, key: &CacheKey, cause: AddCause) -> u64 {
        let lifetime = self.next_lifetime;
        self.next_lifetime += 1;
        self.record(self.now, key, TraceKind::EntryAdded { lifetime, cause });
        lifetime
    }

    /// Put a new entry (no subscribers, no deadline) in the map.
    fn insert(&mut self, key: &CacheKey, endpoint: EndpointId, entry: AnyEntry<D, E>) {
        let slot = Slot {
            endpoint,
            subscribers: 0,
            deadline: None,
            version: 0,
            notified: None,
            trace_key: TraceKeyRef::default(),
            entry,
        };
        self.entries.insert(key.clone(), slot);
    }

    fn start_lifecycle(&mut self, key: &CacheKey, endpoint: EndpointId, lifetime: u64) {
        if self.wants_data_loaded(endpoint) {
            self.record(self.now, key, TraceKind::LifecycleStarted { lifetime });
            self.effects.push_back(Effect::StartLifecycle {
                key: key.clone(),
                lifetime,
            });
        }
    }

    fn next_request(&mut self) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        request
    }

    /// Added → Loading.
    fn first_request(&mut self, key: &CacheKey, endpoint: EndpointId, entry: Entry<Added, E>) {
        let request = self.next_request();
        let loading = entry.start_request(request);
        self.insert(key, endpoint, AnyEntry::Loading(loading));
        self.record(self.now, key, TraceKind::RequestStarted { request });
        self.effects.push_back(Effect::StartRequest {
            key: key.clone(),
            request,
        });
    }

    /// Another request on an existing entry.
    fn start_request(&mut self, key: &CacheKey) {
        let request = self.next_request();
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        slot.entry.begin_request(request);
        self.record(self.now, key, TraceKind::RequestStarted { request });
        self.effects.push_back(Effect::StartRequest {
            key: key.clone(),
            request,
        });
    }

    fn maybe_request(&mut self, key: &CacheKey, refetch: Refetch) {
        let Some(slot) = self.entries.get(key) else {
            return;
        };
        let wants = refetch.wants(slot.entry.fulfilled_at(), self.now);
        if let Some(request) = slot.entry.in_flight() {
            if wants {
                self.record(self.now, key, TraceKind::RequestJoined { request });
            }
        } else if slot.entry.data().is_none() || wants {
            self.start_request(key);
        }
    }

    /// Data from a request (`Some(request)`) or an upsert (`None`) for a live entry.
    fn receive(&mut self, key: &CacheKey, request: Option<u64>, data: D) {
        let now = self.now;
        let Some((endpoint, lifetime, data_changed, first)) =
            self.entries.transition(key, |mut slot| {
                if request.is_some() {
                    slot.entry.settle();
                }
                let lifetime = slot.entry.lifetime();
                let (entry, data_changed, first) = slot.entry.receive(data, now);
                slot.entry = entry;
                if data_changed {
                    slot.version += 1;
                }
                let endpoint = slot.endpoint;
                (slot, (endpoint, lifetime, data_changed, first))
            })
        else {
            return;
        };
        let first_data = (first && self.wants_data_loaded(endpoint))
            .then(|| {
                self.entries
                    .get(key)
                    .and_then(|slot| slot.entry.data().cloned())
            })
            .flatten();
        let kind = match request {
            Some(request) => TraceKind::RequestFulfilled {
                request,
                data_changed,
            },
            None => TraceKind::Upserted { data_changed },
        };
        self.record(self.now, key, kind);
        if first {
            self.data_loaded(key, lifetime, request, first_data);
        }
        self.rearm_if_unused(key);
        self.notify(key);
    }

    fn data_loaded(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        request: Option<u64>,
        data: Option<D>,
    ) {
        self.record(self.now, key, TraceKind::DataLoaded { lifetime, request });
        if let Some(data) = data {
            self.effects.push_back(Effect::ResolveDataLoaded {
                lifetime,
                request,
                data,
            });
        }
    }

    /// Arm the removal deadline of a zero-subscriber entry (finite keep time only).
    fn arm(&mut self, key: &CacheKey) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let endpoint = slot.endpoint;
        let old = slot.deadline.take();
        if let Some((at, seq)) = old {
            self.deadlines.remove(&(at, seq, key.clone()));
        }
        let Some(keep) = self.keep(endpoint).as_millis() else {
            return;
        };
        let at = self.now.saturating_add(keep);
        let seq = self.next_arming;
        self.next_arming += 1;
        if let Some(slot) = self.entries.get_mut(key) {
            slot.deadline = Some((at, seq));
        }
        self.deadlines.insert((at, seq, key.clone()));
        self.record(
            self.now,
            key,
            TraceKind::RemovalScheduled { deadline_ms: at },
        );
    }

    fn rearm_if_unused(&mut self, key: &CacheKey) {
        if self
            .entries
            .get(key)
            .is_some_and(|slot| slot.subscribers == 0)
        {
            self.arm(key);
        }
    }

    /// Remove a live entry: abort its request, drop its deadline, record and report the end of
    /// its lifetime (R5, R7, R13, R14).
    fn remove_entry(&mut self, key: &CacheKey, cause: RemoveCause, at: u64) {
        let Some(slot) = self.entries.remove(key) else {
            return;
        };
        if let Some((deadline, seq)) = slot.deadline {
            self.deadlines.remove(&(deadline, seq, key.clone()));
        }
        let lifetime = slot.entry.lifetime();
        if let Some(request) = slot.entry.in_flight() {
            self.record(at, key, TraceKind::RequestAborted { request });
            self.effects.push_back(Effect::AbortRequest {
                key: key.clone(),
                request,
            });
        }
        let removed = slot.entry.remove();
        let loaded = removed.loaded();
        self.record(
            at,
            key,
            TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            },
        );
        self.effects.push_back(Effect::EntryRemoved {
            key: key.clone(),
            lifetime,
            loaded,
        });
        self.notify(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Keep;
    use proptest::prelude::*;

    impl<D: PartialEq, E> Entries<D, E> {
        /// The store's own invariants: both maps point at live places holding the same key and
        /// lifetime, every other place is listed free once, and nothing is left over.
        fn check(&self) -> Result<(), String> {
            if self.by_key.len() != self.by_lifetime.len() {
                return Err(format!(
                    "{} keys but {} lifetimes",
                    self.by_key.len(),
                    self.by_lifetime.len()
                ));
            }
            for (key, &position) in &self.by_key {
                let Some((k, slot)) = self.slot(position) else {
                    return Err(format!("{key} points at empty place {position}"));
                };
                if k != key {
                    return Err(format!("{key} points at {k}'s place"));
                }
                if self.by_lifetime.get(&slot.entry.lifetime()) != Some(&position) {
                    return Err(format!("{key}'s lifetime does not point at its place"));
                }
            }
            if self.by_key.is_empty() && !(self.slots.is_empty() && self.free.is_empty()) {
                return Err("an empty store keeps places".to_owned());
            }
            let live = self.slots.iter().filter(|s| s.is_some()).count();
            let mut free = self.free.clone();
            free.sort_unstable();
            free.dedup();
            let empty: Vec<usize> = (0..self.slots.len())
                .filter(|&p| self.slots[p].is_none())
                .collect();
            if live != self.by_key.len() || free != empty || free.len() != self.free.len() {
                return Err(format!(
                    "{live} live places for {} keys; free {:?}, empty {empty:?}",
                    self.by_key.len(),
                    self.free
                ));
            }
            Ok(())
        }
    }

    /// A core user's `update_cached` whose recipe panics (the runtime catches its own); whether
    /// the panic came out.
    fn update_panics(cache: &mut Cache<Vec<u8>>, now: u64, lifetime: u64) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.update_cached(now, lifetime, false, |_| panic!("recipe"))
        }))
        .is_err()
    }

    /// A key given an entry of a new lifetime (the core removes the old one first; the store
    /// still copes): the old lifetime no longer finds anything, the new one finds the entry in
    /// the same place.
    #[test]
    fn a_new_lifetime_under_a_key_replaces_the_old_one() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache.add_endpoint("a", EndpointConfig::default());
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache.insert(&a, ep, AnyEntry::Loaded(Entry::new(1).load(vec![1], 0)));
        cache.insert(&b, ep, AnyEntry::Loaded(Entry::new(2).load(vec![2], 0)));
        cache.insert(&a, ep, AnyEntry::Loaded(Entry::new(3).load(vec![3], 0)));
        assert_eq!(cache.entries.check(), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.key_of_lifetime(1), None);
        assert_eq!(cache.key_of_lifetime(3), Some(&a));
        assert_eq!(cache.entry(&a).map(|e| e.lifetime), Some(3));
        assert_eq!(cache.entries.slots.len(), 2, "the key's place was reused");
    }

    /// A core user's recipe that panics during a transition (here Loaded → Streaming) takes
    /// the entry with it, and the store stays consistent for the other entries.
    #[test]
    fn a_panicking_transition_leaves_the_store_consistent() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache.add_endpoint("a", EndpointConfig::default());
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache.upsert(0, ep, &a, vec![1]);
        cache.upsert(0, ep, &b, vec![2]);
        let lifetime = cache.entry(&a).map(|e| e.lifetime).unwrap_or_default();
        assert!(update_panics(&mut cache, 1, lifetime));
        assert_eq!(cache.entries.check(), Ok(()));
        assert!(cache.entry(&a).is_none());
        assert_eq!(cache.entry(&b).and_then(|e| e.data.cloned()), Some(vec![2]));
        cache.upsert(2, ep, &a, vec![3]);
        assert_eq!(cache.entries.check(), Ok(()));
        assert_eq!(cache.len(), 2);
        // The lost entry's removal deadline (60,000) does not remove the new one (60,002).
        cache.handle_timeout(60_000);
        assert_eq!(cache.entry(&a).and_then(|e| e.data.cloned()), Some(vec![3]));
        cache.handle_timeout(60_002);
        assert!(cache.is_empty());
        assert_eq!(cache.entries.check(), Ok(()));
    }

    /// A panicking transition of the only entry empties the store completely.
    #[test]
    fn a_panicking_transition_of_the_last_entry_empties_the_store() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache.add_endpoint("a", EndpointConfig::default());
        let a = CacheKey::verbatim("a(1)");
        cache.upsert(0, ep, &a, vec![1]);
        let lifetime = cache.entry(&a).map(|e| e.lifetime).unwrap_or_default();
        assert!(update_panics(&mut cache, 1, lifetime));
        assert!(cache.is_empty());
        assert_eq!(cache.entries.check(), Ok(()));
    }

    /// A place remembered for a lifetime whose entry was removed, and then reused by another
    /// lifetime, finds nothing: the update is refused as for a lifetime that is not live, and
    /// the entry now at that place is untouched.
    #[test]
    fn a_remembered_place_of_a_removed_lifetime_finds_nothing() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache.add_endpoint("a", EndpointConfig::default());
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache.upsert(0, ep, &a, vec![1]);
        let lifetime = cache.entry(&a).map(|e| e.lifetime).unwrap_or_default();
        let Some(place) = cache.lifetime_place(lifetime) else {
            panic!("a live lifetime has a place");
        };
        assert_eq!(
            cache.update_cached_at(1, place, false, |d| d.push(2)),
            Ok(None)
        );
        assert!(cache.remove(2, &a));
        cache.upsert(3, ep, &b, vec![7]);
        let b_lifetime = cache.entry(&b).map_or(0, |e| e.lifetime);
        let b_place = cache.lifetime_place(b_lifetime).map(|p| p.position);
        assert_eq!(b_place, Some(place.position), "the place was reused");
        for _ in 0..2 {
            // Loaded, then Streaming: both the general path and the hot path refuse it.
            assert_eq!(
                cache.update_cached_at(4, place, false, |d| d.push(3)),
                Err(UpdateError::NotLive)
            );
            assert_eq!(
                cache.update_cached(4, b_lifetime, false, |d| d.push(8)),
                Ok(None)
            );
        }
        assert_eq!(cache.entry(&b).map(|e| e.phase), Some(Phase::Streaming));
        assert_eq!(
            cache.update_cached_at(4, place, false, |d| d.push(3)),
            Err(UpdateError::NotLive)
        );
        assert_eq!(
            cache.update_cached_returning_notify(4, place, |d| d.push(3)),
            Err(UpdateError::NotLive)
        );
        assert_eq!(
            cache.update_cached_at(4, LifetimePlace::gone(lifetime), false, |d| d.push(3)),
            Err(UpdateError::NotLive)
        );
        assert_eq!(
            cache.entry(&b).and_then(|e| e.data.cloned()),
            Some(vec![7, 8, 8])
        );
    }

    /// One op of [`an_update_at_a_remembered_place_is_an_update_of_its_lifetime`] other than the
    /// update, then every request answered; a new subscription's id.
    fn step(
        cache: &mut Cache<Vec<u8>>,
        now: u64,
        op: u8,
        key: &CacheKey,
        last_sub: Option<SubscriptionId>,
    ) -> Option<SubscriptionId> {
        let mut new_sub = None;
        match op {
            0 | 1 => new_sub = Some(cache.subscribe(now, EndpointId(0), key, Refetch::IfMissing)),
            2 => {
                if let Some(sub) = last_sub {
                    cache.unsubscribe(now, sub);
                }
            }
            3 => {
                cache.remove(now, key);
            }
            4 => cache.handle_timeout(now),
            5 => {
                if let Some(lifetime) = cache.entry(key).map(|e| e.lifetime) {
                    let _ = cache.stream_attached(now, lifetime, 0);
                }
            }
            _ => {}
        }
        while let Some(effect) = cache.poll_effect() {
            if let Effect::StartRequest { key, request } = effect {
                cache.fulfil(now, &key, request, vec![0]);
            }
        }
        new_sub
    }

    proptest! {
        /// An update through a place remembered when its lifetime was first seen (what a
        /// lifecycle handle holds) does exactly what an update naming the lifetime does, whether
        /// the lifetime is still live or its place was freed or reused: the same result, the
        /// same entries and the same trace, op after op.
        #[test]
        fn an_update_at_a_remembered_place_is_an_update_of_its_lifetime(
            ops in proptest::collection::vec((0u8..8, 0usize..3, 0usize..8), 0..100)
        ) {
            let keep_0 = EndpointConfig { keep: Some(Keep::For(0)), has_lifecycle: true };
            let mut by_lifetime: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            let mut by_place: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            by_lifetime.add_endpoint("a", keep_0);
            by_place.add_endpoint("a", keep_0);
            let keys: Vec<CacheKey> = (0..3).map(|k| CacheKey::verbatim(format!("a({k})"))).collect();
            let mut subs: Vec<Vec<SubscriptionId>> = vec![Vec::new(); 3];
            // Every lifetime seen, with its place when first seen.
            let mut seen: Vec<(u64, LifetimePlace)> = Vec::new();
            let mut now = 0;
            for (op, k, l) in ops {
                now += 1;
                let last = if op == 2 { subs[k].pop() } else { None };
                let a = step(&mut by_lifetime, now, op, &keys[k], last);
                let b = step(&mut by_place, now, op, &keys[k], last);
                prop_assert_eq!(a, b);
                subs[k].extend(b);
                if op >= 6 && !seen.is_empty() {
                    let (lifetime, place) = seen[l % seen.len()];
                    let a = by_lifetime.update_cached(now, lifetime, false, |d| d.push(1));
                    let b = if op == 6 {
                        by_place.update_cached_at(now, place, false, |d| d.push(1))
                    } else {
                        by_place
                            .update_cached_returning_notify(now, place, |d| d.push(1))
                            .map(|_| None)
                    };
                    prop_assert_eq!(a, b, "update of lifetime {}", lifetime);
                }
                for key in &keys {
                    let lifetime = by_place.entry(key).map(|e| e.lifetime);
                    if let Some(lifetime) = lifetime
                        && !seen.iter().any(|(l, _)| *l == lifetime)
                        && let Some(place) = by_place.lifetime_place(lifetime)
                    {
                        seen.push((lifetime, place));
                    }
                }
                let entries = |c: &Cache<Vec<u8>>| -> Vec<_> {
                    keys.iter()
                        .map(|k| c.entry(k).map(|e| (e.lifetime, e.phase, e.data.cloned())))
                        .collect()
                };
                prop_assert_eq!(entries(&by_lifetime), entries(&by_place));
                prop_assert_eq!(by_lifetime.trace(), by_place.trace());
            }
        }
    }

    proptest! {
        /// The entry store stays consistent through any mix of subscribing, loading, streaming,
        /// unsubscribing, removal at the deadline, explicit removal, upserts and resets over a
        /// few keys (places are reused, and the store starts again from the front when empty),
        /// and every entry's deadline is armed. A keep of 0–3 ms on a 1-ms step leaves deadlines
        /// pending across operations.
        #[test]
        fn entry_store_stays_consistent(
            ops in proptest::collection::vec((0u8..11, 0usize..3), 0..120),
            keep in prop_oneof![Just(0u64), 1u64..4],
        ) {
            let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            let keep = EndpointConfig { keep: Some(Keep::For(keep)), has_lifecycle: true };
            let ep = cache.add_endpoint("a", keep);
            let keys: Vec<CacheKey> = (0..3).map(|k| CacheKey::verbatim(format!("a({k})"))).collect();
            let mut subs: Vec<Vec<SubscriptionId>> = vec![Vec::new(); 3];
            let append: Patch = serde_json::from_value(serde_json::json!([
                {"op": "add", "path": "/-", "value": 4}
            ]))
            .unwrap_or_else(|_| Patch(Vec::new()));
            let mut now = 0;
            for (op, k) in ops {
                now += 1;
                let key = &keys[k];
                match op {
                    0 | 1 => subs[k].push(cache.subscribe(now, ep, key, Refetch::IfMissing)),
                    2 => {
                        if let Some(sub) = subs[k].pop() {
                            cache.unsubscribe(now, sub);
                        }
                    }
                    3 => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            let _ = cache.update_cached(now, lifetime, false, |d| d.push(1));
                        }
                    }
                    4 => cache.upsert(now, ep, key, vec![2]),
                    5 => {
                        cache.remove(now, key);
                    }
                    6 => cache.handle_timeout(now),
                    7 => {
                        if k == 0 {
                            cache.reset(now);
                        }
                    }
                    8 => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            let _ = cache.stream_attached(now, lifetime, 0);
                        }
                    }
                    9 => {
                        let _ = cache.patch_query_data(now, key, &append);
                    }
                    _ => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            update_panics(&mut cache, now, lifetime);
                        }
                    }
                }
                // Answer every request at once, so entries load.
                while let Some(effect) = cache.poll_effect() {
                    if let Effect::StartRequest { key, request } = effect {
                        cache.fulfil(now, &key, request, vec![0]);
                    }
                }
                if let Err(broken) = cache.entries.check() {
                    prop_assert!(false, "after op {op} on key {k}: {broken}");
                }
                // The set of deadlines may also hold the stale deadline of an entry a panicking
                // recipe took away (expiring skips it).
                for key in &keys {
                    if let Some((at, seq)) = cache.entries.get(key).and_then(|slot| slot.deadline) {
                        let armed = (at, seq, key.clone());
                        prop_assert!(cache.deadlines.contains(&armed), "after op {op} on key {k}");
                    }
                }
            }
        }
    }
}
