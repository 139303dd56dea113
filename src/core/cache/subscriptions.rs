//! Subscriptions: subscribe, prefetch, unsubscribe (R1, R2, R4, R6, R7a).

use std::fmt;

use super::*;
use crate::core::config::Refetch;
use crate::core::data::CacheData;
use crate::core::entry::Entry;
use crate::core::key::CacheKey;
use crate::core::trace::{AddCause, TraceKind};

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// The live subscriptions holding `key`, ascending (a linear scan; for tests and tools).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey};
    /// let cache: Cache<u32> = Cache::new(Default::default());
    /// assert!(cache.subscriptions_of(&CacheKey::verbatim("a(1)")).is_empty());
    /// ```
    pub fn subscriptions_of(&self, key: &CacheKey) -> Vec<SubscriptionId> {
        let Some(slot) = self.entries.get(key) else {
            return Vec::new();
        };
        let lifetime = slot.entry.lifetime();
        let mut subs: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(_, (k, l))| k == key && *l == lifetime)
            .map(|(s, _)| SubscriptionId(*s))
            .collect();
        subs.sort();
        subs
    }

    /// Subscribe to `key` of `endpoint` (R1, R2, R3).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.subscribe(0, ep, &key, Refetch::Always)?; // joins the request in flight (R3)
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!((entry.status, entry.subscribers), (Status::Pending, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        refetch: Refetch,
    ) -> Result<SubscriptionId, KeyInUse> {
        self.advance(now);
        self.claim(endpoint, key)?;
        let subscription = self.next_subscription;
        self.next_subscription += 1;
        let now = self.now;
        if let Some(slot) = self.entries.get_mut(key) {
            slot.subscribers += 1;
            let subscribers = slot.subscribers;
            let lifetime = slot.entry.lifetime();
            self.add_subscription(now, key, subscription, lifetime, subscribers);
            self.removal_follows_subscribers(key);
            self.maybe_request(key, refetch);
        } else {
            let lifetime = self.create(key, AddCause::Subscribe);
            self.add_subscription(now, key, subscription, lifetime, 1);
            self.start_lifecycle(key, endpoint, lifetime);
            self.first_request(key, endpoint, Entry::new(lifetime));
            if let Some(slot) = self.entries.get_mut(key) {
                slot.subscribers = 1;
            }
        }
        self.notify(key);
        Ok(SubscriptionId(subscription))
    }

    /// Register `subscription` to `lifetime` of `key` and record it (`subscribers` after it).
    pub(super) fn add_subscription(
        &mut self,
        now: u64,
        key: &CacheKey,
        subscription: u64,
        lifetime: u64,
        subscribers: usize,
    ) {
        self.subscriptions
            .insert(subscription, (key.clone(), lifetime));
        self.record(
            now,
            key,
            TraceKind::Subscribed {
                subscription,
                subscribers,
            },
        );
    }

    /// Prefetch `key` without subscribing (R6): creates the entry with its removal scheduled, or
    /// refetches per `refetch`, never extending an existing entry's lifetime.
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.prefetch(0, ep, &key, Refetch::IfMissing)?;
    /// assert_eq!(cache.entry(&key).unwrap().removal_deadline, Some(60_000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefetch(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        refetch: Refetch,
    ) -> Result<(), KeyInUse> {
        self.advance(now);
        self.claim(endpoint, key)?;
        if self.entries.contains_key(key) {
            self.maybe_request(key, refetch);
        } else {
            let lifetime = self.create(key, AddCause::Prefetch);
            self.start_lifecycle(key, endpoint, lifetime);
            self.first_request(key, endpoint, Entry::new(lifetime));
            self.removal_follows_subscribers(key);
        }
        self.notify(key);
        Ok(())
    }

    /// Drop a subscription. Returns false, doing nothing, for a subscription that is not live:
    /// already dropped, or of a lifetime that ended (R7a). The last one arms removal (R4).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let sub = cache.subscribe(0, ep, &CacheKey::verbatim("a(1)"), Refetch::IfMissing)?;
    /// assert!(cache.unsubscribe(10, sub));
    /// assert!(!cache.unsubscribe(20, sub)); // twice: no effect, the deadline stays at 60 010
    /// assert_eq!(cache.poll_timeout(), Some(60_010));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unsubscribe(&mut self, now: u64, subscription: SubscriptionId) -> bool {
        self.advance(now);
        let Some(key) = self.live_subscription(subscription) else {
            self.subscriptions.remove(&subscription.0);
            return false;
        };
        self.subscriptions.remove(&subscription.0);
        self.stop_polling(&key, subscription.0);
        let Some(slot) = self.entries.get_mut(&key) else {
            return false;
        };
        slot.subscribers = slot.subscribers.saturating_sub(1);
        let subscribers = slot.subscribers;
        self.record(
            self.now,
            &key,
            TraceKind::Unsubscribed {
                subscription: subscription.0,
                subscribers,
            },
        );
        if subscribers == 0 {
            self.removal_follows_subscribers(&key);
        }
        self.notify(&key);
        true
    }

    /// The key of a subscription that belongs to a live lifetime.
    pub(super) fn live_subscription(&self, subscription: SubscriptionId) -> Option<CacheKey> {
        let (key, lifetime) = self.subscriptions.get(&subscription.0)?;
        let slot = self.entries.get(key)?;
        (slot.entry.lifetime() == *lifetime).then(|| key.clone())
    }
}
