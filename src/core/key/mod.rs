//! Cache keys: RTK Query-compatible `endpointName(<canonical JSON of the argument>)` (SPEC §1).
//!
//! Every entry of the cache is addressed by a [`CacheKey`]. By default the key is computed by
//! [`default_key`], which mirrors RTK Query's `defaultSerializeQueryArgs`:
//!
//! 1. The argument is turned into a [`serde_json::Value`] with [`serde_json::to_value`].
//! 2. A top-level `null` (Rust `()`, `None`, a unit struct, `Value::Null`) is written as the text
//!    `undefined`, so `()` gives `name(undefined)`. Nested nulls stay `null`.
//! 3. Anything else is written by [`canonical_json`]: JSON with the keys of every object
//!    sorted, at every nesting level, in JavaScript's default string order (UTF-16 code units, not
//!    Rust's byte order); arrays keep their order; numbers and strings are written exactly as
//!    JavaScript's `JSON.stringify` writes them.
//! 4. The key is `endpoint(` + that text + `)`.
//!
//! So two arguments that differ only in the order of their object keys are the same entry.
//!
//! An endpoint may override the serialisation, like RTK's per-endpoint `serializeQueryArgs`, by
//! returning a [`KeyOverride`]: a string is the key verbatim (no endpoint prefix), any other value
//! is serialised the default way with the endpoint prefix ([`key_from_override`]).
//!
//! JavaScript `bigint`s become `{"$bigint":"<decimal>"}` in RTK; [`BigInt`] serialises the same way.
//!
//! # Exact JavaScript rules that are reproduced
//!
//! * **Object key order.** RTK sorts the keys with `Array.prototype.sort` (UTF-16 code-unit order)
//!   and re-inserts them into a fresh object, which `JSON.stringify` then enumerates in JavaScript
//!   property order: keys that are *array indices* (canonical decimal integers from `0` to
//!   `4294967294`, such as `"0"`, `"7"`, `"10"`, but not `"01"` or `"-1"`) come first in ascending
//!   numeric order, then all other keys in sorted order. This crate does the same, so
//!   `{"b":1,"10":2,"9":3}` is written `{"9":3,"10":2,"b":1}`, exactly as RTK writes it. Two
//!   arguments that differ only in key order still get the same key.
//! * **UTF-16 order.** For characters at or above U+10000 (written as surrogate pairs in UTF-16)
//!   and characters from U+E000 to U+FFFF, UTF-16 order differs from byte (code point) order:
//!   `"\u{10000}"` sorts before `"\u{E000}"`. The UTF-16 order is used.
//! * **Numbers.** Integers are written in decimal. Floating-point numbers follow ECMAScript's
//!   `Number::toString`: the shortest digits that round-trip, plain decimal notation when the
//!   decimal exponent is in `[-7, 21)` and exponent notation otherwise, so `5.0` → `5`,
//!   `0.1` → `0.1`, `1e20` → `100000000000000000000`, `1e21` → `1e+21`, `1e-7` → `1e-7`, and
//!   `-0.0` → `0`. Non-finite floats are refused (see below).
//! * **Strings.** Escaped as `JSON.stringify` escapes them: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//!   `\t`, other control characters below U+0020 as `\u00XX` with lowercase hex; nothing else is
//!   escaped (not `/`, not U+2028/U+2029, not non-ASCII).
//!
//! # Known differences from JavaScript
//!
//! * **Top-level `null`.** In JavaScript only `undefined` gives `name(undefined)`; an explicit
//!   `null` argument gives `name(null)`. Rust has no `undefined`, so every top-level null
//!   (`()`, `None`, `Value::Null`) gives `name(undefined)`.
//! * **Non-finite numbers.** `JSON.stringify` writes `NaN` and `±Infinity` as `null`, so RTK gives
//!   them the key of `null`. Here an argument holding a non-finite float anywhere is refused with
//!   [`KeyError::NonFinite`]: otherwise NaN, `+∞`, `−∞` and `None` would all share one entry, and
//!   a subscriber for one would read the data fetched for another.
//! * **Skipped fields.** The key is what the argument's [`Serialize`] writes: fields marked
//!   `#[serde(skip)]` or `skip_serializing` are not part of it (as RTK ignores properties that
//!   are `undefined`), so arguments differing only in them are one entry.
//! * **Missing versus null fields.** JavaScript drops object properties whose value is
//!   `undefined`; serde writes an `Option` field that is `None` as `null`. To get the JavaScript
//!   key of an object without that property, mark the field
//!   `#[serde(skip_serializing_if = "Option::is_none")]`.
//! * **Large integers.** JavaScript numbers are doubles, so an integer beyond ±2^53 would have been
//!   rounded there (and printed as, e.g., `18446744073709552000`). Here `i64`/`u64` values are
//!   written exactly, so distinct integers always give distinct keys. Integers that do not fit in
//!   `i64`/`u64` (e.g. a large `u128`) cannot be turned into JSON numbers at all and give
//!   [`KeyError::Unserializable`]; use [`BigInt`] for them.
//! * **Lone surrogates.** `JSON.stringify` escapes unpaired UTF-16 surrogates as `\udXXX`. A Rust
//!   string cannot hold one, so this case never arises.
//! * **Non-plain objects.** JavaScript writes `Date` as an ISO string and `Map`/`Set` as `{}`;
//!   in Rust the argument's [`Serialize`] implementation decides (a `HashMap` with string keys is an
//!   object with its entries, a `HashSet` is an array).
//! * **`__proto__` keys.** RTK rebuilds each object by assignment, so an own `"__proto__"` key
//!   (possible in parsed JSON) is lost there; here it is kept like any other key.
//! * **Floats parsed from JSON text.** Keys reproduce the exact `f64` they are given. serde_json
//!   without its `float_roundtrip` feature can parse a decimal literal to a neighbouring `f64`,
//!   whereas `JSON.parse` rounds correctly, so an argument parsed from the same text may then be
//!   written with different last digits.
//! * **Memoisation.** RTK caches the serialisation per object identity, so mutating an argument
//!   object after first use gives a stale key there. Keys here are always computed afresh.
//!
//! ```
//! use livecache::core::{CacheKey, default_key};
//! use serde::Serialize;
//!
//! #[derive(Serialize)]
//! struct Query {
//!     name: &'static str,
//!     age: u32,
//! }
//!
//! let key = default_key("test", &Query { name: "arg", age: 5 })?;
//! assert_eq!(key.as_str(), r#"test({"age":5,"name":"arg"})"#);
//! assert_eq!(default_key("a", &())?, CacheKey::verbatim("a(undefined)"));
//! # Ok::<(), livecache::core::KeyError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod canonical;
mod finite;

