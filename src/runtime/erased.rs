//! Type erasure: one cache holds the entries of every endpoint, whatever their data type.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::core::CacheData;
use crate::core::Draft;
use crate::core::Recorder;

/// What an endpoint's data type must be: cloneable (copy-on-write updates), comparable (equal
/// results notify no one), serialisable (patches), and shareable across tasks.
///
/// Blanket-implemented; you never implement it by hand.
///
/// ```
/// fn assert_data<T: livecache::Data>() {}
/// assert_data::<Vec<String>>();
/// ```
pub trait Data: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static> Data for T {}

/// Data of any [`Data`] type, shared: readers take the `Arc`, updates copy on write.
type AnyData = Arc<dyn Any + Send + Sync>;

/// What the core needs of erased data besides holding it, for one concrete type.
trait Ops: Send + Sync {
    fn eq(&self, a: &AnyData, b: &AnyData) -> bool;
    fn to_json(&self, data: &AnyData) -> Result<Value, serde_json::Error>;
    fn parse_json(&self, value: Value) -> Result<AnyData, serde_json::Error>;
    fn clone_value(&self, data: &AnyData) -> Option<AnyData>;
}

/// The [`Ops`] of a `T` (no state: one constant per type).
struct TypedOps<T>(PhantomData<fn() -> T>);

impl<T: Data> Ops for TypedOps<T> {
    fn eq(&self, a: &AnyData, b: &AnyData) -> bool {
        match (a.downcast_ref::<T>(), b.downcast_ref::<T>()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
    fn to_json(&self, data: &AnyData) -> Result<Value, serde_json::Error> {
        match data.downcast_ref::<T>() {
            Some(data) => serde_json::to_value(data),
            None => Err(serde::ser::Error::custom("erased data of another type")),
        }
    }
    fn parse_json(&self, value: Value) -> Result<AnyData, serde_json::Error> {
        let data: T = serde_json::from_value(value)?;
        Ok(Arc::new(data))
    }
    fn clone_value(&self, data: &AnyData) -> Option<AnyData> {
        let data: &T = data.downcast_ref::<T>()?;
        Some(Arc::new(data.clone()))
    }
}

/// An entry's data with its type erased: the value itself sits in the shared allocation (an
/// update reaches it in one step), with its type's operations beside it.
pub(crate) struct ErasedData {
    value: AnyData,
    ops: &'static dyn Ops,
}

impl ErasedData {
    pub(crate) fn new<T: Data>(data: T) -> Self {
        ErasedData {
            value: Arc::new(data),
            ops: &TypedOps::<T>(PhantomData),
        }
    }

    /// The data, mutably, if it is a `T`: copied first if a reader holds a snapshot of it.
    pub(crate) fn typed_mut<T: Data>(&mut self) -> Option<&mut T> {
        if Arc::get_mut(&mut self.value).is_none() {
            self.value = self.ops.clone_value(&self.value)?;
        }
        Arc::get_mut(&mut self.value)?.downcast_mut::<T>()
    }

    /// The step from erased data to the `T` inside, for a typed undo.
    pub(crate) fn step_to<T: Data>(value: &mut dyn Any) -> Option<&mut dyn Any> {
        let erased = value.downcast_mut::<ErasedData>()?;
        erased.typed_mut::<T>().map(|typed| typed as &mut dyn Any)
    }

    /// A shared snapshot of the data, if it is a `T`.
    pub(crate) fn get<T: Data>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.value).downcast::<T>().ok()
    }

