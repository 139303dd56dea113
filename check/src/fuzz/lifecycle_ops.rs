//! `lifecycle_ops`: arbitrary op sequences through the sans-IO core and the reference model.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use livecache::core::{MAX_KEEP_MS, Phase, Refetch};
use livecache_model::{
    Config, Data, EndpointSpec, KeyRef, Model, Observation, Op, Recipe, Report, VersionSpec,
    check_invariants,
};

use crate::harness::{CoreUnderTest, compare};

/// The longest op sequence one input drives (libFuzzer's `-max_len` bounds it too).
const MAX_OPS: usize = 96;

/// Time steps where the rules are delicate: zero, the default grace period and one millisecond
/// either side of it, the clamp maximum and beyond.
const STEPS: &[u64] = &[
    0,
    1,
    999,
    29_999,
    59_999,
    60_000,
    60_001,
    3_600_000,
    MAX_KEEP_MS,
    MAX_KEEP_MS + 1,
    u64::MAX,
];

/// An endpoint's keep time, as the fuzzer picks it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum KeepSel {
    Never,
    Zero,
    One,
    Default,
    Max,
    Millis(u32),
}

impl KeepSel {
    fn millis(self) -> Option<u64> {
        match self {
            KeepSel::Never => None,
            KeepSel::Zero => Some(0),
            KeepSel::One => Some(1),
            KeepSel::Default => Some(60_000),
            KeepSel::Max => Some(MAX_KEEP_MS),
            // The model's configuration holds clamped keep times.
            KeepSel::Millis(ms) => Some(u64::from(ms).min(MAX_KEEP_MS)),
        }
    }
}

/// The universe: three endpoints `a`, `b`, `c` with arbitrary keep times and handlers, each
/// unversioned or versioned (R24–R27, R33: contiguous or not, resyncing by resume or refetch,
/// queues of 1 to 4 messages).
#[derive(Arbitrary, Debug)]
struct ConfigSel {
    record_patches: bool,
    endpoints: [(KeepSel, bool, Option<VersionsSel>, Option<u8>); 3],
    /// Which endpoints' failed streams reject their queries (R28's option): bit 0 `a`, …
    failure_rejects: u8,
}

/// A versioned endpoint: contiguous or not, resyncing by resume or refetch, its queue bound.
type VersionsSel = (bool, bool, u8);

impl ConfigSel {
    fn config(&self) -> Config {
        let endpoints = ["a", "b", "c"]
            .iter()
            .zip(self.endpoints)
            .enumerate()
            .map(
                |(i, (name, (keep, lifecycle, versions, buffered)))| EndpointSpec {
                    name: (*name).to_owned(),
                    keep_ms: keep.millis(),
                    lifecycle,
                    versions: versions.map(|(contiguous, resume, queued)| VersionSpec {
                        contiguous,
                        resume,
                        max_queued: usize::from(queued % 4) + 1,
                    }),
                    max_buffered: buffered.map(|max| usize::from(max % 4) + 1),
                    stream_failure_rejects: self.failure_rejects & (1 << i) != 0,
                    // R36: bits 4–6 of the same byte give `a`, `b`, `c` a retry policy (one
                    // or two retries, 100 ms doubling to at most 150 ms; no jitter).
                    retry: (self.failure_rejects & (1 << (i + 4)) != 0).then_some(
                        livecache::core::RetryPolicy {
                            max_retries: 1 + u32::from(self.failure_rejects >> 7),
                            base_ms: 100,
                            max_ms: 150,
                            jitter_percent: 0,
                            seed: 0,
                        },
                    ),
                },
            )
            .collect();
        Config {
            endpoints,
            record_patches: self.record_patches,
        }
    }
}

/// A refetch policy.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum RefetchSel {
    IfMissing,
    Always,
    IfOlderThan(u8),
}

/// An id (subscription, request, lifetime): resolved among those issued so far plus one never
/// issued, so live and stale handles are both exercised.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct IdSel(u8);

impl IdSel {
    fn resolve(self, issued: u64) -> u64 {
        1 + u64::from(self.0) % (issued + 1)
    }
}

