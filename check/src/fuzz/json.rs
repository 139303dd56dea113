//! Arbitrary JSON values for the fuzz bodies: small, bounded in depth and width, biased toward
//! the cases that matter for keys and patches (awkward object keys, integral floats, numbers at
//! the edges of `i64`/`u64`/`f64`, strings that need escaping).

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// How deep a generated value may nest (recursive algorithms downstream stay far from the stack
/// limit; depth is not what these targets are about).
pub const MAX_DEPTH: u32 = 6;

/// How many items an array or object may have.
const MAX_WIDTH: usize = 5;

/// Object keys that are hard for JSON Pointer (`~`, `/`, empty), for JavaScript's key order
/// (array indices, near-indices) and for UTF-16 order (astral vs. private-use characters).
const KEYS: &[&str] = &[
    "",
    "a",
    "b",
    "0",
    "1",
    "9",
    "10",
    "01",
    "-1",
    "-",
    "4294967294",
    "4294967295",
    "/",
    "~",
    "~0",
    "~1",
    "a/b",
    "a~b",
    "$bigint",
    "\u{e000}",
    "\u{10000}",
    "\u{ffff}",
    "é",
    "\"",
    "\\",
    "\n",
    "\u{1}",
];

/// Floats where `Number::toString`, integer/float identity or rounding are delicate.
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.5,
    1.0,
    -1.0,
    0.1,
    1.5,
    1e21,
    1e20,
    1e-6,
    1e-7,
    1.25e-6,
    5e-324,
    f64::MAX,
    f64::MIN_POSITIVE,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    18_446_744_073_709_551_616.0,
    -9_223_372_036_854_775_808.0,
    123_456_789_012_345_680_000.0,
];

/// Integers at the edges of the JSON number representations.
const INTS: &[i128] = &[
    0,
    1,
    -1,
    9,
    10,
    255,
    256,
    9_007_199_254_740_992,
    9_007_199_254_740_993,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
];

/// A short string: from the key vocabulary or arbitrary.
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(KEYS)?).to_owned())
    } else {
        let s: String = u.arbitrary()?;
        Ok(s.chars().take(8).collect())
    }
}

/// A number: small or edge integers, arbitrary `i64`/`u64`, vocabulary or arbitrary finite
/// floats.
pub fn number(u: &mut Unstructured<'_>) -> Result<Number> {
    let n = match u.choose_index(6)? {
        0 => Number::from(u.int_in_range(0u8..=12)?),
        1 => int(*u.choose(INTS)?),
        2 => Number::from(u.arbitrary::<i64>()?),
        3 => Number::from(u.arbitrary::<u64>()?),
        4 => float(*u.choose(FLOATS)?),
        _ => float(u.arbitrary::<f64>()?),
    };
    Ok(n)
}

/// A JSON number for an integer in the `i64`/`u64` range.
fn int(i: i128) -> Number {
    if let Ok(u) = u64::try_from(i) {
        Number::from(u)
    } else if let Ok(s) = i64::try_from(i) {
        Number::from(s)
    } else {
        Number::from(0)
    }
}

/// A JSON float (non-finite floats are not JSON numbers: they become 0).
fn float(f: f64) -> Number {
    Number::from_f64(f).unwrap_or_else(|| Number::from(0))
}

/// An arbitrary JSON value nested at most `MAX_DEPTH - depth` deep.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth >= MAX_DEPTH { 4 } else { 6 };
    let v = match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(number(u)?),
        3 => Value::String(string(u)?),
        4 => {
            let n = u.int_in_range(0..=MAX_WIDTH)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let n = u.int_in_range(0..=MAX_WIDTH)?;
            let mut map = Map::new();
            for _ in 0..n {
                let key = string(u)?;
                let item = value(u, depth + 1)?;
                map.insert(key, item);
            }
            Value::Object(map)
        }
    };
    Ok(v)
}

/// One random edit somewhere in `v`: replace a node, insert or remove an array item or an object
/// member, or (`same_meaning`) rewrite a number as another representation of the same value.
pub fn mutate(u: &mut Unstructured<'_>, v: &mut Value, depth: u32) -> Result<()> {
    // Descend into a child most of the time, so edits land at every depth.
    let descend = u.ratio(2, 3)?;
    match v {
        Value::Array(items) if descend && !items.is_empty() => {
            let i = u.choose_index(items.len())?;
            return mutate(u, &mut items[i], depth + 1);
        }
        Value::Object(map) if descend && !map.is_empty() => {
            let i = u.choose_index(map.len())?;
            if let Some(child) = map.values_mut().nth(i) {
                return mutate(u, child, depth + 1);
            }
        }
        _ => {}
    }
    match (u.choose_index(4)?, &mut *v) {
        (0, Value::Array(items)) => {
            let at = u.int_in_range(0..=items.len())?;
            items.insert(at, value(u, depth + 1)?);
        }
        (1, Value::Array(items)) if !items.is_empty() => {
            let at = u.choose_index(items.len())?;
            items.remove(at);
        }
        (0, Value::Object(map)) => {
            let key = string(u)?;
            let item = value(u, depth + 1)?;
            map.insert(key, item);
        }
        (1, Value::Object(map)) if !map.is_empty() => {
            let i = u.choose_index(map.len())?;
            if let Some(key) = map.keys().nth(i).cloned() {
                map.remove(&key);
            }
        }
        (2, Value::Number(n)) => {
            if let Some(same) = respell(n) {
                *n = same;
            }
        }
        _ => *v = value(u, depth)?,
    }
    Ok(())
}

/// The same numeric value in the other representation (integer ⇄ float), when one exists.
pub fn respell(n: &Number) -> Option<Number> {
    if n.is_f64() {
        let f = n.as_f64()?;
        if f.fract() != 0.0 {
            return None;
        }
        if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
            Some(Number::from(f as u64))
        } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
            Some(Number::from(f as i64))
        } else {
            None
        }
    } else {
        let f = n.as_f64()?;
        // Only when the float is exactly the integer.
        let back = if let Some(u) = n.as_u64() {
            f < 18_446_744_073_709_551_616.0 && f as u64 == u
        } else {
            n.as_i64().is_some_and(|i| f as i64 == i)
        };
        back.then(|| Number::from_f64(f)).flatten()
    }
}

/// Every JSON Pointer to a node of `v` (the root is `""`), at most `limit` of them.
pub fn pointers(v: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), v)];
    while let Some((path, node)) = stack.pop() {
        if out.len() >= limit {
            break;
        }
        match node {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    stack.push((format!("{path}/{i}"), item));
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let token = key.replace('~', "~0").replace('/', "~1");
                    stack.push((format!("{path}/{token}"), item));
                }
            }
            _ => {}
        }
        out.push(path);
    }
    out
}
