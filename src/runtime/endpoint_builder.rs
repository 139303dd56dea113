//! Building an endpoint: its query function, lifecycle handler, keep time, versions, retries
//! and key, checked as a type state (no `build` before a query function).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::core::{
    Draft, EndpointConfig, Keep, KeyOverride, RetryPolicy, Tag, Version, Versioning,
};
use crate::runtime::applier::{ApplyVersioned, Plain, Versioned};
use crate::runtime::driver::Owner;
use crate::runtime::endpoint::{Arg, Endpoint, EndpointInner};
use crate::runtime::entry_source::EntrySource;
use crate::runtime::erased::Data;
use crate::runtime::error::{BoxError, Error, QueryError};
use crate::runtime::feed::{Attached, EntryInlet, SourceStart};
use crate::runtime::lifecycle::{BeforeData, EntryHandle};

/// What a query function delivered: the data, its meta if the function gives one, and the
/// snapshot's watermark on a versioned endpoint (R24).
pub(crate) struct Fetched<T, M> {
    pub(crate) data: T,
    pub(crate) meta: Option<M>,
    pub(crate) watermark: Option<Version>,
}

pub(crate) type QueryFn<A, T, M> =
    Arc<dyn Fn(A) -> BoxFuture<'static, Result<Fetched<T, M>, BoxError>> + Send + Sync>;
pub(crate) type Handler<A, T, M> = Arc<
    dyn Fn(A, EntryHandle<BeforeData, T, M>) -> BoxFuture<'static, Result<(), BoxError>>
        + Send
        + Sync,
>;
pub(crate) type Serializer<A> = Arc<dyn Fn(&A) -> KeyOverride + Send + Sync>;

/// What runs for each of an endpoint's entries: a lifecycle handler, or a source feeding it.
pub(crate) enum EntryLifecycle<A, T, M> {
    Handler(Handler<A, T, M>),
    Source(StartFeed<A>),
}

/// Attaches one entry (its argument, what the runtime gives it) to the source that feeds it,
/// with the endpoint's typed change: called under the cache's lock.
pub(crate) type StartFeed<A> = Arc<dyn Fn(&A, SourceStart) -> Attached + Send + Sync>;

impl<A, T, M> Clone for EntryLifecycle<A, T, M> {
    fn clone(&self) -> Self {
        match self {
            EntryLifecycle::Handler(handler) => EntryLifecycle::Handler(Arc::clone(handler)),
            EntryLifecycle::Source(source) => EntryLifecycle::Source(Arc::clone(source)),
        }
    }
}

/// The builder's state before a query function is given (type state): `build` does not exist.
///
/// ```compile_fail
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let api = livecache::Api::builder().build();
/// let endpoint = api.query::<u32, u32>("n").build(); // no query function: no `build`
/// # }
/// ```
#[derive(Debug)]
pub struct NoQueryFn;

/// The builder's state once a query function is given (type state).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// let builder = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) });
/// let _endpoint = builder.build()?;
/// # Ok(()) }
/// ```
pub struct WithQueryFn<A, T, M>(QueryFn<A, T, M>);

/// Builds an [`Endpoint`]; made by [`Api::query`](crate::Api::query).
///
/// The query function comes first (it fixes the meta type), then the lifecycle handler.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// let endpoint = api
///     .query::<u32, u32>("square")
///     .keep_unused_data_for(std::time::Duration::from_secs(5))
///     .query_fn(|n: u32| async move { Ok(n * n) })
///     .on_cache_entry_added(|_n, _entry| async { Ok(()) })
///     .build()?;
/// # Ok(()) }
/// ```
pub struct EndpointBuilder<A, T, M = (), Q = NoQueryFn> {
    owner: Arc<Owner>,
    name: String,
    keep: Option<Keep>,
    versions: Option<Versioning>,
    stream_failure_rejects: bool,
    retry: Option<RetryPolicy>,
    retry_if: Option<RetryIf>,
    provides_tags: Option<ProvidesTags<A, T>>,
    serialize: Option<Serializer<A>>,
    lifecycle: Option<EntryLifecycle<A, T, M>>,
    query: Q,
    _types: PhantomData<fn(A) -> (T, M)>,
}

/// The tags an entry provides, from its argument and data (R38).
pub(crate) type ProvidesTags<A, T> = Arc<dyn Fn(&A, &T) -> Vec<Tag> + Send + Sync>;