/// The shape of one op; ids, keys and in-flight requests are resolved against the model's state
/// when the op is built.
#[derive(Arbitrary, Debug, Clone)]
enum OpSel {
    Subscribe(KeyRef, RefetchSel),
    Unsubscribe(IdSel),
    Refetch(IdSel),
    Prefetch(KeyRef, RefetchSel),
    Advance(u8),
    AdvanceMillis(u32),
    AdvanceToDeadline,
    /// Fulfil a request in flight (picked by index) or, when none is, any key and id.
    FulfilCurrent(u8, Vec<u8>),
    FulfilAny(KeyRef, IdSel, Vec<u8>),
    RejectCurrent(u8, u8),
    RejectAny(KeyRef, IdSel),
    UpdateCached(IdSel, Recipe, bool),
    UpdateQueryData(KeyRef, Recipe),
    PatchQueryData(KeyRef, u8),
    Upsert(KeyRef, Vec<u8>),
    Remove(KeyRef),
    Reset,
    // The stream ops (R21), added last: inputs written before them decode to other op
    // sequences (the tag range of each of the 17 earlier shapes shrank to 17/21 of it).
    StreamAttach(IdSel),
    StreamMessage(IdSel, Recipe),
    StreamSkip(IdSel),
    StreamFinish(IdSel, bool),
    /// Time passes with no tick (added last too: earlier inputs decode to other sequences again).
    Late(u8),
    // The live ops (R24–R28, R33), added last again.
    StreamVersioned(IdSel, Recipe, u8),
    FulfilVersioned(u8, Vec<u8>, u8),
    UpsertVersioned(KeyRef, Vec<u8>, u8),
    StreamReport(IdSel, Report),
    ResyncDone(IdSel),
    RefetchLifetime(IdSel),
    // Restart (R30), and an update through the handle of a handler of some generation, added
    // last again.
    Restart(KeyRef),
    UpdateCachedBy(IdSel, u8, Recipe),
    // The source reconnected (R32), added last again.
    SourceResync(IdSel),
    // Polling (R37), added last again: an interval of 0, 1, 250, 1,000 or 30,000 ms.
    SetPolling(IdSel, u8),
    // Tags (R38), added last again: a mask picks among P, P:1, P:2, Q.
    ProvideTags(KeyRef, u8),
    Invalidate(u8),
}

/// The tags a mask picks (R38).
fn tags(mask: u8) -> Vec<livecache::core::Tag> {
    use livecache::core::Tag;
    [
        Tag::kind("P"),
        Tag::id("P", 1),
        Tag::id("P", 2),
        Tag::kind("Q"),
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| mask & (1 << i) != 0)
    .map(|(_, tag)| tag)
    .collect()
}

/// Keys stay within the three endpoints and three arguments, so ops collide often.
fn key(k: KeyRef) -> KeyRef {
    KeyRef {
        endpoint: k.endpoint % 3,
        arg: k.arg % 3,
    }
}

/// A key picked by one byte (when there is no request in flight to pick).
fn key_for(i: u8) -> KeyRef {
    key(KeyRef {
        endpoint: usize::from(i),
        arg: i / 3,
    })
}

/// Short data from a small alphabet, so equal data (`data_changed: false`) is common.
fn data(bytes: &[u8]) -> Data {
    bytes.iter().take(3).map(|b| b % 4).collect()
}

fn refetch(r: RefetchSel) -> Refetch {
    match r {
        RefetchSel::IfMissing => Refetch::IfMissing,
        RefetchSel::Always => Refetch::Always,
        RefetchSel::IfOlderThan(i) => Refetch::IfOlderThan(STEPS[usize::from(i) % STEPS.len()]),
    }
}

fn patch(i: u8) -> json_patch::Patch {
    static PARSED: OnceLock<Vec<json_patch::Patch>> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        livecache_model::PATCH_TEMPLATES
            .iter()
            .map(|text| serde_json::from_str(text).expect("the patch vocabulary is valid"))
            .collect()
    });
    all[usize::from(i) % all.len()].clone()
}