pub use canonical::canonical_json;
use canonical::write_canonical;

/// The text written for a top-level null argument, as RTK writes a top-level `undefined`.
const UNDEFINED: &str = "undefined";

/// The largest array index in JavaScript (`2^32 - 2`); such keys are enumerated first.
const MAX_ARRAY_INDEX: u64 = 4_294_967_294;

/// The cache key of one entry, such as `getUser(1)` or `list({"page":2})`.
///
/// Build it with [`default_key`], [`key_from_override`] or [`CacheKey::verbatim`]. It serialises
/// as a plain JSON string. A default key is made of what the argument's [`Serialize`] writes:
/// fields marked `#[serde(skip)]` are not part of it, and a non-finite float is refused
/// ([`KeyError::NonFinite`]).
///
/// ```
/// use livecache::core::{CacheKey, default_key};
///
/// let key = default_key("getUser", &1)?;
/// assert_eq!(key.as_str(), "getUser(1)");
/// assert_eq!(key.to_string(), "getUser(1)");
/// assert_eq!(serde_json::to_string(&key).unwrap(), r#""getUser(1)""#);
/// assert_eq!(String::from(key.clone()), "getUser(1)");
/// assert_eq!(key, CacheKey::verbatim("getUser(1)"));
/// # Ok::<(), livecache::core::KeyError>(())
/// ```
///
/// The text is shared (`Arc<str>`): the cache clones keys into its indexes, effects, timers and
/// trace, and a clone is a reference-count increment, not a copy. The key's hash is computed once,
/// when it is made (with a per-process random seed, so keys chosen by an attacker cannot be made
/// to collide), and every map lookup reuses it.
#[derive(Clone)]
pub struct CacheKey {
    text: Arc<str>,
    hash: u64,
}

impl Hash for CacheKey {
    /// Writes the precomputed hash of the text.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for CacheKey {
    /// Equal texts. Different hashes mean different texts; clones of one key share their text,
    /// which is checked next.
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for CacheKey {}

impl PartialOrd for CacheKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CacheKey {
    /// By text.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert!(CacheKey::verbatim("a(1)") < CacheKey::verbatim("a(2)"));
    /// ```
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl fmt::Debug for CacheKey {
    /// As a tuple of its text: `CacheKey("a(1)")`.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert_eq!(format!("{:?}", CacheKey::verbatim("a(1)")), r#"CacheKey("a(1)")"#);
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheKey").field(&&*self.text).finish()
    }
}

/// The hash of a key's text, seeded once per process.
fn text_hash(text: &str) -> u64 {
    static SEED: OnceLock<std::hash::RandomState> = OnceLock::new();
    SEED.get_or_init(std::hash::RandomState::new).hash_one(text)
}

impl From<Arc<str>> for CacheKey {
    /// A verbatim key sharing `text`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use livecache::core::CacheKey;
    /// let text: Arc<str> = Arc::from("x(1)");
    /// assert_eq!(CacheKey::from(text), "x(1)");
    /// ```
    fn from(text: Arc<str>) -> Self {
        CacheKey {
            hash: text_hash(&text),
            text,
        }
    }
}

impl Serialize for CacheKey {
    /// A plain JSON string.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    /// From a plain JSON string.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(CacheKey::from)
    }
}

