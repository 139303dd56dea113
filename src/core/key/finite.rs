//! Finding a non-finite float (NaN, +∞, −∞) in an argument.
//!
//! serde_json turns a non-finite float into `null`, so in a key NaN, ±∞ and `None` would all be
//! written the same and share one entry. [`non_finite`] walks the argument's [`Serialize`] output
//! (writing nothing) and reports the first such float with its place as a JSON Pointer. The key
//! functions run it only when the argument's JSON holds a `null`, which every non-finite float
//! becomes, so the common argument pays nothing for it.

use std::fmt;

use serde::ser::{self, Serialize};

/// A non-finite float of an argument: where it is (a JSON Pointer, RFC 6901: `""` for the
/// argument itself, `/a/0` for the first item of field `a`) and its value (`NaN`, `inf`, `-inf`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NonFinite {
    pub(super) path: String,
    pub(super) value: String,
}

/// The first non-finite float in `arg`, in serialisation order; `None` when there is none (or
/// when the argument's [`Serialize`] implementation fails, which the caller has already seen).
pub(super) fn non_finite<A: Serialize + ?Sized>(arg: &A) -> Option<NonFinite> {
    match arg.serialize(Finder) {
        Ok(()) | Err(Stop::Other) => None,
        Err(Stop::NonFinite {
            value,
            mut reversed,
        }) => {
            reversed.reverse();
            let mut path = String::new();
            for segment in reversed {
                path.push('/');
                path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
            }
            Some(NonFinite { path, value })
        }
    }
}

/// Why the walk stopped.
#[derive(Debug)]
enum Stop {
    /// A non-finite float: its text and its path, innermost segment first (each enclosing
    /// container adds its own segment as the error passes through it).
    NonFinite {
        value: String,
        reversed: Vec<String>,
    },
    /// The argument's own serialisation failed.
    Other,
}

impl Stop {
    /// This error, inside the container item `segment`.
    fn within(self, segment: impl FnOnce() -> String) -> Stop {
        match self {
            Stop::NonFinite {
                value,
                mut reversed,
            } => {
                reversed.push(segment());
                Stop::NonFinite { value, reversed }
            }
            Stop::Other => Stop::Other,
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::NonFinite { value, .. } => write!(f, "non-finite number {value}"),
            Stop::Other => f.write_str("the argument failed to serialise"),
        }
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop::Other
    }
}

fn check(f: f64) -> Result<(), Stop> {
    if f.is_finite() {
        Ok(())
    } else {
        Err(Stop::NonFinite {
            value: f.to_string(),
            reversed: Vec::new(),
        })
    }
}

/// The serializer that writes nothing and stops at the first non-finite float.
#[derive(Clone, Copy)]
struct Finder;

/// A container being walked: counts its items (for array paths) and remembers the last map key.
struct Items {
    /// The next item's index.
    index: usize,
    /// The pending map key's text.
    key: String,
    /// The enum variant this container is the content of, if any (`/Variant/…`).
    variant: Option<&'static str>,
}

impl Items {
    fn new(variant: Option<&'static str>) -> Items {
        Items {
            index: 0,
            key: String::new(),
            variant,
        }
    }

    /// The error `stop`, inside this container (and its variant).
    fn wrap(&self, stop: Stop, segment: String) -> Stop {
        let stop = stop.within(|| segment);
        match self.variant {
            Some(variant) => stop.within(|| variant.to_owned()),
            None => stop,
        }
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        let index = self.index;
        self.index += 1;
        value
            .serialize(Finder)
            .map_err(|stop| self.wrap(stop, index.to_string()))
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Stop> {
        value
            .serialize(Finder)
            .map_err(|stop| self.wrap(stop, name.to_owned()))
    }
}

impl ser::Serializer for Finder {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = Items;
    type SerializeMap = Items;
    type SerializeStruct = Items;
    type SerializeStructVariant = Items;

    fn serialize_bool(self, _: bool) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Stop> {
        check(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Stop> {
        check(v)
    }
    fn serialize_char(self, _: char) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value
            .serialize(self)
            .map_err(|stop| stop.within(|| variant.to_owned()))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items, Stop> {
        Ok(Items::new(None))
    }
    fn serialize_tuple(self, _: usize) -> Result<Items, Stop> {
        Ok(Items::new(None))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Items, Stop> {
        Ok(Items::new(None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Items, Stop> {
        Ok(Items::new(Some(variant)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Items, Stop> {
        Ok(Items::new(None))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Items, Stop> {
        Ok(Items::new(None))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Items, Stop> {
        Ok(Items::new(Some(variant)))
    }
}

/// The collections whose items are values only (sequences, tuples): each item is checked.
macro_rules! items_of_values {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl ser::$trait for Items {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
                self.item(value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

items_of_values! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

/// The collections whose items are named fields (structs): each field is checked under its name.
macro_rules! items_of_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Items {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), Stop> {
                self.field(name, value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

items_of_fields! { SerializeStruct, SerializeStructVariant }

impl ser::SerializeMap for Items {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        // The key's text as the JSON object's key would be (a string, or a number written as
        // one); anything else cannot be a JSON key, and the caller has already refused it.
        self.key = match serde_json::to_value(key) {
            Ok(serde_json::Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(_) => String::from("?"),
        };
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        let key = std::mem::take(&mut self.key);
        self.field(&key, value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}
