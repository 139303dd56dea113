//! How an attachment's messages reach the cache (R21, R24–R26): as plain updates in arrival
//! order, or by the version rules; and the entry they are delivered to, whoever delivers them (a
//! lifecycle handler's stream, or a source's own task feeding the entry directly).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use crate::core::StreamEndReason;
use crate::core::{Attachment, Draft, FirstData, LifetimePlace, Notify, Overflow, Version};
use crate::runtime::driver::{Hint, Shared};
use crate::runtime::erased::{Data, ErasedData};
use crate::runtime::error::{UpdateError, panic_message};
use crate::runtime::signal;
use crate::runtime::typed_recipe::{recipe_outcome, run_typed_recipe};

/// The entry a burst of messages goes to: the api, where the core keeps the lifetime, and the
/// lifetime's change signal (its subscribers are woken once per burst).
pub(crate) struct Destination<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) place: LifetimePlace,
    pub(crate) changed: &'a signal::Notifier,
}

impl Destination<'_> {
    fn hint(&self) -> Hint<'_> {
        Hint {
            lifetime: self.place.lifetime(),
            changed: self.changed,
        }
    }

    /// Apply `messages` in order, each as one update (one `updated` event each), under one
    /// acquisition of the cache's lock; subscribers are woken once. Stops at the first failure,
    /// dropping the rest. Returns how many were applied.
    pub(crate) fn update_each<T: Data, Msg>(
        &self,
        messages: impl IntoIterator<Item = Msg>,
        apply: &mut impl FnMut(&mut Draft<'_, T>, Msg),
    ) -> (u64, Result<(), UpdateError>) {
        let place = self.place;
        self.shared.with_lifetime(&self.hint(), |state, now| {
            // One burst, one batch: its updates are traced as one (R34).
            state.cache.batch(|cache| {
                let mut applied = 0;
                let mut notify = false;
                for message in messages {
                    let mut panicked = None;
                    let result = cache.update_cached_deferring_notify(now, place, |outer| {
                        panicked = run_typed_recipe(outer, |draft| apply(draft, message));
                    });
                    notify |= matches!(result, Ok(Notify::Caller));
                    if let Err(error) = recipe_outcome(result, panicked) {
                        return ((applied, Err(error)), notify);
                    }
                    applied += 1;
                }
                ((applied, Ok(())), notify)
            })
        })
    }

    /// Deliver versioned `messages` in order under one acquisition of the cache's lock (R24–R26,
    /// R34): the core applies each, drops it as stale, or holds it past a gap. Stops at the first
    /// refusal or panic of `apply`; returns how many were delivered.
    pub(crate) fn deliver_versioned<T: Data, Msg: Clone + Send + Sync + 'static>(
        &self,
        messages: impl IntoIterator<Item = Msg>,
        version: &impl Fn(&Msg) -> Version,
        apply: &ApplyVersioned<T, Msg>,
    ) -> (u64, Result<(), UpdateError>) {
        let (place, handler) = (self.place, self.place.handler());
        // Where the recipe of the message being delivered reports a panic; a message re-applied
        // later (a rebase) reports to it too, and nobody reads it then: the panic stays contained.
        let panicked: Arc<Mutex<Option<String>>> = Arc::default();
        self.shared.with_lifetime(&self.hint(), |state, now| {
            // One burst, one batch: consecutive updates are traced as one (R34).
            state.cache.batch(|cache| {
                let mut delivered = 0;
                let mut notify = false;
                for message in messages {
                    // The user's `version` runs here, under the lock but outside the core: a
                    // panic is caught before it can unwind through either, and ends the
                    // delivery like a panicking recipe.
                    let at = match catch_unwind(AssertUnwindSafe(|| version(&message))) {
                        Ok(at) => at,
                        Err(payload) => {
                            let message = version_panicked(&*payload);
                            let error = UpdateError::RecipePanicked { message };
                            return ((delivered, Err(error)), notify);
                        }
                    };
                    // The common case: the next message of an entry in order, applied at once (the
                    // message moves into the data, nothing is kept or cloned) and its subscribers
                    // woken once for the whole burst, through the lifetime's signal.
                    let mut fast_panic = None;
                    let mut unsent = Some(message);
                    let fast = cache
                        .stream_message_in_order(now, place, at, |outer| {
                            if let Some(message) = unsent.take() {
                                fast_panic = run_typed_recipe(outer, |draft| apply(draft, message));
                            }
                        })
                        .ok();
                    if let Some(n) = fast {
                        notify |= n == Notify::Caller;
                        if let Some(message) = fast_panic {
                            let error = UpdateError::RecipePanicked { message };
                            return ((delivered, Err(error)), notify);
                        }
                        delivered += 1;
                        continue;
                    }
                    let Some(message) = unsent else {
                        continue;
                    };
                    // Any other case goes by the version rules, with a recipe the core may keep
                    // (and run again): each run applies a clone of the message.
                    let (apply, report) = (Arc::clone(apply), Arc::clone(&panicked));
                    let recipe = move |outer: &mut Draft<'_, ErasedData>| {
                        let message = message.clone();
                        if let Some(message) =
                            run_typed_recipe(outer, |draft| apply(draft, message))
                            && let Ok(mut slot) = report.lock()
                        {
                            slot.get_or_insert(message);
                        }
                    };
                    let result = cache.stream_message(now, handler, at, recipe);
                    let panic = panicked.lock().ok().and_then(|mut slot| slot.take());
                    if let Err(error) = recipe_outcome(result, panic) {
                        return ((delivered, Err(error)), notify);
                    }
                    delivered += 1;
                }
                ((delivered, Ok(())), notify)
            })
        })
    }
}

