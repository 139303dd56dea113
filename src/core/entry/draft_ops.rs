//! The draft's operations on the shapes users update — `Vec`, `HashMap`, `BTreeMap`, struct
//! fields — each recording its RFC 6902 patch and inverse at the cost of the change when the
//! update's patches are wanted (R15, R18).
//!
//! ```
//! use std::collections::BTreeMap;
//! use livecache::core::{Cache, CacheKey, EndpointConfig};
//!
//! #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Room { topic: String, members: BTreeMap<String, u32>, log: Vec<String> }
//!
//! let mut cache: Cache<Room> = Cache::new(Default::default());
//! let ep = cache.add_endpoint("room", EndpointConfig::default())?;
//! let key = CacheKey::verbatim("room(1)");
//! cache.upsert(0, ep, &key, Room { topic: "hi".into(), members: BTreeMap::new(), log: vec![] })?;
//! let set = cache.update_query_data(1, &key, |room| {
//!     livecache::field!(room, log).push("joined".into());
//!     livecache::field!(room, members).insert("ada".into(), 1);
//! })?;
//! assert_eq!(
//!     serde_json::to_value(&set.patches)?,
//!     serde_json::json!([
//!         {"op": "add", "path": "/log/0", "value": "joined"},
//!         {"op": "add", "path": "/members/ada", "value": 1},
//!     ])
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::Any;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::ops::DerefMut;

use json_patch::jsonptr::{PointerBuf, Token};

use super::draft_path::PathToken;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde::Serialize;
use serde_json::Value;

use super::Draft;
use crate::core::data::{CacheData, contain};
use crate::core::patch_log::{Failure, step};

/// The two operations of an addition at `path` (its inverse removes it).
pub(crate) fn added(path: PointerBuf, value: Value) -> (PatchOperation, PatchOperation) {
    (
        PatchOperation::Add(AddOperation {
            path: path.clone(),
            value,
        }),
        PatchOperation::Remove(RemoveOperation { path }),
    )
}

/// The two operations of a removal at `path` of `old` (its inverse adds it back).
pub(crate) fn removed(path: PointerBuf, old: Value) -> (PatchOperation, PatchOperation) {
    (
        PatchOperation::Remove(RemoveOperation { path: path.clone() }),
        PatchOperation::Add(AddOperation { path, value: old }),
    )
}

/// The two operations of replacing `old` with `new` at `path`.
pub(crate) fn replaced(
    path: PointerBuf,
    old: Value,
    new: Value,
) -> (PatchOperation, PatchOperation) {
    (
        PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: new,
        }),
        PatchOperation::Replace(ReplaceOperation { path, value: old }),
    )
}

/// A value's JSON, the data type's panic contained.
fn json_of<T: CacheData>(value: &T) -> Result<Value, Failure> {
    match contain("Serialize", || value.to_json()) {
        Ok(Ok(json)) => Ok(json),
        Ok(Err(e)) => Err(Failure::Serialize(e.to_string())),
        Err(message) => Err(Failure::DataPanicked(message)),
    }
}

/// A key's JSON, its panic contained.
fn key_json<K: Serialize + ?Sized>(key: &K) -> Result<Value, Failure> {
    match contain("Serialize", || serde_json::to_value(key)) {
        Ok(Ok(json)) => Ok(json),
        Ok(Err(e)) => Err(Failure::Serialize(e.to_string())),
        Err(message) => Err(Failure::DataPanicked(message)),
    }
}

/// A map key as a JSON Pointer token: its JSON object key (a string, or a number or boolean
/// written as text, as serde_json writes map keys). `None` for any other key.
fn key_token<K: Serialize + ?Sized>(key: &K) -> Option<PathToken> {
    match key_json(key).ok()? {
        Value::String(s) => Some(PathToken::Key(Token::new(s))),
        Value::Number(n) => Some(PathToken::Key(Token::new(n.to_string()))),
        Value::Bool(b) => Some(PathToken::Key(Token::new(b.to_string()))),
        _ => None,
    }
}

