//! Drives the sans-IO core with the model's [`Op`] alphabet, so that tests (and the fuzz
//! targets) can compare the two. It uses only livecache's public core API.
//!
//! [`CoreUnderTest`] is the core configured like a model [`Config`], answering in the model's
//! vocabulary; [`compare`] checks a model and a core against each other after an op.
//!
//! The stream ops (R21) drive one [`Attachment`] per lifetime, the core's own decisions,
//! carried out on the cache the way the runtime's stream task (`src/runtime/stream.rs`) does:
//! the harness learns of a lifetime's first data and of its removal from the effects the core
//! queues (`ResolveDataLoaded`, `EntryRemoved`), in queue order, right after each op.

use std::collections::BTreeMap;
use std::sync::Arc;

use livecache::core::{Attachment, Finish, Overflow, Received, StreamEndReason};
use livecache::core::{
    Cache, CacheConfig, Effect, EndpointConfig, EndpointId, HandlerId, Keep, LifetimeId,
    PatchError as CorePatchError, Patches, RequestId, SubscriptionId,
    UpdateRefused as CoreUpdateError,
};
use livecache::core::{CacheKey, default_key};
use livecache::core::{Recording, TraceEvent, TraceKind};
use livecache::core::{RequestEvent, RequestReason, Resync, Version, Versioning};
use livecache_model::{
    Config, Data, KeyRef, Model, Observation, Op, OpResult, PatchError, Recipe, STREAM_FAILURE,
    STREAM_SKIP_REASON, StreamObservation, UpdateError,
};

/// The core, configured like a model [`Config`], answering in the model's vocabulary.
#[derive(Clone, Debug)]
pub struct CoreUnderTest {
    /// The core itself (data `Vec<u8>`, errors `String`).
    pub cache: Cache<Data, String>,
    /// Each endpoint's name and id, and whether it has a lifecycle handler (a live lifetime of
    /// such an endpoint has a handle to attach a stream with). Shared by the clones.
    endpoints: Arc<[(String, EndpointId, bool)]>,
    /// The endpoints that declare versions.
    versioned: Arc<[EndpointId]>,
    /// What each endpoint's streams hold before the first data, and what overflowing does.
    buffers: Arc<[(EndpointId, usize, Overflow)]>,
    /// The stream attached to a lifetime (until its attachment ends), with the lifetime's key:
    /// its messages, each with its version if it has one.
    streams: BTreeMap<u64, (CacheKey, Attachment<Message>)>,
    /// Time let pass with no tick ([`Op::Late`]): the next op is driven at the core's time plus
    /// this, with no `handle_timeout` before it.
    late: u64,
    /// The effects the last op queued (and the stream attachments' part of carrying them out
    /// queued in turn), in queue order, for [`compare`].
    effects: Vec<Effect<Data>>,
    /// How many of the model's trace events [`compare`] has already matched with effects.
    events_matched: std::cell::Cell<usize>,
}

/// A stream message as the harness's attachments hold it: its version, if any, and its recipe.
type Message = (Option<u64>, Recipe);

/// Run a model [`Recipe`] on a core draft: the same change `Recipe::apply` makes to plain data,
/// taking mutable access exactly when the recipe "touches".
pub fn run_recipe(recipe: Recipe, draft: &mut livecache::core::Draft<'_, Data>) {
    match recipe {
        Recipe::Noop => {
            let _ = draft.len();
        }
        Recipe::Push(b) => draft.push(b),
        Recipe::Pop => {
            draft.pop();
        }
        Recipe::SetFirst(b) => {
            if let Some(first) = draft.first_mut() {
                *first = b;
            }
        }
    }
}