    /// Run `f` on a copy-on-write draft of the data, if it is a `T`, and say whether `f` took
    /// mutable access. Unshared data is changed in place; data a reader still holds a snapshot of
    /// is copied on the first mutable access. The draft records its patches into `recorder`, the
    /// core's, when the update wants them.
    pub(crate) fn with_draft<T: Data, R>(
        &mut self,
        recorder: Option<Recorder<'_>>,
        f: impl FnOnce(&mut Draft<'_, T>) -> R,
    ) -> Option<(R, bool)> {
        if let Some(value) = Arc::get_mut(&mut self.value) {
            let mut draft = Draft::new_recording(value.downcast_mut::<T>()?, recorder);
            let result = f(&mut draft);
            return Some((result, draft.touched()));
        }
        let mut typed = Arc::clone(&self.value).downcast::<T>().ok()?;
        let (result, touched) = {
            let mut draft = Draft::shared_recording(&mut typed, recorder);
            let result = f(&mut draft);
            (result, draft.touched())
        };
        if touched {
            self.value = typed;
        }
        Some((result, touched))
    }
}

impl Clone for ErasedData {
    fn clone(&self) -> Self {
        ErasedData {
            value: Arc::clone(&self.value),
            ops: self.ops,
        }
    }
}

impl PartialEq for ErasedData {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.value, &other.value) || self.ops.eq(&self.value, &other.value)
    }
}

impl fmt::Debug for ErasedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErasedData(..)")
    }
}

impl CacheData for ErasedData {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        self.ops.to_json(&self.value)
    }
    fn same_type_from_json(&self, value: Value) -> Result<Self, serde_json::Error> {
        Ok(ErasedData {
            value: self.ops.parse_json(value)?,
            ops: self.ops,
        })
    }
}

/// A query function's meta with its type erased.
pub(crate) type ErasedMeta = Arc<dyn Any + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshared_data_is_updated_in_place() {
        let mut data = ErasedData::new(vec![1u32]);
        let before = Arc::as_ptr(&data.value).cast::<()>();
        let touched = data.with_draft(None, |d: &mut Draft<'_, Vec<u32>>| d.push(2));
        assert_eq!(touched, Some(((), true)));
        assert_eq!(Arc::as_ptr(&data.value).cast::<()>(), before, "no copy");
        assert_eq!(data.get::<Vec<u32>>().as_deref(), Some(&vec![1, 2]));
    }

    #[test]
    fn a_held_snapshot_is_copied_on_write_and_never_changes() {
        let mut data = ErasedData::new(vec![1u32]);
        let snapshot = data.get::<Vec<u32>>().expect("a Vec<u32>");
        // Reading copies nothing and changes nothing.
        let read = data.with_draft(None, |d: &mut Draft<'_, Vec<u32>>| d.len());
        assert_eq!(read, Some((1, false)));
        assert!(Arc::ptr_eq(
            &data.get::<Vec<u32>>().expect("a Vec<u32>"),
            &snapshot
        ));
        // Writing copies: the snapshot keeps the old value.
        let written = data.with_draft(None, |d: &mut Draft<'_, Vec<u32>>| d.push(2));
        assert_eq!(written, Some(((), true)));
        assert_eq!(*snapshot, vec![1]);
        assert_eq!(data.get::<Vec<u32>>().as_deref(), Some(&vec![1, 2]));
    }

    #[test]
    fn another_type_is_refused_and_nothing_changes() {
        let mut data = ErasedData::new(vec![1u32]);
        assert!(data.get::<String>().is_none());
        assert!(
            data.with_draft(None, |d: &mut Draft<'_, String>| d.push('x'))
                .is_none()
        );
        let _snapshot = data.get::<Vec<u32>>();
        assert!(
            data.with_draft(None, |d: &mut Draft<'_, String>| d.push('x'))
                .is_none()
        );
        assert_eq!(data.get::<Vec<u32>>().as_deref(), Some(&vec![1]));
    }

    #[test]
    fn operations_follow_the_erased_type() -> Result<(), serde_json::Error> {
        let a = ErasedData::new(vec![1u32, 2]);
        assert_eq!(a, a.clone());
        assert_eq!(a, ErasedData::new(vec![1u32, 2]));
        assert_ne!(a, ErasedData::new(vec![1u32]));
        assert_ne!(a, ErasedData::new(String::from("[1,2]")));
        assert_eq!(a.to_json()?, serde_json::json!([1, 2]));
        let b = a.same_type_from_json(serde_json::json!([3]))?;
        assert_eq!(b.get::<Vec<u32>>().as_deref(), Some(&vec![3]));
        assert!(a.same_type_from_json(serde_json::json!("x")).is_err());
        Ok(())
    }
}