impl<'a, D: CacheData> Draft<'a, D> {
    /// A draft of the field `name` of a struct, reached by `lens`: its changes are recorded at
    /// `/…/name`. `name` must be the field's name in the data's JSON (as serde writes it, after
    /// any `rename`). The [`field!`](crate::field) macro writes both from the field's name.
    ///
    /// ```
    /// use livecache::core::Draft;
    /// #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Ticker { price: u32, trades: Vec<u32> }
    /// let mut t = Ticker { price: 1, trades: vec![] };
    /// let mut draft = Draft::new(&mut t);
    /// draft.field("price", |t| &mut t.price).set(2);
    /// livecache::field!(draft, trades).push(7);
    /// drop(draft);
    /// assert_eq!((t.price, t.trades), (2, vec![7]));
    /// ```
    pub fn field<F: 'static>(
        &mut self,
        name: &'static str,
        lens: fn(&mut D) -> &mut F,
    ) -> Draft<'_, F> {
        let step = step(move |value| {
            let whole = value.downcast_mut::<D>()?;
            Some(lens(whole) as &mut dyn Any)
        });
        match self.child(Some((PathToken::Name(name), step)), |data| Some(lens(data))) {
            Some(part) => part,
            None => unreachable!("a lens always finds its field"),
        }
    }
}

/// `*draft += x` and the other compound assignments on a draft of a number (or any value with
/// the operator), recorded as one `replace` like [`Draft::set`]: a numeric entry is updated
/// without reaching through the draft with `**`.
macro_rules! assign_ops {
    ($($trait:ident $method:ident),*) => {$(
        impl<D, R> std::ops::$trait<R> for Draft<'_, D>
        where
            D: CacheData + std::ops::$trait<R>,
        {
            fn $method(&mut self, rhs: R) {
                let mut value = (**self).clone();
                std::ops::$trait::$method(&mut value, rhs);
                self.set(value);
            }
        }
    )*};
}

assign_ops!(
    AddAssign add_assign,
    SubAssign sub_assign,
    MulAssign mul_assign,
    DivAssign div_assign,
    RemAssign rem_assign
);

/// A draft of a struct field: `field!(draft, name)` is
/// `draft.field("name", |value| &mut value.name)` (see [`Draft::field`]). Use
/// [`Draft::field`] when serde renames the field.
///
/// ```
/// #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Counter { hits: u64 }
/// let mut c = Counter { hits: 1 };
/// let mut draft = livecache::core::Draft::new(&mut c);
/// livecache::field!(draft, hits).set(2);
/// drop(draft);
/// assert_eq!(c.hits, 2);
/// ```
#[macro_export]
macro_rules! field {
    ($draft:expr, $name:ident) => {
        $draft.field(::core::stringify!($name), |value| &mut value.$name)
    };
}

