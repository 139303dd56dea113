//! Conformance tests of the tokio runtime (`Api`, endpoints, subscriptions, lifecycle handles),
//! one or more per SPEC rule, each named after the rule it pins.
//!
//! Every test runs on a current-thread runtime with tokio's clock paused: `sleep` auto-advances
//! the clock, so RTK's timing pins (present at 59 s, gone at 61 s, …) are checked to the
//! millisecond without waiting. Query functions are controlled by the tests: they answer at
//! once, after a fixed sleep on the paused clock, when the test replies through a oneshot
//! ([`Replies`]), or never (holding a [`SetOnDrop`] guard that records being dropped).
//! Lifecycle handlers are [`Probe`]s: they log what they saw and keep their loaded handles for
//! the test to use.
//!
//! `tests/checks/rule_traces.rs` pins the same rules on the sans-IO core; these tests pin what only the
//! runtime can get wrong: timers, tasks, futures resolved or dropped, RAII subscriptions.

use std::collections::VecDeque;
use std::fmt::{self, Debug};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use livecache::core::Patch;
use livecache::core::{
    AddCause, HandlerOutcome, Recording, RemoveCause, TraceEvent, TraceKind, UpdateSource,
};
use livecache::core::{CacheKey, Keep, KeyOverride, LifetimeId, Refetch};
use livecache::core::{MAX_KEEP_MS, PatchError, Phase, Status};
use livecache::{
    Api, Arg, BeforeData, BoxError, Data, Endpoint, EntryHandle, EntryRemoved, Error, QueryState,
    RemovedBeforeLoaded, Subscription, UpdateError, WithData,
};
use serde_json::json;
use tokio::sync::oneshot;

type TestResult = Result<(), BoxError>;

// ===== helpers =====

/// Let every ready task run (spawned handlers and requests, aborted tasks being dropped)
/// without moving the paused clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Sleep on the paused clock (auto-advances; no wall-clock time passes).
async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Await `f`, failing instead of hanging if it can never finish: the paused clock jumps to
/// the limit only when nothing else can make progress.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(365 * 24 * 3600), f)
        .await
        .expect("awaited a future that can never finish")
}

/// Whether the endpoint has an entry for `arg`.
fn present<A: Arg, T: Data, M: Send + Sync + 'static>(ep: &Endpoint<A, T, M>, arg: &A) -> bool {
    !ep.state(arg)
        .expect("the key serialises")
        .is_uninitialized()
}

/// The trace events recorded for `key`.
fn events(api: &Api, key: &CacheKey) -> Vec<TraceEvent> {
    api.trace()
        .into_iter()
        .filter(|e| e.key == key.as_str())
        .collect()
}

/// How many events recorded for `key` match `pred`.
fn count(api: &Api, key: &CacheKey, pred: impl Fn(&TraceKind) -> bool) -> usize {
    events(api, key).iter().filter(|e| pred(&e.kind)).count()
}

/// `(time, cause, loaded)` of every removal of `key`.
fn removals(api: &Api, key: &CacheKey) -> Vec<(u64, RemoveCause, bool)> {
    events(api, key)
        .into_iter()
        .filter_map(|e| match e.kind {
            TraceKind::EntryRemoved { cause, loaded, .. } => Some((e.at_ms, cause, loaded)),
            _ => None,
        })
        .collect()
}

/// Every `lifecycle_ended` of `key`: `(lifetime, outcome)`.
fn lifecycle_ends(api: &Api, key: &CacheKey) -> Vec<(u64, HandlerOutcome)> {
    events(api, key)
        .into_iter()
        .filter_map(|e| match e.kind {
            TraceKind::LifecycleEnded {
                lifetime, outcome, ..
            } => Some((lifetime, outcome)),
            _ => None,
        })
        .collect()
}

/// The deadlines of every `removal_scheduled` of `key`.
fn deadlines(api: &Api, key: &CacheKey) -> Vec<u64> {
    events(api, key)
        .into_iter()
        .filter_map(|e| match e.kind {
            TraceKind::RemovalScheduled { deadline_ms } => Some(deadline_ms),
            _ => None,
        })
        .collect()
}

fn is_request_started(k: &TraceKind) -> bool {
    matches!(k, TraceKind::RequestStarted { .. })
}

fn is_data_loaded(k: &TraceKind) -> bool {
    matches!(k, TraceKind::DataLoaded { .. })
}

fn is_lifecycle_started(k: &TraceKind) -> bool {
    matches!(k, TraceKind::LifecycleStarted { .. })
}

fn is_updated(k: &TraceKind) -> bool {
    matches!(k, TraceKind::Updated { .. })
}

/// The next item of a change stream if one is ready now (after letting tasks run).
async fn ready_item<S: Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    settle().await;
    stream.next().now_or_never()
}

type Changes<T> = Pin<Box<dyn Stream<Item = QueryState<T>> + Send>>;

/// A query function's error type, to check it survives as itself (R9).
#[derive(Clone, Debug, PartialEq)]
struct Offline(String);

impl fmt::Display for Offline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offline: {}", self.0)
    }
}

impl std::error::Error for Offline {}

/// Sets its flag when dropped: proves a query future was dropped (R5).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A query function that answers only when the test replies, in call order.
struct Replies<T> {
    calls: AtomicUsize,
    waiting: Mutex<VecDeque<oneshot::Sender<Result<T, Offline>>>>,
}

impl<T: Send + 'static> Replies<T> {
    fn new() -> Arc<Self> {
        Arc::new(Replies {
            calls: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
        })
    }

    fn query<A>(
        self: &Arc<Self>,
    ) -> impl Fn(A) -> BoxFuture<'static, Result<T, BoxError>> + Send + Sync + 'static {
        let replies = Arc::clone(self);
        move |_arg| {
            replies.calls.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            replies.waiting.lock().expect("not poisoned").push_back(tx);
            async move {
                match rx.await {
                    Ok(Ok(data)) => Ok(data),
                    Ok(Err(e)) => Err(Box::new(e) as BoxError),
                    Err(_) => Err("the test dropped the reply".into()),
                }
            }
            .boxed()
        }
    }

    /// Answer the oldest waiting call; whether it was still listening.
    fn reply(&self, result: Result<T, Offline>) -> bool {
        let tx = self
            .waiting
            .lock()
            .expect("not poisoned")
            .pop_front()
            .expect("a query call is waiting for its reply");
        tx.send(result).is_ok()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// What a [`Probe`] handler saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen<T, M> {
    Started {
        arg: String,
        lifetime: u64,
    },
    Loaded {
        data: T,
        meta: Option<M>,
    },
    RemovedBeforeLoaded,
    /// `removed()` resolved; the status the handle read right after.
    Removed {
        status_after: Status,
    },
}

/// A lifecycle handler that logs what it sees and keeps its loaded handles (by lifetime) for
/// the test, past removal.
struct Probe<T, M> {
    calls: AtomicUsize,
    log: Mutex<Vec<Seen<T, M>>>,
    handles: Mutex<Vec<EntryHandle<WithData, T, M>>>,
}

