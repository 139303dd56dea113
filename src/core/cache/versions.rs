//! Versioned messages, watermarks, gaps, the refetch rebase, the bounded queues and the stream
//! status (R24–R28, R33). `docs/semantics.md`, "Live entries", states each step in order.

use std::fmt;
use std::sync::Arc;

use super::live::{LiveState, Replay, follows};
use super::*;
use crate::core::config::{Resync, Versioning};
use crate::core::data::CacheData;
use crate::core::entry::Draft;
use crate::core::key::CacheKey;
use crate::core::stream_status::StreamStatus;
use crate::core::trace::{Queue, RequestReason, TraceKind, UpdateSource, bound_text};
use crate::core::version::Version;

/// What became of a versioned stream message ([`Cache::stream_message`], R24–R26).
///
/// ```
/// use livecache::core::Delivery;
/// assert_ne!(Delivery::Applied, Delivery::Stale);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Applied: the watermark is its version now (and held messages it made contiguous were
    /// applied after it).
    Applied,
    /// At or below the watermark: a duplicate or a stale message, dropped and traced (R24).
    Stale,
    /// Past a gap: held until the missing messages arrive or a resync ends it (R26).
    Held,
}

/// A message's recipe on its way to the data: run now, and kept (for a rebase) only if it must
/// be — a fresh one is boxed then, one held across a gap is kept already.
trait Pending<D> {
    fn run(&self, draft: &mut Draft<'_, D>);
    fn keep(self) -> Replay<D>;
}

/// A recipe just received, not boxed.
struct Fresh<F>(F);

impl<D, F: Fn(&mut Draft<'_, D>) + Send + Sync + 'static> Pending<D> for Fresh<F> {
    fn run(&self, draft: &mut Draft<'_, D>) {
        (self.0)(draft)
    }

    fn keep(self) -> Replay<D> {
        Arc::new(self.0)
    }
}

impl<D> Pending<D> for Replay<D> {
    fn run(&self, draft: &mut Draft<'_, D>) {
        self(draft)
    }

    fn keep(self) -> Replay<D> {
        self
    }
}

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// A versioned message from `lifetime`'s stream (R24–R26): applied if its version is the
    /// next one, dropped if it is at or below the entry's watermark, held past a gap on a
    /// contiguous endpoint (the entry then resyncs by its policy). While a request is in flight
    /// an applied message is also kept for the rebase (R27).
    ///
    /// `recipe` is kept only when the message is held or logged for a rebase, so a message
    /// applied at once costs no allocation.
    ///
    /// ```
    /// # use livecache::core::{Delivery, LifetimeId, Version};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// cache.upsert_versioned(0, ep, &key, vec![1, 2], Version::new(2))?;
    /// let lifetime = LifetimeId(1);
    /// let push = |n: u64| move |d: &mut livecache::core::Draft<'_, Vec<u64>>| d.push(n);
    /// assert_eq!(cache.stream_message(1, lifetime, Version::new(2), push(2)), Ok(Delivery::Stale));
    /// assert_eq!(cache.stream_message(2, lifetime, Version::new(3), push(3)), Ok(Delivery::Applied));
    /// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![1, 2, 3]));
    /// assert_eq!(cache.entry(&key).and_then(|e| e.watermark), Some(Version::new(3)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_message<F>(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
        version: Version,
        recipe: F,
    ) -> Result<Delivery, UpdateRefused>
    where
        F: Fn(&mut Draft<'_, D>) + Send + Sync + 'static,
    {
        self.advance(now);
        let handler = handler.into();
        let recipe = match self.entries.place_of(handler) {
            Some(place) => match self.stream_next(place, version, recipe, true) {
                Ok(_) => return Ok(Delivery::Applied),
                Err(recipe) => recipe,
            },
            None => recipe,
        };
        self.deliver_by_rules(handler, version, recipe)
    }

    /// [`Cache::stream_message`] by the general rules, time already advanced.
    fn deliver_by_rules<F>(
        &mut self,
        handler: HandlerId,
        version: Version,
        recipe: F,
    ) -> Result<Delivery, UpdateRefused>
    where
        F: Fn(&mut Draft<'_, D>) + Send + Sync + 'static,
    {
        let (key, versioning) = self.versioned_key(handler)?;
        let lifetime = handler.lifetime.0;
        if self
            .entries
            .get(&key)
            .is_some_and(|slot| slot.entry.data().is_none())
        {
            return Err(UpdateRefused::NotLoaded);
        }
        let before = self.stream_status_of(&key);
        let delivered = self.deliver(&key, lifetime, versioning, version, recipe);
        self.status_follows(&key, lifetime, before);
        delivered
    }

    /// [`Cache::stream_message`] of the handler at `place` (a lifecycle handle's), in its common
    /// case only: the message is the next one of a Streaming entry whose stream is in order —
    /// nothing held or missing, no request in flight whose snapshot would need a rebase — and
    /// it is applied, without a lookup and without keeping the recipe (so `recipe` may be
    /// `FnOnce`, move the message into the data, and borrow); the notification is handed to the
    /// caller as in [`Cache::update_cached_deferring_notify`]. In any other case nothing is
    /// done and the recipe comes back: the caller then delivers the message with
    /// [`Cache::stream_message`] (whose recipe the core may keep and run again).
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, Version};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Versioning};
    /// let mut cache: Cache<Vec<String>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// cache.upsert_versioned(0, ep, &key, vec![], Version::new(0))?;
    /// let place = cache.lifetime_place(LifetimeId(1)).expect("live");
    /// let (first, second) = (String::from("m1"), String::from("m2"));
    /// // The entry is not Streaming yet: the first message goes by the general rules.
    /// let back = cache.stream_message_in_order(1, place, Version::new(1), |d| d.push(first));
    /// assert!(back.is_err());
    /// cache.stream_message(1, LifetimeId(1), Version::new(1), |d| d.push("m1".into()))?;
    /// // Streaming and in order: applied, the message moved in.
    /// assert!(cache.stream_message_in_order(2, place, Version::new(2), |d| d.push(second)).is_ok());
    /// assert_eq!(cache.entry(&key).and_then(|e| e.watermark), Some(Version::new(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_message_in_order<F: FnOnce(&mut Draft<'_, D>)>(
        &mut self,
        now: u64,
        place: LifetimePlace,
        version: Version,
        recipe: F,
    ) -> Result<Notify, F> {
        self.advance(now);
        match self.stream_next(place, version, recipe, false) {
            Ok(true) => Ok(Notify::Caller),
            Ok(false) => Ok(Notify::Queued),
            Err(recipe) => Err(recipe),
        }
    }

    /// The common case of [`Cache::stream_message`]: the next message of a Streaming entry whose
    /// stream is in order — nothing held, nothing missing, no request in flight whose snapshot
    /// would need a rebase — goes through the streaming hot path (the steps `deliver` takes for
    /// it: the update, its trace record and notification, then the watermark; the stream status
    /// cannot change). Returns whether the caller is to notify (only if not `queue`, as
    /// `update_streaming`); anything else gives the recipe back for the general path.
    fn stream_next<F: FnOnce(&mut Draft<'_, D>)>(
        &mut self,
        place: LifetimePlace,
        version: Version,
        recipe: F,
        queue: bool,
    ) -> Result<bool, F> {
        let Some((_, slot)) = self.entries.at_place(place) else {
            return Err(recipe);
        };
        let Some(versioning) = self.endpoint_config(slot.endpoint).versions else {
            return Err(recipe);
        };
        // The slot's copy of the watermark, while the stream is quiet, spares reading the live
        // state (a separate allocation) for every message.
        let in_order = slot.entry.in_flight().is_none()
            && match slot.in_order {
                Some(watermark) => follows(versioning, watermark, version),
                None => slot
                    .live()
                    .is_some_and(|live| live.takes_next(versioning, version)),
            };
        if !in_order {
            return Err(recipe);
        }
        // Not Streaming yet (the first update moves it there), or patches recorded: `Err`.
        let notify = self.update_streaming(place, false, recipe, queue)?;
        if let Some((_, slot)) = self.entries.at_place_mut(place)
            && let Some(live) = slot.live_mut().as_deref_mut()
        {
            // Still quiet: applying a message in order changes nothing else of the live state.
            live.watermark = Some(version);
            slot.in_order = Some(version);
        }
        Ok(notify)
    }

    /// The source of `lifetime`'s stream reports its status (R28): `Connecting`, `Live`,
    /// `Reconnecting`, `Ended` or `Failed`. A resync under way shows as `Resyncing` over a
    /// well source. A change notifies and is traced (`stream_status_changed`).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, StreamStatus};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 1)?;
    /// cache.stream_status(1, LifetimeId(1), StreamStatus::Connecting)?;
    /// assert_eq!(cache.entry(&key).map(|e| e.stream), Some(StreamStatus::Connecting));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_status(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
        status: StreamStatus,
    ) -> Result<(), UpdateRefused> {
        self.advance(now);
        let handler = handler.into();
        let (key, lifetime) = (self.live_key(handler)?, handler.lifetime.0);
        // The texts are a peer's words: cut like the trace's (R23).
        let status = match status {
            StreamStatus::Reconnecting {
                attempt,
                since_ms,
                last_error,
            } => StreamStatus::Reconnecting {
                attempt,
                since_ms,
                last_error: bound_text(last_error),
            },
            StreamStatus::Ended { reason } => StreamStatus::Ended {
                reason: bound_text(reason),
            },
            StreamStatus::Failed { error } => StreamStatus::Failed {
                error: bound_text(error),
            },
            other => other,
        };
        self.set_source(&key, lifetime, status);
        Ok(())
    }

    /// The source replayed what a [`Resume`](Effect::Resume) asked for (R26, R33): a resync
    /// that waits for dropped messages ends (held messages still wait for their gap to close).
    ///
    /// ```
    /// # use livecache::core::LifetimeId;
    /// use livecache::core::{Cache, UpdateRefused};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// assert_eq!(cache.resync_done(0, LifetimeId(4)), Err(UpdateRefused::NotLive));
    /// ```
    pub fn resync_done(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
    ) -> Result<(), UpdateRefused> {
        self.advance(now);
        let handler = handler.into();
        let (key, lifetime) = (self.live_key(handler)?, handler.lifetime.0);
        let before = self.stream_status_of(&key);
        if let Some(live) = self.live_mut(&key) {
            live.awaiting_snapshot = false;
        }
        self.status_follows(&key, lifetime, before);
        Ok(())
    }

    /// The lifetime's stream dropped messages it held before the first data (its buffer
    /// overflowed, [`Overflow::Resync`](crate::core::Overflow::Resync), R33): traced
    /// `queue_overflowed { queue: buffered }`, and the entry resyncs by its policy, stale until
    /// a snapshot lands (or the source reports `resync_done`). Call it once the first data has
    /// landed and the messages still held were delivered.
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, RequestId, Version};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Refetch, StreamStatus, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.fulfil_versioned(1, &key, RequestId(1), vec![], Version::new(4));
    /// cache.stream_lost(2, LifetimeId(1))?;
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!(entry.stream, StreamStatus::Resyncing { since_ms: 2 });
    /// assert_eq!(entry.in_flight, Some(RequestId(2)));          // the refetch that resyncs
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_lost(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
    ) -> Result<(), UpdateRefused> {
        self.advance(now);
        let handler = handler.into();
        let (key, versioning) = self.versioned_key(handler)?;
        let lifetime = handler.lifetime.0;
        let before = self.stream_status_of(&key);
        let queue = Queue::Buffered;
        self.record(
            self.now,
            &key,
            TraceKind::QueueOverflowed { lifetime, queue },
        );
        self.resync_for_missing(&key, lifetime, versioning, before);
        Ok(())
    }

    /// Messages may be missing: the entry awaits a snapshot (or the source's `resync_done`)
    /// and resyncs by its policy; its status follows from `before`.
    fn resync_for_missing(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        versioning: Versioning,
        before: StreamStatus,
    ) {
        if let Some(live) = self.live_mut(key) {
            live.awaiting_snapshot = true;
        }
        self.resync(key, lifetime, versioning);
        self.status_follows(key, lifetime, before);
    }

    /// The source of `handler`'s stream may have missed messages — it reconnected (R32), or it
    /// knows it dropped some — so the entry resyncs: a versioned one by its policy, stale until
    /// a snapshot lands or the source reports [`Cache::resync_done`] (`Refetch`: the request in
    /// flight is joined or one starts; `Resume`: [`Effect::Resume`] from the watermark's next
    /// version); an unversioned one refetches (R32: "unversioned entries refetch"), its
    /// `request_started` saying `resync`. Returns `Err(NotLive)` for a handler that is not the
    /// entry's current one.
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, RequestId, Version};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, StreamStatus, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// cache.upsert_versioned(0, ep, &key, vec![1, 2], Version::new(2))?;
    /// cache.source_resync(5, LifetimeId(1))?;          // the socket came back
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!(entry.stream, StreamStatus::Resyncing { since_ms: 5 });
    /// assert_eq!(entry.in_flight, Some(RequestId(1))); // the refetch that resyncs it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source_resync(
        &mut self,
        now: u64,
        handler: impl Into<HandlerId>,
    ) -> Result<(), UpdateRefused> {
        self.advance(now);
        let handler = handler.into();
        let (key, lifetime) = (self.live_key(handler)?, handler.lifetime.0);
        let endpoint = self.entries.get(&key).map(|slot| slot.endpoint);
        let versions = endpoint.and_then(|endpoint| self.endpoint_config(endpoint).versions);
        let Some(versioning) = versions else {
            self.refetch_for(&key, RequestReason::Resync);
            return Ok(());
        };
        let before = self.stream_status_of(&key);
        self.resync_for_missing(&key, lifetime, versioning, before);
        Ok(())
    }

    /// The version a source resuming `handler`'s stream replays from (R32): the watermark's
    /// next on an endpoint that resyncs by [`Resume`](crate::core::Resync::Resume) (0 without
    /// a watermark); `None` for any other endpoint, or a handler that is not current.
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, Version};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Resync, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning { resync: Resync::Resume, ..Versioning::default() });
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// cache.upsert_versioned(0, ep, &CacheKey::verbatim("chat(1)"), vec![], Version::new(7))?;
    /// assert_eq!(cache.resume_from(LifetimeId(1)), Some(Version::new(8)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume_from(&self, handler: impl Into<HandlerId>) -> Option<Version> {
        let key = self.entries.key_of_handler(handler.into())?;
        let slot = self.entries.get(key)?;
        let versioning = self.endpoint_config(slot.endpoint).versions?;
        if versioning.resync != Resync::Resume {
            return None;
        }
        let watermark = slot.live().and_then(|live| live.watermark);
        watermark.map_or(Some(Version::new(0)), Version::next)
    }

    /// The key of the live entry whose current handler is `handler` (R30).
    fn live_key(&self, handler: HandlerId) -> Result<CacheKey, UpdateRefused> {
        let key = self.entries.key_of_handler(handler).cloned();
        key.ok_or(UpdateRefused::NotLive)
    }

    /// The key of `handler`'s live entry and its endpoint's version rules.
    fn versioned_key(&self, handler: HandlerId) -> Result<(CacheKey, Versioning), UpdateRefused> {
        let key = self.live_key(handler)?;
        let endpoint = self.entries.get(&key).map(|slot| slot.endpoint);
        let versions = endpoint.and_then(|endpoint| self.endpoint_config(endpoint).versions);
        Ok((key, versions.ok_or(UpdateRefused::NotVersioned)?))
    }

    /// Set the source's status and follow with the entry's.
    pub(super) fn set_source(&mut self, key: &CacheKey, lifetime: u64, status: StreamStatus) {
        let before = self.stream_status_of(key);
        if let Some(live) = self.live_mut(key) {
            live.source = status;
        }
        self.status_follows(key, lifetime, before);
    }

    /// The stream status of `key`'s entry, `Idle` without a live state.
    pub(super) fn stream_status_of(&self, key: &CacheKey) -> StreamStatus {
        self.entries
            .get(key)
            .and_then(|slot| slot.live())
            .map_or(StreamStatus::Idle, |live| live.status())
    }

    /// The entry's live state, created on first use.
    pub(super) fn live_mut(&mut self, key: &CacheKey) -> Option<&mut LiveState<D>> {
        let slot = self.entries.get_mut(key)?;
        Some(slot.live_mut().get_or_insert_with(Box::default))
    }

    /// After an operation on `key`'s entry: the resync state follows the queues (stale while
    /// messages are held or missing), and a changed stream status is traced and notified (R28).
    pub(super) fn status_follows(&mut self, key: &CacheKey, lifetime: u64, before: StreamStatus) {
        let now = self.now;
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        let Some(live) = slot.live_mut().as_mut() else {
            return;
        };
        let missing = !live.held.is_empty() || live.awaiting_snapshot || live.rebase_overflowed;
        match (missing, live.stale_since) {
            (true, None) => live.stale_since = Some(now),
            (false, Some(_)) => live.stale_since = None,
            _ => {}
        }
        let status = live.status();
        if status == before {
            return;
        }
        slot.version += 1;
        self.record(
            now,
            key,
            TraceKind::StreamStatusChanged { lifetime, status },
        );
        self.notify(key);
    }

    fn deliver<F>(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        versioning: Versioning,
        version: Version,
        recipe: F,
    ) -> Result<Delivery, UpdateRefused>
    where
        F: Fn(&mut Draft<'_, D>) + Send + Sync + 'static,
    {
        let Some(live) = self.live_mut(key) else {
            return Err(UpdateRefused::NotLive);
        };
        let watermark = live.watermark;
        if watermark.is_some_and(|w| version <= w) || live.held.contains_key(&version) {
            live.stale = live.stale.saturating_add(1);
            self.record(self.now, key, TraceKind::StreamStale { lifetime, version });
            return Ok(Delivery::Stale);
        }
        let gap = versioning.contiguous && watermark.is_some_and(|w| w.next() != Some(version));
        if gap {
            let was_stale = live.stale_since.is_some();
            live.held.insert(version, Arc::new(recipe));
            let overflowed = live.held.len() > versioning.max_queued;
            if overflowed {
                live.held.clear();
                live.awaiting_snapshot = true;
            }
            self.record(self.now, key, TraceKind::StreamHeld { lifetime, version });
            if overflowed {
                let queue = Queue::Held;
                self.record(
                    self.now,
                    key,
                    TraceKind::QueueOverflowed { lifetime, queue },
                );
            }
            if overflowed || !was_stale {
                self.resync(key, lifetime, versioning);
            }
            return Ok(Delivery::Held);
        }
        self.apply_next(key, lifetime, versioning, version, Fresh(recipe))?;
        self.drain_held(key, lifetime, versioning)?;
        Ok(Delivery::Applied)
    }

    /// Apply the message that follows the watermark, which becomes its version; while a request
    /// is in flight it is also kept for the rebase (a fresh recipe is boxed only then).
    fn apply_next(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        versioning: Versioning,
        version: Version,
        recipe: impl Pending<D>,
    ) -> Result<(), UpdateRefused> {
        let keep = self
            .entries
            .get(key)
            .is_some_and(|slot| slot.entry.in_flight().is_some());
        if keep {
            return self.apply_kept(key, lifetime, versioning, version, recipe.keep());
        }
        self.apply_update(key, UpdateSource::Lifecycle, false, |d| recipe.run(d))?;
        if let Some(live) = self.live_mut(key) {
            live.watermark = Some(version);
        }
        Ok(())
    }

    /// Apply a message and log it for the rebase of the request in flight (R27, R33).
    fn apply_kept(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        versioning: Versioning,
        version: Version,
        replay: Replay<D>,
    ) -> Result<(), UpdateRefused> {
        self.apply_update(key, UpdateSource::Lifecycle, false, |d| replay(d))?;
        let Some(live) = self.live_mut(key) else {
            return Ok(());
        };
        live.watermark = Some(version);
        if live.rebase_overflowed {
            return Ok(());
        }
        if live.rebase.len() < versioning.max_queued {
            live.rebase.push((version, replay));
            return Ok(());
        }
        live.rebase.clear();
        live.rebase_overflowed = true;
        let queue = Queue::Rebase;
        self.record(
            self.now,
            key,
            TraceKind::QueueOverflowed { lifetime, queue },
        );
        Ok(())
    }

    /// Apply the held messages the watermark has reached, in order; drop those at or below it
    /// (R26).
    fn drain_held(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        versioning: Versioning,
    ) -> Result<(), UpdateRefused> {
        loop {
            let Some(live) = self.live_mut(key) else {
                return Ok(());
            };
            let Some(watermark) = live.watermark else {
                return Ok(());
            };
            let Some((&first, _)) = live.held.first_key_value() else {
                return Ok(());
            };
            if first <= watermark {
                live.held.remove(&first);
                live.stale = live.stale.saturating_add(1);
                let version = first;
                self.record(self.now, key, TraceKind::StreamStale { lifetime, version });
                continue;
            }
            if watermark.next() != Some(first) {
                return Ok(());
            }
            let Some(replay) = live.held.remove(&first) else {
                return Ok(());
            };
            self.apply_next(key, lifetime, versioning, first, replay)?;
        }
    }

    /// Start a resync by the endpoint's policy (R26): a refetch (joining one in flight) or a
    /// resume from the watermark's next version.
    pub(super) fn resync(&mut self, key: &CacheKey, lifetime: u64, versioning: Versioning) {
        let Some(slot) = self.entries.get(key) else {
            return;
        };
        let in_flight = slot.entry.in_flight();
        let watermark = slot.live().and_then(|live| live.watermark);
        match versioning.resync {
            Resync::Refetch => {
                self.record(
                    self.now,
                    key,
                    TraceKind::ResyncStarted {
                        lifetime,
                        policy: Resync::Refetch,
                        from: None,
                    },
                );
                match in_flight {
                    Some(request) => {
                        self.record(self.now, key, TraceKind::RequestJoined { request });
                    }
                    None => self.start_request(key, RequestReason::Resync),
                }
            }
            Resync::Resume => {
                let from = watermark.map_or(Some(Version::new(0)), Version::next);
                let policy = Resync::Resume;
                let kind = TraceKind::ResyncStarted {
                    lifetime,
                    policy,
                    from,
                };
                self.record(self.now, key, kind);
                self.effects.push_back(Effect::Resume {
                    key: key.clone(),
                    lifetime: LifetimeId(lifetime),
                    from,
                });
            }
        }
    }

    /// A snapshot landed on a versioned entry (a fulfilled request, or an upsert, R24, R27):
    /// with a watermark, the messages kept while the request ran and above it are re-applied in
    /// order; without one the snapshot wins. `settles`: the request in flight ended with it.
    pub(super) fn snapshot_landed(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        watermark: Option<Version>,
        settles: bool,
        stale: bool,
    ) {
        let Some(slot) = self.entries.get(key) else {
            return;
        };
        let Some(versioning) = self.endpoint_config(slot.endpoint).versions else {
            return;
        };
        let Some(live) = self.live_mut(key) else {
            return;
        };
        let (kept, overflowed) = if settles {
            let overflowed = std::mem::take(&mut live.rebase_overflowed);
            (std::mem::take(&mut live.rebase), overflowed)
        } else {
            (live.rebase.clone(), live.rebase_overflowed)
        };
        let Some(watermark) = watermark else {
            return;
        };
        if stale {
            // The data stays; a resync this snapshot was to end goes on.
            self.record(
                self.now,
                key,
                TraceKind::SnapshotStale {
                    lifetime,
                    watermark,
                },
            );
            let missing = self
                .entries
                .get(key)
                .and_then(|slot| slot.live())
                .is_some_and(|live| !live.held.is_empty() || live.awaiting_snapshot);
            if missing || overflowed {
                if let Some(live) = self.live_mut(key) {
                    live.awaiting_snapshot |= overflowed;
                }
                self.resync(key, lifetime, versioning);
            }
            return;
        }
        live.watermark = Some(watermark);
        let mut reapplied = 0;
        for (version, replay) in kept.iter().filter(|(v, _)| *v > watermark) {
            self.update_in_place(key, |d| replay(d));
            if let Some(live) = self.live_mut(key) {
                live.watermark = Some(*version);
            }
            reapplied += 1;
        }
        self.record(
            self.now,
            key,
            TraceKind::WatermarkSet {
                lifetime,
                watermark,
                reapplied,
            },
        );
        if let Some(live) = self.live_mut(key) {
            live.awaiting_snapshot = overflowed;
        }
        // A message's recipe may panic here only as it did when first applied; its error, like
        // any refusal, leaves the rest held.
        let _ = self.drain_held(key, lifetime, versioning);
        let gap_left = self
            .entries
            .get(key)
            .and_then(|slot| slot.live())
            .is_some_and(|live| !live.held.is_empty() || live.awaiting_snapshot);
        if gap_left {
            self.resync(key, lifetime, versioning);
        }
    }

    /// Whether a snapshot at `watermark` is older than what the entry's data reflected when its
    /// request started (or, with none in flight, than its watermark): rebased, it would lose the
    /// messages between (R27).
    pub(super) fn snapshot_is_stale(&self, key: &CacheKey, watermark: Version) -> bool {
        let Some(slot) = self.entries.get(key) else {
            return false;
        };
        if self.endpoint_config(slot.endpoint).versions.is_none() || slot.entry.data().is_none() {
            return false;
        }
        let Some(live) = slot.live() else {
            return false;
        };
        let base = if slot.entry.in_flight().is_some() {
            live.rebase_base
        } else {
            live.watermark
        };
        base.is_some_and(|base| watermark < base)
    }

    /// The request in flight was rejected: its rebase log is dropped, the data kept (R27).
    pub(super) fn rebase_dropped(&mut self, key: &CacheKey) {
        if let Some(live) = self
            .entries
            .get_mut(key)
            .and_then(|slot| slot.live_mut().as_mut())
        {
            live.rebase.clear();
            live.rebase_overflowed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{EndpointConfig, Refetch};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Message(u64),
        Refetch,
        Fulfil(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..14u64).prop_map(Op::Message),
            1 => Just(Op::Refetch),
            1 => (0..14u64).prop_map(Op::Fulfil),
        ]
    }

    /// A cache with one versioned entry, loaded at version 0, and its subscription.
    fn loaded(versioning: Versioning) -> (Cache<Vec<u64>>, CacheKey, SubscriptionId) {
        let mut cache: Cache<Vec<u64>> = Cache::new(CacheConfig::default());
        let versions = Some(versioning);
        let config = EndpointConfig {
            versions,
            ..EndpointConfig::default()
        };
        let Ok(ep) = cache.add_endpoint("room", config) else {
            panic!("one endpoint");
        };
        let key = CacheKey::verbatim("room(1)");
        let Ok(sub) = cache.subscribe(0, ep, &key, Refetch::IfMissing) else {
            panic!("the key is the endpoint's");
        };
        let request = started(&mut cache).0.unwrap_or(RequestId(0));
        cache.fulfil_versioned(0, &key, request, vec![], Version::new(0));
        started(&mut cache);
        (cache, key, sub)
    }

    /// Drain the effects: the last request started, whether a notification was queued, and
    /// every other effect.
    fn started(cache: &mut Cache<Vec<u64>>) -> (Option<RequestId>, bool, Vec<Effect<Vec<u64>>>) {
        let (mut request, mut notified, mut others) = (None, false, Vec::new());
        while let Some(effect) = cache.poll_effect() {
            match effect {
                Effect::StartRequest { request: r, .. } => request = Some(r),
                Effect::Notify { .. } => notified = true,
                other => others.push(other),
            }
        }
        (request, notified, others)
    }

    proptest! {
        /// The runtime's way to deliver a message — `stream_message_in_order` first, and
        /// `stream_message` when it declines — does exactly what the general rules alone do:
        /// the same data, watermark, status and trace, the same effects, and a notification
        /// (handed back or queued) after the same operations.
        #[test]
        fn in_order_first_is_stream_message(
            ops in prop::collection::vec(op(), 0..40),
            contiguous in any::<bool>(),
            resume in any::<bool>(),
        ) {
            let resync = if resume { Resync::Resume } else { Resync::Refetch };
            let versioning = Versioning { contiguous, resync, max_queued: 3 };
            let (mut plain, key, sub) = loaded(versioning);
            let (mut fast, _, _) = loaded(versioning);
            let lifetime = plain.entry(&key).map_or(LifetimeId(0), |e| e.lifetime);
            let place = fast.lifetime_place(lifetime);
            prop_assert!(place.is_some());
            let Some(place) = place else { return Ok(()) };
            let mut in_flight: [Option<RequestId>; 2] = [None, None];
            for (at, op) in (1u64..).zip(&ops) {
                let mut handed_back = false;
                match *op {
                    Op::Message(v) => {
                        let version = Version::new(v);
                        plain.advance(at);
                        let a = plain.deliver_by_rules(lifetime.into(), version, move |d| d.push(v));
                        let b = match fast.stream_message_in_order(at, place, version, |d| d.push(v)) {
                            Ok(notify) => {
                                handed_back = notify == Notify::Caller;
                                Ok(Delivery::Applied)
                            }
                            Err(_) => fast.stream_message(at, lifetime, version, move |d| d.push(v)),
                        };
                        prop_assert_eq!(a, b);
                    }
                    Op::Refetch => {
                        prop_assert_eq!(plain.refetch(at, sub), fast.refetch(at, sub));
                    }
                    Op::Fulfil(w) => {
                        for (cache, request) in [&mut plain, &mut fast].into_iter().zip(&mut in_flight) {
                            if let Some(r) = request.take() {
                                cache.fulfil_versioned(at, &key, r, vec![w], Version::new(w));
                            }
                        }
                    }
                }
                let (ra, na, ea) = started(&mut plain);
                let (rb, nb, eb) = started(&mut fast);
                prop_assert_eq!(ra, rb);
                prop_assert_eq!(na, nb || handed_back, "notified after {:?}", op);
                prop_assert_eq!(ea, eb);
                for (request, started) in in_flight.iter_mut().zip([ra, rb]) {
                    if started.is_some() {
                        *request = started;
                    }
                }
                let view = |c: &Cache<Vec<u64>>| {
                    c.entry(&key).map(|e| (e.data.cloned(), e.watermark, e.stream, e.in_flight))
                };
                prop_assert_eq!(view(&plain), view(&fast));
            }
            prop_assert_eq!(plain.trace(), fast.trace());
        }
    }
}
