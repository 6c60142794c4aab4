#!/usr/bin/env bash
# A full restore against `cp -a` (and `restic restore` when installed) of
# the same tree, in the state compare.sh leaves the repository in, each
# timed in the same filesystem state as the others.
#
#   benches/restore.sh DATA_DIR
#
# DATA_DIR (outside the repository; on the filesystem under test) receives
# src/ (the tree, regenerated every run), dest/ (trove's backup root),
# restic/ (restic's repository), out-*/ (what each timed run wrote),
# ballast/ and results/ (raw.tsv, report.md, each run's output and time).
#
# Environment: FILES (100000), BYTES (450000000), SEED (1), REPS (3),
# STATES ("settled deleted"), SETTLE (seconds to wait before the settled
# runs: 370 on ext4 without a journal, else 0), TROVE_BASE (a second trove
# binary, timed beside this checkout's as "trove-base").
#
# The repositories are brought to compare.sh's state first: backup, a
# no-change backup, gen_tree.py --mutate (1% of the files modified, added,
# deleted and renamed) and a backup, by trove and by restic alike. Then
# each tool writes the latest snapshot (`cp -a` the mutated tree itself)
# into a new folder, REPS times, the order rotating between repetitions,
# in each state:
#
#   settled  no file deleted on the filesystem for SETTLE seconds, and
#            none between the runs (each writes its own out-settled.*/);
#   deleted  the previous output removed, a 100,000-file copy of the tree
#            (ballast/) made, then removed and `sync`ed right before the
#            timed run: what a harness that clears its previous output
#            before each timing does, and what a user who deletes a
#            damaged folder and restores it at once does.
#
# Why the two states: ext4 without a journal (this machine's root
# filesystem; `mkfs.ext4 -O ^has_journal`) does not reuse an inode freed
# less than 60 s ago, or 360 s while its inode-table block is dirty —
# which creating a neighbour in that block makes it — and it finds a free
# inode by walking every such inode of the group, one buffer-cache look-up
# each, before it takes one anyway. Right after a large delete, every file
# created near it pays that walk: any writer of many files (cp -a, restic,
# trove) spends ten times the kernel time. docs/DESIGN.md ("Restore
# performance") has the measurements. `measure` syncs before each timed
# run, so no earlier step's writeback is timed in either state.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$@"
FILES=${FILES:-100000}
BYTES=${BYTES:-450000000}
SEED=${SEED:-1}
REPS=${REPS:-3}
STATES=${STATES:-settled deleted}
SRC=$DATA/src
DEST=$DATA/dest
RREPO=$DATA/restic
BALLAST=$DATA/ballast
OUT=$DATA/results

require_base_tools
HAVE_RESTIC=$(have_tool restic "apt-get install -y restic")
export RESTIC_PASSWORD=trove-bench
RESTIC=(restic -q -r "$RREPO" --cache-dir "$DATA/restic-cache")

echo "== building (cargo build --release)"
(cd "$REPO" && cargo build --release --quiet)
TROVE=${CARGO_TARGET_DIR:-$REPO/target}/release/trove

rm -rf "$SRC" "$DEST" "$RREPO" "$DATA/restic-cache" "$DATA"/out-* "$BALLAST" "$OUT"
sync
mkdir -p "$OUT"
cd "$DATA"

# The filesystem under test and whether it journals: /sys/fs/ext4/DEV/
# journal_task names the journal thread, `<none>` without a journal.
DEV=$(basename "$(df --output=source "$DATA" | tail -1)")
FSTYPE=$(df --output=fstype "$DATA" | tail -1 | tr -d ' ')
JOURNAL="n/a"
[ -r "/sys/fs/ext4/$DEV/journal_task" ] && JOURNAL=$(cat "/sys/fs/ext4/$DEV/journal_task")
if [ "$FSTYPE" = ext4 ] && [ "$JOURNAL" = "<none>" ]; then
    SETTLE=${SETTLE:-370}
else
    SETTLE=${SETTLE:-0}
fi

echo "== generating $SRC ($FILES files, ~$BYTES bytes, seed $SEED)"
python3 "$REPO/benches/gen_tree.py" --out "$SRC" --files "$FILES" --bytes "$BYTES" --seed "$SEED" -q
# Let inode change times age past trove's 2 s racily-clean window.
sleep 2.5
{
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
    echo "filesystem of DATA_DIR: $FSTYPE on $DEV, options $(findmnt -no OPTIONS -T "$DATA"), journal thread: $JOURNAL"
    echo "trove: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' +uncommitted src changes'), release build${TROVE_BASE:+; trove-base: $TROVE_BASE}"
    if [ "$HAVE_RESTIC" = 1 ]; then echo "restic: $(restic version | head -1)"; fi
    echo "data: $(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) dirs, $(du -sb --apparent-size "$SRC" | cut -f1) bytes, before the mutation"
    echo "REPS=$REPS SETTLE=${SETTLE}s STATES=\"$STATES\""
} >"$OUT/facts.txt"
cat "$OUT/facts.txt"

# restic backs the tree up from inside it, so its snapshot's root is the
# tree's contents, as trove's is.
restic_backup() {
    measure "$1" bash -c 'cd "$1" && shift && "$@" backup .' _ "$SRC" "${RESTIC[@]}"
}

echo "== repositories in compare.sh's state: backup, no-change backup, 1% mutation, backup"
measure prep.backup "$TROVE" backup "$SRC" "$DEST" -q
if [ "$HAVE_RESTIC" = 1 ]; then
    "${RESTIC[@]}" init
    restic_backup prep.restic_backup