impl<T: Data + Debug, M: Clone + Debug + Send + Sync + 'static> Probe<T, M> {
    fn new() -> Arc<Self> {
        Arc::new(Probe {
            calls: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
        })
    }

    fn push(&self, seen: Seen<T, M>) {
        self.log.lock().expect("not poisoned").push(seen);
    }

    fn log(&self) -> Vec<Seen<T, M>> {
        self.log.lock().expect("not poisoned").clone()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Use the loaded handle of `lifetime` (kept even after removal).
    fn with_handle<R>(
        &self,
        lifetime: u64,
        f: impl FnOnce(&EntryHandle<WithData, T, M>) -> R,
    ) -> R {
        let handles = self.handles.lock().expect("not poisoned");
        let handle = handles
            .iter()
            .find(|h| h.lifetime() == LifetimeId(lifetime))
            .expect("the handler got data for this lifetime");
        f(handle)
    }

    fn handler<A: Debug + Send + 'static>(
        self: &Arc<Self>,
    ) -> impl Fn(A, EntryHandle<BeforeData, T, M>) -> BoxFuture<'static, Result<(), BoxError>>
    + Send
    + Sync
    + 'static {
        let probe = Arc::clone(self);
        move |arg, entry| {
            probe.calls.fetch_add(1, Ordering::SeqCst);
            let probe = Arc::clone(&probe);
            async move {
                let lifetime = entry.lifetime();
                probe.push(Seen::Started {
                    arg: format!("{arg:?}"),
                    lifetime: lifetime.0,
                });
                match entry.data_loaded().await {
                    Ok((handle, first)) => {
                        probe.push(Seen::Loaded {
                            data: (*first.data).clone(),
                            meta: first.meta.map(|m| (*m).clone()),
                        });
                        let removed = handle.removed();
                        probe.handles.lock().expect("not poisoned").push(handle);
                        removed.await;
                        let status_after =
                            probe.with_handle(lifetime.0, |h| h.cache_entry().status);
                        probe.push(Seen::Removed { status_after });
                    }
                    Err(RemovedBeforeLoaded) => probe.push(Seen::RemovedBeforeLoaded),
                }
                Ok(())
            }
            .boxed()
        }
    }
}

fn started<T, M>(arg: &str, lifetime: u64) -> Seen<T, M> {
    Seen::Started {
        arg: arg.to_owned(),
        lifetime,
    }
}

fn patch(value: serde_json::Value) -> Patch {
    serde_json::from_value(value).expect("a valid RFC 6902 document")
}

// ===== R1, R12: creation =====

#[tokio::test(start_paused = true)]
async fn r01_handler_task_starts_before_the_request_task() -> TestResult {
    let order = Arc::new(Mutex::new(Vec::new()));
    let api = Api::builder().build();
    let (in_query, in_handler) = (Arc::clone(&order), Arc::clone(&order));
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(move |n: u32| {
            let order = Arc::clone(&in_query);
            async move {
                order.lock().expect("not poisoned").push("query");
                Ok(n)
            }
        })
        .on_cache_entry_added(move |_n, entry| {
            let order = Arc::clone(&in_handler);
            async move {
                order.lock().expect("not poisoned").push("handler");
                let _ = entry.data_loaded().await;
                Ok(())
            }
        })
        .build()?;
    let sub = ep.subscribe(7)?;
    assert_eq!(*within(sub.loaded()).await?, 7);
    assert_eq!(*order.lock().expect("not poisoned"), ["handler", "query"]);
    let key = ep.key(&7)?;
    let kinds: Vec<_> = events(&api, &key).into_iter().map(|e| e.kind).collect();
    let at = |pred: fn(&TraceKind) -> bool| kinds.iter().position(pred);
    assert!(at(is_lifecycle_started) < at(is_request_started));
    assert!(at(is_lifecycle_started).is_some());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r12_recreated_key_calls_the_handler_again_with_a_fresh_handle() -> TestResult {
    let probe = Probe::<u32, ()>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n * 10) })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let sub = ep.subscribe(1)?;
    within(sub.loaded()).await?;
    assert!(ep.remove(&1)?);
    settle().await;
    let again = ep.subscribe(1)?;
    within(again.loaded()).await?;
    settle().await;
    assert_eq!(probe.calls(), 2);
    assert_eq!(
        probe.log(),
        [
            started("1", 1),
            Seen::Loaded {
                data: 10,
                meta: None
            },
            Seen::Removed {
                status_after: Status::Uninitialized
            },
            started("1", 2),
            Seen::Loaded {
                data: 10,
                meta: None
            },
        ]
    );
    Ok(())
}

// ===== R4: keep_unused_data_for =====

