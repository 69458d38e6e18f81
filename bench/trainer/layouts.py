#!/usr/bin/env python3
"""bench/trainer/layouts.py — what the trainer features cost and save, measured with `dring run`.

Three tables, each from real runs in one invocation (docs/benchmarks.md, "Trainer features"):
  balance   causal dense and LongNet-style attention at k = 2, 3, 4 ranks under each layout: every
            rank's attention flops (counted by the executor from the masks it ran), max/min over
            ranks, the slowest rank's compute time (wall, and CPU time: what it takes on a core of
            its own) and the wall time of the pass.
  window    dense attention with a sliding window W much smaller than a shard: rows each rank
            received per kv head (expected: W-1 from each neighbour it reads, causal: the left one),
            compute, communication wait and total time against the window-free run.
  documents packed documents: rows received against the same problem without documents.
Pass times are medians of --repeat passes, per-rank times those of the last pass. With more ranks
than cores, ranks share cores and wall times say little about balance (each idle rank's core goes
to a busy one); flops balance is exact at any k, and the ranks' compute CPU time (`compute_cpu_ms`,
one thread per rank) is the time each rank's compute takes on a core of its own.
--core-share holds each of k ranks to min(1, cores / k) of one core (bench/trainer/core-share.sh,
a CFS quota per rank; root only), so that k ranks behave like k equal cores and the pass time
shows the balance even with more ranks than cores.

Usage: bench/trainer/layouts.py [--seq N] [--repeat N] [--only balance,window,documents]
                                [--configs dense,longnet] [--backward] [--core-share] [--json OUT.json]
--backward: the balance table's runs add the backward pass, and its rows the backward's
per-rank flops and times beside the forward's.
Needs build/bin/dring (launch/build.sh).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "launch", "dring-mpirun.sh")


CORE_SHARE = False  # --core-share


def core_share_env(env, ranks):
    """env with launch/dring-mpirun.sh's program wrapped in core-share.sh: min(1, cores/ranks) each."""
    return dict(env, CORE_SHARE=str(min(1.0, os.cpu_count() / ranks)),
                CORE_SHARE_BIN=env.get("DRING_BIN", os.path.join(ROOT, "build", "bin", "dring")),
                DRING_BIN=os.path.join(ROOT, "bench", "trainer", "core-share.sh"))


def run(ranks, args, repeat):
    """One `dring run` on `ranks` ranks; returns its JSON report."""
    env = core_share_env(os.environ, ranks) if CORE_SHARE else dict(os.environ)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [LAUNCH, str(ranks), "run", "--threads", "1", "--repeat", str(repeat), "--json", out.name] + args
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"layouts: {' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        with open(out.name) as f:
            return json.load(f)


def rank_values(report, key):
    return [r[key] for r in report["ranks"]]


def balance(seq, repeat, heads, head_dim, which, backward=False):
    rows = []
    configs = {"dense": ("dense causal", []),
               "longnet": ("LongNet causal", ["--segments", f"{seq // 16},{seq // 4},{seq}", "--dilations", "1,2,4"])}
    for name, flags in (configs[c] for c in which):
        for k in (2, 3, 4):
            for layout in ("contiguous", "zigzag", "striped"):
                rep = run(k, ["--seq", str(seq), "--heads", str(heads), "--head-dim", str(head_dim), "--causal",
                              "--layout", layout] + flags + (["--backward"] if backward else []), repeat)
                flops = rank_values(rep, "flops")
                compute = rank_values(rep, "compute_ms")
                cpu = rank_values(rep, "compute_cpu_ms")
                rows.append({"config": name, "ranks": k, "layout": layout, "flops": flops,
                             "flops_max_over_min": max(flops) / min(flops), "compute_ms": compute,
                             "slowest_compute_ms": max(compute), "compute_cpu_ms": cpu,
                             "slowest_compute_cpu_ms": max(cpu), "time_ms": rep["time_ms"],
                             "core_share": min(1.0, os.cpu_count() / k) if CORE_SHARE else None})
                print(f"{name:15s} k={k} {layout:10s} flops max/min {max(flops) / min(flops):5.2f}  "
                      f"slowest compute {max(compute):8.1f} ms (cpu {max(cpu):8.1f} ms, "
                      f"ranks {' '.join(f'{c:.0f}' for c in cpu)})  time {rep['time_ms']:8.1f} ms", flush=True)
                if backward:
                    bwd = rep["backward"]
                    b_flops = rank_values(bwd, "flops")
                    b_compute = rank_values(bwd, "compute_ms")
                    b_cpu = rank_values(bwd, "compute_cpu_ms")
                    rows[-1]["backward"] = {"flops": b_flops, "flops_max_over_min": max(b_flops) / min(b_flops),
                                            "compute_ms": b_compute, "slowest_compute_ms": max(b_compute),
                                            "compute_cpu_ms": b_cpu, "slowest_compute_cpu_ms": max(b_cpu),
                                            "time_ms": bwd["time_ms"]}
                    print(f"{'  backward':15s} k={k} {layout:10s} flops max/min {max(b_flops) / min(b_flops):5.2f}  "
                          f"slowest compute {max(b_compute):8.1f} ms (cpu {max(b_cpu):8.1f} ms, "
                          f"ranks {' '.join(f'{c:.0f}' for c in b_cpu)})  time {bwd['time_ms']:8.1f} ms", flush=True)
    return rows


