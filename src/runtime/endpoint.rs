//! Typed endpoints: a name, an argument type `A`, a data type `T`, a query function, an
//! optional lifecycle handler and per-endpoint settings.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::core::Draft;
use crate::core::{CacheKey, default_key, key_from_override};
use crate::core::{EndpointId, Refetch, Version};
use crate::core::{Patch, UpsertError};
use crate::runtime::driver::{
    ErasedFetched, FetchError, LifecycleKind, LifecycleStart, LifetimeParts, Owner, State,
};
use crate::runtime::endpoint_builder::{
    EntryLifecycle, ProvidesTags, QueryFn, RetryIf, Serializer,
};
use crate::runtime::erased::{Data, ErasedData, ErasedMeta};
use crate::runtime::error::UpdateError;
use crate::runtime::error::{BoxError, Error, QueryError};
use crate::runtime::feed::{Attached, SourceStart};
use crate::runtime::lifecycle::EntryHandle;
use crate::runtime::patch_collection::PatchCollection;
use crate::runtime::state::{QueryState, read_state};
use crate::runtime::subscription::Subscription;
use crate::runtime::typed_recipe::{from_core, run_typed_recipe_atomic};

/// What an endpoint's argument type must be: cloneable (kept as the entry's original argument)
/// and serialisable (the cache key). Blanket-implemented.
///
/// ```
/// fn assert_arg<A: livecache::Arg>() {}
/// assert_arg::<(String, u32)>();
/// ```
pub trait Arg: Clone + Serialize + Send + Sync + 'static {}
impl<A: Clone + Serialize + Send + Sync + 'static> Arg for A {}

pub(crate) struct EndpointInner<A, T, M> {
    pub(crate) id: EndpointId,
    pub(crate) name: String,
    pub(crate) query: QueryFn<A, T, M>,
    pub(crate) lifecycle: Option<EntryLifecycle<A, T, M>>,
    pub(crate) serialize: Option<Serializer<A>>,
    pub(crate) retry_if: Option<RetryIf>,
    pub(crate) provides_tags: Option<ProvidesTags<A, T>>,
}

/// A typed endpoint: subscribe to it, prefetch it, update its entries from outside.
///
/// Cloning is cheap (the endpoint is shared).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
/// let same = double.clone();
/// let sub = same.subscribe(2)?;
/// assert_eq!(*sub.loaded().await.expect("live"), 4);
/// # Ok(()) }
/// ```
pub struct Endpoint<A, T, M = ()> {
    pub(crate) owner: Arc<Owner>,
    pub(crate) inner: Arc<EndpointInner<A, T, M>>,
}

impl<A, T, M> Clone for Endpoint<A, T, M> {
    fn clone(&self) -> Self {
        Endpoint {
            owner: Arc::clone(&self.owner),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: Arg, T: Data, M: Send + Sync + 'static> Endpoint<A, T, M> {
    /// The endpoint's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// assert_eq!(double.name(), "double");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cache key of `arg` (RTK-compatible, or the endpoint's own serialiser).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// assert_eq!(double.key(&21)?.as_str(), "double(21)");
    /// # Ok(()) }
    /// ```
    pub fn key(&self, arg: &A) -> Result<CacheKey, Error> {
        match &self.inner.serialize {
            Some(serialize) => Ok(key_from_override(&self.inner.name, serialize(arg))),
            None => Ok(default_key(&self.inner.name, arg)?),
        }
    }

    /// Subscribe to the entry for `arg` (R1, R2): creates it (starting its lifecycle handler,
    /// then its request) or joins it. Refetches a cached entry only if the api's
    /// `refetch_on_mount_or_arg_change` says so.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let a = double.subscribe(21)?;
    /// let b = double.subscribe(21)?; // the same entry, no second request
    /// assert_eq!(*b.loaded().await.expect("live"), 42);
    /// # drop(a);
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, arg: A) -> Result<Subscription<T>, Error> {
        self.subscribe_with(arg, self.owner.shared.refetch_on_mount)
    }

    /// Subscribe with an explicit refetch policy (RTK's `forceRefetch`: [`Refetch::Always`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// use livecache::core::Refetch;
    /// let a = double.subscribe(21)?;
    /// a.loaded().await.ok();
    /// let b = double.subscribe_with(21, Refetch::Always)?;
    /// assert!(b.state().is_fetching);
    /// # Ok(()) }
    /// ```
    pub fn subscribe_with(&self, arg: A, refetch: Refetch) -> Result<Subscription<T>, Error> {
        let key = self.key(&arg)?;
        let id = self.inner.id;
        let (subscription, lifetime, changed) = self.owner.shared.with(|state, now| {
            let subscription = state.cache.subscribe(now, id, &key, refetch)?;
            let (lifetime, changed) = state
                .ensure_lifetime(&key, || self.lifetime_parts(arg))
                .ok_or(Error::Update(UpdateError::EntryRemoved))?;
            Ok::<_, Error>((subscription, lifetime, changed))
        })?;
        Ok(Subscription::new(
            Arc::clone(&self.owner),
            subscription,
            key,
            lifetime,
            changed,
        ))
    }

    /// Fetch `arg` into the cache without subscribing (R6): a new entry is removed after the
    /// keep time unless someone subscribes; a cached entry is left alone (its lifetime is not
    /// extended) unless `refetch` asks for a request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// use livecache::core::Refetch;
    /// double.prefetch(21, Refetch::IfMissing)?;
    /// assert_eq!(api.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn prefetch(&self, arg: A, refetch: Refetch) -> Result<(), Error> {
        let key = self.key(&arg)?;
        let id = self.inner.id;
        self.owner.shared.with(|state, now| {
            state.cache.prefetch(now, id, &key, refetch)?;
            state.ensure_lifetime(&key, || self.lifetime_parts(arg));
            Ok(())
        })
    }

