//! What the runtime, core and floor drivers share: the update payloads, the recipe that applies
//! them, the workload data prepared before the clock starts, the verification after it stops, and
//! the probes subscribers use to tell when they have seen the final state.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::data::{
    self, FNV_OFFSET, Message, Mulberry32, PatchUpdate, SEED_APPEND, SEED_FANOUT, channel_name,
};
use crate::{Cfg, mb, ns_per};

/// One update as the feed delivers it.
#[derive(Clone)]
pub enum Payload {
    /// `draft.push(msg)` (W1, W2).
    Push(Message),
    /// `draft[index].text = text` (W3).
    Patch(PatchUpdate),
}

/// Where a payload lands: the plain list (the floor) or a draft of it (core and runtime), where
/// the change is made the way the docs show, so that with patches wanted the draft records them
/// at the cost of the change.
pub trait Messages {
    fn push_message(&mut self, message: Message);
    fn set_text(&mut self, index: usize, text: String);
}

impl Messages for Vec<Message> {
    fn push_message(&mut self, message: Message) {
        self.push(message);
    }
    fn set_text(&mut self, index: usize, text: String) {
        self[index].text = text;
    }
}

impl Messages for livecache::core::Draft<'_, Vec<Message>> {
    fn push_message(&mut self, message: Message) {
        self.push(message);
    }
    fn set_text(&mut self, index: usize, text: String) {
        if let Some(mut message) = self.item_mut(index) {
            message.text = text;
        }
    }
}

/// The update recipe: what the peers' `updateCachedData` recipes do.
pub fn apply<D: Messages + ?Sized>(draft: &mut D, payload: Payload) {
    match payload {
        Payload::Push(m) => draft.push_message(m),
        Payload::Patch(u) => draft.set_text(u.index, u.text),
    }
}

/// The update recipe of a versioned message, which takes it by reference (a rebase may apply it
/// again): the same change, with a clone of what it adds.
pub fn apply_ref<D: Messages + ?Sized>(draft: &mut D, payload: &Payload) {
    match payload {
        Payload::Push(m) => draft.push_message(m.clone()),
        Payload::Patch(u) => draft.set_text(u.index, u.text.clone()),
    }
}

/// Per entry: how many updates the feed applied, how many the driver emitted (set once the emit
/// loop ends), and what a subscriber saw.
pub struct Probe {
    applied: AtomicU64,
    target: AtomicU64,
    /// The most updates a subscriber's completed read is known to include.
    read: AtomicU64,
    final_seen: AtomicBool,
    pub notifications: AtomicU64,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            applied: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            read: AtomicU64::new(0),
            final_seen: AtomicBool::new(false),
            notifications: AtomicU64::new(0),
        }
    }
}

