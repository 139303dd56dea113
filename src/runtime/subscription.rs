//! Subscriptions: RAII handles that keep an entry alive and watch it.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::Stream;

use crate::core::CacheKey;
use crate::core::LifetimeId;
use crate::core::Status;
use crate::core::SubscriptionId;
use crate::runtime::driver::Owner;
use crate::runtime::erased::Data;
use crate::runtime::error::{EntryRemoved, NotSettled};
use crate::runtime::signal;
use crate::runtime::state::{QueryState, read_state};

/// A subscription to one entry lifetime. Dropping it unsubscribes, synchronously; the last one
/// to go schedules the entry's removal (R4).
///
/// A subscription belongs to the lifetime it subscribed to: if that entry is removed
/// (`remove`, `reset`), the subscription reports `Uninitialized` and its change stream ends.
/// Subscribe again to see the key again (R7a).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), livecache::Error> {
/// use livecache::Api;
/// let api = Api::builder().build();
/// let greeting = api
///     .query::<String, String>("greeting")
///     .query_fn(|name: String| async move { Ok(format!("hello, {name}")) })
///     .build()?;
/// let sub = greeting.subscribe("ada".to_string())?;
/// assert_eq!(sub.loaded().await.as_deref().map(String::as_str), Ok("hello, ada"));
/// drop(sub); // unsubscribes; the entry is removed 60 s later
/// # Ok(()) }
/// ```
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription<T> {
    owner: Arc<Owner>,
    id: SubscriptionId,
    key: CacheKey,
    lifetime: LifetimeId,
    changed: signal::Receiver,
    _data: PhantomData<fn() -> T>,
}

impl<T: Data> Subscription<T> {
    pub(crate) fn new(
        owner: Arc<Owner>,
        id: SubscriptionId,
        key: CacheKey,
        lifetime: LifetimeId,
        changed: signal::Receiver,
    ) -> Self {
        Subscription {
            owner,
            id,
            key,
            lifetime,
            changed,
            _data: PhantomData,
        }
    }

    /// The cache key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let ep = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let sub = ep.subscribe(21)?;
    /// assert_eq!(sub.key().as_str(), "double(21)");
    /// # Ok(()) }
    /// ```
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The entry's current state. The data is shared, not copied.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let ep = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let sub = ep.subscribe(21)?;
    /// assert!(sub.state().is_loading());
    /// sub.loaded().await.ok();
    /// assert_eq!(sub.state().data(), Some(&42));
    /// # Ok(()) }
    /// ```
    pub fn state(&self) -> QueryState<T> {
        read_state(&self.owner.shared.lock(), &self.key, Some(self.lifetime))
    }

