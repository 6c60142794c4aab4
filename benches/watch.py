#!/usr/bin/env python3
"""Watch-mode measurements on one tree, in one run.

    benches/watch.py SRC DEST [--debounce MS] [--changes N] [--idle SECONDS]

SRC must exist (make one with benches/gen_tree.py); DEST is created by a
first `trove backup` when it is not a repository yet. Reports:

* the CPU seconds (user + system) of a no-change `trove backup` run of the
  whole tree, the anchor;
* for N single-file changes: the latency from the change to the end of the
  run that recorded it, minus the debounce window, and the CPU seconds the
  watch process used for that run (from /proc/PID/stat);
* the CPU the idle watch process used over --idle seconds.

Uses $TROVE, else $CARGO_TARGET_DIR/release/trove, else target/release/trove
(build it first).
"""
import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TROVE = os.environ.get("TROVE") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "trove"
)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def child_cpu(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--debounce", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--idle", type=float, default=60.0)
    a = ap.parse_args()
    if not os.path.isdir(os.path.join(a.dest, ".trove")):
        subprocess.run([TROVE, "backup", a.src, a.dest, "-q"], check=True)
    runs = [child_cpu([TROVE, "backup", a.src, a.dest, "-q"]) for _ in range(3)]
    anchor_cpu = sorted(c for c, _ in runs)[1]
    anchor_wall = sorted(w for _, w in runs)[1]
    p = subprocess.Popen(
        [TROVE, "watch", a.src, a.dest, "--debounce", str(a.debounce), "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()

    def reader():
        for line in p.stdout:
            lines.put((time.monotonic(), json.loads(line)))

    threading.Thread(target=reader, daemon=True).start()
    try:
        lines.get(timeout=600)  # the initial run
        time.sleep(1.0)
        files = []
        for root, _, names in os.walk(a.src):
            files += [os.path.join(root, n) for n in names]
            if len(files) > 1000:
                break
        lat, cpus = [], []
        for i in range(a.changes):
            path = files[(i * 97) % len(files)]
            c0 = cpu_of(p.pid)
            t0 = time.monotonic()
            with open(path, "ab") as f:
                f.write(b"watch benchmark change %d\n" % i)
            while True:
                t1, run = lines.get(timeout=60)
                if run.get("report", {}).get("changed"):
                    break
            c1 = cpu_of(p.pid)
            lat.append(t1 - t0 - a.debounce / 1000)
            cpus.append(c1 - c0)
            time.sleep(0.5)
        c0 = cpu_of(p.pid)
        time.sleep(a.idle)
        idle = cpu_of(p.pid) - c0
    finally:
        p.terminate()
        p.wait(timeout=60)
    lat.sort()
    cpus.sort()
    med = lambda v: v[len(v) // 2]
    print(f"tree: {sum(len(f) for _, _, f in os.walk(a.src))} files")
    print(f"no-change `trove backup` of the whole tree: {anchor_cpu:.3f} CPU s ({anchor_wall:.3f} s wall), median of 3")
    print(f"single-file change -> snapshot, latency beyond the {a.debounce} ms debounce: median {med(lat) * 1000:.0f} ms (all: {', '.join(f'{x * 1000:.0f}' for x in lat)})")
    print(f"CPU per single-change run: median {med(cpus):.3f} s = {med(cpus) / anchor_cpu * 100:.1f}% of the no-change full run")
    # /proc/PID/stat counts in clock ticks (10 ms here): one run is a tick
    # or two, so the mean over every run says more than the median.
    mean = sum(cpus) / len(cpus)
    print(f"  mean {mean:.4f} s = {mean / anchor_cpu * 100:.1f}% (all, in {1000 / TICK:.0f} ms ticks: {', '.join(f'{x:.2f}' for x in cpus)})")
    print(f"idle CPU over {a.idle:.0f} s: {idle:.3f} s ({idle / a.idle * 100:.3f}%)")
    print(f"watch exit code after SIGTERM: {p.returncode}")


if __name__ == "__main__":
    sys.exit(main())
