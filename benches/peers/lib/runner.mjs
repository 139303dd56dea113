// The runner both peer scripts share: options, the matrix of configurations, and the two halves
// of a benchmark process.
//
// * The parent runs every measured run in a fresh child process (`node --expose-gc <script>
//   --child …`), so the peak RSS a run reports is its own; it takes the median of the runs and
//   prints one JSON line per configuration on stdout (progress goes to stderr).
// * The child builds the peer (its adapter), runs a smaller warm-up on `warm-` keys, tears it
//   down through the normal lifecycle, collects garbage, runs the measured configuration and
//   prints one JSON line.
//
// Nothing here knows a cache library: a peer script passes `createHarness(options)`, which
// resolves to `{ peer, lib_version, autofreeze, canBulkCreate, run(cfg, ctx), teardown() }`.

import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WARMUP_SEED_OFFSET } from './data.mjs';
import { heapUsedMb, median, peakRssMb } from './support.mjs';

// ------------------------------------------------------------------------------------ options

/** Every option, its default, and (in a comment) what it means. */
const DEFAULTS = Object.freeze({
  workload: 'all', // comma list of append, fanout, patch, churn; or all
  mode: 'both', // prod | default | nochecks (RTK) | both (= prod then default)
  runs: 3, // measured runs per configuration; the median is reported
  budget: 60, // seconds a measured phase may take before it stops emitting (a "cut" run)
  quick: false, // smoke test: small sizes, one run
  out: '', // file (relative to the current folder) to append every run's JSON line to
  autofreeze: 'true', // RTK only: false turns Immer's auto-freeze off (not the library default)
  updates: '', // W1 sizes U (default 1000,10000,50000)
  entries: '', // W2 sizes E (default 100,1000,10000)
  total: 100000, // W2: E × K
  size: 10000, // W3: the array's length
  'patch-updates': 10000, // W3: how many edits
  'churn-n': 10000, // W4: how many lifetimes
  concurrency: '', // W4: comma list of worker counts (default 1,100)
  'stop-after': 60, // W1: do not try a larger U after one that took longer (seconds)
  setup: 'auto', // W2 entry creation: initiate | upsert (RTK) | auto (upsert when E > 1,000)
  delivery: 'sync', // sync: one loop | task: one macrotask per message
  child: false, // internal: this process is a child doing one run
});
const NUMBERS = ['runs', 'budget', 'total', 'size', 'patch-updates', 'churn-n', 'stop-after'];
const FLAGS = ['quick', 'child'];

const truthy = (v) => v === true || v === 'true' || v === '1';

/**
 * Options from `BENCH_<NAME>` environment variables (dashes become underscores), overridden by
 * `--name=value`, `--name value` or a bare `--flag` on the command line.
 */
export function parseOptions(argv = process.argv.slice(2), env = process.env) {
  const o = { ...DEFAULTS };
  for (const name of Object.keys(DEFAULTS)) {
    const value = env[`BENCH_${name.toUpperCase().replaceAll('-', '_')}`];
    if (value !== undefined && value !== '') o[name] = value;
  }
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const arg = argv[i].slice(2);
    const eq = arg.indexOf('=');
    if (eq >= 0) {
      o[arg.slice(0, eq)] = arg.slice(eq + 1);
    } else if (typeof DEFAULTS[arg] !== 'boolean' && i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      o[arg] = argv[++i];
    } else {
      o[arg] = 'true';
    }
  }
  for (const name of NUMBERS) o[name] = Number(o[name]);
  for (const name of FLAGS) o[name] = truthy(o[name]);
  o.autofreeze = !(o.autofreeze === false || o.autofreeze === 'false' || o.autofreeze === '0');
  return o;
}

const numbers = (text, fallback) => (text === '' || text == null ? fallback : String(text).split(',').map(Number));

/** The configurations to measure, in order; each is what one child runs. */
export function workloadConfigs(o) {
  const quick = o.quick;
  const names = o.workload === 'all' ? ['append', 'fanout', 'patch', 'churn'] : o.workload.split(',');
  return names.flatMap((name) => {
    switch (name) {
      case 'append':
        return numbers(o.updates, quick ? [1000, 5000] : [1000, 10000, 50000])
          .map((updates) => ({ workload: 'append', entries: 1, updates }));
      case 'fanout': {
        const total = quick ? 10000 : o.total;
        return numbers(o.entries, quick ? [10, 100] : [100, 1000, 10000])
          .map((entries) => ({ workload: 'fanout', entries, updates: Math.round(total / entries) }));
      }
      case 'patch':
        return [{
          workload: 'patch', entries: 1, size: quick ? 1000 : o.size, updates: quick ? 1000 : o['patch-updates'],
        }];
      case 'churn':
        return numbers(o.concurrency, [1, 100])
          .map((concurrency) => ({ workload: 'churn', entries: quick ? 300 : o['churn-n'], updates: 0, concurrency }));
      default:
        throw new Error(`unknown workload ${name}`);
    }
  });
}

