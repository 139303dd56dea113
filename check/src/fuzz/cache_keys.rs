//! `cache_keys`: `default_key` on arbitrary JSON arguments.
//!
//! What the key rules identify on purpose (and so what "distinct arguments" excludes):
//!
//! - a top-level null and an absent argument (`None`, `()`): both `name(undefined)`;
//! - numbers that are written alike: an integer is written exactly; a float is written with the
//!   shortest digits that read back to it (`Number::toString`), so it stands for the decimal
//!   those digits denote. `1`, `1.0` and `1e0` are all `1`, `-0.0` is `0`, and the float `2^63`
//!   is `9223372036854776000` — the same key as that integer, while the integer
//!   `9223372036854775808` (exactly `2^63`) keeps its own key (integers are exact, see the key
//!   module's "Large integers");
//! - object key order (the point of the canonical form).
//!
//! Everything else distinct must give distinct keys.

use std::cmp::Ordering;

use arbitrary::{Result, Unstructured};
use livecache::core::{KeyOverride, canonical_json, default_key, key_from_override};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};

use super::json;

/// Whether two arguments must share a key: equal up to the identifications listed in the module
/// docs (top-level null ≡ absent is handled by the caller).
fn same_arg(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_arg(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_arg(v, w)))
        }
        _ => false,
    }
}

/// A JSON number's exact value.
enum Exact {
    Int(i128),
    Float(f64),
}

fn exact(n: &Number) -> Exact {
    if let Some(u) = n.as_u64() {
        Exact::Int(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        Exact::Int(i128::from(i))
    } else {
        Exact::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// A number as the decimal its key text denotes: sign, significant digits (no leading or
/// trailing zeros) and the power of ten of the last digit. Zero (and `-0.0`) is
/// `(false, "", 0)`. A float's digits are Rust's shortest round-trip digits (`{:e}`).
fn decimal(n: &Number) -> (bool, String, i64) {
    let (negative, digits, exponent) = match exact(n) {
        Exact::Int(i) => (i < 0, i.unsigned_abs().to_string(), 0),
        Exact::Float(f) => {
            let sci = format!("{:e}", f.abs());
            let (mantissa, e) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let e: i64 = e.parse().unwrap_or(0);
            let last = e - (digits.len() as i64 - 1);
            (f.is_sign_negative(), digits, last)
        }
    };
    let trimmed_end = digits.trim_end_matches('0');
    let exponent = exponent + (digits.len() - trimmed_end.len()) as i64;
    let significant = trimmed_end.trim_start_matches('0');
    if significant.is_empty() {
        (false, String::new(), 0)
    } else {
        (negative, significant.to_owned(), exponent)
    }
}

/// Whether two JSON numbers are written alike by the key rules (see the module docs).
fn same_number(a: &Number, b: &Number) -> bool {
    decimal(a) == decimal(b)
}

/// A cheap deterministic hash for shuffling.
fn mix(seed: u64, text: &str) -> u64 {
    text.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b))
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(5)
    })
}

/// The members of an object in an order chosen by `seed` (a different one at every node).
fn shuffled(map: &Map<String, Value>, seed: u64) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| match mix(seed, a.0).cmp(&mix(seed, b.0)) {
        Ordering::Equal => a.0.cmp(b.0),
        other => other,
    });
    entries
}

/// Serialises a value with every object's members in a shuffled order: the argument a caller
/// with another map type (insertion-ordered, hashed) would hand to `default_key`.
struct Shuffled<'a> {
    value: &'a Value,
    seed: u64,
}

impl Serialize for Shuffled<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self.value {
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for (i, item) in items.iter().enumerate() {
                    seq.serialize_element(&Shuffled {
                        value: item,
                        seed: self.seed.wrapping_add(i as u64 + 1),
                    })?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, item) in shuffled(map, self.seed) {
                    out.serialize_entry(
                        key,
                        &Shuffled {
                            value: item,
                            seed: mix(self.seed, key),
                        },
                    )?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// The same value rebuilt with every object's members inserted in a shuffled order.
fn rebuilt(value: &Value, seed: u64) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| rebuilt(item, seed.wrapping_add(i as u64 + 1)))
                .collect(),
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in shuffled(map, seed) {
                out.insert(key.clone(), rebuilt(item, mix(seed, key)));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// How many representable `f64`s apart two finite floats are.
fn ulps(x: f64, y: f64) -> u64 {
    // Map the floats onto a line of integers where neighbours differ by one (-0.0 = 0.0).
    let line = |f: f64| {
        let bits = f.to_bits() as i64;
        if bits < 0 { i64::MIN - bits } else { bits }
    };
    line(x).abs_diff(line(y))
}

/// Like [`same_arg`], but floats only need to agree to within a few units in the last place:
/// serde_json (without `float_roundtrip`) may parse a decimal to a neighbouring `f64`
/// (subnormals included). Exactness is checked on its own by [`numbers_round_trip`].
fn close_arg(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            same_number(x, y)
                || match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => ulps(x, y) <= 4,
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close_arg(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| close_arg(v, w)))
        }
        _ => same_arg(a, b),
    }
}

