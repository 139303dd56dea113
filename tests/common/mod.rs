//! Shared test helpers: the core-driving harness lives in the check crate
//! (`livecache_check::harness`, also used by the fuzz targets); the op strategies stay here.
#![allow(dead_code)]

pub mod strategies;
#[cfg(feature = "tls")]
pub mod tls;
pub mod waits;

pub use livecache_check::harness::*;
