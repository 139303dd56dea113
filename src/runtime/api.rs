//! The `Api`: one cache with its endpoints and configuration.

use std::sync::Arc;

use tokio::runtime::Handle;

use crate::core::{CacheConfig, Keep, Refetch};
use crate::core::{Recording, Tag, TraceEvent};
use crate::runtime::driver::{Owner, Shared};
use crate::runtime::endpoint::Arg;
use crate::runtime::endpoint_builder::EndpointBuilder;
use crate::runtime::erased::Data;
use crate::runtime::error::Error;
use crate::runtime::mutation::MutationBuilder;

/// One cache instance: its endpoints, entries, timers and trace. Cheap to clone, `Send + Sync`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), livecache::Error> {
/// use livecache::Api;
/// use std::time::Duration;
///
/// let api = Api::builder().keep_unused_data_for(Duration::from_secs(30)).build();
/// let user = api
///     .query::<u32, String>("getUser")
///     .query_fn(|id: u32| async move { Ok(format!("user #{id}")) })
///     .build()?;
/// let sub = user.subscribe(1)?;
/// assert_eq!(sub.loaded().await.ok().as_deref().map(String::as_str), Some("user #1"));
/// drop(sub);
/// tokio::time::sleep(Duration::from_secs(31)).await;
/// assert!(api.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Api {
    owner: Arc<Owner>,
}

/// Builds an [`Api`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let api = livecache::Api::builder()
///     .keep_unused_data_for(std::time::Duration::from_secs(30))
///     .refetch_on_mount_or_arg_change(true)
///     .build();
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ApiBuilder {
    keep: Keep,
    refetch_on_mount: Refetch,
    recording: Recording,
    trace_limit: Option<usize>,
    trace_byte_budget: Option<usize>,
}

impl ApiBuilder {
    /// How long unused entries are kept (RTK's `keepUnusedDataFor`; 60 s by default). A
    /// `Duration` (clamped like RTK's timers) or [`Keep::Never`].
    ///
    /// ```
    /// let builder = livecache::Api::builder().keep_unused_data_for(std::time::Duration::from_secs(30));
    /// ```
    pub fn keep_unused_data_for(mut self, keep: impl Into<Keep>) -> Self {
        self.keep = keep.into();
        self
    }

    /// Whether subscribing to a cached entry refetches it (RTK's
    /// `refetchOnMountOrArgChange`): `true`, `false` (default), or a `Duration` — refetch when
    /// the data is at least that old.
    ///
    /// ```
    /// let builder = livecache::Api::builder().refetch_on_mount_or_arg_change(std::time::Duration::from_secs(10));
    /// ```
    pub fn refetch_on_mount_or_arg_change(mut self, refetch: impl Into<Refetch>) -> Self {
        self.refetch_on_mount = refetch.into();
        self
    }

    /// What the trace records (default: events without patches).
    ///
    /// ```
    /// use livecache::core::Recording;
    /// let builder = livecache::Api::builder().recording(Recording::EventsWithPatches);
    /// ```
    pub fn recording(mut self, recording: Recording) -> Self {
        self.recording = recording;
        self
    }

    /// Build the api. It spawns its timer task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`. [`ApiBuilder::try_build`] returns an error
    /// instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let api = livecache::Api::builder().build();
    /// assert!(api.is_empty());
    /// # }
    /// ```
    pub fn build(self) -> Api {
        self.build_on(Handle::current())
    }

    /// Build the api, or [`Error::NoRuntime`] outside a tokio runtime.
    ///
    /// ```
    /// assert!(livecache::Api::builder().try_build().is_err()); // no runtime here
    /// ```
    pub fn try_build(self) -> Result<Api, Error> {
        let handle = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Ok(self.build_on(handle))
    }

    /// Keep at least the last `events` trace events (default
    /// [`DEFAULT_TRACE_LIMIT`](crate::core::DEFAULT_TRACE_LIMIT); at most twice as many are
    /// held). The trace is bounded so that a long-running api does not grow forever.
    ///
    /// ```
    /// let builder = livecache::Api::builder().trace_limit(1_000);
    /// ```
    pub fn trace_limit(mut self, events: usize) -> Self {
        self.trace_limit = Some(events);
        self
    }

    /// Hold at most `bytes` of text in the trace (default
    /// [`DEFAULT_TRACE_BYTE_BUDGET`](crate::core::DEFAULT_TRACE_BYTE_BUDGET), 4 MiB), whatever
    /// the event limit: errors and reasons come from peers, so the trace is bounded in bytes
    /// too (see [`Cache::set_trace_byte_budget`](crate::core::Cache::set_trace_byte_budget)).
    ///
    /// ```
    /// let builder = livecache::Api::builder().trace_byte_budget(1 << 20);
    /// ```
    pub fn trace_byte_budget(mut self, bytes: usize) -> Self {
        self.trace_byte_budget = Some(bytes);
        self
    }

    fn build_on(self, handle: Handle) -> Api {
        let config = CacheConfig {
            keep: self.keep,
            recording: self.recording,
        };
        let shared = Shared::new(config, self.refetch_on_mount, handle);
        if let Some(limit) = self.trace_limit {
            shared.lock().cache.set_trace_limit(limit);
        }
        if let Some(bytes) = self.trace_byte_budget {
            shared.lock().cache.set_trace_byte_budget(bytes);
        }
        Api {
            owner: Arc::new(Owner { shared }),
        }
    }
}

