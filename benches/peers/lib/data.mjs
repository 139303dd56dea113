// The workloads' data, generated deterministically so that every implementation (these two
// JavaScript peers and livecache's Rust bench, `benches/workloads/data.rs`) sees exactly the
// same messages. Nothing here touches a cache library.
//
// A message is {id, channel, userName, text}, in that key order (it decides the JSON bytes):
// first a random number draws the user, then four more draw the words of the text.

/** The workloads' seeds; the warm-up adds WARMUP_SEED_OFFSET to each. */
export const SEEDS = Object.freeze({ append: 1, fanout: 2, patchInitial: 3, patchUpdates: 4 });
export const WARMUP_SEED_OFFSET = 1000;

export const WORDS = Object.freeze([
  'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel',
  'india', 'juliet', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa',
]);

/**
 * mulberry32, a 32-bit generator: returns a function giving floats in [0, 1). All arithmetic
 * is kept in unsigned 32 bits (`>>> 0`, `Math.imul`), which the Rust port mirrors.
 */
export function mulberry32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** An integer in [0, n) from one draw (the float scaled and truncated). */
const draw = (rng, n) => (rng() * n) | 0;
const word = (rng) => WORDS[draw(rng, WORDS.length)];

/** One chat message; the user is drawn before the four words of the text. */
export function message(rng, id, channel) {
  const userName = 'user' + draw(rng, 1000);
  const text = `m${id} ${word(rng)} ${word(rng)} ${word(rng)} ${word(rng)}`;
  return { id, channel, userName, text };
}

/** The name of entry `index` (its argument): 'ch-3', or 'warm-ch-3' during the warm-up. */
export const channelName = (prefix, index) => `${prefix}ch-${index}`;
/** W4's arguments: one distinct argument per lifecycle. */
export const churnName = (prefix, index) => `${prefix}churn-${index}`;

/** W1: `count` messages, ids 0..count-1, all for entry 0. */
export function genAppend(count, prefix = '', seedOffset = 0) {
  const rng = mulberry32(SEEDS.append + seedOffset);
  const channel = channelName(prefix, 0);
  const msgs = Array.from({ length: count }, (_, id) => message(rng, id, channel));
  return { channel, msgs };
}

/**
 * W2: `entries` channels with `perEntry` messages each, in round-robin order: message
 * `k * entries + e` (the k-th for channel e) comes right after message `k * entries + e - 1`.
 */
export function genFanout(entries, perEntry, prefix = '', seedOffset = 0) {
  const rng = mulberry32(SEEDS.fanout + seedOffset);
  const channels = Array.from({ length: entries }, (_, e) => channelName(prefix, e));
  const msgs = [];
  for (let round = 0; round < perEntry; round++) {
    for (const [e, channel] of channels.entries()) msgs.push(message(rng, round * entries + e, channel));
  }
  return { channels, msgs };
}

/** W3's initial data: `size` messages for entry 0 (new objects on every call). */
export function genPatchInitial(size, prefix = '', seedOffset = 0) {
  const rng = mulberry32(SEEDS.patchInitial + seedOffset);
  const channel = channelName(prefix, 0);
  return Array.from({ length: size }, (_, id) => message(rng, id, channel));
}

/** W3's updates: `{index, text}`, the index drawn first, uniform in [0, size). */
export function genPatchUpdates(size, count, seedOffset = 0) {
  const rng = mulberry32(SEEDS.patchUpdates + seedOffset);
  return Array.from({ length: count }, (_, u) => {
    const index = draw(rng, size);
    return { index, text: `edit${u} ${word(rng)}` };
  });
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The `workload_hash`: 32-bit FNV-1a over `JSON.stringify(value) + "\n"` for every value in
 * turn (over UTF-16 code units; the data is ASCII), as 8 hex digits.
 */
export function hashJsonLines(values) {
  let hash = FNV_OFFSET;
  for (const value of values) {
    const line = JSON.stringify(value) + '\n';
    for (let i = 0; i < line.length; i++) hash = Math.imul(hash ^ line.charCodeAt(i), FNV_PRIME) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** The mean JSON size in bytes of the first `sample` values, rounded (0 for none). */
export function avgJsonBytes(values, sample = 1000) {
  const n = Math.min(values.length, sample);
  let bytes = 0;
  for (let i = 0; i < n; i++) bytes += JSON.stringify(values[i]).length;
  return n === 0 ? 0 : Math.round(bytes / n);
}
