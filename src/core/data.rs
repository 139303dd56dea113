//! What the core needs of cached data: cloning, equality, and a JSON form for patches.
//!
//! ```
//! use livecache::core::CacheData;
//! #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Message { id: u32, text: String }
//! fn cacheable<D: CacheData>(_: &D) {}
//! cacheable(&vec![Message { id: 1, text: "hi".into() }]);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Data a cache entry can hold.
///
/// Every `Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static` type is
/// `CacheData`. The JSON form is used only for RFC 6902 patches (when asked for) and
/// `patch_query_data`; equality decides whether new data from a request or an upsert changed
/// anything (SPEC R8). `Send + Sync + 'static` let an update's typed undo (see
/// [`Cache::undo`](crate::core::Cache::undo)) outlive the update and cross threads.
///
/// `same_type_from_json` takes `&self` so that a type-erased wrapper (the runtime keeps entries of
/// every endpoint in one cache) can deserialise into the concrete type it wraps.
///
/// ```
/// use livecache::core::CacheData;
/// let data = vec![1u8, 2];
/// let json = data.to_json()?;
/// assert_eq!(json, serde_json::json!([1, 2]));
/// assert_eq!(data.same_type_from_json(serde_json::json!([3]))?, vec![3u8]);
/// assert!(data.same_type_from_json(serde_json::json!("x")).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub trait CacheData: Clone + PartialEq + Send + Sync + 'static {
    /// The data as JSON.
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    /// A value of the same type as `self` from JSON.
    fn same_type_from_json(&self, value: Value) -> Result<Self, serde_json::Error>;
}

impl<T: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static> CacheData for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn same_type_from_json(&self, value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }
}

/// Run `f`, which calls the data type's own code (its `PartialEq`, `Serialize` or
/// `Deserialize`: user code, like a recipe), containing a panic: `Err` with a message naming
/// `what` panicked. The data `f` reads is left as it was, so it is safe to go on using it.
pub(crate) fn contain<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_owned()
        };
        format!("the data's {what} panicked: {message}")
    })
}
