//! The tokio runtime agrees with the reference model.
//!
//! The same random ops that drive the core in `model_equivalence.rs` drive the runtime — on a
//! current-thread runtime with a paused clock, through the public API only: subscriptions are
//! real `Subscription`s (unsubscribing is dropping one), time moves with
//! `tokio::time::advance`, query functions are held open until the op that fulfils or rejects
//! them, updates go through the lifecycle handles the handlers received. After every op the
//! runtime's trace must equal the model's (the runtime also records `lifecycle_ended` when a
//! handler returns, which the model does not know of; those events are left out), and every
//! key's state must agree. The runtime's timer task ticks as soon as an op yields, so a
//! deadline that is due right after an op (keep time 0) is followed by a tick in the model too.
//! The stream ops (R21) attach a stream fed by a channel the test holds, with
//! `EntryHandle::try_stream` on the loaded handle the lifecycle handler left (a spawned task):
//! a message is an `Ok(recipe)`, a bad frame a non-fatal error, a failure a fatal one, the end
//! the channel's close. The handlers keep their `BeforeData` handle for `data_loaded`, so a
//! stream is attached here only once the lifetime has data: attachments before the data are
//! checked against the model on the core only (`model_equivalence.rs`, `exhaustive.rs`).
//! Set `PROPTEST_CASES` for more cases (default 256).

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{strategies, trace_difference};
use futures::channel::mpsc;
use livecache::core::{Keep, PatchError as CorePatchError, Phase, Status};
use livecache::core::{Recording, TraceEvent, TraceKind};
use livecache::{Api, Endpoint, EntryHandle, Error, StreamError, UpdateError, WithData};
use livecache_model::{
    Config, Data, EndpointSpec, KeyRef, Model, Op, OpResult, PatchError, Recipe, Report,
    STREAM_FAILURE, STREAM_SKIP_REASON, UpdateError as ModelUpdateError,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use tokio::sync::oneshot;

/// The model universe for the runtime: every endpoint has a lifecycle handler, so every
/// lifetime has a handle to update through.
fn config(record_patches: bool) -> Config {
    let ep = |name: &str, keep_ms| EndpointSpec {
        name: name.into(),
        keep_ms,
        lifecycle: true,
        versions: None,
        max_buffered: None,
        stream_failure_rejects: false,
        retry: None,
    };
    // `c` retries as in the standard universe (R36).
    let retrying = EndpointSpec {
        retry: Config::standard(false)
            .endpoints
            .get(2)
            .and_then(|spec| spec.retry),
        ..ep("c", None)
    };
    Config {
        endpoints: vec![ep("a", Some(60_000)), ep("b", Some(0)), retrying],
        record_patches,
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>()
            .prop_map(|patches| Model::new(config(patches)))
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        // R28, R29 through the handle: a status report and a refetch, on a lifetime that has
        // data or has ended (a handler holds a loaded handle only once its data landed).
        let (lifetimes, _, _) = state.issued();
        let handled: Vec<u64> = (1..=lifetimes + 1)
            .filter(|l| !loading(state, *l))
            .collect();
        let report = prop_oneof![
            Just(Report::Connecting),
            Just(Report::Live),
            Just(Report::Reconnecting)
        ];
        prop_oneof![
            20 => strategies::ops_attaching(state, false, false, false),
            1 => select(handled.clone()).prop_map(|lifetime| Op::RefetchLifetime { lifetime }),
            1 => select(handled.clone()).prop_map(|lifetime| Op::SourceResync { lifetime }),
            1 => (select(handled), report)
                .prop_map(|(lifetime, report)| Op::StreamReport { lifetime, report }),
        ]
        .boxed()
    }

    /// Shrinking must not turn an attachment into one before the lifetime's data (which this
    /// test cannot make: see the module documentation).
    fn preconditions(state: &Model, op: &Op) -> bool {
        match op {
            Op::StreamAttach { lifetime }
            | Op::RefetchLifetime { lifetime }
            | Op::SourceResync { lifetime }
            | Op::StreamReport { lifetime, .. } => !loading(state, *lifetime),
            // A result comes from a running query function (not one waiting for a retry).
            Op::Fulfil { key, request, .. } | Op::Reject { key, request, .. } => {
                state.running().contains(&(*key, *request))
            }
            _ => true,
        }
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        apply_with_tick(&mut state, op);
        state
    }
}

/// Whether `lifetime` is live and has no data yet (its handler has no loaded handle).
fn loading(state: &Model, lifetime: u64) -> bool {
    state
        .observe()
        .iter()
        .any(|o| o.lifetime == lifetime && !o.phase.has_data())
}

/// Apply an op to the model, then the timer tick the runtime's timer task performs as soon as
/// the op yields, if a removal deadline is due (keep time 0).
fn apply_with_tick(model: &mut Model, op: &Op) -> OpResult {
    let result = model.apply(op);
    if model.next_deadline().is_some_and(|at| at <= model.now()) {
        model.apply(&Op::Advance { ms: 0 });
    }
    result
}

type Reply = Result<Data, String>;

/// A bad item of an attached stream: a bad frame is skipped, a failure ends the stream.
#[derive(Debug)]
enum Bad {
    Frame,
    Failure,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::Frame => STREAM_SKIP_REASON,
            Bad::Failure => STREAM_FAILURE,
        })
    }
}