#[tokio::test(start_paused = true)]
async fn r04_entry_present_at_59s_gone_at_61s_after_last_unsubscribe() -> TestResult {
    let api = Api::builder().build();
    let users = api
        .query::<u32, String>("getUser")
        .query_fn(|id: u32| async move { Ok(format!("user #{id}")) })
        .build()?;
    let key = users.key(&1)?;
    let sub = users.subscribe(1)?;
    assert_eq!(within(sub.loaded()).await?.as_str(), "user #1");
    let t0 = api.now_ms();
    drop(sub);
    assert_eq!(deadlines(&api, &key), [t0 + 60_000]);

    sleep_ms(59_000).await;
    assert!(present(&users, &1), "removed before 60 s");
    assert_eq!(users.state(&1)?.data().map(String::as_str), Some("user #1"));
    sleep_ms(2_000).await;
    assert!(!present(&users, &1), "still present at 61 s");
    assert!(api.is_empty());
    assert_eq!(api.in_flight(), (0, 0));
    assert_eq!(
        removals(&api, &key),
        [(t0 + 60_000, RemoveCause::Expired, true)]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_api_keep_29s_and_endpoint_keep_35s_overriding_it() -> TestResult {
    let api = Api::builder()
        .keep_unused_data_for(Duration::from_secs(29))
        .build();
    let api_keep = api
        .query::<u32, u32>("apiKeep")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let own_keep = api
        .query::<u32, u32>("ownKeep")
        .keep_unused_data_for(Duration::from_secs(35))
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let (a, b) = (api_keep.subscribe(1)?, own_keep.subscribe(1)?);
    within(a.loaded()).await?;
    within(b.loaded()).await?;
    drop((a, b));

    sleep_ms(28_000).await;
    assert!(present(&api_keep, &1), "api keep 29 s: gone at 28 s");
    assert!(present(&own_keep, &1));
    sleep_ms(2_000).await; // 30 s
    assert!(!present(&api_keep, &1), "api keep 29 s: present at 30 s");
    assert!(present(&own_keep, &1), "endpoint keep 35 s: gone at 30 s");
    sleep_ms(4_000).await; // 34 s
    assert!(present(&own_keep, &1), "endpoint keep 35 s: gone at 34 s");
    sleep_ms(2_000).await; // 36 s
    assert!(
        !present(&own_keep, &1),
        "endpoint keep 35 s: present at 36 s"
    );
    assert!(api.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_keep_zero_is_not_removed_inside_the_drop_but_after_1ms() -> TestResult {
    let api = Api::builder().keep_unused_data_for(Keep::For(0)).build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let key = ep.key(&3)?;
    let sub = ep.subscribe(3)?;
    within(sub.loaded()).await?;
    let t0 = api.now_ms();
    drop(sub);
    // synchronously after the drop: still there, removal only scheduled
    assert!(present(&ep, &3), "removed inside the drop");
    assert_eq!(api.len(), 1);
    assert_eq!(deadlines(&api, &key), [t0]);
    assert!(removals(&api, &key).is_empty());

    sleep_ms(1).await;
    assert!(!present(&ep, &3), "keep 0: still present after 1 ms");
    assert_eq!(removals(&api, &key), [(t0, RemoveCause::Expired, true)]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_keep_never_is_still_present_after_2_pow_31_minus_1_ms() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .keep_unused_data_for(Keep::Never)
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    within(sub.loaded()).await?;
    drop(sub);
    sleep_ms((1 << 31) - 1).await;
    assert!(present(&ep, &1), "keep never: removed");
    assert!(deadlines(&api, &key).is_empty(), "keep never: scheduled");
    assert!(removals(&api, &key).is_empty());
    // only remove/reset remove it
    api.reset();
    assert!(!present(&ep, &1));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_huge_keep_duration_is_clamped_without_overflow() -> TestResult {
    let api = Api::builder().keep_unused_data_for(Duration::MAX).build();
    let api_max = api
        .query::<u32, u32>("apiMax")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let own_huge = api
        .query::<u32, u32>("ownHuge")
        .keep_unused_data_for(Duration::from_secs(u64::MAX / 2))
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let (a, b) = (api_max.subscribe(1)?, own_huge.subscribe(1)?);
    within(a.loaded()).await?;
    within(b.loaded()).await?;
    let t0 = api.now_ms();
    drop((a, b));
    let (ka, kb) = (api_max.key(&1)?, own_huge.key(&1)?);
    assert_eq!(deadlines(&api, &ka), [t0 + MAX_KEEP_MS]);
    assert_eq!(deadlines(&api, &kb), [t0 + MAX_KEEP_MS]);

    sleep_ms(MAX_KEEP_MS - 1).await;
    assert!(present(&api_max, &1), "removed before the clamp");
    assert!(present(&own_huge, &1), "removed before the clamp");
    sleep_ms(2).await;
    assert!(!present(&api_max, &1), "not removed at the clamp");
    assert!(!present(&own_huge, &1), "not removed at the clamp");
    assert_eq!(
        removals(&api, &ka),
        [(t0 + MAX_KEEP_MS, RemoveCause::Expired, true)]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_request_settling_with_zero_subscribers_rearms_from_settle_time() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("slow")
        .query_fn(|n: u32| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(n)
        })
        .build()?;
    let key = ep.key(&1)?;
    let t0 = api.now_ms();
    drop(ep.subscribe(1)?);
    sleep_ms(69_000).await;
    assert!(
        present(&ep, &1),
        "not re-armed when the request settled at 10 s"
    );
    assert_eq!(ep.state(&1)?.data(), Some(&1));
    sleep_ms(2_000).await;
    assert!(!present(&ep, &1));
    assert_eq!(deadlines(&api, &key), [t0 + 60_000, t0 + 70_000]);
    assert_eq!(
        removals(&api, &key),
        [(t0 + 70_000, RemoveCause::Expired, true)]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r04_r06_prefetch_whose_request_never_settles_is_still_collected() -> TestResult {
    let dropped = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicBool::new(false));
    let api = Api::builder().build();
    let (d, c) = (Arc::clone(&dropped), Arc::clone(&completed));
    let ep = api
        .query::<u32, u32>("never")
        .query_fn(move |_n: u32| {
            let guard = SetOnDrop(Arc::clone(&d));
            let completed = Arc::clone(&c);
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                completed.store(true, Ordering::SeqCst);
                Ok(0)
            }
        })
        .build()?;
    ep.prefetch(1, Refetch::IfMissing)?;
    settle().await;
    assert_eq!(api.in_flight(), (1, 1));
    sleep_ms(59_000).await;
    assert!(present(&ep, &1));
    assert!(!dropped.load(Ordering::SeqCst));
    sleep_ms(2_000).await;
    settle().await;
    assert!(!present(&ep, &1), "an unsettled prefetch leaked");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the query future was not dropped"
    );
    assert!(!completed.load(Ordering::SeqCst));
    assert_eq!(api.in_flight(), (0, 0));
    Ok(())
}

// ===== R2: re-subscribe inside the window =====

#[tokio::test(start_paused = true)]
async fn r02_resubscribe_inside_the_window_keeps_the_entry_and_its_lifecycle() -> TestResult {
    let probe = Probe::<String, ()>::new();
    let api = Api::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let ep = api
        .query::<String, String>("getMessages")
        .query_fn(move |room: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(format!("welcome to {room}")) }
        })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let arg = "redux".to_owned();
    let key = ep.key(&arg)?;
    let first = ep.subscribe(arg.clone())?;
    let data = within(first.loaded()).await?;
    drop(first);
    sleep_ms(30_000).await;

    let second = ep.subscribe(arg.clone())?;
    assert!(
        Arc::ptr_eq(&second.state().data.expect("kept data"), &data),
        "the data was refetched or replaced"
    );
    assert_eq!(
        count(&api, &key, |k| matches!(k, TraceKind::RemovalCancelled)),
        1
    );
    // past the first deadline: the cancelled timer must not remove it
    sleep_ms(60_000).await;
    assert!(present(&ep, &arg), "a cancelled timer removed the entry");
    settle().await;
    assert_eq!(probe.calls(), 1, "the handler ran again");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the entry was refetched");
    assert_eq!(
        count(&api, &key, |k| matches!(k, TraceKind::EntryAdded { .. })),
        1
    );
    assert_eq!(
        probe.log(),
        [
            started("\"redux\"", 1),
            Seen::Loaded {
                data: "welcome to redux".to_owned(),
                meta: None
            }
        ],
        "removed() resolved"
    );
    assert!(!probe.with_handle(1, |h| h.is_removed()));

    // a later unsubscribe arms a full new window
    let t1 = api.now_ms();
    drop(second);
    sleep_ms(59_000).await;
    assert!(present(&ep, &arg));
    sleep_ms(2_000).await;
    settle().await;
    assert!(!present(&ep, &arg));
    assert_eq!(
        removals(&api, &key),
        [(t1 + 60_000, RemoveCause::Expired, true)]
    );
    assert_eq!(
        probe.log().last(),
        Some(&Seen::Removed {
            status_after: Status::Uninitialized
        })
    );
    Ok(())
}

// ===== R3: dedup =====

#[tokio::test(start_paused = true)]
async fn r03_subscribing_while_a_request_is_in_flight_starts_no_second_request() -> TestResult {
    let replies = Replies::<u32>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(replies.query())
        .build()?;
    let key = ep.key(&1)?;
    let first = ep.subscribe(1)?;
    settle().await;
    assert_eq!(replies.calls(), 1);

    let plain = ep.subscribe(1)?;
    let forced = ep.subscribe_with(1, Refetch::Always)?;
    ep.prefetch(1, Refetch::Always)?;
    first.refetch()?;
    settle().await;
    assert_eq!(replies.calls(), 1, "a second request started");
    assert_eq!(count(&api, &key, is_request_started), 1);
    assert_eq!(
        count(&api, &key, |k| matches!(k, TraceKind::RequestJoined { .. })),
        3
    );
    assert_eq!(api.in_flight().0, 1);

    assert!(replies.reply(Ok(42)));
    for sub in [&first, &plain, &forced] {
        assert_eq!(*within(sub.loaded()).await?, 42);
    }
    assert_eq!(replies.calls(), 1);
    assert_eq!(api.in_flight().0, 0);
    Ok(())
}

// ===== R5: expiry aborts the request =====

#[tokio::test(start_paused = true)]
async fn r05_expiry_drops_the_in_flight_query_future() -> TestResult {
    let dropped = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = Probe::<u32, ()>::new();
    let api = Api::builder().build();
    let (d, c, n) = (
        Arc::clone(&dropped),
        Arc::clone(&completed),
        Arc::clone(&calls),
    );
    // first call answers at once; the refetch hangs while holding a guard
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(move |_arg: u32| {
            let call = n.fetch_add(1, Ordering::SeqCst) + 1;
            let guard = (call > 1).then(|| SetOnDrop(Arc::clone(&d)));
            let completed = Arc::clone(&c);
            async move {
                if let Some(_guard) = guard {
                    std::future::pending::<()>().await;
                    completed.store(true, Ordering::SeqCst);
                }
                Ok(u32::try_from(call).expect("few calls"))
            }
        })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    assert_eq!(*within(sub.loaded()).await?, 1);
    sub.refetch()?;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(sub.state().is_fetching);
    let t0 = api.now_ms();
    drop(sub);

    sleep_ms(59_000).await;
    assert!(!dropped.load(Ordering::SeqCst), "dropped before expiry");
    assert_eq!(api.in_flight(), (1, 1));
    sleep_ms(2_000).await;
    settle().await;
    assert!(!present(&ep, &1));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the query future was not dropped"
    );
    assert!(!completed.load(Ordering::SeqCst));
    assert_eq!(api.in_flight(), (0, 0));
    assert_eq!(
        count(&api, &key, |k| matches!(
            k,
            TraceKind::RequestAborted { request: 2 }
        )),
        1
    );
    assert_eq!(
        removals(&api, &key),
        [(t0 + 60_000, RemoveCause::Expired, true)]
    );
    assert_eq!(
        probe.log(),
        [
            started("1", 1),
            Seen::Loaded {
                data: 1,
                meta: None
            },
            Seen::Removed {
                status_after: Status::Uninitialized
            }
        ]
    );
    assert_eq!(lifecycle_ends(&api, &key), [(1, HandlerOutcome::Finished)]);
    Ok(())
}

// ===== R7, R13, R17: removal before the first data =====

#[derive(Clone, Copy, Debug)]
enum EarlyRemoval {
    Remove,
    Reset,
    Expiry,
}

/// The first request never settles; the entry is removed by `how`. data_loaded must yield
/// `Err(RemovedBeforeLoaded)`, the query future must be dropped, the handler must finish and
/// nothing must stay tracked.
async fn removal_before_first_data(how: EarlyRemoval) -> TestResult {
    let dropped = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicBool::new(false));
    let probe = Probe::<u32, ()>::new();
    let api = Api::builder().build();
    let (d, c) = (Arc::clone(&dropped), Arc::clone(&completed));
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(move |_n: u32| {
            let guard = SetOnDrop(Arc::clone(&d));
            let completed = Arc::clone(&c);
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                completed.store(true, Ordering::SeqCst);
                Ok(0)
            }
        })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&5)?;
    let sub = ep.subscribe(5)?;
    settle().await;
    assert_eq!(api.in_flight(), (1, 1));
    assert_eq!(probe.log(), [started("5", 1)]);

    let (sub, cause) = match how {
        EarlyRemoval::Remove => {
            assert!(ep.remove(&5)?);
            (Some(sub), RemoveCause::Removed)
        }
        EarlyRemoval::Reset => {
            api.reset();
            (Some(sub), RemoveCause::Reset)
        }
        EarlyRemoval::Expiry => {
            drop(sub);
            sleep_ms(61_000).await;
            (None, RemoveCause::Expired)
        }
    };
    settle().await;

    assert!(!present(&ep, &5), "{how:?}: entry still present");
    assert_eq!(
        probe.log(),
        [started("5", 1), Seen::RemovedBeforeLoaded],
        "{how:?}: data_loaded did not yield RemovedBeforeLoaded"
    );
    assert_eq!(api.in_flight(), (0, 0), "{how:?}: something left pending");
    assert!(dropped.load(Ordering::SeqCst), "{how:?}: query future kept");
    assert!(!completed.load(Ordering::SeqCst));
    let removed = removals(&api, &key);
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].1, removed[0].2), (cause, false));
    assert_eq!(
        lifecycle_ends(&api, &key),
        [(1, HandlerOutcome::Finished)],
        "{how:?}: the handler task did not finish"
    );
    if let Some(sub) = sub {
        assert!(sub.state().is_uninitialized());
        assert_eq!(within(sub.loaded()).await, Err(EntryRemoved));
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r13_remove_before_first_data_yields_removed_before_loaded() -> TestResult {
    removal_before_first_data(EarlyRemoval::Remove).await
}

#[tokio::test(start_paused = true)]
async fn r13_reset_before_first_data_yields_removed_before_loaded() -> TestResult {
    removal_before_first_data(EarlyRemoval::Reset).await
}

#[tokio::test(start_paused = true)]
async fn r13_expiry_before_first_data_yields_removed_before_loaded() -> TestResult {
    removal_before_first_data(EarlyRemoval::Expiry).await
}

#[tokio::test(start_paused = true)]
async fn r07_reset_empties_the_api_and_leaves_it_usable() -> TestResult {
    let probe = Probe::<u32, ()>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n + 1) })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let (a, b) = (ep.subscribe(1)?, ep.subscribe(2)?);
    within(a.loaded()).await?;
    within(b.loaded()).await?;
    api.reset();
    settle().await;
    assert!(api.is_empty());
    assert_eq!(api.in_flight(), (0, 0));
    let removed = probe
        .log()
        .iter()
        .filter(|s| matches!(s, Seen::Removed { .. }))
        .count();
    assert_eq!(removed, 2);
    let again = ep.subscribe(1)?;
    assert_eq!(*within(again.loaded()).await?, 2);
    assert_eq!(probe.calls(), 3);
    Ok(())
}

