//! The sans-IO core: every rule of `docs/spec.md` is decided here, and nowhere else.
//!
//! The core takes events with the current time and returns effects; it never blocks, spawns,
//! sleeps or reads a clock (the quinn-proto shape). See `docs/semantics.md` for the exact
//! behaviour of every operation, [`Cache`]'s own documentation for the driving contract (which
//! method to call when, and what each returns), and `docs/architecture.md` for what each of the
//! core's files holds.
//!
//! A driver feeds it events and carries out its effects:
//!
//! ```
//! # use livecache::core::RequestId;
//! use livecache::core::{Cache, Effect, EndpointConfig, Phase, Refetch, CacheKey};
//! let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
//! let ep = cache.add_endpoint("messages", EndpointConfig::default())?;
//! let key = CacheKey::verbatim("messages(1)");
//! let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
//! // The core asks for the data; the driver fetches it and reports the result.
//! let mut request = None;
//! while let Some(effect) = cache.poll_effect() {
//!     if let Effect::StartRequest { request: id, .. } = effect {
//!         request = Some(id);
//!     }
//! }
//! cache.fulfil(5, &key, request.unwrap_or(RequestId(0)), vec![1, 2]);
//! let entry = cache.entry(&key).unwrap();
//! assert_eq!((entry.phase, entry.data), (Phase::Loaded, Some(&vec![1, 2])));
//! // The last subscriber leaves: the entry stays for its keep time (60 s), then goes.
//! cache.unsubscribe(10, sub);
//! assert_eq!(cache.poll_timeout(), Some(60_010));
//! cache.handle_timeout(60_010);
//! assert!(cache.entry(&key).is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attachment;
mod cache;
mod config;
mod connection;
mod data;
mod entry;
pub(crate) mod ids;
mod key;
mod patch;
pub(crate) mod patch_log;
mod retry;
mod status;
mod stream_status;
mod tag;
mod trace;
mod version;

#[cfg(test)]
mod observed_details;

pub use attachment::{
    Attachment, Finish, FirstData, Overflow, Received, StreamEnd, StreamEndReason,
};
pub use cache::{
    Cache, CacheConfig, DEFAULT_TRACE_BYTE_BUDGET, DEFAULT_TRACE_LIMIT, Delivery, Effect,
    EndpointId, EntryView, HandlerId, KeyInUse, LifetimeId, LifetimePlace, NameTaken, Notify,
    PatchError, Patches, RequestEvent, RequestId, RestartRefused, SubscriptionId, Undo,
    UpdateRefused, UpsertError,
};
pub use config::{EndpointConfig, Keep, MAX_KEEP_MS, Refetch, Resync, Versioning};
pub use connection::{
    ConnEffect, ConnState, Connection, ConnectionConfig, ConnectionConfigError, Frame,
};
pub use data::CacheData;
#[cfg(feature = "runtime")]
pub(crate) use entry::Recorder;
pub use entry::{
    Added, AwaitingData, Draft, Entry, HasData, Live, Loaded, Loading, Removed, Started, State,
    Streaming, Updated,
};
pub use key::{
    BigInt, CacheKey, KeyError, KeyOverride, canonical_json, default_key, key_from_override,
};
pub use patch::{Patch, PatchSet};
pub use retry::RetryPolicy;
pub use status::{Phase, Status};
pub use stream_status::StreamStatus;
pub use tag::Tag;
pub use trace::{
    AddCause, HandlerOutcome, Queue, Recording, RemoveCause, RequestReason, TRACE_TEXT_CAP,
    TraceEvent, TraceKind, UpdateSource,
};
pub use version::{Version, VersionParseError};
