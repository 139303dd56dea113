//! Requests and their results: starting, joining, fulfilling, rejecting; upserts (R3, R8–R11, R20).

use std::fmt;

use super::*;
use crate::core::config::Refetch;
use crate::core::data::{CacheData, contain};
use crate::core::entry::any::AnyEntry;
use crate::core::entry::{Added, Entry};
use crate::core::key::CacheKey;
use crate::core::trace::{
    AddCause, Recording, RequestReason, TraceKind, bound_text, bounded_display,
};
use crate::core::version::Version;

impl<D, E> Cache<D, E>
where
    D: CacheData,
    E: fmt::Display,
{
    /// Refetch through a subscription (R11): joins a request in flight (R3), else starts one.
    /// Returns false, doing nothing, for a subscription that is not live (R7a).
    ///
    /// ```
    /// # use livecache::core::RequestId;
    /// use livecache::core::{Cache, EndpointConfig, Refetch, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.fulfil(1, &key, RequestId(1), 5);
    /// assert!(cache.refetch(2, sub));
    /// assert_eq!(cache.entry(&key).unwrap().in_flight, Some(RequestId(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refetch(&mut self, now: u64, subscription: SubscriptionId) -> bool {
        self.advance(now);
        let Some(key) = self.live_subscription(subscription) else {
            return false;
        };
        if let Some(request) = self.entries.get(&key).and_then(|s| s.entry.in_flight()) {
            self.record(self.now, &key, TraceKind::RequestJoined { request });
        } else {
            self.start_request(&key, RequestReason::Refetch);
        }
        self.notify(&key);
        true
    }

    /// Refetch the entry of `lifetime` — what its lifecycle handler asks through its handle
    /// (R29): joins a request in flight (R3), else starts one (reason `Refetch`). Returns false,
    /// doing nothing, when the lifetime has ended (R7a).
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, RequestId};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 1)?;
    /// assert!(cache.refetch_lifetime(1, LifetimeId(1)));
    /// assert_eq!(cache.entry(&key).unwrap().in_flight, Some(RequestId(1)));
    /// assert!(!cache.refetch_lifetime(2, LifetimeId(9)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refetch_lifetime(&mut self, now: u64, handler: impl Into<HandlerId>) -> bool {
        self.advance(now);
        let Some(key) = self.entries.key_of_handler(handler.into()).cloned() else {
            return false;
        };
        self.refetch_for(&key, RequestReason::Refetch);
        true
    }

    /// Refetch `key`'s entry: join the request in flight, or start one for `reason`.
    pub(super) fn refetch_for(&mut self, key: &CacheKey, reason: RequestReason) {
        if let Some(request) = self.entries.get(key).and_then(|s| s.entry.in_flight()) {
            self.record(self.now, key, TraceKind::RequestJoined { request });
        } else {
            self.start_request(key, reason);
        }
        self.notify(key);
    }

    /// A request fulfilled. Ignored (and traced) unless it is the key's request in flight
    /// (R8, R10).
    ///
    /// ```
    /// # use livecache::core::RequestId;
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.fulfil(1, &key, RequestId(99), 5);                 // stale id: ignored
    /// assert_eq!(cache.entry(&key).unwrap().status, Status::Pending);
    /// cache.fulfil(1, &key, RequestId(1), 5);
    /// assert_eq!(cache.entry(&key).unwrap().data, Some(&5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fulfil(&mut self, now: u64, key: &CacheKey, request: RequestId, data: D) {
        self.fulfil_at(now, key, request, data, None);
    }

    /// A request succeeded with a snapshot and its watermark, on a versioned endpoint (R24,
    /// R27): as [`Cache::fulfil`], and the messages applied while the request ran, above the
    /// watermark, are re-applied onto the snapshot in order, so no update is lost to a refetch.
    ///
    /// ```
    /// # use livecache::core::{LifetimeId, RequestId};
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Refetch, Version, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// let sub = cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.fulfil_versioned(1, &key, RequestId(1), vec![1], Version::new(1));
    /// cache.refetch(2, sub);                                            // request 2 runs…
    /// cache.stream_message(3, LifetimeId(1), Version::new(2), |d| d.push(2))?;
    /// cache.stream_message(4, LifetimeId(1), Version::new(3), |d| d.push(3))?;
    /// // …and its snapshot was taken at version 2: message 3 is re-applied onto it.
    /// cache.fulfil_versioned(5, &key, RequestId(2), vec![1, 2], Version::new(2));
    /// assert_eq!(cache.entry(&key).and_then(|e| e.data), Some(&vec![1, 2, 3]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fulfil_versioned(
        &mut self,
        now: u64,
        key: &CacheKey,
        request: RequestId,
        data: D,
        watermark: Version,
    ) {
        self.fulfil_at(now, key, request, data, Some(watermark));
    }

    fn fulfil_at(
        &mut self,
        now: u64,
        key: &CacheKey,
        request: RequestId,
        data: D,
        watermark: Option<Version>,
    ) {
        let request = request.0;
        self.advance(now);
        if !self.is_current(key, request) {
            self.record(self.now, key, TraceKind::ResultIgnored { request });
            return;
        }
        // A panic of the data's `PartialEq` is contained and traced in `receive`; the driver
        // of a request has nobody to report it to.
        self.end_retrying(key);
        let _ = self.receive(key, Some(request), data, watermark);
        self.poll_follows(key);
    }

    /// A request was rejected. Ignored (and traced) unless it is the key's request in flight
    /// (R9, R10). Data is kept; data-loaded stays pending.
    ///
    /// ```
    /// # use livecache::core::RequestId;
    /// use livecache::core::{Cache, EndpointConfig, Refetch, Status, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.subscribe(0, ep, &key, Refetch::IfMissing)?;
    /// cache.reject(1, &key, RequestId(1), "offline".to_string());
    /// assert_eq!(cache.entry(&key).unwrap().status, Status::Rejected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reject(&mut self, now: u64, key: &CacheKey, request: RequestId, error: E) {
        self.reject_retryable(now, key, request, error, true);
    }

    /// The current request of `key` failed for good: status `Rejected` (R9).
    pub(super) fn reject_current(&mut self, key: &CacheKey, request: u64, error: E) {
        self.end_retrying(key);
        let recording = self.config.recording != Recording::Off;
        let text = if recording {
            // At most the cap is copied out of the error, however long its display (R23).
            bounded_display(&error)
        } else {
            String::new()
        };
        let before = self.stream_status_of(key);
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        slot.entry.reject(error);
        let lifetime = slot.entry.lifetime();
        self.rebase_dropped(key);
        self.record(
            self.now,
            key,
            TraceKind::RequestRejected {
                request,
                error: text,
            },
        );
        let request = RequestId(request);
        self.tell_lifecycle(key, RequestEvent::Rejected { request });
        self.status_follows(key, lifetime, before);
        self.removal_follows_subscribers(key);
        self.poll_follows(key);
        self.notify(key);
    }

    /// Upsert data (R20): creates the entry (lifecycle started, data-loaded resolved without
    /// meta) or replaces its data. A request in flight keeps running and its result still applies.
    /// A key whose entry belongs to another endpoint is refused ([`UpsertError::KeyInUse`]); a
    /// panic of the data's `PartialEq` comparing the new data with the cached is contained: the
    /// upsert takes effect with the data counted as changed, and is reported
    /// ([`UpsertError::DataPanicked`]).
    ///
    /// ```
    /// use livecache::core::{Cache, EndpointConfig, Phase, CacheKey};
    /// let mut cache: Cache<u32> = Cache::new(Default::default());
    /// let ep = cache.add_endpoint("a", EndpointConfig::default())?;
    /// let key = CacheKey::verbatim("a(1)");
    /// cache.upsert(0, ep, &key, 7)?;
    /// let entry = cache.entry(&key).unwrap();
    /// assert_eq!((entry.phase, entry.data, entry.removal_deadline), (Phase::Loaded, Some(&7), Some(60_000)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upsert(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        data: D,
    ) -> Result<(), UpsertError> {
        self.upsert_at(now, endpoint, key, data, None)
    }

    /// Upsert a snapshot with its watermark, on a versioned endpoint (R20, R24): as
    /// [`Cache::upsert`], and messages kept for a request in flight above the watermark are
    /// re-applied onto it (R27).
    ///
    /// ```
    /// use livecache::core::{Cache, CacheKey, EndpointConfig, Version, Versioning};
    /// let mut cache: Cache<Vec<u64>> = Cache::new(Default::default());
    /// let versions = Some(Versioning::default());
    /// let ep = cache.add_endpoint("chat", EndpointConfig { versions, ..Default::default() })?;
    /// let key = CacheKey::verbatim("chat(1)");
    /// cache.upsert_versioned(0, ep, &key, vec![7], Version::new(7))?;
    /// assert_eq!(cache.entry(&key).and_then(|e| e.watermark), Some(Version::new(7)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upsert_versioned(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        data: D,
        watermark: Version,
    ) -> Result<(), UpsertError> {
        self.upsert_at(now, endpoint, key, data, Some(watermark))
    }

    fn upsert_at(
        &mut self,
        now: u64,
        endpoint: EndpointId,
        key: &CacheKey,
        data: D,
        watermark: Option<Version>,
    ) -> Result<(), UpsertError> {
        self.advance(now);
        self.claim(endpoint, key)?;
        if self.entries.contains_key(key) {
            return match self.receive(key, None, data, watermark) {
                Some(message) => Err(UpsertError::DataPanicked { message }),
                None => Ok(()),
            };
        }
        let lifetime = self.create(key, AddCause::Upsert);
        self.start_lifecycle(key, endpoint, lifetime);
        let entry: Entry<Added, E> = Entry::new(lifetime);
        let loaded = entry.load(data, self.now);
        let first = self
            .wants_data_loaded(endpoint)
            .then(|| loaded.data().clone());
        self.insert(key, endpoint, AnyEntry::Loaded(loaded));
        self.record(self.now, key, TraceKind::Upserted { data_changed: true });
        self.data_loaded(key, lifetime, None, first);
        let before = self.stream_status_of(key);
        self.snapshot_landed(key, lifetime, watermark, false, false);
        self.status_follows(key, lifetime, before);
        self.removal_follows_subscribers(key);
        self.notify(key);
        Ok(())
    }

    pub(super) fn is_current(&self, key: &CacheKey, request: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|slot| slot.entry.in_flight() == Some(request))
    }

    pub(super) fn next_request(&mut self) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        request
    }

    /// Added → Loading.
    pub(super) fn first_request(
        &mut self,
        key: &CacheKey,
        endpoint: EndpointId,
        entry: Entry<Added, E>,
    ) {
        let request = self.next_request();
        let loading = entry.start_request(request);
        self.insert(key, endpoint, AnyEntry::Loading(loading));
        self.request_started(key, request, RequestReason::Load);
    }

    /// Another request on an existing entry. On a versioned entry the watermark it starts
    /// from is kept: its snapshot must reach it to be rebased (R27).
    pub(super) fn start_request(&mut self, key: &CacheKey, reason: RequestReason) {
        let request = self.next_request();
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        slot.entry.begin_request(request);
        if let Some(live) = slot.live_mut().as_mut() {
            live.rebase_base = live.watermark;
        }
        if let Some(tags) = slot.tags.as_mut() {
            tags.invalidated = false;
        }
        self.end_retrying(key);
        self.request_started(key, request, reason);
    }

    /// Record a started request, ask the driver to run it, and tell the entry's lifecycle.
    fn request_started(&mut self, key: &CacheKey, request: u64, reason: RequestReason) {
        self.record(self.now, key, TraceKind::RequestStarted { request, reason });
        self.effects.push_back(Effect::StartRequest {
            key: key.clone(),
            request: RequestId(request),
        });
        let request = RequestId(request);
        self.tell_lifecycle(key, RequestEvent::Started { request, reason });
        self.poll_follows(key);
    }

    /// Queue a request event for the entry's lifecycle handler, if its endpoint has one (R29).
    pub(super) fn tell_lifecycle(&mut self, key: &CacheKey, event: RequestEvent) {
        let Some(slot) = self.entries.get(key) else {
            return;
        };
        if self.wants_data_loaded(slot.endpoint) {
            let lifetime = LifetimeId(slot.entry.lifetime());
            self.effects.push_back(Effect::RequestEvent {
                key: key.clone(),
                lifetime,
                event,
            });
        }
    }

    pub(super) fn maybe_request(&mut self, key: &CacheKey, refetch: Refetch) {
        let Some(slot) = self.entries.get(key) else {
            return;
        };
        // R38: an entry an invalidation reached while unused refetches now.
        let wants = refetch.wants(slot.entry.fulfilled_at(), self.now) || self.invalidated(key);
        if let Some(request) = slot.entry.in_flight() {
            if wants {
                self.record(self.now, key, TraceKind::RequestJoined { request });
            }
        } else if slot.entry.data().is_none() {
            self.start_request(key, RequestReason::Load);
        } else if wants {
            self.start_request(key, RequestReason::Mount);
        }
    }

    /// Data from a request (`Some(request)`) or an upsert (`None`) for a live entry. The data's
    /// `PartialEq` is user code: it is called here, not inside the transition (whose panic would
    /// take the entry away), and a panic of it is contained — the new data is stored, counted as
    /// changed, and `data_panicked` is traced before the result's event. Returns the panic's
    /// message, if it panicked.
    pub(super) fn receive(
        &mut self,
        key: &CacheKey,
        request: Option<u64>,
        data: D,
        watermark: Option<Version>,
    ) -> Option<String> {
        let now = self.now;
        let before = self.stream_status_of(key);
        // R27: a snapshot older than what the data reflected when its request started cannot be
        // rebased without losing messages: stale, the data stays.
        let stale = watermark.is_some_and(|w| self.snapshot_is_stale(key, w));
        let compared = match self.entries.get(key).and_then(|slot| slot.entry.data()) {
            Some(_) if stale => Ok(false),
            Some(old) => contain("PartialEq", || *old != data),
            None => Ok(true),
        };
        let (changed, panicked) = match compared {
            Ok(changed) => (changed, None),
            Err(message) => (true, Some(message)),
        };
        let (endpoint, lifetime, data_changed, first) =
            self.entries.transition(key, |mut slot| {
                if request.is_some() {
                    slot.entry.settle();
                }
                let lifetime = slot.entry.lifetime();
                let (entry, data_changed, first) = slot.entry.receive(data, now, changed);
                slot.entry = entry;
                if data_changed {
                    slot.version += 1;
                }
                let endpoint = slot.endpoint;
                (slot, (endpoint, lifetime, data_changed, first))
            })?;
        if let Some(message) = &panicked {
            self.data_panicked(key, message);
        }
        let first_data = (first && self.wants_data_loaded(endpoint))
            .then(|| {
                self.entries
                    .get(key)
                    .and_then(|slot| slot.entry.data().cloned())
            })
            .flatten();
        let kind = match request {
            Some(request) => TraceKind::RequestFulfilled {
                request,
                data_changed,
            },
            None => TraceKind::Upserted { data_changed },
        };
        self.record(self.now, key, kind);
        if let Some(request) = request {
            let request = RequestId(request);
            self.tell_lifecycle(key, RequestEvent::Fulfilled { request });
        }
        if first {
            self.data_loaded(key, lifetime, request, first_data);
        }
        self.snapshot_landed(key, lifetime, watermark, request.is_some(), stale);
        self.status_follows(key, lifetime, before);
        self.removal_follows_subscribers(key);
        self.notify(key);
        panicked
    }

    /// Record that the data type's own code panicked (contained) on `key`'s entry.
    pub(super) fn data_panicked(&mut self, key: &CacheKey, message: &str) {
        if self.config.recording != Recording::Off {
            let message = bound_text(message.to_owned());
            self.record(self.now, key, TraceKind::DataPanicked { message });
        }
    }

    pub(super) fn data_loaded(
        &mut self,
        key: &CacheKey,
        lifetime: u64,
        request: Option<u64>,
        data: Option<D>,
    ) {
        self.record(self.now, key, TraceKind::DataLoaded { lifetime, request });
        if let Some(data) = data {
            self.effects.push_back(Effect::ResolveDataLoaded {
                lifetime: LifetimeId(lifetime),
                request: request.map(RequestId),
                data,
            });
        }
    }
}
