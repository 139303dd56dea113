//! Updates of an entry's data: through a lifecycle handle, `update_query_data`, `patch_query_data` (R15, R18, R19).

use std::fmt;

use super::*;
use crate::core::data::{CacheData, contain};
use crate::core::entry::any::AnyEntry;
use crate::core::entry::{Draft, Updated};
use crate::core::key::CacheKey;
use crate::core::patch::{Patch, PatchSet};
use crate::core::patch_log::{Failure, PatchLog, UndoStep};
use crate::core::trace::{Recording, TraceKind, UpdateSource};

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// `update_cached_data` through the lifecycle handle of `lifetime` (R15). The recipe gets a
    /// [`Draft`]; if it takes mutable access the update is applied and subscribers notified once.
    /// Patches are computed only when `want_patches` or the trace records them, so by default an
    /// update costs what the recipe costs.
    ///
    /// ```
    /// # use livecache::core::Patches;
    /// use livecache::core::{Cache, EndpointConfig, Phase, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![1])?;
    /// let lifetime = cache.entry(&key).unwrap().lifetime;
    /// let patches = cache.update_cached(1, lifetime, Patches::Wanted, |d| d.push(2)).unwrap().unwrap();
    /// assert_eq!(patches.patches.0.len(), 1);
    /// assert_eq!(cache.entry(&key).unwrap().phase, Phase::Streaming);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_cached(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
        patches: Patches,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateRefused> {
        let (handler, want_patches) = (handler.into(), patches == Patches::Wanted);
        self.advance(now);
        // Looked up after `advance`, which may have removed it.
        let place = self
            .entries
            .place_of(handler)
            .ok_or(UpdateRefused::NotLive)?;
        self.update_placed(place, want_patches, recipe)
    }

    /// Where `lifetime`'s entry sits, if it is live, for [`Cache::update_cached_at`]: a driver
    /// that updates one lifetime often (a lifecycle handle streaming messages) looks its place up
    /// once and updates it with no lookup at all.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, EndpointConfig, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// cache.upsert(0, ep, &CacheKey::verbatim("a(1)"), vec![])?;
    /// let place = cache.lifetime_place(LifetimeId(1)).expect("lifetime 1 is live");
    /// assert_eq!(place.lifetime(), LifetimeId(1));
    /// assert!(cache.lifetime_place(LifetimeId(2)).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lifetime_place(&self, handler: impl Into<HandlerId>) -> Option<LifetimePlace> {
        self.entries.place_of(handler.into())
    }

    /// [`Cache::update_cached`] of the lifetime at `place`, found without a lookup. A place whose
    /// lifetime has ended (its entry removed, the place perhaps reused by another lifetime) finds
    /// nothing: [`UpdateRefused::NotLive`].
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, Patches};
    /// use livecache::core::{Cache, EndpointConfig, UpdateRefused, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![])?;
    /// let place = cache.lifetime_place(LifetimeId(1)).expect("live");
    /// cache.update_cached_at(1, place, Patches::NotWanted, |d| d.push(7))?;
    /// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![7]));
    /// cache.remove(2, &key);
    /// assert_eq!(cache.update_cached_at(3, place, Patches::NotWanted, |d| d.push(8)), Err(UpdateRefused::NotLive));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_cached_at(
        &mut self,
        now: u64,
        place: LifetimePlace,
        patches: Patches,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateRefused> {
        let want_patches = patches == Patches::Wanted;
        self.advance(now);
        self.update_placed(place, want_patches, recipe)
    }

    /// [`Cache::update_cached_at`] without patches, for a driver that wakes the lifetime's
    /// subscribers itself (the runtime wakes them through a signal it keeps per lifetime, without
    /// a queued effect and its key clone per update): when the update takes the streaming path,
    /// the notification the core decides on is handed to the caller ([`Notify::Caller`]) instead
    /// of queued as [`Effect::Notify`]; on any other path it is queued as usual
    /// ([`Notify::Queued`]).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, EndpointConfig, Notify, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// cache.upsert(0, ep, &CacheKey::verbatim("a(1)"), vec![])?;
    /// let place = cache.lifetime_place(LifetimeId(1)).expect("live");
    /// // The first update moves Loaded to Streaming: not the hot path, so the core queues it.
    /// assert_eq!(cache.update_cached_deferring_notify(1, place, |d| d.push(1))?, Notify::Queued);
    /// while cache.poll_effect().is_some() {}
    /// // Streaming: the caller is told to wake the subscribers; nothing is queued.
    /// assert_eq!(cache.update_cached_deferring_notify(2, place, |d| d.push(2))?, Notify::Caller);
    /// assert!(!cache.has_effects());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_cached_deferring_notify(
        &mut self,
        now: u64,
        place: LifetimePlace,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Notify, UpdateRefused> {
        self.advance(now);
        let recipe = match self.update_streaming(place, false, recipe, false) {
            Ok(true) => return Ok(Notify::Caller),
            Ok(false) => return Ok(Notify::Queued),
            Err(recipe) => recipe,
        };
        self.update_applied(place, false, recipe)
            .map(|_| Notify::Queued)
    }

    /// An update of the lifetime at `place`, time already advanced.
    pub(super) fn update_placed(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateRefused> {
        let recipe = match self.update_streaming(place, want_patches, recipe, true) {
            Ok(_) => return Ok(None),
            Err(recipe) => recipe,
        };
        let set = self.update_applied(place, want_patches, recipe)?;
        Ok(want_patches.then(|| set.unwrap_or_default()))
    }

    /// The streaming hot path: a Streaming entry updated in place, without patches (neither
    /// wanted nor recorded); the same steps, in the same order, as `apply_update` takes for it.
    /// Returns whether subscribers are to be notified (queued as an effect if `queue`, else
    /// left to the caller), or gives the recipe back for [`Cache::update_applied`] when this
    /// path does not apply.
    pub(super) fn update_streaming<F: FnOnce(&mut Draft<'_, D>)>(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: F,
        queue: bool,
    ) -> Result<bool, F> {
        if want_patches || self.config.recording == Recording::EventsWithPatches {
            return Err(recipe);
        }
        let Some((key, slot)) = self.entries.at_place_mut(place) else {
            return Err(recipe);
        };
        let AnyEntry::Streaming(entry) = &mut slot.entry else {
            return Err(recipe);
        };
        if !entry.update(recipe) {
            return Ok(false);
        }
        slot.version += 1;
        let notify = slot.mark_notified();
        if self.config.recording != Recording::Off
            && !(self.batch_folds
                && self
                    .trace
                    .fold_update(self.now, key, UpdateSource::Lifecycle))
        {
            self.trace.record_update_for(
                self.now,
                key,
                &mut slot.trace_key,
                UpdateSource::Lifecycle,
            );
        }
        self.batch_folds = self.batching;
        if notify && queue {
            // The effects, not `self`: `key` borrows the entries.
            effect::queue_notify(&mut self.effects, key);
        }
        Ok(notify && !queue)
    }

    /// Any other update of the lifetime at `place`, through the typestate transitions.
    pub(super) fn update_applied(
        &mut self,
        place: LifetimePlace,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateRefused> {
        let Some(key) = self.entries.at_place(place).map(|(key, _)| key.clone()) else {
            return Err(UpdateRefused::NotLive);
        };
        self.apply_update(&key, UpdateSource::Lifecycle, want_patches, recipe)
    }

    /// `update_query_data` (R18): on an absent entry or one without data the recipe is not
    /// called and the patch set is empty; otherwise as [`Cache::update_cached`], and the patch
    /// set (for undo) is always computed.
    ///
    /// The update is atomic: if the recipe panics, the data is put back as it was (from the copy
    /// the patches are computed from), nothing is recorded or notified, and the panic goes on to
    /// the caller with the entry in place. So does [`Cache::update_cached`] when it computes
    /// patches; without them it keeps no copy, and a recipe's partial change stays.
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![1, 2])?;
    /// let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    ///     cache.update_query_data(1, &key, |list| {
    ///         list.clear();
    ///         panic!("half done");
    ///     })
    /// }));
    /// assert!(panicked.is_err());
    /// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![1, 2]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let set = cache.update_query_data(0, &CacheKey::verbatim("a(1)"), |_| unreachable!()).unwrap();
    /// assert!(set.is_empty());
    /// ```
    pub fn update_query_data(
        &mut self,
        now: u64,
        key: &CacheKey,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<PatchSet, UpdateRefused> {
        self.update_query_data_undoable(now, key, recipe)
            .map(super::Undo::into_patches)
    }

    /// `patch_query_data` (R19): apply RFC 6902 patches atomically. A patch that does not apply,
    /// or whose result is not a value of `D`, is an error and leaves the data unchanged.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, PatchError, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, vec![1])?;
    /// let bad: json_patch::Patch = serde_json::from_str(r#"[{"op":"remove","path":"/5"}]"#).unwrap();
    /// assert!(matches!(cache.patch_query_data(1, &key, &bad), Err(PatchError::Apply(_))));
    /// let good: json_patch::Patch = serde_json::from_str(r#"[{"op":"add","path":"/-","value":2}]"#).unwrap();
    /// cache.patch_query_data(1, &key, &good).unwrap();
    /// assert_eq!(cache.entry(&key).unwrap().data, Some(&vec![1, 2]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn patch_query_data(
        &mut self,
        now: u64,
        key: &CacheKey,
        patch: &Patch,
    ) -> Result<(), PatchError> {
        self.advance(now);
        let Some(slot) = self.entries.get(key) else {
            return Err(PatchError::NoEntry);
        };
        let Some(old) = slot.entry.data() else {
            return Err(PatchError::NoData);
        };
        let record_patches = self.config.recording == Recording::EventsWithPatches;
        // The data type's `Serialize`, `Deserialize` and `PartialEq` are user code: a panic of
        // one is contained, and the data is left unchanged.
        let panicked = |message| PatchError::DataPanicked { message };
        let patched = (|| {
            let before = contain("Serialize", || old.to_json())
                .map_err(panicked)?
                .map_err(|e| PatchError::Schema(e.to_string()))?;
            // Patch a scratch copy: a failed patch leaves the data untouched without
            // json-patch's own rollback, which panics on some inputs (json-patch 5.0, found by
            // the fuzzer).
            let mut after = before.clone();
            json_patch::patch_unsafe(&mut after, &patch.0)
                .map_err(|e| PatchError::Apply(e.to_string()))?;
            let new: D = contain("Deserialize", || old.same_type_from_json(after))
                .map_err(panicked)?
                .map_err(|e| PatchError::Schema(e.to_string()))?;
            if contain("PartialEq", || &new == old).map_err(panicked)? {
                return Ok(None);
            }
            // The change as the data's own JSON sees it: the type may normalise the patched
            // JSON (a removed optional field is `null` again), so the patch as given may not
            // describe it.
            let patches = if record_patches {
                contain("Serialize", || new.to_json())
                    .map_err(panicked)?
                    .ok()
                    .map(|after| PatchSet::between(&before, &after))
            } else {
                None
            };
            Ok(Some((new, patches)))
        })();
        let (new, patches) = match patched {
            Ok(Some(patched)) => patched,
            Ok(None) => return Ok(()),
            Err(PatchError::DataPanicked { message }) => {
                self.data_panicked(key, &message);
                return Err(PatchError::DataPanicked { message });
            }
            Err(error) => return Err(error),
        };
        self.overwrite_data(key, new);
        self.record(
            self.now,
            key,
            TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches,
                count: 1,
            },
        );
        self.notify(key);
        Ok(())
    }

    /// Run a recipe on the entry's data. `Ok(None)` when no patches were computed.
    pub(super) fn apply_update(
        &mut self,
        key: &CacheKey,
        source: UpdateSource,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<PatchSet>, UpdateRefused> {
        self.apply_update_recorded(key, source, want_patches, recipe)
            .map(|recorded| recorded.map(|(set, _)| set))
    }

    /// [`Cache::apply_update`], with the typed undo steps of the recorded change.
    pub(super) fn apply_update_recorded(
        &mut self,
        key: &CacheKey,
        source: UpdateSource,
        want_patches: bool,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Option<(PatchSet, Vec<UndoStep>)>, UpdateRefused> {
        let Some(slot) = self.entries.get(key) else {
            return Err(UpdateRefused::NotLive);
        };
        if slot.entry.data().is_none() {
            return Err(UpdateRefused::NotLoaded);
        }
        let record_patches = self.config.recording == Recording::EventsWithPatches;
        let need_patches = want_patches || record_patches;
        let mut patch_result: Result<Option<(PatchSet, Vec<UndoStep>)>, UpdateRefused> = Ok(None);
        let mut touched = false;
        // A recipe's panic on a path that keeps a copy of the data (for patches): the data is
        // put back, and the panic goes on once the entry is back in its place.
        let mut recipe_panic = None;
        let wrapped = |draft: &mut Draft<'_, D>| {
            if !need_patches {
                recipe(draft);
                touched = draft.touched();
                return;
            }
            // The recipe's draft records the patches as it changes the data, at the cost of the
            // change (a level it takes plain mutable access to is diffed as a whole).
            let mut log = PatchLog::default();
            let recorded_touch = {
                let mut recording = draft.recording(&mut log);
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    recipe(&mut recording)
                })) {
                    recording.abandon();
                    recipe_panic = Some(panic);
                }
                recording.touched()
            };
            let Some(failure) = log.failure().cloned() else {
                touched = recorded_touch;
                if touched {
                    draft.mark_touched();
                }
                patch_result = Ok(Some(log.into_parts()));
                return;
            };
            // The update is atomic (R15, R18): its recorded changes are undone.
            if recorded_touch && !log.is_empty() {
                if let Ok(old) = log.undo(&**draft) {
                    draft.restore(old);
                } else {
                    // The data's JSON does not give it back: the change stays, and is reported
                    // as an update (without patches) besides the failure.
                    touched = true;
                    draft.mark_touched();
                }
            }
            patch_result = match failure {
                Failure::Serialize(e) => Err(UpdateRefused::Serialize(e)),
                Failure::DataPanicked(message) => Err(UpdateRefused::DataPanicked { message }),
                // The recipe panicked: the panic goes on (caught here), or the layer that
                // caught it reports it.
                Failure::Abandoned => Ok(None),
            };
        };
        self.update_in_place(key, wrapped);
        if recipe_panic.is_none()
            && let Err(UpdateRefused::DataPanicked { message }) = &patch_result
        {
            self.data_panicked(key, message);
        }
        if touched {
            let traced = if record_patches {
                patch_result
                    .as_ref()
                    .ok()
                    .and_then(|recorded| recorded.as_ref().map(|(set, _)| set.clone()))
            } else {
                None
            };
            let fold = traced.is_none() && self.batch_folds;
            let folded = fold
                && self.config.recording != Recording::Off
                && self.trace.fold_update(self.now, key, source);
            if !folded {
                let patched = traced.is_some();
                self.record(
                    self.now,
                    key,
                    TraceKind::Updated {
                        source,
                        patches: traced,
                        count: 1,
                    },
                );
                self.batch_folds = self.batching && !patched;
            }
            self.notify(key);
        }
        if let Some(panic) = recipe_panic {
            std::panic::resume_unwind(panic);
        }
        patch_result
    }

    /// Run `recipe` on a Loaded or Streaming entry, moving Loaded to Streaming if it touched.
    /// A Streaming entry is updated in place (the streaming hot path: one map lookup).
    pub(super) fn update_in_place(
        &mut self,
        key: &CacheKey,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) {
        if let Some(slot) = self.entries.get_mut(key)
            && let AnyEntry::Streaming(entry) = &mut slot.entry
        {
            if entry.update(recipe) {
                slot.version += 1;
            }
            return;
        }
        self.entries.transition(key, |mut slot| {
            slot.entry = match slot.entry {
                AnyEntry::Loaded(e) => match e.update(recipe) {
                    Updated::Unchanged(e) => AnyEntry::Loaded(e),
                    Updated::Changed(e) => {
                        slot.version += 1;
                        AnyEntry::Streaming(e)
                    }
                },
                other => other,
            };
            (slot, ())
        });
    }

    /// Replace the data of a Loaded or Streaming entry as an update; it is then Streaming.
    pub(super) fn overwrite_data(&mut self, key: &CacheKey, data: D) {
        self.entries.transition(key, |mut slot| {
            slot.entry = match slot.entry {
                AnyEntry::Loaded(e) => AnyEntry::Streaming(e.overwrite(data)),
                AnyEntry::Streaming(mut e) => {
                    e.overwrite(data);
                    AnyEntry::Streaming(e)
                }
                loading @ AnyEntry::Loading(_) => loading,
            };
            slot.version += 1;
            (slot, ())
        });
    }
}
