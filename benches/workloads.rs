//! The peers' streaming-update workloads (W1–W4, as `benches/peers` runs them on RTK Query and
//! TanStack Query), W5 (a loopback WebSocket into the cache) and the floor, through livecache's
//! public API. `cargo bench --bench workloads` runs them; `docs/performance.md` has the results
//! and how to read them.
//!
//! Like the peers, the parent process runs every measured run in a fresh child process (this same
//! executable with `--child`), so `peak_rss_mb` (VmHWM) belongs to that run, takes the median
//! of `--runs` and prints one JSON line per configuration with the peers' field names and
//! `"peer": "livecache"`. Progress goes to stderr.
//!
//! ```text
//! cargo bench --bench workloads -- --workload=append,fanout,patch,churn,e2e \
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
//!   loop without decoding.
//! * `patches`: `false` (`update_cached_data`, which computes no patches) or `true`
//!   (`update_cached_data_with_patches`).
//! * `recording`: `events` (the library default), `off`, `events_with_patches`.
//! * `delivery`: `sync` (the feed calls `update_cached_data` directly, like the peers' sync
//!   delivery) or `stream` (each entry's handler consumes a channel with `EntryHandle::stream`).
//! * `flavor`: `current_thread` (default) or `multi_thread` (2 workers).
//! * `memory` is an extra workload: bytes per idle entry and per subscription.

#![allow(clippy::cast_precision_loss)]

#[path = "workloads/data.rs"]
mod data;
#[path = "workloads/e2e.rs"]
mod e2e;
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
    pub entries: usize,
    pub updates: usize,
    pub size: usize,
    pub concurrency: usize,
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
            format!("--entries={}", self.entries),
            format!("--updates={}", self.updates),
            format!("--size={}", self.size),
            format!("--concurrency={}", self.concurrency),
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
            entries: o.num("entries"),
            updates: o.num("updates"),
            size: o.num("size"),
            concurrency: o.num("concurrency").max(1),
            budget: Duration::from_secs_f64(o.str("budget").parse().unwrap_or(60.0)),
        }
    }

    /// A label for progress lines.
    fn label(&self) -> String {
        let mut s = format!(
            "{} path={} E={} U={}",
            self.workload, self.path, self.entries, self.updates
        );
        if self.workload == "churn" {
            s += &format!(" C={}", self.concurrency);
        }
        if self.patches {
            s += " patches";
        }
        if self.recording != "events" {
            s += &format!(" recording={}", self.recording);
        }
        if self.delivery != "sync" {
            s += &format!(" delivery={}", self.delivery);
        }
        s
    }

    /// Whether this combination means anything.
    fn valid(&self) -> bool {
        let w = self.workload.as_str();
        let p = self.path.as_str();
        let cache_path = p == "runtime" || p == "core";
        let ok = match w {
            "append" | "fanout" | "patch" => cache_path || p == "floor",
            "churn" | "memory" => cache_path,
            "e2e" => p == "runtime" || p == "floor" || p == "socket",
            _ => false,
        };
        let patches_ok =
            !self.patches || (cache_path && matches!(w, "append" | "fanout" | "patch"));
        let delivery_ok = self.delivery == "sync" || (p == "runtime" && w != "churn");
        ok && patches_ok && delivery_ok
    }
}

fn configs(o: &Opts) -> Vec<Cfg> {
    let quick = o.flag("quick");
    let mut workloads = o.list("workload");
    if workloads.iter().any(|w| w == "all") {
        workloads.retain(|w| w != "all");
        for w in ["append", "fanout", "patch", "churn", "e2e"] {
            workloads.push(w.to_owned());
        }
    }
    let budget = Duration::from_secs_f64(o.str("budget").parse().unwrap_or(60.0));
    let mut out = Vec::new();
    for path in o.list("path") {
        for patches in o.list("patches") {
            for recording in o.list("recording") {
                for delivery in o.list("delivery") {
                    let base = Cfg {
                        workload: String::new(),
                        path: path.clone(),
                        patches: patches == "true",
                        recording: recording.clone(),
                        delivery: delivery.clone(),
                        flavor: o.str("flavor").to_owned(),
                        entries: 1,
                        updates: 0,
                        size: 0,
                        concurrency: 1,
                        budget,
                    };
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
                            other => eprintln!("[livecache] unknown workload {other}"),
                        }
                    }
                }
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
    // W1: once a size was cut at the budget (or took longer than stop-after), larger U is not
    // attempted for that variant, as the peers do.
    let mut stopped: Vec<String> = Vec::new();
    for cfg in configs(o) {
        let variant = format!(
            "{} {} {} {}",
            cfg.path, cfg.patches, cfg.recording, cfg.delivery
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
            eprint!("[livecache] {} run {}/{} ... ", cfg.label(), r + 1, runs);
            let res = run_child(&cfg);
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
                append_line(&out_file, &to_line(&res));
            }
            let cut = res.get("completed") != Some(&json!(true));
            let failed = res.contains_key("error");
            results.push(res);
            if failed || (cfg.workload == "append" && cut) {
                break;
            }
        }
        let line = summarize(&cfg, &results);
        let text = to_line(&line);
        println!("{text}");
        if !out_file.is_empty() {
            append_line(&out_file, &text);
        }
        let secs = line.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
        if cfg.workload == "append"
            && (line.get("completed") != Some(&json!(true)) || secs > stop_after)
        {
            stopped.push(variant);
        }
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
