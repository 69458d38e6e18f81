#!/usr/bin/env python3
"""tests/slurm/check_results.py — holds a scaling results folder to what launch/scaling.sh promises.

Checks: scaling.csv has the issue's columns and a row per (config, length, world size) asked for,
every point ran and passed --check; `reduction` is there for every k-rank row whose 1-rank row
is, equals the ratio of the peaks, and grows with k; scaling.h5 holds the same rows and the raw
reports; the PNGs are PNG files and report.md embeds them; maxlen.csv has a length per world size.
Usage: check_results.py DIR --ranks 1,2,4 [--min-reduction-pct P] [--maxlen]
Prints one line per failed check; exit status 1 if any failed.
"""
import argparse
import csv
import os
import sys

REQUIRED = ["config", "world_size", "seq_len", "peak_tracked_bytes", "peak_rss_bytes", "bytes_per_token",
            "reduction", "ideal_pct", "time_ms", "tokens_per_s", "comm_sent_bytes", "comm_wait_ms",
            "check_max_rel_err"]
PLOTS = ["memory_per_rank.png", "reduction.png", "throughput.png", "weak_scaling.png"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--min-reduction-pct", type=float, default=0.0,
                   help="smallest allowed reduction / k, in percent, at the largest world size")
    p.add_argument("--maxlen", action="store_true", help="expect maxlen.csv rows and maxlen.png")
    a = p.parse_args()
    ranks = [int(x) for x in a.ranks.split(",")]
    problems = []

    def expect(ok, message):
        if not ok:
            problems.append(message)
        return ok

    csv_path = os.path.join(a.dir, "scaling.csv")
    if not expect(os.path.isfile(csv_path), f"{csv_path} missing"):
        return report(problems)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    for c in REQUIRED:
        expect(c in columns, f"scaling.csv: column {c} missing")
    expect(len(rows) > 0, "scaling.csv: no rows")
    for r in rows:
        where = f"scaling.csv: {r['config']} k={r['world_size']} S={r['seq_len']}"
        if "maxlen" in r["modes"].split(";") and r["status"] != "ok":
            continue  # a maxlen search point may fail by design (over the budget)
        expect(r["status"] == "ok", f"{where}: status {r['status']} ({r['error']})")
        expect(r["check_passed"] == "1", f"{where}: --check did not pass (max_rel_err {r['check_max_rel_err']})")
        expect(float(r["check_max_rel_err"] or "inf") < 1e-4, f"{where}: check_max_rel_err too large")
        expect(float(r["time_ms"] or 0) > 0 and float(r["tokens_per_s"] or 0) > 0, f"{where}: no time")
        expect(int(r["peak_tracked_bytes"] or 0) > 0, f"{where}: no peak_tracked_bytes")
        expect(int(r["peak_rss_bytes"] or 0) >= int(r["peak_tracked_bytes"] or 0), f"{where}: RSS below tracked bytes")
        if int(r["world_size"]) > 1:
            expect(int(r["comm_sent_bytes"] or 0) > 0, f"{where}: no bytes sent on {r['world_size']} ranks")
    base = {(r["config"], r["seq_len"]): r for r in rows if r["world_size"] == "1" and r["status"] == "ok"}
    strong = {}
    for r in rows:
        b = base.get((r["config"], r["seq_len"]))
        if b is None or r["status"] != "ok":
            continue
        where = f"scaling.csv: {r['config']} k={r['world_size']} S={r['seq_len']}"
        if not expect(r["reduction"] != "", f"{where}: reduction empty although a 1-rank row exists"):
            continue
        want = int(b["peak_tracked_bytes"]) / int(r["peak_tracked_bytes"])
        expect(abs(float(r["reduction"]) - want) < 1e-3 * want, f"{where}: reduction {r['reduction']} != {want:.4f}")
        expect(abs(float(r["ideal_pct"]) - 100 * want / int(r["world_size"])) < 0.1, f"{where}: ideal_pct wrong")
        if "strong" in r["modes"].split(";"):
            strong.setdefault((r["config"], r["seq_len"]), {})[int(r["world_size"])] = float(r["reduction"])
    expect(len(strong) > 0, "scaling.csv: no strong-scaling rows with a reduction")
    for (config, seq), by_k in strong.items():
        expect(sorted(by_k) == ranks, f"strong {config} S={seq}: world sizes {sorted(by_k)}, expected {ranks}")
        values = [by_k[k] for k in sorted(by_k)]
        expect(all(x < y for x, y in zip(values, values[1:])),
               f"strong {config} S={seq}: reduction does not grow with k: {values}")
        k = max(by_k)
        expect(100 * by_k[k] / k >= a.min_reduction_pct,
               f"strong {config} S={seq}: reduction {by_k[k]:.2f} at k={k} is below {a.min_reduction_pct}% of {k}")

    try:
        import h5py
        with h5py.File(os.path.join(a.dir, "scaling.h5"), "r") as f:
            expect(f["points/seq_len"].shape[0] == len(rows), "scaling.h5: /points has another row count")
            expect(f["reports"].shape[0] == len(rows), "scaling.h5: /reports has another row count")
            expect("command" in f.attrs and "git_commit" in f.attrs, "scaling.h5: provenance attributes missing")
            expect(f["ranks/rank"].shape[0] >= len(rows), "scaling.h5: /ranks has too few rows")
    except (OSError, KeyError) as e:
        expect(False, f"scaling.h5: {e}")

    report_path = os.path.join(a.dir, "report.md")
    text = open(report_path).read() if os.path.isfile(report_path) else ""
    expect(bool(text), "report.md missing or empty")
    for name in PLOTS + (["maxlen.png"] if a.maxlen else []):
        path = os.path.join(a.dir, name)
        ok = os.path.isfile(path) and os.path.getsize(path) > 2000
        if expect(ok, f"{name} missing or too small"):
            with open(path, "rb") as f:
                expect(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG file")
        expect(f"]({name})" in text, f"report.md does not embed {name}")
    if a.maxlen:
        with open(os.path.join(a.dir, "maxlen.csv"), newline="") as f:
            found = list(csv.DictReader(f))
        got = sorted(int(m["world_size"]) for m in found)
        expect(len(found) > 0 and set(got) == set(ranks), f"maxlen.csv: world sizes {got}, expected {ranks}")
        for m in found:
            expect(int(m["max_seq_len"]) > 0, f"maxlen.csv: k={m['world_size']}: no length fits")
            if int(m["first_over_seq_len"] or 0):
                expect(int(m["first_over_seq_len"]) - int(m["max_seq_len"]) == int(m["granularity"]),
                       f"maxlen.csv: k={m['world_size']}: search did not narrow to the granularity")
    return report(problems)


def report(problems):
    for line in problems:
        print("FAIL " + line)
    if not problems:
        print("results OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
