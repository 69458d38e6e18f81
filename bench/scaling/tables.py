"""bench/scaling/tables.py — the sweep's points as scaling.csv, maxlen.csv and scaling.h5.

One row per measured point (a point that several modes share is one row; `modes` lists them).
Per-rank values are the maximum over ranks. Derived columns:
  bytes_per_token  peak_tracked_bytes / (batch * tokens of the largest shard, ceil(S/k)):
                   what one held token costs; flat in k when memory scales as O(S/k)
  reduction        1-rank peak_tracked_bytes / this row's, same config and length (empty
                   without a 1-rank row); rss_reduction the same for peak_rss_bytes
  ideal_pct        100 * reduction / world_size
  cores_used       min(world_size * threads, CPUs per node * nodes): the cores the ranks shared
  gflops_per_core  gflops_per_s / cores_used; flat when the work scales, on a fixed node (where
                   ranks share the same cores) as on a cluster (where each rank brings its own)
  ceiling_ratio    gflops_per_core / the one-thread sgemm rate measured before the sweep
  cpu_idle_pct     how idle the node's CPUs were just before the point (--idle-probe-s)
  other_cpu_pct    CPU time other processes took on the node while the point ran, in % of all
                   its CPUs (under mpirun only): a disturbed timing shows here
  attempts         runs of the point: with --redo-disturbed, disturbed runs are measured again
"""
import csv
import json
import os

COLUMNS = [
    "modes", "config", "world_size", "seq_len", "pairs", "status",
    "peak_tracked_bytes", "peak_rss_bytes", "bytes_per_token", "reduction", "ideal_pct", "rss_reduction",
    "time_ms", "tokens_per_s", "gflops_per_s", "gflops_per_core", "ceiling_ratio", "cores_used",
    "flops",
    "comm_sent_bytes", "comm_recv_bytes", "comm_wait_ms", "compute_ms", "check_max_rel_err", "check_passed",
    "inputs_bytes", "outputs_bytes", "exchange_bytes", "workspace_bytes",
    "batch", "heads", "kv_heads", "head_dim", "causal", "backend", "threads", "repeat",
    "cpu_idle_pct", "other_cpu_pct", "attempts", "wall_s", "launcher", "exit_code", "error", "report",
]
MAXLEN_COLUMNS = ["config", "world_size", "budget_metric", "budget_bytes", "granularity", "max_seq_len",
                  "peak_bytes", "first_over_seq_len", "first_over_peak_bytes", "capped", "growth", "ideal_growth_pct"]


def row_of(out, point, meta):
    import configs
    row = {c: "" for c in COLUMNS}
    row.update({"modes": ";".join(point["modes"]), "config": point["config"], "world_size": point["world_size"],
                "seq_len": point["seq_len"], "status": point["status"], "repeat": point["repeat"],
                "pairs": configs.pairs_text(point["segments"], point["dilations"], point["seq_len"]),
                "cpu_idle_pct": "" if point["cpu_idle_pct"] is None else round(point["cpu_idle_pct"], 1),
                "other_cpu_pct": "" if point.get("other_cpu_pct") is None else round(point["other_cpu_pct"], 1),
                "attempts": point.get("attempts", 1),
                "wall_s": round(point["wall_s"], 2), "launcher": point["launcher"],
                "exit_code": point["exit_code"], "error": point["error"], "report": point["report"]})
    if not point["report"]:
        return row, []
    with open(os.path.join(out, point["report"])) as f:
        j = json.load(f)
    ranks = j["ranks"]
    k = j["world_size"]
    largest_shard = -(-j["seq_len"] // k)
    peak = max(r["peak_tracked_bytes"] for r in ranks)
    row.update({
        "peak_tracked_bytes": peak,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in ranks),
        "bytes_per_token": round(peak / (j["batch"] * largest_shard), 2),
        "time_ms": j["time_ms"], "tokens_per_s": j["tokens_per_s"], "gflops_per_s": j.get("gflops_per_s", ""),
        "flops": j.get("flops", ""),
        "comm_sent_bytes": max(r["comm_sent_bytes"] for r in ranks),
        "comm_recv_bytes": max(r["comm_recv_bytes"] for r in ranks),
        "comm_wait_ms": max(r["comm_wait_ms"] for r in ranks),
        "compute_ms": max(r["compute_ms"] for r in ranks),
        "batch": j["batch"], "heads": j["heads"], "kv_heads": j["kv_heads"], "head_dim": j["head_dim"],
        "causal": int(bool(j["causal"])), "backend": j["backend"], "threads": j["threads"],
    })
    nodes = int(meta.get("slurm_nnodes") or 1)
    row["cores_used"] = min(k * j["threads"], int(meta.get("nproc") or 1) * nodes)
    if j.get("gflops_per_s"):
        row["gflops_per_core"] = round(j["gflops_per_s"] / row["cores_used"], 3)
        if meta.get("ceiling_gflops_per_core"):
            row["ceiling_ratio"] = round(row["gflops_per_core"] / meta["ceiling_gflops_per_core"], 3)
    for category in ("inputs", "outputs", "exchange", "workspace"):
        row[category + "_bytes"] = max(r.get("peak_tracked_by_category", {}).get(category, 0) for r in ranks)
    if "check" in j:
        row["check_max_rel_err"] = j["check"]["max_rel_err"]
        row["check_passed"] = int(bool(j["check"]["passed"]))
    return row, ranks