// ===== R7a: stale subscriptions =====

#[tokio::test(start_paused = true)]
async fn r07a_subscription_of_a_removed_entry_is_uninitialized_refetch_errs_stream_ends()
-> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let sub = ep.subscribe(9)?;
    within(sub.loaded()).await?;
    let mut changes: Changes<u32> = Box::pin(sub.changes());
    let first = within(changes.next())
        .await
        .expect("the current state first");
    assert_eq!(first.status, Status::Fulfilled);

    assert!(ep.remove(&9)?);
    assert!(sub.state().is_uninitialized());
    assert_eq!(sub.refetch(), Err(EntryRemoved));
    assert_eq!(within(sub.loaded()).await, Err(EntryRemoved));
    let rest = tokio::time::timeout(Duration::from_secs(1), changes.collect::<Vec<_>>())
        .await
        .map_err(|_| "the change stream did not end")?;
    assert!(!rest.is_empty(), "no final Uninitialized state");
    assert!(rest.iter().all(QueryState::is_uninitialized));
    assert!(api.is_empty(), "refetch re-created the entry");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r07a_dropping_a_stale_subscription_leaves_a_recreated_entrys_deadline() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let key = ep.key(&1)?;
    let stale = ep.subscribe(1)?;
    within(stale.loaded()).await?;
    let t_removed = api.now_ms();
    assert!(ep.remove(&1)?);

    // re-created without a subscriber: deadline t1 + 60 s
    let t1 = api.now_ms();
    ep.prefetch(1, Refetch::IfMissing)?;
    settle().await;
    assert_eq!(ep.state(&1)?.data(), Some(&1));
    assert!(
        stale.state().is_uninitialized(),
        "stale sees the new lifetime"
    );
    assert_eq!(stale.refetch(), Err(EntryRemoved));
    sleep_ms(30_000).await;
    let before = api.trace().len();
    drop(stale);
    assert_eq!(api.trace().len(), before, "the stale drop was recorded");
    assert_eq!(deadlines(&api, &key).last(), Some(&(t1 + 60_000)));

    sleep_ms(29_000).await;
    assert!(present(&ep, &1));
    sleep_ms(2_000).await;
    assert!(!present(&ep, &1), "the stale drop re-armed the deadline");
    assert_eq!(
        removals(&api, &key),
        [
            (t_removed, RemoveCause::Removed, true),
            (t1 + 60_000, RemoveCause::Expired, true)
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r07a_dropping_a_stale_subscription_leaves_a_recreated_entrys_subscribers() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let key = ep.key(&1)?;
    let stale = ep.subscribe(1)?;
    within(stale.loaded()).await?;
    api.reset();
    let fresh = ep.subscribe(1)?;
    within(fresh.loaded()).await?;
    let before = api.trace().len();
    drop(stale);
    assert_eq!(api.trace().len(), before, "the stale drop was recorded");
    sleep_ms(600_000).await;
    assert!(
        present(&ep, &1),
        "the stale drop unsubscribed the new lifetime"
    );
    assert_eq!(fresh.state().status, Status::Fulfilled);
    assert!(deadlines(&api, &key).is_empty());
    drop(fresh);
    assert_eq!(deadlines(&api, &key), [api.now_ms() + 60_000]);
    Ok(())
}

// ===== R8, R15: change streams =====

#[tokio::test(start_paused = true)]
async fn r08_changes_yields_the_current_state_first_then_only_the_latest() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, Vec<u32>>("list")
        .query_fn(|n: u32| async move { Ok(vec![n]) })
        .build()?;
    let sub = ep.subscribe(0)?;
    within(sub.loaded()).await?;
    let mut changes: Changes<Vec<u32>> = Box::pin(sub.changes());
    let first = within(changes.next()).await.expect("the current state");
    assert_eq!(first.data(), Some(&vec![0]));
    assert!(ready_item(&mut changes).await.is_none(), "a spurious state");

    for i in 1..=5 {
        ep.update_query_data(&0, |d| d.push(i))?;
    }
    let latest = within(changes.next()).await.expect("a change");
    assert_eq!(latest.data(), Some(&vec![0, 1, 2, 3, 4, 5]));
    assert!(
        ready_item(&mut changes).await.is_none(),
        "intermediate states were queued"
    );

    // a stream of a subscription that has seen no change yet starts with the current state too
    let late = ep.subscribe(0)?;
    let mut late_changes: Changes<Vec<u32>> = Box::pin(late.changes());
    let current = late_changes.next().now_or_never().flatten();
    assert_eq!(
        current.and_then(|s| s.data),
        Some(Arc::new(vec![0, 1, 2, 3, 4, 5])),
        "no current state first"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r15_a_recipe_that_only_reads_wakes_no_change_stream() -> TestResult {
    let probe = Probe::<Vec<u32>, ()>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, Vec<u32>>("list")
        .query_fn(|n: u32| async move { Ok(vec![n]) })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&4)?;
    let sub = ep.subscribe(4)?;
    within(sub.loaded()).await?;
    settle().await;
    let mut changes: Changes<Vec<u32>> = Box::pin(sub.changes());
    within(changes.next()).await.expect("the current state");

    let mut seen_len = 0;
    let patches = ep.update_query_data(&4, |d| seen_len = d.len())?;
    assert_eq!(seen_len, 1, "the recipe was not called");
    assert!(patches.patches.is_empty());
    probe.with_handle(1, |h| h.update_cached_data(|d| seen_len += d.len()))?;
    assert_eq!(seen_len, 2);
    let set = probe.with_handle(1, |h| {
        h.update_cached_data_with_patches(|d| seen_len += d.len())
    })?;
    assert!(set.is_empty());
    assert!(
        ready_item(&mut changes).await.is_none(),
        "a read-only recipe woke the stream"
    );
    assert_eq!(count(&api, &key, is_updated), 0);
    assert_eq!(sub.state().phase, Some(Phase::Loaded));

    // a real update wakes it once (the stream is live)
    probe.with_handle(1, |h| h.update_cached_data(|d| d.push(5)))?;
    let next = within(changes.next()).await.expect("a change");
    assert_eq!(next.data(), Some(&vec![4, 5]));
    assert_eq!(next.phase, Some(Phase::Streaming));
    assert!(ready_item(&mut changes).await.is_none());
    Ok(())
}

// ===== R9, R11: rejection and refetch =====

#[tokio::test(start_paused = true)]
async fn r09_rejected_request_leaves_data_loaded_pending_with_the_typed_error() -> TestResult {
    let replies = Replies::<u32>::new();
    let probe = Probe::<u32, ()>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(replies.query())
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    settle().await;
    assert!(replies.reply(Err(Offline("no route".into()))));
    settle().await;

    let state = sub.state();
    assert_eq!(state.status, Status::Rejected);
    assert_eq!(state.phase, Some(Phase::Loading));
    assert!(state.data.is_none());
    assert!(!state.is_fetching);
    let error = state.error.expect("the error is stored");
    assert_eq!(
        error.downcast_ref::<Offline>(),
        Some(&Offline("no route".into()))
    );
    assert_eq!(probe.log(), [started("1", 1)], "data_loaded settled");
    assert_eq!(api.in_flight(), (0, 1), "the lifetime is no longer tracked");
    assert!(lifecycle_ends(&api, &key).is_empty(), "the handler ended");
    assert!(sub.loaded().now_or_never().is_none(), "loaded() settled");

    // the handler was still waiting: the next success reaches it
    sub.refetch()?;
    settle().await;
    assert!(replies.reply(Ok(8)));
    assert_eq!(*within(sub.loaded()).await?, 8);
    settle().await;
    assert_eq!(
        probe.log(),
        [
            started("1", 1),
            Seen::Loaded {
                data: 8,
                meta: None
            }
        ]
    );
    let state = sub.state();
    assert_eq!(state.status, Status::Fulfilled);
    assert!(state.error.is_none(), "a fulfil must clear the error");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r11_refetch_never_reruns_the_lifecycle_nor_resolves_data_loaded_twice() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = Probe::<usize, ()>::new();
    let api = Api::builder().build();
    let counter = Arc::clone(&calls);
    let ep = api
        .query::<u32, usize>("getCount")
        .query_fn(move |_n: u32| {
            let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(call)
            }
        })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    assert_eq!(*within(sub.loaded()).await?, 1);

    sub.refetch()?;
    let state = sub.state();
    assert_eq!(state.status, Status::Pending);
    assert!(state.is_fetching);
    assert_eq!(state.data(), Some(&1), "data dropped during refetch");
    sleep_ms(20).await;
    assert_eq!(sub.state().data(), Some(&2));
    let forced = ep.subscribe_with(1, Refetch::Always)?;
    sleep_ms(20).await;
    assert_eq!(forced.state().data(), Some(&3));

    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(probe.calls(), 1, "refetch re-ran the lifecycle");
    assert_eq!(
        probe.log(),
        [
            started("1", 1),
            Seen::Loaded {
                data: 1,
                meta: None
            }
        ]
    );
    assert_eq!(count(&api, &key, is_request_started), 3);
    assert_eq!(count(&api, &key, is_data_loaded), 1);
    assert_eq!(count(&api, &key, is_lifecycle_started), 1);
    Ok(())
}

