#!/usr/bin/env node
// W1–W4 on RTK Query: `createApi` from `@reduxjs/toolkit/query` with `configureStore`, no React.
//
//   node rtk-bench.mjs [--workload=append,fanout,patch,churn|all] [--mode=prod|default|nochecks|both]
//                      [--runs=3] [--budget=60] [--quick] [--delivery=sync|task] [--out=FILE]
//   (or BENCH_WORKLOAD, BENCH_MODE, … in the environment; README.md lists every option)
//
// Modes, applied to the child processes that measure:
//   prod      NODE_ENV=production, as a production bundle runs; configureStore installs none of
//             its development checks (they are also turned off explicitly).
//   default   NODE_ENV unset: configureStore's default middleware, development checks included.
//   nochecks  NODE_ENV unset, the development checks turned off explicitly (a diagnostic).
//
// The endpoint is RTK's documented streaming-updates pattern: `queryFn` returns the initial data
// (no I/O) and `onCacheEntryAdded` awaits `cacheDataLoaded`, listens to the fake push source and
// calls `updateCachedData` for every message, then awaits `cacheEntryRemoved` and stops
// listening. `keepUnusedDataFor: 0` removes an entry as soon as its last subscriber leaves.

import { runWorkload } from './lib/workloads.mjs';
import { Deferreds, Feed, installedVersion, releaseAll } from './lib/support.mjs';
import { main } from './lib/runner.mjs';

const PEER = 'rtk-query';

/** The recipe `updateCachedData` gets for one message, by workload kind (Immer drafts). */
const RECIPES = {
  push: (msg) => (draft) => { draft.push(msg); },
  patch: (edit) => (draft) => { draft[edit.index].text = edit.text; },
};

async function createHarness(options) {
  // Imported only now: the parent has set NODE_ENV, which these builds read at run time.
  const { configureStore } = await import('@reduxjs/toolkit');
  const { createApi, fakeBaseQuery } = await import('@reduxjs/toolkit/query');
  const { setAutoFreeze } = await import('immer'); // the Immer instance RTK itself uses
  if (!options.autofreeze) setAutoFreeze(false);

  const feed = new Feed();
  const loaded = new Deferreds();
  const removed = new Deferreds();
  const current = { kind: 'push', initialFor: () => [] };

  const api = createApi({
    reducerPath: 'api',
    baseQuery: fakeBaseQuery(),
    keepUnusedDataFor: 0,
    endpoints: (build) => ({
      messages: build.query({
        queryFn: (arg) => ({ data: current.initialFor(arg) }),
        async onCacheEntryAdded(arg, { updateCachedData, cacheDataLoaded, cacheEntryRemoved }) {
          try {
            await cacheDataLoaded;
          } catch {
            removed.resolve(arg); // removed before its first data: nothing to listen to
            return;
          }
          const recipe = RECIPES[current.kind];
          feed.on(arg, (msg) => updateCachedData(recipe(msg)));
          loaded.resolve(arg);
          await cacheEntryRemoved;
          feed.off(arg);
          removed.resolve(arg);
        },
      }),
    }),
  });

  const noChecks = { immutableCheck: false, serializableCheck: false, actionCreatorCheck: false };
  const store = configureStore({
    reducer: { [api.reducerPath]: api.reducer },
    middleware: (getDefault) => (options.mode === 'default' ? getDefault() : getDefault(noChecks))
      .concat(api.middleware),
  });

  // One store listener stands in for a UI binding (react-redux subscribes the same way).
  // configureStore's autoBatchEnhancer batches RTK Query's notifications (a 10 ms timer in Node).
  let notifications = 0;
  let stateSeen = store.getState();
  store.subscribe(() => {
    notifications += 1;
    stateSeen = store.getState();
  });

  const held = new Map(); // arg -> the subscription `initiate` returned, released by teardown
  const adapter = {
    feed,
    get notifications() { return notifications; },
    configure({ kind, initialFor }) {
      current.kind = kind;
      current.initialFor = initialFor;
    },
    subscribe(arg, { track = true } = {}) {
      const subscription = store.dispatch(api.endpoints.messages.initiate(arg));
      if (track) held.set(arg, subscription);
      return subscription;
    },
    bulkCreate(args) {
      const entries = args.map((arg) => ({ endpointName: 'messages', arg, value: current.initialFor(arg) }));
      store.dispatch(api.util.upsertQueryEntries(entries));
    },
    loaded: (arg) => loaded.wait(arg),
    removed: (arg) => removed.wait(arg),
    forget(arg) {
      loaded.delete(arg);
      removed.delete(arg);
    },
    reader(arg) {
      const select = api.endpoints.messages.select(arg);
      return () => select(store.getState()).data ?? [];
    },
    notifiedUpToDate: () => stateSeen === store.getState(),
    entryCount: () => Object.keys(store.getState().api.queries).length,
    teardown: () => releaseAll({ held, loaded, removed, feed }),
  };

  const here = new URL('./', import.meta.url);
  const version = (name) => `${name}@${installedVersion(here, name)}`;
  return {
    peer: PEER,
    lib_version: ['@reduxjs/toolkit', 'immer', 'redux'].map(version).join(' '),
    autofreeze: options.autofreeze,
    canBulkCreate: true,
    run: (cfg, ctx) => runWorkload(adapter, cfg, ctx),
    teardown: () => adapter.teardown(),
  };
}

await main(PEER, import.meta.url, createHarness);
