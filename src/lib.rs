//! # livecache — a live query cache with a proven entry lifecycle
//!
//! livecache brings RTK Query's `onCacheEntryAdded` to Rust: a cache entry is created when first
//! subscribed, loads its data, can be kept live by a stream of updates, and is removed when its
//! last subscriber has been gone for `keep_unused_data_for` (60 s by default). What livecache adds
//! is proof:
//!
//! - **A typestate lifecycle.** [`core::entry`] gives each state its own type — `Added`,
//!   `Loading`, `Loaded`, `Streaming`, `Removed` — with consuming transitions and sealed
//!   capability traits. Updating an entry that has no data, resolving data-loaded twice, or doing
//!   anything with a removed entry does not compile.
//! - **A sans-IO core.** [`core::Cache`] decides every rule of the specification: subscriptions
//!   and removal deadlines, request matching, the lifecycle's effects, updates and RFC 6902
//!   patches. It takes events with the current time and returns effects; it never blocks,
//!   spawns, sleeps or reads a clock, so it is deterministic and cheap to check exhaustively.
//! - **A reference model.** The `livecache-model` crate states the same rules as plainly as
//!   possible; a property test and an exhaustive bounded check drive both with the same
//!   operations and compare them event by event.
//! - **Deterministic traces.** Every transition is a [`core::TraceEvent`] with the key, a
//!   logical time in milliseconds and the event's data — serde-serialisable, so lifecycles can be
//!   snapshot-tested.
//!
//! ## A lifecycle, step by step
//!
//! ```
//! # use livecache::core::{LifetimeId, Patches, RequestId};
//! use livecache::core::default_key;
//! use livecache::core::{Cache, CacheConfig, Effect, EndpointConfig, Phase, Refetch, Status};
//!
//! let mut cache: Cache<Vec<String>> = Cache::new(CacheConfig::default());
//! let messages = cache.add_endpoint("getMessages", EndpointConfig { keep: None, has_lifecycle: true })?;
//! let key = default_key("getMessages", "redux")?;
//! assert_eq!(key.as_str(), r#"getMessages("redux")"#);  // RTK-compatible keys
//!
//! // A subscriber arrives: the entry is added, its lifecycle handler starts, then its request.
//! let subscription = cache.subscribe(0, messages, &key, Refetch::IfMissing)?;
//! let effects: Vec<_> = std::iter::from_fn(|| cache.poll_effect()).collect();
//! assert!(matches!(effects[0], Effect::StartLifecycle { lifetime: LifetimeId(1), .. }));
//! assert!(matches!(effects[1], Effect::StartRequest { request: RequestId(1), .. }));
//!
//! // The request fulfils: data-loaded resolves for the lifecycle handler.
//! cache.fulfil(100, &key, RequestId(1), vec!["welcome".to_string()]);
//! assert!(std::iter::from_fn(|| cache.poll_effect())
//!     .any(|e| matches!(e, Effect::ResolveDataLoaded { lifetime: LifetimeId(1), .. })));
//!
//! // The lifecycle streams a message in; the entry is now Streaming.
//! cache.update_cached(200, LifetimeId(1), Patches::NotWanted, |messages| messages.push("hi".to_string()))?;
//! let entry = cache.entry(&key).expect("subscribed");
//! assert_eq!((entry.phase, entry.status), (Phase::Streaming, Status::Fulfilled));
//!
//! // The last subscriber leaves; 60 s later the entry is removed and its lifecycle told so.
//! cache.unsubscribe(1_000, subscription);
//! assert_eq!(cache.poll_timeout(), Some(61_000));
//! cache.handle_timeout(61_000);
//! assert!(cache.entry(&key).is_none());
//! assert!(std::iter::from_fn(|| cache.poll_effect())
//!     .any(|e| matches!(e, Effect::EntryRemoved { lifetime: LifetimeId(1), loaded: true, .. })));
//! assert_eq!(cache.trace().len(), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Where to read on
//!
//! - `docs/lifecycle.md`: the state diagram, every rule, and the test that pins it.
//! - `docs/semantics.md`: each operation's exact behaviour and the order of its trace events.
//! - `docs/testing.md`: the model, the property test, the exhaustive check, the snapshots and the
//!   compile-fail tests, and how to run each with more cases.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "ws")]
pub mod ws;

#[cfg(feature = "runtime")]
pub use runtime::{
    Api, ApiBuilder, Arg, BeforeData, BoxError, Data, DataLoaded, Endpoint, EndpointBuilder,
    EntryHandle, EntryRemoved, Error, HandleState, NoQueryFn, PatchCollection, QueryError,
    QueryState, RemovedBeforeLoaded, StreamError, Subscription, UpdateError, WithData, WithQueryFn,
};
