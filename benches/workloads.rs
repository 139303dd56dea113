//! The peers' streaming-update workloads (W1–W4, as `benches/peers` runs them on RTK Query and
//! TanStack Query), W5 (a loopback WebSocket into the cache), W6 (a flood of stream messages into
//! one entry) and the floor, through livecache's public API. `cargo bench --bench workloads` runs them; `docs/performance.md` has the results
//! and how to read them.
//!
//! Like the peers, the parent process runs every measured run in a fresh child process (this same
//! executable with `--child`), so `peak_rss_mb` (VmHWM) belongs to that run, takes the median
//! of `--runs` and prints one JSON line per configuration with the peers' field names and
//! `"peer": "livecache"`. Progress goes to stderr.
//!
//! ```text
//! cargo bench --bench workloads -- --workload=append,fanout,patch,churn,e2e,flood \
//!     --path=runtime,core,floor --patches=false,true --recording=events,off --runs=3 --budget=60
//! ```
//!
//! Options are `--key=value` flags or `BENCH_<KEY>` environment variables (dashes become
//! underscores), as in the peers: `workload`, `runs`, `budget`, `quick`, `updates`, `entries`,
//! `total`, `size`, `patch-updates`, `churn-n`, `concurrency`, `stop-after`, plus livecache's own:
//!
//! * `path`: `runtime` (the tokio `Api`, the default), `core` (the sans-IO `core::Cache` driven
//!   directly) and `floor` (no cache: a `Vec` behind a mutex plus a tokio `watch` notification;
//!   for W5 a bare async-tungstenite read loop that decodes and pushes). `socket` is W5's read
//!   loop without decoding; `shared` is W5 through a `ws::shared::SharedConnection` (the topic's
//!   frames in the JSON framing), `shared-fed` the same fed by the connection's task with no
//!   handler (`stream_from`), `shared-floor` the bare loop over those frames.
//! * `patches`: `false` (`update_cached_data`, which computes no patches) or `true`
//!   (`update_cached_data_with_patches`).
//! * `recording`: `events` (the library default), `off`, `events_with_patches`.
//! * `delivery`: `sync` (the feed calls `update_cached_data` directly, like the peers' sync
//!   delivery) or `task` (each entry's handler consumes a channel with `EntryHandle::stream`,
//!   the feed yielding after every message).
//! * `versioned`: `false` or `true`: W1, W2 and W6 on a versioned endpoint, each message carrying
//!   the entry's next version — on the core through `Cache::stream_message`, through the runtime
//!   with `EntryHandle::stream_versioned` (so with `--delivery=task`; the sync delivery has no
//!   versioned form). A versioned recipe takes its message by reference (a rebase applies it
//!   again), so it pushes a clone. After the configurations, the parent prints one
//!   `"summary":"versioned"` line per pair of variants measured in the same run, with the ratio
//!   of their times per update.
//! * `clone`: `false` or `true`: the unversioned recipe of W1 and W2 pushes a clone of the
//!   message, as a versioned one must (the control that isolates what versioning itself costs;
//!   the `"summary":"versioned"` line then also gives `ratio_vs_clone`).
//! * `flood-n`, `subscribers`: W6's size (1,000,000 messages) and subscriber count (100).
//! * `alternate`: run 1 of every configuration, then run 2 of every one, and so on (instead of
//!   every run of one configuration in turn), so that variants compared with each other see the
//!   same drift of the machine; the summary lines then also give the median of the per-round
//!   ratios (`ratio_paired`, `growth_over_floor_paired`).
//! * `flavor`: `current_thread` (default) or `multi_thread` (2 workers).
//! * `memory` is an extra workload: bytes per idle entry and per subscription.
//! * `flood` (W6) streams `flood-n` messages, as fast as `futures::stream::iter` yields them,
//!   into one entry through the runtime (`EntryHandle::stream`, or `stream_versioned`), with
//!   `subscribers` tasks each awaiting `changes()`. Nothing lost, every subscriber reaching the
//!   final state and at most one wake-up per burst are checked: a failed check panics, and the
//!   parent, once its other configurations have run, fails too.
//!
//! When W2 ran at 100 and 10,000 entries on the floor and on another path, the parent also
//! prints a `"summary":"fanout_growth"` line: each path's growth of the time per update from 100
//! to 10,000 entries, divided by the floor's growth in the same run (target: at most 1.5).

