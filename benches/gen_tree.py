#!/usr/bin/env python3
"""Generate (or mutate) a deterministic synthetic source tree for trove benchmarks.

    gen_tree.py --out DIR [--files N] [--bytes B] [--seed S]
    gen_tree.py --out DIR --mutate [--seed S] [--percent P]

Generation (DIR must not exist or be empty):
  * N files (default 100,000) in nested directories: depth up to 6, about
    20-50 entries (files + subdirectories) per directory;
  * sizes: ~1% empty files; a tail of large files (log-normal around
    256 KiB, up to 64 MiB) holding ~10% of the bytes; the rest log-normal
    around 4 KiB (sigma 0.45), scaled so that the total is ~B bytes
    (default 450 MB = 450,000,000);
  * ~5% of the files are exact duplicates of another file's content;
  * contents are pseudo-random (incompressible) bytes, mtimes are set to a
    fixed point in the past (so trove's "racily clean" window never applies).

Mutation (--mutate, on a tree made by this script): deterministically (from
--seed and the tree's current listing) changes P% of the files (default 1),
adds P% new files, deletes P% and renames P% (to a new name, half of them
into another directory). Files touched get the current time as mtime, like
a real edit. Run it with a different --seed each time you want a different
change set.

Everything depends only on the arguments: the same command on the same
input produces byte-identical trees. Python 3 standard library only.
"""

import argparse
import bisect
import math
import os
import random
import sys
import time

MAX_DEPTH = 6
MIN_ENTRIES = 20
MAX_ENTRIES = 50
# Fixed mtime for generated files: 2024-01-01 00:00:00 UTC.
BASE_MTIME = 1_704_067_200
EXTS = [".txt", ".log", ".json", ".c", ".rs", ".py", ".md", ".csv", ".bin", ".dat", ".jpg", ".html"]
WORDS = [
    "alpha", "beta", "gamma", "delta", "report", "notes", "data", "photo",
    "draft", "final", "backup", "config", "index", "module", "test", "build",
    "src", "docs", "assets", "cache", "lib", "util", "misc", "archive",
]


def make_names(rng, count, is_dir):
    """`count` distinct, deterministic names (a few with spaces or UTF-8)."""
    names = set()
    out = []
    while len(out) < count:
        w = rng.choice(WORDS)
        n = rng.randrange(100_000)
        r = rng.random()
        if is_dir:
            name = f"{w}_{n:05d}"
        elif r < 0.03:
            name = f"{w} copy {n}{rng.choice(EXTS)}"
        elif r < 0.05:
            name = f"{w}-é{n}{rng.choice(EXTS)}"
        else:
            name = f"{w}-{n:05d}{rng.choice(EXTS)}"
        if name not in names:
            names.add(name)
            out.append(name)
    return out


def plan_dirs(rng, n_dirs):
    """A random directory tree of n_dirs directories (root included), BFS
    filled so the depth stays <= MAX_DEPTH. Returns [(relpath, depth, nsub)]."""
    dirs = [["", 0, 0]]  # path, depth, number of subdirs
    queue = [0]
    qi = 0
    while len(dirs) < n_dirs and qi < len(queue):
        idx = queue[qi]
        qi += 1
        path, depth, _ = dirs[idx]
        if depth >= MAX_DEPTH:
            continue
        k = min(rng.randint(2, 7), n_dirs - len(dirs))
        names = make_names(rng, k, True)
        for name in names:
            child = os.path.join(path, name) if path else name
            dirs.append([child, depth + 1, 0])
            queue.append(len(dirs) - 1)
        dirs[idx][2] = k
    return dirs