def add_reductions(rows):
    base = {(r["config"], r["seq_len"]): r for r in rows if r["world_size"] == 1 and r["peak_tracked_bytes"] != ""}
    for r in rows:
        b = base.get((r["config"], r["seq_len"]))
        if b is None or r["peak_tracked_bytes"] in ("", 0):
            continue
        r["reduction"] = round(b["peak_tracked_bytes"] / r["peak_tracked_bytes"], 4)
        r["ideal_pct"] = round(100.0 * r["reduction"] / r["world_size"], 2)
        r["rss_reduction"] = round(b["peak_rss_bytes"] / r["peak_rss_bytes"], 4)


def maxlen_rows(maxlen):
    rows = []
    base = {m["config"]: m["max_seq_len"] for m in maxlen if m["world_size"] == 1}
    for m in maxlen:
        row = {c: m.get(c, "") for c in MAXLEN_COLUMNS}
        row["capped"] = int(bool(m["capped"]))
        b = base.get(m["config"])
        if b and m["max_seq_len"]:
            row["growth"] = round(m["max_seq_len"] / b, 3)
            row["ideal_growth_pct"] = round(100.0 * row["growth"] / m["world_size"], 1)
        rows.append(row)
    return rows


def write_csv(path, columns, rows):
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)


def read_csv(path):
    """scaling.csv -> list of dicts with numbers as float/int where they parse."""
    def number(x):
        for cast in (int, float):
            try:
                return cast(x)
            except ValueError:
                pass
        return x
    with open(path, newline="") as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_h5(path, meta, rows, rank_rows, maxlen):
    import h5py
    import numpy as np

    def column(values):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
            kind = np.int64 if all(isinstance(v, int) for v in values) else np.float64
            return np.asarray(values, dtype=kind)
        return np.asarray([str(v) for v in values], dtype=h5py.string_dtype())

    def table(group, columns, records):
        for c in columns:
            values = [r[c] if r[c] != "" else float("nan") for r in records]
            if any(isinstance(v, str) for v in values):
                values = [str(r[c]) for r in records]
            group.create_dataset(c, data=column(values))

    with h5py.File(path + ".tmp", "w") as f:
        for key, value in meta.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        table(f.create_group("points"), COLUMNS, rows)
        table(f.create_group("ranks"), list(rank_rows[0]) if rank_rows else [], rank_rows)
        table(f.create_group("maxlen"), MAXLEN_COLUMNS, maxlen)
        reports = []
        for r in rows:
            if r["report"]:
                with open(os.path.join(os.path.dirname(path), r["report"])) as rf:
                    reports.append(rf.read())
            else:
                reports.append("")
        f.create_dataset("reports", data=np.asarray(reports, dtype=h5py.string_dtype()))
        f["reports"].attrs["about"] = "the dring run --json report of each row of /points, verbatim"
    os.replace(path + ".tmp", path)


def write(out, index):
    rows, rank_rows = [], []
    for i, point in enumerate(index["points"]):
        row, ranks = row_of(out, point, index["meta"])
        rows.append(row)
        for r in ranks:
            rank_rows.append({"point": i, "rank": r["rank"], "peak_tracked_bytes": r["peak_tracked_bytes"],
                              "peak_rss_bytes": r["peak_rss_bytes"], "comm_sent_bytes": r["comm_sent_bytes"],
                              "comm_recv_bytes": r["comm_recv_bytes"], "compute_ms": r["compute_ms"],
                              "comm_wait_ms": r["comm_wait_ms"]})
    rows.sort(key=lambda r: (r["config"], r["seq_len"], r["world_size"]))
    add_reductions(rows)
    maxlen = maxlen_rows(index["maxlen"])
    write_csv(os.path.join(out, "scaling.csv"), COLUMNS, rows)
    write_csv(os.path.join(out, "maxlen.csv"), MAXLEN_COLUMNS, maxlen)
    meta = dict(index["meta"])
    meta["columns_doc"] = __doc__
    write_h5(os.path.join(out, "scaling.h5"), meta, rows, rank_rows, maxlen)
    return rows


def print_summary(rows, maxlen):
    print("\nconfig      k        S   peak tracked/rank  reduction  of ideal    time ms     tokens/s  check")
    for r in rows:
        if r["peak_tracked_bytes"] == "":
            print(f"{r['config']:10s} {r['world_size']:2d} {r['seq_len']:8d}   {r['status']}: {r['error']}")
            continue
        red = f"{r['reduction']:9.2f}x {r['ideal_pct']:8.1f}%" if r["reduction"] != "" else f"{'-':>10s} {'-':>9s}"
        check = f"{r['check_max_rel_err']:.1e}" + ("" if r["check_passed"] else " FAILED")
        print(f"{r['config']:10s} {r['world_size']:2d} {r['seq_len']:8d} {r['peak_tracked_bytes'] / 2**20:14.2f} MiB "
              f"{red} {r['time_ms']:10.1f} {r['tokens_per_s']:12.0f}  {check}")
    for m in maxlen:
        print(f"maxlen {m['config']} k={m['world_size']}: {m['max_seq_len']} tokens within "
              f"{m['budget_bytes'] / 2**20:.0f} MiB/rank ({m['budget_metric']})")
