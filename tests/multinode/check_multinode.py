#!/usr/bin/env python3
"""tests/multinode/check_multinode.py — the checks of test_multinode.sh, one subcommand each.

  placement FILE NODE=RANKS,...   dring_node_probe's lines: the ranks on each node as given, each
                                  node's ranks see local ranks 0..n-1 and local size n, and take
                                  max(1, min(cores, hardware // n)) threads (dring's rule; with n
                                  ranks on this machine's cores)
  reports REF OTHER...            `dring run --json` reports of the same problem: the same world
                                  size, threads, exchange steps, per-rank bytes sent and received,
                                  and the same --check errors (bit for bit), all passed
  job OUT NODES RANKS             a slurm/cpu-multinode.sbatch results folder: its one point ran
                                  under `srun --mpi=pmix -n RANKS` on the nodes NODES and passed
Exit status 1 with one FAIL line per problem.
"""
import json
import os
import sys


def fail(problems):
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


def placement(path, layout):
    want = {}
    for item in layout.split(","):
        node, _, count = item.partition("=")
        want[node] = int(count)
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.startswith("{")]
    problems = []
    if sorted(r["world_rank"] for r in rows) != list(range(sum(want.values()))):
        problems.append(f"{path}: world ranks {[r['world_rank'] for r in rows]}, expected 0..{sum(want.values()) - 1}")
    for node, count in want.items():
        mine = [r for r in rows if r["host"] == node]
        threads = sorted({r["threads"] for r in mine})
        print(f"  {node}: world ranks {','.join(str(r['world_rank']) for r in mine)}; local ranks "
              f"{','.join(str(r['local_rank']) for r in mine)} of local size "
              f"{','.join(sorted({str(r['local_size']) for r in mine}))}; threads {','.join(map(str, threads))} "
              f"(cores {','.join(sorted({str(r['cores']) for r in mine}))}, hardware {mine[0]['hardware'] if mine else '?'})")
        if len(mine) != count:
            problems.append(f"{node}: {len(mine)} ranks, expected {count}")
            continue
        if sorted(r["local_rank"] for r in mine) != list(range(count)):
            problems.append(f"{node}: local ranks {[r['local_rank'] for r in mine]}, expected 0..{count - 1}")
        for r in mine:
            expected = max(1, min(r["cores"], r["hardware"] // count))
            if r["local_size"] != count:
                problems.append(f"{node}: world rank {r['world_rank']} sees local size {r['local_size']}, expected {count}")
            if r["threads"] != expected:
                problems.append(f"{node}: world rank {r['world_rank']} takes {r['threads']} threads, expected {expected}")
            if r["hardware"] != os.cpu_count():
                problems.append(f"{node}: world rank {r['world_rank']} sees {r['hardware']} CPUs, this machine has {os.cpu_count()}")
    extra = sorted({r["host"] for r in rows} - set(want))
    if extra:
        problems.append(f"ranks on unexpected hosts {extra}")
    return fail(problems)


def summary(report):
    return {"world_size": report["world_size"], "threads": report["threads"], "steps": report["steps"],
            "sent_bytes": [r["comm_sent_bytes"] for r in report["ranks"]],
            "received_bytes": [r["comm_recv_bytes"] for r in report["ranks"]],
            "check": {k: report["check"][k] for k in ("rows", "max_abs_err", "max_rel_err", "passed")}}


def reports(ref, others):
    problems = []
    with open(ref) as f:
        want = summary(json.load(f))
    if not want["check"]["passed"]:
        problems.append(f"{ref}: --check failed")
    print(f"  {os.path.basename(ref)}: {json.dumps(want)}")
    for path in others:
        with open(path) as f:
            got = summary(json.load(f))
        print(f"  {os.path.basename(path)}: {'same' if got == want else json.dumps(got)}")
        for key in want:
            if got[key] != want[key]:
                problems.append(f"{path}: {key} {got[key]}, the one-node run has {want[key]}")
    return fail(problems)


def job(out, nodes, ranks):
    problems = []
    with open(os.path.join(out, "points.json")) as f:
        index = json.load(f)
    meta, points = index["meta"], index["points"]
    print(f"  job {meta['slurm_job_id']} on {meta['slurm_nodes']} ({meta['slurm_nnodes']} nodes), first node "
          f"{meta['host']}: " + "; ".join(f"{p['status']}: {p['command'].split(' run ')[0]} ..." for p in points))
    if meta["slurm_nodes"] != nodes:
        problems.append(f"the job ran on {meta['slurm_nodes']}, expected {nodes}")
    if len(points) != 1:
        problems.append(f"{len(points)} points, expected one")
    for p in points:
        if p["status"] != "ok":
            problems.append(f"point {p['config']} k={p['world_size']}: {p['status']} ({p['error']})")
        if p["launcher"] != "srun" or not p["command"].startswith(f"srun --mpi=pmix -n {ranks} "):
            problems.append(f"point not started by srun --mpi=pmix -n {ranks}: {p['command']}")
    return fail(problems)


def main(argv):
    if len(argv) >= 3 and argv[0] == "placement":
        return placement(argv[1], argv[2])
    if len(argv) >= 3 and argv[0] == "reports":
        return reports(argv[1], argv[2:])
    if len(argv) == 4 and argv[0] == "job":
        return job(argv[1], argv[2], int(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
