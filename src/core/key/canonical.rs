//! Canonical JSON text as RTK Query writes its cache keys: object keys in JavaScript's string order at
//! every level, numbers and strings as `JSON.stringify` writes them.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::MAX_ARRAY_INDEX;

/// The canonical JSON text of `value`: object keys sorted as RTK sorts them (at every nesting
/// level, in JavaScript's default string order: UTF-16 code units, not Rust's byte order), arrays
/// in order, numbers and strings as JavaScript's `JSON.stringify` writes them. A top-level null
/// is written `null` here; only the key functions turn it into `undefined`.
///
/// ```
/// use livecache::core::canonical_json;
/// use serde_json::json;
///
/// let value = json!({ "b": [3, 1, 2], "a": { "y": 1.0, "x": null } });
/// assert_eq!(canonical_json(&value), r#"{"a":{"x":null,"y":1},"b":[3,1,2]}"#);
/// // UTF-16 order: the astral character (a surrogate pair) sorts before U+E000.
/// let value = json!({ "\u{E000}": 1, "\u{10000}": 2 });
/// assert_eq!(canonical_json(&value), "{\"\u{10000}\":2,\"\u{E000}\":1}");
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// One piece of pending output for the iterative writer.
enum Work<'a> {
    /// A JSON value still to be written.
    Value(&'a Value),
    /// An object key still to be written (quoted and escaped).
    Key(&'a str),
    /// Literal punctuation.
    Text(&'static str),
}

/// Appends the canonical JSON of `value` to `out`.
///
/// Uses an explicit stack rather than recursion, so deeply nested values cannot overflow the
/// call stack. Returns whether it wrote a `null` anywhere.
pub(super) fn write_canonical(value: &Value, out: &mut String) -> bool {
    let mut wrote_null = false;
    let mut stack = vec![Work::Value(value)];
    while let Some(work) = stack.pop() {
        match work {
            Work::Text(text) => out.push_str(text),
            Work::Key(key) => write_string(key, out),
            Work::Value(Value::Null) => {
                wrote_null = true;
                out.push_str("null");
            }
            Work::Value(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Work::Value(Value::Number(n)) => write_number(n, out),
            Work::Value(Value::String(s)) => write_string(s, out),
            Work::Value(Value::Array(items)) => {
                out.push('[');
                stack.push(Work::Text("]"));
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Work::Value(item));
                    if i > 0 {
                        stack.push(Work::Text(","));
                    }
                }
            }
            Work::Value(Value::Object(map)) => {
                out.push('{');
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| js_key_order(a.0, b.0));
                stack.push(Work::Text("}"));
                for (i, (key, item)) in entries.into_iter().enumerate().rev() {
                    stack.push(Work::Value(item));
                    stack.push(Work::Text(":"));
                    stack.push(Work::Key(key));
                    if i > 0 {
                        stack.push(Work::Text(","));
                    }
                }
            }
        }
    }
    wrote_null
}

/// The order in which RTK's sorted object is enumerated by `JSON.stringify`: array-index keys
/// first in numeric order, then the others in UTF-16 code-unit order.
pub(super) fn js_key_order(a: &str, b: &str) -> Ordering {
    match (array_index(a), array_index(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.encode_utf16().cmp(b.encode_utf16()),
    }
}

/// The numeric value of `key` if it is a JavaScript array index: a canonical decimal integer
/// (no sign, no leading zero unless it is `0`) not above `2^32 - 2`.
pub(super) fn array_index(key: &str) -> Option<u64> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    key.parse::<u64>().ok().filter(|n| *n <= MAX_ARRAY_INDEX)
}

/// Appends `s` as a JSON string literal, escaped as `JSON.stringify` escapes it.
pub(super) fn write_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let code = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a JSON number as JavaScript writes it.
pub(super) fn write_number(n: &Number, out: &mut String) {
    if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(f) = n.as_f64() {
        write_f64(f, out);
    } else {
        out.push_str(&n.to_string());
    }
}

/// Appends `f` as ECMAScript's `Number::toString(f)` (radix 10) writes it; non-finite → `null`.
pub(super) fn write_f64(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    if f == 0.0 {
        // Both +0 and -0 are written "0".
        out.push('0');
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, e.g. "1.2345e-7" or "5e0".
    let sci = format!("{:e}", f.abs());
    let Some((mantissa, exponent)) = sci.split_once('e') else {
        out.push_str(&sci);
        return;
    };
    let Ok(exponent) = exponent.parse::<i64>() else {
        out.push_str(&sci);
        return;
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // ECMAScript's names: k digits, value = digits × 10^(n − k).
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exponent + 1;
    if k <= n && n <= 21 {
        // Integer: the digits followed by n − k zeros.
        out.push_str(&digits);
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(n - k).unwrap_or(0),
        ));
    } else if 0 < n && n <= 21 {
        // Decimal point inside the digits.
        let split = usize::try_from(n).unwrap_or(0);
        out.push_str(&digits[..split]);
        out.push('.');
        out.push_str(&digits[split..]);
    } else if -6 < n && n <= 0 {
        // Leading "0." and −n zeros.
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', usize::try_from(-n).unwrap_or(0)));
        out.push_str(&digits);
    } else {
        // Exponent notation: d[.ddd]e±x.
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
}
