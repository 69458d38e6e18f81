#!/usr/bin/env python3
"""bench/scaling/plot.py — PNG plots of a scaling sweep (matplotlib, Agg), next to its results.

Reads RESULTS/scaling.csv and RESULTS/maxlen.csv (bench/scaling/tables.py) and writes:
  memory_per_rank.png  peak tracked bytes per rank (max over ranks) against the length, one line
                       per world size, log-log; dashed: process peak RSS
  reduction.png        1-rank peak over k-rank peak against k, per config and length, with the
                       ideal k-fold line
  throughput.png       tokens/s against k for each fixed length (strong scaling)
  weak_scaling.png     time, and GFLOP/s per core in use, against k at fixed tokens per rank
  maxlen.png           longest length within the per-rank budget against k, with k x the 1-rank length
Usage: bench/scaling/plot.py RESULTS_DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tables  # noqa: E402

MIB = 2.0**20


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def ok_rows(rows, mode=None):
    return [r for r in rows if r["peak_tracked_bytes"] != "" and (mode is None or mode in str(r["modes"]).split(";"))]


def by(rows, *keys):
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return dict(sorted(groups.items()))


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    return path


def memory_plot(plt, rows, out):
    configs = sorted({r["config"] for r in rows})
    if not configs:
        return None
    fig, axes = plt.subplots(1, len(configs), figsize=(5.2 * len(configs), 4.2), squeeze=False)
    for ax, config in zip(axes[0], configs):
        for (k,), group in by([r for r in rows if r["config"] == config], "world_size").items():
            group.sort(key=lambda r: r["seq_len"])
            x = [r["seq_len"] for r in group]
            line, = ax.plot(x, [r["peak_tracked_bytes"] / MIB for r in group], "o-", label=f"k={k} tracked")
            ax.plot(x, [r["peak_rss_bytes"] / MIB for r in group], "--", color=line.get_color(), alpha=0.5,
                    label=f"k={k} RSS")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("peak memory per rank (MiB, max over ranks)")
        ax.set_title(f"{config}: memory per rank")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return save(fig, out, "memory_per_rank.png")


def reduction_plot(plt, rows, out):
    rows = [r for r in rows if r["reduction"] != ""]
    if not rows or max(r["world_size"] for r in rows) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ks = sorted({r["world_size"] for r in rows})
    ax.plot(ks, ks, "k:", label="ideal (k x)")
    for (config, seq), group in by(rows, "config", "seq_len").items():
        group.sort(key=lambda r: r["world_size"])
        ax.plot([r["world_size"] for r in group], [r["reduction"] for r in group], "o-", label=f"{config} S={seq}")
    ax.set_xlabel("world size k (ranks)")
    ax.set_ylabel("reduction: 1-rank peak / k-rank peak (tracked)")
    ax.set_xticks(ks)
    ax.set_title("per-rank memory reduction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out, "reduction.png")


def throughput_plot(plt, rows, out):
    rows = ok_rows(rows, "strong")
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (config, seq), group in by(rows, "config", "seq_len").items():
        group.sort(key=lambda r: r["world_size"])
        ax.plot([r["world_size"] for r in group], [r["tokens_per_s"] for r in group], "o-", label=f"{config} S={seq}")
    ax.set_xlabel("world size k (ranks)")
    ax.set_ylabel("tokens/s (median pass, slowest rank)")
    ax.set_yscale("log")
    ax.set_xticks(sorted({r["world_size"] for r in rows}))
    ax.set_title("strong scaling: throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out, "throughput.png")


def weak_plot(plt, rows, out):
    rows = ok_rows(rows, "weak")
    if not rows:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for r in rows:
        r["tokens_per_rank"] = r["seq_len"] // r["world_size"]
    for (config, per_rank), group in by(rows, "config", "tokens_per_rank").items():
        group.sort(key=lambda r: r["world_size"])
        k = [r["world_size"] for r in group]
        label = f"{config}, {per_rank} tokens/rank"
        left.plot(k, [r["time_ms"] for r in group], "o-", label=label)
        right.plot(k, [r["gflops_per_core"] if r["gflops_per_core"] != "" else float("nan") for r in group],
                   "o-", label=label)
    for ax in (left, right):
        ax.set_xlabel("world size k (ranks)")
        ax.set_xticks(sorted({r["world_size"] for r in rows}))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("time per pass (ms, slowest rank)")
    left.set_title("weak scaling: time")
    right.set_ylabel("GFLOP/s per core in use")
    right.set_title("weak scaling: work rate per core (flat = scales)")
    return save(fig, out, "weak_scaling.png")


def maxlen_plot(plt, maxlen, out):
    maxlen = [m for m in maxlen if m["max_seq_len"] not in ("", 0)]
    if not maxlen:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (config,), group in by(maxlen, "config").items():
        group.sort(key=lambda m: m["world_size"])
        k = [m["world_size"] for m in group]
        base = [m["max_seq_len"] for m in group if m["world_size"] == 1]
        if base:
            ax.plot(k, [base[0] * x for x in k], "-", color="0.8", linewidth=5, label=f"{config}: k x 1-rank length")
        ax.plot(k, [m["max_seq_len"] for m in group], "o-", label=f"{config}")
    budget = maxlen[0]["budget_bytes"] / MIB
    ax.set_xlabel("world size k (ranks)")
    ax.set_ylabel("longest sequence (tokens)")
    ax.set_xticks(sorted({m["world_size"] for m in maxlen}))
    ax.set_title(f"longest sequence within {budget:.0f} MiB/rank ({maxlen[0]['budget_metric']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out, "maxlen.png")


def plot_all(out):
    plt = pyplot()
    rows = tables.read_csv(os.path.join(out, "scaling.csv"))
    maxlen_path = os.path.join(out, "maxlen.csv")
    maxlen = tables.read_csv(maxlen_path) if os.path.exists(maxlen_path) else []
    made = [memory_plot(plt, ok_rows(rows), out), reduction_plot(plt, rows, out), throughput_plot(plt, rows, out),
            weak_plot(plt, rows, out), maxlen_plot(plt, maxlen, out)]
    plt.close("all")
    return [p for p in made if p]


def main(argv):
    if len(argv) != 1 or not os.path.isfile(os.path.join(argv[0], "scaling.csv")):
        print("usage: bench/scaling/plot.py RESULTS_DIR   (a folder with scaling.csv)", file=sys.stderr)
        return 2
    for path in plot_all(argv[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
