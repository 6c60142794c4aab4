#!/usr/bin/env bash
# Build the seed corpus from a real repository: back up a small, varied
# tree a few times with the release binary, then copy each kind of file
# trove decodes into fuzz/seeds/<target>/ (named by content hash; the
# fuzzers read them and grow their own corpus in fuzz/corpus/<target>/).
#
#   fuzz/make_seeds.sh
set -euo pipefail
FUZZ=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(dirname "$FUZZ")
# TROVE_BIN: a trove binary to use instead of building the release one.
if [ -n "${TROVE_BIN:-}" ]; then
    T=$TROVE_BIN
else
    (cd "$REPO" && cargo build --release --quiet)
    T=${CARGO_TARGET_DIR:-$REPO/target}/release/trove
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
S=$W/src
mkdir -p "$S/sub/deeper" "$S/empty" "$S/versions"
printf 'hello world\n' >"$S/one.txt"
cp "$S/one.txt" "$S/one_copy.txt"
printf 'x' >"$S/sub/deeper/x"
: >"$S/zero"
printf 'odd\n' >"$S/$(printf 'name\xffwith\tbytes')"
ln -s one.txt "$S/link"
ln -s /nonexistent "$S/dangling"
printf 'reserved\n' >"$S/versions/r"
# Format 2's fields: extended attributes, a hard-link group, holes, a FIFO.
ln "$S/one_copy.txt" "$S/sub/hardlink"
truncate -s 1M "$S/sparse"
mkfifo "$S/fifo"
if command -v setfattr >/dev/null; then
    setfattr -n user.note -v hello "$S/one_copy.txt"
    setfattr -n user.dir -v x "$S/sub"
fi
"$T" backup "$S" "$W/b" -q
printf 'changed\n' >"$S/one.txt"
rm "$S/zero"
"$T" backup "$S" "$W/b" -q
printf 'again\n' >"$S/one.txt"
mv "$S/sub/deeper/x" "$S/sub/y"
"$T" backup "$S" "$W/b" -q
put() { # put TARGET FILE
    mkdir -p "$FUZZ/seeds/$1"
    cp "$2" "$FUZZ/seeds/$1/$(sha1sum "$2" | cut -c1-16)"
}
# Trees are stored in packs (format 2): each pack is a tree_pack seed, and
# each tree in it (cut out by the pack's own index) a tree seed.
python3 - "$W/b/.trove/packs" "$W/trees" <<'PY'
import os, struct, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), 'rb').read()
    count = struct.unpack('<I', data[-40:-36])[0]
    index = data[len(data) - 40 - 44 * count:len(data) - 40]
    for i in range(count):
        rec = index[44 * i:44 * i + 44]
        off, ln = struct.unpack('<QI', rec[32:44])
        open(os.path.join(out, rec[:32].hex()), 'wb').write(data[off + 36:off + 36 + ln])
PY
for f in "$W"/trees/*; do
    put tree_source "$f"
    put tree_archive "$f"
done
for f in "$W"/b/.trove/packs/*.pack; do put tree_pack "$f"; done
for f in "$W"/b/.trove/snapshots/*; do put snapshot_record "$f"; done
put repo_config "$W/b/.trove/config"
put stat_cache "$W/b/.trove/cache/stat-v3"
cp "$REPO/config.json" "$W/c1.json"
cat >"$W/c2.json" <<'JSON'
{"sources": ["./a", "/b"], "backup_root": "./bk", "log_dir": "logs", "log_level": "debug",
 "hash_algorithm": "sha256", "exclude": ["*.tmp", "/cache"], "exclude_file": ["ex.txt"],
 "exclude_if_present": [".nobackup"], "exclude_caches": true, "exclude_larger_than": "1M",
 "follow_symlinks": false, "one_file_system": true, "on_error": "warn",
 "retention": {"max_versions_per_file": 3, "deleted_max_age_days": 30, "keep_last": 2,
   "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 1, "keep_within_days": 3},
 "watch": {"debounce_ms": 500, "full_scan_interval": 600}}
JSON
put config_json "$W/c1.json"
put config_json "$W/c2.json"
echo "seeds: $(find "$FUZZ/seeds" -type f | wc -l) files in $FUZZ/seeds"