impl StreamError for Bad {
    fn is_fatal(&self) -> bool {
        matches!(self, Bad::Failure)
    }
}

/// The test's end of an attached stream.
type Feed = mpsc::UnboundedSender<Result<Recipe, Bad>>;
type Pending = Arc<Mutex<HashMap<(usize, u8), oneshot::Sender<Reply>>>>;

/// What the lifecycle handlers tell the test, by lifetime and handler generation (R30).
#[derive(Default)]
struct Handles {
    /// The newest generation started, by lifetime.
    started: HashMap<u64, u32>,
    loaded: HashMap<(u64, u32), EntryHandle<WithData, Data>>,
    ended_before_loading: HashSet<(u64, u32)>,
}

impl Handles {
    /// The loaded handle of `lifetime`'s newest handler, if it has one.
    fn current(&self, lifetime: u64) -> Option<&EntryHandle<WithData, Data>> {
        let generation = self.started.get(&lifetime)?;
        self.loaded.get(&(lifetime, *generation))
    }
}

/// The runtime under test, with the model beside it for each op's result.
struct System {
    rt: tokio::runtime::Runtime,
    api: Api,
    endpoints: Vec<Endpoint<u8, Data>>,
    pending: Pending,
    handles: Arc<Mutex<Handles>>,
    subscriptions: BTreeMap<u64, livecache::Subscription<Data>>,
    /// The attached streams, by lifetime, until the test ends or fails them.
    feeds: HashMap<u64, Feed>,
    model: Model,
    step: usize,
}

fn recipe_fn(recipe: Recipe) -> impl FnOnce(&mut livecache::core::Draft<'_, Data>) {
    move |draft| common::run_recipe(recipe, draft)
}

impl System {
    fn new(reference: &Model) -> System {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds");
        let pending: Pending = Arc::default();
        let handles: Arc<Mutex<Handles>> = Arc::default();
        let config = reference.config().clone();
        let (api, endpoints) = rt.block_on(async {
            let recording = if config.record_patches {
                Recording::EventsWithPatches
            } else {
                Recording::Events
            };
            let api = Api::builder().recording(recording).build();
            let endpoints = config
                .endpoints
                .iter()
                .enumerate()
                .map(|(index, spec)| {
                    let pending = Arc::clone(&pending);
                    let handles = Arc::clone(&handles);
                    let builder = api
                        .query::<u8, Data>(spec.name.clone())
                        .keep_unused_data_for(spec.keep_ms.map_or(Keep::Never, Keep::millis));
                    let builder = match spec.retry {
                        Some(policy) => builder.retry(policy),
                        None => builder,
                    };
                    builder
                        .query_fn(move |arg: u8| {
                            let (tx, rx) = oneshot::channel::<Reply>();
                            if let Ok(mut pending) = pending.lock() {
                                pending.insert((index, arg), tx);
                            }
                            async move {
                                match rx.await {
                                    Ok(Ok(data)) => Ok(data),
                                    Ok(Err(error)) => Err(error.into()),
                                    Err(_) => std::future::pending().await,
                                }
                            }
                        })
                        .on_cache_entry_added(move |_arg, entry| {
                            let handles = Arc::clone(&handles);
                            async move {
                                let handler = entry.handler();
                                let id = (handler.lifetime.0, handler.generation);
                                let newest = handler.generation;
                                {
                                    let mut started = lock(&handles);
                                    let at = started.started.entry(id.0).or_insert(newest);
                                    *at = (*at).max(newest);
                                }
                                match entry.data_loaded().await {
                                    Ok((entry, _)) => {
                                        lock(&handles).loaded.insert(id, entry);
                                    }
                                    Err(_) => {
                                        lock(&handles).ended_before_loading.insert(id);
                                    }
                                }
                                Ok(())
                            }
                        })
                        .build()
                        .expect("distinct endpoint names")
                })
                .collect();
            (api, endpoints)
        });
        System {
            rt,
            api,
            endpoints,
            pending,
            handles,
            subscriptions: BTreeMap::new(),
            feeds: HashMap::new(),
            model: reference.clone(),
            step: 0,
        }
    }

