//! What the core asks its driver to do ([`Effect`]), and the errors its updates return.

use std::collections::VecDeque;
use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;

/// Something the driver of the core must do. Drained with [`Cache::poll_effect`], in order.
///
/// ```
/// # use livecache::core::RequestId;
/// use livecache::core::{Cache, Effect, EndpointConfig, Refetch, CacheKey};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// let key = CacheKey::verbatim("a(1)");
/// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
/// assert_eq!(cache.poll_effect(), Some(Effect::StartRequest { key: key.clone(), request: RequestId(1) }));
/// assert_eq!(cache.poll_effect(), Some(Effect::Notify { key }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Effect<D> {
    /// Start the endpoint's `on_cache_entry_added` handler for a new lifetime (R1, R12).
    StartLifecycle {
        /// The key.
        key: CacheKey,
        /// The new lifetime.
        lifetime: LifetimeId,
    },
    /// Run the endpoint's query function and report back with `fulfil` or `reject`.
    StartRequest {
        /// The key.
        key: CacheKey,
        /// The request id to report the result under.
        request: RequestId,
    },
    /// Drop the running request: its entry is being removed (R5, R7).
    AbortRequest {
        /// The key.
        key: CacheKey,
        /// The request.
        request: RequestId,
    },
    /// Resolve the lifetime's data-loaded with this data (R8, R13, R20). Only for endpoints with
    /// a lifecycle (a handler, or a source feeding the entry).
    ResolveDataLoaded {
        /// The lifetime.
        lifetime: LifetimeId,
        /// The request that brought the data (`None`: an upsert, so no meta).
        request: Option<RequestId>,
        /// The first data.
        data: D,
    },
    /// The lifetime ended: resolve `entry_removed`; if `loaded` is false, data-loaded yields
    /// "removed before loaded" (R13, R14).
    EntryRemoved {
        /// The key.
        key: CacheKey,
        /// The lifetime.
        lifetime: LifetimeId,
        /// Whether data had loaded.
        loaded: bool,
    },
    /// Something subscribers of this key can see changed.
    Notify {
        /// The key.
        key: CacheKey,
    },
    /// Tell the lifetime's lifecycle handler about a request on its entry (R29): started (with
    /// why), fulfilled, rejected. Only for endpoints with a lifecycle (a handler, or a source
    /// feeding the entry, which does not read them).
    RequestEvent {
        /// The key.
        key: CacheKey,
        /// The lifetime whose handler is told.
        lifetime: LifetimeId,
        /// What happened.
        event: RequestEvent,
    },
    /// End the lifetime's current lifecycle handler and start a new one on the same entry (R30,
    /// [`Cache::restart`]): the old handler's `entry_removed` resolves (its streams end), its
    /// handle is refused from now on, and the new handler, `handler`, starts; if the entry has
    /// data a [`ResolveDataLoaded`](Effect::ResolveDataLoaded) for it follows.
    RestartLifecycle {
        /// The key.
        key: CacheKey,
        /// The new handler.
        handler: HandlerId,
    },
    /// Ask the lifetime's source to replay its messages from `from` (R26, the
    /// [`Resync::Resume`](crate::core::Resync::Resume) policy), then report
    /// `Cache::resync_done`. `None`: past the last version, nothing to replay.
    Resume {
        /// The key.
        key: CacheKey,
        /// The lifetime whose source replays.
        lifetime: LifetimeId,
        /// The first version to replay (the watermark's next, or 0 without a watermark).
        from: Option<crate::core::Version>,
    },
}

/// A request on an entry, as its lifecycle handler is told of it (R29).
///
/// ```
/// use livecache::core::{RequestEvent, RequestId, RequestReason};
/// let started = RequestEvent::Started { request: RequestId(2), reason: RequestReason::Refetch };
/// assert_eq!(started.request(), RequestId(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestEvent {
    /// A request started.
    Started {
        /// The request.
        request: RequestId,
        /// Why.
        reason: crate::core::RequestReason,
    },
    /// The request fulfilled: the entry has its data.
    Fulfilled {
        /// The request.
        request: RequestId,
    },
    /// The request was rejected: the entry keeps its data, with the error.
    Rejected {
        /// The request.
        request: RequestId,
    },
}

impl RequestEvent {
    /// The request the event is about.
    ///
    /// ```
    /// use livecache::core::{RequestEvent, RequestId};
    /// assert_eq!(RequestEvent::Rejected { request: RequestId(4) }.request(), RequestId(4));
    /// ```
    pub fn request(self) -> RequestId {
        match self {
            RequestEvent::Started { request, .. }
            | RequestEvent::Fulfilled { request }
            | RequestEvent::Rejected { request } => request,
        }
    }
}

/// Why [`Cache::restart`] did not restart a handler.
///
/// ```
/// use livecache::core::{Cache, CacheKey, RestartRefused};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// assert_eq!(cache.restart(0, &CacheKey::verbatim("a(1)")), Err(RestartRefused::NotLive));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestartRefused {
    /// The key has no entry.
    #[error("the key has no cache entry")]
    NotLive,
    /// The entry's endpoint has no lifecycle handler to restart.
    #[error("the cache entry's endpoint has no lifecycle handler")]
    NoHandler,
    /// The lifetime has been restarted `u32::MAX` times: no generation is left.
    #[error("the cache entry's handler was restarted too many times")]
    Exhausted,
}

