//! The driver: owns the sans-IO core behind a lock, the clock, and the tasks. It turns the
//! core's effects into tasks started, futures resolved and subscribers woken — and decides no
//! rule of its own.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::core::CacheKey;
use crate::core::HandlerOutcome;
use crate::core::LifetimePlace;
use crate::core::ids::IdMap;
use crate::core::{
    Cache, CacheConfig, Effect, LifetimeId, Refetch, RequestEvent, RequestId, Version, Versioning,
};
use crate::runtime::ending::{Ended, Ending};
use crate::runtime::erased::{ErasedData, ErasedMeta};
use crate::runtime::error::{BoxError, QueryError, panic_message};
use crate::runtime::feed::{Attached, AttachedSource, SourceStart};
use crate::runtime::signal;

/// Runs an entry's query function once.
/// What a query function delivered, erased: the data, its meta, the snapshot's watermark.
pub(crate) struct ErasedFetched {
    pub(crate) data: ErasedData,
    pub(crate) meta: Option<ErasedMeta>,
    pub(crate) watermark: Option<Version>,
    /// The tags the endpoint's `provides_tags` gives for the argument and this data (R38).
    pub(crate) tags: Option<Vec<crate::core::Tag>>,
}

/// A query function's failure, and whether the endpoint's retry predicate finds it worth
/// retrying (R36).
pub(crate) struct FetchError {
    pub(crate) error: QueryError,
    pub(crate) retryable: bool,
}

/// What the runtime keeps of one entry lifetime's endpoint and argument (typed by the endpoint,
/// one allocation shared by everything the lifetime starts): how to fetch its data, and what
/// runs for it — a lifecycle handler, a source that feeds it, or nothing.
pub(crate) trait LifetimeParts: Send + Sync {
    /// Run the query function once.
    fn fetch(&self) -> BoxFuture<'static, Result<ErasedFetched, FetchError>>;
    /// What runs for the entry.
    fn lifecycle(&self) -> LifecycleKind;
    /// Start the lifecycle handler (an endpoint with one; `None` otherwise).
    fn start_handler(
        &self,
        start: LifecycleStart,
    ) -> Option<BoxFuture<'static, Result<(), BoxError>>>;
    /// Attach the entry to the source that feeds it (an endpoint fed by one; `None`
    /// otherwise). Called under the cache's lock.
    fn start_source(&self, start: SourceStart) -> Option<Attached>;
}

/// What runs for each entry of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LifecycleKind {
    /// Nothing.
    None,
    /// A lifecycle handler, in a task of its own.
    Handler,
    /// A source feeding the entry from its own task.
    Source,
}

/// What a lifecycle handler is started with.
pub(crate) struct LifecycleStart {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: CacheKey,
    pub(crate) place: LifetimePlace,
    pub(crate) loaded: oneshot::Receiver<LoadedMsg>,
    /// Ends when the lifetime ends or the handler is restarted.
    pub(crate) ending: Arc<Ending>,
    /// Announces the lifetime's visible changes (see [`Shared::with_lifetime`]).
    pub(crate) changed: signal::Notifier,
    /// The requests on the entry, as they start and settle (R29).
    pub(crate) events: Option<EventsRx>,
}

/// The request events of a lifetime (R29), from the cache to its handler. futures' bounded
/// channel: it allocates as events come, where tokio's allocates a block of 32 slots up front,
/// which every entry would pay for whether its handler reads events or not.
pub(crate) type EventsRx = futures::channel::mpsc::Receiver<RequestEvent>;
type EventsTx = futures::channel::mpsc::Sender<RequestEvent>;

/// A lifetime's request-events channel, holding [`REQUEST_EVENTS`] (its one sender's slot
/// included).
fn events_channel() -> (EventsTx, EventsRx) {
    futures::channel::mpsc::channel(REQUEST_EVENTS - 1)
}