/// Which failures an endpoint retries (R36): all of them without one.
pub(crate) type RetryIf = Arc<dyn Fn(&QueryError) -> bool + Send + Sync>;

impl<A: Arg, T: Data> EndpointBuilder<A, T, (), NoQueryFn> {
    pub(crate) fn new(owner: Arc<Owner>, name: String) -> Self {
        EndpointBuilder {
            owner,
            name,
            keep: None,
            versions: None,
            stream_failure_rejects: false,
            retry: None,
            retry_if: None,
            provides_tags: None,
            serialize: None,
            lifecycle: None,
            query: NoQueryFn,
            _types: PhantomData,
        }
    }

    /// The query function: how the data is fetched (RTK's `queryFn`). Return `Ok(data)`, or
    /// any error (`?` converts it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let double = api
    ///     .query::<u32, u32>("double")
    ///     .query_fn(|n: u32| async move { Ok(n * 2) })
    ///     .build()?;
    /// assert_eq!(*double.subscribe(21)?.loaded().await.expect("live"), 42);
    /// # Ok(()) }
    /// ```
    pub fn query_fn<F, Fut>(self, query: F) -> EndpointBuilder<A, T, (), WithQueryFn<A, T, ()>>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, BoxError>> + Send + 'static,
    {
        let query: QueryFn<A, T, ()> = Arc::new(move |arg| {
            query(arg)
                .map(|r| {
                    r.map(|data| Fetched {
                        data,
                        meta: None,
                        watermark: None,
                    })
                })
                .boxed()
        });
        self.with_query(query)
    }

    /// A query function for a versioned endpoint (R24, R27): it returns the snapshot with its
    /// watermark, the version of the newest change the snapshot reflects. Messages streamed
    /// with [`EntryHandle::stream_versioned`] at or below it are dropped as duplicates, those
    /// above it applied exactly once, and a refetch's snapshot is rebased: what was applied
    /// while it ran, above its watermark, is applied again onto it. Declares the endpoint
    /// versioned with [`Versioning::default`] unless [`EndpointBuilder::versioning`] says
    /// otherwise.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Version;
    /// let feed = api
    ///     .query::<(), Vec<u64>>("feed")
    ///     .query_fn_versioned(|()| async { Ok((vec![1, 2], Version::new(2))) })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// assert_eq!(sub.state().watermark, Some(Version::new(2)));
    /// # Ok(()) }
    /// ```
    pub fn query_fn_versioned<F, Fut>(
        mut self,
        query: F,
    ) -> EndpointBuilder<A, T, (), WithQueryFn<A, T, ()>>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(T, Version), BoxError>> + Send + 'static,
    {
        self.versions.get_or_insert_with(Versioning::default);
        let query: QueryFn<A, T, ()> = Arc::new(move |arg| {
            query(arg)
                .map(|r| {
                    r.map(|(data, watermark)| Fetched {
                        data,
                        meta: None,
                        watermark: Some(watermark),
                    })
                })
                .boxed()
        });
        self.with_query(query)
    }

    /// A query function that also returns meta (RTK's `meta`, e.g. the HTTP response's status
    /// and headers), handed to the lifecycle with the first data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// #[derive(Debug, PartialEq)]
    /// struct Meta { status: u16 }
    /// let user = api
    ///     .query::<u32, String>("getUser")
    ///     .query_fn_with_meta(|id: u32| async move { Ok((format!("user {id}"), Meta { status: 200 })) })
    ///     .on_cache_entry_added(|_id, entry| async move {
    ///         if let Ok((_entry, first)) = entry.data_loaded().await {
    ///             assert_eq!(first.meta.as_deref(), Some(&Meta { status: 200 }));
    ///         }
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = user.subscribe(1)?;
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
    pub fn query_fn_with_meta<M, F, Fut>(
        self,
        query: F,
    ) -> EndpointBuilder<A, T, M, WithQueryFn<A, T, M>>
    where
        M: Send + Sync + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(T, M), BoxError>> + Send + 'static,
    {
        let query: QueryFn<A, T, M> = Arc::new(move |arg| {
            query(arg)
                .map(|r| {
                    r.map(|(data, meta)| Fetched {
                        data,
                        meta: Some(meta),
                        watermark: None,
                    })
                })
                .boxed()
        });
        self.with_query(query)
    }