impl CoreUnderTest {
    /// A fresh core with the endpoints (and recording mode) of `config`.
    pub fn new(config: &Config) -> Self {
        let recording = if config.record_patches {
            Recording::EventsWithPatches
        } else {
            Recording::Events
        };
        let mut cache = Cache::new(CacheConfig {
            keep: Keep::default(),
            recording,
        });
        let endpoints = config
            .endpoints
            .iter()
            .map(|spec| {
                let keep = Some(spec.keep_ms.map_or(Keep::Never, Keep::millis));
                let id = cache
                    .add_endpoint(
                        spec.name.clone(),
                        EndpointConfig {
                            keep,
                            has_lifecycle: spec.lifecycle,
                            versions: spec.versions.map(|v| Versioning {
                                contiguous: v.contiguous,
                                resync: if v.resume {
                                    Resync::Resume
                                } else {
                                    Resync::Refetch
                                },
                                max_queued: v.max_queued,
                            }),
                            stream_failure_rejects: spec.stream_failure_rejects,
                            retry: spec.retry,
                        },
                    )
                    .expect("endpoint names are distinct");
                (spec.name.clone(), id, spec.lifecycle)
            })
            .collect::<Vec<_>>();
        let versioned = config
            .endpoints
            .iter()
            .zip(&endpoints)
            .filter(|(spec, _)| spec.versions.is_some())
            .map(|(_, (_, id, _))| *id)
            .collect();
        let buffers = config
            .endpoints
            .iter()
            .zip(&endpoints)
            .filter_map(
                |(spec, (_, id, _))| match (spec.versions, spec.max_buffered) {
                    (Some(v), _) => Some((*id, v.max_queued, Overflow::Resync)),
                    (None, Some(max)) => Some((*id, max, Overflow::Fail)),
                    (None, None) => None,
                },
            )
            .collect();
        CoreUnderTest {
            cache,
            endpoints: endpoints.into(),
            versioned,
            buffers,
            streams: BTreeMap::new(),
            late: 0,
            effects: Vec::new(),
            events_matched: std::cell::Cell::new(0),
        }
    }

    fn key(&self, key: KeyRef) -> (EndpointId, CacheKey) {
        let (name, id, _) = &self.endpoints[key.endpoint];
        let cache_key = default_key(name, &key.arg).expect("a u8 argument always serialises");
        (*id, cache_key)
    }