/// Why delivering ends an attachment.
pub(crate) enum Refusal {
    /// The entry is gone for the attachment (removed, or its lifecycle restarted: the
    /// attachment's owner knows which).
    Gone,
    /// It ends with this reason.
    Ends(StreamEndReason),
}

impl From<UpdateError> for Refusal {
    fn from(error: UpdateError) -> Self {
        match error {
            UpdateError::RecipePanicked { message } => {
                Refusal::Ends(StreamEndReason::ApplyPanicked(message))
            }
            UpdateError::EntryRemoved => Refusal::Gone,
            // Any other refusal (a versioned stream on an unversioned endpoint, the data's own
            // code panicking) fails the stream, loudly: the entry lives on and says so (R28).
            other => Refusal::Ends(StreamEndReason::StreamFailed(other.to_string())),
        }
    }
}

/// Deliver `burst` to `to` with `apply`, counting what was delivered on `attachment`.
pub(crate) fn deliver_counted<T, Msg>(
    to: &Destination<'_>,
    apply: &mut impl Applier<T, Msg>,
    attachment: &mut Attachment<Msg>,
    burst: impl IntoIterator<Item = Msg>,
) -> Result<(), Refusal> {
    let (applied, result) = apply.deliver(to, burst);
    attachment.applied(applied);
    result.map_err(Refusal::from)
}

/// The entry's first data landed (R21, R25, R33): the attachment reports itself attached with
/// what it held, delivers that, then reports a loss if its bounded buffer dropped some (the
/// entry resyncs). `Ok(Some(reason))`: it ends now (the stream finished while held).
pub(crate) fn land_first_data<T, Msg>(
    to: &Destination<'_>,
    apply: &mut impl Applier<T, Msg>,
    attachment: &mut Attachment<Msg>,
) -> Result<Option<StreamEndReason>, Refusal> {
    // A versioned applier orders what was held by the user's `version`: a panic there ends the
    // attachment (what it held is dropped), never the task delivering it.
    let first =
        catch_unwind(AssertUnwindSafe(|| apply.first_data(attachment))).map_err(|payload| {
            Refusal::Ends(StreamEndReason::ApplyPanicked(version_panicked(&*payload)))
        })?;
    let handler = to.place.handler();
    let count = first.held.len();
    to.shared
        .with(|state, now| state.cache.stream_attached(now, handler, count))
        .map_err(|_| Refusal::Gone)?;
    if !first.held.is_empty() {
        deliver_counted(to, apply, attachment, first.held)?;
    }
    if first.lost {
        // Only a versioned stream drops what it held.
        to.shared
            .with(|state, now| state.cache.stream_lost(now, handler))
            .map_err(|_| Refusal::Gone)?;
    }
    Ok(first.then_end)
}

