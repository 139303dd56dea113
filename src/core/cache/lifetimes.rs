//! Entry lifetimes: creating an entry, starting its lifecycle handler, removing it (R5, R7, R12–R14, R16).

use std::fmt;

use super::deadlines::Timer;
use super::*;
use crate::core::data::CacheData;
use crate::core::entry::any::AnyEntry;
use crate::core::key::CacheKey;
use crate::core::trace::{AddCause, HandlerOutcome, RemoveCause, TraceKind};

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Remove the entry for `key` now (R7). Returns whether there was one.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// assert!(cache.remove(1, &key));
    /// assert!(!cache.remove(2, &key));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&mut self, now: u64, key: &CacheKey) -> bool {
        self.advance(now);
        if !self.entries.contains_key(key) {
            return false;
        }
        self.remove_entry(key, RemoveCause::Removed, self.now);
        true
    }

    /// Remove every entry now, in ascending key order (R7). The cache stays usable; ids are
    /// never reused. The memory the cache's indexes grew to hold its entries is given back (they
    /// keep it when entries are removed one by one); what stays is the bounded trace, the
    /// subscriptions still held (until they are dropped) and the effects the reset queued, whose
    /// queue gives back its memory once it has been drained.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing)?;
    /// cache.reset(1);
    /// assert!(cache.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&mut self, now: u64) {
        self.advance(now);
        let mut keys: Vec<CacheKey> = self.entries.keys().cloned().collect();
        keys.sort();
        for key in keys {
            self.remove_entry(&key, RemoveCause::Reset, self.now);
        }
        self.entries.release_if_empty();
        self.subscriptions.shrink_to_fit();
    }

    /// A lifecycle handler ended (R16): recorded under its key, whether or not the entry lives,
    /// with the handler's generation (R30).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, CacheKey, HandlerOutcome};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// cache.lifecycle_ended(0, &CacheKey::verbatim("a(1)"), LifetimeId(1), HandlerOutcome::Finished);
    /// assert_eq!(cache.trace().len(), 1);
    /// ```
    pub fn lifecycle_ended(
        &mut self,
        now: u64,
        key: &CacheKey,
        handler: impl Into<HandlerId>,
        outcome: HandlerOutcome,
    ) {
        let handler = handler.into();
        self.advance(now);
        self.record(
            self.now,
            key,
            TraceKind::LifecycleEnded {
                lifetime: handler.lifetime.0,
                generation: handler.generation,
                outcome: outcome.bounded(),
            },
        );
    }

    /// Take a lifetime id and record the new entry's creation (the caller inserts the entry).
    pub(super) fn create(&mut self, key: &CacheKey, cause: AddCause) -> u64 {
        let lifetime = self.next_lifetime;
        self.next_lifetime += 1;
        self.record(self.now, key, TraceKind::EntryAdded { lifetime, cause });
        lifetime
    }

    /// Put a new entry (no subscribers, no deadline) in the map.
    pub(super) fn insert(&mut self, key: &CacheKey, endpoint: EndpointId, entry: AnyEntry<D, E>) {
        self.entries.insert(key.clone(), Slot::new(endpoint, entry));
    }

    pub(super) fn start_lifecycle(&mut self, key: &CacheKey, endpoint: EndpointId, lifetime: u64) {
        if self.wants_data_loaded(endpoint) {
            self.record(self.now, key, TraceKind::LifecycleStarted { lifetime });
            self.effects.push_back(Effect::StartLifecycle {
                key: key.clone(),
                lifetime: LifetimeId(lifetime),
            });
        }
    }

    /// Remove a live entry: abort its request, drop its deadline, record and report the end of
    /// its lifetime (R5, R7, R13, R14).
    pub(super) fn remove_entry(&mut self, key: &CacheKey, cause: RemoveCause, at: u64) {
        let Some(mut slot) = self.entries.remove(key) else {
            return;
        };
        self.deadlines
            .disarm(Timer::Removal, key, &mut slot.deadline);
        if let Some(polling) = slot.polling.as_mut() {
            self.deadlines.disarm(Timer::Poll, key, &mut polling.armed);
        }
        if let Some(retrying) = slot.retrying.as_mut() {
            self.deadlines
                .disarm(Timer::Retry, key, &mut retrying.armed);
        }
        let lifetime = slot.entry.lifetime();
        if let Some(request) = slot.entry.in_flight() {
            self.record(at, key, TraceKind::RequestAborted { request });
            self.effects.push_back(Effect::AbortRequest {
                key: key.clone(),
                request: RequestId(request),
            });
        }
        let removed = slot.entry.remove();
        let loaded = removed.loaded();
        self.record(
            at,
            key,
            TraceKind::EntryRemoved {
                lifetime,
                cause,
                loaded,
            },
        );
        self.effects.push_back(Effect::EntryRemoved {
            key: key.clone(),
            lifetime: LifetimeId(lifetime),
            loaded,
        });
        self.notify(key);
    }
}
