//! The counts a WebSocket stream keeps of what it received and skipped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what a [`WsStream`](super::WsStream) received, shared with the stream (read them while it runs).
///
/// ```
/// let stats = livecache::ws::WsStats::default();
/// assert_eq!(stats.snapshot().skipped(), 0);
/// ```
#[derive(Debug, Default)]
pub struct WsStats {
    pub(super) messages: AtomicU64,
    pub(super) filtered: AtomicU64,
    pub(super) not_utf8: AtomicU64,
    pub(super) not_json: AtomicU64,
    pub(super) schema: AtomicU64,
    pub(super) invalid: AtomicU64,
    pub(super) too_large: AtomicU64,
    pub(super) control: AtomicU64,
}

/// A snapshot of [`WsStats`].
///
/// ```
/// let counts = livecache::ws::WsCounts { not_json: 2, schema: 1, ..Default::default() };
/// assert_eq!(counts.skipped(), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WsCounts {
    /// Messages yielded.
    pub messages: u64,
    /// Messages dropped by the filter.
    pub filtered: u64,
    /// Frames, text or binary, that are not UTF-8.
    pub not_utf8: u64,
    /// Frames that are not JSON.
    pub not_json: u64,
    /// Frames that are JSON but not a message.
    pub schema: u64,
    /// Messages that failed validation.
    pub invalid: u64,
    /// Frames over the size limit.
    pub too_large: u64,
    /// Ping, pong and raw frames (answered or ignored).
    pub control: u64,
}

impl WsCounts {
    /// Frames skipped, for any reason.
    ///
    /// ```
    /// assert_eq!(livecache::ws::WsCounts { too_large: 1, ..Default::default() }.skipped(), 1);
    /// ```
    pub fn skipped(&self) -> u64 {
        [self.not_json, self.schema, self.invalid, self.too_large]
            .into_iter()
            .fold(self.not_utf8, u64::saturating_add)
    }
}

impl WsStats {
    /// The counters now.
    ///
    /// ```
    /// assert_eq!(livecache::ws::WsStats::default().snapshot(), Default::default());
    /// ```
    pub fn snapshot(&self) -> WsCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WsCounts {
            messages: get(&self.messages),
            filtered: get(&self.filtered),
            not_utf8: get(&self.not_utf8),
            not_json: get(&self.not_json),
            schema: get(&self.schema),
            invalid: get(&self.invalid),
            too_large: get(&self.too_large),
            control: get(&self.control),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
