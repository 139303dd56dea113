// The four workloads (W1–W4), written once against an adapter so that RTK Query and TanStack
// Query run the very same driver and differ only in the library calls. An adapter has:
//
//   feed                        the Feed its lifecycle handlers listen on
//   notifications               how many times a subscriber has been notified so far
//   configure({kind, initialFor})
//                               kind 'push' (append the message) or 'patch' (set
//                               data[index].text); initialFor(arg) is what the query returns
//   subscribe(arg, {track})     subscribe to an entry; returns {unsubscribe()}; tracked
//                               subscriptions are released by teardown()
//   bulkCreate(args)            optional (RTK only): create all entries in one action
//   loaded(arg), removed(arg)   promises the handler resolves once it listens to the feed
//                               (after its first data) and once it stopped (after removal)
//   forget(arg)                 drop the bookkeeping of a finished argument
//   reader(arg)                 a function reading the entry's current data from the cache
//   notifiedUpToDate(args)      whether the subscribers of these entries saw the latest state
//   entryCount()                how many entries the cache holds
//   teardown()                  release tracked subscriptions and wait for their removal
//
// Delivery: 'sync' emits every message in one synchronous loop; 'task' waits for the next
// macrotask (setImmediate) after each message, as WebSocket messages arrive, so timers the
// library schedules can run in between.
//
// Timing: `seconds` runs from just before the first message until the cache, read through the
// adapter, reflects every message emitted (checked once per event-loop turn, so deferred work
// counts); `seconds_notified` until the subscribers have seen that state too. A run stops
// emitting once it is past the budget (checked every 64 messages) and reports what it did.

import { setImmediate as nextTask } from 'node:timers/promises';
import {
  avgJsonBytes, churnName, genAppend, genFanout, genPatchInitial, genPatchUpdates, hashJsonLines,
} from './data.mjs';
import { heapUsedMb, now, secondsSince, until, withTimeout } from './support.mjs';

const collectGarbage = () => globalThis.gc?.();
/** The emit loops look at the clock when `(emitted & CHECK_EVERY) === 0`: every 64 messages. */
const CHECK_EVERY = 63;
const PUSH_PAYLOAD = 'push message{id,channel,userName,text}';

/** Subscribe to every argument (after a bulk creation if asked) and wait until all are loaded. */
async function subscribeAll(ad, args, budgetMs, setup = 'initiate') {
  const start = now();
  if (setup === 'upsert') ad.bulkCreate(args);
  for (const arg of args) ad.subscribe(arg);
  const outcome = await withTimeout(Promise.all(args.map((arg) => ad.loaded(arg))), budgetMs);
  return { setup_seconds: secondsSince(start), ok: outcome !== 'timeout' };
}

/**
 * The measured phase shared by W1–W3: emit `count` messages (`emit(i)` sends the i-th), stop
 * early past the budget, then wait until `reflects(done)` holds and the subscribers of `args`
 * are notified.
 */
async function measure(ad, ctx, count, emit, reflects, args) {
  const notificationsBefore = ad.notifications;
  const budget = BigInt(ctx.budgetMs) * 1_000_000n;
  const oneTaskEach = ctx.delivery === 'task';
  const start = now();
  let done = 0;
  while (done < count) {
    emit(done);
    done += 1;
    if ((done & CHECK_EVERY) === 0 && now() - start > budget) break;
    if (oneTaskEach) await nextTask();
  }
  const reflected = await until(() => reflects(done));
  const reflectedAt = now();
  const notified = await until(() => ad.notifiedUpToDate(args));
  const notifiedAt = now();
  return {
    count,
    done,
    ok: reflected && notified && ad.feed.dropped === 0,
    seconds: secondsSince(start, reflectedAt),
    seconds_notified: secondsSince(start, notifiedAt),
    notifications: ad.notifications - notificationsBefore,
    heap_used_mb: heapUsedMb(),
  };
}

