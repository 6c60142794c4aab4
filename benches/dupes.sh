#!/usr/bin/env bash
# Wall-clock and peak-RSS comparison of `trove dupes` against fclones and
# jdupes on one synthetic tree, in one run.
#
#   benches/dupes.sh DATA_DIR
#
# DATA_DIR (outside the repository; /tmp/... is fine) receives:
#   tree/       the data: gen_tree.py's tree (FILES files, ~BYTES bytes,
#               ~5% of them duplicates) plus tree/large-dupes/ holding
#               LARGE_COPIES copies (made with cp) of one random file of
#               LARGE_MIB MiB; regenerated only when these settings change
#   results/    raw timings (raw.tsv), each command's output, and the
#               markdown report (report.md)
#
# Environment: FILES (100000), BYTES (450000000), SEED (1), REPS (3),
# LARGE_MIB (200), LARGE_COPIES (3).
#
# Commands timed (each anchor right before trove, the trio repeated REPS
# times, median reported):
#   fclones group DIR      (skipped, with install instructions, if missing)
#   jdupes -r DIR
#   trove dupes DIR -q     (release build)
# All three read whole files only where sizes and partial hashes collide;
# they differ in hash (fclones: metro128, trove: BLAKE3, jdupes: xxhash
# then a byte-for-byte comparison) and threading (jdupes is single-threaded).
#
# Method: nothing is dropped from the page cache (every run is warm, the
# data is read from memory); `sync` runs, untimed, before every timed
# command. Peak RSS comes from GNU time (%M). The number of duplicate sets
# each tool reports is recorded as a sanity check that they did the same
# work.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$@"
FILES=${FILES:-100000}
BYTES=${BYTES:-450000000}
SEED=${SEED:-1}
REPS=${REPS:-3}
LARGE_MIB=${LARGE_MIB:-200}
LARGE_COPIES=${LARGE_COPIES:-3}
TREE=$DATA/tree
OUT=$DATA/results

require_base_tools
HAVE_FCLONES=$(have_tool fclones "cargo install fclones --locked   (a few minutes; puts it in ~/.cargo/bin)")
HAVE_JDUPES=$(have_tool jdupes "apt-get update && apt-get install -y jdupes")

echo "== building (cargo build --release)"
(cd "$REPO" && cargo build --release --quiet)
TROVE=${CARGO_TARGET_DIR:-$REPO/target}/release/trove

PARAMS="files=$FILES bytes=$BYTES seed=$SEED large=${LARGE_COPIES}x${LARGE_MIB}MiB"
if [ ! -d "$TREE" ] || [ "$(cat "$DATA/.tree-params" 2>/dev/null)" != "$PARAMS" ]; then
    rm -rf "$TREE" "$DATA/.tree-params"
    echo "== generating $TREE ($PARAMS)"
    python3 "$REPO/benches/gen_tree.py" --out "$TREE" --files "$FILES" --bytes "$BYTES" --seed "$SEED" -q
    mkdir -p "$TREE/large-dupes"
    head -c "$((LARGE_MIB << 20))" /dev/urandom >"$TREE/large-dupes/copy-1.bin"
    for i in $(seq 2 "$LARGE_COPIES"); do
        cp "$TREE/large-dupes/copy-1.bin" "$TREE/large-dupes/copy-$i.bin"
    done
    echo "$PARAMS" >"$DATA/.tree-params"
fi
rm -rf "$OUT"
mkdir -p "$OUT"
# Run from DATA_DIR: the repository's own config.json must not interfere.
cd "$DATA"

{
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
    echo "filesystem of DATA_DIR: $(df --output=fstype "$DATA" | tail -1) ($(df --output=source "$DATA" | tail -1)), page cache warm (nothing dropped)"
    echo "trove: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' +uncommitted src changes'), release build"
    echo "anchors: $([ "$HAVE_FCLONES" = 1 ] && fclones --version | head -1 || echo 'fclones missing'); $([ "$HAVE_JDUPES" = 1 ] && jdupes --version | head -1 || echo 'jdupes missing')"
    echo "data: $(find "$TREE" -type f | wc -l) files ($(find "$TREE" -type f -empty | wc -l) empty), $(find "$TREE" -type d | wc -l) dirs, $(du -sb --apparent-size "$TREE" | cut -f1) bytes; $PARAMS"
} >"$OUT/facts.txt"
cat "$OUT/facts.txt"


