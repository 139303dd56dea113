//! Op strategies shared by the property tests (core vs model, runtime vs model).

use livecache::core::Refetch;
use livecache_model::{Data, KeyRef, Model, Op, Recipe, Report};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

pub fn key() -> impl Strategy<Value = KeyRef> {
    (0usize..3, 1u8..=2).prop_map(|(endpoint, arg)| KeyRef { endpoint, arg })
}

/// A tag of two kinds, with one of two ids or none (R38).
pub fn tag() -> impl Strategy<Value = livecache::core::Tag> {
    (
        select(vec!["P", "Q"]),
        select(vec![None, Some(1u8), Some(2)]),
    )
        .prop_map(|(kind, id)| match id {
            Some(id) => livecache::core::Tag::id(kind, id),
            None => livecache::core::Tag::kind(kind),
        })
}

pub fn data() -> impl Strategy<Value = Data> {
    prop::collection::vec(0u8..4, 0..3)
}

pub fn refetch() -> impl Strategy<Value = Refetch> {
    prop_oneof![
        4 => Just(Refetch::IfMissing),
        2 => Just(Refetch::Always),
        1 => select(vec![0u64, 1, 30_000]).prop_map(Refetch::IfOlderThan),
    ]
}

pub fn recipe() -> impl Strategy<Value = Recipe> {
    prop_oneof![
        Just(Recipe::Noop),
        (0u8..4).prop_map(Recipe::Push),
        Just(Recipe::Pop),
        (0u8..4).prop_map(Recipe::SetFirst),
    ]
}

/// RFC 6902 patches for a `Vec<u8>`: some apply, some fail an operation, some break the schema.
pub fn patch() -> impl Strategy<Value = json_patch::Patch> {
    select(livecache_model::PATCH_TEMPLATES)
        .prop_map(|d| serde_json::from_str(d).expect("the patch templates are valid JSON"))
}

