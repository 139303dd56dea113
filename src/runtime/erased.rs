//! Type erasure: one cache holds the entries of every endpoint, whatever their data type.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::core::CacheData;

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

trait DynValue: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn DynValue>;
    fn eq_dyn(&self, other: &dyn DynValue) -> bool;
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    fn same_type_from_json(&self, value: Value) -> Result<Box<dyn DynValue>, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Shared typed data: readers get the `Arc`, updates copy on write.
struct Typed<T>(Arc<T>);

impl<T: Data> DynValue for Typed<T> {
    fn clone_box(&self) -> Box<dyn DynValue> {
        Box::new(Typed(Arc::clone(&self.0)))
    }
    fn eq_dyn(&self, other: &dyn DynValue) -> bool {
        other
            .as_any()
            .downcast_ref::<Typed<T>>()
            .is_some_and(|o| Arc::ptr_eq(&o.0, &self.0) || *o.0 == *self.0)
    }
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(&*self.0)
    }
    fn same_type_from_json(&self, value: Value) -> Result<Box<dyn DynValue>, serde_json::Error> {
        let data: T = serde_json::from_value(value)?;
        Ok(Box::new(Typed(Arc::new(data))))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// An entry's data with its type erased.
pub(crate) struct ErasedData(Box<dyn DynValue>);

impl ErasedData {
    pub(crate) fn new<T: Data>(data: T) -> Self {
        ErasedData(Box::new(Typed(Arc::new(data))))
    }

    /// A shared snapshot of the data, if it is a `T`.
    pub(crate) fn get<T: Data>(&self) -> Option<Arc<T>> {
        self.0
            .as_any()
            .downcast_ref::<Typed<T>>()
            .map(|t| Arc::clone(&t.0))
    }

    /// The shared data itself, for a copy-on-write draft, if it is a `T`.
    pub(crate) fn get_mut<T: Data>(&mut self) -> Option<&mut Arc<T>> {
        self.0
            .as_any_mut()
            .downcast_mut::<Typed<T>>()
            .map(|t| &mut t.0)
    }
}

impl Clone for ErasedData {
    fn clone(&self) -> Self {
        ErasedData(self.0.clone_box())
    }
}

impl PartialEq for ErasedData {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}

impl fmt::Debug for ErasedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErasedData(..)")
    }
}

impl CacheData for ErasedData {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        self.0.to_json()
    }
    fn same_type_from_json(&self, value: Value) -> Result<Self, serde_json::Error> {
        self.0.same_type_from_json(value).map(ErasedData)
    }
}

/// A query function's meta with its type erased.
pub(crate) type ErasedMeta = Arc<dyn Any + Send + Sync>;
