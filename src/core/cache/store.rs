//! The entry store: live entries densely in one `Vec`, found by key or by lifetime.

use super::deadlines::Armed;
use super::*;
use crate::core::entry::any::AnyEntry;
use crate::core::ids::IdMap;
use crate::core::key::CacheKey;
use crate::core::status::{Phase, Status};
use crate::core::trace::TraceKeyRef;

#[derive(Clone, Debug)]
pub(super) struct Slot<D, E> {
    pub(super) endpoint: EndpointId,
    pub(super) subscribers: usize,
    /// `(deadline, arming sequence)`, mirrored in `Cache::deadlines`.
    pub(super) deadline: Option<Armed>,
    /// Incremented whenever the data or the stream status changes.
    pub(super) version: u64,
    /// What subscribers were last told about ([`Visible`]); `None` before the first notification.
    pub(super) notified: Option<Visible>,
    /// Where this entry's key sits in the trace's current generation, if it does.
    pub(super) trace_key: TraceKeyRef,
    pub(super) entry: AnyEntry<D, E>,
    /// Its live state (R24–R28, R33), once something live happened to it. Private: read with
    /// [`Slot::live`], changed only through [`Slot::live_mut`], which forgets `in_order`.
    live: Option<Box<super::live::LiveState<D>>>,
    /// A copy of the live state's watermark, kept while that state is quiet (nothing held, no
    /// resync, its rebase log whole; [`LiveState::takes_next`](super::live::LiveState::takes_next)
    /// without the version): the next message in order is then recognised from the slot alone,
    /// without reading the live state (one cold memory load less per message on a large cache).
    /// `None` when not known; set only by the in-order path after it applied a message.
    pub(super) in_order: Option<Version>,
    /// The generation of its current lifecycle handler (R30): 0, then one more per restart.
    pub(super) handler: u32,
    /// Its polling subscriptions and poll deadline (R37), while it has any.
    pub(super) polling: Option<Box<super::polling::Polling>>,
    /// Its request's retries so far and the armed retry (R36), while its request has failed.
    pub(super) retrying: Option<Box<super::retrying::Retrying>>,
    /// The tags it provides (R38), and whether an invalidation reached it while it had no
    /// subscribers (it then refetches when next subscribed).
    pub(super) tags: Option<Box<super::tags::Tags>>,
}

/// What a subscriber can see of an entry: a change to any of these is worth a notification.
/// `fulfilled_at` alone is not: equal data from a request or an upsert notifies no one unless
/// the status, the request in flight or the error changed too (R8).
pub(super) type Visible = (Status, Phase, Option<u64>, bool, u64);

impl<D, E> Slot<D, E> {
    /// A slot for a new entry: no subscribers, no deadline, nothing live yet.
    pub(super) fn new(endpoint: EndpointId, entry: AnyEntry<D, E>) -> Self {
        Slot {
            endpoint,
            subscribers: 0,
            deadline: None,
            version: 0,
            notified: None,
            trace_key: TraceKeyRef::default(),
            entry,
            live: None,
            in_order: None,
            handler: 0,
            polling: None,
            retrying: None,
            tags: None,
        }
    }

    /// Its live state, if something live happened to it.
    pub(super) fn live(&self) -> Option<&super::live::LiveState<D>> {
        self.live.as_deref()
    }

    /// Its live state, to change: the copy of the watermark in `in_order` is forgotten, since
    /// the change may move the watermark or end the quiet.
    pub(super) fn live_mut(&mut self) -> &mut Option<Box<super::live::LiveState<D>>> {
        self.in_order = None;
        &mut self.live
    }
}

impl<D: PartialEq, E> Slot<D, E> {
    pub(super) fn visible(&self) -> Visible {
        let e = &self.entry;
        (
            e.status(),
            e.phase(),
            e.in_flight(),
            e.error().is_some(),
            self.version,
        )
    }

    /// Whether what subscribers can see changed since the last notification; if so, it is now
    /// the notified state.
    pub(super) fn mark_notified(&mut self) -> bool {
        let visible = self.visible();
        if self.notified == Some(visible) {
            return false;
        }
        self.notified = Some(visible);
        true
    }
}