def sizes_for(rng, n_files, total_bytes):
    """~1% empty files; a tail of large files (log-normal around 256 KiB,
    sigma 1.2, capped at 64 MiB) drawn until it holds ~10% of the bytes; the
    rest log-normal around 4 KiB (sigma 0.45), scaled to the remaining
    budget."""
    n_empty = max(1, n_files // 100)
    tail_budget = total_bytes * 0.10
    tail = []
    while sum(tail) < tail_budget and len(tail) < n_files // 20:
        t = min(int(rng.lognormvariate(math.log(256 << 10), 1.2)), 64 << 20)
        tail.append(min(t, max(1, int(tail_budget - sum(tail)))) if sum(tail) + t > 2 * tail_budget else t)
    n_body = max(0, n_files - n_empty - len(tail))
    body = [rng.lognormvariate(math.log(4096), 0.45) for _ in range(n_body)]
    body_budget = max(0, total_bytes - sum(tail))
    bs = body_budget / max(1.0, sum(body))
    body = [max(1, int(b * bs)) for b in body]
    sizes = ([0] * n_empty + tail + body)[:n_files]
    rng.shuffle(sizes)
    return sizes


class Content:
    """Deterministic incompressible bytes, cheap to produce in bulk."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pool = self.rng.randbytes(64 << 20)

    def make(self, size, tag):
        # A unique header followed by a random slice of the pool: unique
        # content per file, no duplicates by accident.
        head = f"{tag}\n".encode()
        if size <= len(head):
            return head[:size]
        rest = size - len(head)
        out = [head]
        while rest > 0:
            off = self.rng.randrange(len(self.pool) - 1)
            n = min(rest, len(self.pool) - off)
            out.append(self.pool[off:off + n])
            rest -= n
        return b"".join(out)


def write_file(path, data, mtime=None):
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def generate(args):
    out = os.path.abspath(args.out)
    if os.path.exists(out) and os.listdir(out):
        sys.exit(f"{out} exists and is not empty (use --mutate to change an existing tree)")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(f"trove-gen-{args.seed}")
    content = Content(f"trove-content-{args.seed}")
    n = args.files
    avg_entries = (MIN_ENTRIES + MAX_ENTRIES) / 2
    n_dirs = max(1, round(n / (avg_entries - 1)))
    dirs = plan_dirs(rng, n_dirs)
    # Files per directory: entries in [20, 50] minus its subdirectories,
    # then nudged until the sum is exactly n.
    per = [max(0, rng.randint(MIN_ENTRIES, MAX_ENTRIES) - d[2]) for d in dirs]
    while sum(per) < n:
        i = rng.randrange(len(per))
        per[i] += 1
    while sum(per) > n:
        i = rng.randrange(len(per))
        if per[i] > 0:
            per[i] -= 1
    sizes = sizes_for(rng, n, args.bytes)
    n_dup = n * 5 // 100
    dup_of = {}
    # Duplicates copy an earlier non-empty original (by generation index).
    cand = [i for i in range(n) if sizes[i] > 0]
    dup_idx = sorted(rng.sample(cand[len(cand) // 10:], n_dup))
    dup_set = set(dup_idx)
    originals = [i for i in cand if i not in dup_set]
    for i in dup_idx:
        # An original written earlier than i, so its bytes are at hand.
        src = originals[rng.randrange(max(1, bisect.bisect_left(originals, i)))]
        dup_of[i] = src
        sizes[i] = sizes[src]

    t0 = time.time()
    idx = 0
    data_of = {}
    need = set(dup_of.values())
    total = 0
    for (rel, depth, _), count in zip(dirs, per):
        d = os.path.join(out, rel) if rel else out
        os.makedirs(d, exist_ok=True)
        for name in make_names(rng, count, False):
            p = os.path.join(d, name)
            if idx in dup_of:
                data = data_of[dup_of[idx]]
            else:
                data = content.make(sizes[idx], f"trove-bench file {idx} seed {args.seed}")
                if idx in need:
                    data_of[idx] = data
            write_file(p, data, BASE_MTIME + idx)
            total += len(data)
            idx += 1
            if not args.quiet and idx % 10000 == 0:
                print(f"  {idx}/{n} files, {total / 1e6:.0f} MB, {time.time() - t0:.0f}s", file=sys.stderr)
    # Directory mtimes last (writing files changed them).
    for rel, _, _ in reversed(dirs):
        d = os.path.join(out, rel) if rel else out
        os.utime(d, (BASE_MTIME, BASE_MTIME))
    nz = sorted(s for s in sizes if s > 0)
    print(
        f"generated {out}: {idx} files ({sum(1 for s in sizes if s == 0)} empty, {len(dup_of)} duplicates), "
        f"{len(dirs)} dirs (max depth {max(d[1] for d in dirs)}), {total:,} bytes; "
        f"median size {nz[len(nz) // 2]}, p99 {nz[len(nz) * 99 // 100]}, max {nz[-1]}; "
        f"{time.time() - t0:.1f}s"
    )


def listing(root):
    files, dirs = [], []
    for dp, dn, fn in os.walk(root):
        dn.sort()
        rel = os.path.relpath(dp, root)
        rel = "" if rel == "." else rel
        dirs.append(rel)
        for f in sorted(fn):
            files.append(os.path.join(rel, f) if rel else f)
    files.sort()
    dirs.sort()
    return files, dirs


def mutate(args):
    root = os.path.abspath(args.out)
    if not os.path.isdir(root):
        sys.exit(f"{root} is not a directory")
    files, dirs = listing(root)
    rng = random.Random(f"trove-mutate-{args.seed}-{len(files)}")
    content = Content(f"trove-mutate-content-{args.seed}")
    k = max(1, round(len(files) * args.percent / 100))
    chosen = rng.sample(files, 3 * k)
    modify, delete, rename = chosen[:k], chosen[k:2 * k], chosen[2 * k:]
    stamp = f"mutation seed {args.seed}"
    changed_bytes = 0
    for i, rel in enumerate(sorted(modify)):
        p = os.path.join(root, rel)
        size = os.path.getsize(p)
        if i % 2 == 0 and size > 0:
            # In place, same size: overwrite a random range.
            with open(p, "r+b") as f:
                n = min(size, max(1, size // 10), 1 << 20)
                off = rng.randrange(size - n + 1)
                f.seek(off)
                f.write(content.make(n, f"{stamp} {rel}"))
            changed_bytes += n
        else:
            # Append.
            n = int(rng.lognormvariate(math.log(2048), 0.7)) + 1
            with open(p, "ab") as f:
                f.write(content.make(n, f"{stamp} {rel}"))
            changed_bytes += n
    for rel in sorted(delete):
        os.remove(os.path.join(root, rel))
    for i, rel in enumerate(sorted(rename)):
        src = os.path.join(root, rel)
        base = os.path.basename(rel)
        target_dir = os.path.dirname(src) if i % 2 == 0 else os.path.join(root, rng.choice(dirs))
        dest = os.path.join(target_dir, f"renamed-{args.seed}-{i}-{base}")
        os.rename(src, dest)
    added_bytes = 0
    for i in range(k):
        d = os.path.join(root, rng.choice(dirs))
        size = int(rng.lognormvariate(math.log(4096), 0.7))
        if i % 50 == 0:
            size = 0
        p = os.path.join(d, f"new-{args.seed}-{i:05d}{rng.choice(EXTS)}")
        write_file(p, content.make(size, f"{stamp} new {i}"))
        added_bytes += size
    print(
        f"mutated {root}: {k} modified ({changed_bytes:,} bytes written), {k} deleted, "
        f"{k} renamed, {k} added ({added_bytes:,} bytes)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="tree root")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--bytes", type=int, default=450_000_000, help="approximate total size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mutate", action="store_true", help="change an existing tree instead")
    ap.add_argument("--percent", type=float, default=1.0, help="--mutate: percent of files per change kind")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.mutate:
        mutate(args)
    else:
        if args.files < 1 or args.bytes < 0:
            sys.exit("--files must be >= 1 and --bytes >= 0")
        generate(args)


if __name__ == "__main__":
    main()