impl<'a, T> Draft<'a, Vec<T>>
where
    T: CacheData,
    Vec<T>: CacheData,
{
    /// `Vec::push`, recorded as one `add` at the new index.
    ///
    /// ```
    /// let mut v = vec![1];
    /// livecache::core::Draft::new(&mut v).push(2);
    /// assert_eq!(v, [1, 2]);
    /// ```
    pub fn push(&mut self, value: T) {
        if self.precise() {
            match json_of(&value) {
                Ok(json) => {
                    let index = self.len();
                    self.record(
                        PathToken::Index(index),
                        |path| added(path, json),
                        |v: &mut Vec<T>| v.pop().is_some(),
                    );
                    self.mark_touched();
                    self.data_mut().push(value);
                    return;
                }
                Err(failure) => self.fail(failure),
            }
        }
        self.deref_mut().push(value);
    }

    /// `Vec::pop`, recorded as one `remove` of the last element (on an empty vector, nothing is
    /// recorded; like every mutating method, it still counts as touching).
    ///
    /// ```
    /// let mut v = vec![1];
    /// let mut d = livecache::core::Draft::new(&mut v);
    /// assert_eq!(d.pop(), Some(1));
    /// assert_eq!(d.pop(), None);
    /// ```
    pub fn pop(&mut self) -> Option<T> {
        let Some(last) = self.len().checked_sub(1) else {
            self.mark_touched();
            return None;
        };
        Some(self.remove(last))
    }

    /// `Vec::insert`, recorded as one `add` at `index`. Panics if `index > len`, as `Vec` does.
    ///
    /// ```
    /// let mut v = vec![1, 3];
    /// livecache::core::Draft::new(&mut v).insert(1, 2);
    /// assert_eq!(v, [1, 2, 3]);
    /// ```
    pub fn insert(&mut self, index: usize, value: T) {
        if self.precise() && index <= self.len() {
            match json_of(&value) {
                Ok(json) => {
                    self.record(
                        PathToken::Index(index),
                        |path| added(path, json),
                        move |v: &mut Vec<T>| {
                            let there = index < v.len();
                            if there {
                                v.remove(index);
                            }
                            there
                        },
                    );
                    self.mark_touched();
                    self.data_mut().insert(index, value);
                    return;
                }
                Err(failure) => self.fail(failure),
            }
        }
        self.deref_mut().insert(index, value);
    }

    /// `Vec::remove`, recorded as one `remove` at `index`. Panics if `index >= len`, as `Vec`
    /// does.
    ///
    /// ```
    /// let mut v = vec![1, 2, 3];
    /// assert_eq!(livecache::core::Draft::new(&mut v).remove(1), 2);
    /// assert_eq!(v, [1, 3]);
    /// ```
    pub fn remove(&mut self, index: usize) -> T {
        if self.precise() && index < self.len() {
            match json_of(&self[index]) {
                Ok(old) => {
                    let kept = self[index].clone();
                    self.record(
                        PathToken::Index(index),
                        |path| removed(path, old),
                        move |v: &mut Vec<T>| {
                            let there = index <= v.len();
                            if there {
                                v.insert(index, kept);
                            }
                            there
                        },
                    );
                    self.mark_touched();
                    return self.data_mut().remove(index);
                }
                Err(failure) => self.fail(failure),
            }
        }
        self.deref_mut().remove(index)
    }

    /// `Vec::truncate`, recorded as one `remove` per element dropped, last first. Counts as
    /// touching even if nothing is dropped.
    ///
    /// ```
    /// let mut v = vec![1, 2, 3];
    /// livecache::core::Draft::new(&mut v).truncate(1);
    /// assert_eq!(v, [1]);
    /// ```
    pub fn truncate(&mut self, len: usize) {
        self.mark_touched();
        while self.len() > len {
            self.pop();
        }
    }

    /// `Vec::clear`: [`Draft::truncate`] to nothing.
    ///
    /// ```
    /// let mut v = vec![1, 2];
    /// livecache::core::Draft::new(&mut v).clear();
    /// assert!(v.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// `Vec::extend`: one [`push`](Draft::push) per value.
    ///
    /// ```
    /// let mut v = vec![1];
    /// livecache::core::Draft::new(&mut v).extend([2, 3]);
    /// assert_eq!(v, [1, 2, 3]);
    /// ```
    pub fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        for value in values {
            self.push(value);
        }
    }

    /// A draft of the element at `index` (`None` past the end): its changes are recorded at
    /// `/…/index`.
    ///
    /// ```
    /// let mut v = vec![vec![1], vec![2]];
    /// let mut d = livecache::core::Draft::new(&mut v);
    /// if let Some(mut inner) = d.item_mut(1) { inner.push(3); }
    /// assert!(d.item_mut(2).is_none());
    /// drop(d);
    /// assert_eq!(v, [vec![1], vec![2, 3]]);
    /// ```
    pub fn item_mut(&mut self, index: usize) -> Option<Draft<'_, T>> {
        if index >= self.len() {
            return None;
        }
        let step = step(move |value| {
            let list = value.downcast_mut::<Vec<T>>()?;
            list.get_mut(index).map(|item| item as &mut dyn Any)
        });
        self.child(Some((PathToken::Index(index), step)), move |v| {
            v.get_mut(index)
        })
    }
}