#![allow(clippy::cast_precision_loss)]

#[path = "workloads/data.rs"]
mod data;
#[path = "workloads/e2e.rs"]
mod e2e;
#[path = "workloads/flood.rs"]
mod flood;
#[path = "workloads/floor.rs"]
mod floor;
#[path = "workloads/memory.rs"]
mod memory;
#[path = "workloads/runtime.rs"]
mod runtime;
#[path = "workloads/sans_io.rs"]
mod sans_io;
#[path = "workloads/shared.rs"]
mod shared;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

// ===== heap accounting =====

/// The system allocator, counting the bytes currently allocated (`heap_used_mb`).
struct Counting;

static HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter is bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_add(new_size, Ordering::Relaxed);
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes currently allocated on the heap.
pub fn heap_bytes() -> usize {
    HEAP.load(Ordering::Relaxed)
}

pub fn mb(bytes: f64) -> f64 {
    (bytes / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

/// Whole nanoseconds per operation over `done` operations (at least one) in `seconds`.
pub fn ns_per(seconds: f64, done: usize) -> f64 {
    (seconds * 1e9 / done.max(1) as f64).round()
}

/// A field of `/proc/self/status` in kB (`VmHWM` = peak RSS, `VmRSS` = current RSS).
pub fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

pub fn peak_rss_mb() -> Option<f64> {
    proc_status_kb("VmHWM").map(|kb| mb(kb as f64 * 1024.0))
}

pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

// ===== options =====

#[derive(Clone, Debug)]
pub struct Opts {
    pub raw: BTreeMap<String, String>,
}

const DEFAULTS: &[(&str, &str)] = &[
    ("workload", "all"),
    ("runs", "3"),
    ("budget", "60"),
    ("quick", "false"),
    ("updates", ""),
    ("entries", ""),
    ("total", "100000"),
    ("size", "10000"),
    ("patch-updates", "10000"),
    ("churn-n", "10000"),
    ("concurrency", ""),
    ("stop-after", "60"),
    ("path", "runtime"),
    ("patches", "false"),
    ("recording", "events"),
    ("delivery", "sync"),
    ("versioned", "false"),
    ("clone", "false"),
    ("flood-n", "1000000"),
    ("subscribers", "100"),
    ("alternate", "false"),
    ("flavor", "current_thread"),
    ("e2e-updates", "100000"),
    ("memory-n", "100000"),
    ("child", "false"),
    ("out", ""),
];

impl Opts {
    fn parse() -> Opts {
        let mut raw: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, _) in DEFAULTS {
            let env = format!("BENCH_{}", k.to_uppercase().replace('-', "_"));
            if let Ok(v) = std::env::var(env)
                && !v.is_empty()
            {
                raw.insert((*k).to_owned(), v);
            }
        }
        for arg in std::env::args().skip(1) {
            let Some(flag) = arg.strip_prefix("--") else {
                continue; // a cargo bench filter: ignored
            };
            let (k, v) = flag.split_once('=').unwrap_or((flag, "true"));
            if raw.contains_key(k) {
                raw.insert(k.to_owned(), v.to_owned());
            } else if k != "bench" {
                eprintln!("[livecache] ignoring unknown option --{k}");
            }
        }
        Opts { raw }
    }

    pub fn str(&self, k: &str) -> &str {
        self.raw.get(k).map_or("", String::as_str)
    }

    pub fn num(&self, k: &str) -> usize {
        self.str(k).parse().unwrap_or(0)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.str(k), "true" | "1")
    }

    fn list(&self, k: &str) -> Vec<String> {
        self.str(k)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn nums(&self, k: &str, default: &[usize]) -> Vec<usize> {
        let v: Vec<usize> = self.list(k).iter().filter_map(|s| s.parse().ok()).collect();
        if v.is_empty() { default.to_vec() } else { v }
    }
}

/// One measured configuration: what one child process runs.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub workload: String,
    pub path: String,
    pub patches: bool,
    pub recording: String,
    pub delivery: String,
    pub flavor: String,
    /// A versioned endpoint, each message carrying the next version.
    pub versioned: bool,
    /// The unversioned recipe pushes a clone of the message (the versioned one always does).
    pub clone: bool,
    pub entries: usize,
    pub updates: usize,
    pub size: usize,
    pub concurrency: usize,
    /// W6: tasks awaiting the entry's `changes()`.
    pub subscribers: usize,
    pub budget: Duration,
}

