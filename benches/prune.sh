#!/usr/bin/env bash
# Prune benchmark: trove prune against restic forget --prune on the same
# history, in one run.
#
#   benches/prune.sh DATA_DIR
#
# Builds a history of SNAPS snapshots (default 20) of a generated tree
# (FILES files, default 100,000; BYTES bytes, default 450 MB) with 1% churn
# (gen_tree.py --mutate) between them, backed up by trove (max_versions 1,
# so each run's retention already trims the archive) and by restic
# (RESTIC_PASSWORD is set to a throw-away value), then times
#   trove prune --keep-last KEEP     vs   restic forget --keep-last KEEP --prune
# (KEEP default 10) with wall time and peak RSS (GNU time). Needs restic
# (apt-get install restic) and GNU time (apt-get install time).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$@"
FILES=${FILES:-100000}
BYTES=${BYTES:-450000000}
SNAPS=${SNAPS:-20}
KEEP=${KEEP:-10}
require_base_tools
command -v restic >/dev/null || {
    echo "restic is needed: apt-get update && apt-get install -y restic" >&2
    exit 2
}
export RESTIC_PASSWORD=trove-bench
(cd "$REPO" && cargo build --release --quiet)
TROVE=${CARGO_TARGET_DIR:-$REPO/target}/release/trove
SRC=$DATA/src
DEST=$DATA/trove
RREPO=$DATA/restic
OUT=$DATA/results
rm -rf "$SRC" "$DEST" "$RREPO" "$OUT" "$DATA/trove-history" "$DATA/restic-history"
mkdir -p "$OUT"
python3 "$REPO/benches/gen_tree.py" --out "$SRC" --files "$FILES" --bytes "$BYTES" --seed 1 -q
cat >"$DATA/config.json" <<EOF
{"sources": ["$SRC"], "backup_root": "$DEST", "retention": {"max_versions_per_file": 1}}
EOF
restic init --repo "$RREPO" -q
echo "== building a history of $SNAPS snapshots (1% churn each)"
for i in $(seq "$SNAPS"); do
    if [ "$i" -gt 1 ]; then
        python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed "$((100 + i))" >/dev/null
        sleep 2.1 # past trove's racily-clean window
    fi
    "$TROVE" --config "$DATA/config.json" backup -q --always-snapshot
    restic --repo "$RREPO" backup -q "$SRC" >/dev/null
done
sync
du -sb "$DEST/.trove/objects" "$RREPO" | tee "$OUT/before.du"
# Keep the history so the comparison can be repeated (REPS, default 1):
# each repetition prunes a fresh copy of both repositories.
cp -a "$DEST" "$DATA/trove-history"
cp -a "$RREPO" "$DATA/restic-history"
for r in $(seq "${REPS:-1}"); do
    if [ "$r" -gt 1 ]; then
        rm -rf "$DEST" "$RREPO"
        cp -a "$DATA/trove-history" "$DEST"
        cp -a "$DATA/restic-history" "$RREPO"
    fi
    measure trove_dry "$TROVE" --config "$DATA/config.json" prune --dry-run --keep-last "$KEEP" -q
    measure trove "$TROVE" --config "$DATA/config.json" prune --keep-last "$KEEP"
    measure restic restic --repo "$RREPO" forget --keep-last "$KEEP" --prune -q
done
du -sb "$DEST/.trove/objects" "$RREPO" | tee "$OUT/after.du"
python3 - "$OUT/raw.tsv" <<'EOF'
import sys
import statistics
runs = {}
for l in open(sys.argv[1]):
    n, ms, kb = l.rstrip("\n").split("\t")[:3]
    runs.setdefault(n, []).append((int(ms), int(kb)))
rows = {n: [statistics.median(m for m, _ in v), max(k for _, k in v)] for n, v in runs.items()}
t, r = rows["trove"], rows["restic"]
print()
print("| step | trove wall (s) | trove peak RSS (MiB) | restic wall (s) | restic peak RSS (MiB) | ratio |")
print("|---|---|---|---|---|---|")
print(f"| prune --keep-last | {int(t[0])/1000:.2f} | {int(t[1])/1024:.0f} | {int(r[0])/1000:.2f} | {int(r[1])/1024:.0f} | {int(t[0])/int(r[0]):.2f}× |")
d = rows["trove_dry"]
print(f"| prune --dry-run | {int(d[0])/1000:.2f} | {int(d[1])/1024:.0f} | | | |")
EOF
cat "$OUT/trove.out"
