//! # livecache — a live query cache with a proven entry lifecycle
//!
//! livecache brings RTK Query's `onCacheEntryAdded` to Rust: a cache entry is created when first
//! subscribed, loads its data, can be kept live by a stream of updates, and is removed when its
//! last subscriber has been gone for `keep_unused_data_for` (60 s by default).
//!
//! ## The runtime
//!
//! An [`Api`] holds one cache. Each [`Endpoint`] has a query function that fetches an entry's
//! data and, optionally, an `on_cache_entry_added` handler that runs once per entry lifetime
//! with an [`EntryHandle`] and can keep the entry live. A [`Subscription`] keeps its entry alive
//! and reads it; dropping it starts the entry's grace period. (The runtime is the default feature
//! `runtime`; with `default-features = false` only the sans-IO [`core`] is built.)
//!
//! ```
//! # #[cfg(feature = "runtime")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), livecache::BoxError> {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use livecache::Api;
//! use livecache::core::{Phase, Status, TraceKind};
//!
//! let api = Api::builder().keep_unused_data_for(Duration::from_secs(60)).build();
//! let get_messages = api
//!     .query::<String, Vec<String>>("getMessages")
//!     // The query function: the channel's history (an HTTP request in a real program).
//!     .query_fn(|channel: String| async move { Ok(vec![format!("welcome to #{channel}")]) })
//!     // The lifecycle handler: attach a live stream as soon as the entry exists. Messages
//!     // that arrive before the history are held and applied, in order, right after it.
//!     .on_cache_entry_added(|_channel, entry| async move {
//!         let live = futures::stream::iter(["hi", "hello"]); // a WebSocket in a real program
//!         let end = entry.stream(live, |messages, text| messages.push(text.to_string())).await;
//!         println!("stream ended: {}", end.reason);
//!         Ok(())
//!     })
//!     .build()?;
//!
//! // A component subscribes: the entry is added, its handler starts, then its request.
//! let sub = get_messages.subscribe("redux".to_string())?;
//! let first = sub.loaded().await?;                     // the history: the first data
//! assert_eq!(first[0], "welcome to #redux");
//!
//! // Every change to the entry wakes the subscription's change stream.
//! let mut changes = Box::pin(sub.changes());
//! while let Some(state) = changes.next().await {
//!     if state.data().is_some_and(|messages| messages.len() == 3) {
//!         break;
//!     }
//! }
//! let state = sub.state();
//! assert_eq!((state.status, state.phase), (Status::Fulfilled, Some(Phase::Streaming)));
//! assert_eq!(*state.data().expect("loaded"), ["welcome to #redux", "hi", "hello"]);
//!
//! // The component goes away; 60 s later the entry is removed (the paused clock jumps there).
//! drop((changes, sub));
//! tokio::time::sleep(Duration::from_secs(61)).await;
//! assert!(api.is_empty());
//! assert!(api.trace().iter().any(|event| matches!(event.kind, TraceKind::EntryRemoved { .. })));
//! # Ok(()) }
//! # #[cfg(not(feature = "runtime"))]
//! # fn main() {}
//! ```
//!
//! ## What livecache adds: proof
//!
//! - **A typestate lifecycle.** The core's [`core::Entry`] has one type per state —
//!   [`core::Added`], [`core::Loading`], [`core::Loaded`], [`core::Streaming`],
//!   [`core::Removed`] — with consuming transitions and sealed capability traits, and the
//!   lifecycle handle is a typestate too: an `EntryHandle<BeforeData, T>` can only wait for the
//!   first data, and only the `EntryHandle<WithData, T>` that yields can update the entry.
//!   Updating an entry that has no data, resolving data-loaded twice, or doing anything with a
//!   removed entry does not compile (the `compile-fail` crate's cases prove it).
//! - **A sans-IO core.** [`core::Cache`] decides every rule of the specification: subscriptions
//!   and removal deadlines, request matching, the lifecycle's effects, updates and RFC 6902
//!   patches. It takes events with the current time and returns effects; it never blocks,
//!   spawns, sleeps or reads a clock, so it is deterministic and cheap to check exhaustively.
//!   The runtime only carries its effects out.
//! - **A reference model.** The `livecache-model` crate states the same rules as plainly as
//!   possible; a property test, an exhaustive bounded check and a fuzz target drive the model and
//!   the core with the same operations and compare them event by event (another property test
//!   compares the runtime with the model through the public API).
//! - **Deterministic traces.** Every transition is a [`core::TraceEvent`] with the key, a
//!   logical time in milliseconds and the event's data — serde-serialisable, so lifecycles can be
//!   snapshot-tested: the crate's own rule tests do, and so can yours (`Api::trace` under a
//!   paused clock).
//!
//! ## The core alone, step by step
//!
//! The same lifecycle without the runtime: the caller feeds [`core::Cache`] events with the
//! time and carries out the effects it asks for.
//!
//! ```
//! # use livecache::core::{LifetimeId, Patches, RequestId};
//! use livecache::core::default_key;
//! use livecache::core::{Cache, CacheConfig, Effect, EndpointConfig, Phase, Refetch, Status};
//!
//! let mut cache: Cache<Vec<String>> = Cache::new(CacheConfig::default());
//! let messages = cache.add_endpoint("getMessages", EndpointConfig { has_lifecycle: true, ..Default::default() })?;
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
//! ## Guides
//!
//! In the repository, beside the crate:
//!
//! - `docs/streaming-updates.md`: RTK Query's streaming-updates guide told for Rust, end to end
//!   (`cargo run --example chat`).
//! - `docs/api.md`: the runtime: subscribing, lifecycle handles, optimistic updates, testing
//!   with traces.
//! - `docs/spec.md`: the specification: the words, the entry lifecycle and every rule (R1…).
//! - `docs/architecture.md`: the layers, what each source file holds, how the core is driven and
//!   where a new rule goes.
//! - `docs/lifecycle.md`: the state diagram, every rule, and the test that pins it.
//! - `docs/semantics.md`: each operation's exact behaviour and the order of its trace events.
//! - `docs/testing.md`: the model, the property tests, the exhaustive check, the snapshots, the
//!   compile-fail tests and fuzzing, and how to run each with more cases.
//! - `docs/performance.md`: livecache beside RTK Query and TanStack Query on the same
//!   workloads, and the cost of each operation.
//!
// Without the runtime, the front page's links to its items point at its section.
#![cfg_attr(not(feature = "runtime"), doc = "[`Api`]: #the-runtime")]
#![cfg_attr(not(feature = "runtime"), doc = "[`Endpoint`]: #the-runtime")]
#![cfg_attr(not(feature = "runtime"), doc = "[`EntryHandle`]: #the-runtime")]
#![cfg_attr(not(feature = "runtime"), doc = "[`Subscription`]: #the-runtime")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;

