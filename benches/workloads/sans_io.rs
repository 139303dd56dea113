//! W1–W4 on the sans-IO core (`livecache::core::Cache`) driven directly: no runtime, no lock, no
//! tasks. The driver does what the runtime does with the effects, minus spawning: it answers
//! `StartRequest` with `fulfil`, counts `Notify` effects as notifications, and calls
//! `handle_timeout` for removals. The clock is read every 64 updates (milliseconds since the
//! start), as a driver batching its clock reads would. `--versioned=true`: the endpoint is
//! versioned, the first data lands with `fulfil_versioned` at version 0, and each message, with
//! its entry's next version, goes where the runtime's versioned stream sends it: through
//! `stream_message_in_order` at the handler's place, looked up per message (the next message in
//! order, moved into the data), else through `stream_message` (a recipe that clones, since the core may keep it). Each
//! must be applied.

use std::time::Instant;

use livecache::core::{Cache, CacheConfig, Effect, EndpointConfig, EndpointId, Keep, Refetch};
use livecache::core::{CacheKey, Delivery, Patches, RequestId, Version, Versioning, default_key};
use serde_json::{Map, Value, json};

use crate::data::{Message, WARMUP_SEED_OFFSET, churn_name};
use crate::runtime::recording;
use crate::shared::{
    CHECK_EVERY, ChurnRun, PushRun, apply, apply_ref, churn_line, prepare, push_line, verify,
    warmup_cfg,
};
use crate::{Cfg, heap_bytes, peak_rss_mb};

type Core = Cache<Vec<Message>>;

#[derive(Default)]
struct Drained {
    notifies: u64,
    request: Option<u64>,
    loaded: u64,
    removed: u64,
}

/// Drain the effect queue as a driver would.
fn drain(cache: &mut Core, out: &mut Drained) {
    while let Some(effect) = cache.poll_effect() {
        match effect {
            Effect::Notify { .. } => out.notifies += 1,
            Effect::StartRequest { request, .. } => out.request = Some(request.0),
            Effect::ResolveDataLoaded { .. } => out.loaded += 1,
            Effect::EntryRemoved { .. } => out.removed += 1,
            _ => {}
        }
    }
}