/** The fields every W1–W3 line has after its own, in the output's order. */
function measured(m, setup, expectedLength, finalLength, verified, workloadHash) {
  return {
    seconds: m.seconds,
    seconds_notified: m.seconds_notified,
    setup_seconds: setup.setup_seconds,
    updates_done: m.done,
    completed: m.done === m.count,
    final_length: finalLength,
    expected_length: expectedLength,
    verified,
    notifications: m.notifications,
    heap_used_mb: m.heap_used_mb,
    workload_hash: workloadHash,
  };
}

function failed(cfg, reason, extra = {}) {
  return {
    entries: cfg.entries, updates_per_entry: cfg.updates,
    seconds: null, completed: false, verified: false, error: reason, ...extra,
  };
}

/** W1 append: one entry, `cfg.updates` messages each appended to its array. */
export async function runAppend(ad, cfg, ctx) {
  const count = cfg.updates;
  const { channel, msgs } = genAppend(count, ctx.prefix, ctx.seedOffset);
  const hash = ctx.prefix ? null : hashJsonLines(msgs);
  const bytes = avgJsonBytes(msgs);
  ad.configure({ kind: 'push', initialFor: () => [] });

  const setup = await subscribeAll(ad, [channel], ctx.budgetMs);
  if (!setup.ok) return failed(cfg, 'setup timed out', setup);
  const read = ad.reader(channel);
  collectGarbage();

  const m = await measure(ad, ctx, count, (i) => ad.feed.emit(channel, msgs[i]),
    (done) => read().length === done, [channel]);
  const data = read();
  // Every message, in order, and nothing else.
  const verified = m.ok && data.length === m.done
    && data.every((msg, i) => msg.id === i && msg.text === msgs[i].text);
  return {
    entries: cfg.entries,
    updates_per_entry: cfg.updates,
    payload: `${PUSH_PAYLOAD} ~${bytes} B JSON`,
    payload_bytes: bytes,
    ...measured(m, setup, count, data.length, verified, hash),
  };
}

/** W2 fanout: `cfg.entries` entries, `cfg.updates` messages each, delivered round-robin. */
export async function runFanout(ad, cfg, ctx) {
  const entries = cfg.entries;
  const perEntry = cfg.updates;
  const { channels, msgs } = genFanout(entries, perEntry, ctx.prefix, ctx.seedOffset);
  const hash = ctx.prefix ? null : hashJsonLines(msgs);
  const bytes = avgJsonBytes(msgs);
  ad.configure({ kind: 'push', initialFor: () => [] });

  const setup = await subscribeAll(ad, channels, ctx.budgetMs, ctx.setup);
  if (!setup.ok) {
    return failed(cfg, 'setup timed out (subscribing all entries)', { setup_seconds: setup.setup_seconds });
  }
  const readers = channels.map((channel) => ad.reader(channel));
  const totalLength = () => readers.reduce((sum, read) => sum + read().length, 0);
  collectGarbage();

  const m = await measure(ad, ctx, msgs.length, (i) => ad.feed.emit(msgs[i].channel, msgs[i]),
    (done) => totalLength() === done, channels);
  // Entry e holds messages e, E + e, 2E + e, … in order; all of them if the run completed.
  let verified = m.ok;
  let held = 0;
  for (let e = 0; verified && e < entries; e++) {
    const data = readers[e]();
    held += data.length;
    if (m.done === msgs.length && data.length !== perEntry) verified = false;
    if (!data.every((msg, k) => msg.id === k * entries + e)) verified = false;
  }
  if (held !== m.done) verified = false;
  return {
    entries: cfg.entries,
    updates_per_entry: cfg.updates,
    setup: ctx.setup ?? 'initiate',
    payload: `${PUSH_PAYLOAD} ~${bytes} B JSON, round-robin over ${entries} entries`,
    payload_bytes: bytes,
    ...measured(m, setup, msgs.length, held, verified, hash),
  };
}

