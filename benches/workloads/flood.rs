//! W6, a flood: `--updates` messages (1,000,000 by default), yielded as fast as
//! `futures::stream::iter` yields them, streamed into one entry through the runtime — with
//! `EntryHandle::stream`, or `EntryHandle::stream_versioned` on a versioned endpoint (each
//! message is its own version; the first data is version 0) — while `--subscribers` tasks (100)
//! each await the entry's `changes()`.
//!
//! A message is its sequence number `m` (1…N) and the entry's data a tally: the recipe counts the
//! message, remembers it as the last one and counts it as out of order unless it follows the
//! last. So the data is small and the flood measures the path of a message, not a payload.
//!
//! The clock runs in the lifecycle handler, from just before the stream is attached to the
//! moment the attachment returns (the stream ended: every message applied); `seconds_notified`
//! until every subscriber has read the final tally. Checked after the clock, each a panic with
//! its reason (the parent then fails, after its other configurations): the attachment ended because the stream did, with N
//! messages applied and none skipped; the tally is N messages, the last N, none out of order
//! (and, versioned, the watermark N); every subscriber saw the final tally, never a count going
//! back; and no subscriber woke more often than once per burst: at most ⌈N / 256⌉ times (the
//! source is always ready, so every burst is a full one of 256), plus once for the attachment's
//! status change.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use livecache::core::{Draft, StreamEnd, StreamEndReason, Version};
use livecache::{Api, BeforeData, BoxError, EntryHandle, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::runtime::{recording, tokio_runtime};
use crate::shared::until;
use crate::{Cfg, heap_bytes, mb, ns_per, peak_rss_mb};

/// The most messages the runtime applies under one lock (`src/runtime/stream.rs`): a subscriber
/// is woken at most once per burst.
const BURST: u64 = 256;

/// The entry's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
    last: u64,
    out_of_order: u64,
}

fn count(draft: &mut Draft<'_, Tally>, m: u64) {
    let tally = &mut **draft;
    if m != tally.last + 1 {
        tally.out_of_order += 1;
    }
    tally.count += 1;
    tally.last = m;
}

/// What the handler reports once the stream has ended.
struct Report {
    t0: Instant,
    t1: Instant,
    end: StreamEnd,
}

/// Per argument: the signal to start streaming, and where to report.
type Pending = Arc<Mutex<HashMap<String, (oneshot::Receiver<()>, oneshot::Sender<Report>)>>>;

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    wakes: AtomicU64,
    /// `wakes` when the flood started.
    wakes_at_start: AtomicU64,
    /// `wakes` when the final tally was first read (0: not yet).
    wakes_at_final: AtomicU64,
    final_seen: AtomicBool,
    went_back: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn handler(
    arg: (String, u64),
    entry: EntryHandle<BeforeData, Tally>,
    pending: Pending,
    versioned: bool,
) -> Result<(), BoxError> {
    let (name, n) = arg;
    let Ok((entry, _)) = entry.data_loaded().await else {
        return Ok(());
    };
    let Some((go, report)) = lock(&pending).remove(&name) else {
        return Ok(());
    };
    if go.await.is_err() {
        return Ok(());
    }
    let messages = futures::stream::iter(1..=n);
    let t0 = Instant::now();
    let end = if versioned {
        entry
            .stream_versioned(messages, |m| Version::new(*m), count)
            .await
    } else {
        entry.stream(messages, count).await
    };
    let t1 = Instant::now();
    let _ = report.send(Report { t0, t1, end });
    Ok(())
}

/// A subscriber standing in for a UI: on every change it reads the tally.
fn watch(sub: &Subscription<Tally>, n: u64, seen: Arc<Seen>) {
    let changes = sub.changes();
    tokio::spawn(async move {
        let mut changes = pin!(changes);
        let mut high = 0;
        while let Some(state) = changes.next().await {
            let wakes = seen.wakes.fetch_add(1, Ordering::Relaxed) + 1;
            let Some(tally) = state.data.as_deref() else {
                continue;
            };
            if tally.count < high {
                seen.went_back.store(true, Ordering::Relaxed);
            }
            high = high.max(tally.count);
            if tally.count == n && !seen.final_seen.load(Ordering::Relaxed) {
                seen.wakes_at_final.store(wakes, Ordering::Relaxed);
                seen.final_seen.store(true, Ordering::Release);
            }
        }
    });
}

