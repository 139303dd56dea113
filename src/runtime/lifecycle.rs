//! The typed lifecycle handle given to `on_cache_entry_added` (SPEC R12–R17).
//!
//! The handle is a typestate too: an [`EntryHandle<BeforeData, T>`] can only wait for the first data
//! ([`EntryHandle::data_loaded`], which consumes it); only the [`EntryHandle<WithData, T>`] it
//! yields can update the entry. Updating before data, or waiting for data twice, does not
//! compile. After removal every update returns [`UpdateError::EntryRemoved`] (R14).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::core::CacheKey;
use crate::core::Draft;
use crate::core::PatchSet;
use crate::core::{HandlerId, LifetimeId};
use crate::core::{LifetimePlace, Notify, Patches};
use crate::core::{RequestEvent, StreamStatus, Tag};
use crate::runtime::applier::Destination;
use crate::runtime::driver::{Hint, LifecycleStart, LoadedMsg, Shared};
use crate::runtime::ending::{Ended, Ending};
use crate::runtime::erased::Data;
use crate::runtime::error::{EntryRemoved, RemovedBeforeLoaded, UpdateError};
use crate::runtime::signal;
use crate::runtime::state::{QueryState, read_state};
use crate::runtime::typed_recipe::{recipe_outcome, run_typed_recipe, run_typed_recipe_atomic};

mod sealed {
    pub trait Sealed {}
}

/// A lifecycle handle state (type state). Sealed: [`BeforeData`] and [`WithData`] only.
///
/// ```
/// fn is_state<S: livecache::HandleState>() {}
/// is_state::<livecache::BeforeData>();
/// is_state::<livecache::WithData>();
/// ```
pub trait HandleState: sealed::Sealed {}

/// The entry was just added; its first data has not arrived (type state). Such a handle can
/// only wait for the data:
///
/// ```compile_fail
/// fn update(entry: livecache::EntryHandle<livecache::BeforeData, Vec<u32>>) {
///     entry.update_cached_data(|list| list.push(1)); // no such method before the data loaded
/// }
/// ```
pub struct BeforeData {
    loaded: oneshot::Receiver<LoadedMsg>,
}

impl std::fmt::Debug for BeforeData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeData")
    }
}

/// The entry has data: the handle can update it (type state).
///
/// ```
/// fn update(entry: &livecache::EntryHandle<livecache::WithData, Vec<u32>>) {
///     let _ = entry.update_cached_data(|list| list.push(1));
/// }
/// ```
#[derive(Debug)]
pub struct WithData(());

impl sealed::Sealed for BeforeData {}
impl sealed::Sealed for WithData {}
impl HandleState for BeforeData {}
impl HandleState for WithData {}

/// The first data of a lifetime and the meta its query function returned (`None` when the data
/// came from an upsert), as `data_loaded` yields them (R8, R13, R20).
///
/// ```
/// let first = livecache::DataLoaded::<u32> { data: std::sync::Arc::new(1), meta: None };
/// assert_eq!(*first.data, 1);
/// ```
#[derive(Debug)]
pub struct DataLoaded<T, M = ()> {
    /// The first data (shared with the cache).
    pub data: Arc<T>,
    /// The query function's meta.
    pub meta: Option<Arc<M>>,
}

