//! Drives the sans-IO core with the model's [`Op`] alphabet, so that tests (and the fuzz
//! targets) can compare the two. It uses only livecache's public core API.
//!
//! [`CoreUnderTest`] is the core configured like a model [`Config`], answering in the model's
//! vocabulary; [`compare`] checks a model and a core against each other after an op.

use livecache::core::{
    Cache, CacheConfig, EndpointConfig, EndpointId, Keep, LifetimeId, PatchError as CorePatchError,
    Patches, RequestId, SubscriptionId, UpdateRefused as CoreUpdateError,
};
use livecache::core::{CacheKey, default_key};
use livecache::core::{Recording, TraceEvent};
use livecache_model::{
    Config, Data, KeyRef, Model, Observation, Op, OpResult, PatchError, Recipe, UpdateError,
};

/// The core, configured like a model [`Config`], answering in the model's vocabulary.
#[derive(Clone, Debug)]
pub struct CoreUnderTest {
    /// The core itself (data `Vec<u8>`, errors `String`).
    pub cache: Cache<Data, String>,
    endpoints: Vec<(String, EndpointId)>,
}

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
                        },
                    )
                    .expect("endpoint names are distinct");
                (spec.name.clone(), id)
            })
            .collect();
        CoreUnderTest { cache, endpoints }
    }

    fn key(&self, key: KeyRef) -> (EndpointId, CacheKey) {
        let (name, id) = &self.endpoints[key.endpoint];
        let cache_key = default_key(name, &key.arg).expect("a u8 argument always serialises");
        (*id, cache_key)
    }

    /// Execute one op at the core's current time, discarding the effects it returns.
    ///
    /// # Panics
    ///
    /// If an op names an endpoint index `config` does not have.
    pub fn apply(&mut self, op: &Op) -> OpResult {
        let now = self.cache.now();
        let result = match op {
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
                if let Some(at) = self.cache.poll_timeout() {
                    self.cache.handle_timeout(at);
                }
                OpResult::Unit
            }
            Op::Fulfil { key, request, data } => {
                let (_, k) = self.key(*key);
                self.cache
                    .fulfil(now, &k, RequestId(*request), data.clone());
                OpResult::Unit
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
                recipe,
                patches,
            } => {
                let recipe = *recipe;
                let result = self
                    .cache
                    .update_cached(now, LifetimeId(*lifetime), patches_wanted(*patches), |d| {
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
        };
        while self.cache.poll_effect().is_some() {}
        result
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
    Ok(())
}

/// The model's "the caller asks for the patch set" as the core's [`Patches`].
fn patches_wanted(wanted: bool) -> Patches {
    if wanted {
        Patches::Wanted
    } else {
        Patches::NotWanted
    }
}
