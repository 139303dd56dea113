//! Restarting an entry's lifecycle handler (R30).

use std::fmt;

use super::*;
use crate::core::data::CacheData;
use crate::core::key::CacheKey;
use crate::core::trace::TraceKind;

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Restart the lifecycle handler of `key`'s entry (R30): the current handler is told its
    /// entry is gone for it and its handle is refused from now on; a new handler starts on the
    /// same entry, which keeps its data, subscribers, request in flight and watermark. Returns
    /// the new handler. Traced `lifecycle_restarted`; the effects are
    /// [`Effect::RestartLifecycle`] and, if the entry has data, a
    /// [`Effect::ResolveDataLoaded`] for the new handler (without a request: no meta).
    ///
    /// The entry's stream source was the old handler's, so its stream status goes back to
    /// `Idle` until the new handler's source reports. Messages held across a gap stay held; a
    /// resync under way is asked again of the new handler (`Resume`) or goes on (`Refetch`, the
    /// request in flight, or a new one if it had failed).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, Effect, EndpointConfig, HandlerId, LifetimeId};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig { has_lifecycle: true, ..Default::default() })?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 7)?;
    /// while cache.poll_effect().is_some() {}
    /// let handler = cache.restart(1, &key)?;
    /// assert_eq!(handler, HandlerId { lifetime: LifetimeId(1), generation: 1 });
    /// assert_eq!(cache.poll_effect(), Some(Effect::RestartLifecycle { key: key.clone(), handler }));
    /// assert!(matches!(cache.poll_effect(), Some(Effect::ResolveDataLoaded { data: 7, .. })));
    /// assert_eq!(cache.entry(&key).map(|e| e.handler), Some(handler));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restart(&mut self, now: u64, key: &CacheKey) -> Result<HandlerId, RestartRefused> {
        self.advance(now);
        let Some(endpoint) = self.entries.get(key).map(|slot| slot.endpoint) else {
            return Err(RestartRefused::NotLive);
        };
        if !self.wants_data_loaded(endpoint) {
            return Err(RestartRefused::NoHandler);
        }
        let versions = self.endpoint_config(endpoint).versions;
        let Some(slot) = self.entries.get_mut(key) else {
            return Err(RestartRefused::NotLive);
        };
        let generation = slot
            .handler
            .checked_add(1)
            .ok_or(RestartRefused::Exhausted)?;
        slot.handler = generation;
        let lifetime = slot.entry.lifetime();
        let data = slot.entry.data().cloned();
        let stale = slot.live().is_some_and(|live| live.stale_since.is_some());
        let handler = HandlerId {
            lifetime: LifetimeId(lifetime),
            generation,
        };
        self.record(
            self.now,
            key,
            TraceKind::LifecycleRestarted {
                lifetime,
                generation,
                loaded: data.is_some(),
            },
        );
        self.effects.push_back(Effect::RestartLifecycle {
            key: key.clone(),
            handler,
        });
        if let Some(data) = data {
            self.effects.push_back(Effect::ResolveDataLoaded {
                lifetime: LifetimeId(lifetime),
                request: None,
                data,
            });
        }
        if self
            .entries
            .get(key)
            .is_some_and(|slot| slot.live().is_some())
        {
            self.set_source(key, lifetime, StreamStatus::Idle);
        }
        if let (true, Some(versioning)) = (stale, versions) {
            self.resync(key, lifetime, versioning);
        }
        Ok(handler)
    }
}