    fn with_query<M>(
        self,
        query: QueryFn<A, T, M>,
    ) -> EndpointBuilder<A, T, M, WithQueryFn<A, T, M>> {
        EndpointBuilder {
            owner: self.owner,
            name: self.name,
            keep: self.keep,
            versions: self.versions,
            stream_failure_rejects: self.stream_failure_rejects,
            retry: self.retry,
            retry_if: self.retry_if,
            provides_tags: self.provides_tags,
            serialize: self.serialize,
            lifecycle: None,
            query: WithQueryFn(query),
            _types: PhantomData,
        }
    }
}

impl<A: Arg, T: Data, M, Q> EndpointBuilder<A, T, M, Q> {
    /// How long this endpoint's unused entries are kept (RTK's `keepUnusedDataFor`), overriding
    /// the api's. A `Duration` (clamped like RTK's timers) or [`Keep::Never`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::Keep;
    /// let config = api
    ///     .query::<(), String>("config")
    ///     .keep_unused_data_for(Keep::Never)
    ///     .query_fn(|()| async { Ok("dark mode".to_string()) })
    ///     .build()?;
    /// drop(config.subscribe(())?);
    /// tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    /// assert_eq!(api.len(), 1); // never removed automatically
    /// # Ok(()) }
    /// ```
    pub fn keep_unused_data_for(mut self, keep: impl Into<Keep>) -> Self {
        self.keep = Some(keep.into());
        self
    }

    /// Declare the endpoint versioned, with these rules (R24–R27, R33): whether versions are
    /// contiguous (a message further ahead than the next version is a gap, held while the
    /// entry resyncs), how it resyncs ([`Resync::Refetch`](crate::core::Resync::Refetch), or [`Resync::Resume`](crate::core::Resync::Resume) from a source
    /// that replays: a shared connection, or one of your own through
    /// [`EntryHandle::resume_requests`](crate::EntryHandle::resume_requests)), and how many
    /// messages each queue holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::{Version, Versioning};
    /// let chat = api
    ///     .query::<(), Vec<String>>("chat")
    ///     .versioning(Versioning { contiguous: true, ..Versioning::default() })
    ///     .query_fn_versioned(|()| async { Ok((vec![], Version::new(0))) })
    ///     .build()?;
    /// # drop(chat);
    /// # Ok(()) }
    /// ```
    pub fn versioning(mut self, versioning: Versioning) -> Self {
        self.versions = Some(versioning);
        self
    }

    /// A stream that fails makes the query fail too (R28; RTK #2685, #4962): while an entry's
    /// stream status is `Failed`, its `status` reads `Rejected` and `is_error()` is true —
    /// with `error` the stream's failure when no request failed — whatever its requests did.
    /// Off by default: the query status is the requests' alone, and a failed stream shows only
    /// in [`QueryState::stream`](crate::QueryState::stream).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::{Status, StreamStatus};
    /// let feed = api
    ///     .query::<(), Vec<u32>>("feed")
    ///     .stream_failure_rejects(true)
    ///     .query_fn(|()| async { Ok(vec![]) })
    ///     .on_cache_entry_added(|(), entry| async move {
    ///         let failed = StreamStatus::Failed { error: "socket reset".into() };
    ///         entry.report_stream_status(failed)?;
    ///         entry.removed().await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = feed.subscribe(())?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// let state = sub.state();
    /// assert_eq!(state.status, Status::Rejected);
    /// assert_eq!(state.error.as_ref().map(|e| e.to_string()).as_deref(), Some("socket reset"));
    /// assert_eq!(state.data(), Some(&vec![]));      // the data stays
    /// # Ok(()) }
    /// ```
    pub fn stream_failure_rejects(mut self, rejects: bool) -> Self {
        self.stream_failure_rejects = rejects;
        self
    }

