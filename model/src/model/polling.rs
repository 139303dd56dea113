//! Polling (R37), as plainly as possible: an entry polls at the minimum interval of its polling
//! subscriptions; its poll deadline is armed exactly while it has one and no request is in
//! flight, one interval after polling starts on an idle entry or after each request settles, and
//! sooner when a shorter interval arrives.

use super::{Deadline, Model};

impl Model {
    /// `SetPolling`: subscription `s` polls every `interval` ms (0: not at all). Whether `s` is
    /// live (R7a).
    pub(super) fn set_polling(&mut self, s: u64, interval: u64) -> bool {
        let Some(key) = self.key_holding(s) else {
            return false;
        };
        if let Some(entry) = self.entries.get_mut(&key) {
            if interval == 0 {
                entry.polls.remove(&s);
            } else {
                entry.polls.insert(s, interval);
            }
        }
        self.poll_follows(&key);
        true
    }

    /// Arm the poll one minimum interval from now if the entry has a polling subscription and no
    /// request in flight, unless one is armed sooner (taking the next arming number); disarm it
    /// otherwise.
    pub(super) fn poll_follows(&mut self, key: &str) {
        let now = self.now;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let interval = entry.polls.values().min().copied();
        match interval {
            Some(ms) if entry.in_flight.is_none() => {
                let at_ms = now.saturating_add(ms);
                if entry.poll.is_none_or(|d| d.at_ms > at_ms) {
                    self.armings += 1;
                    entry.poll = Some(Deadline {
                        at_ms,
                        seq: self.armings,
                    });
                }
            }
            _ => entry.poll = None,
        }
    }
}