fn key(arg: &str) -> Result<CacheKey, String> {
    default_key("messages", &arg).map_err(|e| e.to_string())
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// W1, W2, W3.
fn push(
    cache: &mut Core,
    ep: EndpointId,
    cfg: &Cfg,
    prefix: &str,
    seed_offset: u32,
    clock: Instant,
) -> Result<Map<String, Value>, String> {
    let mut prep = prepare(cfg, prefix, seed_offset);
    let keys: Vec<CacheKey> = prep
        .channels
        .iter()
        .map(|c| key(c))
        .collect::<Result<_, _>>()?;
    let t_setup = Instant::now();
    let mut now = ms_since(clock);
    let mut subs = Vec::with_capacity(keys.len());
    let mut lifetimes = Vec::with_capacity(keys.len());
    let mut initial = prep.initial.take();
    for k in &keys {
        subs.push(
            cache
                .subscribe(now, ep, k, Refetch::IfMissing)
                .expect("the key is this endpoint's"),
        );
        let mut d = Drained::default();
        drain(cache, &mut d);
        let request = d.request.ok_or("no request started")?;
        let data = initial.take().unwrap_or_default();
        if cfg.versioned {
            cache.fulfil_versioned(now, k, RequestId(request), data, Version::new(0));
        } else {
            cache.fulfil(now, k, RequestId(request), data);
        }
        drain(cache, &mut Drained::default());
        lifetimes.push(cache.entry(k).ok_or("no entry")?.lifetime);
    }
    let setup_seconds = t_setup.elapsed().as_secs_f64();

    let patches = cfg.patches;
    let (versioned, clone) = (cfg.versioned, cfg.clone);
    // Each entry's last version: the next message carries the one after it.
    let mut versions = vec![0u64; lifetimes.len()];
    let mut stream = std::mem::take(&mut prep.stream).into_iter();
    let mut done = 0usize;
    let mut dropped = 0usize;
    let mut effects = Drained::default();
    let t0 = Instant::now();
    for (e, payload) in stream.by_ref() {
        let applied = if versioned {
            versions[e] += 1;
            let version = Version::new(versions[e]);
            // As the runtime's versioned stream delivers it: the next message in order moves
            // into the data; any other goes by the general rules, with a recipe that clones.
            // The place is looked up for each message, as `update_cached` looks the lifetime
            // up for an unversioned one: the two pay the same lookup.
            let mut unsent = Some(payload);
            let fast = cache.lifetime_place(lifetimes[e]).is_some_and(|place| {
                cache
                    .stream_message_in_order(now, place, version, |draft| {
                        if let Some(payload) = unsent.take() {
                            apply(draft, payload);
                        }
                    })
                    .is_ok()
            });
            match unsent {
                None if fast => true,
                Some(payload) => {
                    let delivered = cache.stream_message(now, lifetimes[e], version, move |d| {
                        apply_ref(d, &payload);
                    });
                    delivered == Ok(Delivery::Applied)
                }
                None => false,
            }
        } else if clone {
            cache
                .update_cached(now, lifetimes[e], Patches::NotWanted, |draft| {
                    apply_ref(draft, &payload);
                })
                .is_ok()
        } else {
            cache
                .update_cached(
                    now,
                    lifetimes[e],
                    if patches {
                        Patches::Wanted
                    } else {
                        Patches::NotWanted
                    },
                    |draft| apply(draft, payload),
                )
                .is_ok()
        };
        if !applied {
            dropped += 1;
        }
        drain(cache, &mut effects);
        done += 1;
        if (done & CHECK_EVERY) == 0 {
            if t0.elapsed() > cfg.budget {
                break;
            }
            now = ms_since(clock);
        }
    }
    let t1 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    drop(stream);

    let (ok, final_length) = verify(cfg, prefix, seed_offset, done, |e| {
        cache.entry(&keys[e]).and_then(|v| v.data)
    });

    now = ms_since(clock);
    for sub in subs {
        cache.unsubscribe(now, sub);
    }
    cache.handle_timeout(now);
    let mut teardown = Drained::default();
    drain(cache, &mut teardown);
    let left = keys.iter().filter(|k| cache.entry(k).is_some()).count();

    let seconds = (t1 - t0).as_secs_f64();
    let run = PushRun {
        seconds,
        seconds_notified: seconds,
        setup_seconds,
        done,
        final_length,
        verified: ok && dropped == 0 && left == 0,
        notifications: effects.notifies,
        heap_bytes: heap,
        peak_rss_mb: peak,
    };
    Ok(push_line(cfg, &prep, &run))
}

/// W4: C lifecycles at a time: subscribe (→ start request), fulfil (→ data loaded),
/// unsubscribe (→ removal armed, keep 0), timer tick (→ removed).
fn churn(
    cache: &mut Core,
    ep: EndpointId,
    cfg: &Cfg,
    prefix: &str,
    clock: Instant,
) -> Result<Map<String, Value>, String> {
    let n = cfg.entries;
    let c = cfg.concurrency.max(1);
    let before = cache.len();
    let mut d = Drained::default();
    // The keys are computed before the clock starts, as the peers generate their data: the core
    // takes a `CacheKey`; computing it from the argument is the endpoint's job (the runtime path
    // includes it).
    let keys: Vec<CacheKey> = (0..n)
        .map(|j| key(&churn_name(prefix, j)))
        .collect::<Result<_, _>>()?;
    let mut batch: Vec<(CacheKey, livecache::core::SubscriptionId, u64)> = Vec::with_capacity(c);
    let mut done = 0usize;
    let t0 = Instant::now();
    let mut i = 0usize;
    while i < n {
        if t0.elapsed() > cfg.budget {
            break;
        }
        let now = ms_since(clock);
        batch.clear();
        for k in &keys[i..(i + c).min(n)] {
            let k = k.clone();
            let sub = cache
                .subscribe(now, ep, &k, Refetch::IfMissing)
                .expect("the key is this endpoint's");
            d.request = None;
            drain(cache, &mut d);
            let request = d.request.ok_or("no request started")?;
            batch.push((k, sub, request));
        }
        for (k, _, request) in &batch {
            cache.fulfil(now, k, RequestId(*request), Vec::new());
        }
        drain(cache, &mut d);
        for (_, sub, _) in &batch {
            cache.unsubscribe(now, *sub);
        }
        cache.handle_timeout(now);
        drain(cache, &mut d);
        i += batch.len();
        done += batch.len();
    }
    let t1 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    let left = cache.len().saturating_sub(before);
    let verified = left == 0 && d.loaded as usize == done && d.removed as usize == done;
    let seconds = (t1 - t0).as_secs_f64();
    let m = churn_line(&ChurnRun {
        payload: "subscribe -> fulfil (data loaded) -> unsubscribe -> handle_timeout (removed); data []; keys built before the clock",
        concurrency: c,
        seconds,
        done,
        total: n,
        left,
        verified,
        notifications: d.notifies,
        heap_bytes: heap,
        peak_rss_mb: peak,
    });
    Ok(m)
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let mut cache: Core = Cache::new(CacheConfig {
        keep: Keep::For(0),
        recording: recording(&cfg.recording),
    });
    let ep = cache
        .add_endpoint(
            "messages",
            EndpointConfig {
                has_lifecycle: true,
                versions: cfg.versioned.then(Versioning::default),
                ..EndpointConfig::default()
            },
        )
        .expect("endpoint names are distinct");
    let clock = Instant::now();
    let warm = warmup_cfg(cfg);
    let churn_workload = cfg.workload == "churn";
    let warm_result = if churn_workload {
        churn(&mut cache, ep, &warm, "warm-", clock)?
    } else {
        push(&mut cache, ep, &warm, "warm-", WARMUP_SEED_OFFSET, clock)?
    };
    let mut m = if churn_workload {
        churn(&mut cache, ep, cfg, "", clock)?
    } else {
        push(&mut cache, ep, cfg, "", 0, clock)?
    };
    m.insert(
        "warmup_ok".into(),
        warm_result.get("verified").cloned().unwrap_or(Value::Null),
    );
    m.insert("trace_events".into(), json!(cache.take_trace().len()));
    Ok(m)
}
