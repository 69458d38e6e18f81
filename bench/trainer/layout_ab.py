#!/usr/bin/env python3
"""bench/trainer/layout_ab.py — two builds of dring, interleaved run by run, on one problem under
each layout: the pass time, the slowest rank's compute (wall, and CPU time: its time on a core of
its own, layouts.py) and the lowest per-rank rate (flops / compute CPU time; wall time for builds
without it), medians over the rounds. For before/after comparisons on a VM whose speed drifts.

Usage: bench/trainer/layout_ab.py OLD_DRING NEW_DRING [--ranks 2] [--seq 65536] [--rounds 3]
                                  [--layouts contiguous,zigzag,striped] [--core-share]
                                  -- [dring run flags, e.g. --causal --segments ... --dilations ...]
--core-share: each rank held to min(1, cores/ranks) of a core (layouts.py, core-share.sh).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layouts import core_share_env  # noqa: E402


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--seq", type=int, default=65536)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layouts", default="contiguous,zigzag,striped")
    p.add_argument("--core-share", action="store_true")
    a = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        for rnd in range(a.rounds):
            for layout in a.layouts.split(","):
                for side, binary in (("old", a.old), ("new", a.new)):
                    cmd = [os.path.join(ROOT, "launch", "dring-mpirun.sh"), str(a.ranks), "run", "--threads", "1",
                           "--repeat", "3", "--seq", str(a.seq), "--heads", "4", "--head-dim", "64",
                           "--layout", layout, "--json", out] + extra
                    env = dict(os.environ, DRING_BIN=binary)
                    if a.core_share:
                        env = core_share_env(env, a.ranks)
                    subprocess.run(cmd, env=env, capture_output=True, check=True)
                    with open(out) as f:
                        r = json.load(f)
                    compute = max(rk["compute_ms"] for rk in r["ranks"])
                    # Builds before compute_cpu_ms (c077445) report wall times only: nan, and rates by wall.
                    cpu = max(rk.get("compute_cpu_ms", math.nan) for rk in r["ranks"])
                    rate = min(rk["flops"] / rk.get("compute_cpu_ms", rk["compute_ms"]) / 1e6 for rk in r["ranks"])
                    waits = sum(rk["comm_wait_ms"] for rk in r["ranks"])
                    rows.setdefault((layout, side), []).append((r["time_ms"], compute, cpu, rate, waits))
                    load = open("/proc/loadavg").read().split()[0]
                    print(f"{rnd} {layout:10} {side} pass {r['time_ms']:.0f} ms  slowest compute {compute:.0f} ms (cpu {cpu:.0f})  "
                          f"lowest rank {rate:.1f} GFLOP/s  waits {waits:.0f} ms  flops max/min {r['work_balance']:.2f}  "
                          f"load {load}",
                          flush=True)
    print("medians: layout, build, pass ms, slowest compute ms, slowest compute CPU ms, lowest rank GFLOP/s, "
          "waits summed over ranks ms")
    for (layout, side), v in sorted(rows.items()):
        print(layout, side, " ".join(f"{statistics.median(x[i] for x in v):.1f}" for i in range(5)))


if __name__ == "__main__":
    main()