/// What a panic of the user's `version` function is reported as.
fn version_panicked(payload: &(dyn std::any::Any + Send)) -> String {
    format!("the version function panicked: {}", panic_message(payload))
}

/// How an attachment's messages reach the cache: as plain updates in arrival order (R21), or by
/// the version rules (R24–R26).
pub(crate) trait Applier<T, Msg> {
    /// What a message past the buffer's bound does before the first data (R33).
    fn overflow(&self) -> Overflow;

    /// The first data landed: what the attachment held, in the order to deliver it.
    fn first_data(&self, attachment: &mut Attachment<Msg>) -> FirstData<Msg>;

    /// Deliver `burst`, in order, under one lock acquisition: how many were delivered, and the
    /// first refusal or panic (the rest are dropped).
    fn deliver(
        &mut self,
        to: &Destination<'_>,
        burst: impl IntoIterator<Item = Msg>,
    ) -> (u64, Result<(), UpdateError>);
}

/// Messages applied as updates, in arrival order.
pub(crate) struct Plain<F>(pub(crate) F);

impl<T: Data, Msg, F: FnMut(&mut Draft<'_, T>, Msg)> Applier<T, Msg> for Plain<F> {
    fn overflow(&self) -> Overflow {
        Overflow::Fail
    }

    fn first_data(&self, attachment: &mut Attachment<Msg>) -> FirstData<Msg> {
        attachment.data_loaded()
    }

    fn deliver(
        &mut self,
        to: &Destination<'_>,
        burst: impl IntoIterator<Item = Msg>,
    ) -> (u64, Result<(), UpdateError>) {
        to.update_each(burst, &mut self.0)
    }
}

/// Versioned messages, delivered to the core's version rules.
pub(crate) struct Versioned<T, Msg, V> {
    version: V,
    apply: ApplyVersioned<T, Msg>,
}

impl<T, Msg, V> Versioned<T, Msg, V> {
    pub(crate) fn new(
        version: V,
        apply: impl Fn(&mut Draft<'_, T>, Msg) + Send + Sync + 'static,
    ) -> Self {
        Versioned::shared(version, Arc::new(apply))
    }

    /// With the change `apply` makes shared with other attachments (every entry of an endpoint
    /// fed by one source).
    pub(crate) fn shared(version: V, apply: ApplyVersioned<T, Msg>) -> Self {
        Versioned { version, apply }
    }
}

impl<T: Data, Msg: Clone + Send + Sync + 'static, V: Fn(&Msg) -> Version> Applier<T, Msg>
    for Versioned<T, Msg, V>
{
    fn overflow(&self) -> Overflow {
        Overflow::Resync
    }

    fn first_data(&self, attachment: &mut Attachment<Msg>) -> FirstData<Msg> {
        attachment.data_loaded_in_order(|message| Some((self.version)(message)))
    }

    fn deliver(
        &mut self,
        to: &Destination<'_>,
        burst: impl IntoIterator<Item = Msg>,
    ) -> (u64, Result<(), UpdateError>) {
        to.deliver_versioned(burst, &self.version, &self.apply)
    }
}

/// How a versioned message changes the data: given the message, by value. A message the core
/// keeps (held past a gap, or logged for a rebase, R26, R27) is cloned for each application.
pub(crate) type ApplyVersioned<T, Msg> = Arc<dyn Fn(&mut Draft<'_, T>, Msg) + Send + Sync>;
