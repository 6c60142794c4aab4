# Shared by the benchmark scripts (source it; `measure` needs $OUT, a
# results directory, and GNU time at /usr/bin/time).

# data_dir_arg "$@": the single DATA_DIR argument every script takes.
# Creates it if needed and sets REPO (this checkout) and DATA (DATA_DIR,
# absolute); refuses a DATA_DIR inside the checkout, which generated data
# must never enter.
data_dir_arg() {
    if [ $# -ne 1 ]; then
        echo "usage: $0 DATA_DIR" >&2
        exit 2
    fi
    REPO=$(cd "$(dirname "$0")/.." && pwd -P)
    mkdir -p "$1"
    DATA=$(cd "$1" && pwd -P)
    case "$DATA/" in
    "$REPO"/*)
        echo "DATA_DIR must be outside the repository ($REPO)" >&2
        exit 2
        ;;
    esac
}

# require_base_tools: stop (exit 2) unless GNU time (for peak RSS) and
# python3 (gen_tree.py, reports) are installed, saying how to get them.
require_base_tools() {
    if [ ! -x /usr/bin/time ] || ! /usr/bin/time -f '%M' -o /dev/null true 2>/dev/null; then
        echo "GNU time (/usr/bin/time with -f) is needed for peak RSS." >&2
        echo "Install it with:  apt-get update && apt-get install -y time" >&2
        exit 2
    fi
    command -v python3 >/dev/null || {
        echo "python3 is needed (gen_tree.py and the report)" >&2
        exit 2
    }
}

# have_tool NAME HOW: print 1 when NAME is on PATH; else print 0 and tell
# (on stderr) that its anchor is skipped and how to install it.
have_tool() {
    if command -v "$1" >/dev/null; then
        echo 1
    else
        echo "$1 not found: its anchor is skipped." >&2
        echo "Install it with:  $2" >&2
        echo 0
    fi
}

# settle_deletes WHY: on ext4 without a journal (`journal_task` says
# `<none>`), an inode freed within the last 60 s (360 s once its
# inode-table block is dirtied again) is passed over, one look-up each, by
# every creation in its group; wait SETTLE seconds (default 370 there,
# else 0) so a timed step does not pay for the harness's own deletes.
settle_deletes() {
    local dev
    dev=$(basename "$(df --output=source "$DATA" | tail -1)")
    if [ "$(cat "/sys/fs/ext4/$dev/journal_task" 2>/dev/null)" = "<none>" ]; then
        SETTLE=${SETTLE:-370}
    else
        SETTLE=${SETTLE:-0}
    fi
    if [ "$SETTLE" != 0 ]; then
        echo "  (ext4 without a journal: waiting ${SETTLE}s $1)"
        sync
        sleep "$SETTLE"
    fi
}

# warm DIR...: read every file below DIR once, untimed, so the command
# measured next finds them in the page cache. trove drops from the cache
# the source files it has read (docs/DESIGN.md, "Pass 1"), so without this
# an anchor timed after a trove run read its input from the disk while
# trove's had been cached by the step before.
warm() {
    find "$@" -type f -print0 | xargs -0 -r cat >/dev/null
}

# Busy CPU time of the whole machine so far, in 1/100 s (USER_HZ).
busy_ticks() {
    awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# measure NAME CMD... : time one command after an untimed `sync` (stdout
# to $OUT/NAME.out, stderr to $OUT/NAME.err; a failure stops the script)
# and append "NAME<TAB>ms<TAB>maxrss_kB<TAB>CPU s of other processes
# meanwhile<TAB>own CPU s" to $OUT/raw.tsv. Other work on the machine skews
# timings: the fourth column says how much there was.
measure() {
    local name=$1
    shift
    sync
    local t0 t1 b0 b1
    b0=$(busy_ticks)
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%M %U %S' -o "$OUT/$name.time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        echo "FAILED: $name: $*" >&2
        cat "$OUT/$name.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    b1=$(busy_ticks)
    local ms=$(((t1 - t0) / 1000000))
    local rss own other
    read -r rss own < <(tail -1 "$OUT/$name.time" | awk '{print $1, $2 + $3}')
    other=$(awk -v b="$((b1 - b0))" -v o="$own" 'BEGIN { x = b / 100 - o; printf "%.2f", (x < 0 ? 0 : x) }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$ms" "$rss" "$other" "$own" >>"$OUT/raw.tsv"
    awk -v n="$name" -v ms="$ms" -v kb="$rss" -v ot="$other" -v cpu="$own" \
        'BEGIN { printf "  %-16s %8.3f s  %7.1f MiB  (own CPU %.2f s; other processes: %.2f CPU s)\n", n, ms / 1000, kb / 1024, cpu, ot }'
}