echo "== dupes: fclones group / jdupes -r / trove dupes (x$REPS)"
for r in $(seq "$REPS"); do
    [ "$HAVE_FCLONES" = 1 ] && measure "fclones.$r" fclones group "$TREE"
    [ "$HAVE_JDUPES" = 1 ] && measure "jdupes.$r" jdupes -r "$TREE"
    measure "trove.$r" "$TROVE" dupes "$TREE" -q
done

# Sets found (from the last run of each): the tools must agree.
{
    [ "$HAVE_FCLONES" = 1 ] && printf 'fclones\t%s\n' "$(grep -c '^[0-9a-f]\+, ' "$OUT/fclones.$REPS.out" || true)"
    # jdupes: sets are blocks separated by blank lines.
    [ "$HAVE_JDUPES" = 1 ] && printf 'jdupes\t%s\n' "$(awk 'NF { if (!inset) { n++; inset = 1 } next } { inset = 0 } END { print n + 0 }' "$OUT/jdupes.$REPS.out")"
    printf 'trove\t%s\n' "$(grep -c '^[0-9]\+ copies of ' "$OUT/trove.$REPS.out" || true)"
} >"$OUT/sets.tsv"
"$TROVE" dupes "$TREE" --json >"$OUT/trove.json"

python3 - "$OUT/raw.tsv" "$OUT/facts.txt" "$OUT/sets.tsv" "$OUT/trove.json" >"$OUT/report.md" <<'EOF'
import json, statistics, sys
raw, facts, sets_p, trove_json = sys.argv[1:5]
runs = {}
others = []
for line in open(raw):
    name, ms, rss, other, own = line.rstrip("\n").split("\t")
    tool = name.rsplit(".", 1)[0]
    runs.setdefault(tool, []).append((int(ms) / 1000, int(rss) / 1024, float(own)))
    others.append(float(other))
sets = dict(l.rstrip("\n").split("\t") for l in open(sets_p))
t = json.load(open(trove_json))
def med(tool, i=0):
    return statistics.median(r[i] for r in runs[tool])
def all_t(tool):
    return "/".join(f"{r[0]:.2f}" for r in runs[tool])
print("\n".join("- " + l.strip() for l in open(facts)))
print(f"- trove's report: {len(t['sets'])} sets, {t['duplicate_files']} files, {t['wasted']} bytes wasted; "
      f"{t['files_scanned']} files scanned, {t['files_partially_hashed']} compared by first/last 4 KiB, "
      f"{t['files_fully_hashed']} hashed in full")
print()
print("| command | wall (s), median (runs) | CPU user+sys (s) | peak RSS (MiB) | sets found | trove's wall ÷ this |")
print("|---|---|---|---|---|---|")
trove = med("trove")
labels = {"fclones": "`fclones group DIR`", "jdupes": "`jdupes -r DIR`", "trove": "`trove dupes DIR -q`"}
for tool in ("fclones", "jdupes", "trove"):
    if tool not in runs:
        continue
    tt = med(tool)
    ratio = "—" if tool == "trove" else f"{trove / tt:.2f}×"
    rss = max(r[1] for r in runs[tool])
    print(f"| {labels[tool]} | {tt:.2f} ({all_t(tool)}) | {med(tool, 2):.2f} | {rss:.1f} | {sets.get(tool, '?')} | {ratio} |")
print()
print("Median of the runs (each run in parentheses); peak RSS is the largest of the runs. "
      "A ratio below 1 means trove is faster than the anchor.")
print(f"CPU time used by other processes during a timed run: max {max(others):.2f} s"
      + (" (other work was running: compare with care)" if max(others) > 0.5 else ""))
EOF
echo
cat "$OUT/report.md"
echo
echo "(report: $OUT/report.md, raw timings: $OUT/raw.tsv)"