/** The warm-up: the same workload, at most this big. */
export function warmupConfig(cfg) {
  const at = (value, most) => Math.min(value, most);
  switch (cfg.workload) {
    case 'append': return { ...cfg, updates: at(cfg.updates, 2000) };
    case 'fanout': return { ...cfg, entries: at(cfg.entries, 100), updates: at(cfg.updates, 20) };
    case 'patch': return { ...cfg, size: at(cfg.size, 2000), updates: at(cfg.updates, 1000) };
    case 'churn': return { ...cfg, entries: at(cfg.entries, 300) };
    default: throw new Error(`unknown workload ${cfg.workload}`);
  }
}

const modesOf = (o) => (o.mode === 'both' ? ['prod', 'default'] : o.mode.split(','));

/**
 * A child's environment: `prod` sets NODE_ENV=production (what a production bundle sees); any
 * other mode leaves NODE_ENV unset. BENCH_* variables are not passed on: the child gets its
 * options as flags.
 */
function childEnv(mode) {
  const env = Object.fromEntries(Object.entries(process.env)
    .filter(([name]) => name !== 'NODE_ENV' && !name.startsWith('BENCH_')));
  if (mode === 'prod') env.NODE_ENV = 'production';
  return env;
}

// -------------------------------------------------------------------------------- child side

/** Count console warnings and errors instead of printing them (writing would cost time). */
function silenceConsole() {
  const seen = { warnings: 0, errors: 0, samples: [] };
  const sample = (args) => {
    if (seen.samples.length >= 3) return;
    const text = args.map((a) => (typeof a === 'string' ? a : a instanceof Error ? a.message : typeof a)).join(' ');
    seen.samples.push(text.slice(0, 160));
  };
  console.warn = (...args) => { seen.warnings += 1; sample(args); };
  console.error = (...args) => { seen.errors += 1; sample(args); };
  return seen;
}

async function childMain(createHarness, o) {
  const console_ = silenceConsole();
  const cfg = {
    workload: o.workload,
    entries: Number(o.entries),
    updates: Number(o.updates),
    size: Number(o.size),
    concurrency: Number(o.concurrency) || 1,
  };
  const budgetMs = o.budget * 1000;
  const watchdogMs = Math.max(180_000, budgetMs * 4);
  const watchdog = setTimeout(() => {
    process.stdout.write(`${JSON.stringify({ error: `watchdog: child exceeded ${watchdogMs / 1000}s` })}\n`);
    process.exit(3);
  }, watchdogMs);

  const harness = await createHarness(o);
  const collectGarbage = globalThis.gc ?? (() => {});
  let setup = o.setup;
  if (setup === 'auto') setup = cfg.workload === 'fanout' && cfg.entries > 1000 ? 'upsert' : 'initiate';
  if (setup === 'upsert' && !harness.canBulkCreate) setup = 'initiate';

  const warm = await harness.run(warmupConfig(cfg), {
    prefix: 'warm-', budgetMs: 30_000, seedOffset: WARMUP_SEED_OFFSET, setup, delivery: o.delivery,
  });
  await harness.teardown();
  collectGarbage();
  collectGarbage();

  const result = await harness.run(cfg, { prefix: '', budgetMs, seedOffset: 0, setup, delivery: o.delivery });
  collectGarbage();
  const heapAfterGc = heapUsedMb();
  clearTimeout(watchdog);
  const line = {
    peer: harness.peer,
    lib_version: harness.lib_version,
    mode: o.mode,
    node_env: process.env.NODE_ENV ?? null,
    autofreeze: harness.autofreeze ?? null,
    workload: cfg.workload,
    budget_s: o.budget,
    delivery: cfg.workload === 'churn' ? null : o.delivery,
    ...result,
    peak_rss_mb: peakRssMb(),
    heap_after_gc_mb: heapAfterGc,
    warmup_ok: warm.verified === true,
    console_warnings: console_.warnings,
    console_errors: console_.errors,
    console_samples: console_.samples,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.exit(0);
}

// ------------------------------------------------------------------------------- parent side

/** Run one measured run in a fresh child; resolves to its JSON line (or an error line). */
function runChild(script, mode, cfg, o) {
  const flags = {
    mode, workload: cfg.workload, entries: cfg.entries, updates: cfg.updates, size: cfg.size ?? 0,
    concurrency: cfg.concurrency ?? 1, budget: o.budget, autofreeze: o.autofreeze, setup: o.setup,
    delivery: o.delivery,
  };
  const args = ['--expose-gc', script, '--child', ...Object.entries(flags).map(([k, v]) => `--${k}=${v}`)];
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { env: childEnv(mode), stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk) => { stdout += chunk; });
    child.on('close', (code) => {
      const last = stdout.trim().split('\n').filter(Boolean).pop();
      let line;
      try {
        line = JSON.parse(last);
      } catch {
        line = { error: `child exit ${code}, no JSON` };
      }
      if (code !== 0 && !line.error) line.error = `child exit ${code}`;
      done(line);
    });
  });
}

