//! Running a user's typed recipe on the core's type-erased data: through a copy-on-write draft
//! that records the core's patches, with the recipe's panic contained, atomically where the
//! update computes patches; and the core's refusals as the runtime's errors.

use std::panic::AssertUnwindSafe;

use crate::core::{Draft, UpdateRefused};
use crate::runtime::erased::{Data, ErasedData};
use crate::runtime::error::{UpdateError, panic_message};

/// Run a typed recipe on erased data through a copy-on-write draft, containing a panic.
/// Returns the panic message, if the recipe panicked.
pub(crate) fn run_typed_recipe<T: Data>(
    outer: &mut Draft<'_, ErasedData>,
    recipe: impl FnOnce(&mut Draft<'_, T>),
) -> Option<String> {
    let (data, recorder) = outer.split_untracked();
    let recorder = recorder.map(|r| r.then(ErasedData::step_to::<T>));
    let (outcome, touched) = data.with_draft(recorder, |draft: &mut Draft<'_, T>| {
        std::panic::catch_unwind(AssertUnwindSafe(|| recipe(draft)))
    })?;
    if touched {
        outer.mark_touched();
    }
    outcome.err().map(|payload| panic_message(&*payload))
}

/// [`run_typed_recipe`], atomically: if the recipe panics, the data is what it was before it
/// and the draft counts as untouched (no update, no notification, no patches). For the paths
/// that compute patches (`update_query_data`, `update_cached_data_with_patches`): there the core
/// records the change as it is made and, told the update is abandoned, undoes it, so no copy of
/// the data is taken up front. A draft that does not record (not reached by those paths) is put
/// back from a share of the data taken first. The streaming hot path (`update_cached_data`) does
/// not use this: a copy there would cost O(size of the entry) per update, which R15 rules out
/// (its panicking recipe keeps what it changed, see [`UpdateError::RecipePanicked`]).
pub(crate) fn run_typed_recipe_atomic<T: Data>(
    outer: &mut Draft<'_, ErasedData>,
    recipe: impl FnOnce(&mut Draft<'_, T>),
) -> Option<String> {
    if outer.is_recording() {
        // The core records the patches and undoes the recorded change when asked.
        let panicked = run_typed_recipe(outer, recipe);
        if panicked.is_some() {
            outer.abandon();
        }
        return panicked;
    }
    let backup = (**outer).clone();
    let panicked = run_typed_recipe(outer, recipe);
    if panicked.is_some() {
        outer.restore(backup);
    }
    panicked
}

/// An update's result, or the panic of its recipe.
pub(crate) fn recipe_outcome<R>(
    result: Result<R, UpdateRefused>,
    panicked: Option<String>,
) -> Result<R, UpdateError> {
    match panicked {
        Some(message) => Err(UpdateError::RecipePanicked { message }),
        None => result.map_err(from_core),
    }
}

pub(crate) fn from_core(error: UpdateRefused) -> UpdateError {
    match error {
        UpdateRefused::NotLive | UpdateRefused::NotLoaded => UpdateError::EntryRemoved,
        UpdateRefused::Serialize(message) => UpdateError::Serialize(message),
        UpdateRefused::DataPanicked { message } => UpdateError::DataPanicked { message },
        UpdateRefused::NotVersioned => UpdateError::NotVersioned,
    }
}
