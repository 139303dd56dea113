//! The sans-IO core: every SPEC rule is decided here, and nowhere else.
//!
//! The core takes events with the current time and returns effects; it never blocks, spawns,
//! sleeps or reads a clock (the quinn-proto shape). See `docs/semantics.md` for the exact
//! behaviour of every operation.

pub mod cache;
pub mod config;
pub mod data;
pub mod entry;
pub(crate) mod ids;
pub mod key;
pub mod patch;
pub mod status;
pub mod trace;

pub use cache::{
    Cache, CacheConfig, DEFAULT_TRACE_LIMIT, Effect, EndpointId, EntryView, Event, Outcome,
    PatchError, Recipe, SubscriptionId, UpdateError,
};
pub use config::{EndpointConfig, Keep, MAX_KEEP_MS, Refetch};
pub use data::CacheData;
pub use patch::PatchSet;
pub use status::{Phase, Status};
