//! Settings the core decides with: how long unused data is kept, and when a subscriber refetches.
//!
//! ```
//! use std::time::Duration;
//! use livecache::core::{EndpointConfig, Keep, Refetch};
//! // RTK's `keepUnusedDataFor: 5` and `refetchOnMountOrArgChange: 30`.
//! let cfg = EndpointConfig { keep: Some(Keep::from(Duration::from_secs(5))), has_lifecycle: true, ..Default::default() };
//! assert_eq!(cfg.keep_or(Keep::default()), Keep::For(5_000));
//! assert_eq!(Refetch::from(Duration::from_secs(30)), Refetch::IfOlderThan(30_000));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest keep time, in milliseconds: RTK's 32-bit timer clamp (2 147 482.647 s, SPEC R4).
///
/// ```
/// assert_eq!(livecache::core::MAX_KEEP_MS, 2_147_483_647 - 1_000);
/// ```
pub const MAX_KEEP_MS: u64 = 2_147_482_647;

/// How long an entry with zero subscribers is kept before removal (`keepUnusedDataFor`, SPEC R4).
///
/// ```
/// use livecache::core::Keep;
/// use std::time::Duration;
///
/// assert_eq!(Keep::default(), Keep::For(60_000));
/// assert_eq!(Keep::from(Duration::from_secs(30)), Keep::For(30_000));
/// // huge values are clamped like RTK's timers, never overflowing
/// assert_eq!(Keep::from(Duration::MAX), Keep::For(livecache::core::MAX_KEEP_MS));
/// assert_eq!(Keep::Never.as_millis(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Remove this many milliseconds after the entry became unused (clamped to [`MAX_KEEP_MS`]).
    For(u64),
    /// Never remove it automatically (RTK's `Infinity`); only `remove` and `reset` do.
    Never,
}

impl Default for Keep {
    fn default() -> Self {
        Keep::For(60_000)
    }
}

impl Keep {
    /// Keep for `ms` milliseconds, clamped to [`MAX_KEEP_MS`].
    ///
    /// ```
    /// assert_eq!(livecache::core::Keep::millis(u64::MAX).as_millis(), Some(livecache::core::MAX_KEEP_MS));
    /// ```
    pub fn millis(ms: u64) -> Keep {
        Keep::For(ms.min(MAX_KEEP_MS))
    }

    /// Keep for RTK-style seconds: negative or NaN becomes 0, infinite becomes [`Keep::Never`],
    /// large values are clamped.
    ///
    /// ```
    /// use livecache::core::Keep;
    /// assert_eq!(Keep::seconds(-5.0), Keep::For(0));
    /// assert_eq!(Keep::seconds(f64::INFINITY), Keep::Never);
    /// assert_eq!(Keep::seconds(2.5), Keep::For(2_500));
    /// ```
    pub fn seconds(secs: f64) -> Keep {
        if secs == f64::INFINITY {
            Keep::Never
        } else if secs.is_nan() || secs <= 0.0 {
            Keep::For(0)
        } else {
            let ms = (secs * 1000.0).min(MAX_KEEP_MS as f64);
            Keep::For(ms as u64)
        }
    }

    /// The clamped keep time in milliseconds, or `None` for [`Keep::Never`].
    ///
    /// ```
    /// assert_eq!(livecache::core::Keep::For(5).as_millis(), Some(5));
    /// ```
    pub fn as_millis(self) -> Option<u64> {
        match self {
            Keep::For(ms) => Some(ms.min(MAX_KEEP_MS)),
            Keep::Never => None,
        }
    }
}