/// The handle an `on_cache_entry_added` handler receives for one entry lifetime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// use livecache::{BeforeData, EntryHandle};
/// async fn handler(entry: EntryHandle<BeforeData, Vec<u32>>) -> Result<(), livecache::BoxError> {
///     let Ok((entry, _first)) = entry.data_loaded().await else { return Ok(()) };
///     entry.update_cached_data(|list| list.push(1))?;
///     entry.removed().await;
///     Ok(())
/// }
/// let list = api
///     .query::<(), Vec<u32>>("list")
///     .query_fn(|()| async { Ok(vec![0]) })
///     .on_cache_entry_added(|(), entry| handler(entry))
///     .build()?;
/// let sub = list.subscribe(())?;
/// sub.loaded().await.ok();
/// tokio::task::yield_now().await;
/// assert_eq!(sub.state().data(), Some(&vec![0, 1]));
/// # Ok(()) }
/// ```
pub struct EntryHandle<S: HandleState, T, M = ()> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: CacheKey,
    /// The lifetime and where the core keeps its entry.
    pub(crate) place: LifetimePlace,
    /// Ends when the lifetime ends (R14) or this handler is restarted (R30): resolves
    /// `removed`. Updates do not touch it, so a task waiting for removal is not woken by them.
    pub(crate) ending: Arc<Ending>,
    /// Announces this lifetime's visible changes to its subscribers.
    pub(crate) changed: signal::Notifier,
    /// The request events of the entry (R29), until [`EntryHandle::request_events`] takes them.
    events: Arc<Mutex<Option<crate::runtime::driver::EventsRx>>>,
    state: S,
    _data: PhantomData<fn() -> (T, M)>,
}

impl<T: Data, M: Send + Sync + 'static> EntryHandle<BeforeData, T, M> {
    pub(crate) fn added(start: LifecycleStart) -> Self {
        EntryHandle {
            shared: start.shared,
            key: start.key,
            place: start.place,
            ending: start.ending,
            changed: start.changed,
            events: Arc::new(Mutex::new(start.events)),
            state: BeforeData {
                loaded: start.loaded,
            },
            _data: PhantomData,
        }
    }

    /// Wait for the entry's first data (RTK's `cacheDataLoaded`). Yields the [`WithData`] handle
    /// and the data with its meta, or [`RemovedBeforeLoaded`] if the entry was removed first —
    /// a value, never a panic. A rejected request leaves it waiting (R9, R13).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: the `BeforeData` handle is consumed, so dropping the future before it
    /// completes gives up this lifetime's handle (the entry itself is untouched; its removal is
    /// still reported to [`EntryHandle::removed`] holders).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// use livecache::Api;
    /// let api = Api::builder().build();
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let tx = std::sync::Mutex::new(Some(tx));
    /// let ep = api
    ///     .query::<u32, u32>("double")
    ///     .query_fn(|n: u32| async move { Ok(n * 2) })
    ///     .on_cache_entry_added(move |_n, entry| {
    ///         let tx = tx.lock().unwrap().take();
    ///         async move {
    ///             if let Ok((_entry, first)) = entry.data_loaded().await {
    ///                 tx.map(|tx| tx.send(*first.data));
    ///             }
    ///             Ok(())
    ///         }
    ///     })
    ///     .build()?;
    /// let _sub = ep.subscribe(21)?;
    /// assert_eq!(rx.await.ok(), Some(42));
    /// # Ok(()) }
    /// ```
    pub async fn data_loaded(
        self,
    ) -> Result<(EntryHandle<WithData, T, M>, DataLoaded<T, M>), RemovedBeforeLoaded> {
        let EntryHandle {
            shared,
            key,
            place,
            ending,
            changed,
            events,
            state,
            ..
        } = self;
        let msg = state.loaded.await.map_err(|_| RemovedBeforeLoaded)?;
        let data = msg.data.get::<T>().ok_or(RemovedBeforeLoaded)?;
        let meta = msg.meta.and_then(|m| m.downcast::<M>().ok());
        let handle = EntryHandle {
            shared,
            key,
            place,
            ending,
            changed,
            events,
            state: WithData(()),
            _data: PhantomData,
        };
        Ok((handle, DataLoaded { data, meta }))
    }
}

impl<S: HandleState, T: Data, M> EntryHandle<S, T, M> {
    /// The cache key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         assert_eq!(entry.key().as_str(), format!("prices({symbol:?})"));
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The lifetime this handle belongs to.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         assert_eq!(entry.lifetime(), livecache::core::LifetimeId(1)); // the first entry of this api
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    /// # use livecache::core::LifetimeId;
    pub fn lifetime(&self) -> LifetimeId {
        self.place.lifetime()
    }