/// Why an update through a lifecycle handle (or `update_query_data`) failed.
///
/// ```
/// # use livecache::core::{LifetimeId, Patches};
/// use livecache::core::{Cache, UpdateRefused};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// assert_eq!(cache.update_cached(0, LifetimeId(7), Patches::NotWanted, |d| d.push(1)), Err(UpdateRefused::NotLive));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateRefused {
    /// The lifetime has ended (or never existed): the entry was removed (R7a, R14).
    #[error("the cache entry was removed")]
    NotLive,
    /// The entry has no data yet; wait for data-loaded (R15).
    #[error("the cache entry has no data yet")]
    NotLoaded,
    /// A versioned message for an endpoint that declares no versions (R24).
    #[error("the cache entry's endpoint declares no versions")]
    NotVersioned,
    /// The data could not be serialised to compute patches; nothing changed.
    #[error("the cache entry's data could not be serialised for patches: {0}")]
    Serialize(String),
    /// The data type's own code panicked (its `Serialize`, computing patches): the panic was
    /// contained, the data is what it was before the update, and `data_panicked` is traced.
    #[error("{message}")]
    DataPanicked {
        /// What panicked, and the panic message when it was a string.
        message: String,
    },
}

/// Why [`Cache::upsert`] reports an error.
///
/// ```
/// use livecache::core::{Cache, CacheKey, EndpointConfig, UpsertError};
/// let mut cache: Cache<u32> = Cache::new(Default::default());
/// let a = cache.add_endpoint("a", EndpointConfig::default())?;
/// let b = cache.add_endpoint("b", EndpointConfig::default())?;
/// let key = CacheKey::verbatim("shared");
/// cache.upsert(0, a, &key, 1)?;
/// assert!(matches!(cache.upsert(1, b, &key, 2), Err(UpsertError::KeyInUse(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpsertError {
    /// The key's live entry belongs to another endpoint; nothing was done.
    #[error(transparent)]
    KeyInUse(#[from] KeyInUse),
    /// The data type's `PartialEq` panicked comparing the new data with the cached data. The
    /// panic was contained: the upsert took effect with the new data counted as changed
    /// (subscribers are notified), the entry keeps its lifetime, and `data_panicked` is traced.
    #[error("{message}")]
    DataPanicked {
        /// What panicked, and the panic message when it was a string.
        message: String,
    },
}

/// Why `patch_query_data` failed. In every case the data is unchanged (R19).
///
/// ```
/// use livecache::core::{Cache, PatchError, CacheKey};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// let patch = json_patch::Patch(vec![]);
/// assert_eq!(cache.patch_query_data(0, &CacheKey::verbatim("a(1)"), &patch), Err(PatchError::NoEntry));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// The data type's own code (`Serialize`, `Deserialize` or `PartialEq`) panicked; the panic
    /// was contained, the data is unchanged and `data_panicked` is traced.
    #[error("{message}")]
    DataPanicked {
        /// What panicked, and the panic message when it was a string.
        message: String,
    },
}

/// [`Cache::queue_notify`] on the queue alone, for callers holding a borrow of the entries.
pub(super) fn queue_notify<D>(effects: &mut VecDeque<Effect<D>>, key: &CacheKey) {
    // Request events for a lifecycle (R29) tell of requests, not of the state: a notification
    // queued before them still covers this one.
    let last = effects
        .iter()
        .rev()
        .find(|effect| !matches!(effect, Effect::RequestEvent { .. }));
    if let Some(Effect::Notify { key: last }) = last
        && last == key
    {
        return;
    }
    effects.push_back(Effect::Notify { key: key.clone() });
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Queue a notification for `key` if what its subscribers can see changed since the last
    /// one (always, once the entry is gone).
    pub(super) fn notify(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.get_mut(key)
            && !slot.mark_notified()
        {
            return;
        }
        self.queue_notify(key);
    }

    /// Queue a notification for `key`, unless the last queued effect is already one for it.
    pub(super) fn queue_notify(&mut self, key: &CacheKey) {
        queue_notify(&mut self.effects, key);
    }
}

/// Who wakes the subscribers after [`Cache::update_cached_deferring_notify`].
///
/// ```
/// use livecache::core::Notify;
/// assert_ne!(Notify::Caller, Notify::Queued);
/// ```
#[must_use = "with Notify::Caller, the caller must wake the lifetime's subscribers"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The caller must wake the lifetime's subscribers: the core queued nothing for this update.
    Caller,
    /// Nothing for the caller: the core queued an [`Effect::Notify`] if one was due.
    Queued,
}

/// [`Cache::add_endpoint`] was given a name already registered.
///
/// ```
/// let e = livecache::core::NameTaken { name: "getUser".into() };
/// assert_eq!(e.to_string(), "an endpoint named getUser already exists");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an endpoint named {name} already exists")]
pub struct NameTaken {
    /// The name.
    pub name: String,
}

/// An endpoint's operation named a key whose live entry belongs to another endpoint
/// ([`Cache::claim`]); nothing was done.
///
/// ```
/// use livecache::core::{CacheKey, KeyInUse};
/// let e = KeyInUse { key: CacheKey::verbatim("k"), owner: "a".into() };
/// assert_eq!(e.to_string(), "the cache key k belongs to an entry of endpoint a");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cache key {key} belongs to an entry of endpoint {owner}")]
pub struct KeyInUse {
    /// The key.
    pub key: CacheKey,
    /// The name of the endpoint whose entry has it.
    pub owner: String,
}
