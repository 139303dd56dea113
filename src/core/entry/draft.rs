//! The draft an update recipe gets: a mutable view of the data that knows whether it was touched
//! and, when patches are wanted, records them at the cost of the change.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use json_patch::PatchOperation;
use json_patch::jsonptr::PointerBuf;

use super::draft_path::{DraftPath, PathToken};
use serde_json::Value;

use super::draft_ops::replaced;
use crate::core::data::{CacheData, contain};
use crate::core::patch_log::{Failure, PatchLog, Steps, UndoStep, undo_at};

/// A mutable view of an entry's data handed to an update recipe.
///
/// It records whether the recipe took mutable access: a recipe that only reads changes nothing,
/// notifies no one and yields empty patches (SPEC R15), at O(1) cost — no copy of the data is
/// made to find out.
///
/// A draft over shared data ([`Draft::shared`], an `Arc<D>` that readers may hold snapshots of)
/// is copy-on-write: reading never copies; the first mutable access copies the data only if a
/// snapshot is still held elsewhere (`Arc::make_mut`).
///
/// ## Patches at the cost of the change
///
/// When the update's patches are wanted (`update_query_data`, `update_cached_data_with_patches`,
/// a trace recording patches), the draft's own operations record them as they change the data,
/// each in time proportional to what it touches: [`Draft::set`], and on a `Vec` `push`, `pop`,
/// `insert`, `remove`, `truncate`, `clear`, `extend` and [`Draft::item_mut`], on a `HashMap` or
/// `BTreeMap` `insert`, `remove` and [`Draft::value_mut`], on a struct [`Draft::field`] (or the
/// [`field!`](crate::field) macro), nested to any depth. They have the names and results of the
/// standard collections' methods, so a recipe written against `Vec` reads the same.
///
/// Anything else (`retain`, `sort`, `iter_mut`, `d.count += 1`, …) takes plain mutable access
/// to the level it is called on: that level's value is then serialised and diffed as a whole
/// when the draft ends (the fallback every type has), so the cost is the size of that level,
/// not of the entry. Without patches wanted, the operations cost what the collection's own do.
///
/// A draft is dropped before the data it views is read again (it ends its level when dropped):
///
/// ```
/// use livecache::core::Draft;
/// let mut data = vec![1, 2];
/// let mut draft = Draft::new(&mut data);
/// assert_eq!(draft.len(), 2);      // reading does not count
/// assert!(!draft.touched());
/// draft.push(3);                   // mutable access does
/// assert!(draft.touched());
/// drop(draft);
/// assert_eq!(data, [1, 2, 3]);
/// ```
#[derive(Debug)]
pub struct Draft<'a, D> {
    target: Target<'a, D>,
    touched: bool,
    recorder: Option<Recorder<'a>>,
    /// Set when the recipe took plain mutable access at this level while recording: the value
    /// as it was then, to diff against (and to put back if the update is undone).
    whole: Option<Box<Whole<D>>>,
}

#[derive(Debug)]
enum Target<'a, D> {
    Owned(&'a mut D),
    Shared(&'a mut Arc<D>),
}

/// Where a recording draft writes its patches, and the place of the value it views.
pub(crate) struct Recorder<'a> {
    log: &'a mut PatchLog,
    path: DraftPath<'a>,
    /// How the typed undo reaches the value from the entry's root.
    steps: Steps,
}

impl Recorder<'_> {
    /// The recorder of a part of the viewed value that `step` reaches (the runtime's typed
    /// data inside its erased wrapper).
    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn then(
        mut self,
        step: impl Fn(&mut dyn Any) -> Option<&mut dyn Any> + Send + Sync + 'static,
    ) -> Self {
        self.steps = crate::core::patch_log::then(self.steps.take(), step);
        self
    }
}

/// A level's value before plain mutable access: its JSON to diff against (`None` if it could not
/// be serialised: the update then fails) and a copy to put back.
#[derive(Debug)]
struct Whole<D> {
    before: Option<Value>,
    backup: D,
    /// `D`'s JSON form, kept here so that the draft's `Drop`, which cannot name the bound, can
    /// end the level.
    to_json: fn(&D) -> Result<Value, serde_json::Error>,
    /// The typed undo of the level: the copy put back.
    restore: fn(D, Steps) -> UndoStep,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = self.path.pointer();
        f.debug_struct("Recorder")
            .field("path", &pointer)
            .field("depth", &pointer.len())
            .finish()
    }
}

