//! The bodies of the cargo-fuzz targets in `fuzz/`.
//!
//! Each body takes libFuzzer's raw bytes, decodes them with [`arbitrary`] into a structured
//! input, runs it and **panics on a violation**, so the same function serves libFuzzer (a panic
//! is a crash) and `cargo test` (the corpus replay in `tests/checks/fuzz_corpus.rs`). Inputs that run
//! out of bytes are simply shorter, never rejected.
//!
//! | body | proves |
//! |---|---|
//! | [`lifecycle_ops`] | the core and the model agree (results, whole traces, every entry's status, phase, data, deadline) on arbitrary op sequences over arbitrary endpoint configurations, and `check_invariants` holds |
//! | [`ws_frames`] | frames (text, binary, ping, pong, close, oversized) through `ws::Decoder` and `try_stream` into a loaded entry of a real `Api`: no panic; the data changes by exactly the valid messages, in order; every rejected frame is counted by kind and as skipped |
//! | [`patches`] | `PatchSet::between(a, b)` turns `a` into `b` and back; the patches a draft records for random changes to a document are the change and its inverse; arbitrary patches through `Cache::patch_query_data` never panic and change nothing on error |
//! | [`connection_events`] | the shared connection's machine and its model agree (results, every effect in order, state, retry count, topics, next deadline) on arbitrary events under arbitrary short-timed configurations (R31, R32) |
//! | [`cache_keys`] | `default_key` is deterministic, ignores object key order, and gives distinct keys to distinct arguments (modulo the identifications the key rules make on purpose) |

mod cache_keys;
mod connection_events;
mod json;
mod lifecycle_ops;
mod patches;
mod ws_frames;

pub use cache_keys::cache_keys;
pub use connection_events::connection_events;
pub use lifecycle_ops::lifecycle_ops;
pub use patches::patches;
pub use ws_frames::ws_frames;