    /// Retry a failed query function (R36): up to `policy.max_retries` times, with exponential
    /// backoff and jitter ([`RetryPolicy::delay_ms`]). While retrying, the request stays in
    /// flight and the status `Pending`; `Rejected` shows the last error; retries stop when the
    /// entry is removed. Which failures are retried: [`EndpointBuilder::retry_if`] (all of them
    /// by default; a panicking query function never).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::BoxError> {
    /// # use std::sync::atomic::{AtomicU32, Ordering};
    /// # use std::sync::Arc;
    /// use livecache::core::RetryPolicy;
    /// # let api = livecache::Api::builder().build();
    /// let attempts = Arc::new(AtomicU32::new(0));
    /// let counted = Arc::clone(&attempts);
    /// let flaky = api
    ///     .query::<(), u32>("flaky")
    ///     .retry(RetryPolicy { max_retries: 3, base_ms: 100, max_ms: 1_000, jitter_percent: 0, seed: 0 })
    ///     .query_fn(move |()| {
    ///         let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
    ///         async move { if n < 3 { Err("503 Service Unavailable".into()) } else { Ok(n) } }
    ///     })
    ///     .build()?;
    /// let sub = flaky.subscribe(())?;
    /// assert_eq!(*sub.settled().await?, 3);           // failed twice, retried after 100 and 200 ms
    /// assert_eq!(attempts.load(Ordering::SeqCst), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// [`RetryPolicy::delay_ms`]: crate::core::RetryPolicy::delay_ms
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The tags each entry provides, from its argument and data (R38, RTK's `providesTags`):
    /// recomputed with every result and upsert. [`Api::invalidate_tags`] refetches the
    /// subscribed entries providing a tag it reaches and marks the others to refetch when next
    /// subscribed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use livecache::core::Tag;
    /// # let api = livecache::Api::builder().build();
    /// let posts = api
    ///     .query::<u32, String>("post")
    ///     .provides_tags(|id, _post| vec![Tag::id("Post", id)]);
    /// # }
    /// ```
    ///
    /// [`Api::invalidate_tags`]: crate::Api::invalidate_tags
    pub fn provides_tags(
        mut self,
        tags: impl Fn(&A, &T) -> Vec<Tag> + Send + Sync + 'static,
    ) -> Self {
        self.provides_tags = Some(Arc::new(tags));
        self
    }

    /// Retry only the failures `retryable` accepts (R36), e.g. not a 404.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let api = livecache::Api::builder().build();
    /// let quotes = api
    ///     .query::<String, f64>("quote")
    ///     .retry(livecache::core::RetryPolicy::default())
    ///     .retry_if(|error| !error.to_string().contains("404"));
    /// # }
    /// ```
    pub fn retry_if(
        mut self,
        retryable: impl Fn(&QueryError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(retryable));
        self
    }

    /// Compute the cache key yourself (RTK's `serializeQueryArgs`): a
    /// [`KeyOverride::Verbatim`] string is the key as it is; a [`KeyOverride::Value`] is keyed
    /// the default way under the endpoint's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// use livecache::core::KeyOverride;
    /// let page = api
    ///     .query::<(String, u32), Vec<String>>("page")
    ///     .serialize_query_args(|(list, _page): &(String, u32)| KeyOverride::Verbatim(format!("list-{list}")))
    ///     .query_fn(|(_list, page): (String, u32)| async move { Ok(vec![format!("page {page}")]) })
    ///     .build()?;
    /// assert_eq!(page.key(&("todo".into(), 3))?.as_str(), "list-todo");
    /// # Ok(()) }
    /// ```
    pub fn serialize_query_args(
        mut self,
        serialize: impl Fn(&A) -> KeyOverride + Send + Sync + 'static,
    ) -> Self {
        self.serialize = Some(Arc::new(serialize));
        self
    }
}

impl<A: Arg, T: Data, M: Send + Sync + 'static> EndpointBuilder<A, T, M, WithQueryFn<A, T, M>> {
    /// The lifecycle handler (RTK's `onCacheEntryAdded`): called once per entry lifetime with
    /// the entry's original argument and a handle in state [`BeforeData`] (R12). Return `Ok(())`,
    /// or an error; either way, and even if it panics, the cache carries on and the outcome is
    /// traced (R16).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let ticker = api
    ///     .query::<String, Vec<f64>>("ticker")
    ///     .query_fn(|_symbol: String| async move { Ok(vec![1.0]) })
    ///     .on_cache_entry_added(|_symbol, entry| async move {
    ///         let Ok((entry, _first)) = entry.data_loaded().await else { return Ok(()) };
    ///         entry.update_cached_data(|prices| prices.push(1.5))?;
    ///         entry.removed().await;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// let sub = ticker.subscribe("ACME".into())?;
    /// sub.loaded().await.ok();
    /// tokio::task::yield_now().await;
    /// assert_eq!(sub.state().data().map(Vec::len), Some(2));
    /// # Ok(()) }
    /// ```
    pub fn on_cache_entry_added<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(A, EntryHandle<BeforeData, T, M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.lifecycle = Some(EntryLifecycle::Handler(Arc::new(move |arg, entry| {
            handler(arg, entry).boxed()
        })));
        self
    }

