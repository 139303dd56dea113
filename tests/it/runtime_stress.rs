//! A multi-thread stress test of the tokio runtime (SPEC R4, R5, R7, R7a, R11–R14, R17).
//!
//! Many tasks hammer the same few keys of one endpoint with every operation a user has —
//! subscribe (plain and forced), drop a subscription, refetch, `update_query_data` (and undo),
//! `upsert_query_data`, `prefetch`, `remove`, a rare `reset`, awaiting `loaded()` and reading
//! `changes()` — while every entry lifetime runs an `on_cache_entry_added` handler that waits
//! for its data, updates the entry a few times and waits for its removal. The endpoint keeps
//! unused entries for 50 ms and its query function sleeps a few milliseconds (every eleventh
//! call fails), so expiries, aborts, late results and re-created keys all happen for real.
//!
//! When every task has finished and every subscription is gone, the test waits past the grace
//! period and asserts that nothing is left: no entry, no running request, no tracked lifetime,
//! no handler still running, no `data_loaded`/`removed` future pending, no task but the api's
//! timer (and none at all once the api is dropped). The trace is then checked for per-lifetime
//! invariants (one `entry_added`, at most one `entry_removed`, at most one `data_loaded`, every
//! started handler ended and finished, lifetimes of a key never overlap).
//!
//! The op choice is deterministic per task (xorshift), seeded from `LIVECACHE_STRESS_SEED` or a
//! fixed default; the seed is printed. Thread interleaving is not deterministic, so a failure is
//! reproduced by rerunning with the printed seed, possibly several times.
//! Run with output: `cargo test --test it runtime_stress:: -- --nocapture`.
//!
//! Each task runs its operations in four bursts separated by idle gaps of 40, 48 and 60 ms
//! (around the keep time), so entries also expire between bursts, not only at the end.
//!
//! The end of the file holds containment tests for runtime bugs found while writing this one
//! (handler closures run under the lock, panics in handler closures and query functions, an api
//! dropped with live handlers), now fixed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use livecache::core::Refetch;
use livecache::core::{HandlerOutcome, RemoveCause, TraceKind};
use livecache::{Api, Endpoint, Error, RemovedBeforeLoaded, Subscription, UpdateError};

/// Concurrent tasks.
const TASKS: usize = 64;
/// Operations per task.
const OPS: usize = 200;
/// Bursts each task splits its operations into.
const BURSTS: usize = 4;
/// The idle gap after each burst but the last, in milliseconds (plus 0–5 ms of jitter per
/// task): shorter than, about, and longer than the keep time.
const GAPS_MS: [u64; BURSTS - 1] = [40, 48, 60];
/// Distinct keys (arguments `0..KEYS`).
const KEYS: u64 = 4;
/// The endpoint's keep time.
const KEEP: Duration = Duration::from_millis(50);
/// Updates each handler makes once its entry has data.
const HANDLER_UPDATES: u32 = 3;
/// How long to wait for the cache and the runtime to settle, at most.
const SETTLE: Duration = Duration::from_secs(5);
/// The seed used when `LIVECACHE_STRESS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_CAFE_F00D_0001;

type Msgs = Vec<u64>;

/// xorshift64*: small, deterministic, good enough to pick operations.
struct XorShift(u64);

