//! W1–W4 through the tokio runtime's public API, the way the peers drive RTK Query: an endpoint
//! with `keep_unused_data_for(0)`, a query function returning the initial data, and an
//! `on_cache_entry_added` handler that waits for `data_loaded()`, attaches a listener to a fake
//! push source (the feed) that owns a clone of the `Loaded` handle and calls
//! `update_cached_data` on every message, then waits for `removed()` and detaches. With
//! `--delivery=task` the handler attaches a channel with `EntryHandle::stream` instead, and with
//! `--versioned=true` (task delivery only) the endpoint is versioned (`query_fn_versioned`, the
//! first data at version 0) and the channel's messages, each carrying its entry's next version,
//! go through `EntryHandle::stream_versioned`.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use livecache::core::{Recording, Version};
use livecache::{Api, BeforeData, BoxError, Endpoint, EntryHandle, Subscription};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::data::{Message, WARMUP_SEED_OFFSET, churn_name};
use crate::shared::{
    CHECK_EVERY, ChurnRun, Payload, Probe, PushRun, apply, apply_ref, churn_line, emitted_to,
    prepare, push_line, until, verify, warmup_cfg,
};
use crate::{Cfg, heap_bytes, peak_rss_mb};

/// A feed listener: applies one update, returns whether it was applied.
pub type Listener = Arc<dyn Fn(Payload) -> bool + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fake push source (the peers' `Feed`): one listener per channel.
#[derive(Default)]
pub struct Feed {
    listeners: Mutex<HashMap<String, Listener>>,
}

impl Feed {
    pub fn on(&self, channel: &str, listener: Listener) {
        lock(&self.listeners).insert(channel.to_owned(), listener);
    }
    pub fn off(&self, channel: &str) {
        lock(&self.listeners).remove(channel);
    }
    pub fn get(&self, channel: &str) -> Option<Listener> {
        lock(&self.listeners).get(channel).cloned()
    }
    pub fn len(&self) -> usize {
        lock(&self.listeners).len()
    }
}

/// Per argument: the peers' `loaded` / `removed` deferreds, and the entry's probe.
#[derive(Default)]
struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
}

struct Slot {
    loaded: Option<oneshot::Sender<()>>,
    removed: Option<oneshot::Sender<()>>,
    probe: Arc<Probe>,
}

type Waits = (oneshot::Receiver<()>, oneshot::Receiver<()>);

impl Registry {
    fn expect(&self, arg: &str, probe: Arc<Probe>) -> Waits {
        let (loaded, loaded_rx) = oneshot::channel();
        let (removed, removed_rx) = oneshot::channel();
        let slot = Slot {
            loaded: Some(loaded),
            removed: Some(removed),
            probe,
        };
        lock(&self.slots).insert(arg.to_owned(), slot);
        (loaded_rx, removed_rx)
    }
    fn probe(&self, arg: &str) -> Arc<Probe> {
        lock(&self.slots)
            .get(arg)
            .map(|s| Arc::clone(&s.probe))
            .unwrap_or_default()
    }
    fn loaded(&self, arg: &str) {
        if let Some(tx) = lock(&self.slots).get_mut(arg).and_then(|s| s.loaded.take()) {
            let _ = tx.send(());
        }
    }
    fn removed(&self, arg: &str) {
        if let Some(tx) = lock(&self.slots)
            .remove(arg)
            .and_then(|mut s| s.removed.take())
        {
            let _ = tx.send(());
        }
    }
}

pub fn recording(name: &str) -> Recording {
    match name {
        "off" => Recording::Off,
        "events_with_patches" => Recording::EventsWithPatches,
        _ => Recording::Events,
    }
}

pub fn tokio_runtime(cfg: &Cfg) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if cfg.flavor == "multi_thread" {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| e.to_string())
}

#[derive(Clone)]
struct Harness {
    api: Api,
    endpoint: Endpoint<String, Vec<Message>>,
    feed: Arc<Feed>,
    registry: Arc<Registry>,
    /// Initial data per argument (W3); absent means `[]`.
    initial: Arc<Mutex<HashMap<String, Vec<Message>>>>,
}