    /// Execute one op at the core's current time, then carry out what its effects ask of the
    /// attached streams (a lifetime's first data, its removal) and discard the rest.
    ///
    /// # Panics
    ///
    /// If an op names an endpoint index `config` does not have.
    pub fn apply(&mut self, op: &Op) -> OpResult {
        // Every op but `Late` and the stream ops takes the lateness with it
        // (`AdvanceToDeadline` only if it ticks); a stream op is the runtime's side, which tells
        // the cache the time only through what it applies or records, at the cache's own time.
        let late = if op.is_stream_op() {
            0
        } else {
            std::mem::take(&mut self.late)
        };
        let now = self.cache.now().saturating_add(late);
        let result = match op {
            Op::Late { ms } => {
                self.late = late.saturating_add(*ms);
                OpResult::Unit
            }
            Op::Subscribe { key, refetch } => {
                let (ep, k) = self.key(*key);
                OpResult::Subscribed(
                    self.cache
                        .subscribe(now, ep, &k, *refetch)
                        .expect("the key is this endpoint's")
                        .0,
                )
            }
            Op::Unsubscribe { subscription } => {
                OpResult::Done(self.cache.unsubscribe(now, SubscriptionId(*subscription)))
            }
            Op::Refetch { subscription } => {
                OpResult::Done(self.cache.refetch(now, SubscriptionId(*subscription)))
            }
            Op::ProvideTags { key, tags } => {
                let (_, k) = self.key(*key);
                OpResult::Done(self.cache.provide_tags(now, &k, tags.iter().cloned()))
            }
            Op::Invalidate { tags } => {
                self.cache.invalidate(now, tags);
                OpResult::Unit
            }
            Op::SetPolling {
                subscription,
                interval,
            } => OpResult::Done(self.cache.set_polling(
                now,
                SubscriptionId(*subscription),
                Some(*interval),
            )),
            Op::Prefetch { key, refetch } => {
                let (ep, k) = self.key(*key);
                self.cache
                    .prefetch(now, ep, &k, *refetch)
                    .expect("the key is this endpoint's");
                OpResult::Unit
            }
            Op::Advance { ms } => {
                self.cache.handle_timeout(now.saturating_add(*ms));
                OpResult::Unit
            }
            Op::AdvanceToDeadline => {
                match self.cache.poll_timeout() {
                    Some(at) => self.cache.handle_timeout(at.max(now)),
                    None => self.late = late,
                }
                OpResult::Unit
            }
            Op::Fulfil { key, request, data } => {
                let (_, k) = self.key(*key);
                self.cache
                    .fulfil(now, &k, RequestId(*request), data.clone());
                OpResult::Unit
            }
            Op::FulfilVersioned {
                key,
                request,
                data,
                watermark,
            } => {
                let (_, k) = self.key(*key);
                let watermark = Version::new(*watermark);
                self.cache
                    .fulfil_versioned(now, &k, RequestId(*request), data.clone(), watermark);
                OpResult::Unit
            }
            Op::UpsertVersioned {
                key,
                data,
                watermark,
            } => {
                let (ep, k) = self.key(*key);
                let watermark = Version::new(*watermark);
                self.cache
                    .upsert_versioned(now, ep, &k, data.clone(), watermark)
                    .expect("the key is this endpoint's");
                OpResult::Unit
            }
            Op::StreamReport { lifetime, report } => {
                let status = report.status(now);
                let handler = self.handler(*lifetime);
                let reported = self.cache.stream_status(now, handler, status);
                OpResult::Done(reported.is_ok())
            }
            Op::ResyncDone { lifetime } => {
                let handler = self.handler(*lifetime);
                OpResult::Done(self.cache.resync_done(now, handler).is_ok())
            }
            Op::SourceResync { lifetime } => {
                let handler = self.handler(*lifetime);
                OpResult::Done(self.cache.source_resync(now, handler).is_ok())
            }
            Op::RefetchLifetime { lifetime } => {
                let handler = self.handler(*lifetime);
                OpResult::Done(self.cache.refetch_lifetime(now, handler))
            }
            Op::Reject {
                key,
                request,
                error,
            } => {
                let (_, k) = self.key(*key);
                self.cache
                    .reject(now, &k, RequestId(*request), error.clone());
                OpResult::Unit
            }
            Op::UpdateCached {
                lifetime,
                generation,
                recipe,
                patches,
            } => {
                let recipe = *recipe;
                let handler = match generation {
                    Some(generation) => HandlerId {
                        lifetime: LifetimeId(*lifetime),
                        generation: *generation,
                    },
                    None => self.handler(*lifetime),
                };
                let result = self
                    .cache
                    .update_cached(now, handler, patches_wanted(*patches), |d| {
                        run_recipe(recipe, d)
                    })
                    .map_err(|e| match e {
                        CoreUpdateError::NotLive => UpdateError::NotLive,
                        CoreUpdateError::NotLoaded => UpdateError::NotLoaded,
                        CoreUpdateError::Serialize(msg) => panic!("Vec<u8> serialises: {msg}"),
                        other => panic!("a refusal the model does not know: {other}"),
                    });
                OpResult::Updated(result)
            }
            Op::UpdateQueryData { key, recipe } => {
                let (_, k) = self.key(*key);
                let recipe = *recipe;
                let set = self
                    .cache
                    .update_query_data(now, &k, |d| run_recipe(recipe, d))
                    .expect("Vec<u8> serialises");
                OpResult::QueryDataUpdated(set)
            }
            Op::PatchQueryData { key, patch } => {
                let (_, k) = self.key(*key);
                let result = self
                    .cache
                    .patch_query_data(now, &k, patch)
                    .map_err(|e| match e {
                        CorePatchError::NoEntry => PatchError::NoEntry,
                        CorePatchError::NoData => PatchError::NoData,
                        CorePatchError::Apply(_) => PatchError::Apply,
                        CorePatchError::Schema(_) => PatchError::Schema,
                        other => panic!("a patch error the model does not know: {other}"),
                    });
                OpResult::Patched(result)
            }
            Op::Upsert { key, data } => {
                let (ep, k) = self.key(*key);
                self.cache
                    .upsert(now, ep, &k, data.clone())
                    .expect("the key is this endpoint's");
                OpResult::Unit
            }
            Op::Remove { key } => {
                let (_, k) = self.key(*key);
                OpResult::Done(self.cache.remove(now, &k))
            }
            Op::Reset => {
                self.cache.reset(now);
                OpResult::Unit
            }
            Op::Restart { key } => {
                let (_, k) = self.key(*key);
                OpResult::Done(self.cache.restart(now, &k).is_ok())
            }
            Op::StreamAttach { lifetime } => OpResult::Done(self.stream_attach(now, *lifetime)),
            Op::StreamMessage {
                lifetime,
                recipe,
                version,
            } => OpResult::Done(self.stream_message(now, *lifetime, (*version, *recipe))),
            Op::StreamSkip { lifetime } => OpResult::Done(self.stream_skip(now, *lifetime)),
            Op::StreamFinish { lifetime, failed } => {
                OpResult::Done(self.stream_finish(now, *lifetime, *failed))
            }
        };
        self.effects.clear();
        self.carry_out_effects();
        result
    }