/// Where a lifetime's entry sits in the store, for a driver that updates it often (a lifecycle
/// handle): an entry keeps its place for its whole lifetime, and a place is reused only by another
/// lifetime, so checking the lifetime found there is as exact as looking the lifetime up, without
/// the lookup. Found with [`Cache::lifetime_place`]. A place belongs to one handler of the
/// lifetime: after a [`restart`](Cache::restart) the old handler's place finds nothing (R30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimePlace {
    lifetime: u64,
    generation: u32,
    position: usize,
}

impl LifetimePlace {
    /// The handler the place belongs to.
    ///
    /// ```
    /// # use livecache::core::{HandlerId, LifetimeId};
    /// let place = livecache::core::LifetimePlace::gone(LifetimeId(4));
    /// assert_eq!(place.handler(), HandlerId::from(LifetimeId(4)));
    /// ```
    pub fn handler(self) -> HandlerId {
        HandlerId {
            lifetime: LifetimeId(self.lifetime),
            generation: self.generation,
        }
    }

    /// The lifetime.
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// assert_eq!(livecache::core::LifetimePlace::gone(LifetimeId(4)).lifetime(), LifetimeId(4));
    /// ```
    pub fn lifetime(self) -> LifetimeId {
        LifetimeId(self.lifetime)
    }

    /// A place no entry has: every update through it finds the lifetime gone (for a handle made
    /// after its lifetime ended). It names the lifetime's handler 0; [`LifetimePlace::gone_for`]
    /// names any handler.
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, Patches};
    /// use livecache::core::{Cache, LifetimePlace, UpdateRefused};
    /// let mut cache: Cache<Vec<u32>> = Cache::new(Default::default());
    /// let r = cache.update_cached_at(0, LifetimePlace::gone(LifetimeId(1)), Patches::NotWanted, |d| d.push(1));
    /// assert_eq!(r, Err(UpdateRefused::NotLive));
    /// ```
    pub fn gone(lifetime: LifetimeId) -> Self {
        Self::gone_for(HandlerId::from(lifetime))
    }

    /// A place no entry has, for `handler` (see [`LifetimePlace::gone`]).
    ///
    /// ```
    /// # use livecache::core::{HandlerId, LifetimeId, LifetimePlace};
    /// let handler = HandlerId { lifetime: LifetimeId(2), generation: 3 };
    /// assert_eq!(LifetimePlace::gone_for(handler).handler(), handler);
    /// ```
    pub fn gone_for(handler: HandlerId) -> Self {
        LifetimePlace {
            lifetime: handler.lifetime.0,
            generation: handler.generation,
            position: usize::MAX,
        }
    }
}

/// The live entries: keyed by [`CacheKey`] for every operation that names a key, and by
/// lifetime for the operations that name a lifetime. The updates that arrive through a lifecycle
/// handle (the streaming hot path) need no lookup at all: the handle holds its entry's place
/// ([`LifetimePlace`]), which an entry keeps for its whole lifetime. The key text is derived from
/// arguments; its hash is seeded per process and computed once, when the key is made (see
/// [`CacheKey`]).
///
/// The entries themselves sit densely in one `Vec` in the order they were made (a removed
/// entry's place is reused), and the two maps hold only positions: the maps stay small enough to
/// stay cached, and entries updated in turn are neighbours in memory instead of scattered over a
/// hash table's buckets.
#[derive(Clone, Debug)]
pub(super) struct Entries<D, E> {
    /// Key → its live entry's position in `slots`. A key carries its own seeded hash (computed
    /// once, when the key is made), so a lookup only mixes that number.
    by_key: IdMap<CacheKey, usize>,
    /// Lifetime → its entry's position in `slots`.
    by_lifetime: IdMap<u64, usize>,
    /// Each live entry with its key; `None` where an entry was removed, until a new one reuses it.
    slots: Vec<Option<(CacheKey, Slot<D, E>)>>,
    /// The positions in `slots` that are `None`.
    free: Vec<usize>,
}