/// How many request events a lifecycle handler may leave unread; later ones are dropped until
/// it reads (they are the handler's information, never the cache's state).
pub(crate) const REQUEST_EVENTS: usize = 64;

/// The lifetime an operation concerns and its change signal, so that its notification needs no
/// lookup in the runtime's own map.
pub(crate) struct Hint<'a> {
    pub(crate) lifetime: LifetimeId,
    pub(crate) changed: &'a signal::Notifier,
}

/// The first data of a lifetime, for its lifecycle handler.
pub(crate) struct LoadedMsg {
    pub(crate) data: ErasedData,
    pub(crate) meta: Option<ErasedMeta>,
}

/// The runtime side of one entry lifetime. Kept small: the map of lifetimes holds one per
/// entry.
struct LifetimeRt {
    /// Bumped on every visible change; dropped at removal, which ends change streams.
    changed: signal::Sender,
    /// The lifetime's endpoint and argument.
    parts: Arc<dyn LifetimeParts>,
    /// The lifecycle handler's side, for an endpoint with one.
    handler: Option<Box<HandlerRt>>,
    /// The source feeding the entry itself, while attached (an endpoint fed by a source).
    source: Option<Box<dyn AttachedSource>>,
    /// The sources that replay, told of each resume the core asks for (R26, R32).
    resume_hooks: Vec<ResumeHook>,
}

/// The runtime side of a lifetime's lifecycle handler.
struct HandlerRt {
    /// The current handler's end signal, made when it starts; ended when this is dropped at
    /// removal, which resolves `removed()` (R14), or when the handler is restarted (R30).
    ending: Option<Arc<Ending>>,
    /// Resolves data-loaded; dropped unsent at removal before loading (R13).
    loaded_tx: Option<oneshot::Sender<LoadedMsg>>,
    loaded_rx: Option<oneshot::Receiver<LoadedMsg>>,
    /// Request events for the handler (R29), and their receiver until it starts.
    events_tx: EventsTx,
    events_rx: Option<EventsRx>,
}

impl HandlerRt {
    fn new() -> Self {
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let (events_tx, events_rx) = events_channel();
        HandlerRt {
            ending: None,
            loaded_tx: Some(loaded_tx),
            loaded_rx: Some(loaded_rx),
            events_tx,
            events_rx: Some(events_rx),
        }
    }
}

impl Drop for HandlerRt {
    fn drop(&mut self) {
        if let Some(ending) = &self.ending {
            ending.end(Ended::Removed);
        }
    }
}

/// A source that replays, told the first version to replay when the core asks the lifetime's
/// source to resume (R26, R32; `None`: past the last version). It returns `false` once the
/// source is gone, and is then dropped.
pub(crate) type ResumeHook = Box<dyn Fn(Option<Version>) -> bool + Send + Sync>;

impl Drop for LifetimeRt {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.detach(false);
        }
    }
}

/// Everything behind the lock.
pub(crate) struct State {
    pub(crate) cache: Cache<ErasedData, QueryError>,
    /// The time every operation is stamped with.
    clock: MsClock,
    lifetimes: IdMap<LifetimeId, LifetimeRt>,
    requests: IdMap<RequestId, AbortHandle>,
}

/// The version rules of `lifetime`'s endpoint (`None`: unversioned, or the lifetime is gone).
fn versioning_of(
    cache: &Cache<ErasedData, QueryError>,
    lifetime: LifetimeId,
) -> Option<Versioning> {
    let entry = cache.lifetime_entry(lifetime)?;
    cache.endpoint(entry.endpoint).versions
}

/// Whole milliseconds from `start` to `now` on tokio's clock.
fn ms_since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// The api's clock in milliseconds ([`Shared::now_ms`]), for operations under the lock. Turning
/// an instant into milliseconds since the start costs about three times as much as reading the
/// clock, so the instant at which the next millisecond begins is kept: a read within the current
/// millisecond is one comparison. Tokio's clock never goes back, paused or not.
struct MsClock {
    start: Instant,
    /// The last value returned, and when the millisecond after it begins.
    ms: u64,
    next: Instant,
}