    /// Drain the effects the op queued and carry out, in queue order, the stream attachments'
    /// part: a lifetime's first data (held messages are applied), its removal (the attachment
    /// ends). What that queues in turn is drained too.
    fn carry_out_effects(&mut self) {
        // Effects queued while carrying one out (notifications) come after those already
        // queued, so popping one at a time keeps the queue order.
        while let Some(effect) = self.cache.poll_effect() {
            let now = self.cache.now();
            self.effects.push(effect.clone());
            match effect {
                Effect::ResolveDataLoaded { lifetime, .. } => {
                    if self.streams.contains_key(&lifetime.0) {
                        self.go_live(now, lifetime.0);
                    }
                }
                Effect::EntryRemoved { lifetime, .. } => {
                    if let Some((_, attachment)) = self.streams.get_mut(&lifetime.0) {
                        let reason = attachment.removed();
                        self.end_stream(now, lifetime.0, reason);
                    }
                }
                // The old handler's stream is dropped with it (R30), as the runtime's ends when
                // the handler's `removed()` resolves with `Restarted`.
                Effect::RestartLifecycle { handler, .. } => {
                    let lifetime = handler.lifetime.0;
                    if self.streams.contains_key(&lifetime) {
                        self.end_stream(now, lifetime, StreamEndReason::HandlerRestarted);
                    }
                }
                // The runtime would ask the source to replay; here the ops are the source. A
                // request event goes to the lifecycle handler, which the ops stand for too.
                Effect::Resume { .. }
                | Effect::RequestEvent { .. }
                | Effect::StartRequest { .. }
                | Effect::AbortRequest { .. }
                | Effect::Notify { .. }
                | Effect::StartLifecycle { .. } => {}
                other => panic!("an effect the harness does not know: {other:?}"),
            }
        }
    }