impl Cfg {
    fn args(&self) -> Vec<String> {
        vec![
            "--child".into(),
            format!("--workload={}", self.workload),
            format!("--path={}", self.path),
            format!("--patches={}", self.patches),
            format!("--recording={}", self.recording),
            format!("--delivery={}", self.delivery),
            format!("--flavor={}", self.flavor),
            format!("--versioned={}", self.versioned),
            format!("--clone={}", self.clone),
            format!("--entries={}", self.entries),
            format!("--updates={}", self.updates),
            format!("--size={}", self.size),
            format!("--concurrency={}", self.concurrency),
            format!("--subscribers={}", self.subscribers),
            format!("--budget={}", self.budget.as_secs_f64()),
        ]
    }

    fn from_child_opts(o: &Opts) -> Cfg {
        Cfg {
            workload: o.str("workload").to_owned(),
            path: o.str("path").to_owned(),
            patches: o.flag("patches"),
            recording: o.str("recording").to_owned(),
            delivery: o.str("delivery").to_owned(),
            flavor: o.str("flavor").to_owned(),
            versioned: o.flag("versioned"),
            clone: o.flag("clone"),
            entries: o.num("entries"),
            updates: o.num("updates"),
            size: o.num("size"),
            concurrency: o.num("concurrency").max(1),
            subscribers: o.num("subscribers"),
            budget: Duration::from_secs_f64(o.str("budget").parse().unwrap_or(60.0)),
        }
    }

    /// A label for progress lines.
    fn label(&self) -> String {
        let mut s = format!("{} E={} U={}", self.workload, self.entries, self.updates);
        if self.workload == "churn" {
            s += &format!(" C={}", self.concurrency);
        }
        s + " " + &self.variant()
    }

    /// The path and every option that differs from the default.
    fn variant(&self) -> String {
        let mut s = format!("path={}", self.path);
        if self.patches {
            s += " patches";
        }
        if self.recording != "events" {
            s += &format!(" recording={}", self.recording);
        }
        if self.delivery != "sync" {
            s += &format!(" delivery={}", self.delivery);
        }
        if self.flavor != "current_thread" {
            s += &format!(" flavor={}", self.flavor);
        }
        if self.versioned {
            s += " versioned";
        }
        if self.clone {
            s += " clone";
        }
        if self.workload == "flood" {
            s += &format!(" subscribers={}", self.subscribers);
        }
        s
    }

    /// Everything that makes a variant but `versioned` and `clone`: the key that pairs a
    /// versioned configuration with its unversioned twins.
    fn twin_key(&self) -> String {
        format!(
            "{} E={} U={} {} patches={} recording={} delivery={} flavor={} subscribers={}",
            self.workload,
            self.entries,
            self.updates,
            self.path,
            self.patches,
            self.recording,
            self.delivery,
            self.flavor,
            self.subscribers
        )
    }

    /// Whether this combination means anything.
    fn valid(&self) -> bool {
        let w = self.workload.as_str();
        let p = self.path.as_str();
        let cache_path = p == "runtime" || p == "core";
        let ok = match w {
            "append" | "fanout" | "patch" => cache_path || p == "floor",
            "churn" | "memory" => cache_path,
            "e2e" => matches!(
                p,
                "runtime" | "shared" | "shared-fed" | "floor" | "shared-floor" | "socket"
            ),
            "flood" => p == "runtime",
            _ => false,
        };
        let patches_ok =
            !self.patches || (cache_path && matches!(w, "append" | "fanout" | "patch"));
        // W6 always streams.
        let delivery_ok = if w == "flood" {
            self.delivery == "stream"
        } else {
            self.delivery == "sync" || (p == "runtime" && w != "churn")
        };
        // Versioned: W1 and W2 on the core, or through the runtime's versioned stream; W6.
        let versioned_ok = !self.versioned
            || w == "flood"
            || (matches!(w, "append" | "fanout")
                && !self.patches
                && ((p == "core" && self.delivery == "sync")
                    || (p == "runtime" && self.delivery == "task")));
        let clone_ok = !self.clone
            || (matches!(w, "append" | "fanout") && cache_path && !self.patches && !self.versioned);
        ok && patches_ok && delivery_ok && versioned_ok && clone_ok
    }
}

