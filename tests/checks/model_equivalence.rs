//! The core agrees with the reference model on long random op sequences.
//!
//! proptest-state-machine draws ops from the model's current state (live and stale subscription
//! ids, requests in flight and stale ones, live and ended lifetimes, time steps that land exactly
//! on removal deadlines, valid and invalid patches, streams attached before and after the data,
//! fed messages and bad frames, ended and failed), applies each to the model and to the core,
//! and after every op compares results, whole traces, observations (status, phase, data, error,
//! request in flight, subscriptions, deadline, attached stream) and the next deadline, and
//! checks the model invariants. A second machine gives the core a trace limit of 1–6 events and
//! checks that its rotated log is always the newest part of the model's whole trace (R23).
//! 1 000 cases by default (a quarter of that for the second); set `PROPTEST_CASES` for more.
//! Failures shrink to a minimal op sequence and are persisted in `proptest-regressions/`
//! (commit them).

use crate::common;

use common::{CoreUnderTest, compare, strategies, trace_difference};
use livecache_model::{Config, Model, Op, check_invariants};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

pub(crate) struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>()
            .prop_map(|with_patches| Model::new(Config::standard(with_patches)))
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        strategies::ops(state, true)
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(op);
        state
    }
}

/// The system under test: the core, plus a model copy that gives each op's result.
pub(crate) struct System {
    core: CoreUnderTest,
    model: Model,
    step: usize,
}

impl StateMachineTest for System {
    type SystemUnderTest = Self;
    type Reference = Reference;

    fn init_test(reference: &Model) -> Self {
        System::start(reference)
    }

    fn apply(sut: Self, reference: &Model, op: Op) -> Self {
        sut.step(reference, op)
    }

    fn check_invariants(sut: &Self, reference: &Model) {
        sut.check(reference);
    }
}

impl System {
    pub(crate) fn start(reference: &Model) -> Self {
        System {
            core: CoreUnderTest::new(reference.config()),
            model: reference.clone(),
            step: 0,
        }
    }

    /// Apply `op` to the model copy and the core, and compare them.
    pub(crate) fn step(self, reference: &Model, op: Op) -> Self {
        let mut sut = self;
        let model_result = sut.model.apply(&op);
        let core_result = sut.core.apply(&op);
        assert_eq!(
            sut.model.trace(),
            reference.trace(),
            "the model is deterministic"
        );
        if let Err(diff) = compare(
            sut.step,
            &op,
            &model_result,
            &core_result,
            &sut.model,
            &sut.core,
        ) {
            panic!("core and model disagree: {diff}");
        }
        sut.step += 1;
        sut
    }

    /// The model's invariants hold, and the core observes what the model does.
    pub(crate) fn check(&self, reference: &Model) {
        if let Err(violation) = check_invariants(reference.config(), reference.trace()) {
            panic!("model invariant violated: {violation}");
        }
        assert_eq!(self.core.observe(), reference.observe());
    }
}

pub(crate) fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// `cases` sequences, failures persisted in `regressions` (under `proptest-regressions/`).
pub(crate) fn config(cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking prints every failing attempt; keep the output readable.
        max_shrink_iters: 4_096,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::default()
    }
}

prop_state_machine! {
    #![proptest_config(config(cases(), "proptest-regressions/model_equivalence.txt"))]

    /// R1–R21 at the core level: the core and the model agree after every op.
    #[test]
    fn core_agrees_with_model(sequential 1..60 => System);
}

/// The reference for the bounded-trace machine: the model, plus the trace limit the core under
/// test is given (1–6 events, so that long sequences rotate the core's log many times).
#[derive(Clone, Debug)]
struct Limited {
    model: Model,
    limit: usize,
}

struct LimitedReference;

impl ReferenceStateMachine for LimitedReference {
    type State = Limited;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Limited> {
        (any::<bool>(), 1usize..=6)
            .prop_map(|(with_patches, limit)| Limited {
                model: Model::new(Config::standard(with_patches)),
                limit,
            })
            .boxed()
    }

    fn transitions(state: &Limited) -> BoxedStrategy<Op> {
        strategies::ops(&state.model, true)
    }

    fn apply(mut state: Limited, op: &Op) -> Limited {
        state.model.apply(op);
        state
    }
}

/// The core with a small trace limit; the reference's model keeps the whole trace.
struct LimitedSystem {
    core: CoreUnderTest,
    step: usize,
}

impl StateMachineTest for LimitedSystem {
    type SystemUnderTest = Self;
    type Reference = LimitedReference;

    fn init_test(reference: &Limited) -> Self {
        let mut core = CoreUnderTest::new(reference.model.config());
        core.cache.set_trace_limit(reference.limit);
        LimitedSystem { core, step: 0 }
    }

    fn apply(mut sut: Self, reference: &Limited, op: Op) -> Self {
        sut.core.apply(&op);
        let (full, limit) = (reference.model.trace(), reference.limit);
        let kept = sut.core.trace();
        assert_eq!(
            kept.len(),
            sut.core.cache.trace_len(),
            "trace_len counts the kept events"
        );
        // At least `limit` events once that many were recorded, at most twice the limit.
        let least = full.len().min(limit);
        assert!(
            (least..=2 * limit).contains(&kept.len()),
            "step {} {op:?}: {} events kept of {} with limit {limit}",
            sut.step,
            kept.len(),
            full.len()
        );
        // Exactly the newest events: the same as the model's last ones, key and data included.
        let newest = &full[full.len() - kept.len()..];
        if let Some(difference) = trace_difference(newest, &kept, "core (bounded)") {
            panic!("step {} {op:?}: {difference}", sut.step);
        }
        sut.step += 1;
        sut
    }
}

prop_state_machine! {
    #![proptest_config(config(
        cases() / 4,
        "proptest-regressions/model_equivalence_bounded.txt"
    ))]

    /// R23 with a bounded trace: through any op sequence, the core's log, rotated many times at
    /// a limit of 1–6 events, holds exactly the newest events of the model's whole trace (keys
    /// and data included), at least `limit` of them and at most twice as many.
    #[test]
    fn r23_bounded_core_trace_is_the_newest_part_of_the_models(sequential 1..80 => LimitedSystem);
}