/// One flood of `n` messages into the entry `name`; panics if a check fails.
async fn flood(
    endpoint: &livecache::Endpoint<(String, u64), Tally>,
    pending: &Pending,
    cfg: &Cfg,
    name: &str,
    n: u64,
) -> Map<String, Value> {
    let what = format!("W6 flood {name:?} of {n} messages{}", versioned_text(cfg));
    let (go_tx, go_rx) = oneshot::channel();
    let (report_tx, report_rx) = oneshot::channel();
    lock(pending).insert(name.to_owned(), (go_rx, report_tx));
    let arg = (name.to_owned(), n);
    let seen: Vec<Arc<Seen>> = (0..cfg.subscribers).map(|_| Arc::default()).collect();
    let mut subs = Vec::with_capacity(seen.len());
    for s in &seen {
        let sub = endpoint
            .subscribe(arg.clone())
            .unwrap_or_else(|e| panic!("{what}: subscribe failed: {e}"));
        watch(&sub, n, Arc::clone(s));
        subs.push(sub);
    }
    if let Some(sub) = subs.first() {
        tokio::time::timeout(Duration::from_secs(60), sub.loaded())
            .await
            .unwrap_or_else(|_| panic!("{what}: the first data never loaded"))
            .unwrap_or_else(|e| panic!("{what}: the entry was removed before loading: {e}"));
    }
    // Let every subscriber read the loaded state before the flood starts.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    for s in &seen {
        let w = s.wakes.load(Ordering::Relaxed);
        s.wakes_at_start.store(w, Ordering::Relaxed);
    }
    go_tx
        .send(())
        .unwrap_or_else(|()| panic!("{what}: the lifecycle handler is gone"));
    let report = tokio::time::timeout(cfg.budget + Duration::from_secs(60), report_rx)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream did not end within the budget"))
        .unwrap_or_else(|_| panic!("{what}: the lifecycle handler ended without reporting"));
    let all_notified = until(Duration::from_secs(60), || {
        seen.iter().all(|s| s.final_seen.load(Ordering::Acquire))
    })
    .await;
    let t2 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();

    // The checks: nothing lost, every subscriber up to date, at most one wake-up per burst.
    let end = &report.end;
    assert!(
        end.reason == StreamEndReason::StreamEnded && end.applied == n && end.skipped == 0,
        "{what}: the attachment ended with {end:?}, expected the stream's end with {n} applied"
    );
    let state = endpoint
        .state(&arg)
        .unwrap_or_else(|e| panic!("{what}: no state: {e}"));
    let want = Tally {
        count: n,
        last: n,
        out_of_order: 0,
    };
    assert_eq!(
        state.data.as_deref(),
        Some(&want),
        "{what}: messages lost or reordered (count, last value, out of order)"
    );
    if cfg.versioned {
        assert_eq!(
            state.watermark,
            Some(Version::new(n)),
            "{what}: the watermark is not the last message's version"
        );
    }
    assert!(
        all_notified,
        "{what}: {} of {} subscribers never read the final tally",
        seen.iter()
            .filter(|s| !s.final_seen.load(Ordering::Acquire))
            .count(),
        seen.len()
    );
    assert!(
        !seen.iter().any(|s| s.went_back.load(Ordering::Relaxed)),
        "{what}: a subscriber read a tally older than one it had read before"
    );
    let bursts_min = n.div_ceil(BURST);
    let wakes: Vec<u64> = seen
        .iter()
        .map(|s| {
            s.wakes_at_final.load(Ordering::Relaxed) - s.wakes_at_start.load(Ordering::Relaxed)
        })
        .collect();
    let wakes_max = wakes.iter().copied().max().unwrap_or(0);
    assert!(
        wakes_max <= bursts_min + 1,
        "{what}: a subscriber woke {wakes_max} times, more than once per burst \
         ({bursts_min} full bursts of {BURST}, plus the attachment's status change)"
    );
    let total_wakes: u64 = wakes.iter().sum();

    // Unsubscribed, the entry is removed at the next timer tick (keep time 0).
    drop(subs);
    let seconds = (report.t1 - report.t0).as_secs_f64();
    let done = usize::try_from(end.applied).unwrap_or(usize::MAX);
    let mut m = Map::new();
    m.insert(
        "payload".into(),
        json!(format!(
            "u64 sequence numbers 1..=N from futures::stream::iter{}; recipe: count, last, out-of-order check",
            versioned_text(cfg)
        )),
    );
    m.insert("payload_bytes".into(), json!(8));
    m.insert("seconds".into(), json!(seconds));
    m.insert(
        "seconds_notified".into(),
        json!((t2 - report.t0).as_secs_f64()),
    );
    m.insert("setup_seconds".into(), json!(0));
    m.insert("updates_done".into(), json!(done));
    m.insert("completed".into(), json!(true));
    m.insert("final_length".into(), json!(n));
    m.insert("expected_length".into(), json!(n));
    m.insert("verified".into(), json!(true));
    m.insert("notifications".into(), json!(total_wakes));
    m.insert("heap_used_mb".into(), json!(mb(heap as f64)));
    m.insert("peak_rss_mb".into(), json!(peak));
    m.insert("ns_per_update".into(), json!(ns_per(seconds, done)));
    m.insert("workload_hash".into(), Value::Null);
    m.insert("subscribers".into(), json!(cfg.subscribers));
    m.insert(
        "wakes_per_subscriber".into(),
        json!(total_wakes as f64 / seen.len().max(1) as f64),
    );
    m.insert("wakes_max".into(), json!(wakes_max));
    m.insert("bursts_min".into(), json!(bursts_min));
    m
}

fn versioned_text(cfg: &Cfg) -> &'static str {
    if cfg.versioned { ", versioned" } else { "" }
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let rt = tokio_runtime(cfg)?;
    rt.block_on(async {
        let api = Api::builder()
            .keep_unused_data_for(Duration::ZERO)
            .recording(recording(&cfg.recording))
            .build();
        let pending: Pending = Arc::default();
        let (h_pending, versioned) = (Arc::clone(&pending), cfg.versioned);
        let builder = api.query::<(String, u64), Tally>("flood");
        let builder = if versioned {
            builder.query_fn_versioned(|_| async { Ok((Tally::default(), Version::new(0))) })
        } else {
            builder.query_fn(|_| async { Ok(Tally::default()) })
        };
        let endpoint = builder
            .on_cache_entry_added(move |arg, entry| {
                handler(arg, entry, Arc::clone(&h_pending), versioned)
            })
            .build()
            .map_err(|e| e.to_string())?;
        let n = cfg.updates as u64;
        let warm = flood(&endpoint, &pending, cfg, "warm-flood", n.min(10_000)).await;
        let mut m = flood(&endpoint, &pending, cfg, "flood", n).await;
        m.insert(
            "warmup_ok".into(),
            warm.get("verified").cloned().unwrap_or(Value::Null),
        );
        m.insert("trace_events".into(), json!(api.take_trace().len()));
        Ok(m)
    })
}