    /// The entry's states as a stream: the current state first, then the latest state after
    /// each change. A slow reader skips intermediate states (memory never grows). The stream
    /// ends, after one last `Uninitialized` state, when the entry is removed.
    ///
    /// # Cancel safety
    ///
    /// The stream holds no state but which change it last reported: dropping it loses nothing,
    /// and a new one starts from the entry's current state.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// use futures::StreamExt;
    /// # let api = livecache::Api::builder().build();
    /// # let ep = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let sub = ep.subscribe(21)?;
    /// let mut changes = sub.changes(); // Unpin: no pinning needed
    /// while let Some(state) = changes.next().await {
    ///     if let Some(n) = state.data() {
    ///         assert_eq!(*n, 42);
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn changes(&self) -> impl Stream<Item = QueryState<T>> + Send + Unpin + 'static {
        let shared = Arc::downgrade(&self.owner.shared);
        let key = self.key.clone();
        let lifetime = self.lifetime;
        let mut changed = self.changed.clone();
        changed.mark_changed();
        Box::pin(futures::stream::unfold(
            (changed, false),
            move |(mut changed, ended)| {
                let shared = shared.clone();
                let key = key.clone();
                async move {
                    if ended {
                        return None;
                    }
                    let ended = changed.changed().await.is_err();
                    let state = match shared.upgrade() {
                        Some(shared) if !ended => read_state(&shared.lock(), &key, Some(lifetime)),
                        _ => QueryState::uninitialized(),
                    };
                    Some((state, (changed, ended)))
                }
            },
        ))
    }

    /// Wait for the entry's data: the first data, or the data it already has. A rejected request
    /// keeps waiting (the next request may succeed); removal ends the wait with [`EntryRemoved`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future only stops waiting; the subscription and the entry are
    /// untouched, and a later call waits again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let ep = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let sub = ep.subscribe(21)?;
    /// assert_eq!(*sub.loaded().await.expect("not removed"), 42);
    /// # Ok(()) }
    /// ```
    pub async fn loaded(&self) -> Result<Arc<T>, EntryRemoved> {
        let mut changed = self.changed.clone();
        loop {
            if let Some(data) = self.state().data {
                return Ok(data);
            }
            if changed.changed().await.is_err() {
                return self.state().data.ok_or(EntryRemoved);
            }
        }
    }

    /// Wait for the entry to settle (R35): its data once it is fulfilled, or the error of the
    /// request that failed — whichever comes first, and at once if the entry has settled already
    /// and no request is in flight. Unlike [`Subscription::loaded`], a failing query never
    /// leaves the caller waiting: the failure is the result. Removal ends the wait with
    /// [`NotSettled::Removed`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let price = api
    ///     .query::<String, u32>("price")
    ///     .query_fn(|sym: String| async move {
    ///         if sym == "ACME" { Ok(42) } else { Err("500 Internal Server Error".into()) }
    ///     })
    ///     .build()?;
    /// assert_eq!(*price.subscribe("ACME".into())?.settled().await.expect("data"), 42);
    /// let failed = price.subscribe("NOPE".into())?.settled().await;
    /// assert!(matches!(failed, Err(livecache::NotSettled::Rejected(e)) if e.to_string().contains("500")));
    /// # Ok(()) }
    /// ```
    pub async fn settled(&self) -> Result<Arc<T>, NotSettled> {
        let mut changed = self.changed.clone();
        loop {
            let state = self.state();
            if state.phase.is_none() {
                // The entry's lifetime ended.
                return Err(NotSettled::Removed(EntryRemoved));
            }
            if !state.is_fetching {
                match (state.status, state.data, state.error) {
                    (Status::Fulfilled, Some(data), _) => return Ok(data),
                    (Status::Rejected, _, Some(error)) => return Err(NotSettled::Rejected(error)),
                    _ => {}
                }
            }
            if changed.changed().await.is_err() {
                return Err(NotSettled::Removed(EntryRemoved));
            }
        }
    }

    /// Refetch (R11): starts a request, or joins the one in flight (R3).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let ep = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// let sub = ep.subscribe(21)?;
    /// sub.loaded().await.ok();
    /// sub.refetch().expect("live");
    /// assert!(sub.state().is_fetching);
    /// # Ok(()) }
    /// ```
    pub fn refetch(&self) -> Result<(), EntryRemoved> {
        let id = self.id;
        let done = self
            .owner
            .shared
            .with(|state, now| state.cache.refetch(now, id));
        if done { Ok(()) } else { Err(EntryRemoved) }
    }

    /// Poll the entry every `interval` while this subscription lives (R37, RTK's
    /// `pollingInterval`); `None` (or zero) stops this subscription's polling. The entry polls
    /// at the minimum interval of its polling subscriptions, one interval after each request
    /// settles; each poll is an ordinary request (reason `poll`, which the lifecycle hears of).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::BoxError> {
    /// # use std::sync::atomic::{AtomicU32, Ordering};
    /// # use std::sync::Arc;
    /// # let api = livecache::Api::builder().build();
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let counted = Arc::clone(&calls);
    /// let ticker = api
    ///     .query::<(), u32>("ticker")
    ///     .query_fn(move |()| {
    ///         let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
    ///         async move { Ok(n) }
    ///     })
    ///     .build()?;
    /// let sub = ticker.subscribe(())?;
    /// sub.poll_every(Some(std::time::Duration::from_secs(5)))?;
    /// sub.loaded().await?;
    /// tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    /// assert_eq!(calls.load(Ordering::SeqCst), 3); // at 0, 5 s and 10 s
    /// # Ok(()) }
    /// ```
    pub fn poll_every(&self, interval: Option<std::time::Duration>) -> Result<(), EntryRemoved> {
        let id = self.id;
        let ms = interval.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let done = self
            .owner
            .shared
            .with(|state, now| state.cache.set_polling(now, id, ms));
        if done { Ok(()) } else { Err(EntryRemoved) }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let id = self.id;
        self.owner
            .shared
            .with(|state, now| state.cache.unsubscribe(now, id));
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .field("id", &self.id)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}
