//! The tokio runtime: the [`Api`] users call. It turns the sans-IO core's effects into tasks and
//! futures and decides no rule of its own (every decision is the core's).

mod api;
mod endpoint;
mod erased;
mod error;
mod lifecycle;
mod shared;
mod signal;
mod state;
mod stream;
mod subscription;

pub use api::{Api, ApiBuilder};
pub use endpoint::{Arg, Endpoint, EndpointBuilder, NoQueryFn, PatchCollection, WithQueryFn};
pub use erased::Data;
pub use error::{BoxError, EntryRemoved, Error, QueryError, RemovedBeforeLoaded, UpdateError};
pub use lifecycle::{Added, DataLoaded, EntryHandle, HandleState, Loaded};
pub use state::QueryState;
pub use stream::{StreamEnd, StreamEndReason, StreamError};
pub use subscription::Subscription;