    /// `StreamAttach`: as a handler calling `EntryHandle::try_stream`: with a `BeforeData` handle
    /// before the lifetime's data (messages held), with a `WithData` one after it (live now).
    fn stream_attach(&mut self, now: u64, lifetime: u64) -> bool {
        // One attachment at a time.
        if self.streams.contains_key(&lifetime) {
            return false;
        }
        // Not live, or no lifecycle handler (so no handle to attach with): nothing.
        let Some((key, has_data)) = self
            .cache
            .lifetime_entry(LifetimeId(lifetime))
            .filter(|entry| {
                self.endpoints
                    .iter()
                    .any(|(_, id, lifecycle)| *id == entry.endpoint && *lifecycle)
            })
            .map(|entry| (entry.key.clone(), entry.phase.has_data()))
        else {
            return false;
        };
        let handler = self.handler(lifetime);
        if has_data {
            self.streams
                .insert(lifetime, (key, Attachment::live(handler)));
            self.go_live(now, lifetime);
        } else {
            let endpoint = self
                .cache
                .lifetime_entry(LifetimeId(lifetime))
                .map(|e| e.endpoint);
            let bound = self.buffers.iter().find(|(id, _, _)| Some(*id) == endpoint);
            let attachment = match bound {
                Some(&(_, max, overflow)) => {
                    Attachment::before_data_bounded(handler, max, overflow)
                }
                None => Attachment::before_data(handler),
            };
            self.streams.insert(lifetime, (key, attachment));
        }
        true
    }

    /// What the runtime's `run` does once the handle has data: report the attachment with the
    /// number of held messages, apply them in order, then end if the stream finished meanwhile.
    fn go_live(&mut self, now: u64, lifetime: u64) {
        let versioned = self.is_versioned(lifetime);
        let Some((_, attachment)) = self.streams.get_mut(&lifetime) else {
            return;
        };
        let handler = attachment.handler();
        let first = if versioned {
            attachment.data_loaded_in_order(|(version, _)| version.map(Version::new))
        } else {
            attachment.data_loaded()
        };
        if self
            .cache
            .stream_attached(now, handler, first.held.len())
            .is_err()
        {
            let reason = attachment.removed();
            self.end_stream(now, lifetime, reason);
            return;
        }
        if let Err(reason) = self.apply_messages(now, lifetime, first.held) {
            self.end_stream(now, lifetime, reason);
            return;
        }
        if first.lost && self.cache.stream_lost(now, handler).is_err() {
            let reason = self.streams.get_mut(&lifetime).map(|(_, a)| a.removed());
            self.end_stream(
                now,
                lifetime,
                reason.unwrap_or(StreamEndReason::EntryRemoved),
            );
            return;
        }
        if let Some(reason) = first.then_end {
            self.end_stream(now, lifetime, reason);
        }
    }

    /// The runtime's `apply_burst`: deliver `messages` in order — a versioned one on a
    /// versioned endpoint through `stream_message` (R24–R26), any other as an update through the
    /// lifecycle handle without patches — stopping at the first refusal; count those delivered.
    fn apply_messages(
        &mut self,
        now: u64,
        lifetime: u64,
        messages: Vec<Message>,
    ) -> Result<(), StreamEndReason> {
        let versioned = self.is_versioned(lifetime);
        let Some(id) = self.streams.get(&lifetime).map(|(_, a)| a.handler()) else {
            return Ok(());
        };
        // One burst, one batch (R34), as the runtime applies it under one lock.
        let (applied, refused) = self.cache.batch(|cache| {
            let mut applied = 0;
            for (version, recipe) in messages {
                let result = match version.filter(|_| versioned) {
                    Some(version) => cache
                        .stream_message(now, id, Version::new(version), move |d| {
                            run_recipe(recipe, d)
                        })
                        .map(|_| ()),
                    None => cache
                        .update_cached(now, id, Patches::NotWanted, |d| run_recipe(recipe, d))
                        .map(|_| ()),
                };
                if result.is_err() {
                    return (applied, true);
                }
                applied += 1;
            }
            (applied, false)
        });
        let Some((_, attachment)) = self.streams.get_mut(&lifetime) else {
            return Ok(());
        };
        attachment.applied(applied);
        if refused {
            Err(attachment.removed())
        } else {
            Ok(())
        }
    }

    /// Whether `lifetime`'s entry is live and of a versioned endpoint.
    fn is_versioned(&self, lifetime: u64) -> bool {
        self.cache
            .lifetime_entry(LifetimeId(lifetime))
            .is_some_and(|e| self.versioned.contains(&e.endpoint))
    }