impl XorShift {
    /// A generator for `task`, derived from `seed` by splitmix64 (never zero).
    fn for_task(seed: u64, task: usize) -> Self {
        let mut z = seed.wrapping_add((task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(z | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the handlers and query functions did, counted across threads.
#[derive(Default)]
struct Counters {
    handler_starts: AtomicUsize,
    handler_ends: AtomicUsize,
    data_loaded_pending: AtomicUsize,
    removed_pending: AtomicUsize,
    loaded: AtomicUsize,
    removed_before_loaded: AtomicUsize,
    handler_updates: AtomicUsize,
    handler_updates_refused: AtomicUsize,
    queries: AtomicUsize,
}

impl Counters {
    fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

/// What the operating tasks did.
#[derive(Debug, Default)]
struct OpStats {
    subscribed: usize,
    dropped: usize,
    refetched: usize,
    refetch_on_removed: usize,
    updated: usize,
    undone: usize,
    upserted: usize,
    prefetched: usize,
    removed: usize,
    resets: usize,
    loaded_waits: usize,
    loaded_removed: usize,
    change_reads: usize,
}

impl OpStats {
    fn add(&mut self, o: &OpStats) {
        self.subscribed += o.subscribed;
        self.dropped += o.dropped;
        self.refetched += o.refetched;
        self.refetch_on_removed += o.refetch_on_removed;
        self.updated += o.updated;
        self.undone += o.undone;
        self.upserted += o.upserted;
        self.prefetched += o.prefetched;
        self.removed += o.removed;
        self.resets += o.resets;
        self.loaded_waits += o.loaded_waits;
        self.loaded_removed += o.loaded_removed;
        self.change_reads += o.change_reads;
    }
}

fn seed() -> u64 {
    match std::env::var("LIVECACHE_STRESS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.expect("LIVECACHE_STRESS_SEED must be a u64 (decimal or 0x-hex)")
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// The endpoint under test: keep 50 ms, a query function that sleeps 1–3 ms and fails every
/// eleventh call, and a handler that waits for data, updates a few times, and waits for removal.
fn stress_endpoint(api: &Api, counters: &Arc<Counters>) -> Endpoint<u64, Msgs> {
    let query_counters = Arc::clone(counters);
    let handler_counters = Arc::clone(counters);
    api.query::<u64, Msgs>("stress")
        .keep_unused_data_for(KEEP)
        .query_fn(move |k: u64| {
            let n = query_counters.queries.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(1 + (n % 3) as u64)).await;
                if n % 11 == 10 {
                    return Err("stress: planned query failure".into());
                }
                Ok(vec![k])
            }
        })
        .on_cache_entry_added(move |_k: u64, added| {
            let c = Arc::clone(&handler_counters);
            async move {
                c.handler_starts.fetch_add(1, Ordering::SeqCst);
                c.data_loaded_pending.fetch_add(1, Ordering::SeqCst);
                let first = added.data_loaded().await;
                c.data_loaded_pending.fetch_sub(1, Ordering::SeqCst);
                match first {
                    Ok((entry, _first)) => {
                        c.loaded.fetch_add(1, Ordering::SeqCst);
                        for i in 0..HANDLER_UPDATES {
                            match entry.update_cached_data(|d| {
                                d.push(1_000 + u64::from(i));
                                if d.len() > 16 {
                                    d.truncate(2);
                                }
                            }) {
                                Ok(()) => c.handler_updates.fetch_add(1, Ordering::SeqCst),
                                Err(UpdateError::EntryRemoved) => {
                                    c.handler_updates_refused.fetch_add(1, Ordering::SeqCst)
                                }
                                Err(other) => return Err(other.into()),
                            };
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        c.removed_pending.fetch_add(1, Ordering::SeqCst);
                        entry.removed().await;
                        c.removed_pending.fetch_sub(1, Ordering::SeqCst);
                        // R14 / R7a: once removed, the handle sees nothing and changes nothing,
                        // even if the key has a new lifetime by now.
                        assert!(entry.is_removed(), "removed() resolved, is_removed agrees");
                        assert!(
                            entry.cache_entry().is_uninitialized(),
                            "a removed lifetime reads Uninitialized"
                        );
                        assert_eq!(
                            entry.update_cached_data(|d| d.push(0)),
                            Err(UpdateError::EntryRemoved),
                            "a removed lifetime cannot be updated"
                        );
                    }
                    Err(RemovedBeforeLoaded) => {
                        c.removed_before_loaded.fetch_add(1, Ordering::SeqCst);
                    }
                }
                c.handler_ends.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .expect("a fresh api has no endpoint of this name")
}

/// One task: `BURSTS` bursts of `OPS / BURSTS` operations chosen by its own generator. After a
/// burst the task drops its subscriptions, waits for every other task at `barrier`, then stays
/// idle for that burst's gap (around the keep time) plus a little jitter, so that entries expire
/// (R4, R5) while, or just before, the next burst re-subscribes (R2) or re-creates them (R12).
async fn run_task(
    api: Api,
    endpoint: Endpoint<u64, Msgs>,
    mut rng: XorShift,
    barrier: Arc<tokio::sync::Barrier>,
) -> OpStats {
    let mut stats = OpStats::default();
    let mut subs: Vec<Subscription<Msgs>> = Vec::new();
    for burst in 0..BURSTS {
        for _ in 0..OPS / BURSTS {
            one_op(&api, &endpoint, &mut rng, &mut subs, &mut stats).await;
            // Let time pass now and then, so requests settle and handlers update while other
            // tasks keep operating.
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
            }
        }
        stats.dropped += subs.len();
        subs.clear();
        if let Some(gap) = GAPS_MS.get(burst) {
            barrier.wait().await;
            tokio::time::sleep(Duration::from_millis(gap + rng.below(6))).await;
        }
    }
    stats
}

/// One operation on a key, chosen by `rng`.
async fn one_op(
    api: &Api,
    endpoint: &Endpoint<u64, Msgs>,
    rng: &mut XorShift,
    subs: &mut Vec<Subscription<Msgs>>,
    stats: &mut OpStats,
) {
    let key = pick_key(rng);
    let pick = rng.below(200);
    match pick {
        0..=39 => {
            let refetch = if pick < 8 {
                Refetch::Always
            } else {
                Refetch::IfMissing
            };
            let sub = endpoint
                .subscribe_with(key, refetch)
                .expect("subscribe never fails on this endpoint");
            stats.subscribed += 1;
            if key == KEYS - 1 {
                // The rare key is only visited: its entry is unused most of the time, so
                // it expires (R4, R5) and is re-created while the other keys are busy.
                drop(sub);
                stats.dropped += 1;
                return;
            }
            subs.push(sub);
            if subs.len() > 4 {
                drop(subs.remove(0));
                stats.dropped += 1;
            }
        }
        40..=69 => {
            if !subs.is_empty() {
                let i = rng.below(subs.len() as u64) as usize;
                drop(subs.swap_remove(i));
                stats.dropped += 1;
            }
        }
        70..=84 => {
            if !subs.is_empty() {
                let i = rng.below(subs.len() as u64) as usize;
                match subs[i].refetch() {
                    Ok(()) => stats.refetched += 1,
                    Err(_) => stats.refetch_on_removed += 1,
                }
            }
        }
        85..=104 => {
            let collection = endpoint
                .update_query_data(&key, |d| {
                    d.push(rng_free_value(key));
                    if d.len() > 16 {
                        d.truncate(2);
                    }
                })
                .expect("update_query_data never fails on this endpoint");
            stats.updated += 1;
            if rng.below(4) == 0 {
                // The data may have changed since: an undo that no longer applies is an
                // error the caller sees (R19), never a panic or a corrupted entry.
                match collection.undo() {
                    Ok(()) => stats.undone += 1,
                    Err(Error::Patch(_)) => {}
                    Err(other) => panic!("undo failed unexpectedly: {other}"),
                }
            }
        }
        105..=119 => {
            endpoint
                .upsert_query_data(key, vec![key, 7])
                .expect("upsert never fails on this endpoint");
            stats.upserted += 1;
        }
        120..=134 => {
            let refetch = if rng.below(3) == 0 {
                Refetch::Always
            } else {
                Refetch::IfMissing
            };
            endpoint
                .prefetch(key, refetch)
                .expect("prefetch never fails on this endpoint");
            stats.prefetched += 1;
        }
        135 => {
            endpoint.remove(&key).expect("remove never fails");
            stats.removed += 1;
        }
        136 => {
            if rng.below(8) == 0 {
                api.reset();
                stats.resets += 1;
            }
        }
        148..=169 => {
            if !subs.is_empty() {
                let i = rng.below(subs.len() as u64) as usize;
                let wait = tokio::time::timeout(Duration::from_millis(10), subs[i].loaded());
                if let Ok(result) = wait.await {
                    stats.loaded_waits += 1;
                    if result.is_err() {
                        stats.loaded_removed += 1;
                    }
                }
            }
        }
        170..=179 => {
            if !subs.is_empty() {
                let i = rng.below(subs.len() as u64) as usize;
                let mut changes = Box::pin(subs[i].changes());
                let _ = tokio::time::timeout(Duration::from_millis(3), async {
                    while changes.next().await.is_some() {}
                })
                .await;
                stats.change_reads += 1;
            }
        }
        137..=147 | 180..=189 => {
            let state = endpoint.state(&key).expect("a u64 key always serialises");
            assert!(
                state.data.is_none() || !state.is_uninitialized(),
                "data without an entry"
            );
        }
        _ => tokio::task::yield_now().await,
    }
}

/// A key: the first two are hot, the third is warm, the last is rare (about 1 op in 64).
fn pick_key(rng: &mut XorShift) -> u64 {
    match rng.below(64) {
        0..=29 => 0,
        30..=55 => 1,
        56..=62 => 2,
        _ => KEYS - 1,
    }
}

/// The value an outside update pushes (distinct from fetched and handler values).
fn rng_free_value(key: u64) -> u64 {
    100 + key
}

/// Poll `done` every 10 ms until it holds or `SETTLE` has passed; returns whether it held.
async fn settle(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_many_tasks_same_keys_leave_nothing_behind() {
    let seed = seed();
    println!(
        "runtime_stress: seed={seed:#x} (set LIVECACHE_STRESS_SEED to change) tasks={TASKS} \
         ops/task={OPS} keys={KEYS} keep={KEEP:?}"
    );
    let started = Instant::now();
    let baseline = alive_tasks();

    let api = Api::builder().build();
    let counters = Arc::new(Counters::default());
    let endpoint = stress_endpoint(&api, &counters);

    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            tokio::spawn(run_task(
                api.clone(),
                endpoint.clone(),
                XorShift::for_task(seed, t),
                Arc::clone(&barrier),
            ))
        })
        .collect();
    let mut stats = OpStats::default();
    for task in tasks {
        stats.add(&task.await.expect("an operating task panicked"));
    }
    let ops_done = started.elapsed();

    // Every subscription is gone: past the grace period everything must have been collected.
    let settled = settle(|| {
        api.is_empty()
            && api.in_flight() == (0, 0)
            && Counters::get(&counters.handler_starts) == Counters::get(&counters.handler_ends)
            && alive_tasks() == baseline + 1
    })
    .await;
    let settle_time = started.elapsed() - ops_done;

    let c = &counters;
    let starts = Counters::get(&c.handler_starts);
    let ends = Counters::get(&c.handler_ends);
    let trace = api.trace();
    println!(
        "runtime_stress: ops phase {ops_done:?}, settled in {settle_time:?} (settled={settled}); \
         trace events={}",
        trace.len()
    );
    println!("runtime_stress: ops {stats:?}");
    println!(
        "runtime_stress: handlers started={starts} ended={ends} loaded={} removed_before_loaded={} \
         updates={} refused={} queries={}",
        Counters::get(&c.loaded),
        Counters::get(&c.removed_before_loaded),
        Counters::get(&c.handler_updates),
        Counters::get(&c.handler_updates_refused),
        Counters::get(&c.queries),
    );

    assert!(api.is_empty(), "entries left: {}", api.len());
    assert_eq!(
        api.in_flight(),
        (0, 0),
        "requests running, lifetimes tracked"
    );
    assert_eq!(starts, ends, "every handler that started has finished");
    assert_eq!(
        Counters::get(&c.data_loaded_pending),
        0,
        "no data_loaded future pending"
    );
    assert_eq!(
        Counters::get(&c.removed_pending),
        0,
        "no removed() future pending"
    );
    assert_eq!(
        Counters::get(&c.loaded) + Counters::get(&c.removed_before_loaded),
        starts,
        "every data_loaded settled one way or the other"
    );
    assert_eq!(
        alive_tasks(),
        baseline + 1,
        "only the api's timer task is left while the api lives"
    );

    // ===== the trace, per lifetime =====
    check_trace(&trace, starts, Counters::get(&c.loaded));

    // Dropping the last handle of the api ends its timer task: the runtime is back to baseline.
    drop(endpoint);
    drop(api);
    let back = settle(|| alive_tasks() == baseline).await;
    assert!(
        back,
        "tasks alive after the api was dropped: {} (baseline {baseline})",
        alive_tasks()
    );
    println!("runtime_stress: total {:?}", started.elapsed());
}

/// What the trace says about one lifetime.
#[derive(Debug, Default)]
struct Lifetime {
    key: String,
    added: usize,
    added_at: usize,
    removed: usize,
    removed_at: usize,
    data_loaded: usize,
    lifecycle_started: usize,
    lifecycle_ended: Vec<HandlerOutcome>,
}

fn check_trace(trace: &[livecache::core::TraceEvent], starts: usize, loaded: usize) {
    let mut lifetimes: HashMap<u64, Lifetime> = HashMap::new();
    // The live lifetime of each key, to check lifetimes of one key never overlap.
    let mut live: HashMap<&str, u64> = HashMap::new();
    // The removal deadline armed for each key, if any.
    let mut deadlines: HashMap<&str, u64> = HashMap::new();
    let mut max_lateness = 0;
    let mut last_at = 0;
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, event) in trace.iter().enumerate() {
        assert!(
            event.at_ms >= last_at,
            "trace time goes backwards at #{i}: {event}"
        );
        last_at = event.at_ms;
        match &event.kind {
            TraceKind::EntryAdded { lifetime, .. } => {
                let l = lifetimes.entry(*lifetime).or_default();
                l.key = event.key.to_string();
                l.added += 1;
                l.added_at = i;
                let previous = live.insert(event.key.as_str(), *lifetime);
                assert_eq!(
                    previous, None,
                    "#{i} {event}: the key already had a live lifetime"
                );
            }
            TraceKind::RemovalScheduled { deadline_ms } => {
                deadlines.insert(event.key.as_str(), *deadline_ms);
            }
            TraceKind::RemovalCancelled => {
                deadlines.remove(event.key.as_str());
            }
            TraceKind::EntryRemoved {
                lifetime, cause, ..
            } => {
                let deadline = deadlines.remove(event.key.as_str());
                if *cause == RemoveCause::Expired {
                    // R4, R5: an entry expires only once its armed deadline has come. (The core
                    // stamps an expiry with its deadline, so lateness of the timer task does not
                    // show here; the settle phase above is where only the timer can expire.)
                    let deadline = deadline.unwrap_or_else(|| {
                        panic!("#{i} {event}: expired without an armed deadline")
                    });
                    assert!(
                        event.at_ms >= deadline,
                        "#{i} {event}: expired before its deadline {deadline} ms"
                    );
                    max_lateness = max_lateness.max(event.at_ms - deadline);
                }
                let l = lifetimes.entry(*lifetime).or_default();
                l.removed += 1;
                l.removed_at = i;
                assert_eq!(event.key, l.key, "#{i} {event}: removed under another key");
                assert_eq!(
                    live.remove(event.key.as_str()),
                    Some(*lifetime),
                    "#{i} {event}: removed a lifetime that was not the key's live one"
                );
            }
            TraceKind::DataLoaded { lifetime, .. } => {
                let l = lifetimes.entry(*lifetime).or_default();
                l.data_loaded += 1;
                assert_eq!(
                    live.get(event.key.as_str()),
                    Some(lifetime),
                    "#{i} {event}: data loaded for a lifetime that is not live"
                );
            }
            TraceKind::LifecycleStarted { lifetime } => {
                lifetimes.entry(*lifetime).or_default().lifecycle_started += 1;
            }
            TraceKind::LifecycleEnded {
                lifetime, outcome, ..
            } => {
                lifetimes
                    .entry(*lifetime)
                    .or_default()
                    .lifecycle_ended
                    .push(outcome.clone());
            }
            _ => {}
        }
        *kinds.entry(kind_name(&event.kind)).or_default() += 1;
    }

    println!("runtime_stress: lifetimes created={}", lifetimes.len());
    println!("runtime_stress: trace events by kind {kinds:?}");
    println!("runtime_stress: latest expiry stamp after its deadline: {max_lateness} ms");
    assert!(live.is_empty(), "keys still live in the trace: {live:?}");
    let mut loaded_lifetimes = 0;
    for (id, l) in &lifetimes {
        assert_eq!(l.added, 1, "lifetime {id}: exactly one entry_added ({l:?})");
        assert!(
            l.removed <= 1,
            "lifetime {id}: at most one entry_removed ({l:?})"
        );
        assert_eq!(l.removed, 1, "lifetime {id}: removed by the end ({l:?})");
        assert!(
            l.added_at < l.removed_at,
            "lifetime {id}: added before removed"
        );
        assert!(
            l.data_loaded <= 1,
            "lifetime {id}: data_loaded at most once (R11)"
        );
        loaded_lifetimes += l.data_loaded;
        // R12: the endpoint has a handler, so every lifetime starts exactly one.
        assert_eq!(l.lifecycle_started, 1, "lifetime {id}: one handler ({l:?})");
        assert_eq!(
            l.lifecycle_ended,
            vec![HandlerOutcome::Finished],
            "lifetime {id}: its handler ended once, without error or panic"
        );
    }
    assert_eq!(
        lifetimes.len(),
        starts,
        "one handler run per lifetime (R12)"
    );
    assert_eq!(
        loaded_lifetimes, loaded,
        "handlers saw data exactly for the lifetimes whose data loaded"
    );
}

/// An event's name, with the removal cause for `entry_removed` (`entry_removed:expired`).
fn kind_name(kind: &TraceKind) -> String {
    let json = serde_json::to_value(kind).expect("trace kinds serialise");
    let name = json["event"].as_str().unwrap_or("?").to_owned();
    match kind {
        TraceKind::EntryRemoved { cause, .. } => format!("{name}:{cause}"),
        _ => name,
    }
}

// ===== containment: runtime bugs this file's probes found, now fixed =====

/// The handler closure passed to `on_cache_entry_added` is called in the handler's own task,
/// never under the api's lock, so its synchronous part can use the api (it once deadlocked
/// `subscribe`). The scenario runs on its own thread so that a deadlock is reported, not hung on.
#[test]
fn r16_handler_closure_can_use_the_api_in_its_synchronous_part() {
    let (tx, rx) = std::sync::mpsc::channel();
    // Deliberately detached: if it deadlocks, the thread stays blocked and the test fails.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let api = Api::builder().build();
            let endpoint = api
                .query::<u64, Msgs>("syncPart")
                .query_fn(|k: u64| async move { Ok(vec![k]) })
                .on_cache_entry_added(|_k, entry| {
                    // Synchronous part: read the entry before the async block starts.
                    let at_start = entry.cache_entry();
                    async move {
                        assert!(at_start.data.is_none());
                        Ok(())
                    }
                })
                .build()
                .expect("endpoint");
            let sub = endpoint.subscribe(1).expect("subscribe");
            let _ = tx.send(sub.loaded().await.is_ok());
        });
    });
    let loaded = rx.recv_timeout(Duration::from_secs(5));
    assert_eq!(
        loaded,
        Ok(true),
        "subscribe deadlocked: the handler closure ran under the api's lock"
    );
}

/// A handler closure that panics in its synchronous part is contained (R16): `subscribe`
/// returns, the request starts (R1), the entry is collected as usual (R4), and the panic is in
/// the trace. (The panic once unwound out of `subscribe` and orphaned its subscriber.)
#[tokio::test(start_paused = true)]
async fn r16_handler_closure_panic_in_its_synchronous_part_is_contained() {
    let api = Api::builder().build();
    let endpoint = api
        .query::<u64, Msgs>("syncPanic")
        .query_fn(|k: u64| async move { Ok(vec![k]) })
        .on_cache_entry_added(|k, _entry| {
            assert!(k != 1, "handler closure panics for key 1");
            async move { Ok(()) }
        })
        .build()
        .expect("endpoint");
    let subscribed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| endpoint.subscribe(1)));
    let mut problems = Vec::new();
    if subscribed.is_err() {
        problems.push("subscribe panicked (R16: the handler's panic must be contained)");
    }
    // The core queued `StartRequest` behind `StartLifecycle`; the runtime must have run it.
    if api.in_flight().0 != 1 {
        problems.push("no request task was started for the new entry (R1)");
    }
    drop(subscribed);
    // Default keep 60 s: everything is unused, so after 61 s the entry must be gone (R4).
    tokio::time::sleep(Duration::from_secs(61)).await;
    if !api.is_empty() {
        problems.push("the entry was never removed: an orphaned subscriber keeps it (R4)");
    }
    let ended = api.trace().iter().any(|e| {
        matches!(
            e.kind,
            TraceKind::LifecycleEnded {
                outcome: HandlerOutcome::Panicked { .. },
                ..
            }
        )
    });
    if !ended {
        problems.push("the handler's panic is not in the trace (R16)");
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A query function that panics rejects its request, as RTK rejects a throwing `queryFn` (R9):
/// nothing stays in flight, and a refetch loads the data. (The request once stayed in flight
/// forever and every refetch joined it.)
#[tokio::test(start_paused = true)]
async fn r09_query_fn_panic_rejects_the_request() {
    let calls = Arc::new(AtomicUsize::new(0));
    let api = Api::builder().build();
    let endpoint = api
        .query::<u64, Msgs>("queryPanic")
        .query_fn({
            let calls = Arc::clone(&calls);
            move |k: u64| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert!(n != 0, "the first request panics");
                    Ok(vec![k])
                }
            }
        })
        .build()
        .expect("endpoint");
    let sub = endpoint.subscribe(1).expect("subscribe");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = sub.state();
    assert!(
        !state.is_fetching && api.in_flight().0 == 0,
        "the panicked request is still in flight: {state:?}, in_flight={:?}",
        api.in_flight()
    );
    assert!(
        state.is_error(),
        "the panic rejected the request: {state:?}"
    );
    assert_eq!(
        state.error.map(|e| e.to_string()),
        Some("the query function panicked: the first request panics".to_string())
    );
    sub.refetch().expect("live");
    let loaded = tokio::time::timeout(Duration::from_secs(10), sub.loaded()).await;
    assert!(
        matches!(loaded, Ok(Ok(_))),
        "a refetch after the panic loads the data"
    );
}

/// Dropping the last `Api`/`Endpoint`/`Subscription` resets the api, even with entries kept
/// forever: handlers see their entries removed and end, and the api's tasks go (R17: no future
/// left pending forever). (A live handler's handle once kept the api, its timer task and the
/// handler alive forever.)
#[tokio::test(start_paused = true)]
async fn r17_dropping_every_api_handle_resets_the_api_and_ends_its_tasks() {
    let baseline = alive_tasks();
    let ended = Arc::new(AtomicUsize::new(0));
    let api = Api::builder()
        .keep_unused_data_for(livecache::core::Keep::Never)
        .build();
    let endpoint = api
        .query::<u64, Msgs>("dropApi")
        .query_fn(|k: u64| async move { Ok(vec![k]) })
        .on_cache_entry_added({
            let ended = Arc::clone(&ended);
            move |_k, entry| {
                let ended = Arc::clone(&ended);
                async move {
                    entry.removed().await;
                    ended.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        })
        .build()
        .expect("endpoint");
    let sub = endpoint.subscribe(1).expect("subscribe");
    assert!(sub.loaded().await.is_ok());
    drop(sub);
    drop(endpoint);
    drop(api);
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        (alive_tasks(), ended.load(Ordering::SeqCst)),
        (baseline, 1),
        "(alive tasks, handlers that saw removal) an hour after the last api handle was dropped"
    );
}
