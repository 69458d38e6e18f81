#!/usr/bin/env python3
"""bench/scaling/report.py — report.md of a scaling sweep: provenance, the plots, the tables.

Reads RESULTS/points.json (provenance), scaling.csv, maxlen.csv and the PNGs plot.py left there.
Usage: bench/scaling/report.py RESULTS_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tables  # noqa: E402

MIB = 2.0**20
PLOTS = [
    ("memory_per_rank.png", "Peak memory per rank against the length (log-log), one line per world size"),
    ("reduction.png", "Per-rank memory reduction against the world size, with the ideal k-fold line"),
    ("throughput.png", "Strong scaling: throughput at fixed lengths"),
    ("weak_scaling.png", "Weak scaling: time, and work rate per core in use, at fixed tokens per rank"),
    ("maxlen.png", "Longest sequence within the per-rank memory budget"),
]


def fmt(value, spec):
    return "-" if value == "" else format(value, spec)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def point_rows(rows):
    out = []
    for r in rows:
        if r["peak_tracked_bytes"] == "":
            out.append([r["config"], r["seq_len"], r["world_size"], r["pairs"], f"**{r['status']}**: {r['error']}"]
                       + [""] * 12)
            continue
        check = fmt(r["check_max_rel_err"], ".1e") + ("" if r["check_passed"] == 1 else " **FAILED**")
        out.append([r["config"], r["seq_len"], r["world_size"], r["pairs"],
                    fmt(r["peak_tracked_bytes"] / MIB, ".2f"), fmt(r["peak_rss_bytes"] / MIB, ".1f"),
                    fmt(r["bytes_per_token"], ".0f"), fmt(r["reduction"], ".2f"), fmt(r["ideal_pct"], ".1f"),
                    fmt(r["rss_reduction"], ".2f"), fmt(r["time_ms"], ".1f"), fmt(r["tokens_per_s"], ".0f"),
                    fmt(r["gflops_per_core"], ".1f"), fmt(r["ceiling_ratio"], ".2f"),
                    fmt(r["comm_sent_bytes"] / MIB, ".2f"), fmt(r["comm_wait_ms"], ".2f"), check])
    return out


HEADER = ["config", "S", "k", "pairs (w,r)", "tracked MiB/rank", "RSS MiB/rank", "bytes/token", "reduction",
          "% of ideal", "RSS reduction", "time ms", "tokens/s", "GFLOP/s per core",
          "of sgemm", "sent MiB/rank", "comm wait ms", "check rel err"]


def quietness(rows):
    others = [r["other_cpu_pct"] for r in rows if r["other_cpu_pct"] != ""]
    idle = [r["cpu_idle_pct"] for r in rows if r["cpu_idle_pct"] != ""]
    parts = []
    if idle:
        parts.append(f"idle before a point: at least {min(idle):.0f}%")
    if others:
        noisy = [r for r in rows if r["other_cpu_pct"] != "" and r["other_cpu_pct"] > 5]
        parts.append(f"others during a point: at most {max(others):.1f}% of the CPUs"
                     + (f" ({len(noisy)} point(s) above 5%: their times are disturbed)" if noisy else ""))
    return "; ".join(parts) + "." if parts else "not measured."


def write(out):
    with open(os.path.join(out, "points.json")) as f:
        meta = json.load(f)["meta"]
    rows = tables.read_csv(os.path.join(out, "scaling.csv"))
    maxlen_path = os.path.join(out, "maxlen.csv")
    maxlen = tables.read_csv(maxlen_path) if os.path.exists(maxlen_path) else []
    p = meta["problem"]
    text = [
        "# dring scaling sweep", "",
        f"- Command: `{meta['command']}`",
        f"- Date (UTC): {meta['started_utc']} to {meta['finished_utc']}",
        f"- Machine: {meta['host']}, {meta['cpu'] or 'unknown CPU'}, {meta['nproc']} CPUs"
        + (f"; SLURM job {meta['slurm_job_id']} on {meta['slurm_nodes']}" if meta.get("slurm_job_id") else ""),
        f"- dring commit {meta['git_commit']}{' (with local changes)' if meta['git_dirty'] else ''}, "
        f"backend {meta['backend']}, launcher {meta.get('launcher', '')}",
        f"- Problem: batch {p['batch']}, {p['heads']} heads ({p['kv_heads']} kv), head dim {p['head_dim']}, "
        f"{'causal' if p['causal'] else 'not causal'}, fp32{', extra flags ' + p['dring_args'] if p['dring_args'] else ''}",
        "- Configurations: " + "; ".join(meta["configs"].values()),
        f"- Every point: `dring run --check --repeat {meta['repeat']}` (maxlen search points: fewer repeats); "
        "time is the median pass of the slowest rank; memory columns are the maximum over ranks.",
        ("- Ceiling: " + f"{meta['ceiling_gflops_per_core']:.1f} GFLOP/s, " + meta["ceiling_source"]
         + "; `of sgemm` = GFLOP/s per core / ceiling." if meta.get("ceiling_gflops_per_core")
         else "- Ceiling: not measured (GPU sweep, --no-ceiling, or no dring_kernel_bench)."),
        "- `reduction` = 1-rank tracked peak / k-rank tracked peak at the same config and length; "
        "`% of ideal` = reduction / k. `bytes/token` = tracked peak / tokens of the largest shard.",
        "- scaling.csv: `cpu_idle_pct` is how idle the node's CPUs were just before each point, "
        "`other_cpu_pct` how much CPU other processes took while it ran (mpirun only); "
        + quietness(rows), "",
    ]
    for name, caption in PLOTS:
        if os.path.exists(os.path.join(out, name)):
            text += [f"![{caption}]({name})", "", f"*{caption}.*", ""]
    for mode, title in (("strong", "Strong scaling (fixed total tokens)"), ("weak", "Weak scaling (fixed tokens per rank)")):
        selected = [r for r in rows if mode in str(r["modes"]).split(";")]
        if selected:
            text += [f"## {title}", "", table(HEADER, point_rows(selected)), ""]
    if maxlen:
        text += [f"## Longest sequence within {maxlen[0]['budget_bytes'] / MIB:.0f} MiB per rank "
                 f"({maxlen[0]['budget_metric']} peak)", "",
                 "Search over multiples of the granularity; both the longest length and the next one tried above "
                 "it are real runs (every search point is in scaling.csv with mode `maxlen`).", "",
                 table(["config", "k", "longest S", "its peak MiB/rank", "first S over", "its peak MiB/rank",
                        "growth vs 1 rank", "% of ideal k x"],
                       [[m["config"], m["world_size"], m["max_seq_len"], fmt(m["peak_bytes"] / MIB, ".2f"),
                         m["first_over_seq_len"] or "(cap)", fmt(m["first_over_peak_bytes"] / MIB, ".2f")
                         if m["first_over_peak_bytes"] else "-", fmt(m["growth"], ".2f"),
                         fmt(m["ideal_growth_pct"], ".1f")] for m in maxlen]), ""]
    breakdown = [r for r in rows if r["peak_tracked_bytes"] != ""]
    if breakdown:
        text += ["## Where the tracked bytes go (max over ranks, MiB)", "",
                 table(["config", "S", "k", "inputs", "outputs", "exchange", "workspace", "threads/rank"],
                       [[r["config"], r["seq_len"], r["world_size"], fmt(r["inputs_bytes"] / MIB, ".2f"),
                         fmt(r["outputs_bytes"] / MIB, ".2f"), fmt(r["exchange_bytes"] / MIB, ".2f"),
                         fmt(r["workspace_bytes"] / MIB, ".2f"), r["threads"]] for r in breakdown]), ""]
    failed = [r for r in rows if r["status"] != "ok" and "maxlen" not in str(r["modes"]).split(";")]
    if failed:
        text += ["## Failed points", ""] + [f"- {r['config']} k={r['world_size']} S={r['seq_len']}: "
                                            f"{r['status']} (exit {r['exit_code']}): {r['error']}" for r in failed] + [""]
    path = os.path.join(out, "report.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(text))
    os.replace(path + ".tmp", path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: bench/scaling/report.py RESULTS_DIR", file=sys.stderr)
        sys.exit(2)
    print(write(sys.argv[1]))
