//! Versions of messages and snapshots (SPEC R24): a totally ordered value, a `u64` sequence or
//! a pair such as a Redis stream id `ms-seq`.
//!
//! ```
//! use livecache::core::Version;
//! assert!(Version::new(7) < Version::new(8));
//! assert!(Version::pair(1_700, 3) < Version::pair(1_701, 0));
//! assert_eq!("1700-3".parse::<Version>(), Ok(Version::pair(1_700, 3)));
//! assert_eq!(Version::new(7).next(), Some(Version::new(8)));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A message's or a snapshot's version: ordered by `major`, then `minor`. A `u64` sequence is
/// `(0, n)` ([`Version::new`]); a Redis stream id `ms-seq` is `(ms, seq)` ([`Version::pair`]).
///
/// It serialises as a number when `major` is 0 and as the text `"major-minor"` otherwise, and
/// reads back either form.
///
/// ```
/// use livecache::core::Version;
/// assert_eq!(serde_json::to_string(&Version::new(5)).unwrap(), "5");
/// assert_eq!(serde_json::to_string(&Version::pair(9, 1)).unwrap(), r#""9-1""#);
/// assert_eq!(Version::pair(9, 1).to_string(), "9-1");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    major: u64,
    minor: u64,
}

impl Version {
    /// The version `n` of a plain sequence.
    ///
    /// ```
    /// assert_eq!(livecache::core::Version::new(3).parts(), (0, 3));
    /// ```
    pub const fn new(n: u64) -> Version {
        Version { major: 0, minor: n }
    }

    /// A two-part version, ordered by `major` then `minor` (a Redis stream id `major-minor`).
    ///
    /// ```
    /// assert_eq!(livecache::core::Version::pair(2, 0).parts(), (2, 0));
    /// ```
    pub const fn pair(major: u64, minor: u64) -> Version {
        Version { major, minor }
    }

    /// Its two parts, `(major, minor)`.
    ///
    /// ```
    /// assert_eq!(livecache::core::Version::pair(4, 5).parts(), (4, 5));
    /// ```
    pub const fn parts(self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// The version right after this one (`minor + 1`, carrying into `major`): what a contiguous
    /// stream sends next (R26). `None` past the last version.
    ///
    /// ```
    /// use livecache::core::Version;
    /// assert_eq!(Version::new(u64::MAX).next(), Some(Version::pair(1, 0)));
    /// assert_eq!(Version::pair(u64::MAX, u64::MAX).next(), None);
    /// ```
    pub const fn next(self) -> Option<Version> {
        match self.minor.checked_add(1) {
            Some(minor) => Some(Version {
                major: self.major,
                minor,
            }),
            None => match self.major.checked_add(1) {
                Some(major) => Some(Version { major, minor: 0 }),
                None => None,
            },
        }
    }
}

impl From<u64> for Version {
    fn from(n: u64) -> Self {
        Version::new(n)
    }
}

impl From<(u64, u64)> for Version {
    fn from((major, minor): (u64, u64)) -> Self {
        Version::pair(major, minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.major == 0 {
            write!(f, "{}", self.minor)
        } else {
            write!(f, "{}-{}", self.major, self.minor)
        }
    }
}

/// A text that is not a version: neither `n` nor `major-minor` with `u64` parts.
///
/// ```
/// use livecache::core::Version;
/// let error = "12-x".parse::<Version>().unwrap_err();
/// assert_eq!(error.to_string(), "not a version (n or major-minor): \"12-x\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionParseError(String);

impl fmt::Display for VersionParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a version (n or major-minor): {:?}", self.0)
    }
}

impl std::error::Error for VersionParseError {}

impl FromStr for Version {
    type Err = VersionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            // `u64::from_str` takes a leading `+`; a version is digits only.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse::<u64>().ok()
        };
        let parsed = match text.split_once('-') {
            Some((major, minor)) => number(major).zip(number(minor)),
            None => number(text).map(|minor| (0, minor)),
        };
        // Bounded: the error keeps at most 64 bytes of what a peer sent.
        let shown = || {
            let mut end = text.len().min(64);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            VersionParseError(text[..end].to_owned())
        };
        parsed.map(Version::from).ok_or_else(shown)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.major == 0 {
            serializer.serialize_u64(self.minor)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Version;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version: a number, or the text \"major-minor\"")
            }

            fn visit_u64<Er: serde::de::Error>(self, n: u64) -> Result<Version, Er> {
                Ok(Version::new(n))
            }

            fn visit_str<Er: serde::de::Error>(self, text: &str) -> Result<Version, Er> {
                text.parse().map_err(Er::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_major_then_minor_and_round_trip_through_text_and_json() {
        let ordered = [
            Version::new(0),
            Version::new(1),
            Version::new(u64::MAX),
            Version::pair(1, 0),
            Version::pair(1, 7),
            Version::pair(2, 0),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
            assert_eq!(pair[0].next().map(|n| n <= pair[1]), Some(true));
        }
        for v in ordered {
            assert_eq!(v.to_string().parse::<Version>(), Ok(v));
            let json = serde_json::to_string(&v).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Version>(&json).ok(), Some(v));
        }
    }

    #[test]
    fn text_that_is_not_a_version_is_refused_with_a_bounded_copy() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "+1",
            "1-2-3",
            "x",
            "18446744073709551616",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        let long = "9".repeat(1_000);
        let error = long.parse::<Version>().err().map(|e| e.0.len());
        assert_eq!(error, Some(64));
    }
}