    /// The attachment of `lifetime`, if one is attached and its stream is still read.
    fn reading(&mut self, lifetime: u64) -> Option<&mut (CacheKey, Attachment<Message>)> {
        self.streams
            .get_mut(&lifetime)
            .filter(|(_, attachment)| attachment.wants_items())
    }

    /// `StreamMessage`: the attachment decides: held, or applied now.
    fn stream_message(&mut self, now: u64, lifetime: u64, message: Message) -> bool {
        let Some((_, attachment)) = self.reading(lifetime) else {
            return false;
        };
        if let Received::Apply(message) = attachment.message(message)
            && let Err(reason) = self.apply_messages(now, lifetime, vec![message])
        {
            self.end_stream(now, lifetime, reason);
        }
        true
    }

    /// `StreamSkip`: counted by the attachment, recorded with its reason at once.
    fn stream_skip(&mut self, now: u64, lifetime: u64) -> bool {
        let Some((key, attachment)) = self.reading(lifetime) else {
            return false;
        };
        attachment.skipped();
        let key = key.clone();
        self.cache.stream_skipped(
            now,
            &key,
            LifetimeId(lifetime),
            STREAM_SKIP_REASON.to_owned(),
        );
        true
    }

    /// `StreamFinish`: the attachment ends now (live) or after its held messages (before data).
    fn stream_finish(&mut self, now: u64, lifetime: u64, failed: bool) -> bool {
        let Some((_, attachment)) = self.reading(lifetime) else {
            return false;
        };
        let finish = if failed {
            Finish::Failed(STREAM_FAILURE.to_owned())
        } else {
            Finish::Ended
        };
        if let Some(reason) = attachment.finish(finish) {
            self.end_stream(now, lifetime, reason);
        }
        true
    }

    /// End the attachment of `lifetime` and record it with its counts (the runtime's
    /// `Recorder::end`).
    fn end_stream(&mut self, now: u64, lifetime: u64, reason: StreamEndReason) {
        let Some((key, attachment)) = self.streams.remove(&lifetime) else {
            return;
        };
        let handler = attachment.handler();
        let end = attachment.end(reason);
        self.cache.stream_ended(now, &key, handler, &end);
    }

    /// The current handler of `lifetime` (R30): what a handle a driver holds now names; for a
    /// lifetime that is not live, its first handler (the core refuses it either way).
    fn handler(&self, lifetime: u64) -> HandlerId {
        self.cache
            .lifetime_entry(LifetimeId(lifetime))
            .map_or(HandlerId::from(LifetimeId(lifetime)), |e| e.handler)
    }

    /// Every live entry as an observer sees it, sorted by key string.
    pub fn observe(&self) -> Vec<Observation> {
        self.cache
            .keys()
            .into_iter()
            .filter_map(|key| {
                let e = self.cache.entry(key)?;
                Some(Observation {
                    key: key.as_str().to_owned(),
                    lifetime: e.lifetime.0,
                    phase: e.phase,
                    status: e.status,
                    data: e.data.cloned(),
                    error: e.error.cloned(),
                    in_flight: e.in_flight.map(|id| id.0),
                    fulfilled_at: e.fulfilled_at,
                    subscriptions: self
                        .cache
                        .subscriptions_of(key)
                        .iter()
                        .map(|s| s.0)
                        .collect(),
                    removal_deadline: e.removal_deadline,
                    poll_deadline: e.poll_deadline,
                    retry_deadline: e.retry_deadline,
                    tags: e.tags.to_vec(),
                    invalidated: e.invalidated,
                    stream: self.streams.get(&e.lifetime.0).map(|(_, attachment)| {
                        StreamObservation {
                            held: attachment.held(),
                            reading: attachment.wants_items(),
                        }
                    }),
                    stream_status: e.stream,
                    watermark: e.watermark,
                    handler: e.handler.generation,
                    stale_messages: e.stale_messages,
                })
            })
            .collect()
    }