impl<'a, D> Draft<'a, D> {
    /// A draft of `data`, not yet touched.
    ///
    /// ```
    /// let mut n = 1;
    /// assert!(!livecache::core::Draft::new(&mut n).touched());
    /// ```
    pub fn new(data: &'a mut D) -> Self {
        Draft::new_recording(data, None)
    }

    /// A copy-on-write draft of shared data.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use livecache::core::Draft;
    /// let mut data = Arc::new(vec![1]);
    /// let snapshot = Arc::clone(&data);
    /// let mut draft = Draft::shared(&mut data);
    /// assert_eq!(draft[0], 1);          // no copy to read
    /// draft.push(2);                    // copied once: a snapshot is held
    /// drop(draft);
    /// assert_eq!((&*snapshot, &*data), (&vec![1], &vec![1, 2]));
    /// ```
    pub fn shared(data: &'a mut Arc<D>) -> Self {
        Draft::shared_recording(data, None)
    }

    /// A draft of `data` recording into `recorder` (the draft a layer above hands its own
    /// recorder on to, see [`Draft::split_untracked`]).
    pub(crate) fn new_recording(data: &'a mut D, recorder: Option<Recorder<'a>>) -> Self {
        Draft {
            target: Target::Owned(data),
            touched: false,
            recorder,
            whole: None,
        }
    }

    /// [`Draft::shared`], recording into `recorder`.
    pub(crate) fn shared_recording(data: &'a mut Arc<D>, recorder: Option<Recorder<'a>>) -> Self {
        Draft {
            target: Target::Shared(data),
            touched: false,
            recorder,
            whole: None,
        }
    }

    /// A draft of the same data recording its patches into `log` (for the core's paths that
    /// want patches). Its touching is its own: the caller marks this draft if it keeps the
    /// change.
    pub(crate) fn recording<'b>(&'b mut self, log: &'b mut PatchLog) -> Draft<'b, D> {
        let recorder = Some(Recorder {
            log,
            path: DraftPath::root(),
            steps: None,
        });
        let target = match &mut self.target {
            Target::Owned(d) => Target::Owned(&mut **d),
            Target::Shared(a) => Target::Shared(&mut **a),
        };
        Draft {
            target,
            touched: false,
            recorder,
            whole: None,
        }
    }

    /// Whether mutable access was taken.
    ///
    /// ```
    /// let mut n = 1;
    /// let mut d = livecache::core::Draft::new(&mut n);
    /// *d += 1;
    /// assert!(d.touched());
    /// ```
    pub fn touched(&self) -> bool {
        self.touched
    }

    /// Record that the data was changed through [`Draft::as_mut_untracked`].
    ///
    /// ```
    /// let mut n = 1;
    /// let mut d = livecache::core::Draft::new(&mut n);
    /// d.mark_touched();
    /// assert!(d.touched());
    /// ```
    pub fn mark_touched(&mut self) {
        self.touched = true;
    }

    /// Whether this draft records patches precisely: it records, this level is not being
    /// diffed as a whole, and nothing has failed.
    pub(super) fn precise(&self) -> bool {
        self.whole.is_none()
            && self
                .recorder
                .as_ref()
                .is_some_and(|r| r.log.failure().is_none())
    }

    /// Whether this draft records patches at all.
    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// The update is to be undone (its recipe panicked and the panic was caught by the layer
    /// above): the recording core puts the data back as it was.
    pub(crate) fn abandon(&mut self) {
        self.fail(Failure::Abandoned);
    }