/// The json-patch crate the patches ([`core::Patch`]) are made with, to apply them with the same
/// version whatever version a program depends on itself (R40).
///
/// ```
/// use livecache::core::PatchSet;
/// let set = PatchSet::between(&serde_json::json!([1]), &serde_json::json!([1, 2]));
/// let mut doc = serde_json::json!([1]);
/// livecache::json_patch::patch(&mut doc, &set.patches)?;
/// assert_eq!(doc, serde_json::json!([1, 2]));
/// # Ok::<(), livecache::json_patch::PatchError>(())
/// ```
pub use json_patch;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "ws")]
pub mod ws;

#[cfg(feature = "runtime")]
pub use runtime::{
    Api, ApiBuilder, Arg, BeforeData, BoxError, Cause, Data, DataLoaded, Ended, Endpoint,
    EndpointBuilder, EntryHandle, EntryRemoved, EntrySource, Error, Fulfilled, HandleState,
    MAX_BUFFERED, Mutation, MutationBuilder, NoQueryFn, NotSettled, PatchCollection, QueryError,
    QueryState, RemovedBeforeLoaded, StreamError, Subscription, UpdateError, WithData, WithQueryFn,
};

/// The core's types a user of the runtime meets — statuses, the draft, patches, trace events,
/// stream reasons, versions, request events, the key and the keep and refetch policies — also
/// reachable from the crate root.
#[cfg(feature = "runtime")]
pub use crate::core::{
    CacheKey, Draft, HandlerOutcome, Keep, KeyOverride, Patch, PatchError, PatchSet, Phase,
    Recording, Refetch, RequestEvent, RequestReason, Resync, Status, StreamEndReason, StreamStatus,
    Tag, TraceEvent, TraceKind, UpdateSource, Version, Versioning,
};