/// The op an [`OpSel`] stands for in the model's current state.
fn resolve(sel: OpSel, model: &Model) -> Op {
    let (lifetimes, requests, subscriptions) = model.issued();
    let in_flight = model.in_flight();
    let current = |i: u8| {
        in_flight
            .get(usize::from(i) % in_flight.len().max(1))
            .copied()
    };
    match sel {
        OpSel::Subscribe(k, r) => Op::Subscribe {
            key: key(k),
            refetch: refetch(r),
        },
        OpSel::Unsubscribe(id) => Op::Unsubscribe {
            subscription: id.resolve(subscriptions),
        },
        OpSel::Refetch(id) => Op::Refetch {
            subscription: id.resolve(subscriptions),
        },
        OpSel::Prefetch(k, r) => Op::Prefetch {
            key: key(k),
            refetch: refetch(r),
        },
        OpSel::Advance(i) => Op::Advance {
            ms: STEPS[usize::from(i) % STEPS.len()],
        },
        OpSel::AdvanceMillis(ms) => Op::Advance { ms: u64::from(ms) },
        OpSel::AdvanceToDeadline => Op::AdvanceToDeadline,
        OpSel::FulfilCurrent(i, d) => match current(i) {
            Some((key, request)) => Op::Fulfil {
                key,
                request,
                data: data(&d),
            },
            None => Op::Fulfil {
                key: key_for(i),
                request: requests + 1,
                data: data(&d),
            },
        },
        OpSel::FulfilAny(k, id, d) => Op::Fulfil {
            key: key(k),
            request: id.resolve(requests),
            data: data(&d),
        },
        OpSel::RejectCurrent(i, e) => {
            let (key, request) = current(i).unwrap_or((key_for(i), requests + 1));
            Op::Reject {
                key,
                request,
                error: format!("boom {}", e % 3),
            }
        }
        OpSel::RejectAny(k, id) => Op::Reject {
            key: key(k),
            request: id.resolve(requests),
            error: "late".to_owned(),
        },
        OpSel::UpdateCached(id, recipe, patches) => Op::UpdateCached {
            lifetime: id.resolve(lifetimes),
            generation: None,
            recipe,
            patches,
        },
        OpSel::UpdateQueryData(k, recipe) => Op::UpdateQueryData {
            key: key(k),
            recipe,
        },
        OpSel::PatchQueryData(k, i) => Op::PatchQueryData {
            key: key(k),
            patch: patch(i),
        },
        OpSel::Upsert(k, d) => Op::Upsert {
            key: key(k),
            data: data(&d),
        },
        OpSel::Remove(k) => Op::Remove { key: key(k) },
        OpSel::Reset => Op::Reset,
        OpSel::StreamAttach(id) => Op::StreamAttach {
            lifetime: id.resolve(lifetimes),
        },
        OpSel::StreamMessage(id, recipe) => Op::StreamMessage {
            lifetime: id.resolve(lifetimes),
            recipe,
            version: None,
        },
        // Versions from a small range, so duplicates, stale messages and gaps are common.
        OpSel::StreamVersioned(id, recipe, v) => Op::StreamMessage {
            lifetime: id.resolve(lifetimes),
            recipe,
            version: Some(u64::from(v % 8)),
        },
        OpSel::FulfilVersioned(i, d, w) => {
            let (key, request) = current(i).unwrap_or((key_for(i), requests + 1));
            Op::FulfilVersioned {
                key,
                request,
                data: data(&d),
                watermark: u64::from(w % 8),
            }
        }
        OpSel::UpsertVersioned(k, d, w) => Op::UpsertVersioned {
            key: key(k),
            data: data(&d),
            watermark: u64::from(w % 8),
        },
        OpSel::StreamReport(id, report) => Op::StreamReport {
            lifetime: id.resolve(lifetimes),
            report,
        },
        OpSel::ResyncDone(id) => Op::ResyncDone {
            lifetime: id.resolve(lifetimes),
        },
        OpSel::RefetchLifetime(id) => Op::RefetchLifetime {
            lifetime: id.resolve(lifetimes),
        },
        OpSel::StreamSkip(id) => Op::StreamSkip {
            lifetime: id.resolve(lifetimes),
        },
        OpSel::StreamFinish(id, failed) => Op::StreamFinish {
            lifetime: id.resolve(lifetimes),
            failed,
        },
        OpSel::Late(i) => Op::Late {
            ms: STEPS[usize::from(i) % STEPS.len()],
        },
        OpSel::Restart(k) => Op::Restart { key: key(k) },
        OpSel::SourceResync(id) => Op::SourceResync {
            lifetime: id.resolve(lifetimes),
        },
        OpSel::ProvideTags(k, mask) => Op::ProvideTags {
            key: key(k),
            tags: tags(mask),
        },
        OpSel::Invalidate(mask) => Op::Invalidate { tags: tags(mask) },
        OpSel::SetPolling(id, interval) => Op::SetPolling {
            subscription: id.resolve(subscriptions),
            interval: [0, 1, 250, 1_000, 30_000][usize::from(interval) % 5],
        },
        OpSel::UpdateCachedBy(id, generation, recipe) => Op::UpdateCached {
            lifetime: id.resolve(lifetimes),
            generation: Some(u32::from(generation % 4)),
            recipe,
            patches: false,
        },
    }
}