impl Harness {
    fn new(cfg: &Cfg) -> Result<Harness, String> {
        let api = Api::builder()
            .keep_unused_data_for(Duration::ZERO)
            .recording(recording(&cfg.recording))
            .build();
        let feed = Arc::new(Feed::default());
        let registry = Arc::new(Registry::default());
        let initial: Arc<Mutex<HashMap<String, Vec<Message>>>> = Arc::default();
        let delivery = match (cfg.delivery.as_str(), cfg.versioned) {
            ("task", true) => Delivery::Versioned,
            ("task", false) => Delivery::Task,
            _ if cfg.patches => Delivery::SyncWithPatches,
            _ => Delivery::Sync,
        };
        let clone = cfg.clone;
        let query_initial = Arc::clone(&initial);
        let (h_feed, h_registry) = (Arc::clone(&feed), Arc::clone(&registry));
        let builder = api.query::<String, Vec<Message>>("messages");
        let builder = if cfg.versioned {
            builder.query_fn_versioned(move |arg: String| {
                let data = lock(&query_initial).remove(&arg).unwrap_or_default();
                async move { Ok((data, Version::new(0))) }
            })
        } else {
            builder.query_fn(move |arg: String| {
                let data = lock(&query_initial).remove(&arg).unwrap_or_default();
                async move { Ok(data) }
            })
        };
        let endpoint = builder
            .on_cache_entry_added(move |arg, entry| {
                let feed = Arc::clone(&h_feed);
                let registry = Arc::clone(&h_registry);
                handler(arg, entry, feed, registry, delivery, clone)
            })
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Harness {
            api,
            endpoint,
            feed,
            registry,
            initial,
        })
    }
}

/// How the handler applies the feed's messages.
#[derive(Clone, Copy)]
enum Delivery {
    /// The feed's listener calls `update_cached_data`.
    Sync,
    /// The listener calls `update_cached_data_with_patches`.
    SyncWithPatches,
    /// The listener sends each message into a channel the handler attaches with `stream`.
    Task,
    /// As `Task`, each message with its entry's next version, attached with `stream_versioned`.
    Versioned,
}

/// The lifecycle handler, as in the peers and the streaming guide.
async fn handler(
    arg: String,
    entry: EntryHandle<BeforeData, Vec<Message>>,
    feed: Arc<Feed>,
    registry: Arc<Registry>,
    delivery: Delivery,
    clone: bool,
) -> Result<(), BoxError> {
    let probe = registry.probe(&arg);
    let Ok((entry, _)) = entry.data_loaded().await else {
        registry.removed(&arg);
        return Ok(());
    };
    let patches = matches!(delivery, Delivery::SyncWithPatches);
    if let Delivery::Versioned = delivery {
        // The feed numbers the entry's messages 1, 2, … (the first data is version 0).
        let (tx, rx) = mpsc::unbounded_channel::<(u64, Payload)>();
        let last = AtomicU64::new(0);
        feed.on(
            &arg,
            Arc::new(move |p| {
                let version = last.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                tx.send((version, p)).is_ok()
            }),
        );
        registry.loaded(&arg);
        let items =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let counted = Arc::clone(&probe);
        entry
            .stream_versioned(
                items,
                |(version, _)| Version::new(*version),
                move |draft, (_, p)| {
                    apply(draft, p);
                    counted.bump();
                },
            )
            .await;
    } else if let Delivery::Task = delivery {
        // Each message is a channel item the handler's task applies with `EntryHandle::stream`.
        let (tx, rx) = mpsc::unbounded_channel::<Payload>();
        feed.on(&arg, Arc::new(move |p| tx.send(p).is_ok()));
        registry.loaded(&arg);
        let items =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        let counted = Arc::clone(&probe);
        if clone {
            entry
                .stream(items, move |draft, p| {
                    apply_ref(draft, &p);
                    counted.bump();
                })
                .await;
        } else {
            entry
                .stream(items, move |draft, p| {
                    apply(draft, p);
                    counted.bump();
                })
                .await;
        }
    } else {
        // The listener owns a clone of the handle (docs/api.md's socket-callback pattern); the
        // handler keeps `entry` for `removed()`.
        let updater = entry.clone();
        let listener: Listener = Arc::new(move |p: Payload| {
            let result = if patches {
                updater
                    .update_cached_data_with_patches(|draft| apply(draft, p))
                    .map(drop)
            } else if clone {
                updater.update_cached_data(|draft| apply_ref(draft, &p))
            } else {
                updater.update_cached_data(|draft| apply(draft, p))
            };
            if result.is_ok() {
                probe.bump();
            }
            result.is_ok()
        });
        feed.on(&arg, listener);
        registry.loaded(&arg);
        entry.removed().await;
    }
    feed.off(&arg);
    registry.removed(&arg);
    Ok(())
}