fn configs(o: &Opts) -> Vec<Cfg> {
    let quick = o.flag("quick");
    let mut workloads = o.list("workload");
    if workloads.iter().any(|w| w == "all") {
        workloads.retain(|w| w != "all");
        for w in ["append", "fanout", "patch", "churn", "e2e", "flood"] {
            workloads.push(w.to_owned());
        }
    }
    let budget = Duration::from_secs_f64(o.str("budget").parse().unwrap_or(60.0));
    let mut out = Vec::new();
    let mut bases = Vec::new();
    for path in o.list("path") {
        for patches in o.list("patches") {
            for recording in o.list("recording") {
                for delivery in o.list("delivery") {
                    for (versioned, clone) in o
                        .list("versioned")
                        .iter()
                        .flat_map(|v| o.list("clone").into_iter().map(move |c| (v.clone(), c)))
                    {
                        bases.push(Cfg {
                            workload: String::new(),
                            path: path.clone(),
                            patches: patches == "true",
                            recording: recording.clone(),
                            delivery: delivery.clone(),
                            flavor: o.str("flavor").to_owned(),
                            versioned: versioned == "true",
                            clone: clone == "true",
                            entries: 1,
                            updates: 0,
                            size: 0,
                            concurrency: 1,
                            subscribers: 0,
                            budget,
                        });
                    }
                }
            }
        }
    }
    for base in bases {
        for w in &workloads {
            let with = |entries, updates| Cfg {
                workload: w.clone(),
                entries,
                updates,
                ..base.clone()
            };
            match w.as_str() {
                "append" => {
                    let sizes: &[usize] = if quick {
                        &[1000, 5000]
                    } else {
                        &[1000, 10_000, 50_000]
                    };
                    for u in o.nums("updates", sizes) {
                        out.push(with(1, u));
                    }
                }
                "fanout" => {
                    let total = if quick { 10_000 } else { o.num("total") };
                    let sizes: &[usize] = if quick {
                        &[10, 100]
                    } else {
                        &[100, 1000, 10_000]
                    };
                    for e in o.nums("entries", sizes) {
                        out.push(with(e, (total as f64 / e as f64).round() as usize));
                    }
                }
                "patch" => {
                    let (size, u) = if quick {
                        (1000, 1000)
                    } else {
                        (o.num("size"), o.num("patch-updates"))
                    };
                    out.push(Cfg { size, ..with(1, u) });
                }
                "churn" => {
                    let n = if quick { 300 } else { o.num("churn-n") };
                    for c in o.nums("concurrency", &[1, 100]) {
                        out.push(Cfg {
                            concurrency: c,
                            ..with(n, 0)
                        });
                    }
                }
                "e2e" => {
                    let u = if quick { 10_000 } else { o.num("e2e-updates") };
                    out.push(with(1, u));
                }
                "memory" => {
                    let n = if quick { 10_000 } else { o.num("memory-n") };
                    out.push(with(n, 0));
                }
                // Always a stream: made once, from the `sync` delivery's variants.
                "flood" if base.delivery == "sync" => {
                    let n = if quick { 100_000 } else { o.num("flood-n") };
                    out.push(Cfg {
                        delivery: "stream".to_owned(),
                        subscribers: o.num("subscribers"),
                        ..with(1, n)
                    });
                }
                "flood" => {}
                other => eprintln!("[livecache] unknown workload {other}"),
            }
        }
    }
    out.retain(Cfg::valid);
    out
}

// ===== JSON lines =====