    /// Let every ready task run (request completions, handlers, the timer).
    fn settle(&self) {
        self.rt.block_on(async {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
        });
    }

    fn advance(&self, ms: u64) {
        self.settle();
        self.rt
            .block_on(tokio::time::advance(Duration::from_millis(ms)));
        self.settle();
    }

    fn reply(&self, key: KeyRef, reply: Reply) {
        let tx = lock(&self.pending).remove(&(key.endpoint, key.arg));
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
        self.settle();
    }

    fn apply(&mut self, op: &Op) -> Option<OpResult> {
        let _guard = self.rt.enter();
        let endpoint = |key: &KeyRef| &self.endpoints[key.endpoint];
        let result = match op {
            Op::Subscribe { key, refetch } => {
                let sub = endpoint(key)
                    .subscribe_with(key.arg, *refetch)
                    .expect("u8 keys");
                let (_, _, issued) = self.model.issued();
                self.subscriptions.insert(issued + 1, sub);
                None
            }
            Op::Unsubscribe { subscription } => {
                drop(self.subscriptions.remove(subscription));
                None
            }
            Op::Refetch { subscription } => Some(OpResult::Done(
                self.subscriptions
                    .get(subscription)
                    .is_some_and(|s| s.refetch().is_ok()),
            )),
            Op::SetPolling {
                subscription,
                interval,
            } => Some(OpResult::Done(
                self.subscriptions.get(subscription).is_some_and(|s| {
                    s.poll_every(Some(std::time::Duration::from_millis(*interval)))
                        .is_ok()
                }),
            )),
            Op::Prefetch { key, refetch } => {
                endpoint(key).prefetch(key.arg, *refetch).expect("u8 keys");
                None
            }
            Op::Advance { ms } => {
                self.advance(*ms);
                None
            }
            Op::AdvanceToDeadline => {
                if let Some(at) = self.model.next_deadline() {
                    self.advance(at.saturating_sub(self.model.now()));
                }
                None
            }
            // Never generated here: the runtime's timers fire as its clock moves, so no event can
            // arrive after a deadline it was not told of (the core-level tests check that case).
            Op::Late { .. } => panic!("the runtime test does not generate Late"),
            // Tags come from the endpoint's `provides_tags` here, not from an op; the runtime's
            // tags are pinned by tests/checks/tags.rs, the rule's decisions by the core tests.
            Op::ProvideTags { .. } | Op::Invalidate { .. } => {
                panic!("the runtime test does not generate tag ops")
            }
            Op::Fulfil { key, data, .. } => {
                self.reply(*key, Ok(data.clone()));
                None
            }
            Op::Reject { key, error, .. } => {
                self.reply(*key, Err(error.clone()));
                None
            }
            Op::Restart { key } => Some(OpResult::Done(
                endpoint(key)
                    .restart(&key.arg)
                    .expect("every endpoint has a handler"),
            )),
            Op::UpdateCached {
                lifetime,
                generation,
                recipe,
                patches,
            } => Some(OpResult::Updated(self.update_cached(
                *lifetime,
                *generation,
                *recipe,
                *patches,
            ))),
            Op::UpdateQueryData { key, recipe } => {
                let collection = endpoint(key)
                    .update_query_data(&key.arg, recipe_fn(*recipe))
                    .expect("Vec<u8> serialises");
                Some(OpResult::QueryDataUpdated(collection.patches))
            }
            Op::PatchQueryData { key, patch } => {
                let result = endpoint(key)
                    .patch_query_data(&key.arg, patch)
                    .map_err(|e| match e {
                        Error::Patch(CorePatchError::NoEntry) => PatchError::NoEntry,
                        Error::Patch(CorePatchError::NoData) => PatchError::NoData,
                        Error::Patch(CorePatchError::Apply(_)) => PatchError::Apply,
                        Error::Patch(CorePatchError::Schema(_)) => PatchError::Schema,
                        other => panic!("unexpected error {other}"),
                    });
                Some(OpResult::Patched(result))
            }
            Op::Upsert { key, data } => {
                endpoint(key)
                    .upsert_query_data(key.arg, data.clone())
                    .expect("u8 keys");
                None
            }
            Op::Remove { key } => Some(OpResult::Done(
                endpoint(key).remove(&key.arg).expect("u8 keys"),
            )),
            Op::Reset => {
                self.api.reset();
                None
            }
            Op::StreamAttach { lifetime } => Some(OpResult::Done(self.attach(*lifetime))),
            // A version on an unversioned endpoint is ignored (every endpoint here is one).
            Op::StreamMessage {
                lifetime, recipe, ..
            } => Some(OpResult::Done(self.feed(*lifetime, Ok(*recipe)))),
            Op::RefetchLifetime { lifetime } => {
                let handles = lock(&self.handles);
                let handle = handles.current(*lifetime);
                Some(OpResult::Done(handle.is_some_and(|h| h.refetch().is_ok())))
            }
            Op::SourceResync { lifetime } => {
                let handles = lock(&self.handles);
                let handle = handles.current(*lifetime);
                Some(OpResult::Done(
                    handle.is_some_and(|h| h.resync_source().is_ok()),
                ))
            }
            Op::StreamReport { lifetime, report } => {
                let handles = lock(&self.handles);
                let handle = handles.current(*lifetime);
                let now = self.model.now();
                let reported = handle.map(|h| h.report_stream_status(report.status(now)));
                Some(OpResult::Done(reported.is_some_and(|r| r.is_ok())))
            }
            Op::FulfilVersioned { .. } | Op::UpsertVersioned { .. } | Op::ResyncDone { .. } => {
                unreachable!("the runtime's universe declares no versions")
            }
            Op::StreamSkip { lifetime } => {
                Some(OpResult::Done(self.feed(*lifetime, Err(Bad::Frame))))
            }
            Op::StreamFinish {
                lifetime,
                failed: true,
            } => {
                let fed = self.feed(*lifetime, Err(Bad::Failure));
                self.feeds.remove(lifetime);
                Some(OpResult::Done(fed))
            }
            Op::StreamFinish {
                lifetime,
                failed: false,
            } => {
                // Closing the channel ends the stream.
                let open = self
                    .feeds
                    .remove(lifetime)
                    .is_some_and(|feed| !feed.is_closed());
                Some(OpResult::Done(open))
            }
        };
        self.settle();
        result
    }