impl Probe {
    /// One more update applied. One writer per entry, so no read-modify-write is needed.
    pub fn bump(&self) {
        let n = self.applied.load(Ordering::Relaxed);
        self.applied.store(n + 1, Ordering::Release);
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The driver emitted `n` updates. If a subscriber already read a state with all of them
    /// (a stream's subscriber can be woken for the last one before the emit loop ends), it has
    /// seen the final state.
    pub fn set_target(&self, n: u64) {
        self.target.store(n, Ordering::SeqCst);
        if self.read.load(Ordering::SeqCst) >= n {
            self.saw_final();
        }
    }

    /// A subscriber was notified: counts it and returns how many updates were applied. It must
    /// call this *before* it reads the state, and [`Probe::read_done`] with the result after.
    pub fn notified_at(&self) -> u64 {
        self.notifications.fetch_add(1, Ordering::Relaxed);
        self.applied()
    }

    /// A subscriber's read, begun after `applied` updates, is done: it saw the final state if
    /// that was all of them (whichever of this and [`Probe::set_target`] comes second says so).
    pub fn read_done(&self, applied: u64) {
        self.read.fetch_max(applied, Ordering::SeqCst);
        if applied >= self.target.load(Ordering::SeqCst) {
            self.saw_final();
        }
    }

    /// A subscriber was notified. It must call this *before* it reads the state: if every
    /// update had been applied by then, the state it then reads is the final one.
    pub fn notified(&self) -> bool {
        self.notifications.fetch_add(1, Ordering::Relaxed);
        self.applied() >= self.target.load(Ordering::Acquire)
    }

    pub fn saw_final(&self) {
        self.final_seen.store(true, Ordering::Release);
    }

    pub fn final_seen(&self) -> bool {
        self.final_seen.load(Ordering::Acquire)
    }
}

/// Yield to the runtime until `cond` holds or `timeout` passes.
pub async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > timeout {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

/// The workload's data, generated before the clock starts.
pub struct Prepared {
    pub channels: Vec<String>,
    /// W3's initial array (handed to the cache by the query function).
    pub initial: Option<Vec<Message>>,
    /// Every update with the index of its entry, in delivery order.
    pub stream: Vec<(usize, Payload)>,
    pub hash: Option<String>,
    pub payload: String,
    pub payload_bytes: usize,
    pub expected_length: usize,
    /// How many updates the workload has.
    pub total: usize,
}

/// Generate workload `cfg.workload` (`append`, `fanout`, `patch`) with the given key prefix and
/// seed offset; the hash is computed for measured runs only (no prefix), as the peers do.
pub fn prepare(cfg: &Cfg, prefix: &str, seed_offset: u32) -> Prepared {
    let measured = prefix.is_empty();
    match cfg.workload.as_str() {
        "append" => {
            let msgs = data::gen_append(cfg.updates, prefix, seed_offset);
            let bytes = data::avg_json_bytes(&msgs);
            Prepared {
                channels: vec![channel_name(prefix, 0)],
                initial: None,
                hash: measured.then(|| data::hex(data::hash_json_lines(&msgs, FNV_OFFSET))),
                stream: msgs.into_iter().map(|m| (0, Payload::Push(m))).collect(),
                payload: format!("push message{{id,channel,userName,text}} ~{bytes} B JSON"),
                payload_bytes: bytes,
                expected_length: cfg.updates,
                total: cfg.updates,
            }
        }
        "fanout" => {
            let e = cfg.entries;
            let msgs = data::gen_fanout(e, cfg.updates, prefix, seed_offset);
            let bytes = data::avg_json_bytes(&msgs);
            Prepared {
                channels: (0..e).map(|i| channel_name(prefix, i)).collect(),
                initial: None,
                hash: measured.then(|| data::hex(data::hash_json_lines(&msgs, FNV_OFFSET))),
                expected_length: msgs.len(),
                total: msgs.len(),
                stream: msgs
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| (i % e, Payload::Push(m)))
                    .collect(),
                payload: format!(
                    "push message{{id,channel,userName,text}} ~{bytes} B JSON, round-robin over {e} entries"
                ),
                payload_bytes: bytes,
            }
        }
        _ => {
            let initial = data::gen_patch_initial(cfg.size, prefix, seed_offset);
            let ups = data::gen_patch_updates(cfg.size, cfg.updates, seed_offset);
            let bytes = data::avg_json_bytes(&ups);
            let hash = measured.then(|| {
                data::hex(data::hash_json_lines(
                    &ups,
                    data::hash_json_lines(&initial, FNV_OFFSET),
                ))
            });
            Prepared {
                channels: vec![channel_name(prefix, 0)],
                initial: Some(initial),
                hash,
                stream: ups.into_iter().map(|u| (0, Payload::Patch(u))).collect(),
                payload: format!(
                    "set draft[i].text (~{bytes} B update) in an array of {} messages",
                    cfg.size
                ),
                payload_bytes: bytes,
                expected_length: cfg.size,
                total: cfg.updates,
            }
        }
    }
}

/// How many of the first `done` round-robin updates went to entry `e` of `entries`.
pub fn emitted_to(e: usize, entries: usize, done: usize) -> u64 {
    (done / entries + usize::from(e < done % entries)) as u64
}

/// Check the cached data against a fresh generation of the first `done` updates (streamed, so
/// no second copy of the data is held). Returns (verified, final length).
pub fn verify<R: Deref<Target = Vec<Message>>>(
    cfg: &Cfg,
    prefix: &str,
    seed_offset: u32,
    done: usize,
    mut read: impl FnMut(usize) -> Option<R>,
) -> (bool, usize) {
    match cfg.workload.as_str() {
        "append" => {
            let Some(data) = read(0) else {
                return (false, 0);
            };
            let mut rng = Mulberry32::new(SEED_APPEND + seed_offset);
            let ch = channel_name(prefix, 0);
            let mut ok = data.len() == done;
            for (j, got) in data.iter().enumerate().take(done) {
                let want = data::make_message(&mut rng, j as u64, &ch);
                ok &= got.id == j as u64 && got.text == want.text;
            }
            (ok, data.len())
        }
        "fanout" => {
            let e_count = cfg.entries;
            let readers: Vec<Option<R>> = (0..e_count).map(&mut read).collect();
            let mut ok = readers.iter().all(Option::is_some);
            let lens: Vec<usize> = readers
                .iter()
                .map(|r| r.as_ref().map_or(0, |d| d.len()))
                .collect();
            let sum: usize = lens.iter().sum();
            ok &= sum == done;
            for (e, len) in lens.iter().enumerate() {
                ok &= *len as u64 == emitted_to(e, e_count, done);
            }
            let mut rng = Mulberry32::new(SEED_FANOUT + seed_offset);
            let channels: Vec<String> = (0..e_count).map(|i| channel_name(prefix, i)).collect();
            'outer: for k in 0..cfg.updates {
                for (e, ch) in channels.iter().enumerate() {
                    let id = k * e_count + e;
                    if id >= done {
                        break 'outer;
                    }
                    let want = data::make_message(&mut rng, id as u64, ch);
                    let got = readers[e].as_ref().and_then(|d| d.get(k));
                    ok &= got.is_some_and(|g| g.id == id as u64 && g.text == want.text);
                }
            }
            (ok, sum)
        }
        _ => {
            let Some(data) = read(0) else {
                return (false, 0);
            };
            let mut expected: Vec<String> = data::gen_patch_initial(cfg.size, prefix, seed_offset)
                .into_iter()
                .map(|m| m.text)
                .collect();
            for u in data::gen_patch_updates(cfg.size, cfg.updates, seed_offset)
                .into_iter()
                .take(done)
            {
                expected[u.index] = u.text;
            }
            let mut ok = data.len() == cfg.size;
            for (j, (got, want)) in data.iter().zip(&expected).enumerate() {
                ok &= got.id == j as u64 && got.text == *want;
            }
            (ok, data.len())
        }
    }
}