    /// The state of the entry for `arg` (RTK's `select`); `Uninitialized` if there is none.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// assert!(double.state(&21)?.is_uninitialized());
    /// # Ok(()) }
    /// ```
    pub fn state(&self, arg: &A) -> Result<QueryState<T>, Error> {
        let key = self.key(arg)?;
        let state = self.owner.shared.lock();
        self.check_owner(&state, &key)?;
        Ok(read_state(&state, &key, None))
    }

    /// Update the data of the entry for `arg` from outside its lifecycle (RTK's
    /// `updateQueryData`, R18), e.g. an optimistic update. If there is no entry, or it has no
    /// data yet, the recipe is not called and the patches are empty. The returned
    /// [`PatchCollection`] can undo the change. The recipe runs while the cache is locked: it
    /// must not call the api.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// double.upsert_query_data(21, 42)?;
    /// let change = double.update_query_data(&21, |n| *n += 1)?;
    /// assert_eq!(double.state(&21)?.data(), Some(&43));
    /// change.undo()?;
    /// assert_eq!(double.state(&21)?.data(), Some(&42));
    /// # Ok(()) }
    /// ```
    pub fn update_query_data(
        &self,
        arg: &A,
        recipe: impl FnOnce(&mut Draft<'_, T>),
    ) -> Result<PatchCollection<A, T, M>, Error> {
        let key = self.key(arg)?;
        let (result, panicked) = self.owner.shared.with(|state, now| {
            self.check_owner(state, &key)?;
            let mut panicked = None;
            // Atomic: a recipe that panics leaves the data as it was (R15, R18).
            let result = state.cache.update_query_data_undoable(now, &key, |outer| {
                panicked = run_typed_recipe_atomic(outer, recipe);
            });
            Ok::<_, Error>((result, panicked))
        })?;
        if let Some(message) = panicked {
            return Err(Error::Update(UpdateError::RecipePanicked { message }));
        }
        let undo = result.map_err(from_core)?;
        Ok(PatchCollection::new(self.clone(), arg.clone(), key, undo))
    }

    /// Apply RFC 6902 patches to the data of the entry for `arg` (RTK's `patchQueryData`, R19).
    /// A patch that does not apply, or gives data that is not a `T`, is an error and changes
    /// nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let patch: livecache::core::Patch =
    ///     serde_json::from_str(r#"[{"op": "replace", "path": "", "value": 7}]"#).expect("json");
    /// double.upsert_query_data(21, 42)?;
    /// double.patch_query_data(&21, &patch)?;
    /// assert_eq!(double.state(&21)?.data(), Some(&7));
    /// # Ok(()) }
    /// ```
    pub fn patch_query_data(&self, arg: &A, patches: &Patch) -> Result<(), Error> {
        let key = self.key(arg)?;
        self.owner.shared.with(|state, now| {
            self.check_owner(state, &key)?;
            Ok(state.cache.patch_query_data(now, &key, patches)?)
        })
    }

    /// Undo a change of the entry at `key` through the core (see [`PatchCollection::undo`]):
    /// `patches` are the change's, taken out of `undo`.
    pub(crate) fn undo(
        &self,
        key: &CacheKey,
        undo: crate::core::Undo,
        patches: &crate::core::PatchSet,
    ) -> Result<(), Error> {
        self.owner.shared.with(|state, now| {
            self.check_owner(state, key)?;
            Ok(state.cache.undo_with(now, key, undo, patches)?)
        })
    }

    /// Put data in the cache for `arg` (RTK's `upsertQueryData`, R20): creates a loaded entry
    /// (its lifecycle starts and data-loaded resolves without meta) or replaces the data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// double.upsert_query_data(1, 2)?;
    /// assert_eq!(double.state(&1)?.data(), Some(&2));
    /// # Ok(()) }
    /// ```
    pub fn upsert_query_data(&self, arg: A, data: T) -> Result<(), Error> {
        self.upsert_at(arg, data, None)
    }

    /// [`Endpoint::upsert_query_data`] with the snapshot's watermark, on a versioned endpoint
    /// (R20, R24): messages at or below it are duplicates from then on, and what a request in
    /// flight has applied above it is applied again onto it (R27).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .query_fn_versioned(|()| async { Ok((vec![], Version::new(0))) })
    ///     .build()?;
    /// feed.upsert_query_data_versioned((), vec![1, 2, 3], Version::new(3))?;
    /// assert_eq!(feed.state(&())?.watermark, Some(Version::new(3)));
    /// # Ok(()) }
    /// ```
    pub fn upsert_query_data_versioned(
        &self,
        arg: A,
        data: T,
        watermark: Version,
    ) -> Result<(), Error> {
        self.upsert_at(arg, data, Some(watermark))
    }

    fn upsert_at(&self, arg: A, data: T, watermark: Option<Version>) -> Result<(), Error> {
        let key = self.key(&arg)?;
        let id = self.inner.id;
        let tags = self
            .inner
            .provides_tags
            .as_ref()
            .map(|tags| tags(&arg, &data));
        self.owner.shared.with(|state, now| {
            let data = ErasedData::new(data);
            let upserted = match watermark {
                Some(watermark) => state.cache.upsert_versioned(now, id, &key, data, watermark),
                None => state.cache.upsert(now, id, &key, data),
            };
            if let Err(UpsertError::KeyInUse(in_use)) = upserted {
                return Err(in_use.into());
            }
            // A new lifetime's runtime side is registered before the core's effects run (an
            // upsert whose data's `PartialEq` panicked took effect too).
            state.ensure_lifetime(&key, || self.lifetime_parts(arg));
            if let Some(tags) = tags {
                state.cache.provide_tags(now, &key, tags);
            }
            Ok(upserted?)
        })
    }

    /// The keys of this endpoint's live entries, sorted (R38: what `invalidate_tags` may reach,
    /// RTK's `selectCachedArgsForQuery` by key).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// double.upsert_query_data(2, 4)?;
    /// double.upsert_query_data(1, 2)?;
    /// let keys: Vec<String> = double.cached_keys().iter().map(|k| k.to_string()).collect();
    /// assert_eq!(keys, ["double(1)", "double(2)"]);
    /// # Ok(()) }
    /// ```
    pub fn cached_keys(&self) -> Vec<CacheKey> {
        let id = self.inner.id;
        self.owner.shared.with(|state, _| state.cache.keys_of(id))
    }

    /// Remove the entry for `arg` now (R7). Returns whether there was one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// double.upsert_query_data(1, 2)?;
    /// assert!(double.remove(&1)?);
    /// assert!(!double.remove(&1)?);
    /// # Ok(()) }
    /// ```
    pub fn remove(&self, arg: &A) -> Result<bool, Error> {
        let key = self.key(arg)?;
        self.owner.shared.with(|state, now| {
            self.check_owner(state, &key)?;
            Ok(state.cache.remove(now, &key))
        })
    }

    /// Restart the lifecycle handler of the entry for `arg` (R30): the running handler's
    /// [`removed`](EntryHandle::removed) resolves with [`Ended::Restarted`](crate::Ended) — its
    /// streams end, closing their sockets, and its handle is refused from now on — and the
    /// endpoint's handler starts again with `arg` on the same entry, which keeps its data,
    /// subscribers, request in flight and watermark. The new handler's `data_loaded` resolves
    /// at once if the entry has data (without meta: no request brought it), else with the first
    /// data. For a fresh auth token, or another server. Returns whether there was an entry;
    /// an endpoint without a handler is refused ([`Error::Restart`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// let api = livecache::Api::builder().build();
    /// let started = Arc::new(AtomicU32::new(0));
    /// let count = Arc::clone(&started);
    /// let feed = api
    ///     .query::<u32, Vec<u32>>("feed")
    ///     .query_fn(|_n: u32| async move { Ok(vec![]) })
    ///     .on_cache_entry_added(move |_n, entry| {
    ///         let handler = count.fetch_add(1, Ordering::SeqCst);
    ///         async move {
    ///             let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///             entry.update_cached_data(|list| list.push(handler))?;
    ///             entry.removed().await;
    ///             Ok(())
    ///         }
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(1)?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// assert!(feed.restart(&1)?);
    /// tokio::task::yield_now().await;
    /// assert_eq!(sub.state().data(), Some(&vec![0, 1])); // the data stayed; handler 1 added to it
    /// assert!(!feed.restart(&2)?);                         // no entry
    /// # Ok(()) }
    /// ```
    pub fn restart(&self, arg: &A) -> Result<bool, Error> {
        let key = self.key(arg)?;
        self.owner.shared.with(|state, now| {
            if state.cache.entry(&key).is_none() {
                return Ok(false);
            }
            self.check_owner(state, &key)?;
            state.cache.restart(now, &key)?;
            Ok(true)
        })
    }

    /// An entry of another endpoint under the same key (custom serialisers can collide) is not
    /// this endpoint's to read or touch: the core decides ([`Cache::claim`]).
    ///
    /// [`Cache::claim`]: crate::core::Cache::claim
    fn check_owner(&self, state: &State, key: &CacheKey) -> Result<(), Error> {
        Ok(state.cache.claim(self.inner.id, key)?)
    }

    /// What the runtime keeps of a new lifetime for `arg`: this endpoint and the argument.
    fn lifetime_parts(&self, arg: A) -> Arc<dyn LifetimeParts> {
        Arc::new(EntryParts {
            inner: Arc::clone(&self.inner),
            arg,
        })
    }
}

/// One lifetime's endpoint and argument, typed: how to fetch its data and what runs for it
/// ([`LifetimeParts`]). One allocation per lifetime, shared by its requests and its handler.
struct EntryParts<A, T, M> {
    inner: Arc<EndpointInner<A, T, M>>,
    arg: A,
}

impl<A: Arg, T: Data, M: Send + Sync + 'static> LifetimeParts for EntryParts<A, T, M> {
    fn fetch(&self) -> BoxFuture<'static, Result<ErasedFetched, FetchError>> {
        let retry_if = self.inner.retry_if.clone();
        let provides_tags = self.inner.provides_tags.clone();
        let tags_arg = provides_tags.as_ref().map(|_| self.arg.clone());
        (self.inner.query)(self.arg.clone())
            .map(move |result| {
                result
                    .map(|fetched| ErasedFetched {
                        tags: provides_tags
                            .zip(tags_arg)
                            .map(|(tags, arg)| tags(&arg, &fetched.data)),
                        data: ErasedData::new(fetched.data),
                        meta: fetched.meta.map(|m| Arc::new(m) as ErasedMeta),
                        watermark: fetched.watermark,
                    })
                    .map_err(|error| {
                        let error = QueryError::new(error);
                        let retryable = retry_if.as_ref().is_none_or(|retry| retry(&error));
                        FetchError { error, retryable }
                    })
            })
            .boxed()
    }

    fn lifecycle(&self) -> LifecycleKind {
        match self.inner.lifecycle {
            None => LifecycleKind::None,
            Some(EntryLifecycle::Handler(_)) => LifecycleKind::Handler,
            Some(EntryLifecycle::Source(_)) => LifecycleKind::Source,
        }
    }

    fn start_handler(
        &self,
        start: LifecycleStart,
    ) -> Option<BoxFuture<'static, Result<(), BoxError>>> {
        match &self.inner.lifecycle {
            Some(EntryLifecycle::Handler(handler)) => {
                Some(handler(self.arg.clone(), EntryHandle::added(start)))
            }
            _ => None,
        }
    }

    fn start_source(&self, start: SourceStart) -> Option<Attached> {
        match &self.inner.lifecycle {
            Some(EntryLifecycle::Source(attach)) => Some(attach(&self.arg, start)),
            _ => None,
        }
    }
}

impl<A, T, M> std::fmt::Debug for Endpoint<A, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.inner.name)
            .finish()
    }
}