/// Time steps: small, large, exactly the default grace, just around it, and the clamp maximum.
pub fn step_ms() -> impl Strategy<Value = u64> {
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

/// The next op, drawn from the model's state: ids among those issued so far plus one never
/// issued (live and stale handles alike), requests in flight most of the time. With
/// `stale_results` false, results are only ever delivered for requests in flight (a runtime's
/// query functions cannot deliver any other).
pub fn ops(state: &Model, stale_results: bool) -> BoxedStrategy<Op> {
    ops_attaching(state, stale_results, true, true)
}

/// [`ops`], with streams attached (R21) before a lifetime's first data too, or only to
/// lifetimes that have data (`attach_before_data` false: the runtime test's handlers attach
/// through the loaded handle they keep for the lifetime's updates).
pub fn ops_attaching(
    state: &Model,
    stale_results: bool,
    attach_before_data: bool,
    late_events: bool,
) -> BoxedStrategy<Op> {
    let (lifetimes, requests, subscriptions) = state.issued();
    let sub_id = 1..=subscriptions + 1;
    let request_id = 1..=requests + 1;
    let lifetime_id = 1..=lifetimes + 1;
    // The runtime's results come from running query functions only (none while a request waits
    // for its retry, R36); the core takes a result whenever it comes.
    let in_flight = if stale_results {
        state.in_flight()
    } else {
        state.running()
    };
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            6,
            (key(), refetch())
                .prop_map(|(key, refetch)| Op::Subscribe { key, refetch })
                .boxed(),
        ),
        (
            4,
            sub_id
                .clone()
                .prop_map(|subscription| Op::Unsubscribe { subscription })
                .boxed(),
        ),
        // R37: a subscription polls (or stops: 0), on any id, live or not.
        (
            2,
            (sub_id.clone(), select(vec![0u64, 1, 700, 30_000]))
                .prop_map(|(subscription, interval)| Op::SetPolling {
                    subscription,
                    interval,
                })
                .boxed(),
        ),
        (
            2,
            sub_id
                .prop_map(|subscription| Op::Refetch { subscription })
                .boxed(),
        ),
        (
            2,
            (key(), refetch())
                .prop_map(|(key, refetch)| Op::Prefetch { key, refetch })
                .boxed(),
        ),
        (3, step_ms().prop_map(|ms| Op::Advance { ms }).boxed()),
        (3, Just(Op::AdvanceToDeadline).boxed()),
        (
            5,
            (lifetime_id.clone(), recipe(), any::<bool>())
                .prop_map(|(lifetime, recipe, patches)| Op::UpdateCached {
                    lifetime,
                    generation: None,
                    recipe,
                    patches,
                })
                .boxed(),
        ),
        (
            2,
            (key(), recipe())
                .prop_map(|(key, recipe)| Op::UpdateQueryData { key, recipe })
                .boxed(),
        ),
        (
            3,
            (key(), patch())
                .prop_map(|(key, patch)| Op::PatchQueryData { key, patch })
                .boxed(),
        ),
        (
            2,
            (key(), data())
                .prop_map(|(key, data)| Op::Upsert { key, data })
                .boxed(),
        ),
        (2, key().prop_map(|key| Op::Remove { key }).boxed()),
        (1, Just(Op::Reset).boxed()),
        // R32: the source reconnected; an unversioned entry refetches.
        (
            1,
            lifetime_id
                .clone()
                .prop_map(|lifetime| Op::SourceResync { lifetime })
                .boxed(),
        ),
        // R30: a restart, and an update through the handle of a handler of some generation
        // (the current one, an ended one, one not started yet).
        (1, key().prop_map(|key| Op::Restart { key }).boxed()),
        (
            1,
            (lifetime_id.clone(), 0u32..3, recipe())
                .prop_map(|(lifetime, generation, recipe)| Op::UpdateCached {
                    lifetime,
                    generation: Some(generation),
                    recipe,
                    patches: false,
                })
                .boxed(),
        ),
        // R21: stream ops on any lifetime id, live or not, attached or not.
        (
            1,
            (lifetime_id.clone(), recipe())
                .prop_map(|(lifetime, recipe)| Op::StreamMessage {
                    lifetime,
                    recipe,
                    version: None,
                })
                .boxed(),
        ),
        (
            1,
            lifetime_id
                .clone()
                .prop_map(|lifetime| Op::StreamSkip { lifetime })
                .boxed(),
        ),
        (
            1,
            (lifetime_id, any::<bool>())
                .prop_map(|(lifetime, failed)| Op::StreamFinish { lifetime, failed })
                .boxed(),
        ),
    ];
    // Events that arrive after a deadline nobody ticked for (the core's catch-up expiry); not for
    // the runtime, whose timers fire as its clock moves.
    if late_events {
        arms.push((2, step_ms().prop_map(|ms| Op::Late { ms }).boxed()));
        // R38: tags provided and invalidated (core only: the runtime's tags come from its
        // endpoints' `provides_tags`).
        arms.push((
            2,
            (key(), prop::collection::vec(tag(), 0..3))
                .prop_map(|(key, tags)| Op::ProvideTags { key, tags })
                .boxed(),
        ));
        arms.push((
            2,
            prop::collection::vec(tag(), 1..3)
                .prop_map(|tags| Op::Invalidate { tags })
                .boxed(),
        ));
    }
    // Attach to any lifetime id (before its data only if allowed: else to ended or never
    // issued ones and to those with data), and often to a live one without a stream.
    let observed = state.observe();
    let loading: Vec<u64> = observed
        .iter()
        .filter(|o| !o.phase.has_data())
        .map(|o| o.lifetime)
        .collect();
    let any_attach: Vec<u64> = (1..=lifetimes + 1)
        .filter(|l| attach_before_data || !loading.contains(l))
        .collect();
    arms.push((
        1,
        select(any_attach)
            .prop_map(|lifetime| Op::StreamAttach { lifetime })
            .boxed(),
    ));
    let attachable: Vec<u64> = observed
        .iter()
        .filter(|o| o.stream.is_none() && (attach_before_data || o.phase.has_data()))
        .map(|o| o.lifetime)
        .collect();
    if !attachable.is_empty() {
        arms.push((
            3,
            select(attachable)
                .prop_map(|lifetime| Op::StreamAttach { lifetime })
                .boxed(),
        ));
    }
    let attached: Vec<u64> = observed
        .iter()
        .filter(|o| o.stream.is_some_and(|s| s.reading))
        .map(|o| o.lifetime)
        .collect();
    if !attached.is_empty() {
        let attached = select(attached);
        arms.push((
            5,
            (attached.clone(), recipe())
                .prop_map(|(lifetime, recipe)| Op::StreamMessage {
                    lifetime,
                    recipe,
                    version: None,
                })
                .boxed(),
        ));
        arms.push((
            1,
            attached
                .clone()
                .prop_map(|lifetime| Op::StreamSkip { lifetime })
                .boxed(),
        ));
        arms.push((
            2,
            (attached, any::<bool>())
                .prop_map(|(lifetime, failed)| Op::StreamFinish { lifetime, failed })
                .boxed(),
        ));
    }
    if !in_flight.is_empty() {
        let current = select(in_flight);
        arms.push((
            6,
            (current.clone(), data())
                .prop_map(|((key, request), data)| Op::Fulfil { key, request, data })
                .boxed(),
        ));
        arms.push((
            3,
            (current, 0u8..4)
                .prop_map(|((key, request), n)| Op::Reject {
                    key,
                    request,
                    // Sometimes an error longer than the trace keeps, in two-byte chars: the
                    // core and the model cut it alike (R23, `TRACE_TEXT_CAP`).
                    error: if n == 3 {
                        format!("{}boom", "é".repeat(700))
                    } else {
                        format!("boom {n}")
                    },
                })
                .boxed(),
        ));
    }
    if stale_results {
        arms.push((
            2,
            (key(), request_id.clone(), data())
                .prop_map(|(key, request, data)| Op::Fulfil { key, request, data })
                .boxed(),
        ));
        arms.push((
            1,
            (key(), request_id)
                .prop_map(|(key, request)| Op::Reject {
                    key,
                    request,
                    error: "late".into(),
                })
                .boxed(),
        ));
    }
    Union::new_weighted(arms).boxed()
}

