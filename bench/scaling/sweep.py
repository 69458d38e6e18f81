#!/usr/bin/env python3
"""bench/scaling/sweep.py — scaling sweeps of `dring run`: strong, weak and maximum length.

Each point is one `dring run --check --json` under a launcher (launch/dring-mpirun.sh, or
`srun --mpi=pmix` inside a SLURM allocation) for a named configuration, world size and length.
The raw reports go to OUT/raw/; tables.py turns them into scaling.csv and scaling.h5, plot.py
into PNGs, report.py into report.md. A point measured once serves every mode that needs it.

Modes (docs/benchmarks.md, "Scaling"):
  strong  fixed total tokens: each length on every world size; memory per rank should fall k-fold.
  weak    fixed tokens per rank: length = tokens x world size.
  maxlen  for a per-rank memory budget, the longest length that runs, per world size: a doubling
          phase, then interpolation on the measured peaks, until the longest fitting length and
          the next one up (granularity apart) are both real runs.
Usage: launch/scaling.sh [--help]   (this program, run by Debian's python3)
"""
import argparse
import datetime
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configs  # noqa: E402
import tables  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXIT_INVALID = 2  # dring: bad arguments or unsupported request (e.g. --backend cuda without CUDA)
EXIT_CHECK = 3  # dring: --check found a mismatch