fi
measure prep.nochange "$TROVE" backup "$SRC" "$DEST" -q
if [ "$HAVE_RESTIC" = 1 ]; then restic_backup prep.restic_nochange; fi
python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed 1001 >"$OUT/mutate.log"
sleep 2.1
measure prep.mutated "$TROVE" backup "$SRC" "$DEST" -q
if [ "$HAVE_RESTIC" = 1 ]; then restic_backup prep.restic_mutated; fi

TOOLS=(cp trove)
[ -n "${TROVE_BASE:-}" ] && TOOLS+=(trove-base)
[ "$HAVE_RESTIC" = 1 ] && TOOLS+=(restic)

# run_tool TOOL NAME TARGET: one timed write of the latest state.
run_tool() {
    case $1 in
    cp) measure "$2" cp -a "$SRC" "$3" ;;
    trove) measure "$2" "$TROVE" restore --repo "$DEST" --target "$3" -q ;;
    trove-base) measure "$2" "$TROVE_BASE" restore --repo "$DEST" --target "$3" -q ;;
    restic) measure "$2" "${RESTIC[@]}" restore latest --target "$3" ;;
    esac
}

# Before each timing, wait while another heavy job runs on the machine (a
# benchmark with its SeaweedFS server or restic, a compiler, a test run):
# on shared machines it would be timed too. WAIT_QUIET=0 turns it off.
wait_quiet() {
    [ "${WAIT_QUIET:-1}" = 1 ] || return 0
    while pgrep -f 'offsite\.sh|weed |restic |rustc |cargo test|cargo-nextest|/deps/integration-' >/dev/null; do
        sleep 10
    done
}

# Dirty and Writeback (kB) of /proc/meminfo at the start of each timing:
# what earlier steps still had to write.
dirty() {
    awk '/^(Dirty|Writeback):/{printf "%s%s ", $1, $2}' /proc/meminfo
}

checked=0
for state in $STATES; do
    if [ "$state" = settled ] && [ "$SETTLE" != 0 ]; then
        echo "== settled: waiting ${SETTLE}s with no file deleted"
        sleep "$SETTLE"
    fi
    echo "== $state (x$REPS)"
    prev=""
    for r in $(seq "$REPS"); do
        # Rotate the order so no tool always runs first or last.
        n=${#TOOLS[@]}
        for i in $(seq 0 $((n - 1))); do
            tool=${TOOLS[$(((i + r - 1) % n))]}
            target=$DATA/out-$state.$tool.$r
            wait_quiet
            if [ "$state" = deleted ]; then
                # The ballast's creation takes the inodes earlier removals
                # freed, its removal frees 100,000 again: every timed run
                # starts right after the same delete.
                rm -rf $prev
                cp -a "$SRC" "$BALLAST"
                sync
                rm -rf "$BALLAST"
                prev=$target
            fi
            wait_quiet
            echo "$state.$tool.$r $(dirty)" >>"$OUT/dirty.txt"
            run_tool "$tool" "$state.$tool.$r" "$target"
            if [ "$tool" = trove ] && [ "$checked" = 0 ]; then
                # Once, untimed: the restore is the tree.
                diff -r --no-dereference "$SRC" "$target" >"$OUT/diff.txt"
                checked=1
            fi
        done
    done
    rm -rf "$DATA"/out-*
    sync
done

python3 - "$OUT" "$STATES" "${TOOLS[@]}" >"$OUT/report.md" <<'EOF'
import statistics, sys
out, states, tools = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
runs = {}
for line in open(f"{out}/raw.tsv"):
    name, ms, rss, other = line.rstrip("\n").split("\t")[:4]
    parts = name.split(".")
    if parts[0] == "prep":
        continue
    state, tool, rep = parts
    _, user, sys_ = open(f"{out}/{name}.time").read().split("\n")[-2].split()
    runs.setdefault((state, tool), {})[int(rep)] = (int(ms) / 1000, float(user), float(sys_), float(other))
print("\n".join("- " + l.strip() for l in open(f"{out}/facts.txt")))
print()
print("| state | tool | wall, median (s) | every run: wall s (user + sys CPU s) | ratio to `cp -a`, per repetition |")
print("|---|---|---|---|---|")
names = {"cp": "`cp -a`", "trove": "trove restore", "trove-base": "trove restore (TROVE_BASE)", "restic": "restic restore"}
for state in states:
    for tool in tools:
        rs = runs.get((state, tool), {})
        if not rs:
            continue
        cp = runs.get((state, "cp"), {})
        every = ", ".join(f"{w:.2f} ({u:.1f} + {s:.1f})" for _, (w, u, s, _) in sorted(rs.items()))
        ratios = "/".join(f"{rs[k][0] / cp[k][0]:.2f}" for k in sorted(rs) if k in cp)
        med = statistics.median(w for w, _, _, _ in rs.values())
        print(f"| {state} | {names[tool]} | {med:.2f} | {every} | {ratios if tool != 'cp' else ''} |")
print()
others = [o for rs in runs.values() for (_, _, _, o) in rs.values()]
print(f"CPU time of other processes and kernel threads during a timed run: max {max(others):.2f} s.")
EOF
echo
cat "$OUT/report.md"
echo
echo "(report: $OUT/report.md, raw timings: $OUT/raw.tsv, Dirty/Writeback at each start: $OUT/dirty.txt)"
