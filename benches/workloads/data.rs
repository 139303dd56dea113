//! The peers' deterministic workload data (`benches/peers/lib/data.mjs`), ported byte for byte:
//! mulberry32, the word list, the message shape and the FNV-1a `workload_hash` over
//! `JSON.stringify(value) + "\n"`. `node benches/peers/lib/gen-workload.mjs append 1000` prints
//! `953805fe`, and so does `workload_hash` here.

use serde::{Deserialize, Serialize};

/// The peers' seeds.
pub const SEED_APPEND: u32 = 1;
pub const SEED_FANOUT: u32 = 2;
pub const SEED_PATCH_INITIAL: u32 = 3;
pub const SEED_PATCH_UPDATES: u32 = 4;
/// The warm-up uses seed + 1000 and `warm-` prefixed keys.
pub const WARMUP_SEED_OFFSET: u32 = 1000;

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// mulberry32: floats in [0, 1), exactly as the JavaScript version computes them.
pub struct Mulberry32(u32);

impl Mulberry32 {
    pub fn new(seed: u32) -> Self {
        Mulberry32(seed)
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x6d2b_79f5);
        let mut t = self.0;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }

    /// `(r() * n) | 0` for small positive `n`.
    pub fn below(&mut self, n: u32) -> usize {
        (self.next_f64() * f64::from(n)) as usize
    }
}

/// A chat message; fields in the peers' order, so its JSON is byte-identical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub channel: String,
    #[serde(rename = "userName")]
    pub user_name: String,
    pub text: String,
}

/// A W3 update: `draft[index].text = text`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchUpdate {
    pub index: usize,
    pub text: String,
}

fn make_text(rng: &mut Mulberry32, id: u64) -> String {
    let mut s = format!("m{id}");
    for _ in 0..4 {
        s.push(' ');
        s.push_str(WORDS[rng.below(16)]);
    }
    s
}

pub fn make_message(rng: &mut Mulberry32, id: u64, channel: &str) -> Message {
    let user_name = format!("user{}", rng.below(1000)); // drawn before the text
    Message {
        id,
        channel: channel.to_owned(),
        user_name,
        text: make_text(rng, id),
    }
}

pub fn channel_name(prefix: &str, e: usize) -> String {
    format!("{prefix}ch-{e}")
}

pub fn churn_name(prefix: &str, i: usize) -> String {
    format!("{prefix}churn-{i}")
}

/// W1: `u` messages for channel 0.
pub fn gen_append(u: usize, prefix: &str, seed_offset: u32) -> Vec<Message> {
    let mut rng = Mulberry32::new(SEED_APPEND + seed_offset);
    let ch = channel_name(prefix, 0);
    (0..u)
        .map(|i| make_message(&mut rng, i as u64, &ch))
        .collect()
}

/// W2: `e` channels × `k` messages, round-robin: id = k·E + e goes to channel e.
pub fn gen_fanout(e: usize, k: usize, prefix: &str, seed_offset: u32) -> Vec<Message> {
    let mut rng = Mulberry32::new(SEED_FANOUT + seed_offset);
    let channels: Vec<String> = (0..e).map(|i| channel_name(prefix, i)).collect();
    let mut msgs = Vec::with_capacity(e * k);
    for kk in 0..k {
        for (ee, ch) in channels.iter().enumerate() {
            msgs.push(make_message(&mut rng, (kk * e + ee) as u64, ch));
        }
    }
    msgs
}

/// W3 initial data: `size` messages on channel 0.
pub fn gen_patch_initial(size: usize, prefix: &str, seed_offset: u32) -> Vec<Message> {
    let mut rng = Mulberry32::new(SEED_PATCH_INITIAL + seed_offset);
    let ch = channel_name(prefix, 0);
    (0..size)
        .map(|i| make_message(&mut rng, i as u64, &ch))
        .collect()
}

/// W3 updates: index uniform in [0, size).
pub fn gen_patch_updates(size: usize, u: usize, seed_offset: u32) -> Vec<PatchUpdate> {
    let mut rng = Mulberry32::new(SEED_PATCH_UPDATES + seed_offset);
    (0..u)
        .map(|i| {
            let index = (rng.next_f64() * size as f64) as usize;
            let text = format!("edit{i} {}", WORDS[rng.below(16)]);
            PatchUpdate { index, text }
        })
        .collect()
}

/// FNV-1a 32-bit, continued from `h`, over ASCII text (= UTF-16 code units here).
fn fnv1a(text: &str, mut h: u32) -> u32 {
    for unit in text.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The peers' `hashJsonLines`: FNV-1a over `JSON.stringify(v) + "\n"` for every value.
pub fn hash_json_lines<T: Serialize>(values: &[T], h: u32) -> u32 {
    values.iter().fold(h, |h, v| {
        let line = serde_json::to_string(v).unwrap_or_default();
        fnv1a("\n", fnv1a(&line, h))
    })
}

pub const FNV_OFFSET: u32 = 0x811c_9dc5;

pub fn hex(h: u32) -> String {
    format!("{h:08x}")
}

/// Mean JSON size of the first 1 000 values (the peers' `avgJsonBytes`).
pub fn avg_json_bytes<T: Serialize>(values: &[T]) -> usize {
    let n = values.len().min(1000);
    if n == 0 {
        return 0;
    }
    let total: usize = values[..n]
        .iter()
        .map(|v| serde_json::to_string(v).map_or(0, |s| s.len()))
        .sum();
    (total as f64 / n as f64).round() as usize
}
