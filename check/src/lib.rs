//! What checks livecache against its reference model (`livecache-model`), shared by the tests in
//! the `livecache` package and the cargo-fuzz targets in `fuzz/`. Not published; a test support
//! crate, kept out of the model so that the model is docs/spec.md alone.
//!
//! - [`harness`] drives the sans-IO core with the model's op alphabet and compares the two after
//!   every op (used by the property tests, the exhaustive check and the `lifecycle_ops` fuzz
//!   body).
//! - [`connection`] drives the shared connection's machine with the model's connection
//!   alphabet and compares the two after every event (the property test, the `connection_events`
//!   fuzz body).
//! - [`patch_recording`] checks the patches a draft records as a recipe changes the data
//!   against the change itself (the property test, the `patches` fuzz body).
//! - [`fuzz`] holds the bodies of the cargo-fuzz targets, each a `pub fn(&[u8])` that panics on
//!   a violation, so libFuzzer and `cargo test` (the corpus replay) both run them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connection;
pub mod fuzz;
pub mod harness;
pub mod patch_recording;