impl CacheKey {
    /// A key that is exactly the given text, with no endpoint prefix and no serialisation.
    ///
    /// This is what an override returning a string produces ([`KeyOverride::Verbatim`]).
    ///
    /// ```
    /// use livecache::core::CacheKey;
    ///
    /// let key = CacheKey::verbatim("queryWithCustomSerializer-42");
    /// assert_eq!(key.as_str(), "queryWithCustomSerializer-42");
    /// ```
    pub fn verbatim(text: impl Into<String>) -> Self {
        Self::from(Arc::<str>::from(text.into()))
    }

    /// The key's text.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    ///
    /// assert_eq!(CacheKey::verbatim("a(undefined)").as_str(), "a(undefined)");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for CacheKey {
    /// Writes the key's text unchanged.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    ///
    /// assert_eq!(format!("{}", CacheKey::verbatim("x(1)")), "x(1)");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<CacheKey> for String {
    /// The key's text.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    ///
    /// let text: String = CacheKey::verbatim("x(1)").into();
    /// assert_eq!(text, "x(1)");
    /// ```
    fn from(key: CacheKey) -> Self {
        key.text.as_ref().to_owned()
    }
}

impl AsRef<str> for CacheKey {
    /// The key's text.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    ///
    /// let key = CacheKey::verbatim("x(1)");
    /// let text: &str = key.as_ref();
    /// assert_eq!(text, "x(1)");
    /// ```
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl From<&str> for CacheKey {
    /// A verbatim key ([`CacheKey::verbatim`]).
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert_eq!(CacheKey::from("x(1)"), CacheKey::verbatim("x(1)"));
    /// ```
    fn from(text: &str) -> Self {
        Self::from(Arc::<str>::from(text))
    }
}

impl From<String> for CacheKey {
    /// A verbatim key ([`CacheKey::verbatim`]).
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert_eq!(CacheKey::from(String::from("x(1)")), "x(1)");
    /// ```
    fn from(text: String) -> Self {
        Self::from(Arc::<str>::from(text))
    }
}

impl std::ops::Deref for CacheKey {
    type Target = str;