impl MsClock {
    fn new(start: Instant) -> Self {
        MsClock {
            start,
            ms: 0,
            next: start,
        }
    }

    fn now_ms(&mut self) -> u64 {
        let now = Instant::now();
        if now < self.next {
            return self.ms;
        }
        self.ms = ms_since(self.start, now);
        // Past the representable range, every read computes again.
        self.next = self
            .start
            .checked_add(Duration::from_millis(self.ms.saturating_add(1)))
            .unwrap_or(now);
        self.ms
    }
}

impl State {
    /// Tell `hook` of each resume the core asks of `lifetime`'s source; `false` if the lifetime
    /// is gone.
    pub(crate) fn add_resume_hook(&mut self, lifetime: LifetimeId, hook: ResumeHook) -> bool {
        match self.lifetimes.get_mut(&lifetime) {
            Some(rt) => {
                rt.resume_hooks.push(hook);
                true
            }
            None => false,
        }
    }

    /// Register the runtime side of the lifetime `key` now has, if it is new. Returns a
    /// receiver of its changes (`None` if the key has no entry).
    pub(crate) fn ensure_lifetime(
        &mut self,
        key: &CacheKey,
        make: impl FnOnce() -> Arc<dyn LifetimeParts>,
    ) -> Option<(LifetimeId, signal::Receiver)> {
        let lifetime = self.cache.entry(key)?.lifetime;
        let rt = self.lifetimes.entry(lifetime).or_insert_with(|| {
            let parts = make();
            // Only a handler waits for data-loaded and reads request events: an entry fed by a
            // source, or without a lifecycle, pays for neither channel.
            let handler =
                (parts.lifecycle() == LifecycleKind::Handler).then(|| Box::new(HandlerRt::new()));
            LifetimeRt {
                changed: signal::Sender::new(),
                parts,
                handler,
                source: None,
                resume_hooks: Vec::new(),
            }
        });
        Some((lifetime, rt.changed.subscribe()))
    }
}

/// What the user-facing handles (`Api`, `Endpoint`, `Subscription`) hold. When the last one is
/// dropped the api resets: every lifecycle sees its entry removed and every request is aborted,
/// so nothing is left waiting on an api nobody can reach (lifecycle handles hold the shared
/// state, not this).
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.with(|state, now| state.cache.reset(now));
    }
}

/// The api's shared state.
pub(crate) struct Shared {
    state: Mutex<State>,
    timer: Arc<Notify>,
    start: Instant,
    handle: Handle,
    pub(crate) refetch_on_mount: Refetch,
}

