#!/usr/bin/env bash
# What a rerun after a 1% mutation writes, per trove binary: the step of
# benches/compare.sh ("rerun after gen_tree.py --mutate") timed beside a
# `find` walk, then one more mutation run under `strace -c` (fsync,
# rename, openat, …) with the tree files it created counted (format 1:
# files under .trove/trees/, format 2: packs under .trove/packs/), and a
# `prune --keep-last 1` after it timed and counted the same way.
#
#   benches/tree_writes.sh DATA_DIR LABEL=BINARY [LABEL=BINARY …]
#
# Each binary starts from the same pristine tree (gen_tree.py, FILES
# files, ~BYTES bytes, SEED) and gets the same mutations (seeds 1001…).
# Environment: FILES (100000), BYTES (450000000), SEED (1), REPS (3);
# UPGRADE_WITH=BINARY also times that binary's first backup on each
# format 1 repository (the upgrade to tree packs) and verifies it.
# Results: DATA_DIR/results/tree_writes.md (and the raw strace outputs).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$1"
shift
FILES=${FILES:-100000}
BYTES=${BYTES:-450000000}
SEED=${SEED:-1}
REPS=${REPS:-3}
PRISTINE=$DATA/pristine
OUT=$DATA/results
mkdir -p "$OUT"
if [ ! -d "$PRISTINE" ]; then
    echo "== generating $PRISTINE ($FILES files)"
    python3 "$REPO/benches/gen_tree.py" --out "$PRISTINE" --files "$FILES" --bytes "$BYTES" --seed "$SEED" -q
fi
REPORT=$OUT/tree_writes.md
{
    echo "machine: $(nproc) CPUs, kernel $(uname -r); $FILES files; REPS=$REPS; $(date -u +%FT%TZ)"
    echo
    echo "| binary | rerun after 1% mutation (s, each rep) | find (s, each rep) | tree files created | fsync+fdatasync | renames | openat | prune --keep-last 1 (s) | prune unlinks |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$REPORT"
secs() { /usr/bin/time -f %e -o "$OUT/t" "$@" >/dev/null 2>&1; cat "$OUT/t"; }
tree_files() {
    { find "$1/.trove/trees" "$1/.trove/packs" -type f 2>/dev/null || true; } | sort
}
for spec in "$@"; do
    label=${spec%%=*}
    bin=${spec#*=}
    echo "== $label ($bin)"
    SRC=$DATA/src-$label
    DEST=$DATA/dest-$label
    rm -rf "$SRC" "$DEST"
    cp -a "$PRISTINE" "$SRC"
    sleep 2.5
    "$bin" backup "$SRC" "$DEST" -q
    "$bin" backup "$SRC" "$DEST" -q
    runs=""
    finds=""
    for r in $(seq "$REPS"); do
        python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed $((1000 + r)) >/dev/null
        sleep 2.1
        sync
        finds="$finds $(secs find "$SRC" -printf '%s %T@ %i\n')"
        sync
        runs="$runs $(secs "$bin" backup "$SRC" "$DEST" -q)"
    done
    python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed 2001 >/dev/null
    sleep 2.1
    sync
    tree_files "$DEST" >"$OUT/$label.trees.before"
    strace -c -f -o "$OUT/$label.strace-c" "$bin" backup "$SRC" "$DEST" -q >/dev/null 2>&1
    tree_files "$DEST" >"$OUT/$label.trees.after"
    created=$(comm -13 "$OUT/$label.trees.before" "$OUT/$label.trees.after" | wc -l)
    count() { awk -v c="$1" '$NF == c {v = $4} END {print v + 0}' "$OUT/$label.strace-c"; }
    fs=$(( $(count fsync) + $(count fdatasync) ))
    rn=$(( $(count rename) + $(count renameat) + $(count renameat2) ))
    op=$(count openat)
    sync
    prune_t=$(secs "$bin" prune --repo "$DEST" --keep-last 1 -q)
    "$bin" backup "$SRC" "$DEST" -q
    python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed 3001 >/dev/null
    sleep 2.1
    "$bin" backup "$SRC" "$DEST" -q
    strace -c -f -o "$OUT/$label.prune.strace-c" "$bin" prune --repo "$DEST" --keep-last 1 -q >/dev/null 2>&1
    ul=$(awk '$NF == "unlink" || $NF == "unlinkat" {s += $4} END {print s + 0}' "$OUT/$label.prune.strace-c")
    echo "| $label | $runs | $finds | $created | $fs | $rn | $op | $prune_t | $ul |" >>"$REPORT"
    if [ -n "${UPGRADE_WITH:-}" ] && grep -q '"format": 1' "$DEST/.trove/config"; then
        # The first run of UPGRADE_WITH on this format 1 repository: the
        # upgrade to tree packs, then a no-change backup.
        loose=$(find "$DEST/.trove/trees" -type f | wc -l)
        sync
        up_t=$(secs "$UPGRADE_WITH" backup "$SRC" "$DEST" -q)
        packs=$(find "$DEST/.trove/packs" -type f | wc -l)
        "$UPGRADE_WITH" verify --repo "$DEST" -q
        echo "upgrade of $label's format 1 repository by $UPGRADE_WITH: $loose loose trees → $packs pack(s), first backup (upgrade + no-change run) $up_t s, verify clean" >>"$OUT/upgrade.txt"
    fi
    rm -rf "$SRC" "$DEST"
done
[ -f "$OUT/upgrade.txt" ] && { echo; cat "$OUT/upgrade.txt"; } >>"$REPORT"
echo
cat "$REPORT"
