//! The core agrees with the reference model on long random op sequences.
//!
//! proptest-state-machine draws ops from the model's current state (live and stale subscription
//! ids, requests in flight and stale ones, live and ended lifetimes, time steps that land exactly
//! on removal deadlines, valid and invalid patches), applies each to the model and to the core,
//! and after every op compares results, whole traces, observations (status, phase, data, error,
//! request in flight, subscriptions, deadline) and the next deadline, and checks the model
//! invariants. 1 000 cases by default; set `PROPTEST_CASES` for more. Failures shrink to a
//! minimal op sequence and are persisted in `proptest-regressions/` (commit them).

mod common;

use common::{CoreUnderTest, compare, strategies};
use livecache_model::{Config, Model, Op, check_invariants};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

struct Reference;

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
struct System {
    core: CoreUnderTest,
    model: Model,
    step: usize,
}

impl StateMachineTest for System {
    type SystemUnderTest = Self;
    type Reference = Reference;

    fn init_test(reference: &Model) -> Self {
        System {
            core: CoreUnderTest::new(reference.config()),
            model: reference.clone(),
            step: 0,
        }
    }

    fn apply(mut sut: Self, reference: &Model, op: Op) -> Self {
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

    fn check_invariants(sut: &Self, reference: &Model) {
        if let Err(violation) = check_invariants(reference.config(), reference.trace()) {
            panic!("model invariant violated: {violation}");
        }
        assert_eq!(sut.core.observe(), reference.observe());
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Shrinking prints every failing attempt; keep the output readable.
        max_shrink_iters: 4_096,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/model_equivalence.txt",
        ))),
        .. ProptestConfig::default()
    })]

    /// R1–R20 at the core level: the core and the model agree after every op.
    #[test]
    fn core_agrees_with_model(sequential 1..60 => System);
}
