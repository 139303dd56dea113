//! Tags and invalidation (R38): an entry provides tags (the runtime computes them from the
//! argument and the data); invalidating a tag refetches every subscribed entry it reaches and
//! marks the unsubscribed ones to refetch when next subscribed (RTK removes those; livecache
//! keeps their data for an instant remount, as TanStack Query does).

use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::tag::Tag;
use crate::core::trace::{RequestReason, TraceKind};

/// The tags an entry provides (sorted, no duplicates), and whether an invalidation reached it
/// while it had no subscribers.
#[derive(Clone, Debug, Default)]
pub(super) struct Tags {
    pub(super) provided: Vec<Tag>,
    pub(super) invalidated: bool,
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// The tags the entry of `key` provides from now on, replacing the ones it provided (R38);
    /// the runtime calls it with its endpoint's `provides_tags` of the argument and each new
    /// result. Whether the entry is live. Silent (no trace event).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Tag};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("post", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("post(7)");
    /// cache.upsert(0, ep, &key, 1)?;
    /// assert!(cache.provide_tags(0, &key, [Tag::id("Post", 7)]));
    /// assert_eq!(cache.entry(&key).map(|e| e.tags.to_vec()), Some(vec![Tag::id("Post", 7)]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn provide_tags(
        &mut self,
        now: u64,
        key: &CacheKey,
        tags: impl IntoIterator<Item = Tag>,
    ) -> bool {
        self.advance(now);
        let Some(slot) = self.entries.get_mut(key) else {
            return false;
        };
        let mut provided: Vec<Tag> = tags.into_iter().collect();
        provided.sort();
        provided.dedup();
        let invalidated = slot.tags.as_ref().is_some_and(|t| t.invalidated);
        slot.tags = (!provided.is_empty() || invalidated).then(|| {
            Box::new(Tags {
                provided,
                invalidated,
            })
        });
        true
    }

    /// Invalidate `tags` (R38, RTK's `invalidatesTags`): every live entry providing a tag one of
    /// them reaches ([`Tag::reaches`]), in key order, records `invalidated`; with subscribers it
    /// refetches (reason `invalidation`), or joins its request in flight (R3); without, it is
    /// marked to refetch when next subscribed or prefetched. Returns how many entries it reached.
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Refetch, RequestId, Tag};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("post", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("post(7)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.fulfil(1, &key, RequestId(1), 1);
    /// cache.provide_tags(1, &key, [Tag::id("Post", 7)]);
    /// assert_eq!(cache.invalidate(2, &[Tag::kind("Post")]), 1);
    /// assert_eq!(cache.entry(&key).and_then(|e| e.in_flight), Some(RequestId(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn invalidate(&mut self, now: u64, tags: &[Tag]) -> usize {
        self.advance(now);
        let mut reached: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(_, slot)| {
                slot.tags.as_ref().is_some_and(|provided| {
                    provided
                        .provided
                        .iter()
                        .any(|p| tags.iter().any(|t| t.reaches(p)))
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        reached.sort();
        for key in &reached {
            let Some(slot) = self.entries.get_mut(key) else {
                continue;
            };
            let subscribed = slot.subscribers > 0;
            let in_flight = slot.entry.in_flight();
            if !subscribed && let Some(tags) = slot.tags.as_mut() {
                tags.invalidated = true;
            }
            self.record(self.now, key, TraceKind::Invalidated { subscribed });
            if subscribed {
                match in_flight {
                    Some(request) => {
                        self.record(self.now, key, TraceKind::RequestJoined { request })
                    }
                    None => {
                        self.start_request(key, RequestReason::Invalidation);
                        self.notify(key);
                    }
                }
            }
        }
        reached.len()
    }

    /// Whether an invalidation marked the entry of `key` to refetch when next subscribed.
    pub(super) fn invalidated(&self, key: &CacheKey) -> bool {
        self.entries
            .get(key)
            .and_then(|slot| slot.tags.as_ref())
            .is_some_and(|tags| tags.invalidated)
    }

    /// The keys of `endpoint`'s live entries, sorted (R38: listing an endpoint's entries).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let a = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let b = cache.add_endpoint("b", EndpointConfig::default())?;
    /// cache.upsert(0, a, &CacheKey::verbatim("a(2)"), 1)?;
    /// cache.upsert(0, b, &CacheKey::verbatim("b(1)"), 1)?;
    /// cache.upsert(0, a, &CacheKey::verbatim("a(1)"), 1)?;
    /// let keys: Vec<String> = cache.keys_of(a).iter().map(|k| k.to_string()).collect();
    /// assert_eq!(keys, ["a(1)", "a(2)"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keys_of(&self, endpoint: EndpointId) -> Vec<CacheKey> {
        let mut keys: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(_, slot)| slot.endpoint == endpoint)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }
}
