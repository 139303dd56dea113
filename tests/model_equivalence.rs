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

use common::{CoreUnderTest, compare};
use livecache::core::Refetch;
use livecache_model::{Config, Data, KeyRef, Model, Op, Recipe, check_invariants};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

struct Reference;

fn key() -> impl Strategy<Value = KeyRef> {
    (0usize..3, 1u8..=2).prop_map(|(endpoint, arg)| KeyRef { endpoint, arg })
}

fn data() -> impl Strategy<Value = Data> {
    prop::collection::vec(0u8..4, 0..3)
}

fn refetch() -> impl Strategy<Value = Refetch> {
    prop_oneof![
        4 => Just(Refetch::IfMissing),
        2 => Just(Refetch::Always),
        1 => select(vec![0u64, 1, 30_000]).prop_map(Refetch::IfOlderThan),
    ]
}

fn recipe() -> impl Strategy<Value = Recipe> {
    prop_oneof![
        Just(Recipe::Noop),
        (0u8..4).prop_map(Recipe::Push),
        Just(Recipe::Pop),
        (0u8..4).prop_map(Recipe::SetFirst),
    ]
}

/// RFC 6902 patches for a `Vec<u8>`: some apply, some fail an operation, some break the schema.
fn patch() -> impl Strategy<Value = json_patch::Patch> {
    let docs = vec![
        r#"[{"op":"add","path":"/-","value":1}]"#,
        r#"[{"op":"replace","path":"/0","value":3}]"#,
        r#"[{"op":"test","path":"/0","value":0},{"op":"remove","path":"/0"}]"#,
        r#"[{"op":"remove","path":"/5"}]"#,
        r#"[{"op":"add","path":"/-","value":2},{"op":"remove","path":"/9"}]"#,
        r#"[{"op":"add","path":"/0","value":"x"}]"#,
        r#"[{"op":"add","path":"/-","value":300}]"#,
        r#"[{"op":"replace","path":"","value":[]}]"#,
        r#"[{"op":"replace","path":"","value":{"not":"a list"}}]"#,
        r#"[]"#,
    ];
    select(docs).prop_map(|d| serde_json::from_str(d).expect("the patch templates are valid JSON"))
}

/// Time steps: small, large, exactly the default grace, just around it, and the clamp maximum.
fn step_ms() -> impl Strategy<Value = u64> {
    select(vec![
        0u64,
        1,
        999,
        29_999,
        59_999,
        60_000,
        60_001,
        3_600_000,
        2_147_482_647,
    ])
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>()
            .prop_map(|with_patches| Model::new(Config::standard(with_patches)))
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let (lifetimes, requests, subscriptions) = state.issued();
        // Ids drawn from everything issued so far plus one never issued: live and stale alike.
        let sub_id = 1..=subscriptions + 1;
        let request_id = 1..=requests + 1;
        let lifetime_id = 1..=lifetimes + 1;
        let in_flight = state.in_flight();
        let current = if in_flight.is_empty() {
            (key(), request_id.clone()).boxed()
        } else {
            select(in_flight).boxed()
        };
        prop_oneof![
            6 => (key(), refetch()).prop_map(|(key, refetch)| Op::Subscribe { key, refetch }),
            4 => sub_id.clone().prop_map(|subscription| Op::Unsubscribe { subscription }),
            2 => sub_id.prop_map(|subscription| Op::Refetch { subscription }),
            2 => (key(), refetch()).prop_map(|(key, refetch)| Op::Prefetch { key, refetch }),
            3 => step_ms().prop_map(|ms| Op::Advance { ms }),
            3 => Just(Op::AdvanceToDeadline),
            6 => (current.clone(), data())
                .prop_map(|((key, request), data)| Op::Fulfil { key, request, data }),
            2 => (key(), request_id, data())
                .prop_map(|(key, request, data)| Op::Fulfil { key, request, data }),
            3 => (current, 0u8..3).prop_map(|((key, request), n)| Op::Reject {
                key,
                request,
                error: format!("boom {n}"),
            }),
            5 => (lifetime_id, recipe(), any::<bool>()).prop_map(|(lifetime, recipe, patches)| {
                Op::UpdateCached { lifetime, recipe, patches }
            }),
            2 => (key(), recipe()).prop_map(|(key, recipe)| Op::UpdateQueryData { key, recipe }),
            3 => (key(), patch()).prop_map(|(key, patch)| Op::PatchQueryData { key, patch }),
            2 => (key(), data()).prop_map(|(key, data)| Op::Upsert { key, data }),
            2 => key().prop_map(|key| Op::Remove { key }),
            1 => Just(Op::Reset),
        ]
        .boxed()
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
