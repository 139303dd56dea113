//! Undoing an update at the cost of its change (R18): the typed steps a recording draft kept,
//! applied while the entry is as the update left it; otherwise its inverse patches.

use std::any::Any;
use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::entry::Draft;
use crate::core::key::CacheKey;
use crate::core::patch::PatchSet;
use crate::core::patch_log::UndoStep;
use crate::core::trace::{Recording, TraceKind, UpdateSource};

/// What undoes one `update_query_data` (R18): its patches, and the same change undone on the
/// typed data, which [`Cache::undo`] applies in time proportional to the change while the entry
/// is as the update left it.
///
/// ```
/// use livecache::core::{Cache, CacheKey, EndpointConfig};
/// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
/// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
/// let key = CacheKey::verbatim("a(1)");
/// cache.upsert(0, ep, &key, vec![1])?;
/// let undo = cache.update_query_data_undoable(1, &key, |list| list.push(2))?;
/// assert_eq!(undo.patches().patches.0.len(), 1);
/// cache.undo(2, &key, undo)?;
/// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![1]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Undo {
    patches: PatchSet,
    steps: Vec<UndoStep>,
    /// The entry as the update left it: its lifetime and version.
    after: Option<(u64, u64)>,
}

impl Undo {
    /// The update's patches and their inverse.
    ///
    /// ```
    /// # use livecache::core::{Cache, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let undo = cache.update_query_data_undoable(0, &CacheKey::verbatim("none"), |l| l.push(1))?;
    /// assert!(undo.patches().is_empty());
    /// # Ok::<(), livecache::core::UpdateRefused>(())
    /// ```
    pub fn patches(&self) -> &PatchSet {
        &self.patches
    }

    /// The patches, without the typed undo.
    ///
    /// ```
    /// # use livecache::core::{Cache, CacheKey};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let undo = cache.update_query_data_undoable(0, &CacheKey::verbatim("none"), |l| l.push(1))?;
    /// assert!(undo.into_patches().is_empty());
    /// # Ok::<(), livecache::core::UpdateRefused>(())
    /// ```
    pub fn into_patches(self) -> PatchSet {
        self.patches
    }

    /// The patches taken out, and the undo without them: for a caller that keeps the patches
    /// itself and gives them back to [`Cache::undo_with`] (no copy of them is made).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("list", EndpointConfig::default()).unwrap();
    /// let key = CacheKey::verbatim("list(1)");
    /// cache.upsert(0, ep, &key, vec![1]).unwrap();
    /// let (patches, undo) = cache.update_query_data_undoable(1, &key, |l| l.push(2)).unwrap().split();
    /// assert_eq!(patches.patches.0.len(), 1);
    /// assert!(undo.patches().is_empty());
    /// cache.undo_with(2, &key, undo, &patches).unwrap();
    /// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![1]));
    /// ```
    pub fn split(mut self) -> (PatchSet, Undo) {
        let patches = std::mem::take(&mut self.patches);
        (patches, self)
    }
}

impl fmt::Debug for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Undo")
            .field("patches", &self.patches)
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// [`Cache::update_query_data`], keeping what undoes it at the cost of the change: see
    /// [`Undo`] and [`Cache::undo`].
    pub fn update_query_data_undoable(
        &mut self,
        now: u64,
        key: &CacheKey,
        recipe: impl FnOnce(&mut Draft<'_, D>),
    ) -> Result<Undo, UpdateRefused> {
        self.advance(now);
        let recorded =
            match self.apply_update_recorded(key, UpdateSource::UpdateQueryData, true, recipe) {
                Ok(recorded) => recorded,
                Err(UpdateRefused::NotLive | UpdateRefused::NotLoaded) => None,
                Err(e) => return Err(e),
            };
        let (patches, steps) = recorded.unwrap_or_default();
        let after = self
            .entries
            .get(key)
            .map(|slot| (slot.entry.lifetime(), slot.version));
        Ok(Undo {
            patches,
            steps,
            after,
        })
    }

    /// Undo an update (R18). While the entry is as the update left it (same lifetime, nothing
    /// changed since), its typed steps put the data back in time proportional to the change;
    /// otherwise its inverse patches are applied to the data as it is now
    /// ([`Cache::patch_query_data`]; like RTK, no conflict detection). Traced and notified as
    /// `patch_query_data`.
    pub fn undo(&mut self, now: u64, key: &CacheKey, undo: Undo) -> Result<(), PatchError> {
        let (patches, undo) = undo.split();
        self.undo_with(now, key, undo, &patches)
    }

    /// [`Cache::undo`] of an undo whose patches were taken out ([`Undo::split`]): `patches` are
    /// those, given back.
    pub fn undo_with(
        &mut self,
        now: u64,
        key: &CacheKey,
        undo: Undo,
        patches: &PatchSet,
    ) -> Result<(), PatchError> {
        self.advance(now);
        let Undo { steps, after, .. } = undo;
        if steps.is_empty() && patches.is_empty() {
            return Ok(());
        }
        let now_at = self
            .entries
            .get(key)
            .map(|slot| (slot.entry.lifetime(), slot.version));
        if steps.is_empty() || now_at.is_none() || now_at != after {
            return self.patch_query_data(now, key, &patches.inverse_patches);
        }
        let mut undone = true;
        self.update_in_place(key, |draft| {
            let data: &mut D = draft.as_mut_untracked();
            for step in steps.into_iter().rev() {
                undone &= step(data as &mut dyn Any);
            }
            draft.mark_touched();
        });
        let traced = (self.config.recording == Recording::EventsWithPatches).then(|| PatchSet {
            patches: patches.inverse_patches.clone(),
            inverse_patches: patches.patches.clone(),
        });
        self.record(
            self.now,
            key,
            TraceKind::Updated {
                source: UpdateSource::PatchQueryData,
                patches: traced,
                count: 1,
            },
        );
        self.notify(key);
        if undone {
            Ok(())
        } else {
            Err(PatchError::Apply(
                "a changed part of the data was no longer there to undo".into(),
            ))
        }
    }
}
