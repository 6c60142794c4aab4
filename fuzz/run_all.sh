#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 660: 10 CPU-minutes and a
# margin), JOBS at a time (default: the number of CPUs), starting from
# fuzz/seeds/<target>/ (real repository files, fuzz/make_seeds.sh). New
# inputs that widen coverage go to fuzz/corpus/<target>/, crashes to
# fuzz/artifacts/<target>/. Needs cargo-fuzz (`cargo install cargo-fuzz`);
# stable Rust works with RUSTC_BOOTSTRAP=1 (set here).
#
#   fuzz/run_all.sh [SECONDS]
set -uo pipefail
cd "$(dirname "$0")"
SECS=${1:-660}
JOBS=${JOBS:-$(nproc)}
export RUSTC_BOOTSTRAP=1
cargo fuzz build || exit 1
targets=$(cargo fuzz list)
mkdir -p logs
run() {
    t=$1
    mkdir -p "corpus/$t" "artifacts/$t"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$SECS" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1
    echo "$t: exit $? ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$') runs)"
}
export -f run
export SECS
printf '%s\n' $targets | xargs -P "$JOBS" -I{} bash -c 'run {}'
ls artifacts/*/ 2>/dev/null | grep -v '^artifacts' | grep -v '^$' && echo "CRASHES FOUND (see fuzz/artifacts)" || echo "no crashes"
