//! The draft an update recipe gets: a mutable view of the data that knows whether it was touched.

use std::ops::{Deref, DerefMut};

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
/// ```
/// use livecache::core::Draft;
/// let mut data = vec![1, 2];
/// let mut draft = Draft::new(&mut data);
/// assert_eq!(draft.len(), 2);      // reading does not count
/// assert!(!draft.touched());
/// draft.push(3);                   // mutable access does
/// assert!(draft.touched());
/// ```
#[derive(Debug)]
pub struct Draft<'a, D> {
    target: Target<'a, D>,
    touched: bool,
}

#[derive(Debug)]
enum Target<'a, D> {
    Owned(&'a mut D),
    Shared(&'a mut std::sync::Arc<D>),
}

impl<'a, D> Draft<'a, D> {
    /// A draft of `data`, not yet touched.
    ///
    /// ```
    /// let mut n = 1;
    /// assert!(!livecache::core::Draft::new(&mut n).touched());
    /// ```
    pub fn new(data: &'a mut D) -> Self {
        Draft {
            target: Target::Owned(data),
            touched: false,
        }
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
    /// assert_eq!((&*snapshot, &*data), (&vec![1], &vec![1, 2]));
    /// ```
    pub fn shared(data: &'a mut std::sync::Arc<D>) -> Self {
        Draft {
            target: Target::Shared(data),
            touched: false,
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

    /// Mutable access that does *not* count as touching: for a layer that wraps the data in its
    /// own draft and reports with [`Draft::mark_touched`] whether its recipe touched. Writing
    /// through it without marking breaks change detection.
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
    pub fn as_mut_untracked(&mut self) -> &mut D
    where
        D: Clone,
    {
        match &mut self.target {
            Target::Owned(d) => d,
            Target::Shared(a) => std::sync::Arc::make_mut(a),
        }
    }

    /// Put `value` back as the data and count the draft as untouched: the update is undone (a
    /// recipe that panicked, patches that could not be computed).
    pub(crate) fn restore(&mut self, value: D) {
        match &mut self.target {
            Target::Owned(d) => **d = value,
            Target::Shared(a) => **a = std::sync::Arc::new(value),
        }
        self.touched = false;
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

impl<D: Clone> DerefMut for Draft<'_, D> {
    fn deref_mut(&mut self) -> &mut D {
        self.touched = true;
        self.as_mut_untracked()
    }
}