/// The peers' field order first, then everything else sorted.
const ORDER: &[&str] = &[
    "peer",
    "workload",
    "entries",
    "updates_per_entry",
    "payload",
    "seconds",
    "updates_per_sec",
    "peak_rss_mb",
    "heap_used_mb",
    "path",
    "patches",
    "recording",
    "delivery",
    "flavor",
    "versioned",
    "clone",
    "mode",
    "lib_version",
    "runs",
    "seconds_each",
    "seconds_notified",
    "setup_seconds",
    "ns_per_update",
    "completed",
    "budget_s",
    "updates_done",
    "final_length",
    "expected_length",
    "verified",
    "notifications",
    "workload_hash",
    "concurrency",
    "entries_done",
    "entries_per_sec",
    "array_size",
    "subscribers",
    "wakes_per_subscriber",
    "wakes_max",
    "bursts_min",
];

pub fn to_line(map: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for k in ORDER {
        if let Some(v) = map.get(*k) {
            parts.push(format!("{}:{}", json!(k), v));
        }
    }
    for (k, v) in map {
        if !ORDER.contains(&k.as_str()) {
            parts.push(format!("{}:{}", json!(k), v));
        }
    }
    format!("{{{}}}", parts.join(","))
}

/// The fields every child line starts with.
pub fn base_line(cfg: &Cfg) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("peer".into(), json!("livecache"));
    m.insert("workload".into(), json!(cfg.workload));
    m.insert("entries".into(), json!(cfg.entries));
    m.insert(
        "updates_per_entry".into(),
        json!(if cfg.workload == "churn" {
            0
        } else {
            cfg.updates
        }),
    );
    m.insert("path".into(), json!(cfg.path));
    m.insert("patches".into(), json!(cfg.patches));
    m.insert("recording".into(), json!(cfg.recording));
    m.insert("delivery".into(), json!(cfg.delivery));
    m.insert("flavor".into(), json!(cfg.flavor));
    m.insert("versioned".into(), json!(cfg.versioned));
    m.insert("clone".into(), json!(cfg.clone));
    m.insert(
        "mode".into(),
        json!(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }),
    );
    m.insert(
        "lib_version".into(),
        json!(format!("livecache@{}", env!("CARGO_PKG_VERSION"))),
    );
    m.insert("budget_s".into(), json!(cfg.budget.as_secs_f64()));
    m
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[m]
    } else {
        f64::midpoint(xs[m - 1], xs[m])
    })
}

fn summarize(cfg: &Cfg, runs: &[Map<String, Value>]) -> Map<String, Value> {
    let ok: Vec<&Map<String, Value>> = runs.iter().filter(|r| !r.contains_key("error")).collect();
    let mut line = ok
        .first()
        .map(|r| (*r).clone())
        .or_else(|| runs.first().cloned())
        .unwrap_or_else(|| base_line(cfg));
    let num = |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_f64);
    let med = |k: &str| median(ok.iter().filter_map(|r| num(r, k)).collect());
    let churn = cfg.workload == "churn";
    let secs: Vec<f64> = ok.iter().filter_map(|r| num(r, "seconds")).collect();
    line.insert("runs".into(), json!(ok.len()));
    line.insert(
        "seconds_each".into(),
        json!(secs.iter().map(|s| round4(*s)).collect::<Vec<_>>()),
    );
    for k in [
        "seconds",
        "seconds_notified",
        "setup_seconds",
        "peak_rss_mb",
        "heap_used_mb",
        "ns_per_update",
        "notifications",
        "wakes_per_subscriber",
        "wakes_max",
    ] {
        if let Some(v) = med(k) {
            line.insert(
                k.into(),
                json!(if k.starts_with("seconds") {
                    round4(v)
                } else {
                    v
                }),
            );
        }
    }
    let rate = |done: &str| {
        median(
            ok.iter()
                .filter_map(|r| Some(num(r, done)? / num(r, "seconds")?))
                .collect(),
        )
    };
    if churn {
        if let Some(r) = rate("entries_done") {
            line.insert("entries_per_sec".into(), json!(r.round()));
        }
        line.insert("updates_per_sec".into(), Value::Null);
    } else if cfg.workload != "memory"
        && let Some(r) = rate("updates_done")
    {
        line.insert("updates_per_sec".into(), json!(r.round()));
    }
    let all = |k: &str| !ok.is_empty() && ok.iter().all(|r| r.get(k) == Some(&json!(true)));
    line.insert("completed".into(), json!(all("completed")));
    line.insert("verified".into(), json!(all("verified")));
    let errors: Vec<Value> = runs
        .iter()
        .filter_map(|r| r.get("error").cloned())
        .collect();
    if !errors.is_empty() {
        line.insert("errors".into(), Value::Array(errors));
    }
    line.remove("error");
    line
}

