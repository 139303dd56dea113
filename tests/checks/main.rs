//! The core's checks, as one test binary: the sans-IO core against its reference model (the
//! property tests, the exhaustive check), the rule tests and trace snapshots of SPEC's rules, the
//! fuzz corpus replay and the core's hardening tests. The runtime and its sockets are tested in
//! the `it` binary; keeping them apart lets this one build in a few seconds after a change to
//! the core (what `scripts/mutants.sh` rebuilds for every mutant). A few rule modules (R36–R38,
//! the recorded patches, the core's hardening) also pin their rule through the runtime, with
//! paused time and no socket. Run a part of it with a name filter, e.g.
//! `cargo test --test checks exhaustive::`.
//!
//! The modules share one process: nothing in them may change process-wide state (environment
//! variables, the panic hook, a global allocator) that another module's tests could observe.

#[path = "../common/mod.rs"]
mod common;

mod connection_equivalence;
mod connection_rules;
mod exhaustive;
mod fuzz_corpus;
mod fuzz_findings;
mod hardening_core;
mod live_equivalence;
mod live_rules;
mod model_equivalence;
mod patch_recording;
mod polling;
mod retries;
mod rule_traces;
mod tags;
mod tracing_events;