impl Api {
    /// An [`ApiBuilder`] with RTK's defaults.
    ///
    /// ```
    /// let builder = livecache::Api::builder(); // keep 60 s, no refetch on mount
    /// ```
    pub fn builder() -> ApiBuilder {
        ApiBuilder::default()
    }

    /// Start defining a query endpoint named `name`, with argument type `A` and data type `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// let hello = api.query::<String, String>("hello")
    ///     .query_fn(|name: String| async move { Ok(format!("hello {name}")) })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn query<A: Arg, T: Data>(&self, name: impl Into<String>) -> EndpointBuilder<A, T> {
        EndpointBuilder::new(Arc::clone(&self.owner), name.into())
    }

    /// Start defining a mutation named `name` (R39): a function with argument type `A` and
    /// result `R`, not cached by key, with `on_query_started` for optimistic updates and the
    /// tags its result invalidates.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), livecache::BoxError> {
    /// let api = livecache::Api::builder().build();
    /// let like = api
    ///     .mutation::<u32, u32>("like")
    ///     .mutation_fn(|post: u32| async move { Ok(post + 1) })
    ///     .build()?;
    /// assert_eq!(*like.mutate(41).await?, 42);
    /// # Ok(()) }
    /// ```
    pub fn mutation<A: Arg, R: Send + Sync + 'static>(
        &self,
        name: impl Into<String>,
    ) -> MutationBuilder<A, R> {
        MutationBuilder::new(Arc::clone(&self.owner), name.into())
    }

    /// Remove every entry now (RTK's `resetApiState`, R7): lifecycles see their entries
    /// removed, requests are aborted, timers cancelled. The api stays usable. The memory the
    /// cache's indexes grew to is given back (docs/performance.md says what stays: the bounded
    /// trace, chiefly).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// # let n = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) }).build()?;
    /// n.upsert_query_data(1, 1)?;
    /// api.reset();
    /// assert!(api.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn reset(&self) {
        self.owner.shared.reset();
    }

    /// Invalidate tags (R38, RTK's `invalidatesTags`): every entry whose endpoint's
    /// `provides_tags` gave a tag one of them reaches ([`Tag::reaches`]) is invalidated —
    /// refetched now if it has subscribers (or its request in flight joined), refetched when
    /// next subscribed otherwise (RTK removes those; livecache keeps their data for an instant
    /// remount). Returns how many entries it reached.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::BoxError> {
    /// use livecache::core::Tag;
    /// let api = livecache::Api::builder().build();
    /// let posts = api
    ///     .query::<u32, String>("post")
    ///     .provides_tags(|id, _| vec![Tag::id("Post", id)])
    ///     .query_fn(|id: u32| async move { Ok(format!("post {id}")) })
    ///     .build()?;
    /// let sub = posts.subscribe(7)?;
    /// sub.settled().await?;
    /// assert_eq!(api.invalidate_tags([Tag::id("Post", 7)]), 1);
    /// assert!(sub.state().is_fetching);
    /// # Ok(()) }
    /// ```
    ///
    /// [`Tag::reaches`]: crate::core::Tag::reaches
    pub fn invalidate_tags(&self, tags: impl IntoIterator<Item = Tag>) -> usize {
        let tags: Vec<Tag> = tags.into_iter().collect();
        self.owner
            .shared
            .with(|state, now| state.cache.invalidate(now, &tags))
    }

    /// The shared state, for the runtime's unit tests.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The events recorded so far (R23), with times in milliseconds since the api was built on
    /// tokio's clock — deterministic under `start_paused`, so they can be snapshot-tested.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// # let n = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) }).build()?;
    /// n.upsert_query_data(1, 1)?;
    /// let lines: Vec<String> = api.trace().iter().map(ToString::to_string).collect();
    /// assert_eq!(lines[0], "0ms n(1) entry_added lifetime=1 cause=upsert");
    /// # Ok(()) }
    /// ```
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.owner.shared.lock().cache.trace()
    }

    /// Take the events recorded so far, leaving the trace empty.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// # let n = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) }).build()?;
    /// n.upsert_query_data(1, 1)?;
    /// assert!(!api.take_trace().is_empty());
    /// assert!(api.trace().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn take_trace(&self) -> Vec<TraceEvent> {
        self.owner.shared.lock().cache.take_trace()
    }

    /// The api's clock: milliseconds since it was built.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    /// assert_eq!(api.now_ms(), 2_000);
    /// # Ok(()) }
    /// ```
    pub fn now_ms(&self) -> u64 {
        self.owner.shared.now_ms()
    }

    /// How many entries the cache holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// assert_eq!(api.len(), 0);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.owner.shared.lock().cache.len()
    }

    /// Whether the cache holds no entry.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// assert!(api.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runtime bookkeeping, for tests and diagnostics: requests running and entry lifetimes
    /// tracked. Both are zero when the cache is empty.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// let api = livecache::Api::builder().build();
    /// assert_eq!(api.in_flight(), (0, 0));
    /// # Ok(()) }
    /// ```
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.owner.shared.running_requests(),
            self.owner.shared.tracked_lifetimes(),
        )
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("entries", &self.len()).finish()
    }
}