    /// The handler this handle belongs to (R30): its lifetime, and which of the lifetime's
    /// handlers — 0 for the one started with the entry, one more per
    /// [`restart`](crate::Endpoint::restart).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let feed = api
    ///     .query::<u32, u32>("feed")
    ///     .query_fn(|n: u32| async move { Ok(n) })
    ///     .on_cache_entry_added(move |_n, entry| {
    ///         let _ = tx.send(entry.handler().generation);
    ///         async { Ok(()) }
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(1)?;
    /// feed.restart(&1)?;
    /// assert_eq!((rx.recv().await, rx.recv().await), (Some(0), Some(1)));
    /// # Ok(()) }
    /// ```
    pub fn handler(&self) -> HandlerId {
        self.place.handler()
    }

    /// The entry's current state (RTK's `getCacheEntry()`); `Uninitialized` once removed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         assert!(entry.cache_entry().is_fetching); // the request started right after
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    pub fn cache_entry(&self) -> QueryState<T> {
        read_state(&self.shared.lock(), &self.key, Some(self.place.lifetime()))
    }

    /// Resolves once the entry has left the cache (RTK's `cacheEntryRemoved`, R14), or this
    /// handler was replaced by a [`restart`](crate::Endpoint::restart) (R30): [`Ended`] says
    /// which. Borrows the handle, so it can be awaited in a `select!` beside a stream that
    /// updates the entry; after it resolves the handle can do nothing more (its streams end and
    /// its updates are refused).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the future only waits; a new one (or a clone of the handle) waits for the
    /// same removal.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         entry.removed().await;            // e.g. in a select! beside a socket
    ///         assert!(entry.is_removed());
    ///         assert!(entry.update_cached_data(|p| p.clear()).is_err());
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    pub fn removed(&self) -> impl Future<Output = Ended> + Send + 'static {
        let ending = Arc::clone(&self.ending);
        async move { ending.wait().await }
    }

    /// Whether the entry has left the cache, or this handler was restarted (R30): the handle
    /// can do nothing more.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         assert!(!entry.is_removed());
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    pub fn is_removed(&self) -> bool {
        self.ending.is_ended()
    }

    /// Run `work` until it completes or the entry leaves the cache, whichever comes first:
    /// `Some(output)`, or `None` once the entry is removed — then `work` is dropped, which
    /// cancels it (a socket it was opening is closed). Removal is checked first: after it,
    /// `work` is not polled at all.
    ///
    /// Wrap every wait of a handler that does not end by itself in this — connecting to a
    /// server, above all: a server that accepts the connection but never answers would
    /// otherwise hold the handler, its socket and its task after the entry is gone (the
    /// handler is never aborted: it owns its clean-up). Removal includes `remove`, `reset`,
    /// expiry and the api's last handle being dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe if `work` is: dropping the future drops `work` and only stops waiting for
    /// the removal.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         // e.g. `ws::connect(url).open()`; here a server that never answers
    ///         let never = std::future::pending::<()>();
    ///         assert_eq!(entry.until_removed(never).await, None); // ends at the removal
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// prices.remove(&"ACME".to_string())?;
    /// # tokio::task::yield_now().await;
    /// # tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    /// let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    ///     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    ///     _ => None,
    /// }).collect();
    /// assert_eq!(ended, [livecache::core::HandlerOutcome::Finished]);
    /// # Ok(()) }
    /// ```
    pub fn until_removed<F: IntoFuture>(
        &self,
        work: F,
    ) -> impl Future<Output = Option<F::Output>> + use<F, S, T, M> {
        let ending = Arc::clone(&self.ending);
        let work = work.into_future();
        async move {
            tokio::select! {
                biased;
                _ = ending.wait() => None,
                output = work => Some(output),
            }
        }
    }

    /// The requests on this entry, as they start (with why: a refetch, a resync, …), fulfil and
    /// fail (R29). The first call takes them; later calls get an empty stream. Up to 64 unread
    /// events wait; more are dropped until the handler reads. The stream ends when the entry is
    /// removed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use futures::StreamExt;
    /// use livecache::core::{RequestEvent, RequestReason};
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let tx = std::sync::Mutex::new(Some(tx));
    /// let feed = api
    ///     .query::<(), u32>("feed")
    ///     .query_fn(|()| async { Ok(1) })
    ///     .on_cache_entry_added(move |(), entry| {
    ///         let tx = tx.lock().ok().and_then(|mut t| t.take());
    ///         async move {
    ///             let mut events = entry.request_events();
    ///             let first = events.next().await;
    ///             let _ = tx.map(|tx| tx.send(first));
    ///             Ok(())
    ///         }
    ///     })
    ///     .build()?;
    /// let _sub = feed.subscribe(())?;
    /// let first = rx.await.ok().flatten();
    /// assert!(matches!(first, Some(RequestEvent::Started { reason: RequestReason::Load, .. })));
    /// # Ok(()) }
    /// ```
    pub fn request_events(
        &self,
    ) -> impl futures::Stream<Item = RequestEvent> + Send + Unpin + 'static {
        let events = self.events.lock().ok().and_then(|mut slot| slot.take());
        Box::pin(futures::stream::unfold(events, |events| async move {
            let mut events = events?;
            let event = futures::StreamExt::next(&mut events).await?;
            Some((event, Some(events)))
        }))
    }

    /// Refetch the entry (R29): joins a request in flight, else starts one (reason
    /// `Refetch`). The handler needs no endpoint for it — holding one would keep the entry, its
    /// task and its socket alive after everything else let go of them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    /// let counted = std::sync::Arc::clone(&n);
    /// let counter = api
    ///     .query::<(), u32>("counter")
    ///     .query_fn(move |()| {
    ///         let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    ///         async move { Ok(n) }
    ///     })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         entry.refetch()?;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = counter.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().data(), Some(&1));
    /// # Ok(()) }
    /// ```
    pub fn refetch(&self) -> Result<(), EntryRemoved> {
        let handler = self.place.handler();
        let refetched = self
            .shared
            .with(|state, now| state.cache.refetch_lifetime(now, handler));
        if refetched { Ok(()) } else { Err(EntryRemoved) }
    }

    /// Invalidate tags from the lifecycle (R38; RTK #5056: a stream message that says other
    /// entries are out of date), as [`Api::invalidate_tags`](crate::Api::invalidate_tags) does.
    /// Returns how many entries it reached.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// use livecache::core::Tag;
    /// # let api = livecache::Api::builder().build();
    /// let feed = api
    ///     .query::<(), u32>("feed")
    ///     .query_fn(|()| async { Ok(1) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         // a message "user 3 changed" arrives:
    ///         entry.invalidate_tags([Tag::id("User", 3)]);
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// # let _sub = feed.subscribe(())?;
    /// # Ok(()) }
    /// ```
    pub fn invalidate_tags(&self, tags: impl IntoIterator<Item = Tag>) -> usize {
        let tags: Vec<Tag> = tags.into_iter().collect();
        self.shared
            .with(|state, now| state.cache.invalidate(now, &tags))
    }

    /// The entry's source may have missed messages — it reconnected after a drop (R32), say —
    /// so the entry resyncs: a versioned one by its policy, stale (`Resyncing`) until its
    /// refetched snapshot lands; an unversioned one refetches. A handler that reconnects its
    /// own socket calls this once the new socket is up. `Err(EntryRemoved)` once the entry is
    /// gone for this handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    /// let counted = std::sync::Arc::clone(&n);
    /// let feed = api
    ///     .query::<(), u32>("feed")
    ///     .query_fn(move |()| {
    ///         let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    ///         async move { Ok(n) }
    ///     })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         // … the socket dropped and came back: what was missed comes with a refetch
    ///         entry.resync_source()?;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// for _ in 0..4 { tokio::task::yield_now().await; }
    /// assert_eq!(sub.state().data(), Some(&1));
    /// # Ok(()) }
    /// ```
    pub fn resync_source(&self) -> Result<(), EntryRemoved> {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            let resynced = state.cache.source_resync(now, handler);
            (resynced.map_err(|_| EntryRemoved), false)
        })
    }

    /// Report the health of the entry's live source (R28): `Connecting`, `Live`,
    /// `Reconnecting { .. }`, `Ended { .. }` or `Failed { .. }` (texts are cut like the trace's).
    /// Subscribers see it in [`QueryState::stream`]; a change wakes them and is traced. A
    /// stream attached with [`EntryHandle::stream`] reports `Live` itself when it starts and
    /// `Ended` or `Failed` when it stops.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::StreamStatus;
    /// let quotes = api
    ///     .query::<(), u32>("quotes")
    ///     .query_fn(|()| async { Ok(1) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         entry.report_stream_status(StreamStatus::Connecting)?;
    ///         entry.removed().await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = quotes.subscribe(())?;
    /// sub.loaded().await.ok();
    /// assert_eq!(sub.state().stream, StreamStatus::Connecting);
    /// # Ok(()) }
    /// ```
    pub fn report_stream_status(&self, status: StreamStatus) -> Result<(), EntryRemoved> {
        let handler = self.place.handler();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            let reported = state.cache.stream_status(now, handler, status);
            // The core refuses a report only for a lifetime that has ended.
            (reported.map_err(|_| EntryRemoved), false)
        })
    }

    /// Open the entry's live source — a WebSocket, say — with its status reported (R28):
    /// `Connecting` while `opening` runs, `Failed` with the error if it fails. `None` if the
    /// entry is removed first (the opening is dropped, closing what it had opened). Attach the
    /// opened stream with [`EntryHandle::stream`]: it reports `Live`, then `Ended` or `Failed`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::StreamStatus;
    /// let quotes = api
    ///     .query::<(), u32>("quotes")
    ///     .query_fn(|()| async { Ok(1) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let refused = async { Err::<(), _>("connection refused") };
    ///         let _ = entry.open_source(refused).await;
    ///         entry.removed().await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = quotes.subscribe(())?;
    /// sub.loaded().await.ok();
    /// let error = "connection refused".to_string();
    /// assert_eq!(sub.state().stream, StreamStatus::Failed { error });
    /// # Ok(()) }
    /// ```
    pub async fn open_source<F, O, E>(&self, opening: F) -> Option<Result<O, E>>
    where
        F: IntoFuture<Output = Result<O, E>>,
        E: std::fmt::Display,
    {
        // Reporting fails only once the entry is gone; the opening then ends at once too.
        let _ = self.report_stream_status(StreamStatus::Connecting);
        let opened = self.until_removed(opening).await;
        if let Some(Err(error)) = &opened {
            let error = error.to_string();
            let _ = self.report_stream_status(StreamStatus::Failed { error });
        }
        opened
    }
}

