#!/usr/bin/env bash
# Run the cargo-fuzz targets of fuzz/ and print libFuzzer's final stats.
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER_FLAG...]   one target, for SECONDS
#   scripts/fuzz.sh all SECONDS [LIBFUZZER_FLAG...]      every target, one after another
#
# TARGET: lifecycle_ops, connection_events, ws_frames, patches or cache_keys (see docs/testing.md, "Fuzzing").
# Extra flags go to libFuzzer, e.g. `-runs=10000000` (stops at whichever limit comes first).
#
# Installs cargo-fuzz if it is missing. Uses the nightly toolchain if rustup has one, else
# stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags). FUZZ_SANITIZER=address (the
# default, AddressSanitizer) or none (no sanitizer: several times more executions per second;
# livecache and its model forbid unsafe code). Debug assertions and overflow checks are on.
#
# New corpus entries go to fuzz/work/TARGET/ (not committed); fuzz/corpus/TARGET/ (the committed
# seeds) is only read. A crash is written to fuzz/artifacts/TARGET/ and this script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(lifecycle_ops connection_events ws_frames patches cache_keys)

usage() {
    echo "usage: scripts/fuzz.sh TARGET|all SECONDS [LIBFUZZER_FLAG...]" >&2
    echo "targets: ${TARGETS[*]}" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
target="$1"
seconds="$2"
shift 2
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
if [[ "$target" == all ]]; then
    selected=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
    selected=("$target")
else
    usage
fi
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q nightly; then
    toolchain=(+nightly)
else
    # Stable with -Z flags. cargo caches a failed target probe (made without this variable) in
    # fuzz/target/.rustc_info.json, and its cache key ignores RUSTC_BOOTSTRAP: drop it.
    export RUSTC_BOOTSTRAP=1
    rm -f fuzz/target/.rustc_info.json
fi
echo "fuzz: cargo ${toolchain[*]:-(stable, RUSTC_BOOTSTRAP=1)} fuzz, sanitizer $sanitizer"

build_flags=(--debug-assertions --sanitizer "$sanitizer")
start=$SECONDS
cargo "${toolchain[@]}" fuzz build "${build_flags[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

failed=()
for t in "${selected[@]}"; do
    work="fuzz/work/$t"
    log="fuzz/work/$t.log"
    mkdir -p "$work" "fuzz/corpus/$t"
    echo "fuzz: $t for ${seconds} s (log: $log)"
    status=0
    cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=2048 -timeout=10 \
        -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
    # libFuzzer's closing lines: the last status line (cov, ft, corpus, exec/s) and its stats.
    grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -n 1 || true
    grep -E '^stat::' "$log" || true
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $status):"
        grep -E -A 12 "panicked at|ERROR: libFuzzer|SUMMARY:" "$log" | head -n 60 || tail -n 40 "$log"
        grep -E -A 3 "^(Reproduce|Minimize) " "$log" || true
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#selected[@]} target(s) ran without a finding"