impl From<Duration> for Keep {
    fn from(d: Duration) -> Keep {
        Keep::millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Whether subscribing to (or prefetching) an entry that already has data starts a request
/// (RTK's `forceRefetch` / `refetchOnMountOrArgChange`, SPEC R2).
///
/// An entry without data always gets a request if none is in flight; a request in flight is
/// always joined, never duplicated (R3).
///
/// ```
/// use livecache::core::Refetch;
/// assert_eq!(Refetch::default(), Refetch::IfMissing);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refetch {
    /// Only when the entry has no data yet (a cache hit starts nothing).
    #[default]
    IfMissing,
    /// Always (`forceRefetch: true`, `refetchOnMountOrArgChange: true`).
    Always,
    /// When the data was fulfilled at least this many milliseconds ago
    /// (`refetchOnMountOrArgChange: N`).
    IfOlderThan(u64),
}

impl Refetch {
    /// Whether this policy asks for a request, given when the data was last fulfilled.
    ///
    /// ```
    /// use livecache::core::Refetch;
    /// assert!(Refetch::IfOlderThan(1_000).wants(Some(0), 1_000));
    /// assert!(!Refetch::IfOlderThan(1_000).wants(Some(1), 1_000));
    /// assert!(!Refetch::IfMissing.wants(None, 0));
    /// ```
    pub fn wants(self, fulfilled_at: Option<u64>, now: u64) -> bool {
        match self {
            Refetch::IfMissing => false,
            Refetch::Always => true,
            Refetch::IfOlderThan(ms) => fulfilled_at.is_none_or(|t| now.saturating_sub(t) >= ms),
        }
    }
}

impl From<bool> for Refetch {
    /// `true` is [`Refetch::Always`], `false` [`Refetch::IfMissing`] (RTK's
    /// `refetchOnMountOrArgChange: boolean`).
    ///
    /// ```
    /// assert_eq!(livecache::core::Refetch::from(true), livecache::core::Refetch::Always);
    /// ```
    fn from(always: bool) -> Refetch {
        if always {
            Refetch::Always
        } else {
            Refetch::IfMissing
        }
    }
}

impl From<Duration> for Refetch {
    /// Refetch data at least this old (RTK's `refetchOnMountOrArgChange: seconds`).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(livecache::core::Refetch::from(Duration::from_secs(5)), livecache::core::Refetch::IfOlderThan(5_000));
    /// ```
    fn from(age: Duration) -> Refetch {
        Refetch::IfOlderThan(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What the core needs to know about an endpoint.
///
/// ```
/// use livecache::core::{EndpointConfig, Keep};
/// let cfg = EndpointConfig { keep: Some(Keep::Never), has_lifecycle: true, ..Default::default() };
/// assert_eq!(cfg.keep_or(Keep::default()), Keep::Never);
/// assert_eq!(EndpointConfig::default().keep_or(Keep::For(29_000)), Keep::For(29_000));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointConfig {
    /// The endpoint's own keep time; `None` uses the api's.
    pub keep: Option<Keep>,
    /// Whether the endpoint has an `on_cache_entry_added` handler.
    pub has_lifecycle: bool,
    /// Whether its messages and snapshots carry versions, and how they are kept in order
    /// (R24–R27, R33); `None`: unversioned, as in v1.
    #[serde(default)]
    pub versions: Option<Versioning>,
    /// A stream that fails makes the query status `Rejected` too (R28; RTK #2685, #4962):
    /// while the entry's stream status is `Failed`, its status reads `Rejected` (the failure
    /// is in the stream status), whatever its requests did. Off by default: the query status
    /// is the requests' alone.
    #[serde(default)]
    pub stream_failure_rejects: bool,
    /// Retry a failed request (R36): while retrying its status stays `Pending` and the request
    /// stays in flight; `None`: a failure rejects at once.
    #[serde(default)]
    pub retry: Option<crate::core::RetryPolicy>,
}

/// How a versioned endpoint's entries keep their messages in order (SPEC R24–R27, R33).
///
/// ```
/// use livecache::core::{Resync, Versioning};
/// let v = Versioning::default();
/// assert_eq!((v.contiguous, v.resync, v.max_queued), (false, Resync::Refetch, 10_000));
/// let gap_free = Versioning { contiguous: true, resync: Resync::Resume, ..Versioning::default() };
/// assert!(gap_free.contiguous);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioning {
    /// Each message's version is the previous one's [`next`](crate::core::Version::next): a
    /// message further ahead is a gap, held until the missing ones arrive or a resync ends it
    /// (R26).
    pub contiguous: bool,
    /// How a gap or an overflowed queue is resynced (R26, R33).
    pub resync: Resync,
    /// The most messages each of an entry's queues holds — messages held across a gap, and the
    /// rebase log kept while a request is in flight (R33). Past it, the queue is dropped and the
    /// entry resyncs.
    pub max_queued: usize,
}

impl Default for Versioning {
    fn default() -> Self {
        Versioning {
            contiguous: false,
            resync: Resync::Refetch,
            max_queued: 10_000,
        }
    }
}

/// How an entry whose messages are missing catches up (R26).
///
/// ```
/// assert_eq!(livecache::core::Resync::default(), livecache::core::Resync::Refetch);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resync {
    /// Refetch the entry (joining a request in flight); the snapshot's watermark closes the gap
    /// and what was applied meanwhile is rebased onto it (R27).
    #[default]
    Refetch,
    /// Ask the source to replay from the watermark's next version
    /// ([`Effect::Resume`](crate::core::Effect::Resume)).
    Resume,
}

impl EndpointConfig {
    /// The keep time in force: the endpoint's, else the api's.
    ///
    /// ```
    /// use livecache::core::{EndpointConfig, Keep};
    /// let cfg = EndpointConfig { keep: Some(Keep::For(35_000)), ..Default::default() };
    /// assert_eq!(cfg.keep_or(Keep::For(29_000)), Keep::For(35_000));
    /// ```
    pub fn keep_or(&self, api: Keep) -> Keep {
        self.keep.unwrap_or(api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_seconds_maps_nan_and_negatives_to_zero_and_infinity_to_never() {
        assert_eq!(Keep::seconds(f64::NAN), Keep::For(0));
        assert_eq!(Keep::seconds(-0.5), Keep::For(0));
        assert_eq!(Keep::seconds(0.0), Keep::For(0));
        assert_eq!(Keep::seconds(f64::INFINITY), Keep::Never);
        assert_eq!(Keep::seconds(f64::NEG_INFINITY), Keep::For(0));
        assert_eq!(Keep::seconds(1e300), Keep::For(MAX_KEEP_MS));
    }

    #[test]
    fn refetch_from_bool_is_always_or_if_missing() {
        assert_eq!(Refetch::from(true), Refetch::Always);
        assert_eq!(Refetch::from(false), Refetch::IfMissing);
    }
}