    /// Every event the core recorded so far.
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.cache.trace()
    }

    /// The earliest armed removal deadline, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.cache.poll_timeout()
    }
}

/// Where the model's trace and another trace (named `other`) first differ, with the six events
/// from there in each; `None` when they are equal.
pub fn trace_difference(model: &[TraceEvent], trace: &[TraceEvent], other: &str) -> Option<String> {
    if model == trace {
        return None;
    }
    let first = model
        .iter()
        .zip(trace)
        .position(|(m, t)| m != t)
        .unwrap_or(model.len().min(trace.len()));
    let show = |t: &[TraceEvent]| {
        t.iter()
            .skip(first)
            .take(6)
            .map(|e| format!("   {e}\n"))
            .collect::<String>()
    };
    Some(format!(
        "traces differ from event {first}\n model:\n{} {other}:\n{}",
        show(model),
        show(trace)
    ))
}

/// Compare the model and the core after an op: results, whole traces, observations, deadlines.
pub fn compare(
    step: usize,
    op: &Op,
    model_result: &OpResult,
    core_result: &OpResult,
    model: &Model,
    core: &CoreUnderTest,
) -> Result<(), String> {
    if model_result != core_result {
        return Err(format!(
            "step {step} {op:?}: results differ\n model: {model_result:?}\n core:  {core_result:?}"
        ));
    }
    if let Some(difference) = trace_difference(model.trace(), &core.trace(), "core") {
        return Err(format!("step {step} {op:?}: {difference}"));
    }
    let (mo, co) = (model.observe(), core.observe());
    if mo != co {
        return Err(format!(
            "step {step} {op:?}: observations differ\n model: {mo:#?}\n core:  {co:#?}"
        ));
    }
    if model.next_deadline() != core.next_deadline() {
        return Err(format!(
            "step {step} {op:?}: next deadline differs: model {:?}, core {:?}",
            model.next_deadline(),
            core.next_deadline()
        ));
    }
    // The effects: what the driver is asked to do follows from what happened (the model's new
    // trace events), notifications aside (the core coalesces them by its own visible-change
    // rule, which the model does not state).
    let events = model
        .trace()
        .get(core.events_matched.get()..)
        .unwrap_or_default();
    core.events_matched.set(model.trace().len());
    let expected: Vec<Asked> = events
        .iter()
        .flat_map(|event| asked_for(model.config(), event))
        .collect();
    let queued: Vec<Asked> = core.effects.iter().filter_map(Asked::from_effect).collect();
    if expected != queued {
        return Err(format!(
            "step {step} {op:?}: effects differ\n model: {expected:?}\n core:  {queued:?}"
        ));
    }
    Ok(())
}

/// An effect as the comparison sees it: what the driver is asked to do, for which key and
/// lifetime or request (the first data itself is compared through the observations).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asked {
    StartLifecycle(String, u64),
    /// The key, the lifetime, the new handler's generation (R30).
    RestartLifecycle(String, u64, u32),
    StartRequest(String, u64),
    AbortRequest(String, u64),
    ResolveDataLoaded(u64, Option<u64>),
    EntryRemoved(String, u64, bool),
    Resume(String, u64, Option<Version>),
    /// A request event for the key's lifecycle handler: the request, and its reason when it
    /// started.
    RequestEvent(String, u64, Option<RequestReason>),
}