/// The fuzz body: decode a configuration and up to `MAX_OPS` (96) ops, apply each to the model
/// and the core, and compare them after every op; finally check the trace invariants.
///
/// # Panics
///
/// On any difference between model and core, or a violated invariant: that is the finding.
pub fn lifecycle_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = ConfigSel::arbitrary(&mut u) else {
        return;
    };
    let config = config.config();
    let mut model = Model::new(config.clone());
    let mut core = CoreUnderTest::new(&config);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        let Ok(sel) = OpSel::arbitrary(&mut u) else {
            break;
        };
        let op = resolve(sel, &model);
        let events = model.trace().len();
        let model_result = model.apply(&op);
        let core_result = core.apply(&op);
        ops.push(op);
        let step = ops.len() - 1;
        // The traces agreed up to `events` after the previous op, so comparing the new events
        // compares the whole traces; `compare` explains any difference.
        let observed = model.observe();
        let agree = model_result == core_result
            && model.trace().get(events..) == core.trace().get(events..)
            && observed == core.observe()
            && model.next_deadline() == core.next_deadline();
        if !agree {
            let diff = compare(step, &ops[step], &model_result, &core_result, &model, &core)
                .err()
                .unwrap_or_else(|| "compare found no difference".to_owned());
            panic!("core and model differ\n{diff}\nconfig: {config:?}\nops: {ops:#?}");
        }
        if let Err(e) = entry_invariants(&config, &observed) {
            panic!("step {step}: {e}\nconfig: {config:?}\nops: {ops:#?}");
        }
    }
    if let Err(e) = check_invariants(&config, model.trace()) {
        panic!("trace invariant violated: {e}\nconfig: {config:?}\nops: {ops:#?}");
    }
}

/// Per-entry invariants of the state at rest: data present iff the phase has data; a removal
/// deadline armed iff the entry has no subscribers and a finite keep time (R4); a stream
/// attached to an entry with data is live — nothing held, still read — and the entry streaming
/// (R21).
fn entry_invariants(config: &Config, observed: &[Observation]) -> Result<(), String> {
    for o in observed {
        if o.phase.has_data() != o.data.is_some() {
            return Err(format!(
                "{}: phase {:?} with data {:?}",
                o.key, o.phase, o.data
            ));
        }
        if let Some(stream) = o.stream
            && o.phase.has_data()
            && (stream.held > 0 || !stream.reading || o.phase != Phase::Streaming)
        {
            return Err(format!(
                "{}: phase {:?} with a stream attached {stream:?}",
                o.key, o.phase
            ));
        }
        let name = o.key.split('(').next().unwrap_or_default();
        let finite = config
            .endpoints
            .iter()
            .any(|spec| spec.name == name && spec.keep_ms.is_some());
        if (o.subscriptions.is_empty() && finite) != o.removal_deadline.is_some() {
            return Err(format!(
                "{}: {} subscribers, finite keep {finite}, deadline {:?}",
                o.key,
                o.subscriptions.len(),
                o.removal_deadline
            ));
        }
    }
    Ok(())
}