/// A loaded handle can be cloned, to update the entry from several places — a socket callback
/// and the handler's own task, say — without wrapping it in an `Arc`. Every clone refers to the
/// same lifetime: after its removal, updates through any of them return
/// [`UpdateError::EntryRemoved`] and `removed()` resolves for all. (A `BeforeData` handle is not
/// `Clone`: `data_loaded` consumes it, once.)
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// let counter = api
///     .query::<String, Vec<u32>>("counter")
///     .query_fn(|_name: String| async move { Ok(vec![]) })
///     .on_cache_entry_added(|_name, entry| async move {
///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
///         let from_elsewhere = entry.clone();
///         tokio::spawn(async move { from_elsewhere.update_cached_data(|list| list.push(1)) });
///         entry.removed().await;
///         Ok(())
///     })
///     .build()?;
/// let sub = counter.subscribe("clicks".into())?;
/// sub.loaded().await.ok();
/// tokio::task::yield_now().await;
/// tokio::task::yield_now().await;
/// assert_eq!(sub.state().data(), Some(&vec![1]));
/// # Ok(()) }
/// ```
impl<T, M> Clone for EntryHandle<WithData, T, M> {
    fn clone(&self) -> Self {
        EntryHandle {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            place: self.place,
            ending: Arc::clone(&self.ending),
            changed: self.changed.clone(),
            events: Arc::clone(&self.events),
            state: WithData(()),
            _data: PhantomData,
        }
    }
}