/** W3 patch-in-place: one entry of `cfg.size` messages, `cfg.updates` texts replaced. */
export async function runPatch(ad, cfg, ctx) {
  const size = cfg.size;
  const count = cfg.updates;
  const initial = genPatchInitial(size, ctx.prefix, ctx.seedOffset);
  const initialTexts = initial.map((msg) => msg.text);
  const edits = genPatchUpdates(size, count, ctx.seedOffset);
  const hash = ctx.prefix ? null : hashJsonLines([...initial, ...edits]);
  const bytes = avgJsonBytes(edits);
  const channel = `${ctx.prefix}ch-0`;
  ad.configure({ kind: 'patch', initialFor: () => initial });

  const setup = await subscribeAll(ad, [channel], ctx.budgetMs);
  if (!setup.ok) return failed(cfg, 'setup timed out', setup);
  const read = ad.reader(channel);
  collectGarbage();

  // Edits apply in order, so once the last one emitted shows, all of them do.
  const m = await measure(ad, ctx, count, (i) => ad.feed.emit(channel, edits[i]), (done) => {
    if (done === 0) return true;
    const last = edits[done - 1];
    return read()[last.index].text === last.text;
  }, [channel]);
  // The whole array against a plain replay of the edits emitted.
  const expected = initialTexts.slice();
  for (const edit of edits.slice(0, m.done)) expected[edit.index] = edit.text;
  const data = read();
  const verified = m.ok && data.length === size
    && data.every((msg, i) => msg.id === i && msg.text === expected[i])
    // the objects handed to the cache as initial data are still as they were
    && initial.every((msg, i) => msg.text === initialTexts[i]);
  return {
    entries: cfg.entries,
    updates_per_entry: cfg.updates,
    payload: `set draft[i].text (~${bytes} B update) in an array of ${size} messages`,
    payload_bytes: bytes,
    ...measured(m, setup, size, data.length, verified, hash),
  };
}

/**
 * W4 lifecycle churn: `cfg.entries` distinct arguments, each taken through a whole lifetime —
 * subscribe, first data, unsubscribe, removal (keep time 0), handler done — by
 * `cfg.concurrency` workers, each doing one lifetime after another.
 */
export async function runChurn(ad, cfg, ctx) {
  const total = cfg.entries;
  const workers = Math.max(1, cfg.concurrency | 0);
  ad.configure({ kind: 'push', initialFor: () => [] });
  const entriesBefore = ad.entryCount();
  collectGarbage();
  const notificationsBefore = ad.notifications;

  const budget = BigInt(ctx.budgetMs) * 1_000_000n;
  let started = 0;
  let finished = 0;
  const start = now();
  const worker = async () => {
    while (started < total && now() - start <= budget) {
      const arg = churnName(ctx.prefix, started);
      started += 1;
      const subscription = ad.subscribe(arg, { track: false });
      await ad.loaded(arg);
      subscription.unsubscribe();
      await ad.removed(arg);
      ad.forget(arg);
      finished += 1;
    }
  };
  const outcome = await withTimeout(Promise.all(Array.from({ length: workers }, worker)), ctx.budgetMs + 60_000);
  const end = now();
  const heap = heapUsedMb();
  const left = ad.entryCount() - entriesBefore;
  return {
    entries: total,
    updates_per_entry: 0,
    concurrency: workers,
    payload: 'subscribe -> cacheDataLoaded -> unsubscribe -> removal (0 s) -> cacheEntryRemoved; data []',
    payload_bytes: 2,
    seconds: secondsSince(start, end),
    seconds_notified: null,
    setup_seconds: 0,
    entries_done: finished,
    updates_done: 0,
    completed: finished === total,
    final_length: left, // entries left behind in the cache: 0 when verified
    expected_length: 0,
    verified: outcome !== 'timeout' && left === 0 && ad.feed.listeners.size === 0 && finished <= total,
    notifications: ad.notifications - notificationsBefore,
    heap_used_mb: heap,
    workload_hash: null,
  };
}

const DRIVERS = { append: runAppend, fanout: runFanout, patch: runPatch, churn: runChurn };

/** Run one configuration of one workload through an adapter. */
export function runWorkload(ad, cfg, ctx) {
  const driver = DRIVERS[cfg.workload];
  if (driver === undefined) throw new Error(`unknown workload ${cfg.workload}`);
  return driver(ad, cfg, ctx);
}
