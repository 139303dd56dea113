//! Time: one table of deadlines, the removal deadline armed exactly while an entry has no
//! subscribers, and the timer ticks that expire them.

use std::collections::BTreeSet;
use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::trace::{RemoveCause, TraceKind};

/// What a deadline is for. Removal, poll and retry timers are armed in the same table, so the
/// core has one earliest deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// Remove the entry (R4, R5).
    Removal,
    /// Poll the entry (R37).
    Poll,
    /// Retry the entry's request (R36).
    Retry,
}

/// An armed deadline, as the entry it belongs to remembers it: its time and the arming's
/// sequence number, which tells it apart from a later arming of the same key at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Armed {
    pub(super) at: u64,
    seq: u64,
}

/// Every armed deadline of the cache, in the order they fall due. Each is mirrored by an
/// [`Armed`] in its entry's slot; arming and disarming go through here so the two never differ.
#[derive(Clone, Debug, Default)]
pub(super) struct Deadlines {
    armed: BTreeSet<(u64, u64, Timer, CacheKey)>,
    next_seq: u64,
}

impl Deadlines {
    /// The earliest armed deadline.
    #[inline]
    pub(super) fn first(&self) -> Option<u64> {
        self.armed.first().map(|(at, ..)| *at)
    }

    /// Arm `timer` of `key` at `at`, replacing the one `mark` remembers.
    #[inline]
    pub(super) fn arm(&mut self, timer: Timer, key: &CacheKey, mark: &mut Option<Armed>, at: u64) {
        self.disarm(timer, key, mark);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.armed.insert((at, seq, timer, key.clone()));
        *mark = Some(Armed { at, seq });
    }

    /// Disarm the deadline `mark` remembers, if any; returns it.
    #[inline]
    pub(super) fn disarm(
        &mut self,
        timer: Timer,
        key: &CacheKey,
        mark: &mut Option<Armed>,
    ) -> Option<Armed> {
        let armed = mark.take()?;
        self.armed
            .remove(&(armed.at, armed.seq, timer, key.clone()));
        Some(armed)
    }

    /// Take the earliest deadline if it is due at `now`: before it, or at it when `inclusive`.
    #[inline]
    pub(super) fn pop_due(
        &mut self,
        now: u64,
        inclusive: bool,
    ) -> Option<(Armed, Timer, CacheKey)> {
        let (at, ..) = self.armed.first()?;
        if !(*at < now || (inclusive && *at == now)) {
            return None;
        }
        let (at, seq, timer, key) = self.armed.pop_first()?;
        Some((Armed { at, seq }, timer, key))
    }

    /// Whether `armed` is in the table (for the store's consistency checks).
    #[cfg(test)]
    pub(super) fn contains(&self, timer: Timer, key: &CacheKey, armed: Armed) -> bool {
        self.armed
            .contains(&(armed.at, armed.seq, timer, key.clone()))
    }
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// The earliest armed deadline (a removal, a poll or a retry): when to call
    /// [`Cache::handle_timeout`].
    ///
    /// ```
    /// let cache: livecache::core::Cache<u32> = livecache::core::Cache::new(Default::default());
    /// assert_eq!(cache.poll_timeout(), None);
    /// ```
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first()
    }

    /// A timer tick: every deadline `<= now` falls due, in deadline order, each stamped at its
    /// deadline: an entry whose removal deadline it is is removed (R4, R5), one whose poll
    /// deadline it is starts its poll request (R37).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Keep, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("b", EndpointConfig { keep: Some(Keep::For(0)), ..Default::default() })?;
    /// let key = CacheKey::verbatim("b(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.unsubscribe(0, sub);
    /// assert!(cache.entry(&key).is_some());      // keep 0: never inside the unsubscribe
    /// cache.handle_timeout(0);
    /// assert!(cache.entry(&key).is_none());      // removed at the next tick
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_timeout(&mut self, now: u64) {
        self.expire(now, true);
        self.now = self.now.max(now);
    }

    /// Move the clock to `now` before an event: entries whose deadline is strictly before `now`
    /// expired while nobody told the core.
    pub(super) fn advance(&mut self, now: u64) {
        if self.deadlines.first().is_some_and(|at| at < now) {
            self.expire(now, false);
        }
        self.now = self.now.max(now);
    }

    pub(super) fn expire(&mut self, now: u64, inclusive: bool) {
        while let Some((armed, timer, key)) = self.deadlines.pop_due(now, inclusive) {
            match timer {
                Timer::Poll => {
                    self.poll_due(&key, armed);
                    continue;
                }
                Timer::Retry => {
                    self.retry_due(&key, armed);
                    continue;
                }
                Timer::Removal => {}
            }
            // Only the entry this deadline was armed for (a core user's panicking recipe can
            // take an entry away without disarming its deadline; a new entry of the key keeps
            // its own).
            match self.entries.get_mut(&key) {
                Some(slot) if slot.deadline == Some(armed) => slot.deadline = None,
                _ => continue,
            }
            self.remove_entry(&key, RemoveCause::Expired, armed.at.max(self.now));
        }
    }

    /// Keep "no subscribers ⇔ removal deadline armed" for `key` (R2, R4, R6): with no
    /// subscribers, (re-)arm the removal deadline at `now` + the keep time (none for an infinite
    /// keep); with subscribers, cancel an armed one.
    pub(super) fn removal_follows_subscribers(&mut self, key: &CacheKey) {
        let now = self.now;
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        if slot.subscribers > 0 {
            if self
                .deadlines
                .disarm(Timer::Removal, key, &mut slot.deadline)
                .is_some()
            {
                self.record(now, key, TraceKind::RemovalCancelled);
            }
            return;
        }
        let keep = config_of(&self.endpoints, slot.endpoint).keep_or(self.config.keep);
        let Some(keep) = keep.as_millis() else {
            self.deadlines
                .disarm(Timer::Removal, key, &mut slot.deadline);
            return;
        };
        let at = now.saturating_add(keep);
        self.deadlines
            .arm(Timer::Removal, key, &mut slot.deadline, at);
        self.record(now, key, TraceKind::RemovalScheduled { deadline_ms: at });
    }
}
