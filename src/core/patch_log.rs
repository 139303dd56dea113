//! The patches a recording draft writes as a recipe runs (R15, R18): each change's operation and
//! its inverse, in the order made, and whether recording failed (the update is then undone).

use std::any::Any;
use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation};
use serde_json::Value;

use crate::core::data::{CacheData, contain};
use crate::core::patch::PatchSet;

/// Why a recording could not give the update's patches; the update is undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A value could not be serialised.
    Serialize(String),
    /// The data type's own code panicked (its `Serialize`).
    DataPanicked(String),
    /// The recipe panicked; the layer that caught it asked for the update to be undone.
    Abandoned,
}

/// One step from a value down to a part of it (an element, a map's value, a field), on the
/// data's typed form.
pub(crate) type StepFn = dyn Fn(&mut dyn Any) -> Option<&mut dyn Any> + Send + Sync;

/// The last step of a way down from the entry's root, and the way to where it starts: how a
/// typed undo finds the level a change was made at. One allocation per level, shared by every
/// change recorded below it.
pub(crate) struct Link<S: ?Sized = StepFn> {
    parent: Steps,
    step: S,
}

/// The way down from the entry's root (`None`: the root itself).
pub(crate) type Steps = Option<Arc<Link>>;

/// `f` as a step (the closure's signature is fixed here, for every lifetime of its argument).
pub(crate) fn step<F>(f: F) -> F
where
    F: Fn(&mut dyn Any) -> Option<&mut dyn Any> + Send + Sync + 'static,
{
    f
}

/// `parent` and then `step`.
pub(crate) fn then(
    parent: Steps,
    step: impl Fn(&mut dyn Any) -> Option<&mut dyn Any> + Send + Sync + 'static,
) -> Steps {
    let link: Arc<Link> = Arc::new(Link { parent, step });
    Some(link)
}

/// Undoes one recorded change on the data's typed form, from the entry's root; `false` if the
/// level it was made at is not there.
pub(crate) type UndoStep = Box<dyn FnOnce(&mut dyn Any) -> bool + Send + Sync>;

/// The part of `root` that `steps` lead to.
pub(crate) fn reach<'x>(root: &'x mut dyn Any, steps: &Steps) -> Option<&'x mut dyn Any> {
    match steps {
        None => Some(root),
        Some(link) => (link.step)(reach(root, &link.parent)?),
    }
}

/// An undo step that applies `undo` to the `T` the `steps` lead to.
pub(crate) fn undo_at<T: 'static>(
    steps: Steps,
    undo: impl FnOnce(&mut T) -> bool + Send + Sync + 'static,
) -> UndoStep {
    Box::new(
        move |root| match reach(root, &steps).and_then(|value| value.downcast_mut::<T>()) {
            Some(value) => undo(value),
            None => false,
        },
    )
}

/// Patches recorded by the drafts of one update.
#[derive(Default)]
pub(crate) struct PatchLog {
    forward: Vec<PatchOperation>,
    /// The inverse operations, newest first once reversed: kept in the order recorded, each
    /// change's own operations pushed last-first, so that reversing the whole list undoes the
    /// changes newest first with each change's operations in their order.
    inverse: Vec<PatchOperation>,
    failure: Option<Failure>,
    /// The same changes undone on the typed data, in the order made.
    undo: Vec<UndoStep>,
}

impl std::fmt::Debug for PatchLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchLog")
            .field("forward", &self.forward)
            .field("inverse", &self.inverse)
            .field("failure", &self.failure)
            .field("undo", &self.undo.len())
            .finish()
    }
}

impl PatchLog {
    /// How to undo the change just recorded on the typed data.
    pub(crate) fn record_undo(&mut self, undo: UndoStep) {
        self.undo.push(undo);
    }

    /// One change: its operation and the operation that undoes it.
    pub(crate) fn record(&mut self, forward: PatchOperation, inverse: PatchOperation) {
        self.forward.push(forward);
        self.inverse.push(inverse);
    }