def window(seq, repeat, heads, head_dim, w):
    rows = []
    k = 2
    for causal in (False, True):
        base = ["--seq", str(seq), "--heads", str(heads), "--kv-heads", "1", "--head-dim", str(head_dim)]
        if causal:
            base.append("--causal")
        for flags in ([], ["--window", str(w)]):
            rep = run(k, base + flags, repeat)
            recv_rows = [b / (2 * head_dim * 4) for b in rank_values(rep, "comm_recv_bytes")]
            row = {"causal": causal, "window": w if flags else None, "ranks": k, "recv_rows_per_kv_head": recv_rows,
                   "compute_ms": rank_values(rep, "compute_ms"), "wait_ms": rank_values(rep, "comm_wait_ms"),
                   "time_ms": rep["time_ms"]}
            rows.append(row)
            print(f"window {str(row['window']):6s} causal {causal!s:5s} recv rows/kv head {recv_rows}  "
                  f"compute {max(row['compute_ms']):8.1f} ms  wait {max(row['wait_ms']):6.2f} ms  "
                  f"time {rep['time_ms']:8.1f} ms", flush=True)
    return rows


def documents(seq, repeat, heads, head_dim):
    rows = []
    k = 4
    lens = [seq // 8] * 6 + [seq - 6 * (seq // 8)]  # six short documents and one long one
    for doc_flags in ([], ["--doc-lens", ",".join(map(str, lens))]):
        rep = run(k, ["--seq", str(seq), "--heads", str(heads), "--head-dim", str(head_dim), "--causal"] + doc_flags,
                  repeat)
        recv_rows = [b / (2 * head_dim * 4 * heads) for b in rank_values(rep, "comm_recv_bytes")]
        rows.append({"documents": lens if doc_flags else None, "ranks": k, "recv_rows_per_kv_head": recv_rows,
                     "flops": rank_values(rep, "flops"), "time_ms": rep["time_ms"]})
        print(f"documents {'yes' if doc_flags else 'no ':3s} recv rows/kv head {recv_rows}  time {rep['time_ms']:8.1f} ms",
              flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=16384)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="balance,window,documents", help="tables to run, comma-separated")
    p.add_argument("--configs", default="dense,longnet", help="balance table: dense, longnet or both")
    p.add_argument("--backward", action="store_true", help="balance table: add the backward pass")
    p.add_argument("--core-share", action="store_true", help="hold each rank to min(1, cores/k) of a core")
    p.add_argument("--json", help="write every row here")
    a = p.parse_args()
    global CORE_SHARE
    CORE_SHARE = a.core_share
    only = a.only.split(",")
    result = {"seq": a.seq, "heads": a.heads, "head_dim": a.head_dim, "repeat": a.repeat,
              "core_share": a.core_share, "backward": a.backward, "cpu": os.cpu_count()}
    if "balance" in only:
        result["balance"] = balance(a.seq, a.repeat, a.heads, a.head_dim, a.configs.split(","), a.backward)
    if "window" in only:
        result["window"] = window(a.seq, a.repeat, a.heads, a.head_dim, a.window)
    if "documents" in only:
        result["documents"] = documents(a.seq, a.repeat, a.heads, a.head_dim)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
