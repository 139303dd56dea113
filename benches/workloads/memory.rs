//! Memory: bytes per idle entry and per subscription, over `--memory-n` (100 000) of each.
//!
//! Heap bytes come from the bench's counting allocator (exact, what the cache asked for); RSS
//! bytes from `VmRSS` before and after (what the process paid, allocator overhead included).
//! The trace is taken out and dropped after each phase and measured on its own, so entry and
//! subscription figures do not include it; `trace_bytes_per_event` says what recording costs.

use std::time::{Duration, Instant};

use livecache::core::default_key;
use livecache::core::{Cache, CacheConfig, EndpointConfig, Keep, Refetch};
use livecache::{Api, Subscription};
use serde_json::{Map, Value, json};

use crate::data::Message;
use crate::runtime::{recording, tokio_runtime};
use crate::{Cfg, heap_bytes, peak_rss_mb, proc_status_kb};

fn rss() -> f64 {
    proc_status_kb("VmRSS").map_or(f64::NAN, |kb| kb as f64 * 1024.0)
}

struct Mark {
    heap: f64,
    rss: f64,
}

fn mark() -> Mark {
    Mark {
        heap: heap_bytes() as f64,
        rss: rss(),
    }
}

fn per(m: &mut Map<String, Value>, name: &str, from: &Mark, to: &Mark, n: usize) {
    m.insert(
        format!("{name}_heap_bytes"),
        json!(((to.heap - from.heap) / n as f64).round()),
    );
    m.insert(
        format!("{name}_rss_bytes"),
        json!(((to.rss - from.rss) / n as f64).round()),
    );
}

/// Drop the trace; returns (events, heap bytes they held).
fn trace_cost(take: impl FnOnce() -> usize) -> (usize, f64) {
    let before = heap_bytes() as f64;
    let events = take();
    (events, before - heap_bytes() as f64)
}

async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn runtime_memory(cfg: &Cfg, m: &mut Map<String, Value>) -> Result<(), String> {
    let n = cfg.entries;
    let api = Api::builder().recording(recording(&cfg.recording)).build();
    let plain = api
        .query::<String, Vec<Message>>("plain")
        .query_fn(|_arg: String| async { Ok(Vec::new()) })
        .build()
        .map_err(|e| e.to_string())?;
    let streamed = api
        .query::<String, Vec<Message>>("streamed")
        .query_fn(|_arg: String| async { Ok(Vec::new()) })
        .on_cache_entry_added(|_arg, entry| async move {
            if let Ok((entry, _)) = entry.data_loaded().await {
                entry.removed().await;
            }
            Ok(())
        })
        .build()
        .map_err(|e| e.to_string())?;
    let mut trace_events = 0usize;
    let mut trace_bytes = 0.0;
    let mut take = |api: &Api| {
        let (e, b) = trace_cost(|| api.take_trace().len());
        trace_events += e;
        trace_bytes += b;
    };
    settle().await;

    // Idle entries: loaded data ([]), no subscriber, removal armed at 60 s.
    let m0 = mark();
    for i in 0..n {
        plain
            .upsert_query_data(format!("idle-{i}"), Vec::new())
            .map_err(|e| e.to_string())?;
    }
    settle().await;
    take(&api);
    let m1 = mark();
    per(m, "idle_entry", &m0, &m1, n);

    // One subscription on each of those entries; the handles the caller holds count too.
    let m1 = mark();
    let mut subs: Vec<Subscription<Vec<Message>>> = Vec::with_capacity(n);
    for i in 0..n {
        subs.push(
            plain
                .subscribe(format!("idle-{i}"))
                .map_err(|e| e.to_string())?,
        );
    }
    settle().await;
    take(&api);
    let m2 = mark();
    per(m, "subscription", &m1, &m2, n);

    // More subscriptions on one entry.
    let first = plain
        .subscribe("one".to_owned())
        .map_err(|e| e.to_string())?;
    settle().await;
    take(&api);
    let m3 = mark();
    let mut same: Vec<Subscription<Vec<Message>>> = Vec::with_capacity(n);
    same.push(first);
    for _ in 1..n {
        same.push(
            plain
                .subscribe("one".to_owned())
                .map_err(|e| e.to_string())?,
        );
    }
    settle().await;
    take(&api);
    let m4 = mark();
    per(m, "subscription_same_entry", &m3, &m4, n - 1);

    // Entries whose lifecycle handler is parked in `removed()` (a streaming entry at rest).
    let m5 = mark();
    for i in 0..n {
        streamed
            .upsert_query_data(format!("live-{i}"), Vec::new())
            .map_err(|e| e.to_string())?;
    }
    settle().await;
    take(&api);
    let m6 = mark();
    per(m, "entry_with_handler", &m5, &m6, n);

    insert_trace_cost(m, trace_events, trace_bytes);
    m.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    drop(subs);
    drop(same);
    api.reset();
    settle().await;
    Ok(())
}

/// The trace's event count and bytes per event (null without events).
fn insert_trace_cost(m: &mut Map<String, Value>, events: usize, bytes: f64) {
    m.insert("trace_events".into(), json!(events));
    m.insert(
        "trace_bytes_per_event".into(),
        json!(if events == 0 {
            Value::Null
        } else {
            json!((bytes / events as f64).round())
        }),
    );
}

fn core_memory(cfg: &Cfg, m: &mut Map<String, Value>) -> Result<(), String> {
    let n = cfg.entries;
    let mut cache: Cache<Vec<Message>> = Cache::new(CacheConfig {
        keep: Keep::default(),
        recording: recording(&cfg.recording),
    });
    let ep = cache
        .add_endpoint("plain", EndpointConfig::default())
        .expect("endpoint names are distinct");
    let keys: Vec<_> = (0..n)
        .map(|i| default_key("plain", &format!("idle-{i}")).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut trace_events = 0usize;
    let mut trace_bytes = 0.0;
    let m0 = mark();
    for k in &keys {
        cache
            .upsert(0, ep, k, Vec::new())
            .expect("the key is this endpoint's");
        while cache.poll_effect().is_some() {}
    }
    let (e, b) = trace_cost(|| cache.take_trace().len());
    trace_events += e;
    trace_bytes += b;
    let m1 = mark();
    per(m, "idle_entry", &m0, &m1, n);
    let m1 = mark();
    let mut subs = Vec::with_capacity(n);
    for k in &keys {
        subs.push(
            cache
                .subscribe(0, ep, k, Refetch::IfMissing)
                .expect("the key is this endpoint's"),
        );
        while cache.poll_effect().is_some() {}
    }
    let (e, b) = trace_cost(|| cache.take_trace().len());
    trace_events += e;
    trace_bytes += b;
    let m2 = mark();
    per(m, "subscription", &m1, &m2, n);
    insert_trace_cost(m, trace_events, trace_bytes);
    m.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    Ok(())
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let t0 = Instant::now();
    let mut m = Map::new();
    m.insert(
        "payload".into(),
        json!("idle entries (data [], key ~17 B) and subscriptions; bytes each, subscription handles (held by the caller) included; subscribing cancels the entry's removal timer"),
    );
    if cfg.path == "core" {
        core_memory(cfg, &mut m)?;
    } else {
        let rt = tokio_runtime(cfg)?;
        rt.block_on(runtime_memory(cfg, &mut m))?;
    }
    m.insert("seconds".into(), json!(t0.elapsed().as_secs_f64()));
    m.insert("updates_done".into(), json!(0));
    m.insert("completed".into(), json!(true));
    m.insert("verified".into(), json!(true));
    m.insert("heap_used_mb".into(), Value::Null);
    Ok(m)
}