/// Every number of a value, each written alone, must read back exactly with Rust's correctly
/// rounded parser (`Number::toString` gives digits that round-trip).
fn numbers_round_trip(v: &Value) {
    match v {
        Value::Number(n) => {
            let text = canonical_json(v);
            let ok = match exact(n) {
                Exact::Int(i) => text.parse::<i128>() == Ok(i),
                Exact::Float(f) => text.parse::<f64>() == Ok(f),
            };
            assert!(
                ok,
                "number {n} written as {text}, which reads back differently"
            );
        }
        Value::Array(items) => items.iter().for_each(numbers_round_trip),
        Value::Object(map) => map.values().for_each(numbers_round_trip),
        _ => {}
    }
}

/// The key of an argument that may be absent.
fn key_of(arg: &Option<Value>) -> String {
    match default_key("e", arg) {
        Ok(key) => key.as_str().to_owned(),
        Err(e) => panic!("a JSON value always has a key: {e}\narg: {arg:?}"),
    }
}

/// Whether two possibly absent arguments must share a key (absent ≡ top-level null).
fn same_top(a: &Option<Value>, b: &Option<Value>) -> bool {
    let null = Value::Null;
    same_arg(a.as_ref().unwrap_or(&null), b.as_ref().unwrap_or(&null))
}

/// An argument: usually a value, sometimes absent.
fn argument(u: &mut Unstructured<'_>) -> Result<Option<Value>> {
    if u.ratio(1, 16)? {
        Ok(None)
    } else {
        Ok(Some(json::value(u, 0)?))
    }
}

/// The fuzz body: for an arbitrary argument `a`, the key is deterministic, agrees with the
/// override path, ignores object member order (serialised shuffled, and rebuilt shuffled), and
/// its canonical JSON is valid JSON that reads back to the argument; for a second argument `b`
/// (often an edit of `a`, sometimes a respelling of the same numbers), the keys are equal
/// exactly when the arguments are the same argument.
///
/// # Panics
///
/// On any violated property: that is the finding.
pub fn cache_keys(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let a = argument(u)?;
    let key = key_of(&a);
    assert_eq!(key, key_of(&a.clone()), "equal arguments, different keys");
    let value = a.clone().unwrap_or(Value::Null);
    assert_eq!(
        key_from_override("e", KeyOverride::Value(value.clone())).as_str(),
        key,
        "the override path disagrees"
    );

    // Object member order never matters.
    let seed: u64 = u.arbitrary()?;
    let shuffled_key = default_key(
        "e",
        &Shuffled {
            value: &value,
            seed,
        },
    )
    .map(|k| k.as_str().to_owned());
    assert_eq!(
        shuffled_key.as_deref(),
        Ok(key.as_str()),
        "members serialised in another order"
    );
    assert_eq!(
        key_of(&Some(rebuilt(&value, seed))),
        key,
        "members inserted in another order"
    );

    // The canonical text is JSON and means the argument.
    let text = canonical_json(&value);
    match serde_json::from_str::<Value>(&text) {
        Ok(back) => assert!(
            close_arg(&back, &value),
            "canonical JSON {text} reads back as {back}"
        ),
        Err(e) => panic!("canonical JSON is not JSON: {e}\n{text}"),
    }
    numbers_round_trip(&value);
    if a.is_some() {
        let inner = key
            .strip_prefix("e(")
            .and_then(|k| k.strip_suffix(')'))
            .unwrap_or_default();
        if value.is_null() {
            assert_eq!(inner, "undefined");
        } else {
            assert_eq!(
                inner, text,
                "the key is the endpoint and the canonical JSON"
            );
        }
    }

    // Distinct arguments, distinct keys; the same argument, the same key.
    let b = match u.choose_index(3)? {
        0 => argument(u)?,
        _ => {
            let mut b = value.clone();
            for _ in 0..u.int_in_range(1..=2)? {
                json::mutate(u, &mut b, 0)?;
            }
            Some(b)
        }
    };
    let key_b = key_of(&b);
    if same_top(&a, &b) {
        assert_eq!(
            key, key_b,
            "the same argument, different keys\na: {a:?}\nb: {b:?}"
        );
    } else {
        assert_ne!(
            key, key_b,
            "distinct arguments, one key\na: {a:?}\nb: {b:?}"
        );
    }
    Ok(())
}
