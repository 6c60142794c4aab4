#!/usr/bin/env bash
# Full fault sweep (issue 13): every writer — a first backup, an
# incremental backup, prune, materialize and a watch run — is killed at
# each invocation of each mutating system call in turn, and has ENOSPC,
# EIO or EDQUOT injected into write, fsync, rename, link and openat; after
# each fault the next run, verify and restore must prove the repository
# whole (tests/integration/faults.rs says exactly what is checked).
#
#   benches/faultsweep.sh
#
# Sized by env vars: TROVE_SWEEP_KILL_STRIDE (default 1: every kill point)
# and TROVE_SWEEP_ERROR_STRIDE (default 4: every 4th call, the errnos
# taking turns). Needs strace (apt-get install strace) and ptrace. Prints
# per writer how many points it visited, then the totals the README
# quotes; exits non-zero when any point broke a promise, listing each.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || {
    echo "strace is needed: apt-get update && apt-get install -y strace" >&2
    exit 2
}
export TROVE_SWEEP_KILL_STRIDE=${TROVE_SWEEP_KILL_STRIDE:-1}
export TROVE_SWEEP_ERROR_STRIDE=${TROVE_SWEEP_ERROR_STRIDE:-4}
start=$(date +%s)
cargo test --release --test integration faults::full_fault_sweep -- --ignored --nocapture
echo "fault sweep: $(( $(date +%s) - start )) s (kill stride $TROVE_SWEEP_KILL_STRIDE, error stride $TROVE_SWEEP_ERROR_STRIDE)"
