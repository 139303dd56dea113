//! What an observer sees of an entry: its RTK-compatible query status and its lifecycle phase.
//!
//! ```
//! use livecache::core::{Cache, EndpointConfig, Phase, Refetch, Status, CacheKey};
//! let mut cache: Cache<u32> = Cache::new(Default::default());
//! let ep = cache.add_endpoint("a", EndpointConfig::default())?;
//! let key = CacheKey::verbatim("a(1)");
//! cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
//! let entry = cache.entry(&key).unwrap();
//! assert_eq!((entry.status, entry.phase), (Status::Pending, Phase::Loading));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The query status, RTK-compatible and orthogonal to the lifecycle phase (SPEC §2).
///
/// `Uninitialized` is what an absent key reports. Data survives `Pending` and `Rejected`.
///
/// ```
/// use livecache::core::Status;
/// assert_eq!(Status::default(), Status::Uninitialized);
/// assert_eq!(Status::Fulfilled.to_string(), "fulfilled");
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No entry for the key.
    #[default]
    Uninitialized,
    /// A request is running (data, if any, is kept).
    Pending,
    /// The last request, or an upsert, succeeded.
    Fulfilled,
    /// The last request failed (data, if any, is kept).
    Rejected,
}

/// The lifecycle phase of a live entry: which typestate it is in (SPEC §2).
///
/// `Added` is transient: an entry leaves it within the operation that created it, so an
/// observer of the cache sees `Loading`, `Loaded` or `Streaming`.
///
/// ```
/// use livecache::core::Phase;
/// assert!(Phase::Streaming.has_data());
/// assert!(!Phase::Loading.has_data());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Created, no request started yet.
    Added,
    /// Waiting for its first data.
    Loading,
    /// Has data, not updated since.
    Loaded,
    /// Has data and has been updated at least once.
    Streaming,
}

impl Phase {
    /// Whether an entry in this phase holds data (and so accepts updates).
    ///
    /// ```
    /// assert!(livecache::core::Phase::Loaded.has_data());
    /// ```
    pub fn has_data(self) -> bool {
        matches!(self, Phase::Loaded | Phase::Streaming)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Uninitialized => "uninitialized",
            Status::Pending => "pending",
            Status::Fulfilled => "fulfilled",
            Status::Rejected => "rejected",
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Added => "added",
            Phase::Loading => "loading",
            Phase::Loaded => "loaded",
            Phase::Streaming => "streaming",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_display_as_their_names() {
        let names: Vec<String> = [
            Phase::Added,
            Phase::Loading,
            Phase::Loaded,
            Phase::Streaming,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["added", "loading", "loaded", "streaming"]);
    }
}
