// Small pieces the runner, the workloads and the two adapters share: the clock, waiting across
// event-loop turns, one-shot signals per argument, the fake push source, memory figures.

import { readFileSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';

/** Monotonic time in nanoseconds (a BigInt). */
export const now = () => process.hrtime.bigint();
/** Seconds from `start` to `end` (both from `now()`). */
export const secondsSince = (start, end = now()) => Number(end - start) / 1e9;

/**
 * Wait, one event-loop turn at a time (setImmediate), until `done()` holds; false if it still
 * does not after `timeoutMs`. Waiting across turns means deferred work is counted too.
 */
export async function until(done, timeoutMs = 60_000) {
  const start = now();
  const limit = BigInt(timeoutMs) * 1_000_000n;
  while (!done()) {
    await nextTurn();
    if (now() - start > limit) return false;
  }
  return true;
}

/** `promise`, or `fallback` if it has not settled after `ms` (the timer never outlives it). */
export function withTimeout(promise, ms, fallback = 'timeout') {
  let timer;
  const expiry = new Promise((resolve) => { timer = setTimeout(resolve, ms, fallback); });
  return Promise.race([promise.finally(() => clearTimeout(timer)), expiry]);
}

/**
 * One-shot signals by key: `wait(key)` may come before or after `resolve(key, value)`. The
 * adapters keep one for "loaded" (the handler got its first data and listens) and one for
 * "removed" (the handler saw the entry removed and stopped listening).
 */
export class Deferreds {
  #slots = new Map();

  #slot(key) {
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = { settled: false };
      slot.promise = new Promise((resolve) => { slot.resolve = resolve; });
      this.#slots.set(key, slot);
    }
    return slot;
  }

  resolve(key, value) {
    const slot = this.#slot(key);
    slot.settled = true;
    slot.resolve(value);
  }

  wait(key) { return this.#slot(key).promise; }
  isDone(key) { return this.#slots.get(key)?.settled === true; }
  delete(key) { this.#slots.delete(key); }
  clear() { this.#slots.clear(); }
}

/**
 * The fake push source a lifecycle handler listens on, in place of a WebSocket: at most one
 * listener per channel, called synchronously by `emit`. A message for a channel nobody listens
 * on is counted in `dropped` (a verified run drops none).
 */
export class Feed {
  listeners = new Map();
  dropped = 0;

  on(channel, listener) { this.listeners.set(channel, listener); }
  off(channel) { this.listeners.delete(channel); }

  emit(channel, msg) {
    const listener = this.listeners.get(channel);
    if (listener === undefined) this.dropped += 1;
    else listener(msg);
  }
}

/** Megabytes with one decimal. */
export const mb = (bytes) => Math.round(bytes / 104857.6) / 10;

/** The heap in use now (garbage included unless a GC just ran). */
export const heapUsedMb = () => mb(process.memoryUsage().heapUsed);

/** The process's peak resident set so far (getrusage; Node reports kilobytes). */
export const peakRssMb = () => mb(process.resourceUsage().maxRSS * 1024);

/** The median of the finite numbers in `values`, or null if there are none. */
export function median(values) {
  const xs = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 === 1 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

/** The installed version of a package under `baseUrl`'s node_modules, or 'unknown'. */
export function installedVersion(baseUrl, name) {
  try {
    return JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, baseUrl), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/**
 * An adapter's teardown: drop every held subscription, wait (at most two minutes) until each
 * entry reports its removal, then forget what the run recorded.
 */
export async function releaseAll({ held, loaded, removed, feed }) {
  const args = [...held.keys()];
  for (const subscription of held.values()) subscription.unsubscribe();
  held.clear();
  await withTimeout(Promise.all(args.map((arg) => removed.wait(arg))), 120_000);
  loaded.clear();
  removed.clear();
  feed.dropped = 0;
}