impl Asked {
    fn from_effect(effect: &Effect<Data>) -> Option<Asked> {
        Some(match effect {
            Effect::StartLifecycle { key, lifetime } => {
                Asked::StartLifecycle(key.to_string(), lifetime.0)
            }
            Effect::StartRequest { key, request } => {
                Asked::StartRequest(key.to_string(), request.0)
            }
            Effect::RestartLifecycle { key, handler } => {
                Asked::RestartLifecycle(key.to_string(), handler.lifetime.0, handler.generation)
            }
            Effect::AbortRequest { key, request } => {
                Asked::AbortRequest(key.to_string(), request.0)
            }
            Effect::ResolveDataLoaded {
                lifetime, request, ..
            } => Asked::ResolveDataLoaded(lifetime.0, request.map(|r| r.0)),
            Effect::EntryRemoved {
                key,
                lifetime,
                loaded,
            } => Asked::EntryRemoved(key.to_string(), lifetime.0, *loaded),
            Effect::Resume {
                key,
                lifetime,
                from,
            } => Asked::Resume(key.to_string(), lifetime.0, *from),
            Effect::RequestEvent { key, event, .. } => {
                let reason = match event {
                    RequestEvent::Started { reason, .. } => Some(*reason),
                    _ => None,
                };
                Asked::RequestEvent(key.to_string(), event.request().0, reason)
            }
            _ => return None,
        })
    }
}

/// What the driver must be asked to do when `event` happens (R1, R5, R7, R12–R14): start a
/// lifecycle handler or a request, abort one, resolve data-loaded (only for an endpoint with a
/// handler: nobody else waits for it), report a removal.
fn asked_for(config: &Config, event: &TraceEvent) -> Vec<Asked> {
    let key = event.key.to_string();
    let endpoint = key.split('(').next().unwrap_or_default();
    let has_handler = config
        .endpoints
        .iter()
        .any(|spec| spec.name == endpoint && spec.lifecycle);
    // R29: the lifecycle handler is told of its entry's requests.
    let told = |request: u64, reason: Option<RequestReason>| {
        has_handler.then(|| Asked::RequestEvent(key.clone(), request, reason))
    };
    match &event.kind {
        TraceKind::RequestStarted { request, reason } => {
            return [
                Some(Asked::StartRequest(key.clone(), *request)),
                told(*request, Some(*reason)),
            ]
            .into_iter()
            .flatten()
            .collect();
        }
        TraceKind::RequestFulfilled { request, .. }
        | TraceKind::RequestRejected { request, .. } => {
            return told(*request, None).into_iter().collect();
        }
        // R30: the new handler starts; with data, its data-loaded resolves at once (no
        // request, so no meta).
        TraceKind::LifecycleRestarted {
            lifetime,
            generation,
            loaded,
        } => {
            let restart = Asked::RestartLifecycle(key.clone(), *lifetime, *generation);
            let resolve = loaded.then_some(Asked::ResolveDataLoaded(*lifetime, None));
            return [Some(restart), resolve].into_iter().flatten().collect();
        }
        _ => {}
    }
    asked_once(config, event).into_iter().collect()
}

/// [`asked_for`], for the events that ask for one effect at most.
fn asked_once(config: &Config, event: &TraceEvent) -> Option<Asked> {
    let key = event.key.to_string();
    Some(match &event.kind {
        TraceKind::LifecycleStarted { lifetime } => Asked::StartLifecycle(key, *lifetime),
        // R36: a retry runs the same request again.
        TraceKind::RequestRetried { request, .. } => Asked::StartRequest(key, *request),
        TraceKind::RequestAborted { request } => Asked::AbortRequest(key, *request),
        TraceKind::DataLoaded { lifetime, request } => {
            let endpoint = key.split('(').next().unwrap_or_default();
            let has_handler = config
                .endpoints
                .iter()
                .any(|spec| spec.name == endpoint && spec.lifecycle);
            if !has_handler {
                return None;
            }
            Asked::ResolveDataLoaded(*lifetime, *request)
        }
        TraceKind::EntryRemoved {
            lifetime, loaded, ..
        } => Asked::EntryRemoved(key, *lifetime, *loaded),
        TraceKind::ResyncStarted {
            lifetime,
            policy: Resync::Resume,
            from,
        } => Asked::Resume(key, *lifetime, *from),
        _ => return None,
    })
}

/// The model's "the caller asks for the patch set" as the core's [`Patches`].
fn patches_wanted(wanted: bool) -> Patches {
    if wanted {
        Patches::Wanted
    } else {
        Patches::NotWanted
    }
}
