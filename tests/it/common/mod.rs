//! Shared test helpers: the core-driving harness lives in the model crate
//! (`livecache_model::harness`, also used by the fuzz targets); the op strategies stay here.
#![allow(dead_code)]

pub mod strategies;

pub use livecache_model::harness::*;
