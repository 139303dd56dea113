//! Polling (R37): a subscription may ask for an interval; its entry refetches every minimum
//! interval of its current subscribers, as ordinary requests. The poll deadline is armed exactly
//! while the entry has a polling subscriber and no request in flight: at the settle of each
//! request (or when polling starts on an idle entry), one interval later.

use std::collections::BTreeMap;
use std::fmt;

use super::deadlines::{Armed, Timer};
use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::trace::RequestReason;

/// An entry's polling: the interval each of its polling subscriptions asked for, and the armed
/// poll deadline.
#[derive(Clone, Debug, Default)]
pub(super) struct Polling {
    intervals: BTreeMap<u64, u64>,
    pub(super) armed: Option<Armed>,
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Poll the entry of `subscription` every `interval_ms` while the subscription lives (R37,
    /// RTK's `pollingInterval`); `None` or `Some(0)` stops its polling. The entry polls at the
    /// minimum interval of its polling subscriptions: each request it starts has the reason
    /// `poll`, joins nothing (none is in flight when a poll falls due) and, when it settles, arms
    /// the next poll one interval later. A shorter interval re-arms the poll sooner; a longer one
    /// takes effect after the next request. Returns `false`, doing nothing, for a subscription
    /// that is not live.
    ///
    /// ```
    /// # use livecache::core::RequestId;
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Refetch};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("price", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("price(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// assert!(cache.set_polling(0, sub, Some(1_000)));
    /// assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), None); // request 1 in flight
    /// cache.fulfil(10, &key, RequestId(1), 5);
    /// assert_eq!(cache.entry(&key).and_then(|e| e.poll_deadline), Some(1_010));
    /// cache.handle_timeout(1_010);                                       // request 2: a poll
    /// assert_eq!(cache.entry(&key).and_then(|e| e.in_flight), Some(RequestId(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_polling(
        &mut self,
        now: u64,
        subscription: SubscriptionId,
        interval_ms: Option<u64>,
    ) -> bool {
        self.advance(now);
        let Some(key) = self.live_subscription(subscription) else {
            return false;
        };
        let Some(slot) = self.entries.get_mut(&key) else {
            return false;
        };
        match interval_ms.filter(|ms| *ms > 0) {
            Some(ms) => {
                slot.polling
                    .get_or_insert_with(Box::default)
                    .intervals
                    .insert(subscription.0, ms);
            }
            None => {
                if let Some(polling) = slot.polling.as_mut() {
                    polling.intervals.remove(&subscription.0);
                }
            }
        }
        self.poll_follows(&key);
        true
    }

    /// A subscription of `key` ended: it polls no more.
    pub(super) fn stop_polling(&mut self, key: &CacheKey, subscription: u64) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let Some(polling) = slot.polling.as_mut() else {
            return;
        };
        if polling.intervals.remove(&subscription).is_some() {
            self.poll_follows(key);
        }
    }

    /// Keep "poll deadline armed ⇔ a polling subscriber and no request in flight" for `key`:
    /// arm it one minimum interval from now unless one is armed sooner; disarm it otherwise.
    pub(super) fn poll_follows(&mut self, key: &CacheKey) {
        let now = self.now;
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let in_flight = slot.entry.in_flight().is_some();
        let Some(polling) = slot.polling.as_mut() else {
            return;
        };
        match polling.intervals.values().min() {
            Some(&ms) if !in_flight => {
                let at = now.saturating_add(ms);
                if polling.armed.is_none_or(|armed| armed.at > at) {
                    self.deadlines.arm(Timer::Poll, key, &mut polling.armed, at);
                }
            }
            _ => {
                self.deadlines.disarm(Timer::Poll, key, &mut polling.armed);
                if polling.intervals.is_empty() {
                    slot.polling = None;
                }
            }
        }
    }

    /// The poll deadline `armed` of `key` fell due: start its request (reason `poll`), stamped
    /// at the deadline.
    pub(super) fn poll_due(&mut self, key: &CacheKey, armed: Armed) {
        match self.entries.get_mut(key) {
            Some(slot) if slot.polling.as_ref().and_then(|p| p.armed) == Some(armed) => {
                if let Some(polling) = slot.polling.as_mut() {
                    polling.armed = None;
                }
            }
            _ => return,
        }
        self.now = self.now.max(armed.at);
        self.start_request(key, RequestReason::Poll);
        self.notify(key);
    }
}
