//! Time: removal deadlines, armed while an entry has no subscribers, and the timer ticks.

use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::trace::{RemoveCause, TraceKind};

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// The earliest armed removal deadline: when to call [`Cache::handle_timeout`].
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.poll_timeout(), None);
    /// ```
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// A timer tick: remove every entry whose deadline is `<= now`, in deadline order, each
    /// stamped at its deadline (R4, R5).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Keep, Refetch, key::CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("b", EndpointConfig { keep: Some(Keep::For(0)), has_lifecycle: false });
    /// let key = CacheKey::verbatim("b(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing);
    /// cache.unsubscribe(0, sub);
    /// assert!(cache.entry(&key).is_some());      // keep 0: never inside the unsubscribe
    /// cache.handle_timeout(0);
    /// assert!(cache.entry(&key).is_none());      // removed at the next tick
    /// ```
    pub fn handle_timeout(&mut self, now: u64) {
        self.expire(now, true);
        self.now = self.now.max(now);
    }

    /// Move the clock to `now` before an event: entries whose deadline is strictly before `now`
    /// expired while nobody told the core.
    pub(super) fn advance(&mut self, now: u64) {
        if self.deadlines.first().is_some_and(|(at, _, _)| *at < now) {
            self.expire(now, false);
        }
        self.now = self.now.max(now);
    }

    pub(super) fn expire(&mut self, now: u64, inclusive: bool) {
        while let Some((at, _, _)) = self.deadlines.first() {
            let due = *at < now || (inclusive && *at == now);
            if !due {
                break;
            }
            let Some((at, seq, key)) = self.deadlines.pop_first() else {
                break;
            };
            // Only the entry this deadline was armed for (a core user's panicking recipe can
            // take an entry away without disarming its deadline; a new entry of the key keeps
            // its own).
            match self.entries.get_mut(&key) {
                Some(slot) if slot.deadline == Some((at, seq)) => slot.deadline = None,
                _ => continue,
            }
            self.remove_entry(&key, RemoveCause::Expired, at.max(self.now));
        }
    }

    /// Arm the removal deadline of a zero-subscriber entry (finite keep time only).
    pub(super) fn arm(&mut self, key: &CacheKey) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let endpoint = slot.endpoint;
        let old = slot.deadline.take();
        if let Some((at, seq)) = old {
            self.deadlines.remove(&(at, seq, key.clone()));
        }
        let Some(keep) = self.keep(endpoint).as_millis() else {
            return;
        };
        let at = self.now.saturating_add(keep);
        let seq = self.next_arming;
        self.next_arming += 1;
        if let Some(slot) = self.entries.get_mut(key) {
            slot.deadline = Some((at, seq));
        }
        self.deadlines.insert((at, seq, key.clone()));
        self.record(
            self.now,
            key,
            TraceKind::RemovalScheduled { deadline_ms: at },
        );
    }

    pub(super) fn rearm_if_unused(&mut self, key: &CacheKey) {
        if self
            .entries
            .get(key)
            .is_some_and(|slot| slot.subscribers == 0)
        {
            self.arm(key);
        }
    }
}