impl<T: Data, M> EntryHandle<WithData, T, M> {
    /// Update the cached data (RTK's `updateCachedData`, R15). The recipe gets a [`Draft`]:
    /// reading costs nothing; the first mutable access copies the data only if a reader still
    /// holds a snapshot. A recipe that only reads notifies no one. No patches are computed.
    ///
    /// The recipe runs while the cache is locked, so that the change is atomic: it must not call
    /// the api (that would wait for the lock forever). Compute what you need first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         entry.update_cached_data(|prices| prices.push(1.5))?;
    ///         assert_eq!(entry.cache_entry().data(), Some(&vec![1.0, 1.5]));
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    pub fn update_cached_data(
        &self,
        recipe: impl FnOnce(&mut Draft<'_, T>),
    ) -> Result<(), UpdateError> {
        // The steps of `update_each` for one message, written out: going through it costs the
        // hot path about 30 instructions (3.5 %) per update, the payload being moved more.
        let place = self.place;
        let (result, panicked) = self.shared.with_lifetime(&self.hint(), |state, now| {
            let mut panicked = None;
            let result = state
                .cache
                .update_cached_deferring_notify(now, place, |outer| {
                    panicked = run_typed_recipe(outer, recipe);
                });
            let notify = matches!(result, Ok(Notify::Caller));
            ((result.map(drop), panicked), notify)
        });
        recipe_outcome(result, panicked)
    }

    /// Like [`EntryHandle::update_cached_data`], and return the change as RFC 6902 patches with
    /// their inverse (costs a serialisation of the data before and after).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let prices = api
    ///     .query::<String, Vec<f64>>("prices")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|symbol, entry| async move {
    ///         let Ok((entry, _)) = entry.data_loaded().await else { return Ok(()) };
    ///         let change = entry.update_cached_data_with_patches(|prices| prices.push(1.5))?;
    ///         assert_eq!(
    ///             serde_json::to_value(&change.patches).ok(),
    ///             Some(serde_json::json!([{"op": "add", "path": "/1", "value": 1.5}]))
    ///         );
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = prices.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// # drop(sub);
    /// # tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    /// # let ended: Vec<_> = api.trace().into_iter().filter_map(|e| match e.kind {
    /// #     livecache::core::TraceKind::LifecycleEnded { outcome, .. } => Some(outcome),
    /// #     _ => None,
    /// # }).collect();
    /// # assert_eq!(ended, [livecache::core::HandlerOutcome::Finished], "the handler's assertions held");
    /// # Ok(()) }
    /// ```
    /// # use livecache::core::Patches;
    pub fn update_cached_data_with_patches(
        &self,
        recipe: impl FnOnce(&mut Draft<'_, T>),
    ) -> Result<PatchSet, UpdateError> {
        let place = self.place;
        let (result, panicked) = self.shared.with_lifetime(&self.hint(), |state, now| {
            let mut panicked = None;
            let result = state
                .cache
                .update_cached_at(now, place, Patches::Wanted, |outer| {
                    panicked = run_typed_recipe_atomic(outer, recipe);
                });
            ((result.map(Option::unwrap_or_default), panicked), false)
        });
        recipe_outcome(result, panicked)
    }
}

impl<S: HandleState, T, M> EntryHandle<S, T, M> {
    pub(crate) fn hint(&self) -> Hint<'_> {
        Hint {
            lifetime: self.place.lifetime(),
            changed: &self.changed,
        }
    }

    /// The entry, for delivering messages to it.
    pub(crate) fn destination(&self) -> Destination<'_> {
        Destination {
            shared: &self.shared,
            place: self.place,
            changed: &self.changed,
        }
    }
}

impl<S: HandleState + std::fmt::Debug, T, M> std::fmt::Debug for EntryHandle<S, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryHandle")
            .field("key", &self.key)
            .field("lifetime", &self.place.lifetime())
            .field("state", &self.state)
            .finish()
    }
}
