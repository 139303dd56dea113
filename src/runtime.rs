//! The tokio runtime: the [`Api`] users call. It turns the sans-IO core's effects into tasks and
//! futures and decides no rule of its own (every decision is the core's); `driver.rs` holds the
//! core and carries its effects out. `docs/architecture.md` says what the runtime may and may
//! not do. Its items are re-exported at the crate root.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), livecache::Error> {
//! use livecache::Api;
//! let api = Api::builder().build();
//! let users = api
//!     .query::<u32, String>("user")
//!     .query_fn(|id: u32| async move { Ok(format!("user {id}")) })
//!     .build()?;
//! let sub = users.subscribe(1)?;
//! let data = sub.loaded().await.ok();
//! assert_eq!(data.as_deref().map(String::as_str), Some("user 1"));
//! # Ok(()) }
//! ```

mod api;
pub(crate) mod applier;
mod cause;
mod driver;
mod ending;
mod endpoint;
mod endpoint_builder;
pub(crate) mod entry_source;
mod erased;
mod error;
pub(crate) mod feed;
pub(crate) mod lifecycle;
mod mutation;
mod patch_collection;
mod resume;
mod signal;
pub(crate) mod source_link;
mod state;
mod stream;
mod subscription;
mod typed_recipe;

pub use api::{Api, ApiBuilder};
pub use cause::Cause;
pub use ending::Ended;
pub use endpoint::{Arg, Endpoint};
pub use endpoint_builder::{EndpointBuilder, NoQueryFn, WithQueryFn};
pub use entry_source::EntrySource;
pub use erased::Data;
pub use error::{
    BoxError, EntryRemoved, Error, NotSettled, QueryError, RemovedBeforeLoaded, UpdateError,
};
pub use lifecycle::{BeforeData, DataLoaded, EntryHandle, HandleState, WithData};
pub use mutation::{Fulfilled, Mutation, MutationBuilder};
pub use patch_collection::PatchCollection;
pub use state::QueryState;
pub use stream::{MAX_BUFFERED, StreamError};
pub use subscription::Subscription;