def fail(message, code=EXIT_INVALID):
    print(f"scaling: error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_per_config(values, option, all_configs):
    """['4096,8192', 'dense=1024'] -> {config: [ints]}; a bare list applies to every config."""
    out = {}
    for value in values:
        name, _, lengths = value.rpartition("=")
        try:
            ints = [int(x) for x in lengths.split(",") if x]
        except ValueError:
            fail(f"{option} {value}: expected [CONFIG=]N,N,... with integer lengths")
        if not ints or min(ints) < 1:
            fail(f"{option} {value}: lengths must be positive")
        for config in ([name] if name else all_configs):
            out[config] = ints
    return out


class Parser(argparse.ArgumentParser):
    def error(self, message):
        fail(f"{message} (see launch/scaling.sh --help)")


def parse_args(argv):
    p = Parser(
        prog="launch/scaling.sh",
        description="Scaling sweeps of dring run (strong, weak, maximum length) with CSV, HDF5, plots and a report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", default="dense,longnet",
                   help="configurations: dense, longnet (w=2048*4^i, r=2^i until w >= seq), or names from --config")
    p.add_argument("--config", action="append", default=[], metavar="NAME=W,W,..:R,R,..",
                   help="define a configuration of fixed pairs, e.g. local=2048,8192:1,2 (then list it in --configs)")
    p.add_argument("--ranks", default="1,2,4", help="world sizes")
    p.add_argument("--modes", default="strong,weak,maxlen", help="any of strong, weak, maxlen")
    p.add_argument("--strong-seq", action="append", default=[], metavar="[CONFIG=]N,N",
                   help="strong scaling lengths (default dense=4096,8192,16384 longnet=8192,16384,32768)")
    p.add_argument("--weak-tokens", action="append", default=[], metavar="[CONFIG=]N,N",
                   help="weak scaling tokens per rank (default dense=4096 longnet=8192)")
    p.add_argument("--maxlen-configs", default=None,
                   help="configurations of the maximum-length search (default: longnet if listed, else all)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="maxlen: per-rank budget of tracked peak memory")
    p.add_argument("--budget-metric", choices=["tracked", "rss"], default="tracked",
                   help="maxlen: which per-rank peak the budget holds (max over ranks)")
    p.add_argument("--granularity", type=int, default=256, help="maxlen: lengths searched are multiples of this")
    p.add_argument("--maxlen-start", type=int, default=4096, help="maxlen: first length tried")
    p.add_argument("--maxlen-cap", type=int, default=1 << 22, help="maxlen: never try longer than this")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per point (median reported)")
    p.add_argument("--maxlen-repeat", type=int, default=1, help="timed passes per maxlen search point")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--backend", default="cpu", help="passed to dring run --backend (cpu, cuda, auto)")
    p.add_argument("--dring-args", default="", help="more dring run flags, e.g. '--threads 1 --check-rows 64'")
    p.add_argument("--launcher", default="auto",
                   help="auto (srun --mpi=pmix inside SLURM when it works, else mpirun), mpirun, srun, "
                        "or a command template with {ranks} and {dring}")
    p.add_argument("--dring", default=os.environ.get("DRING_BIN", os.path.join(ROOT, "build", "bin", "dring")))
    p.add_argument("--out", default=None, help="results folder (default results/<SLURM job id or UTC time>)")
    p.add_argument("--point-timeout", type=int, default=900, help="seconds before a point is killed")
    p.add_argument("--idle-probe-s", type=float, default=0.5,
                   help="seconds to sample CPU idleness before each point (recorded; 0 = off)")
    p.add_argument("--wait-idle", type=float, default=0.0,
                   help="before each point wait (up to --wait-idle-max-s) until the CPUs are this %% idle")
    p.add_argument("--wait-idle-max-s", type=float, default=120.0)
    p.add_argument("--redo-disturbed", type=float, default=0.0, metavar="PCT",
                   help="measure a point again when other processes took more than PCT%% of the CPUs while it "
                        "ran (mpirun only; 0 = never)")
    p.add_argument("--redo-max", type=int, default=2, help="at most this many extra runs of a disturbed point")
    p.add_argument("--no-ceiling", action="store_true",
                   help="skip the one-thread sgemm ceiling (dring_kernel_bench, about 5 s) measured before a CPU sweep")
    p.add_argument("--no-plots", action="store_true", help="skip plot.py (CSV, HDF5 and report only)")
    p.add_argument("--dry-run", action="store_true", help="print the points of strong and weak modes and exit")
    p.add_argument("--rebuild", metavar="DIR",
                   help="run nothing: rewrite DIR's CSV, HDF5, plots and report from DIR/points.json and DIR/raw")
    a = p.parse_args(argv)
    via = os.environ.get("DRING_SCALING_VIA", "")
    a.command = (via + " -> " if via else "") + shlex.join(["launch/scaling.sh"] + argv)
    custom = {}
    for spec in a.config:
        try:
            name, definition = configs.parse(spec)
        except ValueError as e:
            fail(f"--config: {e}")
        custom[name] = definition
    a.config_defs = {}
    for name in (c for c in a.configs.split(",") if c):
        if name in custom:
            a.config_defs[name] = custom[name]
        elif name in ("dense", "longnet"):
            a.config_defs[name] = configs.parse(name)[1]
        else:
            fail(f"--configs: unknown configuration '{name}' (dense, longnet, or one defined with --config)")
    a.config_names = list(a.config_defs)
    try:
        a.rank_list = sorted({int(x) for x in a.ranks.split(",") if x})
    except ValueError:
        fail(f"--ranks {a.ranks}: expected integers like 1,2,4")
    if not a.rank_list or a.rank_list[0] < 1:
        fail(f"--ranks {a.ranks}: world sizes must be positive")
    a.mode_list = [m for m in a.modes.split(",") if m]
    for m in a.mode_list:
        if m not in ("strong", "weak", "maxlen"):
            fail(f"--modes: unknown mode '{m}' (strong, weak, maxlen)")
    defaults_strong = {"dense": [4096, 8192, 16384], "longnet": [8192, 16384, 32768]}
    defaults_weak = {"dense": [4096], "longnet": [8192]}
    a.strong = {c: defaults_strong.get(c, [8192]) for c in a.config_names}
    a.strong.update(parse_per_config(a.strong_seq, "--strong-seq", a.config_names))
    a.weak = {c: defaults_weak.get(c, [4096]) for c in a.config_names}
    a.weak.update(parse_per_config(a.weak_tokens, "--weak-tokens", a.config_names))
    if a.maxlen_configs is None:
        a.maxlen_configs = "longnet" if "longnet" in a.config_defs else ",".join(a.config_names)
    a.maxlen_list = [c for c in a.maxlen_configs.split(",") if c]
    for c in a.maxlen_list:
        if c not in a.config_defs:
            fail(f"--maxlen-configs: '{c}' is not listed in --configs {a.configs}")
    for c in sorted(set(a.strong) | set(a.weak)):
        if c not in a.config_defs:  # e.g. a job script's default lengths for a config not run
            print(f"scaling: note: lengths given for '{c}', which is not in --configs; not run", file=sys.stderr)
            a.strong.pop(c, None)
            a.weak.pop(c, None)
    if a.granularity < 1 or a.maxlen_start < 1 or a.budget_mib <= 0 or a.repeat < 1 or a.maxlen_repeat < 1:
        fail("--granularity, --maxlen-start, --budget-mib, --repeat and --maxlen-repeat must be positive")
    if a.out is None:
        run_id = os.environ.get("SLURM_JOB_ID") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        a.out = os.path.join(ROOT, "results", run_id)
    return a


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields[:8])


def busy_cpu_s():
    """Seconds of CPU time this node has spent not idle since boot (all CPUs)."""
    idle, total = cpu_times()
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    """CPU seconds of this process's finished descendants (the launcher and its ranks)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_idle_pct(seconds):
    """Share of CPU time idle over `seconds` on this node, in percent (None when not sampled)."""
    if seconds <= 0:
        return None
    idle0, total0 = cpu_times()
    time.sleep(seconds)
    idle1, total1 = cpu_times()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def slurm_cpus():
    """(CPUs of this SLURM allocation, CPUs of its smallest node), from SLURM_JOB_CPUS_PER_NODE
    such as '2(x3),4'; (0, 0) outside SLURM."""
    total, smallest = 0, 0
    for part in os.environ.get("SLURM_JOB_CPUS_PER_NODE", "").split(","):
        if not part:
            continue
        count, _, rest = part.partition("(x")
        total += int(count) * (int(rest.rstrip(")")) if rest else 1)
        smallest = min(smallest, int(count)) if smallest else int(count)
    return total, smallest


class Launcher:
    """Builds the command line that starts `dring` on k ranks."""

    def __init__(self, spec, dring):
        self.dring = dring
        self.kind = spec
        if spec == "auto":
            self.kind = "mpirun"
            if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
                self.kind = "srun"
                probe = self.command(1) + ["run", "--seq", "64", "--heads", "1", "--head-dim", "8", "--quiet"]
                try:
                    r = subprocess.run(probe, capture_output=True, text=True, timeout=120)
                    ok, why = r.returncode == 0, (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
                except subprocess.TimeoutExpired:
                    ok, why = False, "timed out"
                if not ok:
                    print(f"scaling: srun --mpi=pmix does not start dring here ({why}); falling back to mpirun",
                          file=sys.stderr)
                    self.kind = "mpirun"

    def command(self, ranks):
        if self.kind == "mpirun":
            return [os.path.join(ROOT, "launch", "dring-mpirun.sh"), str(ranks)]
        if self.kind == "srun":
            flags = ["srun", "--mpi=pmix", "-n", str(ranks)]
            cpus, node_cpus = slurm_cpus()
            nodes = max(1, int(os.environ.get("SLURM_NNODES", "1")))
            if ranks > cpus > 0:
                flags.append("--overcommit")  # more ranks than allocated CPUs (a small node)
            elif node_cpus:
                # Each rank gets its share of a node's cores, as under mpirun (dring sizes its
                # threads from the cores it may use).
                flags.append(f"--cpus-per-task={max(1, node_cpus // -(-ranks // nodes))}")
            return flags + shlex.split(os.environ.get("DRING_SRUN_FLAGS", "")) + [self.dring]
        return shlex.split(self.kind.format(ranks=ranks, dring=self.dring))

    def env(self, ranks):
        env = dict(os.environ)
        env["DRING_BIN"] = self.dring
        if self.kind == "srun" and ranks > slurm_cpus()[0] > 0:
            # mpirun does this itself when it oversubscribes; under srun Open MPI cannot tell, and
            # ranks busy-polling for progress would take the CPU from the ranks computing.
            env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        return env


def run_with_timeout(command, env, timeout_s):
    """(exit status, stderr + stdout) of command; past timeout_s its whole process group (the
    launcher and the ranks it started) gets SIGTERM, then SIGKILL, and the status is 124."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, (err or "") + (out or "")
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        return 124, f"killed after --point-timeout {timeout_s} s"


def longest_fitting(fits, start, granularity, cap, budget):
    """Search over multiples of `granularity` for the longest length that fits the budget.

    fits(seq) -> (ok, peak bytes or None). Per-rank peaks are close to affine in the length, so
    each step extrapolates from the measured peaks: proportionally from one fitting point (a
    lower bound of the answer while the fixed part is non-negative), then along the line through
    the last two, and inside a bracket by interpolation, halving when one side repeats. Returns
    (longest fitting, its peak, shortest known not to fit, its peak); the last two are None when
    the cap was reached, the first two when even the first length does not fit.
    """
    g = granularity
    seq = max(g, -(-start // g) * g)
    top = max(g, cap // g * g)
    lo = lo_peak = hi = hi_peak = prev = None
    while seq <= top:
        ok, peak = fits(seq)
        if not ok:
            hi, hi_peak = seq, peak
            break
        if prev and peak > prev[1]:
            guess = seq + (budget - peak) * (seq - prev[0]) / (peak - prev[1])
        else:
            guess = seq * budget / max(peak, 1)
        lo, lo_peak, prev = seq, peak, (seq, peak)
        guess = int(guess) // g * g
        seq = min(guess if guess > seq else seq + g, 8 * seq, top)
        if seq <= lo:
            break
    last_side, streak = None, 0
    while lo is not None and hi is not None and hi - lo > g:
        guess = (lo + hi) // 2
        if lo_peak and hi_peak and hi_peak > lo_peak and streak < 2:
            guess = lo + (budget - lo_peak) * (hi - lo) / (hi_peak - lo_peak)
        guess = min(max(int(guess) // g * g, lo + g), hi - g)
        ok, peak = fits(guess)
        if ok:
            lo, lo_peak = guess, peak
        else:
            hi, hi_peak = guess, peak
        streak = streak + 1 if ok == last_side else 1
        last_side = ok
    return lo, lo_peak, hi, hi_peak


class Sweep:
    def __init__(self, a):
        self.a = a
        self.raw = os.path.join(a.out, "raw")
        os.makedirs(self.raw, exist_ok=True)
        self.launcher = Launcher(a.launcher, a.dring)
        self.points = {}  # (config, ranks, seq) -> point record
        self.order = []
        self.failures = 0
        self.count = 0
        self.started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.ceiling = None

    def problem_args(self):
        a = self.a
        args = ["--batch", str(a.batch), "--heads", str(a.heads), "--head-dim", str(a.head_dim),
                "--backend", a.backend, "--check", "--quiet"]
        if a.kv_heads:
            args += ["--kv-heads", str(a.kv_heads)]
        if a.causal:
            args.append("--causal")
        return args + shlex.split(a.dring_args)

    def wait_for_idle(self):
        a = self.a
        idle = cpu_idle_pct(a.idle_probe_s)
        deadline = time.monotonic() + a.wait_idle_max_s
        while a.wait_idle > 0 and time.monotonic() < deadline and (idle is None or idle < a.wait_idle):
            idle = cpu_idle_pct(max(1.0, a.idle_probe_s))
        return idle

    def run(self, mode, config, ranks, seq, repeat):
        """Runs (or reuses) one point; returns its record."""
        key = (config, ranks, seq)
        if key in self.points:
            point = self.points[key]
            if mode not in point["modes"]:
                point["modes"].append(mode)
            return point
        segments, dilations = configs.pairs(self.a.config_defs[config], seq)
        name = f"{config}-k{ranks}-s{seq}"
        report = os.path.join(self.raw, name + ".json")
        dring_args = ["run", "--seq", str(seq), "--repeat", str(repeat), "--json", report] + self.problem_args()
        if segments:
            dring_args += ["--segments", ",".join(map(str, segments)), "--dilations", ",".join(map(str, dilations))]
        command = self.launcher.command(ranks) + dring_args
        for attempt in range(1 + self.a.redo_max):
            idle = self.wait_for_idle()
            if os.path.exists(report):
                os.remove(report)
            start, busy0, ours0 = time.monotonic(), busy_cpu_s(), children_cpu_s()
            rc, stderr = run_with_timeout(command, self.launcher.env(ranks), self.a.point_timeout)
            wall_s = time.monotonic() - start
            # CPU time others used on this node while the point ran, in % of all its CPUs: the
            # ranks are our descendants only under mpirun (srun starts them from slurmstepd).
            other = None
            if self.launcher.kind == "mpirun":
                foreign = (busy_cpu_s() - busy0) - (children_cpu_s() - ours0)
                other = max(0.0, 100.0 * foreign / (wall_s * (os.cpu_count() or 1)))
            if not (self.a.redo_disturbed > 0 and other is not None and other > self.a.redo_disturbed):
                break
            if attempt < self.a.redo_max:
                print(f"      {config} k={ranks} S={seq}: others took {other:.0f}% of the CPUs; measuring again",
                      flush=True)
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        status = {0: "ok", EXIT_CHECK: "check_failed"}.get(rc, "failed")
        point = {"modes": [mode], "config": config, "world_size": ranks, "seq_len": seq, "repeat": repeat,
                 "segments": segments, "dilations": dilations, "status": status, "exit_code": rc,
                 "error": lines[-1] if rc != 0 and lines else "", "wall_s": wall_s, "cpu_idle_pct": idle,
                 "other_cpu_pct": other, "attempts": attempt + 1,
                 "launcher": self.launcher.kind, "command": shlex.join(command),
                 "report": os.path.relpath(report, self.a.out) if os.path.exists(report) else ""}
        self.points[key] = point
        self.order.append(key)
        self.count += 1
        if rc == EXIT_INVALID and self.count == 1:
            # The first point already refused (no such backend, a bad flag): every point would.
            self.write_index(started=self.started)
            fail(f"dring refused the first point ({point['error'] or 'exit 2'}); command: {point['command']}")
        if status != "ok" and mode != "maxlen":
            self.failures += 1
        self.describe(point)
        self.write_index(started=self.started)  # an interrupted sweep can still be --rebuild
        return point

    def describe(self, point):
        head = f"[{self.count:3d}] {'/'.join(point['modes']):7s} {point['config']:>10s} k={point['world_size']:<3d} " \
               f"S={point['seq_len']:<8d}"
        j = self.report_of(point)
        if j is None:
            print(f"{head} {point['status']}: {point['error']} ({point['wall_s']:.1f} s)", flush=True)
            return
        peak = max(r["peak_tracked_bytes"] for r in j["ranks"])
        check = j.get("check", {})
        idle = "" if point["cpu_idle_pct"] is None else f", idle {point['cpu_idle_pct']:.0f}% before"
        if point["other_cpu_pct"] is not None:
            idle += f", others {point['other_cpu_pct']:.0f}% during"
        print(f"{head} {j['time_ms']:10.1f} ms  peak {peak / 2**20:8.2f} MiB/rank  "
              f"check {check.get('max_rel_err', float('nan')):.1e} {'ok' if check.get('passed') else 'FAILED'}"
              f"  ({point['wall_s']:.1f} s{idle})", flush=True)

    def report_of(self, point):
        if not point["report"]:
            return None
        with open(os.path.join(self.a.out, point["report"])) as f:
            return json.load(f)

    def peak(self, point):
        """The budgeted per-rank peak (max over ranks), or None when the point did not run."""
        j = self.report_of(point)
        if point["status"] != "ok" or j is None:
            return None
        field = "peak_tracked_bytes" if self.a.budget_metric == "tracked" else "peak_rss_bytes"
        return max(r[field] for r in j["ranks"])

    def strong(self):
        for config in self.a.config_names:
            for seq in self.a.strong.get(config, []):
                for ranks in self.a.rank_list:
                    if seq >= ranks:
                        self.run("strong", config, ranks, seq, self.a.repeat)

    def weak(self):
        for config in self.a.config_names:
            for tokens in self.a.weak[config]:
                for ranks in self.a.rank_list:
                    self.run("weak", config, ranks, tokens * ranks, self.a.repeat)

    def maxlen(self):
        """Longest length (a multiple of --granularity) whose per-rank peak fits the budget."""
        a = self.a
        budget = a.budget_mib * 2**20
        results = []
        for config in a.maxlen_list:
            for ranks in a.rank_list:
                def fits(seq, config=config, ranks=ranks):
                    peak = self.peak(self.run("maxlen", config, ranks, seq, a.maxlen_repeat))
                    return peak is not None and peak <= budget, peak
                start = max(a.maxlen_start, ranks)
                lo, lo_peak, hi, hi_peak = longest_fitting(fits, start, a.granularity, a.maxlen_cap, budget)
                results.append({"config": config, "world_size": ranks, "budget_bytes": int(budget),
                                "budget_metric": a.budget_metric, "granularity": a.granularity,
                                "max_seq_len": lo or 0, "peak_bytes": lo_peak or 0,
                                "first_over_seq_len": hi or 0, "first_over_peak_bytes": hi_peak or 0,
                                "capped": hi is None})
                print(f"       maxlen {config} k={ranks}: longest {lo or 'none'} tokens "
                      f"({(lo_peak or 0) / 2**20:.2f} MiB/rank); "
                      f"{'cap reached' if hi is None else f'{hi} does not fit'}", flush=True)
        return results

    def measure_ceiling(self):
        """The one-thread sgemm rate of this node (dring_kernel_bench, next to dring), the ceiling
        that gflops_per_core is held to; None for a GPU sweep or without the benchmark."""
        bench = os.path.join(os.path.dirname(self.a.dring), "dring_kernel_bench")
        if self.a.no_ceiling or self.a.backend != "cpu" or not os.access(bench, os.X_OK):
            return None
        path = os.path.join(self.raw, "kernel_bench.json")
        self.wait_for_idle()
        rc, err = run_with_timeout([bench, "--reps", "3", "--json", path], dict(os.environ), 300)
        if rc != 0 or not os.path.exists(path):
            print(f"scaling: note: no sgemm ceiling ({bench} exited {rc})", file=sys.stderr)
            return None
        with open(path) as f:
            j = json.load(f)
        self.ceiling = {"ceiling_gflops_per_core": j["ceiling_gflops"],
                        "ceiling_source": f"one-thread sgemm {j.get('sgemm_before', {}).get('n', '')}^3 of "
                                          f"dring_kernel_bench (OpenBLAS core {j.get('openblas', {}).get('core', '?')}),"
                                          f" higher of before and after its rows, measured before the sweep"}
        print(f"scaling: ceiling: one-thread sgemm {j['ceiling_gflops']:.1f} GFLOP/s", flush=True)
        return self.ceiling

    def write_index(self, maxlen=None, started=None):
        a = self.a
        meta = provenance(a, started)
        meta["launcher"] = self.launcher.kind
        meta.update(self.ceiling or {})
        index = {"meta": meta, "points": [self.points[k] for k in self.order], "maxlen": maxlen or []}
        path = os.path.join(a.out, "points.json")
        with open(path + ".tmp", "w") as f:
            json.dump(index, f, indent=1)
        os.replace(path + ".tmp", path)
        return index


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return ""


def provenance(a, started):
    def git(*args):
        try:
            r = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True)
            return r.stdout.strip()
        except OSError:
            return ""
    return {"command": a.command, "started_utc": started or "",
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": socket.gethostname(), "cpu": lscpu_model(), "nproc": os.cpu_count(),
            "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "-uno")),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""), "slurm_nodes": os.environ.get("SLURM_JOB_NODELIST", ""),
            "slurm_nnodes": int(os.environ.get("SLURM_NNODES", "1")),
            "backend": a.backend, "modes": a.mode_list, "configs": {n: configs.describe(d) for n, d in a.config_defs.items()},
            "budget_mib": a.budget_mib, "budget_metric": a.budget_metric, "repeat": a.repeat,
            "problem": {"batch": a.batch, "heads": a.heads, "kv_heads": a.kv_heads or a.heads,
                        "head_dim": a.head_dim, "causal": a.causal, "dring_args": a.dring_args}}


def finish(out, index, plots):
    rows = tables.write(out, index)
    if plots:
        import plot
        plot.plot_all(out)
    import report
    report.write(out)
    return rows


def main(argv):
    a = parse_args(argv)
    if a.rebuild:
        try:
            with open(os.path.join(a.rebuild, "points.json")) as f:
                index = json.load(f)
        except (OSError, ValueError) as e:
            fail(f"--rebuild {a.rebuild}: no readable points.json ({e})")
        finish(a.rebuild, index, not a.no_plots)
        print(f"scaling: rewrote the tables, plots and report.md in {a.rebuild}")
        return 0
    if a.dry_run:
        for config in a.config_names:
            if "strong" in a.mode_list:
                print(f"strong {config}: lengths {a.strong.get(config, [])} on ranks {a.rank_list}")
            if "weak" in a.mode_list:
                print(f"weak   {config}: {a.weak[config]} tokens per rank on ranks {a.rank_list}")
        return 0
    if not (os.path.isfile(a.dring) and os.access(a.dring, os.X_OK)):
        fail(f"{a.dring} is not built; run launch/build.sh (or pass --dring PATH)")
    sweep = Sweep(a)
    print(f"scaling: results in {a.out} (launcher {sweep.launcher.kind}, backend {a.backend})", flush=True)
    sweep.measure_ceiling()
    maxlen = []
    if "strong" in a.mode_list:
        sweep.strong()
    if "weak" in a.mode_list:
        sweep.weak()
    if "maxlen" in a.mode_list:
        maxlen = sweep.maxlen()
    index = sweep.write_index(maxlen, sweep.started)
    rows = finish(a.out, index, not a.no_plots)
    tables.print_summary(rows, index["maxlen"])
    print(f"scaling: wrote {os.path.join(a.out, 'scaling.csv')}, scaling.h5, report.md"
          f"{'' if a.no_plots else ' and the plots'}")
    if sweep.failures:
        print(f"scaling: {sweep.failures} point(s) failed or failed --check; see report.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