/// The map operations, written once for `HashMap` and `BTreeMap`.
macro_rules! map_ops {
    ($map:ty, [$($bound:tt)*], [$($extra:tt)*]) => {
        impl<'a, K, V, $($extra)*> Draft<'a, $map>
        where
            K: Serialize + Clone + Send + Sync + 'static + $($bound)*,
            V: CacheData,
            $map: CacheData,
        {
            /// The map's `insert`, recorded as one `add` of a new key or one `replace` of an
            /// old one's value (nothing, for a value equal to the one held).
            ///
            /// ```
            /// let mut m = std::collections::BTreeMap::from([("a".to_string(), 1)]);
            /// let mut d = livecache::core::Draft::new(&mut m);
            /// assert_eq!(d.insert("a".into(), 1), Some(1));
            /// assert_eq!(d.insert("b".into(), 2), None);
            /// drop(d);
            /// assert_eq!(m.len(), 2);
            /// ```
            pub fn insert(&mut self, key: K, value: V) -> Option<V> {
                if self.get(&key) == Some(&value) {
                    self.mark_touched();
                    return self.data_mut().insert(key, value);
                }
                if self.precise() {
                    let token = key_token(&key);
                    let new = json_of(&value);
                    let old = self.get(&key).map(|old| json_of(old)).transpose();
                    match (token, new, old) {
                        (Some(token), Ok(new), Ok(old)) => {
                            let kept = self.get(&key).cloned();
                            let undo_key = key.clone();
                            self.record(
                                token,
                                |path| match old {
                                    Some(old) => replaced(path, old, new),
                                    None => added(path, new),
                                },
                                move |map: &mut $map| {
                                    match kept {
                                        Some(kept) => map.insert(undo_key, kept).is_some(),
                                        None => map.remove(&undo_key).is_some(),
                                    }
                                },
                            );
                            self.mark_touched();
                            return self.data_mut().insert(key, value);
                        }
                        (_, Err(failure), _) | (_, _, Err(failure)) => self.fail(failure),
                        (None, ..) => {}
                    }
                }
                self.deref_mut().insert(key, value)
            }

            /// The map's `remove`, recorded as one `remove` of the key (nothing, for an absent
            /// key).
            ///
            /// ```
            /// let mut m = std::collections::HashMap::from([("a".to_string(), 1)]);
            /// let mut d = livecache::core::Draft::new(&mut m);
            /// assert_eq!(d.remove("a"), Some(1));
            /// assert_eq!(d.remove("a"), None);
            /// ```
            pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
            where
                K: Borrow<Q>,
                Q: $($bound)* + ?Sized,
            {
                self.mark_touched();
                let (stored, old_value) = self.get_key_value(key)?;
                if self.precise() {
                    match (key_token(stored), json_of(old_value)) {
                        (Some(token), Ok(old)) => {
                            let (undo_key, kept) = (stored.clone(), old_value.clone());
                            self.record(
                                token,
                                |path| removed(path, old),
                                move |map: &mut $map| map.insert(undo_key, kept).is_none(),
                            );
                            self.mark_touched();
                            return self.data_mut().remove(key);
                        }
                        (_, Err(failure)) => self.fail(failure),
                        (None, Ok(_)) => {}
                    }
                }
                self.deref_mut().remove(key)
            }

            /// A draft of the value at `key` (`None` if absent): its changes are recorded at
            /// `/…/key`.
            ///
            /// ```
            /// let mut m = std::collections::BTreeMap::from([(1u32, vec![1])]);
            /// let mut d = livecache::core::Draft::new(&mut m);
            /// if let Some(mut list) = d.value_mut(&1) { list.push(2); }
            /// drop(d);
            /// assert_eq!(m[&1], [1, 2]);
            /// ```
            pub fn value_mut<Q>(&mut self, key: &Q) -> Option<Draft<'_, V>>
            where
                K: Borrow<Q>,
                Q: $($bound)* + ?Sized,
            {
                let (stored, _) = self.get_key_value(key)?;
                let at = key_token(stored).map(|token| {
                    let step_key = stored.clone();
                    let step = step(move |value| {
                        let map = value.downcast_mut::<$map>()?;
                        map.get_mut::<K>(&step_key).map(|v| v as &mut dyn Any)
                    });
                    (token, step)
                });
                self.child(at, |map| map.get_mut(key))
            }
        }
    };
}

map_ops!(BTreeMap<K, V>, [Ord], []);
map_ops!(HashMap<K, V, S>, [Hash + Eq], [S: BuildHasher + Send + Sync + 'static]);
