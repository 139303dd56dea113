#!/usr/bin/env bash
# Mutation testing of the sans-IO core: cargo-mutants changes the code of src/core one mutation at
# a time (an operator flipped, a return value replaced, a body emptied) and runs the core's own
# tests against each: its unit tests, the model comparison (property tests and the exhaustive
# check), the rule traces, the fuzz corpus replay and the core's hardening tests. A mutant no test
# notices is a gap in the proof (or an equivalent mutant: docs/testing.md, "Mutation testing").
#
#   scripts/mutants.sh            every mutant of src/core (several hours on two cores)
#   scripts/mutants.sh --list     the mutants only, nothing run
#   scripts/mutants.sh -f 'src/core/cache/deadlines.rs'   one file (extra cargo-mutants flags)
#
# Results go to mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt). It builds with
# the `mutants` profile of Cargo.toml (optimised, no debug info): the model checks then take
# about 6 s instead of 35 s, so a mutant costs about 20 s instead of 50.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
  cargo install --locked cargo-mutants
fi

# The tests: the core's unit tests (the library's `core::` tests) and the `checks` binary, which
# holds every integration module that checks the core (the v1 lifecycle, the live entries, the
# shared connection's machine of section 4, the rule tests of retries, polling and tags, R36–R38,
# the recorded patches' property test, the `tracing` events of R41). The filters name them; the runtime's `it` binary is not
# built at all, which keeps a mutant's rebuild short.
filters=(core:: model_equivalence:: live_equivalence:: live_rules:: connection_equivalence:: connection_rules:: exhaustive:: rule_traces:: fuzz_corpus:: fuzz_findings:: hardening_core:: retries:: polling:: tags:: patch_recording:: tracing_events::)

files=(--file 'src/core.rs' --file 'src/core/**/*.rs')
for arg in "$@"; do
  case "$arg" in
    -f | --file) files=() ;;
  esac
done

exec cargo mutants --package livecache --profile mutants "${files[@]}" "$@" -- --lib --test checks -- "${filters[@]}"