    /// The key's text, so `str`'s methods apply.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert!(CacheKey::verbatim("getUser(1)").starts_with("getUser("));
    /// ```
    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for CacheKey {
    /// The key's text equals `other`.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert!(*CacheKey::verbatim("x(1)") == *"x(1)");
    /// ```
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for CacheKey {
    /// The key's text equals `other`.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert_eq!(CacheKey::verbatim("x(1)"), "x(1)");
    /// ```
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl PartialEq<String> for CacheKey {
    /// The key's text equals `other`.
    ///
    /// ```
    /// use livecache::core::CacheKey;
    /// assert_eq!(CacheKey::verbatim("x(1)"), String::from("x(1)"));
    /// ```
    fn eq(&self, other: &String) -> bool {
        *self.text == **other
    }
}

/// Why a cache key could not be computed.
///
/// ```
/// use std::collections::HashMap;
/// use livecache::core::{KeyError, default_key};
///
/// let arg: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
/// let err = default_key("grid", &arg).unwrap_err();
/// assert!(matches!(err, KeyError::Unserializable { ref endpoint, .. } if endpoint == "grid"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The argument cannot be turned into JSON: its [`Serialize`] implementation failed, or it
    /// produced something JSON cannot hold (a map whose keys are not strings or numbers, an
    /// integer beyond the `i64`/`u64` range, …).
    #[error("cannot serialise the argument of endpoint `{endpoint}` into a cache key: {message}")]
    Unserializable {
        /// The endpoint whose key was being computed.
        endpoint: String,
        /// serde_json's description of the failure.
        message: String,
    },
    /// The argument holds a float that is not finite (NaN, +∞ or −∞), anywhere in it. JSON has no
    /// such number: it would be written `null`, so NaN, ±∞ and `None` would all get one key and
    /// share one entry's data. The key is refused instead.
    ///
    /// ```
    /// use livecache::core::{KeyError, default_key};
    ///
    /// let err = default_key("near", &(1.0, f64::NAN)).unwrap_err();
    /// assert!(matches!(err, KeyError::NonFinite { ref path, ref value, .. } if path == "/1" && value == "NaN"));
    /// assert_eq!(
    ///     err.to_string(),
    ///     "the argument of endpoint `near` holds the non-finite number NaN at /1: a cache key \
    ///      cannot hold one (JSON would write it as null, the key of None)"
    /// );
    /// ```
    #[error(
        "the argument of endpoint `{endpoint}` holds the non-finite number {value} at {}: a cache \
         key cannot hold one (JSON would write it as null, the key of None)",
        place(.path)
    )]
    NonFinite {
        /// The endpoint whose key was being computed.
        endpoint: String,
        /// Where the number is, as a JSON Pointer (RFC 6901) into the argument's JSON: empty for
        /// the argument itself, `/filter/min` for field `min` of field `filter`, `/2` for the
        /// third item of a sequence.
        path: String,
        /// The number as Rust writes it: `NaN`, `inf` or `-inf`.
        value: String,
    },
}

/// Where a [`KeyError::NonFinite`] is, in words.
fn place(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

/// What an endpoint's key override returns, mirroring RTK's per-endpoint `serializeQueryArgs`.
///
/// ```
/// use livecache::core::{KeyOverride, key_from_override};
/// use serde_json::json;
///
/// let verbatim = KeyOverride::Verbatim("queryWithCustomSerializer-42".into());
/// assert_eq!(key_from_override("ignored", verbatim).as_str(), "queryWithCustomSerializer-42");
///
/// let value = KeyOverride::Value(json!({ "id": 42 }));
/// assert_eq!(
///     key_from_override("queryWithCustomObjectSerializer", value).as_str(),
///     r#"queryWithCustomObjectSerializer({"id":42})"#,
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum KeyOverride {
    /// The key itself, used verbatim: no endpoint prefix, no serialisation.
    Verbatim(String),
    /// A value to serialise the default way, with the endpoint prefix. A `Value::String` here is
    /// serialised (quoted) like any other value; use [`KeyOverride::Verbatim`] for a raw key.
    Value(Value),
}

/// The key an endpoint override produces (see [`KeyOverride`]).
///
/// ```
/// use livecache::core::{KeyOverride, key_from_override};
/// use serde_json::json;
///
/// let key = key_from_override("queryWithCustomNumberSerializer", KeyOverride::Value(json!(42)));
/// assert_eq!(key.as_str(), "queryWithCustomNumberSerializer(42)");
/// let key = key_from_override("none", KeyOverride::Value(json!(null)));
/// assert_eq!(key.as_str(), "none(undefined)");
/// ```
pub fn key_from_override(endpoint: &str, o: KeyOverride) -> CacheKey {
    match o {
        KeyOverride::Verbatim(text) => CacheKey::from(text),
        KeyOverride::Value(value) => key_from_value(endpoint, &value),
    }
}

/// The default cache key of `arg` for `endpoint`: `endpoint(<canonical JSON>)`, or
/// `endpoint(undefined)` when the argument serialises to a top-level null.
///
/// The key is what the argument's [`Serialize`] implementation writes, and nothing else: a field
/// marked `#[serde(skip)]` (or `skip_serializing`, or skipped by `skip_serializing_if`) is not
/// part of the key, so two arguments that differ only in such fields are one entry and share its
/// data.
///
/// # Errors
///
/// [`KeyError::Unserializable`] when `arg` cannot be turned into a [`serde_json::Value`];
/// [`KeyError::NonFinite`] when it holds a NaN or an infinite float anywhere (nested too), which
/// JSON would write as `null` and so key like `None`.
///
/// ```
/// use livecache::core::{BigInt, default_key};
///
/// assert_eq!(default_key("test", "arg")?.as_str(), r#"test("arg")"#);
/// assert_eq!(default_key("test", &5)?.as_str(), "test(5)");
/// assert_eq!(default_key("test", &5.0)?.as_str(), "test(5)");
/// assert_eq!(default_key("test", &BigInt(10))?.as_str(), r#"test({"$bigint":"10"})"#);
/// assert_eq!(default_key("a", &None::<u8>)?.as_str(), "a(undefined)");
/// assert_eq!(default_key("a", &[Some(1), None])?.as_str(), "a([1,null])");
/// assert!(default_key("a", &f64::INFINITY).is_err());
///
/// #[derive(serde::Serialize)]
/// struct Page { n: u32, #[serde(skip)] _trace_id: u64 }
/// // Skipped fields are not part of the key: these are one entry.
/// assert_eq!(default_key("p", &Page { n: 1, _trace_id: 7 })?, default_key("p", &Page { n: 1, _trace_id: 8 })?);
/// # Ok::<(), livecache::core::KeyError>(())
/// ```
pub fn default_key<A>(endpoint: &str, arg: &A) -> Result<CacheKey, KeyError>
where
    A: Serialize + ?Sized,
{
    let value = serde_json::to_value(arg).map_err(|err| KeyError::Unserializable {
        endpoint: endpoint.to_owned(),
        message: err.to_string(),
    })?;
    let (key, has_null) = key_and_nulls(endpoint, &value);
    // serde_json writes a non-finite float as `null`: only an argument whose JSON holds a null
    // can hold one, so only such an argument is walked again to find it.
    if has_null && let Some(found) = finite::non_finite(arg) {
        return Err(KeyError::NonFinite {
            endpoint: endpoint.to_owned(),
            path: found.path,
            value: found.value,
        });
    }
    Ok(key)
}

/// `endpoint(<canonical JSON>)`, with `undefined` for a top-level null.
fn key_from_value(endpoint: &str, value: &Value) -> CacheKey {
    key_and_nulls(endpoint, value).0
}

/// The key of `value` for `endpoint`, and whether the value holds a `null` anywhere.
fn key_and_nulls(endpoint: &str, value: &Value) -> (CacheKey, bool) {
    let mut text = String::with_capacity(endpoint.len() + 2);
    text.push_str(endpoint);
    text.push('(');
    let has_null = if value.is_null() {
        text.push_str(UNDEFINED);
        true
    } else {
        write_canonical(value, &mut text)
    };
    text.push(')');
    (CacheKey::from(text), has_null)
}

/// A JavaScript `bigint` argument: serialises as `{"$bigint":"<decimal>"}`, like RTK's replacer.
///
/// It may appear anywhere in an argument; it also deserialises from that form.
///
/// ```
/// use livecache::core::{BigInt, default_key};
///
/// assert_eq!(default_key("test", &BigInt(10))?.as_str(), r#"test({"$bigint":"10"})"#);
/// assert_eq!(serde_json::to_string(&BigInt(-7)).unwrap(), r#"{"$bigint":"-7"}"#);
/// let back: BigInt = serde_json::from_str(r#"{"$bigint":"-7"}"#).unwrap();
/// assert_eq!(back, BigInt(-7));
/// # Ok::<(), livecache::core::KeyError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BigInt(
    /// The value.
    pub i128,
);

/// The field name RTK's replacer uses for a `bigint`.
const BIGINT_FIELD: &str = "$bigint";

impl Serialize for BigInt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(BIGINT_FIELD, &self.0.to_string())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for BigInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repr {
            #[serde(rename = "$bigint")]
            digits: String,
        }
        let repr = Repr::deserialize(deserializer)?;
        repr.digits.parse::<i128>().map(BigInt).map_err(|err| {
            D::Error::custom(format_args!("invalid $bigint {:?}: {err}", repr.digits))
        })
    }
}

