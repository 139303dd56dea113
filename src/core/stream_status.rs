//! The stream status (SPEC R28): the health of an entry's live source, beside its query status.
//!
//! ```
//! use livecache::core::StreamStatus;
//! assert_eq!(StreamStatus::default(), StreamStatus::Idle);
//! assert!(StreamStatus::Live.is_live());
//! assert!(!StreamStatus::Resyncing { since_ms: 5 }.is_live());
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The health of an entry's live source (R28). Every change notifies the entry's subscribers and
/// is traced (`stream_status`); a source that ends or fails says so here, never silently.
///
/// ```
/// use livecache::core::StreamStatus;
/// let status = StreamStatus::Failed { error: "connection reset".into() };
/// assert_eq!(status.to_string(), "failed: connection reset");
/// assert_eq!(
///     serde_json::to_string(&status).unwrap(),
///     r#"{"stream":"failed","error":"connection reset"}"#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "stream", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamStatus {
    /// No stream is attached.
    #[default]
    Idle,
    /// The source is connecting.
    Connecting,
    /// Connected, and the entry's data is current with the stream.
    Live,
    /// The connection was lost; attempt `attempt` is under way. The data is kept, stale since
    /// `since_ms`.
    Reconnecting {
        /// The attempt under way, from 1.
        attempt: u32,
        /// When the connection was lost, in milliseconds on the cache's clock.
        since_ms: u64,
        /// Why the last attempt (or the connection) failed.
        last_error: String,
    },
    /// Messages are missing (a gap, R26, or a queue that overflowed, R33): a resync is under way
    /// and the data is stale since `since_ms`.
    Resyncing {
        /// When the entry went stale, in milliseconds on the cache's clock.
        since_ms: u64,
    },
    /// The source ended by itself.
    Ended {
        /// Why, as the source said.
        reason: String,
    },
    /// The source failed.
    Failed {
        /// The error, displayed.
        error: String,
    },
}

impl StreamStatus {
    /// Whether the data is current with a connected source.
    ///
    /// ```
    /// assert!(!livecache::core::StreamStatus::Idle.is_live());
    /// ```
    pub fn is_live(&self) -> bool {
        matches!(self, StreamStatus::Live)
    }
}

impl StreamStatus {
    /// The text it holds (a peer's words, bounded by the core), if any.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            StreamStatus::Reconnecting { last_error: t, .. }
            | StreamStatus::Ended { reason: t }
            | StreamStatus::Failed { error: t } => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamStatus::Idle => f.write_str("idle"),
            StreamStatus::Connecting => f.write_str("connecting"),
            StreamStatus::Live => f.write_str("live"),
            StreamStatus::Reconnecting {
                attempt,
                since_ms,
                last_error,
            } => write!(
                f,
                "reconnecting (attempt {attempt}, stale since {since_ms} ms): {last_error}"
            ),
            StreamStatus::Resyncing { since_ms } => {
                write!(f, "resyncing (stale since {since_ms} ms)")
            }
            StreamStatus::Ended { reason } => write!(f, "ended: {reason}"),
            StreamStatus::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}
