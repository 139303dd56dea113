//! livecache's integration tests of the runtime and its I/O, as one test binary: each module was
//! its own binary (`tests/<name>.rs`) before, and each of those linked tokio, axum, proptest and
//! insta again. One binary builds and links them once. The core's own checks (model
//! equivalence, the exhaustive check, rule traces, fuzz corpus) are the `checks` binary. Run a
//! part of it with a name filter, e.g. `cargo test --test it ws_e2e:: -- --nocapture`.
//!
//! The modules share one process: nothing in them may change process-wide state (environment
//! variables, the panic hook, a global allocator) that another module's tests could observe.

#[path = "../common/mod.rs"]
mod common;

mod auto_traits;
mod hardening_http;
mod hardening_ws;
mod live_runtime;
mod live_ws;
mod mutations;
mod runtime_model;
mod runtime_rules;
mod runtime_stress;
mod settle;
mod shared_sim;
mod shared_ws;
#[cfg(all(feature = "tls", feature = "ws", feature = "http"))]
mod tls;
mod ws_e2e;
