//! livecache — a live query cache with a proven entry lifecycle.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;