fn run_child(cfg: &Cfg) -> Map<String, Value> {
    let mut fail = base_line(cfg);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            fail.insert("error".into(), json!(format!("no executable: {e}")));
            return fail;
        }
    };
    let output = Command::new(exe)
        .args(cfg.args())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| !k.starts_with("BENCH_")))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            fail.insert("error".into(), json!(format!("spawn failed: {e}")));
            return fail;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok());
    match parsed {
        Some(mut m) => {
            if !output.status.success() && !m.contains_key("error") {
                m.insert("error".into(), json!(format!("child {}", output.status)));
            }
            m
        }
        None => {
            fail.insert(
                "error".into(),
                json!(format!("child {}, no JSON", output.status)),
            );
            fail
        }
    }
}

/// One measured run of `cfg` in its own child process, with its progress line.
fn measure(cfg: &Cfg, r: usize, runs: usize, out_file: &str) -> Map<String, Value> {
    eprint!("[livecache] {} run {}/{} ... ", cfg.label(), r + 1, runs);
    let res = run_child(cfg);
    match res.get("error") {
        Some(e) => eprintln!("ERROR {e}"),
        None => eprintln!(
            "{:.4} s{} verified={}",
            res.get("seconds")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN),
            if res.get("completed") == Some(&json!(true)) {
                ""
            } else {
                " (cut at budget)"
            },
            res.get("verified").unwrap_or(&Value::Null)
        ),
    }
    if !out_file.is_empty() {
        append_line(out_file, &to_line(&res));
    }
    res
}

/// A configuration's runs and the line that summarises them.
struct Measured {
    cfg: Cfg,
    runs: Vec<Map<String, Value>>,
    line: Map<String, Value>,
}

impl Measured {
    fn ns(&self) -> Option<f64> {
        self.line.get("ns_per_update").and_then(Value::as_f64)
    }

    /// Each successful run's time per update, in run order.
    fn ns_each(&self) -> Vec<Option<f64>> {
        self.runs
            .iter()
            .map(|r| {
                if r.contains_key("error") {
                    None
                } else {
                    r.get("ns_per_update").and_then(Value::as_f64)
                }
            })
            .collect()
    }
}

fn print_line(line: &Map<String, Value>, out_file: &str) {
    let text = to_line(line);
    println!("{text}");
    if !out_file.is_empty() {
        append_line(out_file, &text);
    }
}

fn parent(o: &Opts) {
    let runs = if o.flag("quick") {
        1
    } else {
        o.num("runs").max(1)
    };
    let stop_after = o.num("stop-after") as f64;
    if cfg!(debug_assertions) {
        eprintln!("[livecache] warning: a debug build; run `cargo bench` for release numbers");
    }
    let out_file = o.str("out").to_owned();
    let measured = if o.flag("alternate") {
        alternated(&configs(o), runs, &out_file)
    } else {
        in_turn(configs(o), runs, stop_after, &out_file)
    };
    summaries(&measured, &out_file);
    let failed: Vec<String> = measured
        .iter()
        .filter(|m| m.cfg.workload == "flood" && m.runs.iter().any(|r| r.contains_key("error")))
        .map(|m| m.cfg.label())
        .collect();
    // W6's checks are hard failures: once the other configurations have run, the bench fails.
    assert!(
        failed.is_empty(),
        "W6 flood failed its checks in {failed:?}; the child's panic message is above"
    );
}