/// A key of one of the versioned endpoints of `Config::versioned` (`v`, `r`, `n`).
pub fn live_key() -> impl Strategy<Value = KeyRef> {
    (3usize..6, 1u8..=2).prop_map(|(endpoint, arg)| KeyRef { endpoint, arg })
}

/// Versions from a small range, so stale messages, duplicates and gaps are common.
pub fn version() -> impl Strategy<Value = u64> {
    0u64..7
}

pub fn report() -> impl Strategy<Value = Report> {
    prop_oneof![
        Just(Report::Connecting),
        Just(Report::Live),
        Just(Report::Reconnecting),
    ]
}

/// [`ops`] in the versioned universe (`Config::versioned`), with the live ops (R24–R28, R33)
/// added and weighted so that versioned entries get streams, versioned messages (in order,
/// repeated, out of order, past gaps), snapshots with watermarks while messages flow, refetches,
/// rejections, status reports and resumes.
pub fn live_ops(state: &Model) -> BoxedStrategy<Op> {
    let (lifetimes, _, subscriptions) = state.issued();
    let observed = state.observe();
    let lifetime_id = 1..=lifetimes + 1;
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (6, ops(state, true)),
        (
            4,
            (live_key(), refetch())
                .prop_map(|(key, refetch)| Op::Subscribe { key, refetch })
                .boxed(),
        ),
        (
            2,
            (1..=subscriptions + 1)
                .prop_map(|subscription| Op::Refetch { subscription })
                .boxed(),
        ),
        (
            2,
            (live_key(), data(), version())
                .prop_map(|(key, data, watermark)| Op::UpsertVersioned {
                    key,
                    data,
                    watermark,
                })
                .boxed(),
        ),
        (
            1,
            (lifetime_id.clone(), report())
                .prop_map(|(lifetime, report)| Op::StreamReport { lifetime, report })
                .boxed(),
        ),
        (
            1,
            lifetime_id
                .clone()
                .prop_map(|lifetime| Op::ResyncDone { lifetime })
                .boxed(),
        ),
        (
            2,
            lifetime_id
                .clone()
                .prop_map(|lifetime| Op::RefetchLifetime { lifetime })
                .boxed(),
        ),
        (
            1,
            lifetime_id
                .prop_map(|lifetime| Op::SourceResync { lifetime })
                .boxed(),
        ),
    ];
    // Streams on versioned entries: attach, then versioned messages (the watermark's next one
    // most often, so runs get long; else any small version).
    let live: Vec<(u64, u64)> = observed
        .iter()
        .filter(|o| o.key.starts_with(['v', 'r', 'n']))
        .map(|o| (o.lifetime, o.watermark.map_or(0, |w| w.parts().1)))
        .collect();
    if !live.is_empty() {
        let lifetimes: Vec<u64> = live.iter().map(|(l, _)| *l).collect();
        arms.push((
            3,
            select(lifetimes)
                .prop_map(|lifetime| Op::StreamAttach { lifetime })
                .boxed(),
        ));
        let attached: Vec<(u64, u64)> = live
            .iter()
            .copied()
            .filter(|(l, _)| {
                observed
                    .iter()
                    .any(|o| o.lifetime == *l && o.stream.is_some_and(|s| s.reading))
            })
            .collect();
        if !attached.is_empty() {
            arms.push((
                8,
                (select(attached.clone()), recipe(), 1u64..3)
                    .prop_map(|((lifetime, watermark), recipe, ahead)| Op::StreamMessage {
                        lifetime,
                        recipe,
                        version: Some(watermark + ahead),
                    })
                    .boxed(),
            ));
            arms.push((
                4,
                (select(attached), recipe(), version())
                    .prop_map(|((lifetime, _), recipe, version)| Op::StreamMessage {
                        lifetime,
                        recipe,
                        version: Some(version),
                    })
                    .boxed(),
            ));
        }
    }
    // Floods before the first data (R33): streams attached to entries still loading, of any
    // endpoint, fed until their bounded buffer overflows.
    let loading_unattached: Vec<u64> = observed
        .iter()
        .filter(|o| !o.phase.has_data() && o.stream.is_none())
        .map(|o| o.lifetime)
        .collect();
    if !loading_unattached.is_empty() {
        arms.push((
            3,
            select(loading_unattached)
                .prop_map(|lifetime| Op::StreamAttach { lifetime })
                .boxed(),
        ));
    }
    let loading_attached: Vec<u64> = observed
        .iter()
        .filter(|o| !o.phase.has_data() && o.stream.is_some_and(|s| s.reading))
        .map(|o| o.lifetime)
        .collect();
    if !loading_attached.is_empty() {
        arms.push((
            4,
            (select(loading_attached), recipe())
                .prop_map(|(lifetime, recipe)| Op::StreamMessage {
                    lifetime,
                    recipe,
                    version: None,
                })
                .boxed(),
        ));
    }
    let in_flight: Vec<(KeyRef, u64)> = state
        .in_flight()
        .into_iter()
        .filter(|(key, _)| key.endpoint >= 3)
        .collect();
    if !in_flight.is_empty() {
        arms.push((
            6,
            (select(in_flight), data(), version())
                .prop_map(|((key, request), data, watermark)| Op::FulfilVersioned {
                    key,
                    request,
                    data,
                    watermark,
                })
                .boxed(),
        ));
    }
    Union::new_weighted(arms).boxed()
}