const round4 = (x) => (x == null ? x : Math.round(x * 1e4) / 1e4);

/** The summary line of one configuration: medians over its runs that did not fail. */
export function summarize(peer, mode, cfg, runs) {
  const good = runs.filter((r) => !r.error);
  const first = good[0] ?? runs[0] ?? {};
  const med = (field) => median(good.map((r) => r[field]));
  const rateOf = (count) => median(good.map((r) => (r.seconds ? r[count] / r.seconds : null)));
  const churn = cfg.workload === 'churn';
  const seconds = good.map((r) => r.seconds);
  const rate = churn ? null : rateOf('updates_done');
  const line = {
    peer,
    workload: cfg.workload,
    entries: cfg.entries,
    updates_per_entry: churn ? 0 : cfg.updates,
    payload: first.payload ?? null,
    seconds: round4(median(seconds)),
    updates_per_sec: rate == null ? null : Math.round(rate),
    peak_rss_mb: med('peak_rss_mb'),
    heap_used_mb: med('heap_used_mb'),
    // the fields above are the common ones; the rest are extras
    mode,
    delivery: first.delivery ?? null,
    node_env: first.node_env ?? null,
    lib_version: first.lib_version ?? null,
    autofreeze: first.autofreeze ?? null,
    runs: good.length,
    seconds_each: seconds.map(round4),
    seconds_notified: round4(med('seconds_notified')),
    setup_seconds: round4(med('setup_seconds')),
    heap_after_gc_mb: med('heap_after_gc_mb'),
    completed: good.length > 0 && good.every((r) => r.completed),
    budget_s: first.budget_s ?? null,
    updates_done: churn ? undefined : med('updates_done'),
    final_length: first.final_length ?? null,
    expected_length: first.expected_length ?? null,
    verified: good.length > 0 && good.every((r) => r.verified),
    notifications: med('notifications'),
    console_warnings: med('console_warnings'),
    console_errors: med('console_errors'),
    workload_hash: first.workload_hash ?? null,
  };
  if (churn) {
    line.concurrency = cfg.concurrency;
    line.entries_done = med('entries_done');
    line.entries_per_sec = Math.round(rateOf('entries_done'));
  }
  if (cfg.workload === 'patch') line.array_size = cfg.size;
  if (cfg.workload === 'fanout') line.setup = first.setup ?? null;
  const errors = runs.filter((r) => r.error).map((r) => r.error);
  if (errors.length > 0) line.errors = errors;
  if (first.console_samples?.length) line.console_samples = first.console_samples;
  return line;
}

async function parentMain(peer, scriptUrl, o) {
  const script = fileURLToPath(scriptUrl);
  const outFile = o.out ? resolve(o.out) : null;
  if (outFile) mkdirSync(dirname(outFile), { recursive: true });
  const keep = (record) => { if (outFile) appendFileSync(outFile, `${JSON.stringify(record)}\n`); };
  const print = (line) => {
    console.log(JSON.stringify(line));
    keep({ summary: true, ...line });
  };
  const runs = o.quick ? Math.min(o.runs, 1) : o.runs;

  for (const mode of modesOf(o)) {
    // W1 gets no larger once a size is cut at the budget or takes longer than --stop-after.
    let appendTooSlow = false;
    for (const cfg of workloadConfigs(o)) {
      if (cfg.workload === 'append' && appendTooSlow) {
        print({
          peer, workload: 'append', entries: 1, updates_per_entry: cfg.updates, mode,
          skipped: `a smaller U took longer than ${o['stop-after']} s`,
        });
        continue;
      }
      const results = [];
      for (let run = 1; run <= runs; run++) {
        process.stderr.write(`[${peer}] mode=${mode} ${JSON.stringify(cfg)} run ${run}/${runs} ... `);
        const result = await runChild(script, mode, cfg, o);
        results.push(result);
        process.stderr.write(result.error
          ? `ERROR ${result.error}\n`
          : `${result.seconds.toFixed(3)} s${result.completed ? '' : ' (cut at budget)'} verified=${result.verified}\n`);
        keep({ run, ...result, mode });
        if (result.error) break;
        // A W1 size cut at the budget is reported from that one run; other cut runs repeat.
        if (cfg.workload === 'append' && !result.completed) break;
      }
      const line = summarize(peer, mode, cfg, results);
      print(line);
      if (cfg.workload === 'append' && (!line.completed || (line.seconds ?? 0) > o['stop-after'])) {
        appendTooSlow = true;
      }
    }
  }
}

/** A peer script's whole body: `await main('rtk-query', import.meta.url, createHarness)`. */
export async function main(peer, scriptUrl, createHarness) {
  const o = parseOptions();
  return o.child ? childMain(createHarness, o) : parentMain(peer, scriptUrl, o);
}
