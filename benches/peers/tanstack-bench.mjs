#!/usr/bin/env node
// W1–W4 on TanStack Query (`@tanstack/query-core`, no React); same options and output as
// rtk-bench.mjs.
//
//   node tanstack-bench.mjs [--workload=…] [--mode=prod|default|both] [--runs=3] [--budget=60]
//                           [--quick] [--delivery=sync|task] [--out=FILE]
//
// TanStack Query has no `onCacheEntryAdded`. A QueryCache listener gives the same handler the
// same shape: on `added` it starts the handler with `cacheDataLoaded` (resolved by the entry's
// first `success`), `cacheEntryRemoved` (resolved by `removed`) and `updateCachedData(fn)`,
// which is `queryClient.setQueryData(key, fn)`. Updates are immutable replacements, since
// query-core has no drafts: append `old => [...old, msg]`; patch copies the array and the one
// message it changes. Structural sharing stays on (the default); nothing is frozen.
//
// Each subscriber is a QueryObserver subscribed through `notifyManager.batchCalls`, as the React
// adapter does; `gcTime: 0` removes an entry once nobody observes it. `prod` sets
// NODE_ENV=production, `default` leaves it unset; query-core has no development middleware, so
// the two differ only in a few warnings.

import { runWorkload } from './lib/workloads.mjs';
import { Deferreds, Feed, installedVersion, releaseAll } from './lib/support.mjs';
import { main } from './lib/runner.mjs';

const PEER = 'tanstack-query';

/** The updater `setQueryData` gets for one message, by workload kind. */
const UPDATERS = {
  push: (msg) => (old) => [...old, msg],
  patch: (edit) => (old) => {
    const next = old.slice();
    next[edit.index] = { ...old[edit.index], text: edit.text };
    return next;
  },
};

async function createHarness() {
  const { QueryClient, QueryObserver, notifyManager, hashKey } = await import('@tanstack/query-core');

  const feed = new Feed();
  const loaded = new Deferreds();
  const removed = new Deferreds();
  const current = { kind: 'push', initialFor: () => [] };

  const client = new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: Infinity,
        gcTime: 0, // RTK's keepUnusedDataFor: 0
        retry: false,
        refetchOnWindowFocus: false,
        refetchOnReconnect: false,
      },
    },
  });
  const cache = client.getQueryCache();
  const keyOf = (arg) => ['messages', arg];

  // The handler, written as an RTK lifecycle: wait for data, listen, wait for removal, stop.
  async function onCacheEntryAdded(arg, { updateCachedData, cacheDataLoaded, cacheEntryRemoved }) {
    await cacheDataLoaded;
    const updater = UPDATERS[current.kind];
    feed.on(arg, (msg) => updateCachedData(updater(msg)));
    loaded.resolve(arg);
    await cacheEntryRemoved;
    feed.off(arg);
    removed.resolve(arg);
  }

  // The lifecycle events, from the query cache: queryHash -> the entry's two signals.
  const lifetimes = new Map();
  cache.subscribe((event) => {
    const query = event.query;
    if (event.type === 'added') {
      const lifetime = { dataSeen: false };
      const cacheDataLoaded = new Promise((resolve) => { lifetime.loaded = resolve; });
      const cacheEntryRemoved = new Promise((resolve) => { lifetime.removed = resolve; });
      lifetimes.set(query.queryHash, lifetime);
      const key = query.queryKey;
      onCacheEntryAdded(key[1], {
        updateCachedData: (fn) => client.setQueryData(key, fn),
        cacheDataLoaded,
        cacheEntryRemoved,
      });
    } else if (event.type === 'updated' && event.action.type === 'success') {
      const lifetime = lifetimes.get(query.queryHash);
      if (lifetime !== undefined && !lifetime.dataSeen) {
        lifetime.dataSeen = true;
        lifetime.loaded({ data: query.state.data });
      }
    } else if (event.type === 'removed') {
      const lifetime = lifetimes.get(query.queryHash);
      if (lifetime !== undefined) {
        lifetimes.delete(query.queryHash);
        lifetime.removed();
      }
    }
  });

  let notifications = 0;
  const seen = new Map(); // arg -> the data its observer was last notified of
  const queries = new Map(); // arg -> its Query, looked up once (cache.get is by hash)
  const held = new Map(); // arg -> subscription, released by teardown
  const queryOf = (arg) => queries.get(arg) ?? cache.get(hashKey(keyOf(arg)));

  const adapter = {
    feed,
    get notifications() { return notifications; },
    configure({ kind, initialFor }) {
      current.kind = kind;
      current.initialFor = initialFor;
    },
    subscribe(arg, { track = true } = {}) {
      const observer = new QueryObserver(client, { queryKey: keyOf(arg), queryFn: () => current.initialFor(arg) });
      const stop = observer.subscribe(notifyManager.batchCalls((result) => {
        notifications += 1;
        seen.set(arg, result.data);
      }));
      const subscription = {
        unsubscribe() {
          stop();
          seen.delete(arg);
          queries.delete(arg);
        },
      };
      if (track) held.set(arg, subscription);
      return subscription;
    },
    loaded: (arg) => loaded.wait(arg),
    removed: (arg) => removed.wait(arg),
    forget(arg) {
      loaded.delete(arg);
      removed.delete(arg);
    },
    reader(arg) {
      const query = queryOf(arg);
      queries.set(arg, query);
      return () => query.state.data ?? [];
    },
    notifiedUpToDate: (args) => args.every((arg) => seen.get(arg) === queryOf(arg)?.state.data),
    entryCount: () => cache.getAll().length,
    teardown: () => releaseAll({ held, loaded, removed, feed }),
  };

  const here = new URL('./', import.meta.url);
  return {
    peer: PEER,
    lib_version: `@tanstack/query-core@${installedVersion(here, '@tanstack/query-core')}`,
    autofreeze: null,
    canBulkCreate: false,
    run: (cfg, ctx) => runWorkload(adapter, cfg, ctx),
    teardown: () => adapter.teardown(),
  };
}

await main(PEER, import.meta.url, createHarness);
