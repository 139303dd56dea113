//! livecache's integration tests, as one test binary: each module was its own binary
//! (`tests/<name>.rs`) before, and each of those linked tokio, axum, proptest and insta again.
//! One binary builds and links them once. Run a part of it with a name filter, e.g.
//! `cargo test --test it rule_traces::` or `cargo test --test it ws_e2e:: -- --nocapture`.
//!
//! The modules share one process: nothing in them may change process-wide state (environment
//! variables, the panic hook, a global allocator) that another module's tests could observe.

mod common;

mod auto_traits;
mod connection_equivalence;
mod connection_rules;
mod exhaustive;
mod fuzz_corpus;
mod fuzz_findings;
mod hardening_core;
mod hardening_http;
mod hardening_ws;
mod live_equivalence;
mod live_rules;
mod live_runtime;
mod live_ws;
mod model_equivalence;
mod mutations;
mod patch_recording;
mod polling;
mod retries;
mod rule_traces;
mod runtime_model;
mod runtime_rules;
mod runtime_stress;
mod settle;
mod shared_sim;
mod shared_ws;
mod tags;
#[cfg(all(feature = "tls", feature = "ws", feature = "http"))]
mod tls;
mod tracing_events;
mod ws_e2e;