/// The warm-up: the same workload at a smaller size (the peers' `warmupConfig`).
pub fn warmup_cfg(cfg: &Cfg) -> Cfg {
    let mut w = cfg.clone();
    match cfg.workload.as_str() {
        "append" => w.updates = cfg.updates.min(2000),
        "fanout" => {
            w.entries = cfg.entries.min(100);
            w.updates = cfg.updates.min(20);
        }
        "patch" => {
            w.size = cfg.size.min(2000);
            w.updates = cfg.updates.min(1000);
        }
        "churn" => w.entries = cfg.entries.min(300),
        _ => {}
    }
    w.budget = Duration::from_secs(30);
    w
}

/// How often the emit loops look at the clock (the peers' `CHECK_EVERY`).
pub const CHECK_EVERY: usize = 63;

/// What one measured W1–W3 run found, for its JSON line.
pub struct PushRun {
    pub seconds: f64,
    pub seconds_notified: f64,
    pub setup_seconds: f64,
    pub done: usize,
    pub final_length: usize,
    pub verified: bool,
    pub notifications: u64,
    pub heap_bytes: usize,
    pub peak_rss_mb: Option<f64>,
}

/// The peers' fields of a W1–W3 line (plus `ns_per_update`), the same for every path.
pub fn push_line(cfg: &Cfg, prep: &Prepared, run: &PushRun) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("payload".into(), json!(prep.payload));
    m.insert("payload_bytes".into(), json!(prep.payload_bytes));
    m.insert("seconds".into(), json!(run.seconds));
    m.insert("seconds_notified".into(), json!(run.seconds_notified));
    m.insert("setup_seconds".into(), json!(run.setup_seconds));
    m.insert("updates_done".into(), json!(run.done));
    m.insert("completed".into(), json!(run.done == prep.total));
    m.insert("final_length".into(), json!(run.final_length));
    m.insert("expected_length".into(), json!(prep.expected_length));
    m.insert("verified".into(), json!(run.verified));
    m.insert("notifications".into(), json!(run.notifications));
    m.insert("heap_used_mb".into(), json!(mb(run.heap_bytes as f64)));
    m.insert("peak_rss_mb".into(), json!(run.peak_rss_mb));
    m.insert("ns_per_update".into(), json!(ns_per(run.seconds, run.done)));
    m.insert("workload_hash".into(), json!(prep.hash));
    if cfg.workload == "patch" {
        m.insert("array_size".into(), json!(cfg.size));
    }
    m
}

/// What one measured W4 run found, for its JSON line.
pub struct ChurnRun {
    pub payload: &'static str,
    pub concurrency: usize,
    pub seconds: f64,
    pub done: usize,
    pub total: usize,
    pub left: usize,
    pub verified: bool,
    pub notifications: u64,
    pub heap_bytes: usize,
    pub peak_rss_mb: Option<f64>,
}

/// The peers' fields of a W4 line (plus `ns_per_lifecycle`), the same for every path.
pub fn churn_line(run: &ChurnRun) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("payload".into(), json!(run.payload));
    m.insert("payload_bytes".into(), json!(2));
    m.insert("concurrency".into(), json!(run.concurrency));
    m.insert("seconds".into(), json!(run.seconds));
    m.insert("seconds_notified".into(), Value::Null);
    m.insert("setup_seconds".into(), json!(0));
    m.insert("entries_done".into(), json!(run.done));
    m.insert("updates_done".into(), json!(0));
    m.insert("completed".into(), json!(run.done == run.total));
    m.insert("final_length".into(), json!(run.left));
    m.insert("expected_length".into(), json!(0));
    m.insert("verified".into(), json!(run.verified));
    m.insert("notifications".into(), json!(run.notifications));
    m.insert("heap_used_mb".into(), json!(mb(run.heap_bytes as f64)));
    m.insert("peak_rss_mb".into(), json!(run.peak_rss_mb));
    m.insert(
        "ns_per_lifecycle".into(),
        json!(ns_per(run.seconds, run.done)),
    );
    m.insert("workload_hash".into(), Value::Null);
    m
}