impl From<i128> for BigInt {
    /// Wraps the integer.
    ///
    /// ```
    /// use livecache::core::BigInt;
    ///
    /// assert_eq!(BigInt::from(10_i128), BigInt(10));
    /// ```
    fn from(value: i128) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;
    use serde_json::json;

    use super::canonical::write_f64;
    use super::*;

    #[test]
    fn a_big_int_from_i128_keeps_its_value() {
        assert_eq!(BigInt::from(-7_i128).0, -7);
    }

    #[test]
    fn debug_shows_the_key_text() {
        assert_eq!(
            format!("{:?}", CacheKey::verbatim("a(1)")),
            r#"CacheKey("a(1)")"#
        );
    }

    fn key(endpoint: &str, arg: &(impl Serialize + ?Sized)) -> String {
        default_key(endpoint, arg).unwrap().as_str().to_owned()
    }

    // Pinned examples from RTK Query's own key serialiser (RTK tests #94, #95 and others).

    #[test]
    fn string_arg() {
        assert_eq!(key("test", "arg"), r#"test("arg")"#);
        assert_eq!(key("test", &String::from("arg")), r#"test("arg")"#);
    }

    #[test]
    fn number_arg() {
        assert_eq!(key("test", &5), "test(5)");
        assert_eq!(key("test", &5_u64), "test(5)");
    }

    #[test]
    fn bigint_arg() {
        assert_eq!(key("test", &BigInt(10)), r#"test({"$bigint":"10"})"#);
        assert_eq!(
            key(
                "test",
                &json!({ "n": BigInt(-3), "a": [BigInt(i128::MAX)] })
            ),
            format!(
                r#"test({{"a":[{{"$bigint":"{}"}}],"n":{{"$bigint":"-3"}}}})"#,
                i128::MAX
            )
        );
    }

    #[derive(Serialize)]
    struct Simple {
        name: &'static str,
        age: u32,
    }

    #[test]
    fn simple_object_arg_is_sorted() {
        assert_eq!(
            key(
                "test",
                &Simple {
                    name: "arg",
                    age: 5
                }
            ),
            r#"test({"age":5,"name":"arg"})"#
        );
    }

    #[derive(Serialize)]
    struct FullName {
        last: &'static str,
        first: &'static str,
    }

    #[derive(Serialize)]
    struct Nested {
        name: FullName,
        age: u32,
    }

    #[test]
    fn nested_object_arg_is_sorted_recursively() {
        let arg = Nested {
            name: FullName {
                last: "Split",
                first: "Banana",
            },
            age: 5,
        };
        assert_eq!(
            key("test", &arg),
            r#"test({"age":5,"name":{"first":"Banana","last":"Split"}})"#
        );
    }

    #[test]
    fn deeply_nested_object_is_fully_sorted() {
        let arg = json!({
            "a": { "a1": { "a11": { "a111": 1 } } },
            "b": { "b2": { "b21": 3 }, "b1": { "b11": 2 } },
        });
        assert_eq!(
            key("test", &arg),
            r#"test({"a":{"a1":{"a11":{"a111":1}}},"b":{"b1":{"b11":2},"b2":{"b21":3}}})"#
        );
    }

    #[test]
    fn endpoint_string_serializer_is_verbatim() {
        let o = KeyOverride::Verbatim(format!("queryWithCustomSerializer-{}", 42));
        assert_eq!(
            key_from_override("queryWithCustomSerializer", o).as_str(),
            "queryWithCustomSerializer-42"
        );
        // A global serializer's result is also used verbatim.
        let o = KeyOverride::Verbatim("base-queryWithNoSerializer-99".into());
        assert_eq!(
            key_from_override("queryWithNoSerializer", o).as_str(),
            "base-queryWithNoSerializer-99"
        );
    }

    #[test]
    fn endpoint_object_serializer_gets_prefix() {
        let o = KeyOverride::Value(json!({ "id": 42 }));
        assert_eq!(
            key_from_override("queryWithCustomObjectSerializer", o).as_str(),
            r#"queryWithCustomObjectSerializer({"id":42})"#
        );
    }

    #[test]
    fn endpoint_number_serializer_gets_prefix() {
        let o = KeyOverride::Value(json!(42));
        assert_eq!(
            key_from_override("queryWithCustomNumberSerializer", o).as_str(),
            "queryWithCustomNumberSerializer(42)"
        );
    }

    #[test]
    fn value_override_string_is_quoted() {
        let o = KeyOverride::Value(json!("x"));
        assert_eq!(key_from_override("e", o).as_str(), r#"e("x")"#);
    }

    #[test]
    fn other_keys_seen_in_rtk_tests() {
        assert_eq!(key("getUser", &1), "getUser(1)");
        assert_eq!(key("a", &()), "a(undefined)");
        assert_eq!(key("a", &None::<u8>), "a(undefined)");
        assert_eq!(key("increment", &()), "increment(undefined)");
        assert_eq!(key("postWithSideEffect", "1"), r#"postWithSideEffect("1")"#);
    }

    // Further rules.

    #[test]
    fn nested_nulls_stay_null() {
        assert_eq!(key("a", &Some(None::<u8>)), "a(undefined)");
        assert_eq!(key("a", &[None::<u8>]), "a([null])");
        assert_eq!(key("a", &json!({ "x": null })), r#"a({"x":null})"#);
        assert_eq!(
            key_from_override("a", KeyOverride::Value(Value::Null)).as_str(),
            "a(undefined)"
        );
    }

    #[test]
    fn key_order_permutation_gives_same_key() {
        let one = json!({ "b": 1, "a": { "d": [1, 2], "c": true }, "c": "x" });
        let mut other = serde_json::Map::new();
        other.insert("c".into(), json!("x"));
        other.insert("a".into(), json!({ "c": true, "d": [1, 2] }));
        other.insert("b".into(), json!(1));
        let mut hashed = HashMap::new();
        hashed.insert("c", json!("x"));
        hashed.insert("b", json!(1));
        hashed.insert("a", json!({ "d": [1, 2], "c": true }));
        let expected = r#"e({"a":{"c":true,"d":[1,2]},"b":1,"c":"x"})"#;
        assert_eq!(key("e", &one), expected);
        assert_eq!(key("e", &Value::Object(other)), expected);
        assert_eq!(key("e", &hashed), expected);
    }

    #[test]
    fn keys_sort_by_utf16_not_bytes() {
        // In bytes (and code points) U+E000 < U+10000; in UTF-16 0xD800 (lead surrogate) < 0xE000.
        let arg = BTreeMap::from([("\u{E000}", 1), ("\u{10000}", 2)]);
        assert_eq!(key("e", &arg), "e({\"\u{10000}\":2,\"\u{E000}\":1})");
        assert_eq!(
            canonical_json(&json!({ "\u{FFFF}": 0, "\u{1F600}": 1, "z": 2 })),
            "{\"z\":2,\"\u{1F600}\":1,\"\u{FFFF}\":0}"
        );
    }

    #[test]
    fn array_index_keys_come_first_numerically() {
        // `+5` parses as a number in Rust, but is no array index in JavaScript.
        let arg = json!({ "b": 1, "10": 2, "9": 3, "01": 4, "-1": 5, "4294967295": 6,
                          "4294967294": 7, "": 8, "0": 9, "+5": 10 });
        assert_eq!(
            canonical_json(&arg),
            r#"{"0":9,"9":3,"10":2,"4294967294":7,"":8,"+5":10,"-1":5,"01":4,"4294967295":6,"b":1}"#
        );
        // Integer map keys become strings and are ordered like JavaScript's.
        let arg = BTreeMap::from([(10_u32, "a"), (9, "b"), (100, "c")]);
        assert_eq!(key("m", &arg), r#"m({"9":"b","10":"a","100":"c"})"#);
    }

    #[test]
    fn arrays_keep_order() {
        assert_eq!(key("e", &[3, 1, 2]), "e([3,1,2])");
        assert_eq!(
            key("e", &json!([{ "b": 1, "a": 2 }, "z", "a"])),
            r#"e([{"a":2,"b":1},"z","a"])"#
        );
        assert_eq!(key("e", &Vec::<u8>::new()), "e([])");
        assert_eq!(key("e", &json!({})), "e({})");
    }

    #[test]
    fn integral_floats_print_without_fraction() {
        assert_eq!(key("e", &5.0), "e(5)");
        assert_eq!(key("e", &-5.0_f32), "e(-5)");
        assert_eq!(key("e", &-0.0), "e(0)");
        assert_eq!(
            key("e", &json!([1.0, 2.5, 1e20])),
            "e([1,2.5,100000000000000000000])"
        );
    }

    #[test]
    fn floats_follow_number_to_string() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123.456, "123.456"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1.25e-6, "0.00000125"),
            (1e-7, "1e-7"),
            (1.23e-18, "1.23e-18"),
            (-2.5e-7, "-2.5e-7"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (9007199254740993.0, "9007199254740992"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (f, expected) in cases {
            let mut out = String::new();
            write_f64(*f, &mut out);
            assert_eq!(&out, expected, "{f:e}");
        }
        let mut out = String::new();
        write_f64(f64::NAN, &mut out);
        assert_eq!(out, "null");
    }

    fn non_finite(endpoint: &str, arg: &(impl Serialize + ?Sized)) -> (String, String) {
        match default_key(endpoint, arg) {
            Err(KeyError::NonFinite {
                endpoint: e,
                path,
                value,
            }) => {
                assert_eq!(e, endpoint);
                (path, value)
            }
            other => panic!("{endpoint}: expected NonFinite, got {other:?}"),
        }
    }

    #[derive(Serialize)]
    struct Range {
        min: f64,
        max: Option<f32>,
    }

    #[derive(Serialize)]
    enum Filter {
        Near(f64),
        Between(u8, f64),
        Within { range: Range },
    }

    #[derive(Serialize)]
    struct Search {
        text: &'static str,
        filters: Vec<Filter>,
        #[serde(skip)]
        _skipped: f64,
    }

    #[test]
    fn hardening_10_non_finite_floats_refused_anywhere_none_and_finite_unchanged() {
        // Top level: NaN, +inf, -inf, as f64 and f32, bare or in an Option; all refused rather
        // than keyed `name(undefined)` like None.
        for (arg, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(non_finite("e", &arg), (String::new(), text.to_owned()));
            assert_eq!(
                non_finite("e", &Some(arg)),
                (String::new(), text.to_owned())
            );
            #[allow(clippy::cast_possible_truncation)]
            let narrow = arg as f32;
            assert_eq!(non_finite("e", &narrow), (String::new(), text.to_owned()));
        }
        // Nested: sequences, tuples, maps, struct fields, every kind of enum variant.
        assert_eq!(non_finite("e", &[1.0, 2.0, f64::NAN]).0, "/2");
        assert_eq!(non_finite("e", &(1, (2.5, f64::INFINITY))).0, "/1/1");
        let map = BTreeMap::from([("a/b~", vec![0.5]), ("c", vec![0.0, f64::NEG_INFINITY])]);
        assert_eq!(non_finite("e", &map).0, "/c/1");
        let range = Range {
            min: 1.0,
            max: Some(f32::NAN),
        };
        assert_eq!(non_finite("e", &range).0, "/max");
        let search = |filter: Filter| Search {
            text: "q",
            filters: vec![Filter::Near(1.0), filter],
            _skipped: 0.0,
        };
        assert_eq!(
            non_finite("s", &search(Filter::Near(f64::NAN))).0,
            "/filters/1/Near"
        );
        assert_eq!(
            non_finite("s", &search(Filter::Between(1, f64::INFINITY))).0,
            "/filters/1/Between/1"
        );
        let within = Filter::Within {
            range: Range {
                min: f64::NEG_INFINITY,
                max: None,
            },
        };
        assert_eq!(
            non_finite("s", &search(within)),
            ("/filters/1/Within/range/min".to_owned(), "-inf".to_owned())
        );
        // A map key with `/` and `~` is escaped as a JSON Pointer.
        let map = BTreeMap::from([("a/b~", f64::NAN)]);
        assert_eq!(non_finite("e", &map).0, "/a~1b~0");
        // The error says where and what.
        let err = default_key("s", &search(Filter::Near(f64::NAN))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the argument of endpoint `s` holds the non-finite number NaN at /filters/1/Near: a \
             cache key cannot hold one (JSON would write it as null, the key of None)"
        );
        assert!(
            default_key("e", &f64::NAN)
                .unwrap_err()
                .to_string()
                .contains("at the top level")
        );

        // None still keys as `name(undefined)`, nested None as null, next to finite floats.
        assert_eq!(key("e", &None::<f64>), "e(undefined)");
        assert_eq!(key("e", &[None, Some(1.5)]), "e([null,1.5])");
        assert_eq!(
            key(
                "e",
                &Range {
                    min: -0.0,
                    max: None
                }
            ),
            r#"e({"max":null,"min":0})"#
        );
        // Finite floats are written as before, extremes included.
        assert_eq!(key("e", &f64::MAX), "e(1.7976931348623157e+308)");
        assert_eq!(key("e", &f64::MIN_POSITIVE), "e(2.2250738585072014e-308)");
        assert_eq!(key("e", &[0.1, 5.0, 1e21]), "e([0.1,5,1e+21])");
        assert_eq!(
            key("s", &search(Filter::Between(2, 0.5))),
            r#"s({"filters":[{"Near":1},{"Between":[2,0.5]}],"text":"q"})"#
        );
        // A skipped field is not part of the key, even when it is not finite.
        let mut skipped = search(Filter::Near(2.0));
        skipped._skipped = f64::NAN;
        assert_eq!(key("s", &skipped), key("s", &search(Filter::Near(2.0))));
    }

    #[test]
    fn large_integers_are_exact() {
        assert_eq!(key("e", &u64::MAX), "e(18446744073709551615)");
        assert_eq!(key("e", &i64::MIN), "e(-9223372036854775808)");
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        assert_eq!(
            canonical_json(&json!(
                "a\"b\\c/d\u{8}\u{c}\n\r\t\u{1}\u{1f} \u{7f}\u{2028}é😀"
            )),
            "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f \u{7f}\u{2028}é😀\""
        );
        assert_eq!(canonical_json(&json!({ "k\"\n": 1 })), r#"{"k\"\n":1}"#);
    }

    #[test]
    fn unserialisable_arg_is_an_error() {
        let arg: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        let err = default_key("grid", &arg).unwrap_err();
        let KeyError::Unserializable { endpoint, message } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(endpoint, "grid");
        assert!(!message.is_empty());
        assert!(err.to_string().contains("grid"));
        assert!(default_key("big", &u128::MAX).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let depth = 100_000;
        let mut value = Value::Null;
        for _ in 0..depth {
            value = Value::Array(vec![value]);
        }
        let text = canonical_json(&value);
        assert_eq!(text.len(), 2 * depth + 4);
        // Dismantle iteratively: dropping a deeply nested Value recursively could overflow.
        let mut current = value;
        while let Value::Array(mut items) = current {
            current = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn bigint_round_trips_and_rejects_junk() {
        let text = serde_json::to_string(&BigInt(i128::MIN)).unwrap();
        assert_eq!(
            serde_json::from_str::<BigInt>(&text).unwrap(),
            BigInt(i128::MIN)
        );
        assert!(serde_json::from_str::<BigInt>(r#"{"$bigint":"1.5"}"#).is_err());
        assert!(serde_json::from_str::<BigInt>(r#"{"$bigint":"1","x":2}"#).is_err());
    }

    #[test]
    fn cache_key_traits() {
        let k = CacheKey::verbatim("x(1)");
        assert_eq!(serde_json::to_string(&k).unwrap(), r#""x(1)""#);
        assert_eq!(serde_json::from_str::<CacheKey>(r#""x(1)""#).unwrap(), k);
        assert!(CacheKey::verbatim("a") < CacheKey::verbatim("b"));
        assert_eq!(String::from(k.clone()), "x(1)");
        assert_eq!(k.to_string(), "x(1)");
    }
}