/// Every run of one configuration, then the next (the peers' order).
fn in_turn(cfgs: Vec<Cfg>, runs: usize, stop_after: f64, out_file: &str) -> Vec<Measured> {
    // W1: once a size was cut at the budget (or took longer than stop-after), larger U is not
    // attempted for that variant, as the peers do.
    let mut stopped: Vec<String> = Vec::new();
    let mut measured = Vec::new();
    for cfg in cfgs {
        let variant = format!(
            "{} {} {} {} {} {}",
            cfg.path, cfg.patches, cfg.recording, cfg.delivery, cfg.versioned, cfg.clone
        );
        if cfg.workload == "append" && stopped.contains(&variant) {
            let mut line = base_line(&cfg);
            line.insert(
                "skipped".into(),
                json!(format!("a smaller U took longer than {stop_after} s")),
            );
            println!("{}", to_line(&line));
            continue;
        }
        let mut results = Vec::new();
        for r in 0..runs {
            let res = measure(&cfg, r, runs, out_file);
            let cut = res.get("completed") != Some(&json!(true));
            let failed = res.contains_key("error");
            results.push(res);
            if failed || (cfg.workload == "append" && cut) {
                break;
            }
        }
        let line = summarize(&cfg, &results);
        print_line(&line, out_file);
        let secs = line.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
        if cfg.workload == "append"
            && (line.get("completed") != Some(&json!(true)) || secs > stop_after)
        {
            stopped.push(variant);
        }
        measured.push(Measured {
            cfg,
            runs: results,
            line,
        });
    }
    measured
}

/// `--alternate`: run 1 of every configuration, then run 2 of every one, and so on, so that
/// variants compared with each other see the same drift of the machine; a configuration whose
/// run failed (or, for W1, was cut at the budget) is not run again.
fn alternated(cfgs: &[Cfg], runs: usize, out_file: &str) -> Vec<Measured> {
    let mut results: Vec<Vec<Map<String, Value>>> = vec![Vec::new(); cfgs.len()];
    let mut ended = vec![false; cfgs.len()];
    for r in 0..runs {
        for (i, cfg) in cfgs.iter().enumerate() {
            if ended[i] {
                continue;
            }
            let res = measure(cfg, r, runs, out_file);
            let cut = res.get("completed") != Some(&json!(true));
            ended[i] = res.contains_key("error") || (cfg.workload == "append" && cut);
            results[i].push(res);
        }
    }
    cfgs.iter()
        .zip(results)
        .map(|(cfg, runs)| {
            let line = summarize(cfg, &runs);
            print_line(&line, out_file);
            Measured {
                cfg: cfg.clone(),
                runs,
                line,
            }
        })
        .collect()
}