    /// The data itself, without counting as touched, and a recorder for a draft over it (a layer
    /// that wraps the data in its own draft, like the runtime's typed view of erased data).
    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn split_untracked(&mut self) -> (&mut D, Option<Recorder<'_>>)
    where
        D: Clone,
    {
        let recorder = match (&mut self.recorder, &self.whole) {
            (Some(r), None) => Some(Recorder {
                log: &mut *r.log,
                path: r.path.below(PathToken::Here),
                steps: r.steps.clone(),
            }),
            _ => None,
        };
        let data = match &mut self.target {
            Target::Owned(d) => &mut **d,
            Target::Shared(a) => Arc::make_mut(a),
        };
        (data, recorder)
    }

    /// Put `value` back as the data and count the draft as untouched: the update is undone (a
    /// recipe that panicked, patches that could not be computed).
    pub(crate) fn restore(&mut self, value: D) {
        self.put_back(value);
        self.touched = false;
    }

    /// Replace the data with `value`, touched or not as before.
    fn put_back(&mut self, value: D) {
        match &mut self.target {
            Target::Owned(d) => **d = value,
            Target::Shared(a) => **a = Arc::new(value),
        }
    }

    /// Record that this draft's recording failed: the update will be undone.
    pub(super) fn fail(&mut self, failure: Failure) {
        if let Some(recorder) = &mut self.recorder {
            recorder.log.fail(failure);
        }
    }

    /// The data, mutably, without counting or recording anything.
    pub(super) fn data_mut(&mut self) -> &mut D
    where
        D: Clone,
    {
        match &mut self.target {
            Target::Owned(d) => d,
            Target::Shared(a) => Arc::make_mut(a),
        }
    }

    /// End a level diffed as a whole: record the diff, or put the copy back when the update is
    /// being undone.
    fn end_whole(&mut self) {
        let Some(whole) = self.whole.take() else {
            return;
        };
        let Whole {
            before,
            backup,
            to_json,
            restore,
        } = *whole;
        let failed = std::thread::panicking()
            || self
                .recorder
                .as_ref()
                .is_none_or(|r| r.log.failure().is_some());
        if failed {
            self.put_back(backup);
            return;
        }
        let current: &D = self;
        let after = contain("Serialize", || to_json(current));
        let failure = match (before, after) {
            (Some(before), Ok(Ok(after))) => {
                if let Some(recorder) = &mut self.recorder
                    && before != after
                {
                    recorder
                        .log
                        .record_diff(&recorder.path.pointer(), &before, &after);
                    let steps = recorder.steps.clone();
                    recorder.log.record_undo(restore(backup, steps));
                }
                return;
            }
            (None, _) => Failure::Serialize("the data could not be serialised".into()),
            (_, Ok(Err(e))) => Failure::Serialize(e.to_string()),
            (_, Err(message)) => Failure::DataPanicked(message),
        };
        self.fail(failure);
        self.put_back(backup);
    }
}

impl<D: CacheData> Draft<'_, D> {
    /// Mutable access that does *not* count as touching: for a layer that wraps the data in its
    /// own draft and reports with [`Draft::mark_touched`] whether its recipe touched. Writing
    /// through it without marking breaks change detection; on a draft recording patches, the
    /// change is diffed as a whole like plain mutable access.
    ///
    /// ```
    /// use livecache::core::Draft;
    /// let mut outer = vec![1];
    /// let mut draft = Draft::new(&mut outer);
    /// let inner_touched = {
    ///     let mut inner = Draft::new(draft.as_mut_untracked());
    ///     inner.push(2);
    ///     inner.touched()
    /// };
    /// if inner_touched { draft.mark_touched(); }
    /// assert!(draft.touched());
    /// ```
    pub fn as_mut_untracked(&mut self) -> &mut D {
        self.begin_whole();
        self.data_mut()
    }

