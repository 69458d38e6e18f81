#!/usr/bin/env python3
"""bench/trainer/layout_ab.py — two builds of dring, interleaved run by run, on one problem under
each layout: the pass time, the slowest rank's compute and the lowest per-rank rate (flops /
compute_ms), medians over the rounds. For before/after comparisons on a VM whose speed drifts.

Usage: bench/trainer/layout_ab.py OLD_DRING NEW_DRING [--ranks 2] [--seq 65536] [--rounds 3]
                                  -- [dring run flags, e.g. --causal --segments ... --dilations ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    a = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        for rnd in range(a.rounds):
            for layout in ["contiguous", "zigzag", "striped"]:
                for side, binary in (("old", a.old), ("new", a.new)):
                    cmd = [os.path.join(ROOT, "launch", "dring-mpirun.sh"), str(a.ranks), "run", "--threads", "1",
                           "--repeat", "3", "--seq", str(a.seq), "--heads", "4", "--head-dim", "64",
                           "--layout", layout, "--json", out] + extra
                    subprocess.run(cmd, env=dict(os.environ, DRING_BIN=binary), capture_output=True, check=True)
                    with open(out) as f:
                        r = json.load(f)
                    compute = max(rk["compute_ms"] for rk in r["ranks"])
                    rate = min(rk["flops"] / rk["compute_ms"] / 1e6 for rk in r["ranks"])
                    rows.setdefault((layout, side), []).append((r["time_ms"], compute, rate))
                    load = open("/proc/loadavg").read().split()[0]
                    print(f"{rnd} {layout:10} {side} pass {r['time_ms']:.0f} ms  slowest compute {compute:.0f} ms  "
                          f"lowest rank {rate:.1f} GFLOP/s  flops max/min {r['work_balance']:.2f}  load {load}",
                          flush=True)
    print("medians: layout, build, pass ms, slowest compute ms, lowest rank GFLOP/s")
    for (layout, side), v in sorted(rows.items()):
        print(layout, side, " ".join(f"{statistics.median(x[i] for x in v):.1f}" for i in range(3)))


if __name__ == "__main__":
    main()