impl<D: PartialEq, E> Entries<D, E> {
    pub(super) fn new() -> Self {
        Entries {
            by_key: IdMap::default(),
            by_lifetime: IdMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
    #[inline]
    pub(super) fn contains_key(&self, key: &CacheKey) -> bool {
        self.by_key.contains_key(key)
    }
    #[inline]
    pub(super) fn slot(&self, position: usize) -> Option<&(CacheKey, Slot<D, E>)> {
        self.slots.get(position)?.as_ref()
    }
    #[inline]
    pub(super) fn slot_mut(&mut self, position: usize) -> Option<&mut (CacheKey, Slot<D, E>)> {
        self.slots.get_mut(position)?.as_mut()
    }
    #[inline]
    pub(super) fn get_key_value(&self, key: &CacheKey) -> Option<(&CacheKey, &Slot<D, E>)> {
        let position = *self.by_key.get(key)?;
        self.slot(position).map(|(k, slot)| (k, slot))
    }
    #[inline]
    pub(super) fn get(&self, key: &CacheKey) -> Option<&Slot<D, E>> {
        self.get_key_value(key).map(|(_, slot)| slot)
    }
    #[inline]
    pub(super) fn get_mut(&mut self, key: &CacheKey) -> Option<&mut Slot<D, E>> {
        let position = *self.by_key.get(key)?;
        self.slot_mut(position).map(|(_, slot)| slot)
    }
    /// Every live entry with its key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&CacheKey, &Slot<D, E>)> {
        self.slots.iter().flatten().map(|(key, slot)| (key, slot))
    }
    #[inline]
    pub(super) fn keys(&self) -> impl Iterator<Item = &CacheKey> {
        self.slots.iter().flatten().map(|(key, _)| key)
    }
    /// The key of a live lifetime.
    #[inline]
    pub(super) fn key_of(&self, lifetime: u64) -> Option<&CacheKey> {
        let position = *self.by_lifetime.get(&lifetime)?;
        self.slot(position).map(|(key, _)| key)
    }
    /// The key of a live lifetime whose current handler is `handler` (R30).
    #[inline]
    pub(super) fn key_of_handler(&self, handler: HandlerId) -> Option<&CacheKey> {
        let position = *self.by_lifetime.get(&handler.lifetime.0)?;
        let (key, slot) = self.slot(position)?;
        (slot.handler == handler.generation).then_some(key)
    }
    /// Where a live lifetime's entry sits, for its current handler `handler`: the same place for
    /// the whole lifetime, a handler's own.
    #[inline]
    pub(super) fn place_of(&self, handler: HandlerId) -> Option<LifetimePlace> {
        let position = *self.by_lifetime.get(&handler.lifetime.0)?;
        let (_, slot) = self.slot(position)?;
        (slot.handler == handler.generation).then_some(LifetimePlace {
            lifetime: handler.lifetime.0,
            generation: handler.generation,
            position,
        })
    }
    /// The key and entry at `place`, if its lifetime is still live there.
    #[inline]
    pub(super) fn at_place(&self, place: LifetimePlace) -> Option<(&CacheKey, &Slot<D, E>)> {
        let (key, slot) = self.slot(place.position)?;
        let current = slot.entry.lifetime() == place.lifetime && slot.handler == place.generation;
        current.then_some((key, slot))
    }
    /// [`Entries::at_place`], mutably.
    #[inline]
    pub(super) fn at_place_mut(
        &mut self,
        place: LifetimePlace,
    ) -> Option<(&CacheKey, &mut Slot<D, E>)> {
        let (key, slot) = self.slot_mut(place.position)?;
        let current = slot.entry.lifetime() == place.lifetime && slot.handler == place.generation;
        current.then_some((&*key, slot))
    }
    /// Insert or replace the entry of `key` (a new lifetime replaces the key's old one).
    pub(super) fn insert(&mut self, key: CacheKey, slot: Slot<D, E>) {
        use std::collections::hash_map::Entry;
        let lifetime = slot.entry.lifetime();
        let position = match self.by_key.entry(key.clone()) {
            Entry::Occupied(at) => {
                let position = *at.get();
                let old = self.slots.get(position).and_then(Option::as_ref);
                let old = old.map(|(_, old)| old.entry.lifetime());
                self.relink(old, lifetime, position);
                position
            }
            Entry::Vacant(at) => {
                let position = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                at.insert(position);
                let taken = self.by_lifetime.insert(lifetime, position);
                debug_assert!(taken.is_none(), "lifetimes are never reused");
                position
            }
        };
        if let Some(place) = self.slots.get_mut(position) {
            *place = Some((key, slot));
        }
    }
    /// Take the entry of `key` out by value for a typestate transition and put back the one `f`
    /// returns, in the same place: `f` must keep the entry's lifetime. The maps are not touched.
    /// If `f` panics (a core user's recipe), the entry is gone from the store, as it would be had
    /// it been removed first, and the panic goes on.
    pub(super) fn transition<R>(
        &mut self,
        key: &CacheKey,
        f: impl FnOnce(Slot<D, E>) -> (Slot<D, E>, R),
    ) -> Option<R> {
        let position = *self.by_key.get(key)?;
        let (owned_key, slot) = self.slots.get_mut(position)?.take()?;
        let lifetime = slot.entry.lifetime();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(slot))) {
            Ok((slot, result)) => {
                let now_lifetime = slot.entry.lifetime();
                if let Some(place) = self.slots.get_mut(position) {
                    *place = Some((owned_key, slot));
                }
                // Transitions keep the lifetime (entry.rs copies it through every state); should
                // one not, the lifetime map follows rather than pointing at the wrong entry.
                self.relink(Some(lifetime), now_lifetime, position);
                Some(result)
            }
            Err(panic) => {
                self.by_key.remove(key);
                self.by_lifetime.remove(&lifetime);
                self.free_place(position);
                std::panic::resume_unwind(panic)
            }
        }
    }
    /// The entry at `position` now has lifetime `new` (it had `old`, if any).
    pub(super) fn relink(&mut self, old: Option<u64>, new: u64, position: usize) {
        if old == Some(new) {
            return;
        }
        if let Some(old) = old {
            self.by_lifetime.remove(&old);
        }
        self.by_lifetime.insert(new, position);
    }
    /// `position` no longer holds an entry.
    #[inline]
    pub(super) fn free_place(&mut self, position: usize) {
        if self.by_key.is_empty() {
            // Nothing live: start again from the front (the capacity is kept).
            self.slots.clear();
            self.free.clear();
        } else {
            self.free.push(position);
        }
    }
    /// An empty store gives its memory back: its maps and places keep the capacity of the most
    /// entries they ever held otherwise (removal keeps it, for a cache that fills up again).
    /// For `reset`, after which the cache may stay small for a long time.
    pub(super) fn release_if_empty(&mut self) {
        if self.by_key.is_empty() {
            *self = Entries::new();
        }
    }
    /// The capacities of the two maps, the places and the free list, for tests.
    #[cfg(test)]
    pub(super) fn capacities(&self) -> [usize; 4] {
        [
            self.by_key.capacity(),
            self.by_lifetime.capacity(),
            self.slots.capacity(),
            self.free.capacity(),
        ]
    }
    #[inline]
    pub(super) fn remove_entry(&mut self, key: &CacheKey) -> Option<(CacheKey, Slot<D, E>)> {
        let position = self.by_key.remove(key)?;
        let (key, slot) = self.slots.get_mut(position)?.take()?;
        self.by_lifetime.remove(&slot.entry.lifetime());
        self.free_place(position);
        Some((key, slot))
    }
    #[inline]
    pub(super) fn remove(&mut self, key: &CacheKey) -> Option<Slot<D, E>> {
        self.remove_entry(key).map(|(_, slot)| slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cache::deadlines::Timer;
    use crate::core::cache::{Cache, CacheConfig, EndpointId, SubscriptionId, UpdateRefused};
    use crate::core::cache::{LifetimeId, Patches};
    use crate::core::config::{EndpointConfig, Keep, Refetch};
    use crate::core::entry::Entry;
    use crate::core::patch::Patch;
    use proptest::prelude::*;

    impl<D: PartialEq, E> Entries<D, E> {
        /// The store's own invariants: both maps point at live places holding the same key and
        /// lifetime, every other place is listed free once, and nothing is left over.
        fn check(&self) -> Result<(), String> {
            if self.by_key.len() != self.by_lifetime.len() {
                return Err(format!(
                    "{} keys but {} lifetimes",
                    self.by_key.len(),
                    self.by_lifetime.len()
                ));
            }
            for (key, &position) in &self.by_key {
                let Some((k, slot)) = self.slot(position) else {
                    return Err(format!("{key} points at empty place {position}"));
                };
                if k != key {
                    return Err(format!("{key} points at {k}'s place"));
                }
                if self.by_lifetime.get(&slot.entry.lifetime()) != Some(&position) {
                    return Err(format!("{key}'s lifetime does not point at its place"));
                }
            }
            if self.by_key.is_empty() && !(self.slots.is_empty() && self.free.is_empty()) {
                return Err("an empty store keeps places".to_owned());
            }
            let live = self.slots.iter().filter(|s| s.is_some()).count();
            let mut free = self.free.clone();
            free.sort_unstable();
            free.dedup();
            let empty: Vec<usize> = (0..self.slots.len())
                .filter(|&p| self.slots[p].is_none())
                .collect();
            if live != self.by_key.len() || free != empty || free.len() != self.free.len() {
                return Err(format!(
                    "{live} live places for {} keys; free {:?}, empty {empty:?}",
                    self.by_key.len(),
                    self.free
                ));
            }
            Ok(())
        }
    }

    /// A core user's `update_cached` whose recipe panics (the runtime catches its own); whether
    /// the panic came out.
    fn update_panics(cache: &mut Cache<Vec<u8>>, now: u64, lifetime: LifetimeId) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.update_cached(now, lifetime, Patches::NotWanted, |_| panic!("recipe"))
        }))
        .is_err()
    }

    /// A key given an entry of a new lifetime (the core removes the old one first; the store
    /// still copes): the old lifetime no longer finds anything, the new one finds the entry in
    /// the same place.
    #[test]
    fn a_new_lifetime_under_a_key_replaces_the_old_one() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache
            .add_endpoint("a", EndpointConfig::default())
            .expect("endpoint names are distinct");
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache.insert(&a, ep, AnyEntry::Loaded(Entry::new(1).load(vec![1], 0)));
        cache.insert(&b, ep, AnyEntry::Loaded(Entry::new(2).load(vec![2], 0)));
        cache.insert(&a, ep, AnyEntry::Loaded(Entry::new(3).load(vec![3], 0)));
        assert_eq!(cache.entries.check(), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.key_of_lifetime(LifetimeId(1)), None);
        assert_eq!(cache.key_of_lifetime(LifetimeId(3)), Some(&a));
        assert_eq!(cache.entry(&a).map(|e| e.lifetime), Some(LifetimeId(3)));
        assert_eq!(cache.entries.slots.len(), 2, "the key's place was reused");
    }

    /// A core user's recipe that panics during a transition (here Loaded → Streaming) takes
    /// the entry with it, and the store stays consistent for the other entries.
    #[test]
    fn a_panicking_transition_leaves_the_store_consistent() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache
            .add_endpoint("a", EndpointConfig::default())
            .expect("endpoint names are distinct");
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache
            .upsert(0, ep, &a, vec![1])
            .expect("the key is this endpoint's");
        cache
            .upsert(0, ep, &b, vec![2])
            .expect("the key is this endpoint's");
        let lifetime = cache.entry(&a).map_or(LifetimeId(0), |e| e.lifetime);
        assert!(update_panics(&mut cache, 1, LifetimeId(lifetime.0)));
        assert_eq!(cache.entries.check(), Ok(()));
        assert!(cache.entry(&a).is_none());
        assert_eq!(cache.entry(&b).and_then(|e| e.data.cloned()), Some(vec![2]));
        cache
            .upsert(2, ep, &a, vec![3])
            .expect("the key is this endpoint's");
        assert_eq!(cache.entries.check(), Ok(()));
        assert_eq!(cache.len(), 2);
        // The lost entry's removal deadline (60,000) does not remove the new one (60,002).
        cache.handle_timeout(60_000);
        assert_eq!(cache.entry(&a).and_then(|e| e.data.cloned()), Some(vec![3]));
        cache.handle_timeout(60_002);
        assert!(cache.is_empty());
        assert_eq!(cache.entries.check(), Ok(()));
    }

    /// Reset gives back what the cache's indexes grew to (hardening item 11): 200,000 prefetched
    /// keys then `reset()` left about 110 MiB of RSS behind, mostly these capacities. Removing
    /// entries one at a time keeps them, for a cache that fills up again.
    #[test]
    fn hardening_11_reset_gives_back_the_memory_of_the_store_subscriptions_and_effects() {
        const N: usize = 5_000;
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache
            .add_endpoint("a", EndpointConfig::default())
            .expect("endpoint names are distinct");
        let keys: Vec<CacheKey> = (0..N)
            .map(|i| CacheKey::verbatim(format!("a({i})")))
            .collect();
        let mut subs = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if i % 2 == 0 {
                cache
                    .prefetch(0, ep, key, Refetch::IfMissing)
                    .expect("the key is this endpoint's");
            } else {
                let sub = cache.subscribe(0, ep, key, Refetch::IfMissing);
                subs.push(sub.expect("the key is this endpoint's"));
            }
        }
        while cache.poll_effect().is_some() {}
        let grown = cache.entries.capacities();
        assert!(grown[..3].iter().all(|&c| c >= N), "{grown:?}");
        assert!(cache.subscriptions.capacity() >= N / 2);

        // Removal one by one keeps the capacity.
        for key in &keys[..10] {
            assert!(cache.remove(1, key));
        }
        let kept = cache.entries.capacities();
        assert!(kept[..3].iter().all(|&c| c >= N), "{kept:?}");

        // Ten subscriptions are still held at the reset: they stay (stale, R7a), the rest of the
        // subscription map's room goes.
        for id in subs.drain(10..) {
            assert!(cache.unsubscribe(1, id));
        }
        cache.reset(2);
        assert!(cache.is_empty());
        assert_eq!(cache.entries.capacities(), [0; 4]);
        assert_eq!(cache.entries.check(), Ok(()));
        assert_eq!(cache.subscriptions.len(), 10);
        assert!(cache.subscriptions.capacity() < 64);
        // The reset queued an effect per entry at least; once drained, the queue keeps room for
        // a bounded number only.
        assert!(cache.effects.len() >= N - 10);
        while cache.poll_effect().is_some() {}
        assert!(cache.effects.capacity() <= crate::core::cache::EFFECTS_KEPT);

        // The cache works as before, and the held subscriptions are stale.
        for sub in subs {
            assert!(!cache.refetch(3, sub));
            assert!(!cache.unsubscribe(3, sub));
        }
        assert!(cache.subscriptions.is_empty());
        cache
            .prefetch(3, ep, &keys[0], Refetch::IfMissing)
            .expect("the key is this endpoint's");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.entries.check(), Ok(()));
    }

    /// A panicking transition of the only entry empties the store completely.
    #[test]
    fn a_panicking_transition_of_the_last_entry_empties_the_store() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache
            .add_endpoint("a", EndpointConfig::default())
            .expect("endpoint names are distinct");
        let a = CacheKey::verbatim("a(1)");
        cache
            .upsert(0, ep, &a, vec![1])
            .expect("the key is this endpoint's");
        let lifetime = cache.entry(&a).map_or(LifetimeId(0), |e| e.lifetime);
        assert!(update_panics(&mut cache, 1, LifetimeId(lifetime.0)));
        assert!(cache.is_empty());
        assert_eq!(cache.entries.check(), Ok(()));
    }

    /// A place remembered for a lifetime whose entry was removed, and then reused by another
    /// lifetime, finds nothing: the update is refused as for a lifetime that is not live, and
    /// the entry now at that place is untouched.
    #[test]
    fn a_remembered_place_of_a_removed_lifetime_finds_nothing() {
        let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
        let ep = cache
            .add_endpoint("a", EndpointConfig::default())
            .expect("endpoint names are distinct");
        let (a, b) = (CacheKey::verbatim("a(1)"), CacheKey::verbatim("a(2)"));
        cache
            .upsert(0, ep, &a, vec![1])
            .expect("the key is this endpoint's");
        let lifetime = cache.entry(&a).map_or(LifetimeId(0), |e| e.lifetime);
        let Some(place) = cache.lifetime_place(lifetime) else {
            panic!("a live lifetime has a place");
        };
        assert_eq!(
            cache.update_cached_at(1, place, Patches::NotWanted, |d| d.push(2)),
            Ok(None)
        );
        assert!(cache.remove(2, &a));
        cache
            .upsert(3, ep, &b, vec![7])
            .expect("the key is this endpoint's");
        let b_lifetime = cache.entry(&b).map_or(0, |e| e.lifetime.0);
        let b_place = cache
            .lifetime_place(LifetimeId(b_lifetime))
            .map(|p| p.position);
        assert_eq!(b_place, Some(place.position), "the place was reused");
        for _ in 0..2 {
            // Loaded, then Streaming: both the general path and the hot path refuse it.
            assert_eq!(
                cache.update_cached_at(4, place, Patches::NotWanted, |d| d.push(3)),
                Err(UpdateRefused::NotLive)
            );
            assert_eq!(
                cache.update_cached(4, LifetimeId(b_lifetime), Patches::NotWanted, |d| d.push(8)),
                Ok(None)
            );
        }
        assert_eq!(cache.entry(&b).map(|e| e.phase), Some(Phase::Streaming));
        assert_eq!(
            cache.update_cached_at(4, place, Patches::NotWanted, |d| d.push(3)),
            Err(UpdateRefused::NotLive)
        );
        assert_eq!(
            cache.update_cached_deferring_notify(4, place, |d| d.push(3)),
            Err(UpdateRefused::NotLive)
        );
        assert_eq!(
            cache.update_cached_at(4, LifetimePlace::gone(lifetime), Patches::NotWanted, |d| d
                .push(3)),
            Err(UpdateRefused::NotLive)
        );
        assert_eq!(
            cache.entry(&b).and_then(|e| e.data.cloned()),
            Some(vec![7, 8, 8])
        );
    }

    /// One op of [`an_update_at_a_remembered_place_is_an_update_of_its_lifetime`] other than the
    /// update, then every request answered; a new subscription's id.
    fn step(
        cache: &mut Cache<Vec<u8>>,
        now: u64,
        op: u8,
        key: &CacheKey,
        last_sub: Option<SubscriptionId>,
    ) -> Option<SubscriptionId> {
        let mut new_sub = None;
        match op {
            0 | 1 => {
                new_sub = Some(
                    cache
                        .subscribe(now, EndpointId(0), key, Refetch::IfMissing)
                        .expect("the key is this endpoint's"),
                )
            }
            2 => {
                if let Some(sub) = last_sub {
                    cache.unsubscribe(now, sub);
                }
            }
            3 => {
                cache.remove(now, key);
            }
            4 => cache.handle_timeout(now),
            5 => {
                if let Some(lifetime) = cache.entry(key).map(|e| e.lifetime) {
                    let _ = cache.stream_attached(now, lifetime, 0);
                }
            }
            _ => {}
        }
        while let Some(effect) = cache.poll_effect() {
            if let Effect::StartRequest { key, request } = effect {
                cache.fulfil(now, &key, request, vec![0]);
            }
        }
        new_sub
    }

    proptest! {
        /// An update through a place remembered when its lifetime was first seen (what a
        /// lifecycle handle holds) does exactly what an update naming the lifetime does, whether
        /// the lifetime is still live or its place was freed or reused: the same result, the
        /// same entries and the same trace, op after op.
        #[test]
        fn an_update_at_a_remembered_place_is_an_update_of_its_lifetime(
            ops in proptest::collection::vec((0u8..8, 0usize..3, 0usize..8), 0..100)
        ) {
            let keep_0 = EndpointConfig { keep: Some(Keep::For(0)), has_lifecycle: true, ..Default::default() };
            let mut by_lifetime: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            let mut by_place: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            by_lifetime.add_endpoint("a", keep_0).expect("endpoint names are distinct");
            by_place.add_endpoint("a", keep_0).expect("endpoint names are distinct");
            let keys: Vec<CacheKey> = (0..3).map(|k| CacheKey::verbatim(format!("a({k})"))).collect();
            let mut subs: Vec<Vec<SubscriptionId>> = vec![Vec::new(); 3];
            // Every lifetime seen, with its place when first seen.
            let mut seen: Vec<(LifetimeId, LifetimePlace)> = Vec::new();
            let mut now = 0;
            for (op, k, l) in ops {
                now += 1;
                let last = if op == 2 { subs[k].pop() } else { None };
                let a = step(&mut by_lifetime, now, op, &keys[k], last);
                let b = step(&mut by_place, now, op, &keys[k], last);
                prop_assert_eq!(a, b);
                subs[k].extend(b);
                if op >= 6 && !seen.is_empty() {
                    let (lifetime, place) = seen[l % seen.len()];
                    let a = by_lifetime.update_cached(now, lifetime, Patches::NotWanted, |d| d.push(1));
                    let b = if op == 6 {
                        by_place.update_cached_at(now, place, Patches::NotWanted, |d| d.push(1))
                    } else {
                        by_place
                            .update_cached_deferring_notify(now, place, |d| d.push(1))
                            .map(|_| None)
                    };
                    prop_assert_eq!(a, b, "update of lifetime {:?}", lifetime);
                }
                for key in &keys {
                    let lifetime = by_place.entry(key).map(|e| e.lifetime);
                    if let Some(lifetime) = lifetime
                        && !seen.iter().any(|(l, _)| *l == lifetime)
                        && let Some(place) = by_place.lifetime_place(lifetime)
                    {
                        seen.push((lifetime, place));
                    }
                }
                let entries = |c: &Cache<Vec<u8>>| -> Vec<_> {
                    keys.iter()
                        .map(|k| c.entry(k).map(|e| (e.lifetime, e.phase, e.data.cloned())))
                        .collect()
                };
                prop_assert_eq!(entries(&by_lifetime), entries(&by_place));
                prop_assert_eq!(by_lifetime.trace(), by_place.trace());
            }
        }
    }

    proptest! {
        /// The entry store stays consistent through any mix of subscribing, loading, streaming,
        /// unsubscribing, removal at the deadline, explicit removal, upserts and resets over a
        /// few keys (places are reused, and the store starts again from the front when empty),
        /// and every entry's deadline is armed. A keep of 0–3 ms on a 1-ms step leaves deadlines
        /// pending across operations.
        #[test]
        fn entry_store_stays_consistent(
            ops in proptest::collection::vec((0u8..11, 0usize..3), 0..120),
            keep in prop_oneof![Just(0u64), 1u64..4],
        ) {
            let mut cache: Cache<Vec<u8>> = Cache::new(CacheConfig::default());
            let keep = EndpointConfig { keep: Some(Keep::For(keep)), has_lifecycle: true, ..Default::default() };
            let ep = cache.add_endpoint("a", keep).expect("endpoint names are distinct");
            let keys: Vec<CacheKey> = (0..3).map(|k| CacheKey::verbatim(format!("a({k})"))).collect();
            let mut subs: Vec<Vec<SubscriptionId>> = vec![Vec::new(); 3];
            let append: Patch = serde_json::from_value(serde_json::json!([
                {"op": "add", "path": "/-", "value": 4}
            ]))
            .unwrap_or_else(|_| Patch(Vec::new()));
            let mut now = 0;
            for (op, k) in ops {
                now += 1;
                let key = &keys[k];
                match op {
                    0 | 1 => subs[k].push(cache.subscribe(now, ep, key, Refetch::IfMissing).expect("the key is this endpoint's")),
                    2 => {
                        if let Some(sub) = subs[k].pop() {
                            cache.unsubscribe(now, sub);
                        }
                    }
                    3 => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            let _ = cache.update_cached(now, lifetime, Patches::NotWanted, |d| d.push(1));
                        }
                    }
                    4 => cache.upsert(now, ep, key, vec![2]).expect("the key is this endpoint's"),
                    5 => {
                        cache.remove(now, key);
                    }
                    6 => cache.handle_timeout(now),
                    7 => {
                        if k == 0 {
                            cache.reset(now);
                        }
                    }
                    8 => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            let _ = cache.stream_attached(now, lifetime, 0);
                        }
                    }
                    9 => {
                        let _ = cache.patch_query_data(now, key, &append);
                    }
                    _ => {
                        let lifetime = cache.entry(key).map(|e| e.lifetime);
                        if let Some(lifetime) = lifetime {
                            update_panics(&mut cache, now, LifetimeId(lifetime.0));
                        }
                    }
                }
                // Answer every request at once, so entries load.
                while let Some(effect) = cache.poll_effect() {
                    if let Effect::StartRequest { key, request } = effect {
                        cache.fulfil(now, &key, request, vec![0]);
                    }
                }
                if let Err(broken) = cache.entries.check() {
                    prop_assert!(false, "after op {op} on key {k}: {broken}");
                }
                // The set of deadlines may also hold the stale deadline of an entry a panicking
                // recipe took away (expiring skips it).
                for key in &keys {
                    if let Some(armed) = cache.entries.get(key).and_then(|slot| slot.deadline) {
                        let contained = cache.deadlines.contains(Timer::Removal, key, armed);
                        prop_assert!(contained, "after op {op} on key {k}");
                    }
                }
            }
        }
    }
}