    /// A change found by diffing the value at `at` before and after.
    pub(crate) fn record_diff(&mut self, at: &PointerBuf, before: &Value, after: &Value) {
        let forward = json_patch::diff(before, after).0;
        let inverse = json_patch::diff(after, before).0;
        self.forward
            .extend(forward.into_iter().map(|op| below(at, op)));
        self.inverse
            .extend(inverse.into_iter().rev().map(|op| below(at, op)));
    }

    /// The first failure is kept.
    pub(crate) fn fail(&mut self, failure: Failure) {
        self.failure.get_or_insert(failure);
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// The patches and their inverse, and the typed undo steps in the order made.
    pub(crate) fn into_parts(self) -> (PatchSet, Vec<UndoStep>) {
        let mut inverse = self.inverse;
        inverse.reverse();
        let set = PatchSet {
            patches: Patch(self.forward),
            inverse_patches: Patch(inverse),
        };
        (set, self.undo)
    }

    /// `data` with every recorded change undone: the data as it was before the update. Through
    /// the data's JSON, so O(size of the data) — only when an update fails.
    pub(crate) fn undo<D: CacheData>(&self, data: &D) -> Result<D, String> {
        let mut json = contain("Serialize", || data.to_json())?.map_err(|e| e.to_string())?;
        let inverse: Vec<PatchOperation> = self.inverse.iter().rev().cloned().collect();
        json_patch::patch_unsafe(&mut json, &inverse).map_err(|e| e.to_string())?;
        contain("Deserialize", || data.same_type_from_json(json))?.map_err(|e| e.to_string())
    }
}

/// `op` with its paths moved below `at`.
fn below(at: &PointerBuf, mut op: PatchOperation) -> PatchOperation {
    let under = |path: &mut PointerBuf| {
        let mut full = at.clone();
        full.append(&*path);
        *path = full;
    };
    match &mut op {
        PatchOperation::Add(o) => under(&mut o.path),
        PatchOperation::Remove(o) => under(&mut o.path),
        PatchOperation::Replace(o) => under(&mut o.path),
        PatchOperation::Move(o) => {
            under(&mut o.path);
            under(&mut o.from);
        }
        PatchOperation::Copy(o) => {
            under(&mut o.path);
            under(&mut o.from);
        }
        PatchOperation::Test(o) => under(&mut o.path),
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_diff_below_a_path_is_recorded_there_and_undone_in_order() {
        let mut log = PatchLog::default();
        let at = PointerBuf::from_tokens(["items", "2"]);
        log.record_diff(
            &at,
            &json!({"a": 1, "b": [1]}),
            &json!({"a": 2, "b": [1, 2]}),
        );
        let (set, _) = log.into_parts();
        let mut doc = json!({"items": [0, 0, {"a": 1, "b": [1]}]});
        json_patch::patch(&mut doc, &set.patches).expect("applies");
        assert_eq!(doc, json!({"items": [0, 0, {"a": 2, "b": [1, 2]}]}));
        json_patch::patch(&mut doc, &set.inverse_patches).expect("undoes");
        assert_eq!(doc, json!({"items": [0, 0, {"a": 1, "b": [1]}]}));
    }

    #[test]
    fn undo_applies_the_inverses_newest_first() {
        let mut log = PatchLog::default();
        let (f, i) = crate::core::entry::draft_ops::added(PointerBuf::from_tokens(["0"]), json!(5));
        log.record(f, i);
        let (f, i) = crate::core::entry::draft_ops::replaced(
            PointerBuf::from_tokens(["0"]),
            json!(5),
            json!(6),
        );
        log.record(f, i);
        assert_eq!(log.undo(&vec![6u32]), Ok(Vec::<u32>::new()));
        log.fail(Failure::Abandoned);
        log.fail(Failure::Serialize("later".into()));
        assert_eq!(log.failure(), Some(&Failure::Abandoned));
    }
}