    /// Feed every entry from `source`, in place of a lifecycle handler: the source's own task
    /// applies each of the entry's messages with `apply` — held until its first data, then in
    /// arrival order (R21), or by the version rules if the source is versioned (R24–R26: stale
    /// ones dropped, a gap resynced, every other one applied exactly once) — reports its stream
    /// status (R28) and resyncs it (R32); removal or a restart (R30) ends the attachment. No
    /// task or future is kept per entry (see [`EntrySource`]). An endpoint has one or the
    /// other: this replaces a handler given before, and
    /// [`EndpointBuilder::on_cache_entry_added`] replaces a source.
    ///
    /// `apply` may run more than once for a message the core keeps — held past a gap, or logged
    /// while a request is in flight, for the rebase of R27 — each time on a clone of it, so it
    /// must make the same change each time.
    ///
    /// ```no_run
    /// # #[cfg(feature = "ws")]
    /// # async fn run() -> Result<(), livecache::Error> {
    /// use livecache::ws::shared::{JsonFraming, SharedConnection};
    /// let api = livecache::Api::builder().build();
    /// let connection = SharedConnection::builder("ws://127.0.0.1:8080/ws", JsonFraming::<String>::new())
    ///     .spawn()?;
    /// let rooms = api
    ///     .query::<String, Vec<String>>("room")
    ///     .query_fn(|_room: String| async { Ok(Vec::new()) })
    ///     .stream_from(connection.source(|room: &String| room.clone()), |lines, line| lines.push(line))
    ///     .build()?;
    /// let sub = rooms.subscribe("general".into())?;
    /// # drop(sub); Ok(()) }
    /// ```
    pub fn stream_from<Msg>(
        mut self,
        source: EntrySource<A, Msg>,
        apply: impl Fn(&mut Draft<'_, T>, Msg) + Send + Sync + 'static,
    ) -> Self
    where
        Msg: Clone + Send + Sync + 'static,
    {
        let apply: ApplyVersioned<T, Msg> = Arc::new(apply);
        let EntrySource { attach, version } = source;
        self.lifecycle = Some(EntryLifecycle::Source(Arc::new(
            move |arg: &A, start: SourceStart| {
                let inlet: Box<dyn EntryInlet<Msg>> = match &version {
                    Some(version) => {
                        let version = Arc::clone(version);
                        let read = move |message: &Msg| version(message);
                        Box::new(start.feed(Versioned::shared(read, Arc::clone(&apply))))
                    }
                    None => {
                        let apply = Arc::clone(&apply);
                        let plain = move |draft: &mut Draft<'_, T>, message| apply(draft, message);
                        Box::new(start.feed(Plain(plain)))
                    }
                };
                attach(arg, start, inlet)
            },
        )));
        self
    }

    /// Register the endpoint. Fails if the api already has an endpoint of this name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// let first = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) }).build();
    /// let second = api.query::<u32, u32>("n").query_fn(|n: u32| async move { Ok(n) }).build();
    /// assert!(first.is_ok());
    /// assert!(matches!(second, Err(livecache::Error::DuplicateEndpoint { .. })));
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<Endpoint<A, T, M>, Error> {
        let name = self.name;
        let config = EndpointConfig {
            keep: self.keep,
            has_lifecycle: self.lifecycle.is_some(),
            versions: self.versions,
            stream_failure_rejects: self.stream_failure_rejects,
            retry: self.retry,
        };
        let id = self
            .owner
            .shared
            .with(|state, _| state.cache.add_endpoint(name.clone(), config))?;
        Ok(Endpoint {
            owner: self.owner,
            inner: Arc::new(EndpointInner {
                id,
                name,
                query: self.query.0,
                lifecycle: self.lifecycle,
                serialize: self.serialize,
                retry_if: self.retry_if,
                provides_tags: self.provides_tags,
            }),
        })
    }
}