    /// Attach a stream to a live lifetime through its loaded handle, unless one is attached.
    fn attach(&mut self, lifetime: u64) -> bool {
        if self
            .feeds
            .get(&lifetime)
            .is_some_and(|feed| !feed.is_closed())
        {
            return false;
        }
        let Some(handle) = lock(&self.handles)
            .current(lifetime)
            .filter(|handle| !handle.is_removed())
            .cloned()
        else {
            return false;
        };
        let (feed, items) = mpsc::unbounded();
        self.feeds.insert(lifetime, feed);
        self.rt.spawn(async move {
            handle
                .try_stream(items, |draft, recipe| common::run_recipe(recipe, draft))
                .await
        });
        true
    }

    /// Send an item to the stream attached to `lifetime`: whether one took it (its task ends,
    /// dropping the channel's receiver, once the stream failed or the entry was removed).
    fn feed(&mut self, lifetime: u64, item: Result<Recipe, Bad>) -> bool {
        self.feeds
            .get(&lifetime)
            .is_some_and(|feed| feed.unbounded_send(item).is_ok())
    }

    fn update_cached(
        &self,
        lifetime: u64,
        generation: Option<u32>,
        recipe: Recipe,
        patches: bool,
    ) -> Result<Option<livecache::core::PatchSet>, ModelUpdateError> {
        let handles = lock(&self.handles);
        let newest = handles.started.get(&lifetime).copied();
        let Some(generation) = generation.or(newest) else {
            return Err(ModelUpdateError::NotLive);
        };
        if let Some(handle) = handles.loaded.get(&(lifetime, generation)) {
            let result = if patches {
                handle
                    .update_cached_data_with_patches(recipe_fn(recipe))
                    .map(Some)
            } else {
                handle.update_cached_data(recipe_fn(recipe)).map(|()| None)
            };
            return result.map_err(|e| match e {
                UpdateError::EntryRemoved => ModelUpdateError::NotLive,
                other => panic!("unexpected error {other}"),
            });
        }
        // No loaded handle: the handler is waiting for data, or it ended (or never began).
        let waiting = newest == Some(generation)
            && !handles
                .ended_before_loading
                .contains(&(lifetime, generation));
        Err(if waiting {
            ModelUpdateError::NotLoaded
        } else {
            ModelUpdateError::NotLive
        })
    }