/// The median of `f` over runs paired by their index (the same round of `--alternate`).
fn paired(a: &[Option<f64>], b: &[Option<f64>], f: impl Fn(f64, f64) -> f64) -> Option<f64> {
    median(
        a.iter()
            .zip(b)
            .filter_map(|(x, y)| Some(f((*x)?, (*y)?)))
            .collect(),
    )
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// The ratios the targets are stated in, from configurations measured in this run: versioned
/// against unversioned, and W2's growth from 100 to 10,000 entries against the floor's.
fn summaries(measured: &[Measured], out_file: &str) {
    for v in measured.iter().filter(|m| m.cfg.versioned) {
        let key = v.cfg.twin_key();
        let twin = |clone: bool| {
            measured
                .iter()
                .find(|m| !m.cfg.versioned && m.cfg.clone == clone && m.cfg.twin_key() == key)
        };
        let Some(u) = twin(false) else {
            continue;
        };
        let (Some(nv), Some(nu)) = (v.ns(), u.ns()) else {
            continue;
        };
        let ratio = nv / nu;
        let mut line = Map::new();
        line.insert("peer".into(), json!("livecache"));
        line.insert("summary".into(), json!("versioned"));
        line.insert("of".into(), json!(v.cfg.label()));
        line.insert("ns_unversioned".into(), json!(nu));
        line.insert("ns_versioned".into(), json!(nv));
        line.insert("ratio".into(), json!(round3(ratio)));
        line.insert(
            "ratio_paired".into(),
            json!(paired(&v.ns_each(), &u.ns_each(), |a, b| a / b).map(round3)),
        );
        if let Some(c) = twin(true)
            && let Some(nc) = c.ns()
        {
            line.insert("ns_unversioned_clone".into(), json!(nc));
            line.insert("ratio_vs_clone".into(), json!(round3(nv / nc)));
            line.insert(
                "ratio_vs_clone_paired".into(),
                json!(paired(&v.ns_each(), &c.ns_each(), |a, b| a / b).map(round3)),
            );
        }
        line.insert("target".into(), json!(1.2));
        line.insert("met".into(), json!(ratio <= 1.2));
        print_line(&line, out_file);
    }
    let fanout =
        |m: &Measured, entries: usize| m.cfg.workload == "fanout" && m.cfg.entries == entries;
    let twin = |small: &Measured| {
        measured.iter().find(|m| {
            fanout(m, 10_000)
                && Cfg {
                    entries: 100,
                    updates: small.cfg.updates,
                    ..m.cfg.clone()
                }
                .twin_key()
                    == small.cfg.twin_key()
                && m.cfg.versioned == small.cfg.versioned
                && m.cfg.clone == small.cfg.clone
        })
    };
    let floor_small = measured
        .iter()
        .find(|m| fanout(m, 100) && m.cfg.path == "floor");
    let Some((f100, f10k)) = floor_small.and_then(|f| Some((f, twin(f)?))) else {
        return;
    };
    let (Some(fa), Some(fb)) = (f100.ns(), f10k.ns()) else {
        return;
    };
    let floor_growth = fb / fa;
    for small in measured
        .iter()
        .filter(|m| fanout(m, 100) && m.cfg.path != "floor")
    {
        let Some(large) = twin(small) else { continue };
        let (Some(a), Some(b)) = (small.ns(), large.ns()) else {
            continue;
        };
        let growth = b / a;
        let ratio = growth / floor_growth;
        let growth_each: Vec<Option<f64>> = small
            .ns_each()
            .iter()
            .zip(large.ns_each())
            .map(|(a, b)| Some(b? / (*a)?))
            .collect();
        let floor_each: Vec<Option<f64>> = f100
            .ns_each()
            .iter()
            .zip(f10k.ns_each())
            .map(|(a, b)| Some(b? / (*a)?))
            .collect();
        let mut line = Map::new();
        line.insert("peer".into(), json!("livecache"));
        line.insert("summary".into(), json!("fanout_growth"));
        line.insert("of".into(), json!(small.cfg.variant()));
        line.insert("ns_e100".into(), json!(a));
        line.insert("ns_e10000".into(), json!(b));
        line.insert("growth".into(), json!(round3(growth)));
        line.insert("floor_ns_e100".into(), json!(fa));
        line.insert("floor_ns_e10000".into(), json!(fb));
        line.insert("floor_growth".into(), json!(round3(floor_growth)));
        line.insert("growth_over_floor".into(), json!(round3(ratio)));
        line.insert(
            "growth_over_floor_paired".into(),
            json!(paired(&growth_each, &floor_each, |g, f| g / f).map(round3)),
        );
        line.insert("target".into(), json!(1.5));
        line.insert("met".into(), json!(ratio <= 1.5));
        print_line(&line, out_file);
    }
}

fn append_line(path: &str, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn child(o: &Opts) {
    let cfg = Cfg::from_child_opts(o);
    let mut line = base_line(&cfg);
    let result = match (cfg.workload.as_str(), cfg.path.as_str()) {
        ("e2e", _) => e2e::run(&cfg),
        ("memory", _) => memory::run(&cfg),
        ("flood", _) => flood::run(&cfg),
        (_, "runtime") => runtime::run(&cfg),
        (_, "core") => sans_io::run(&cfg),
        (_, "floor") => floor::run(&cfg),
        (_, other) => Err(format!("unknown path {other}")),
    };
    match result {
        Ok(fields) => line.extend(fields),
        Err(e) => {
            line.insert("error".into(), json!(e));
        }
    }
    if !line.contains_key("peak_rss_mb") {
        line.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    }
    println!("{}", to_line(&line));
}

fn main() {
    let o = Opts::parse();
    if o.flag("child") {
        child(&o);
    } else {
        parent(&o);
    }
}