/// A subscriber standing in for a UI: on every change it reads the state. It holds the
/// subscription weakly, so dropping the driver's handle unsubscribes.
fn watch(sub: &Arc<Subscription<Vec<Message>>>, probe: Arc<Probe>) {
    let weak: Weak<Subscription<Vec<Message>>> = Arc::downgrade(sub);
    let changes = sub.changes();
    tokio::spawn(async move {
        let mut changes = pin!(changes);
        while let Some(state) = changes.next().await {
            drop(state);
            let applied = probe.notified_at();
            let Some(sub) = weak.upgrade() else { break };
            let state = sub.state();
            drop(sub);
            std::hint::black_box(state.data().map(Vec::len));
            drop(state);
            probe.read_done(applied);
        }
    });
}

/// W1, W2, W3.
async fn push(
    h: &Harness,
    cfg: &Cfg,
    prefix: &str,
    seed_offset: u32,
) -> Result<Map<String, Value>, String> {
    let mut prep = prepare(cfg, prefix, seed_offset);
    if let Some(initial) = prep.initial.take() {
        lock(&h.initial).insert(prep.channels[0].clone(), initial);
    }
    let probes: Vec<Arc<Probe>> = prep.channels.iter().map(|_| Arc::default()).collect();
    let t_setup = Instant::now();
    let mut subs = Vec::with_capacity(prep.channels.len());
    let mut removed = Vec::with_capacity(prep.channels.len());
    let mut loaded = Vec::with_capacity(prep.channels.len());
    for (ch, probe) in prep.channels.iter().zip(&probes) {
        let (l, r) = h.registry.expect(ch, Arc::clone(probe));
        let sub = Arc::new(
            h.endpoint
                .subscribe(ch.clone())
                .map_err(|e| e.to_string())?,
        );
        watch(&sub, Arc::clone(probe));
        subs.push(sub);
        loaded.push(l);
        removed.push(r);
    }
    for l in loaded {
        tokio::time::timeout(Duration::from_secs(120), l)
            .await
            .map_err(|_| "setup timed out")?
            .map_err(|_| "entry removed during setup")?;
    }
    let setup_seconds = t_setup.elapsed().as_secs_f64();
    let listeners: Vec<Listener> = prep
        .channels
        .iter()
        .map(|c| h.feed.get(c).ok_or_else(|| format!("no listener for {c}")))
        .collect::<Result<_, _>>()?;
    // Let the subscribers see the loaded state before the clock starts.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }

    let task = cfg.delivery == "task";
    let n0: u64 = probes
        .iter()
        .map(|p| p.notifications.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let mut stream = std::mem::take(&mut prep.stream).into_iter();
    let mut done = 0usize;
    let mut dropped = 0usize;
    let t0 = Instant::now();
    for (e, payload) in stream.by_ref() {
        if !listeners[e](payload) {
            dropped += 1;
        }
        done += 1;
        if (done & CHECK_EVERY) == 0 && t0.elapsed() > cfg.budget {
            break;
        }
        if task {
            tokio::task::yield_now().await; // the next message arrives in a new task turn
        }
    }
    let e_count = prep.channels.len();
    for (e, probe) in probes.iter().enumerate() {
        probe.set_target(emitted_to(e, e_count, done));
    }
    let reflected = until(Duration::from_secs(60), || {
        probes
            .iter()
            .enumerate()
            .all(|(e, p)| p.applied() >= emitted_to(e, e_count, done))
    })
    .await;
    let t1 = Instant::now();
    let notified = until(Duration::from_secs(60), || {
        probes.iter().all(|p| p.final_seen())
    })
    .await;
    let t2 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    drop(stream);
    let notifications: u64 = probes
        .iter()
        .map(|p| p.notifications.load(std::sync::atomic::Ordering::Relaxed))
        .sum::<u64>()
        - n0;

    let (ok, final_length) = verify(cfg, prefix, seed_offset, done, |e| {
        h.endpoint
            .state(&prep.channels[e])
            .ok()
            .and_then(|s| s.data)
    });
    let verified = ok && reflected && notified && dropped == 0;

    // Teardown: unsubscribe; keep 0 removes every entry at the next timer tick.
    drop(listeners);
    drop(subs);
    for r in removed {
        let _ = tokio::time::timeout(Duration::from_secs(120), r).await;
    }

    let seconds = (t1 - t0).as_secs_f64();
    let run = PushRun {
        seconds,
        seconds_notified: (t2 - t0).as_secs_f64(),
        setup_seconds,
        done,
        final_length,
        verified,
        notifications,
        heap_bytes: heap,
        peak_rss_mb: peak,
    };
    Ok(push_line(cfg, &prep, &run))
}

/// W4: subscribe → data loaded → unsubscribe → removed, N distinct args, C workers.
async fn churn(h: &Harness, cfg: &Cfg, prefix: &str) -> Result<Map<String, Value>, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = cfg.entries;
    let before = h.api.len();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.max(1) {
        let (h, next, done, budget) = (h.clone(), Arc::clone(&next), Arc::clone(&done), cfg.budget);
        let prefix = prefix.to_owned();
        workers.spawn(async move {
            loop {
                if t0.elapsed() > budget {
                    return Ok::<(), String>(());
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let arg = churn_name(&prefix, i);
                let (loaded, removed) = h.registry.expect(&arg, Arc::default());
                let sub = h.endpoint.subscribe(arg).map_err(|e| e.to_string())?;
                loaded.await.map_err(|_| "removed before loaded")?;
                drop(sub);
                removed.await.map_err(|_| "never removed")?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut error = None;
    let joined = tokio::time::timeout(cfg.budget + Duration::from_secs(60), async {
        while let Some(r) = workers.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error = Some(e),
                Err(e) => error = Some(e.to_string()),
            }
        }
    })
    .await;
    let t1 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    let left = h.api.len().saturating_sub(before);
    let done = done.load(Ordering::Relaxed);
    let verified = joined.is_ok()
        && error.is_none()
        && left == 0
        && h.feed.len() == 0
        && h.api.in_flight() == (0, 0);
    let seconds = (t1 - t0).as_secs_f64();
    let mut m = churn_line(&ChurnRun {
        payload: "subscribe -> data_loaded -> unsubscribe -> removal (keep 0) -> removed; data []",
        concurrency: cfg.concurrency,
        seconds,
        done,
        total: n,
        left,
        verified,
        notifications: 0,
        heap_bytes: heap,
        peak_rss_mb: peak,
    });
    if let Some(e) = error {
        m.insert("worker_error".into(), json!(e));
    }
    Ok(m)
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let rt = tokio_runtime(cfg)?;
    rt.block_on(async {
        let h = Harness::new(cfg)?;
        let warm = warmup_cfg(cfg);
        let churn_workload = cfg.workload == "churn";
        let warm_result = if churn_workload {
            churn(&h, &warm, "warm-").await?
        } else {
            push(&h, &warm, "warm-", WARMUP_SEED_OFFSET).await?
        };
        let mut m = if churn_workload {
            churn(&h, cfg, "").await?
        } else {
            push(&h, cfg, "", 0).await?
        };
        m.insert(
            "warmup_ok".into(),
            warm_result.get("verified").cloned().unwrap_or(Value::Null),
        );
        m.insert("trace_events".into(), json!(h.api.take_trace().len()));
        Ok(m)
    })
}