impl Shared {
    pub(crate) fn new(config: CacheConfig, refetch_on_mount: Refetch, handle: Handle) -> Arc<Self> {
        let timer = Arc::new(Notify::new());
        let start = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cache: Cache::new(config),
                clock: MsClock::new(start),
                lifetimes: IdMap::default(),
                requests: IdMap::default(),
            }),
            timer: Arc::clone(&timer),
            start,
            handle,
            refetch_on_mount,
        });
        let weak = Arc::downgrade(&shared);
        shared.handle.spawn(run_timer(weak, timer));
        shared
    }

    /// Milliseconds on the api's clock (tokio's, so paused time is honoured).
    pub(crate) fn now_ms(&self) -> u64 {
        ms_since(self.start, Instant::now())
    }

    /// The lock. A poisoned lock is recovered: the core never panics while holding it, and user
    /// code run under it (update recipes) is caught.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run one operation on the core at the current time, then carry out its effects.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, u64) -> R) -> R {
        self.with_meta(None, None, |state, now| (f(state, now), false))
    }

    /// [`Shared::with`] for an operation on one lifetime (an update through its handle). `f`
    /// also says whether the core handed back the lifetime's notification instead of queueing it
    /// ([`Cache::update_cached_deferring_notify`]); it is then sent through the handle's own
    /// notifier. A queued notification for the lifetime finds it through the core's lifetime
    /// index instead of hashing the key again.
    pub(crate) fn with_lifetime<R>(
        self: &Arc<Self>,
        hint: &Hint<'_>,
        f: impl FnOnce(&mut State, u64) -> (R, bool),
    ) -> R {
        self.with_meta(None, Some(hint), f)
    }

    fn with_meta<R>(
        self: &Arc<Self>,
        meta: Option<(RequestId, ErasedMeta)>,
        hint: Option<&Hint<'_>>,
        f: impl FnOnce(&mut State, u64) -> (R, bool),
    ) -> R {
        let mut state = self.lock();
        let before = state.cache.poll_timeout();
        let now = state.clock.now_ms();
        let (result, notify) = f(&mut state, now);
        if state.cache.has_effects() {
            self.run_effects(&mut state, meta, hint);
        }
        if notify && let Some(hint) = hint {
            hint.changed.send();
        }
        let after = state.cache.poll_timeout();
        drop(state);
        if before != after {
            self.timer.notify_one();
        }
        result
    }

    /// `hint`: a lifetime the operation concerned, if any (see [`Shared::with_lifetime`]).
    fn run_effects(
        self: &Arc<Self>,
        state: &mut State,
        mut meta: Option<(RequestId, ErasedMeta)>,
        hint: Option<&Hint<'_>>,
    ) {
        while let Some(effect) = state.cache.poll_effect() {
            match effect {
                Effect::StartLifecycle { key, lifetime } => {
                    let place = state.cache.lifetime_place(lifetime);
                    let Some(rt) = state.lifetimes.get_mut(&lifetime) else {
                        continue;
                    };
                    let place = place.unwrap_or(LifetimePlace::gone(lifetime));
                    match rt.parts.lifecycle() {
                        LifecycleKind::Handler => {
                            // Once per lifetime: the first data's receiver is taken by the first
                            // start.
                            let Some(loaded) = rt.handler.as_mut().and_then(|h| h.loaded_rx.take())
                            else {
                                continue;
                            };
                            self.start_handler(rt, key, place, loaded);
                        }
                        LifecycleKind::Source if rt.source.is_none() => {
                            let versioning = versioning_of(&state.cache, lifetime);
                            self.start_source(rt, key, place, versioning);
                        }
                        _ => {}
                    }
                }
                Effect::RestartLifecycle { key, handler } => {
                    let place = state.cache.lifetime_place(handler);
                    let Some(rt) = state.lifetimes.get_mut(&handler.lifetime) else {
                        continue;
                    };
                    let place = place.unwrap_or(LifetimePlace::gone_for(handler));
                    match rt.parts.lifecycle() {
                        LifecycleKind::Handler => {
                            // The old handler's entry is gone for it: `removed()` resolves with
                            // `Restarted`, its data-loaded (if still waited for) fails, its
                            // request events end.
                            let old = rt.handler.replace(Box::new(HandlerRt::new()));
                            if let Some(old) = old.and_then(|mut old| old.ending.take()) {
                                old.end(Ended::Restarted);
                            }
                            let Some(loaded) = rt.handler.as_mut().and_then(|h| h.loaded_rx.take())
                            else {
                                continue;
                            };
                            self.start_handler(rt, key, place, loaded);
                        }
                        LifecycleKind::Source => {
                            // A new attachment starts for the new handler (told of the data
                            // when the core resolves it), then the old one ends
                            // (`HandlerRestarted`): in this order the source never sees the
                            // entry's topic without an entry, so it is not unsubscribed and
                            // subscribed again, losing what came between.
                            let old = rt.source.take();
                            let versioning = versioning_of(&state.cache, handler.lifetime);
                            self.start_source(rt, key, place, versioning);
                            if let Some(old) = old {
                                old.detach(true);
                            }
                        }
                        LifecycleKind::None => {}
                    }
                }
                Effect::StartRequest { key, request } => {
                    let Some(lifetime) = state.cache.entry(&key).map(|e| e.lifetime) else {
                        continue;
                    };
                    let Some(rt) = state.lifetimes.get(&lifetime) else {
                        continue;
                    };
                    let parts = Arc::clone(&rt.parts);
                    let weak = Arc::downgrade(self);
                    let task = self.handle.spawn(async move {
                        // The query function runs in this task, never under the cache's lock;
                        // if it panics, the request is rejected with the panic's message.
                        let query = async move { parts.fetch().await };
                        let result = match AssertUnwindSafe(query).catch_unwind().await {
                            Ok(result) => result,
                            // A panic is a bug, not a passing failure: not retried.
                            Err(payload) => Err(FetchError {
                                error: QueryError::new(format!(
                                    "the query function panicked: {}",
                                    panic_message(&*payload)
                                )),
                                retryable: false,
                            }),
                        };
                        if let Some(shared) = weak.upgrade() {
                            shared.complete(&key, request, result);
                        }
                    });
                    state.requests.insert(request, task.abort_handle());
                }
                Effect::AbortRequest { request, .. } => {
                    if let Some(task) = state.requests.remove(&request) {
                        task.abort();
                    }
                }
                Effect::ResolveDataLoaded {
                    lifetime,
                    request,
                    data,
                } => {
                    let meta = match (&meta, request) {
                        (Some((r, _)), Some(req)) if *r == req => meta.take().map(|(_, m)| m),
                        _ => None,
                    };
                    let Some(rt) = state.lifetimes.get_mut(&lifetime) else {
                        continue;
                    };
                    if let Some(tx) = rt.handler.as_mut().and_then(|h| h.loaded_tx.take()) {
                        // The handler may have returned already; then nobody is waiting.
                        let _ = tx.send(LoadedMsg { data, meta });
                    }
                    if let Some(source) = &rt.source {
                        source.data_loaded();
                    }
                }
                Effect::EntryRemoved { lifetime, .. } => {
                    // Dropping the senders resolves `removed()`, ends change streams, and makes
                    // data-loaded yield "removed before loaded" if it never resolved.
                    state.lifetimes.remove(&lifetime);
                }
                Effect::Resume { lifetime, from, .. } => {
                    // The sources that replay are asked; one gone is dropped. With none, the
                    // entry stays resyncing until a source reports (`resync_done`) or a
                    // snapshot lands.
                    if let Some(rt) = state.lifetimes.get_mut(&lifetime) {
                        rt.resume_hooks.retain(|hook| hook(from));
                    }
                }
                Effect::RequestEvent {
                    lifetime, event, ..
                } => {
                    if let Some(handler) = state
                        .lifetimes
                        .get_mut(&lifetime)
                        .and_then(|rt| rt.handler.as_mut())
                    {
                        // Full: the handler is not reading; the event is dropped (REQUEST_EVENTS).
                        let _ = handler.events_tx.try_send(event);
                    }
                }
                Effect::Notify { key } => {
                    // The hinted lifetime, if the core's lifetime index maps it to this key (the
                    // same shared text, so the comparison is a pointer check): it is live, and
                    // the hint carries its notifier. Otherwise the key's live lifetime, if any.
                    if let Some(hint) = hint.filter(|h| {
                        state
                            .cache
                            .key_of_lifetime(h.lifetime)
                            .is_some_and(|k| *k == key)
                    }) {
                        hint.changed.send();
                        continue;
                    }
                    let Some(lifetime) = state.cache.entry(&key).map(|e| e.lifetime) else {
                        continue;
                    };
                    if let Some(rt) = state.lifetimes.get(&lifetime) {
                        rt.changed.send();
                    }
                }
            }
        }
    }

    /// Spawn the lifetime's lifecycle handler for the handler at `place` (R1, R12, R30).
    fn start_handler(
        self: &Arc<Self>,
        rt: &mut LifetimeRt,
        key: CacheKey,
        place: LifetimePlace,
        loaded: oneshot::Receiver<LoadedMsg>,
    ) {
        let Some(handler_rt) = rt.handler.as_mut() else {
            return;
        };
        let ending = Arc::clone(
            handler_rt
                .ending
                .get_or_insert_with(|| Arc::new(Ending::new())),
        );
        let start_with = LifecycleStart {
            shared: Arc::clone(self),
            key: key.clone(),
            place,
            loaded,
            ending,
            changed: rt.changed.notifier(),
            events: handler_rt.events_rx.take(),
        };
        let parts = Arc::clone(&rt.parts);
        let shared = Arc::clone(self);
        let handler = place.handler();
        self.handle.spawn(async move {
            // The user's handler is called here, in its own task: never under the cache's lock,
            // and a panic in its synchronous part is contained like one in its future (R16).
            let run = async move {
                match parts.start_handler(start_with) {
                    Some(run) => run.await,
                    None => Ok(()),
                }
            };
            let outcome = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(Ok(())) => HandlerOutcome::Finished,
                Ok(Err(error)) => HandlerOutcome::Failed {
                    error: error.to_string(),
                },
                Err(payload) => HandlerOutcome::Panicked {
                    message: panic_message(&*payload),
                },
            };
            shared.with(|state, now| state.cache.lifecycle_ended(now, &key, handler, outcome));
        });
    }

    /// Attach the lifetime's entry at `place` to the source that feeds it (R21, R30): no task;
    /// the source's own task delivers the entry's messages.
    fn start_source(
        self: &Arc<Self>,
        rt: &mut LifetimeRt,
        key: CacheKey,
        place: LifetimePlace,
        versioning: Option<Versioning>,
    ) {
        let Some(attached) = rt.parts.start_source(SourceStart {
            shared: Arc::clone(self),
            key,
            place,
            changed: rt.changed.notifier(),
            versioning,
        }) else {
            return;
        };
        rt.source = Some(attached.source);
        rt.resume_hooks.extend(attached.resume);
    }

    /// A request's query function finished.
    fn complete(
        self: &Arc<Self>,
        key: &CacheKey,
        request: RequestId,
        result: Result<ErasedFetched, FetchError>,
    ) {
        match result {
            Ok(ErasedFetched {
                data,
                meta,
                watermark,
                tags,
            }) => {
                let meta = meta.map(|m| (request, m));
                self.with_meta(meta, None, |state, now| {
                    state.requests.remove(&request);
                    // Only the request in flight's result provides tags (a stale one is ignored).
                    if let Some(tags) = tags
                        && state.cache.entry(key).and_then(|e| e.in_flight) == Some(request)
                    {
                        state.cache.provide_tags(now, key, tags);
                    }
                    match watermark {
                        Some(watermark) => state
                            .cache
                            .fulfil_versioned(now, key, request, data, watermark),
                        None => state.cache.fulfil(now, key, request, data),
                    }
                    ((), false)
                });
            }
            Err(FetchError { error, retryable }) => self.with(|state, now| {
                state.requests.remove(&request);
                state
                    .cache
                    .reject_retryable(now, key, request, error, retryable);
            }),
        }
    }

    /// When the timer must next fire.
    fn next_deadline(&self) -> Option<Instant> {
        let at = self.lock().cache.poll_timeout()?;
        Some(self.start + std::time::Duration::from_millis(at))
    }

    /// A timer tick.
    fn tick(self: &Arc<Self>) {
        self.with(|state, now| state.cache.handle_timeout(now));
    }

    /// How many requests are running (for tests and diagnostics).
    pub(crate) fn running_requests(&self) -> usize {
        self.lock().requests.len()
    }

    /// How many lifetimes the runtime tracks (for tests and diagnostics).
    pub(crate) fn tracked_lifetimes(&self) -> usize {
        self.lock().lifetimes.len()
    }

    /// Remove every entry (R7), then give back the memory the runtime's maps grew to: they keep
    /// their capacity as entries come and go, for a cache that fills up again, but after a reset
    /// the cache may stay small for a long time. The core gives back its own
    /// ([`Cache::reset`]).
    pub(crate) fn reset(self: &Arc<Self>) {
        self.with(|state, now| state.cache.reset(now));
        // The reset's effects have run: the removed lifetimes and their aborted requests are
        // gone from the maps, so these keep room only for what is left, if anything.
        let mut state = self.lock();
        state.lifetimes.shrink_to_fit();
        state.requests.shrink_to_fit();
    }

    /// The capacities of the lifetime and request maps, for tests.
    #[cfg(test)]
    pub(crate) fn map_capacities(&self) -> [usize; 2] {
        let state = self.lock();
        [state.lifetimes.capacity(), state.requests.capacity()]
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Wake the timer task so it sees the api is gone and ends.
        self.timer.notify_one();
    }
}