    /// What the runtime shows of every key of the universe.
    fn observe(&self) -> Vec<KeyState> {
        let mut seen = Vec::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            for arg in 1..=2u8 {
                let state = endpoint.state(&arg).expect("u8 keys");
                let key = self.model.config().key(KeyRef {
                    endpoint: index,
                    arg,
                });
                seen.push((
                    key,
                    state.status,
                    state.phase,
                    state.data.as_deref().cloned(),
                    state.error.as_ref().map(ToString::to_string),
                    state.is_fetching,
                ));
            }
        }
        seen.sort();
        seen
    }

    fn expected(&self) -> Vec<KeyState> {
        let live = self.model.observe();
        let mut seen = Vec::new();
        for index in 0..self.endpoints.len() {
            for arg in 1..=2u8 {
                let key = self.model.config().key(KeyRef {
                    endpoint: index,
                    arg,
                });
                seen.push(match live.iter().find(|o| o.key == key) {
                    Some(o) => (
                        key,
                        o.status,
                        Some(o.phase),
                        o.data.clone(),
                        o.error.clone(),
                        o.in_flight.is_some(),
                    ),
                    None => (key, Status::Uninitialized, None, None, None, false),
                });
            }
        }
        seen.sort();
        seen
    }
}

/// What is compared per key: key, status, phase, data, error text, is_fetching.
type KeyState = (
    String,
    Status,
    Option<Phase>,
    Option<Data>,
    Option<String>,
    bool,
);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn without_handler_ends(trace: Vec<TraceEvent>) -> Vec<TraceEvent> {
    trace
        .into_iter()
        .filter(|e| !matches!(e.kind, TraceKind::LifecycleEnded { .. }))
        .collect()
}

impl StateMachineTest for System {
    type SystemUnderTest = Self;
    type Reference = Reference;

    fn init_test(reference: &Model) -> Self {
        System::new(reference)
    }

    fn apply(mut sut: Self, _reference: &Model, op: Op) -> Self {
        let runtime_result = sut.apply(&op);
        let model_result = apply_with_tick(&mut sut.model, &op);
        let step = sut.step;
        if let Some(runtime_result) = runtime_result {
            assert_eq!(
                runtime_result, model_result,
                "step {step} {op:?}: results differ"
            );
        }
        let trace = without_handler_ends(sut.api.trace());
        if let Some(difference) = trace_difference(sut.model.trace(), &trace, "runtime") {
            panic!("step {step} {op:?}: {difference}");
        }
        assert_eq!(
            sut.observe(),
            sut.expected(),
            "step {step} {op:?}: states differ"
        );
        assert_eq!(
            sut.api.len(),
            sut.model.observe().len(),
            "step {step}: entry counts differ"
        );
        sut.step += 1;
        sut
    }

    fn teardown(sut: Self, _reference: Model) {
        let System {
            rt,
            api,
            endpoints,
            subscriptions,
            handles,
            feeds,
            ..
        } = sut;
        drop(subscriptions);
        drop(feeds);
        rt.block_on(async move {
            api.reset();
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            assert_eq!(api.in_flight(), (0, 0), "nothing left running after reset");
            drop(endpoints);
        });
        lock(&handles).loaded.clear();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_048,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/runtime_model.txt",
        ))),
        .. ProptestConfig::default()
    })]

    /// The runtime agrees with the model after every op (R1–R21 through the public API).
    #[test]
    fn runtime_agrees_with_model(sequential 1..40 => System);
}
