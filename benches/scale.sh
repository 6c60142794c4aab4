#!/usr/bin/env bash
# Scale check (issue 7, item 5): a tree of a million mostly tiny files.
# Times the first backup, a no-change rerun and `verify --quick` against
# the `find` stat walk, and records each one's peak RSS, plus trove's
# memory per run phase (TROVE_MEMPROBE) so the largest structure is named.
#
#   benches/scale.sh DATA_DIR
#
# DATA_DIR (outside the repository) receives src/ (made by gen_tree.py
# when missing), dest/ (trove's backup root, recreated every run) and
# results/ (raw.tsv, command output, report.md).
#
# Environment: FILES (1000000), BYTES (1000000000), SEED (1), REPS (2) for
# the no-change rerun and its `find` anchor, FIRST_REPS (1) cold first
# backups (the second and later into fresh dest-N/ folders, so no delete
# precedes them; the report gives their median), SETTLE (seconds to wait after
# removing the previous dest/: 370 on ext4 without a journal, else 0), COLD
# (1: drop the kernel's caches before each first backup, so it reads its
# source from the disk at every size; 0 keeps whatever is cached). Needs GNU time
# (/usr/bin/time) and about 3 GB free in DATA_DIR. Takes 5-10 minutes, most
# of it the first backup (writing a million objects).
set -euo pipefail

FILES=${FILES:-1000000}
BYTES=${BYTES:-1000000000}
SEED=${SEED:-1}
REPS=${REPS:-2}

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$@"
HERE=$REPO/benches
require_base_tools

SRC=$DATA/src
DEST=$DATA/dest
OUT=$DATA/results
rm -rf "$OUT" "$DEST" "$DATA"/dest-*
mkdir -p "$OUT"
# A previous run's dest/ holds millions of inodes. On ext4 without a
# journal an inode freed within the last 60 s (360 s once its inode-table
# block is dirtied again) is passed over, one look-up each, by every
# creation in its group, so a first backup started right after that
# delete timed the harness's own `rm` too (docs/DESIGN.md "Restore
# performance").
# Wait the window out (lib.sh), as benches/compare.sh does before its
# restores.
settle_deletes "after removing the previous dest/"

(cd "$REPO" && cargo build --release --quiet)
TROVE=${CARGO_TARGET_DIR:-$REPO/target}/release/trove

if [ ! -d "$SRC" ]; then
    echo "generating $FILES files ($BYTES bytes) in $SRC"
    python3 "$HERE/gen_tree.py" --out "$SRC" --files "$FILES" --bytes "$BYTES" --seed "$SEED"
    # Files changed less than 2 s before a run are "racily clean": the stat
    # cache does not vouch for them, and the no-change rerun would read them.
    sleep 3
fi
NFILES=$(find "$SRC" -type f | wc -l)
echo "data: $NFILES files, $(du -sh --apparent-size "$SRC" | cut -f1)"

# A first backup at 100,000 files read a source that its generation, or
# the previous run, had just left in the page cache; at 3,000,000 (3 GB of
# data, 3,000,000 inodes) half of it had been evicted, so the two rates
# compared a cached read with a disk read. Both start cold instead (a
# first backup of a real tree reads it from the disk).
COLD=${COLD:-1}
FIRST_REPS=${FIRST_REPS:-1}
# drop_caches: empty the page, dentry and inode caches (root only); on
# failure the first backups run warm and the report says so.
drop_caches() {
    sync
    if [ "$COLD" = 1 ] && ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        echo "  (COLD=1 needs root to drop the kernel's caches: first backup runs warm)"
        COLD=0
    fi
}
export TROVE_MEMPROBE=1
drop_caches
measure first-1 "$TROVE" backup "$SRC" "$DEST" -q
cp "$OUT/first-1.err" "$OUT/first.phases"
for r in $(seq 1 "$REPS"); do
    measure "find-$r" find "$SRC" -printf '%s %T@ %i %p\n'
    measure "nochange-$r" "$TROVE" backup "$SRC" "$DEST" -q
done
cp "$OUT/nochange-1.err" "$OUT/nochange.phases"
measure verify-quick "$TROVE" --repo "$DEST" verify --quick -q
# The other first backups come last: each drops the caches, which would
# leave the steps above a cold dest/ that no routine run meets.
for r in $(seq 2 "$FIRST_REPS"); do
    drop_caches
    measure "first-$r" "$TROVE" backup "$SRC" "$DATA/dest-$r" -q
done
if [ "$COLD" = 1 ]; then echo "  (kernel caches dropped before each first backup)"; fi

# Median over the reps (lower middle for an even count).
med() {
    awk -F'\t' -v p="^$1-[0-9]+\$" -v c="$2" '$1 ~ p { print $c }' "$OUT/raw.tsv" |
        sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# Largest over the reps: the peak RSS a goal bounds is the worst run's.
most() {
    awk -F'\t' -v p="^$1-[0-9]+\$" -v c="$2" '$1 ~ p { print $c }' "$OUT/raw.tsv" | sort -n | tail -1
}
one() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$OUT/raw.tsv"; }
find_ms=$(med find 2)
{
    echo "| step | trove | peak RSS | anchor | ratio |"
    echo "|---|---|---|---|---|"
    all=$(awk -F'\t' '$1 ~ /^first-[0-9]+$/ { printf "%s%.2f", (n++ ? ", " : ""), $2 / 1000 }' "$OUT/raw.tsv")
    awk -v t="$(med first 2)" -v m="$(most first 3)" -v n="$NFILES" -v c="$COLD" -v all="$all" -v k="$FIRST_REPS" 'BEGIN {
        printf "| first backup%s%s | %.1f s = %.0f files/s (every run: %s s) | %.0f MiB | (benches/compare.sh has cp -a) | - |\n", (c == 1 ? " (cold caches)" : ""), (k > 1 ? ", median" : ""), t / 1000, n * 1000 / t, all, m / 1024 }'
    awk -v t="$(med nochange 2)" -v m="$(most nochange 3)" -v f="$find_ms" 'BEGIN {
        printf "| no-change rerun | %.2f s | %.0f MiB | `find` walk: %.2f s | **%.2fx** (goal <= 1.5x) |\n", t / 1000, m / 1024, f / 1000, t / f }'
    awk -v t="$(one verify-quick 2)" -v m="$(one verify-quick 3)" -v f="$find_ms" 'BEGIN {
        printf "| verify --quick | %.2f s | %.0f MiB | `find` walk: %.2f s | **%.2fx** (goal <= 1.5x, <= 128 MiB) |\n", t / 1000, m / 1024, f / 1000, t / f }'
    echo
    echo "Memory by phase (TROVE_MEMPROBE), first backup:"
    echo
    echo '```'
    cat "$OUT/first.phases"
    echo '```'
    echo
    echo "No-change rerun:"
    echo
    echo '```'
    cat "$OUT/nochange.phases"
    echo '```'
} | tee "$OUT/report.md"