/// The timer task: sleeps until the core's next deadline (or until told the deadline moved),
/// then ticks. Holds the api weakly: when the api is gone, it ends.
///
/// A deadline that has already passed (a keep time of 0, say) is not slept on: tokio's timer
/// rounds a deadline up to its next millisecond tick, which would hold every such removal for up
/// to a millisecond. The task yields once instead (a yielded task runs after the tasks already
/// woken and the driver's turn, as a fired sleep would) and ticks.
async fn run_timer(shared: Weak<Shared>, timer: Arc<Notify>) {
    loop {
        let Some(next) = shared.upgrade().map(|s| s.next_deadline()) else {
            return;
        };
        match next {
            Some(at) if at <= Instant::now() => tokio::task::yield_now().await,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = timer.notified() => continue,
                }
            }
            None => {
                timer.notified().await;
                continue;
            }
        }
        match shared.upgrade() {
            Some(shared) => shared.tick(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Api;

    /// Reset gives back the runtime's maps' memory too (hardening item 11).
    #[tokio::test(flavor = "current_thread")]
    async fn hardening_11_reset_gives_back_the_runtime_maps_memory() {
        const N: u32 = 2_000;
        let api = Api::builder().build();
        let ep = api
            .query::<u32, u32>("n")
            .query_fn(|n: u32| async move { Ok(n) })
            .build()
            .expect("a fresh name");
        for n in 0..N {
            ep.prefetch(n, Refetch::IfMissing).expect("a key");
        }
        let shared = Arc::clone(api.shared());
        let [lifetimes, requests] = shared.map_capacities();
        assert!(lifetimes >= N as usize && requests >= N as usize);
        // Let the requests run (finished or not, the reset removes them all).
        tokio::task::yield_now().await;
        api.reset();
        assert!(api.is_empty());
        assert_eq!(api.in_flight(), (0, 0));
        assert_eq!(shared.map_capacities(), [0, 0]);
        // It works as before.
        let sub = ep.subscribe(7).expect("a key");
        assert_eq!(sub.loaded().await.ok().as_deref(), Some(&7));
    }

    /// The cached clock returns what converting each read would (R23's timestamps): the same
    /// millisecond until it ends, the next one from its first instant on, and jumps.
    #[tokio::test(start_paused = true)]
    async fn cached_clock_agrees_with_converting_every_read() {
        let start = Instant::now();
        let mut clock = MsClock::new(start);
        let steps_us = [0, 999, 1, 1, 998, 1_500, 60_000_000, 0, 1, 999];
        for step in steps_us {
            tokio::time::advance(Duration::from_micros(step)).await;
            assert_eq!(
                clock.now_ms(),
                ms_since(start, Instant::now()),
                "after +{step} µs"
            );
        }
        assert_eq!(clock.now_ms(), 60_004); // 60,004,499 µs in all
    }
}
