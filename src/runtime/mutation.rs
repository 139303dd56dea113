//! Mutations (R39): a function that changes something on the server, not cached by key, with
//! `on_query_started` for optimistic updates (update, await the result, undo on failure) and
//! tags its result invalidates.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::core::Tag;
use crate::runtime::driver::Owner;
use crate::runtime::endpoint::Arg;
use crate::runtime::error::{BoxError, Error, QueryError};

type MutationFn<A, R> =
    Arc<dyn Fn(A) -> BoxFuture<'static, Result<R, BoxError>> + Send + Sync + 'static>;
type Started<A, R> =
    Arc<dyn Fn(A, Fulfilled<R>) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;
type Invalidates<A, R> =
    Arc<dyn Fn(&A, Result<&R, &QueryError>) -> Vec<Tag> + Send + Sync + 'static>;

/// The result of a mutation, as its `on_query_started` handler awaits it (RTK's
/// `queryFulfilled`). Cloneable: every clone resolves with the same result.
pub type Fulfilled<R> = Shared<BoxFuture<'static, Result<Arc<R>, QueryError>>>;

/// Builds a [`Mutation`]; made by [`Api::mutation`](crate::Api::mutation).
pub struct MutationBuilder<A, R> {
    owner: Arc<Owner>,
    name: String,
    run: Option<MutationFn<A, R>>,
    started: Option<Started<A, R>>,
    invalidates: Option<Invalidates<A, R>>,
    _types: PhantomData<fn(A) -> R>,
}

impl<A: Arg, R: Send + Sync + 'static> MutationBuilder<A, R> {
    pub(crate) fn new(owner: Arc<Owner>, name: String) -> Self {
        MutationBuilder {
            owner,
            name,
            run: None,
            started: None,
            invalidates: None,
            _types: PhantomData,
        }
    }

    /// The function that performs the mutation (a POST, say).
    pub fn mutation_fn<F, Fut>(mut self, run: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, BoxError>> + Send + 'static,
    {
        self.run = Some(Arc::new(move |arg| run(arg).boxed()));
        self
    }

    /// Run when a mutation starts, before its function (RTK's `onQueryStarted`): make the
    /// optimistic update, await the result, undo on failure. Its error is its own: the
    /// mutation's result is unchanged by it.
    pub fn on_query_started<F, Fut>(mut self, started: F) -> Self
    where
        F: Fn(A, Fulfilled<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.started = Some(Arc::new(move |arg, fulfilled| {
            started(arg, fulfilled).boxed()
        }));
        self
    }

    /// The tags the mutation's result invalidates (R38, RTK's `invalidatesTags`), from its
    /// argument and its result or error.
    pub fn invalidates_tags(
        mut self,
        tags: impl Fn(&A, Result<&R, &QueryError>) -> Vec<Tag> + Send + Sync + 'static,
    ) -> Self {
        self.invalidates = Some(Arc::new(tags));
        self
    }

    /// The mutation. Without a mutation function it is an error.
    pub fn build(self) -> Result<Mutation<A, R>, Error> {
        let Some(run) = self.run else {
            return Err(Error::Unsupported {
                name: self.name,
                what: "a mutation needs a mutation function (mutation_fn)".into(),
            });
        };
        Ok(Mutation {
            inner: Arc::new(Inner {
                owner: self.owner,
                name: self.name,
                run,
                started: self.started,
                invalidates: self.invalidates,
            }),
        })
    }
}

struct Inner<A, R> {
    owner: Arc<Owner>,
    name: String,
    run: MutationFn<A, R>,
    started: Option<Started<A, R>>,
    invalidates: Option<Invalidates<A, R>>,
}

/// A mutation (R39): run it with [`Mutation::mutate`]. Cloning is cheap.
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
/// let rename = api
///     .mutation::<(u32, String), ()>("renamePost")
///     .mutation_fn(|(_id, _title): (u32, String)| async { Err("500".into()) })
///     .on_query_started({
///         let posts = posts.clone();
///         move |(id, title), fulfilled| {
///             let posts = posts.clone();
///             async move {
///                 let change = posts.update_query_data(&id, |post| post.set(title))?;
///                 if fulfilled.await.is_err() {
///                     change.undo()?; // the server said no: roll back
///                 }
///                 Ok(())
///             }
///         }
///     })
///     .invalidates_tags(|(id, _), _| vec![Tag::id("Post", id)])
///     .build()?;
/// let sub = posts.subscribe(1)?;
/// sub.settled().await?;
/// assert!(rename.mutate((1, "new".into())).await.is_err());
/// assert_eq!(sub.state().data().map(String::as_str), Some("post 1")); // rolled back
/// # Ok(()) }
/// ```
pub struct Mutation<A, R> {
    inner: Arc<Inner<A, R>>,
}

impl<A, R> Clone for Mutation<A, R> {
    fn clone(&self) -> Self {
        Mutation {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: Arg, R: Send + Sync + 'static> Mutation<A, R> {
    /// The mutation's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Run the mutation: its `on_query_started` handler first (its updates happen before the
    /// function runs), then the function; the handler sees the result; then the tags the result
    /// invalidates are invalidated (R38). Resolves with the result once the handler is done too.
    pub async fn mutate(&self, arg: A) -> Result<Arc<R>, QueryError> {
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = futures::channel::oneshot::channel::<Result<Arc<R>, QueryError>>();
        let fulfilled: Fulfilled<R> = rx
            .map(|result| {
                result.unwrap_or_else(|_| Err(QueryError::new("the mutation was dropped")))
            })
            .boxed()
            .shared();
        let handler = inner
            .started
            .as_ref()
            .map(|started| started(arg.clone(), fulfilled.clone()));
        let (run, run_arg) = (Arc::clone(&inner.run), arg.clone());
        // The function is called when this is first polled, after the handler's first poll.
        let mutation = async move {
            let result = run(run_arg).await.map(Arc::new).map_err(QueryError::new);
            let _ = tx.send(result.clone());
            result
        };
        let result = match handler {
            // The handler is polled first: its synchronous part (the optimistic update) runs
            // before the mutation function does. Its own error is its own (see
            // `on_query_started`).
            Some(handler) => futures::join!(handler, mutation).1,
            None => mutation.await,
        };
        if let Some(invalidates) = &inner.invalidates {
            let tags = invalidates(&arg, result.as_deref());
            if !tags.is_empty() {
                inner
                    .owner
                    .shared
                    .with(|state, now| state.cache.invalidate(now, &tags));
            }
        }
        result
    }
}