// ===== R14, R7a: handles kept past removal =====

/// A `getMessages` endpoint whose handler keeps its loaded handles in `probe`, and a settled
/// subscription to `"redux"` (lifetime 1): the api, the endpoint, the key and the subscription.
async fn loaded_redux(
    probe: &Arc<Probe<Vec<String>, ()>>,
) -> Result<
    (
        Api,
        Endpoint<String, Vec<String>>,
        CacheKey,
        Subscription<Vec<String>>,
    ),
    BoxError,
> {
    let api = Api::builder().build();
    let ep = api
        .query::<String, Vec<String>>("getMessages")
        .query_fn(|room: String| async move { Ok(vec![format!("welcome to {room}")]) })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let arg = "redux".to_owned();
    let key = ep.key(&arg)?;
    let sub = ep.subscribe(arg)?;
    within(sub.loaded()).await?;
    settle().await;
    Ok((api, ep, key, sub))
}

#[tokio::test(start_paused = true)]
async fn r14_update_after_removal_returns_entry_removed_through_a_kept_handle() -> TestResult {
    let probe = Probe::<Vec<String>, ()>::new();
    let (api, ep, key, sub) = loaded_redux(&probe).await?;
    let arg = "redux".to_owned();
    probe.with_handle(1, |h| h.update_cached_data(|d| d.push("hi".into())))?;
    assert_eq!(
        sub.state().data().map(Vec::len),
        Some(2),
        "a live update failed"
    );

    assert!(ep.remove(&arg)?);
    settle().await;
    let mut called = false;
    let result = probe.with_handle(1, |h| {
        assert!(h.is_removed());
        assert!(h.cache_entry().is_uninitialized());
        h.update_cached_data(|d| {
            called = true;
            d.push("late".into());
        })
    });
    assert_eq!(result, Err(UpdateError::EntryRemoved));
    assert!(!called, "the recipe ran on a removed entry");

    // a re-created entry of the key is not touched by the old handle
    let again = ep.subscribe(arg.clone())?;
    let fresh = within(again.loaded()).await?;
    let updated = probe.with_handle(1, |h| {
        h.update_cached_data_with_patches(|d| d.push("late".into()))
    });
    assert_eq!(updated, Err(UpdateError::EntryRemoved));
    assert!(probe.with_handle(1, |h| h.cache_entry().is_uninitialized()));
    assert!(Arc::ptr_eq(&again.state().data.expect("data"), &fresh));
    assert_eq!(count(&api, &key, is_updated), 1, "only the live update");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r14_every_clone_of_a_loaded_handle_updates_one_lifetime_and_sees_its_removal() -> TestResult
{
    let probe = Probe::<Vec<String>, ()>::new();
    let (api, ep, key, sub) = loaded_redux(&probe).await?;
    let arg = "redux".to_owned();
    let clone = probe.with_handle(1, EntryHandle::clone);
    assert_eq!(clone.lifetime(), LifetimeId(1));
    clone.update_cached_data(|d| d.push("from a clone".into()))?;
    probe.with_handle(1, |h| {
        h.update_cached_data(|d| d.push("from the original".into()))
    })?;
    assert_eq!(
        sub.state().data().map(Vec::as_slice),
        Some(
            &[
                "welcome to redux".to_owned(),
                "from a clone".into(),
                "from the original".into()
            ][..]
        )
    );
    assert_eq!(count(&api, &key, is_updated), 2);

    assert!(ep.remove(&arg)?);
    within(clone.removed()).await;
    assert!(probe.with_handle(1, EntryHandle::is_removed));
    assert_eq!(
        clone.update_cached_data(|d| d.push("late".into())),
        Err(UpdateError::EntryRemoved)
    );
    assert_eq!(count(&api, &key, is_updated), 2);
    Ok(())
}

// ===== R16: failing handlers are contained =====

#[tokio::test(start_paused = true)]
async fn r16_failed_and_panicked_handlers_are_traced_and_disturb_nothing() -> TestResult {
    let api = Api::builder().build();
    let failing = api
        .query::<u32, u32>("failing")
        .query_fn(|n: u32| async move { Ok(n) })
        .on_cache_entry_added(|_n, entry| async move {
            entry.data_loaded().await?;
            Err("socket refused".into())
        })
        .build()?;
    let panicking = api
        .query::<u32, u32>("panicking")
        .query_fn(|n: u32| async move { Ok(n) })
        .on_cache_entry_added(|_n, entry| async move {
            if entry.data_loaded().await.is_ok() {
                panic!("lifecycle exploded");
            }
            Ok(())
        })
        .build()?;
    let probe = Probe::<u32, ()>::new();
    let healthy = api
        .query::<u32, u32>("healthy")
        .query_fn(|n: u32| async move { Ok(n * 2) })
        .on_cache_entry_added(probe.handler())
        .build()?;

    let (f, p) = (failing.subscribe(1)?, panicking.subscribe(1)?);
    assert_eq!(*within(f.loaded()).await?, 1);
    assert_eq!(*within(p.loaded()).await?, 1);
    settle().await;
    assert_eq!(
        lifecycle_ends(&api, &failing.key(&1)?),
        [(
            1,
            HandlerOutcome::Failed {
                error: "socket refused".into()
            }
        )]
    );
    assert_eq!(
        lifecycle_ends(&api, &panicking.key(&1)?),
        [(
            2,
            HandlerOutcome::Panicked {
                message: "lifecycle exploded".into()
            }
        )]
    );

    // the failing entries carry on
    assert_eq!(f.state().data(), Some(&1));
    failing.update_query_data(&1, |d| **d += 10)?;
    assert_eq!(f.state().data(), Some(&11));
    p.refetch()?;
    settle().await;
    assert_eq!(p.state().status, Status::Fulfilled);
    // and so do the others
    let h = healthy.subscribe(21)?;
    assert_eq!(*within(h.loaded()).await?, 42);
    settle().await;
    assert_eq!(
        probe.log(),
        [
            started("21", 3),
            Seen::Loaded {
                data: 42,
                meta: None
            }
        ]
    );
    drop((f, p, h));
    sleep_ms(61_000).await;
    assert!(api.is_empty());
    assert_eq!(api.in_flight(), (0, 0));
    Ok(())
}

// ===== R18, R19, R20: updates from outside =====

#[tokio::test(start_paused = true)]
async fn r18_update_query_data_without_data_skips_the_recipe_and_returns_empty_patches()
-> TestResult {
    let replies = Replies::<Vec<u32>>::new();
    let api = Api::builder().build();
    let ep = api
        .query::<u32, Vec<u32>>("list")
        .query_fn(replies.query())
        .build()?;
    let mut called = false;
    let absent = ep.update_query_data(&1, |_| called = true)?;
    assert!(!called, "the recipe ran on an absent entry");
    assert!(absent.patches.is_empty());
    assert!(api.trace().is_empty());
    assert!(api.is_empty(), "an update created an entry");

    let sub = ep.subscribe(1)?;
    settle().await;
    let loading = ep.update_query_data(&1, |_| called = true)?;
    assert!(!called, "the recipe ran on an entry without data");
    assert!(loading.patches.is_empty());
    assert!(replies.reply(Ok(vec![1])));
    assert_eq!(*within(sub.loaded()).await?, [1]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r18_update_query_data_returns_patches_whose_undo_restores_the_data() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, Vec<String>>("list")
        .query_fn(|_n: u32| async move { Ok(vec!["a".to_owned()]) })
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    let before = within(sub.loaded()).await?;
    let collection = ep.update_query_data(&1, |d| d.push("b".into()))?;
    assert_eq!(
        serde_json::to_value(&collection.patches.patches)?,
        json!([{"op": "add", "path": "/1", "value": "b"}])
    );
    assert_eq!(
        sub.state().data(),
        Some(&vec!["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(
        count(&api, &key, |k| matches!(
            k,
            TraceKind::Updated {
                source: UpdateSource::UpdateQueryData,
                ..
            }
        )),
        1
    );
    collection.undo()?;
    assert_eq!(sub.state().data(), Some(&*before));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r19_failing_patch_errs_and_leaves_the_data_unchanged() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, Vec<u32>>("list")
        .query_fn(|_n: u32| async move { Ok(vec![1, 2]) })
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    let before = within(sub.loaded()).await?;
    let mut changes: Changes<Vec<u32>> = Box::pin(sub.changes());
    within(changes.next()).await.expect("the current state");

    // the first operation applies, the second fails: nothing may change
    let half = patch(json!([
        {"op": "replace", "path": "/0", "value": 7},
        {"op": "test", "path": "/1", "value": 99}
    ]));
    let result = ep.patch_query_data(&1, &half);
    assert!(
        matches!(result, Err(Error::Patch(PatchError::Apply(_)))),
        "{result:?}"
    );
    let bad_path = patch(json!([{"op": "remove", "path": "/5"}]));
    let result = ep.patch_query_data(&1, &bad_path);
    assert!(
        matches!(result, Err(Error::Patch(PatchError::Apply(_)))),
        "{result:?}"
    );
    let wrong_type = patch(json!([{"op": "replace", "path": "/0", "value": "x"}]));
    let result = ep.patch_query_data(&1, &wrong_type);
    assert!(
        matches!(result, Err(Error::Patch(PatchError::Schema(_)))),
        "{result:?}"
    );
    assert!(Arc::ptr_eq(&sub.state().data.expect("data"), &before));
    assert_eq!(count(&api, &key, is_updated), 0);
    assert!(
        ready_item(&mut changes).await.is_none(),
        "a failed patch woke"
    );

    // a patch that applies does change it
    ep.patch_query_data(&1, &patch(json!([{"op": "add", "path": "/-", "value": 3}])))?;
    assert_eq!(sub.state().data(), Some(&vec![1, 2, 3]));
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
struct Meta {
    status: u16,
}

#[tokio::test(start_paused = true)]
async fn r20_upsert_of_an_absent_key_starts_the_lifecycle_with_no_meta() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let probe = Probe::<String, Meta>::new();
    let api = Api::builder().build();
    let counter = Arc::clone(&calls);
    let ep = api
        .query::<u32, String>("getUser")
        .query_fn_with_meta(move |id: u32| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok((format!("fetched #{id}"), Meta { status: 200 })) }
        })
        .on_cache_entry_added(probe.handler())
        .build()?;
    let key = ep.key(&1)?;
    let t0 = api.now_ms();
    ep.upsert_query_data(1, "upserted #1".into())?;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "an upsert fetched");
    assert_eq!(
        probe.log(),
        [
            started("1", 1),
            Seen::Loaded {
                data: "upserted #1".into(),
                meta: None
            }
        ]
    );
    assert_eq!(
        events(&api, &key)[0].kind,
        TraceKind::EntryAdded {
            lifetime: 1,
            cause: AddCause::Upsert
        }
    );
    assert_eq!(deadlines(&api, &key), [t0 + 60_000], "unused upsert kept");

    // meta from query_fn_with_meta reaches data_loaded
    let sub = ep.subscribe(2)?;
    assert_eq!(within(sub.loaded()).await?.as_str(), "fetched #2");
    settle().await;
    assert_eq!(
        probe.log()[2..],
        [
            started("2", 2),
            Seen::Loaded {
                data: "fetched #2".into(),
                meta: Some(Meta { status: 200 })
            }
        ]
    );
    sleep_ms(61_000).await;
    assert!(!present(&ep, &1), "the unused upserted entry was kept");
    assert!(present(&ep, &2));
    Ok(())
}

// ===== R23: a whole lifecycle, snapshot =====

#[tokio::test(start_paused = true)]
async fn r23_small_lifecycle_trace_is_deterministic() -> TestResult {
    let api = Api::builder()
        .recording(Recording::EventsWithPatches)
        .build();
    let ep = api
        .query::<String, Vec<String>>("getMessages")
        .query_fn(|room: String| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(vec![format!("welcome to {room}")])
        })
        .on_cache_entry_added(|_room, entry| async move {
            let (entry, _first) = entry.data_loaded().await?;
            entry.update_cached_data(|d| d.push("hi".into()))?;
            entry.removed().await;
            Ok(())
        })
        .build()?;
    let sub = ep.subscribe("redux".into())?;
    within(sub.loaded()).await?;
    sleep_ms(900).await;
    drop(sub);
    sleep_ms(61_000).await;
    settle().await;
    assert!(api.is_empty());
    insta::assert_yaml_snapshot!("runtime_small_lifecycle", api.trace());
    Ok(())
}

