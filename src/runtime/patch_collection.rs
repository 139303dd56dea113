//! What `update_query_data` hands back: the change, which can be undone (R18).

use std::sync::Mutex;

use crate::core::{CacheKey, PatchSet, Undo};
use crate::runtime::endpoint::{Arg, Endpoint};
use crate::runtime::erased::Data;
use crate::runtime::error::Error;

/// The change an outside update made, which can be undone (RTK's patch collection).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), livecache::Error> {
/// # let api = livecache::Api::builder().build();
/// # let list = api.query::<(), Vec<u32>>("list").query_fn(|()| async { Ok(vec![]) }).build()?;
/// list.upsert_query_data((), vec![1])?;
/// let change = list.update_query_data(&(), |l| l.push(2))?;
/// assert_eq!(change.patches.patches.0.len(), 1);
/// # Ok(()) }
/// ```
pub struct PatchCollection<A, T, M = ()> {
    endpoint: Endpoint<A, T, M>,
    arg: A,
    /// The entry's key (the argument's, computed once).
    key: CacheKey,
    /// The patches and their inverse (empty if nothing changed).
    pub patches: PatchSet,
    /// The change undone on the typed data, until the first undo uses it.
    undo: Mutex<Option<Undo>>,
}

impl<A, T, M> PatchCollection<A, T, M> {
    pub(crate) fn new(endpoint: Endpoint<A, T, M>, arg: A, key: CacheKey, undo: Undo) -> Self {
        let (patches, undo) = undo.split();
        PatchCollection {
            endpoint,
            arg,
            key,
            patches,
            undo: Mutex::new(Some(undo)),
        }
    }
}

impl<A: Arg, T: Data, M: Send + Sync + 'static> PatchCollection<A, T, M> {
    /// Undo the change (R18). While the entry is as the change left it, the change is undone on
    /// the typed data in time proportional to it; otherwise (something changed it since, or
    /// this is a second undo) the inverse patches are applied to the data as it is now. Like
    /// RTK, there is no conflict detection: a later change to the same paths is overwritten or
    /// makes the undo fail.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), livecache::Error> {
    /// # let api = livecache::Api::builder().build();
    /// # let double = api.query::<u32, u32>("double").query_fn(|n: u32| async move { Ok(n * 2) }).build()?;
    /// double.upsert_query_data(1, 2)?;
    /// let change = double.update_query_data(&1, |n| n.set(3))?;
    /// change.undo()?;
    /// assert_eq!(double.state(&1)?.data(), Some(&2));
    /// # Ok(()) }
    /// ```
    pub fn undo(&self) -> Result<(), Error> {
        if self.patches.inverse_patches.0.is_empty() {
            return Ok(());
        }
        let typed = self.undo.lock().ok().and_then(|mut undo| undo.take());
        match typed {
            Some(undo) => self.endpoint.undo(&self.key, undo, &self.patches),
            None => self
                .endpoint
                .patch_query_data(&self.arg, &self.patches.inverse_patches),
        }
    }
}