    /// Replace the value this draft views (the whole entry, or the element, value or field a
    /// nested draft was taken for). Recorded as one `replace` at this draft's path (nothing, for
    /// a value equal to the one held); like every mutating method, it counts as touching.
    ///
    /// ```
    /// use livecache::core::Draft;
    /// let mut n = 1;
    /// let mut draft = Draft::new(&mut n);
    /// draft.set(2);
    /// assert!(draft.touched());
    /// draft += 3;                       // the compound assignments set too
    /// drop(draft);
    /// assert_eq!(n, 5);
    /// ```
    pub fn set(&mut self, value: D) {
        self.touched = true;
        if **self == value {
            return;
        }
        if self.precise() {
            let old = contain("Serialize", || self.deref().to_json());
            let new = contain("Serialize", || value.to_json());
            match (old, new) {
                (Ok(Ok(old)), Ok(Ok(new))) => {
                    let old_value = std::mem::replace(self.data_mut(), value);
                    if let Some(recorder) = &mut self.recorder {
                        let (forward, inverse) = replaced(recorder.path.pointer(), old, new);
                        recorder.log.record(forward, inverse);
                        let undo = undo_at(recorder.steps.clone(), move |d: &mut D| {
                            *d = old_value;
                            true
                        });
                        recorder.log.record_undo(undo);
                    }
                    return;
                }
                (Err(message), _) | (_, Err(message)) => self.fail(Failure::DataPanicked(message)),
                (Ok(Err(e)), _) | (_, Ok(Err(e))) => self.fail(Failure::Serialize(e.to_string())),
            }
        }
        **self = value;
    }

    /// Record one precise change at `token` below this draft's path: `op` builds the operation
    /// and its inverse from the full path, `undo` undoes the change on this level's typed value.
    pub(super) fn record(
        &mut self,
        token: PathToken,
        op: impl FnOnce(PointerBuf) -> (PatchOperation, PatchOperation),
        undo: impl FnOnce(&mut D) -> bool + Send + Sync + 'static,
    ) {
        if let Some(recorder) = &mut self.recorder {
            let (forward, inverse) = op(recorder.path.pointer_with(&token));
            recorder.log.record(forward, inverse);
            recorder
                .log
                .record_undo(undo_at(recorder.steps.clone(), undo));
        }
    }

    /// A draft of a part of the data (an element, a value, a field) at `token` below this one,
    /// recording under its path when this one records precisely (`at`: the part's token and the
    /// typed step to it); `None` if `select` finds no such part. Without `at` (a key with no
    /// JSON Pointer form) this level is diffed as a whole instead. Taking it counts as mutable access to this level.
    pub(super) fn child<'b, C>(
        &'b mut self,
        at: Option<(
            PathToken,
            impl Fn(&mut dyn Any) -> Option<&mut dyn Any> + Send + Sync + 'static,
        )>,
        select: impl FnOnce(&'b mut D) -> Option<&'b mut C>,
    ) -> Option<Draft<'b, C>> {
        if at.is_none() {
            self.begin_whole();
        }
        let precise = self.precise();
        self.touched = true;
        let Draft {
            target, recorder, ..
        } = self;
        let recorder = match (recorder, at) {
            (Some(r), Some((token, step))) if precise => {
                let steps = crate::core::patch_log::then(r.steps.clone(), step);
                Some(Recorder {
                    log: &mut *r.log,
                    path: r.path.below(token),
                    steps,
                })
            }
            _ => None,
        };
        let data = match target {
            Target::Owned(d) => &mut **d,
            Target::Shared(a) => Arc::make_mut(a),
        };
        select(data).map(|part| Draft::new_recording(part, recorder))
    }

    /// Start diffing this level as a whole, if it records and does not yet: keep its JSON and a
    /// copy of it.
    pub(super) fn begin_whole(&mut self) {
        if self.recorder.is_none() || self.whole.is_some() {
            return;
        }
        let current: &D = self;
        let before = match contain("Serialize", || current.to_json()) {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.fail(Failure::Serialize(e.to_string()));
                None
            }
            Err(message) => {
                self.fail(Failure::DataPanicked(message));
                None
            }
        };
        let backup = (**self).clone();
        self.whole = Some(Box::new(Whole {
            before,
            backup,
            to_json: D::to_json,
            restore: |backup, steps| {
                undo_at(steps, move |d: &mut D| {
                    *d = backup;
                    true
                })
            },
        }));
    }
}

impl<D> Deref for Draft<'_, D> {
    type Target = D;
    fn deref(&self) -> &D {
        match &self.target {
            Target::Owned(d) => d,
            Target::Shared(a) => a,
        }
    }
}

impl<D: CacheData> DerefMut for Draft<'_, D> {
    fn deref_mut(&mut self) -> &mut D {
        self.touched = true;
        self.as_mut_untracked()
    }
}

impl<D> Drop for Draft<'_, D> {
    fn drop(&mut self) {
        self.end_whole();
    }
}