// ===== cache keys =====

#[tokio::test(start_paused = true)]
async fn keys_verbatim_key_of_another_endpoints_entry_is_key_in_use() -> TestResult {
    let api = Api::builder().build();
    let first = api
        .query::<u32, u32>("first")
        .serialize_query_args(|_| KeyOverride::Verbatim("shared".into()))
        .query_fn(|n: u32| async move { Ok(n) })
        .build()?;
    let second = api
        .query::<u32, String>("second")
        .serialize_query_args(|_| KeyOverride::Verbatim("shared".into()))
        .query_fn(|n: u32| async move { Ok(n.to_string()) })
        .build()?;
    let sub = first.subscribe(1)?;
    within(sub.loaded()).await?;

    let collision = |r: Result<(), Error>| match r {
        Err(Error::KeyInUse { key, owner }) => key.as_str() == "shared" && owner == "first",
        _ => false,
    };
    assert!(collision(second.subscribe(2).map(drop)));
    assert!(collision(second.prefetch(2, Refetch::IfMissing)));
    assert!(collision(second.upsert_query_data(2, "two".into())));
    assert_eq!(sub.state().data(), Some(&1), "the owner's entry changed");
    assert_eq!(
        count(&api, &first.key(&1)?, |k| matches!(
            k,
            TraceKind::Subscribed { .. }
        )),
        1,
        "a refused subscribe was recorded"
    );

    // the refused subscribe left no subscriber behind: the entry is still collected
    drop(sub);
    sleep_ms(61_000).await;
    assert!(api.is_empty());
    // and once the key is free, the other endpoint may use it
    let other = second.subscribe(2)?;
    assert_eq!(within(other.loaded()).await?.as_str(), "2");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn keys_duplicate_endpoint_name_is_refused() -> TestResult {
    let api = Api::builder().build();
    let users = api
        .query::<u32, String>("getUser")
        .query_fn(|id: u32| async move { Ok(format!("user #{id}")) })
        .build()?;
    let again = api
        .query::<String, u32>("getUser")
        .query_fn(|_s: String| async move { Ok(0) })
        .build();
    assert!(
        matches!(&again, Err(Error::DuplicateEndpoint { name }) if name == "getUser"),
        "{again:?}"
    );
    let sub = users.subscribe(1)?;
    assert_eq!(within(sub.loaded()).await?.as_str(), "user #1");
    Ok(())
}

// ===== containment and key ownership: bugs these tests found, now fixed =====

#[tokio::test(start_paused = true)]
async fn r16_handler_panicking_before_its_future_is_contained() -> TestResult {
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .on_cache_entry_added(|n: u32, entry: EntryHandle<BeforeData, u32, ()>| {
            assert!(n != 13, "unlucky");
            async move {
                let _ = entry.data_loaded().await;
                Ok(())
            }
        })
        .build()?;
    let key = ep.key(&13)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ep.subscribe(13)));
    let panicked_out = outcome.is_err();
    settle().await;
    let fetching = ep.state(&13)?.is_fetching;
    drop(outcome); // the subscription, if one was returned
    sleep_ms(61_000).await;
    settle().await;
    let leaked = present(&ep, &13);
    let ends = lifecycle_ends(&api, &key);
    assert!(!panicked_out, "the handler's panic reached the subscriber");
    assert!(!fetching, "the request did not run");
    assert!(!leaked, "the entry was never collected (leaked subscriber)");
    assert!(
        matches!(ends.as_slice(), [(1, HandlerOutcome::Panicked { .. })]),
        "{ends:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r16_handler_closure_can_use_the_api() -> TestResult {
    // Calling the api on this thread from the closure hangs forever (std Mutex re-entry).
    // To fail instead of hanging, another thread calls the api while the closure waits a
    // bounded number of spins for it.
    let free = Arc::new(AtomicBool::new(false));
    let readers = Arc::new(Mutex::new(Vec::new()));
    let api = Api::builder().build();
    let (api2, free2, readers2) = (api.clone(), Arc::clone(&free), Arc::clone(&readers));
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(|n: u32| async move { Ok(n) })
        .on_cache_entry_added(move |_n: u32, entry: EntryHandle<BeforeData, u32, ()>| {
            let api = api2.clone();
            let done = Arc::new(AtomicBool::new(false));
            let done2 = Arc::clone(&done);
            let reader = std::thread::spawn(move || {
                let _ = api.len();
                done2.store(true, Ordering::SeqCst);
            });
            readers2.lock().expect("not poisoned").push(reader);
            for _ in 0..1_000_000 {
                if done.load(Ordering::SeqCst) {
                    free2.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::yield_now();
            }
            async move {
                let _ = entry.data_loaded().await;
                Ok(())
            }
        })
        .build()?;
    let sub = ep.subscribe(1)?;
    // The closure runs in the handler's own task, so let it run before looking.
    assert_eq!(*within(sub.loaded()).await?, 1);
    let started = readers
        .lock()
        .expect("not poisoned")
        .drain(..)
        .collect::<Vec<_>>();
    assert_eq!(started.len(), 1, "the handler closure ran once");
    for reader in started {
        reader.join().map_err(|_| "the reader thread panicked")?;
    }
    assert!(
        free.load(Ordering::SeqCst),
        "the api was locked while the handler closure ran"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn r03_r09_panicking_query_fn_does_not_wedge_the_entry() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let api = Api::builder().build();
    let ep = api
        .query::<u32, u32>("getCount")
        .query_fn(move |n: u32| {
            let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert!(call > 1, "the first call panics");
                Ok(n)
            }
        })
        .build()?;
    let sub = ep.subscribe(1)?;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        !sub.state().is_fetching,
        "the panicked request is still in flight"
    );
    sub.refetch()?;
    settle().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "refetch joined the dead request"
    );
    assert_eq!(*within(sub.loaded()).await?, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn keys_another_endpoint_cannot_touch_the_owners_entry_through_a_shared_key() -> TestResult {
    let api = Api::builder().build();
    let owner = api
        .query::<u32, Vec<u32>>("owner")
        .serialize_query_args(|_| KeyOverride::Verbatim("shared".into()))
        .query_fn(|n: u32| async move { Ok(vec![n]) })
        .build()?;
    let same_type = api
        .query::<u32, Vec<u32>>("sameType")
        .serialize_query_args(|_| KeyOverride::Verbatim("shared".into()))
        .query_fn(|n: u32| async move { Ok(vec![n]) })
        .build()?;
    let other_type = api
        .query::<u32, String>("otherType")
        .serialize_query_args(|_| KeyOverride::Verbatim("shared".into()))
        .query_fn(|n: u32| async move { Ok(n.to_string()) })
        .build()?;
    let sub = owner.subscribe(1)?;
    let before = within(sub.loaded()).await?;

    let state = other_type.state(&2);
    assert!(
        state.as_ref().map_or(true, QueryState::is_uninitialized),
        "another endpoint reads the owner's entry: {state:?}"
    );
    let patched =
        same_type.patch_query_data(&2, &patch(json!([{"op": "add", "path": "/-", "value": 9}])));
    assert!(
        patched.is_err(),
        "another endpoint patched the owner's entry"
    );
    let updated = same_type
        .update_query_data(&2, |d| d.push(5))
        .map(|c| c.patches);
    assert!(
        updated.as_ref().map_or(true, |p| p.is_empty()),
        "another endpoint updated the owner's entry: {updated:?}"
    );
    assert_eq!(sub.state().data(), Some(&*before));
    let removed = other_type.remove(&2);
    assert!(
        !matches!(removed, Ok(true)),
        "another endpoint removed the owner's entry"
    );
    assert_eq!(sub.state().status, Status::Fulfilled);
    Ok(())
}

// ===== R21: a stream whose messages are all ready at once =====

/// R21: a stream that is always ready (a burst, like a socket buffer full of frames) has every
/// message applied exactly once, in order, one `updated` event each — and while it lasts the
/// other tasks of the runtime still run (the attachment does not monopolise its thread).
#[tokio::test(start_paused = true)]
async fn r21_always_ready_stream_applied_in_order_once_and_other_tasks_still_run() -> TestResult {
    const N: u32 = 100_000;
    let api = Api::builder().trace_limit(2 * N as usize).build();
    let (end_tx, end_rx) = oneshot::channel();
    let end_tx = Arc::new(Mutex::new(Some(end_tx)));
    let ep = api
        .query::<u32, Vec<u32>>("burst")
        .query_fn(|_: u32| async move { Ok(Vec::new()) })
        .on_cache_entry_added(move |_, entry| {
            let end_tx = Arc::clone(&end_tx);
            async move {
                let Ok((entry, _)) = entry.data_loaded().await else {
                    return Ok(());
                };
                let end = entry
                    .stream(futures::stream::iter(0..N), |list, m| list.push(m))
                    .await;
                if let Some(tx) = end_tx.lock().map_err(|e| e.to_string())?.take() {
                    let _ = tx.send(end);
                }
                Ok(())
            }
        })
        .build()?;
    let key = ep.key(&1)?;
    let sub = ep.subscribe(1)?;
    // Another task: what it sees of the entry each time it gets to run.
    let seen = {
        let ep = ep.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..1_000_000 {
                let len = ep.state(&1).ok().and_then(|s| s.data.map(|d| d.len()));
                seen.push(len.unwrap_or(0));
                if len == Some(N as usize) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let end = within(end_rx).await?;
    assert_eq!(end.reason, livecache::core::StreamEndReason::StreamEnded);
    assert_eq!((end.applied, end.skipped), (u64::from(N), 0));
    let data = sub.state().data.ok_or("no data")?;
    assert!(
        data.iter().copied().eq(0..N),
        "every message once, in order"
    );
    // One traced update per burst (R34), whose counts add up to every message.
    let updates: Vec<u32> = events(&api, &key)
        .iter()
        .filter_map(|e| match e.kind {
            TraceKind::Updated { count, .. } => Some(count),
            _ => None,
        })
        .collect();
    assert_eq!(
        updates.iter().map(|c| *c as usize).sum::<usize>(),
        N as usize
    );
    assert!(
        updates.len() < N as usize / 10,
        "batched: {} events",
        updates.len()
    );
    let seen = within(seen).await?;
    assert!(
        seen.iter().any(|&len| len > 0 && len < N as usize),
        "no other task ran while the stream was being applied: {:?}",
        &seen[..seen.len().min(8)]
    );
    Ok(())
}
