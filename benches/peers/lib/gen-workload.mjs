#!/usr/bin/env node
// Print a workload's `workload_hash`, or its data as JSON lines, so that another
// implementation (livecache's `benches/workloads/data.rs`) can check it generates the same
// bytes.
//
//   node lib/gen-workload.mjs append 1000              # W1, U = 1000: prints 953805fe
//   node lib/gen-workload.mjs fanout 100 1000 --dump   # W2, E K: one JSON line per message
//   node lib/gen-workload.mjs patch 10000 10000        # W3, size U: the array, then the edits
import { genAppend, genFanout, genPatchInitial, genPatchUpdates, hashJsonLines } from './data.mjs';

const [kind, a, b] = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const generators = {
  append: () => genAppend(Number(a)).msgs,
  fanout: () => genFanout(Number(a), Number(b)).msgs,
  patch: () => [...genPatchInitial(Number(a)), ...genPatchUpdates(Number(a), Number(b))],
};
if (!(kind in generators)) {
  process.stderr.write('usage: gen-workload.mjs append U | fanout E K | patch SIZE U [--dump]\n');
  process.exit(2);
}
const values = generators[kind]();
process.stdout.on('error', () => process.exit(0)); // a closed pipe (| head) is not an error
if (process.argv.includes('--dump')) {
  for (const value of values) process.stdout.write(`${JSON.stringify(value)}\n`);
} else {
  const sizes = [a, b].filter((x) => x !== undefined).join(' ');
  process.stdout.write(`${kind} ${sizes}: ${values.length} values, workload_hash ${hashJsonLines(values)}\n`);
}
