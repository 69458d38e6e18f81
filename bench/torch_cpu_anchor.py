#!/usr/bin/env python3
"""dring against PyTorch on the same CPU attention problems, in one run (issue 9).

A dring time on its own says little about whether its CPU kernels are good; set next to what a
PyTorch user gets on the same machine, and next to the machine's sgemm rate, it does. This script
times, for each problem and for 1 thread and all cores:

- the PyTorch anchor, fp32 on [B, H, S, D]:
  - dense problems: torch.nn.functional.scaled_dot_product_attention (causal or not);
  - dilated problems: LongNet's dilated attention exactly as dring defines it (docs/math.md), in
    the fastest form a PyTorch user would write: per pair and head offset, the rows the pair
    selects in every segment are gathered into one batch of dense blocks, the CPU flash attention
    that also returns the log-sum-exp (aten._scaled_dot_product_flash_attention_for_cpu) runs on
    it, and the pairs are merged per row by log-sum-exp. That op's log-sum-exp output carries no
    gradient (autograd through the merge would get dq and dk wrong), so the backward pass is its
    backward op applied block by block with the merged output and log-sum-exp (the flash-style exact gradient, as dring computes it). Without the op,
    blocks materialise their scores and autograd does the backward pass;
- `dring run` under `mpirun -np 1` on the same shape (synthetic inputs), its median pass time;
- the sgemm ceiling: torch.mm on large fp32 matrices (MKL in PyPI's torch).

With --dtype bf16 both sides store q, k, v, dout (and the outputs) in bf16: PyTorch's anchors run
on bf16 tensors (SDPA and the CPU flash op take them; the dilated merge then runs in bf16 as a
user's code would), dring runs `--dtype bf16` (fp32 accumulation); the ceiling stays fp32's sgemm.

FLOPs are dring's count (core/src/problem.cpp): 4*B*D per score the definition computes (causal:
the visible ones), 2.5x that for the backward pass. dring's tile products run on oneDNN where the
build found it (JIT by CPU features, nothing to set) and on OpenBLAS otherwise, whose kernel choice
depends on the CPU and on OPENBLAS_CORETYPE: where OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE are set,
dring runs both with them and without them (what a fresh shell gets), and --dring-env adds runs
with other settings.

Before timing (and alone with --check) it compares both anchors in fp32 with a float64
implementation of the definition (a full score matrix weighted by the number of pairs joining
each (i, j)) on odd shapes, forward and gradients, and exits 1 on an error above 1e-4.
bench/cpu-vs-torch.sh installs torch where needed and runs this with the tree's dring.

Usage:
  bench/torch_cpu_anchor.py --check
  bench/torch_cpu_anchor.py [--quick] [--dtype fp32|bf16] [--dring BIN] [--threads 1,2] [--reps N]
                            [--only CASE] [--dring-env VAR=VALUE] [--json FILE]
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# The problems

@dataclass
class Case:
    name: str
    seq: int
    heads: int = 4
    kv_heads: int = 4
    head_dim: int = 64
    batch: int = 1
    segments: list = field(default_factory=list)  # empty: dense
    dilations: list = field(default_factory=list)
    causal: bool = False
    backward: bool = False  # also time forward+backward

    def pairs(self):
        """The (effective segment, dilation) pairs; dense is the single pair (S, 1)."""
        if not self.segments:
            return [(self.seq, 1)]
        return [(min(w, self.seq), r) for w, r in zip(self.segments, self.dilations)]

    def forward_flops(self):
        """4*B*D per score the definition computes, summed segment by segment like dring does."""
        scores = 0
        for w, r in self.pairs():
            full, tail = divmod(self.seq, w)
            for h in range(self.heads):
                off = h % r
                for length, count in ((w, full), (tail, 1)):
                    n = (length - off + r - 1) // r if length > off else 0
                    scores += count * (n * (n + 1) // 2 if self.causal else n * n)
        return 4.0 * self.batch * self.head_dim * scores


def bench_cases(quick):
    """Issue 9's problems. Dense backward at S=32768 takes minutes a pass on 2 cores: --quick only."""
    s = 4096 if quick else 32768
    longnet = dict(segments=[s // 16, s // 4, s], dilations=[1, 2, 4])
    small = dict(segments=[64, 256], dilations=[8, 32])
    return [
        Case("dense", s, backward=quick),
        Case("dense causal", s, causal=True, backward=quick),
        Case("longnet", s, backward=True, **longnet),
        Case("longnet causal", s, causal=True, backward=True, **longnet),
        Case("small blocks", s, backward=True, **small),
        Case("small blocks causal", s, causal=True, backward=True, **small),
    ]


def check_cases():
    """Odd shapes: prime S, short last segments, w > S with S % r != 0, r > H, GQA, rows no pair selects."""
    return [
        Case("dense", 67, heads=6, kv_heads=2, head_dim=16, batch=2),
        Case("dense causal", 67, heads=6, kv_heads=2, head_dim=16, batch=2, causal=True),
        Case("longnet", 67, heads=6, kv_heads=2, head_dim=16, batch=2, segments=[8, 16, 32, 128], dilations=[1, 2, 4, 8]),
        Case("longnet causal", 67, heads=6, kv_heads=2, head_dim=16, batch=2, segments=[8, 16, 32, 128],
             dilations=[1, 2, 4, 8], causal=True),
        Case("dilated only", 61, heads=4, kv_heads=2, head_dim=8, segments=[12, 20], dilations=[3, 4]),
        Case("dilated only causal", 61, heads=4, kv_heads=1, head_dim=8, segments=[12, 20], dilations=[3, 4], causal=True),
        Case("small blocks", 131, heads=4, kv_heads=4, head_dim=8, segments=[16, 64], dilations=[8, 32]),
        Case("small blocks causal", 131, heads=4, kv_heads=2, head_dim=8, segments=[16, 64], dilations=[8, 32], causal=True),
    ]


# ---------------------------------------------------------------------------------------------
# The anchors. q [B, H, S, D]; k, v [B, Hkv, S, D]; query head h reads kv head h // (H / Hkv).

def dense_anchor(q, k, v, causal, scale):
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
FLASH_CPU_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
HAVE_FLASH = FLASH_CPU is not None and FLASH_CPU_BACKWARD is not None


def explicit_block(q, k, v, causal, scale):
    """(out, lse) of dense blocks from materialised scores: the fallback without the flash op."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        n = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(scores, -1)
    return torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v), lse


def blocks(heads, seq, kv_group, pairs):
    """Every group of dense blocks of the pairs: (q-head slice, kv-head index, row selector).

    A group is one pair and head offset, over the full segments or over the short last one. Its
    q heads are h = off, off + r, ...; the selector maps a [B, heads, S, ...] tensor to the view
    [B, heads, count, n, ...] of the rows the pair selects for the offset in those segments.
    """
    for w, r in pairs:
        full, tail = divmod(seq, w)
        for off in range(min(r, heads)):
            kv_index = torch.arange(off, heads, r) // kv_group
            for start, length, count in ((0, w, full), (full * w, tail, 1)):
                if count == 0 or length <= off:
                    continue

                def rows(t, start=start, length=length, count=count, off=off, r=r):
                    return t[:, :, start:start + count * length].unflatten(2, (count, length))[:, :, :, off::r]

                yield slice(off, heads, r), kv_index, rows


def gather(t, heads, rows):
    """The selected rows of a head subset as a contiguous [B, heads*count, n, D] batch of blocks."""
    picked = rows(t[:, heads]) if isinstance(heads, slice) else rows(t).index_select(1, heads)
    return picked.reshape(picked.shape[0], -1, picked.shape[3], picked.shape[4])


def scatter(dst, heads, rows, src):
    view = rows(dst[:, heads])
    view.copy_(src.reshape(view.shape))


def merge(outs, lses):
    """One joint softmax from per-pair (out, lse): out = sum_p exp(L_p - lse) O_p, lse = log sum_p exp(L_p)."""
    if len(outs) == 1:
        return outs[0], lses[0]
    lse = torch.stack(lses)
    top = lse.amax(0)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weight = torch.exp(lse - top)
    total = weight.sum(0)
    out = sum(weight[p].unsqueeze(-1) * outs[p] for p in range(len(outs)))
    out = out / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1)
    return out.to(outs[0].dtype), top + torch.log(total)


def dilated_forward(q, k, v, pairs, causal, scale, block_fn):
    B, H, S, D = q.shape
    outs, lses = [], []
    for p in range(len(pairs)):
        out_p = q.new_zeros(B, H, S, D)
        lse_p = q.new_full((B, H, S), float("-inf"), dtype=torch.float32)  # the flash op's lse is fp32
        for heads, kv_index, rows in blocks(H, S, H // k.shape[1], pairs[p:p + 1]):
            ob, lb = block_fn(gather(q, heads, rows), gather(k, kv_index, rows), gather(v, kv_index, rows), causal, scale)
            scatter(out_p, heads, rows, ob)
            scatter(lse_p.unsqueeze(-1), heads, rows, lb.unsqueeze(-1))
        outs.append(out_p)
        lses.append(lse_p)
    return merge(outs, lses)


def flash_block(q, k, v, causal, scale):
    return FLASH_CPU(q, k, v, 0.0, causal, scale=scale)


class DilatedFlash(torch.autograd.Function):
    """Forward with the CPU flash op; backward with its backward op per block and the merged (out, lse)."""

    @staticmethod
    def forward(ctx, q, k, v, pairs, causal, scale):
        out, lse = dilated_forward(q, k, v, pairs, causal, scale, flash_block)
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.pairs, ctx.causal, ctx.scale = pairs, causal, scale
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        B, H, S, _ = q.shape
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for heads, kv_index, rows in blocks(H, S, H // k.shape[1], ctx.pairs):
            qb, kb, vb = gather(q, heads, rows), gather(k, kv_index, rows), gather(v, kv_index, rows)
            ob, db = gather(out, heads, rows), gather(dout, heads, rows)
            lb = gather(lse.unsqueeze(-1), heads, rows).squeeze(-1)
            dqb, dkb, dvb = FLASH_CPU_BACKWARD(db, qb, kb, vb, ob, lb, 0.0, ctx.causal, scale=ctx.scale)
            view = rows(dq[:, heads])
            view.add_(dqb.reshape(view.shape))
            for grad, block in ((dk, dkb), (dv, dvb)):
                view = rows(grad)
                view.index_add_(1, kv_index, block.reshape(B, len(kv_index), *view.shape[2:]))
        return dq, dk, dv, None, None, None


def dilated_anchor(q, k, v, pairs, causal, scale, flash=HAVE_FLASH):
    if flash:
        return DilatedFlash.apply(q, k, v, pairs, causal, scale)
    return dilated_forward(q, k, v, pairs, causal, scale, explicit_block)


def anchor(case, q, k, v, scale):
    """The PyTorch anchor of a case: SDPA for dense problems, the dilated formulation otherwise."""
    if not case.segments:
        return dense_anchor(q, k, v, case.causal, scale)
    return dilated_anchor(q, k, v, case.pairs(), case.causal, scale)[0]


# ---------------------------------------------------------------------------------------------
# The float64 check

def reference(case, q, k, v, scale):
    """(out, lse) of the definition in float64: every score weighted by the pairs joining (i, j)."""
    B, H, S, D = q.shape
    group = H // k.shape[1]
    i = torch.arange(S)
    weight = torch.zeros(H, S, S, dtype=torch.float64)
    for w, r in case.pairs():
        same_segment = (i[:, None] // w) == (i[None, :] // w)
        for h in range(H):
            selected = (i % w) % r == h % r
            joined = same_segment & selected[:, None] & selected[None, :]
            if case.causal:
                joined &= i[None, :] <= i[:, None]
            weight[h] += joined
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.matmul(q, kk.transpose(-1, -2)) * scale + torch.log(weight)
    top = scores.amax(-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    p = torch.exp(scores - top)
    total = p.sum(-1, keepdim=True)
    reached = total > 0
    total = torch.where(reached, total, torch.ones_like(total))
    out = torch.matmul(p, vv) / total
    lse = torch.where(reached, top + torch.log(total), torch.full_like(total, float("-inf"))).squeeze(-1)
    return out, lse


def run_check():
    """Both anchors in fp32 against the float64 reference; returns (passed, rows for the report)."""
    gen = torch.Generator().manual_seed(9)
    results, passed = [], True
    print(f"float64 check (tolerance {TOLERANCE:g}; out and lse absolute, gradients relative to their largest element)")
    for case in check_cases():
        B, H, Hkv, S, D = case.batch, case.heads, case.kv_heads, case.seq, case.head_dim
        q64 = torch.randn(B, H, S, D, dtype=torch.float64, generator=gen, requires_grad=True)
        k64 = torch.randn(B, Hkv, S, D, dtype=torch.float64, generator=gen, requires_grad=True)
        v64 = torch.randn(B, Hkv, S, D, dtype=torch.float64, generator=gen, requires_grad=True)
        dout = torch.randn(B, H, S, D, dtype=torch.float64, generator=gen)
        scale = 1.0 / math.sqrt(D)
        ref_out, ref_lse = reference(case, q64, k64, v64, scale)
        ref_grads = torch.autograd.grad(ref_out, (q64, k64, v64), dout)
        anchors = [("dilated", lambda q, k, v: dilated_anchor(q, k, v, case.pairs(), case.causal, scale))]
        if HAVE_FLASH:
            anchors.append(("explicit", lambda q, k, v: dilated_anchor(q, k, v, case.pairs(), case.causal, scale, False)))
        if not case.segments:
            anchors.insert(0, ("dense", lambda q, k, v: (dense_anchor(q, k, v, case.causal, scale), None)))
        for name, fn in anchors:
            q, k, v = (t.detach().float().requires_grad_() for t in (q64, k64, v64))
            out, lse = fn(q, k, v)
            grads = torch.autograd.grad(out, (q, k, v), dout.float())
            err = {"out": (out.double() - ref_out).abs().max().item()}
            if lse is not None:
                same_inf = torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
                finite = torch.isfinite(ref_lse)
                err["lse"] = (lse.double()[finite] - ref_lse[finite]).abs().max().item() if same_inf else math.inf
            for label, g, rg in zip(("dq", "dk", "dv"), grads, ref_grads):
                err[label] = ((g.double() - rg).abs().max() / rg.abs().max().clamp_min(1e-30)).item()
            ok = all(e <= TOLERANCE for e in err.values())
            passed &= ok
            unselected = int(torch.isinf(ref_lse).sum())
            print(f"  {case.name:<20} {name:<8} S={S} H={H}/{Hkv} pairs={case.pairs()} "
                  + " ".join(f"{key} {e:.1e}" for key, e in err.items())
                  + f" rows-without-keys {unselected}  {'ok' if ok else 'FAILED'}")
            results.append({"case": case.name, "anchor": name, "seq": S, "heads": H, "kv_heads": Hkv,
                            "pairs": case.pairs(), "causal": case.causal, "errors": err, "passed": ok})
    print("float64 check: " + ("passed" if passed else "FAILED"))
    return passed, results


# ---------------------------------------------------------------------------------------------
# Timing

def median_ms(fn, reps, budget_s):
    """Median time of fn in ms after one warm-up; fewer reps when one pass is long (budget_s in all)."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    reps = max(1, min(reps, int(budget_s / max(warm, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, reps


def sgemm_gflops(threads, n, reps):
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    ms, _ = median_ms(lambda: torch.mm(a, b, out=c), reps, 60.0)
    return 2.0 * n**3 / (ms * 1e6)


def time_torch(case, threads, reps, budget_s, dtype):
    """{"fwd": (ms, reps), "fwd+bwd": (ms, reps)} of the anchor, on tensors of `dtype`."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    B, H, Hkv, S, D = case.batch, case.heads, case.kv_heads, case.seq, case.head_dim
    q = torch.randn(B, H, S, D, generator=gen).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    v = torch.randn(B, Hkv, S, D, generator=gen).to(dtype)
    scale = 1.0 / math.sqrt(D)
    times = {}
    with torch.no_grad():
        times["fwd"] = median_ms(lambda: anchor(case, q, k, v, scale), reps, budget_s)
    if case.backward:
        dout = torch.randn(B, H, S, D, generator=gen).to(dtype)
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

        def step():
            qg.grad = kg.grad = vg.grad = None
            anchor(case, qg, kg, vg, scale).backward(dout)

        times["fwd+bwd"] = median_ms(step, reps, budget_s)
    return times


def run_dring(binary, case, threads, reps, env_changes, dtype):
    """One `dring run` of the case under mpirun -np 1: (JSON report, command line, sgemm engine).

    env_changes maps a variable to its value, or to None to unset it. OPENBLAS_VERBOSE=2 makes
    OpenBLAS name the kernel set it picked on stderr.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = ["mpirun", "-q", "-np", "1", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        cmd += [str(binary), "run", "--seq", str(case.seq), "--batch", str(case.batch), "--heads", str(case.heads),
                "--kv-heads", str(case.kv_heads), "--head-dim", str(case.head_dim), "--threads", str(threads),
                "--repeat", str(reps), "--json", report, "--quiet", "--dtype", dtype]
        if case.segments:
            cmd += ["--segments", ",".join(map(str, case.segments)), "--dilations", ",".join(map(str, case.dilations))]
        if case.causal:
            cmd.append("--causal")
        if case.backward:
            cmd.append("--backward")
        env = dict(os.environ, OPENBLAS_VERBOSE="2")
        prefix = []
        for key, value in env_changes.items():
            if value is None:
                env.pop(key, None)
                prefix += ["-u", key]
            else:
                env[key] = value
                prefix.append(f"{key}={value}")
        line = " ".join((["env"] + prefix if prefix else []) + cmd)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{line} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        cores = [w.split(":", 1)[1].strip() for w in done.stderr.splitlines() if w.startswith("Core: ")]
        with open(report) as f:
            doc = json.load(f)
        # The kernels' engine as the report names it (oneDNN, or OpenBLAS and the core it picked).
        engine = doc.get("cpu_gemm") or (f"openblas ({cores[-1]})" if cores else "?")
        return doc, line, engine


# ---------------------------------------------------------------------------------------------
# Report

def machine():
    model = "unknown"
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {"cpu_model": model, "cores": len(os.sched_getaffinity(0)),
            "cpu_features": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})}


def fmt(value, spec, unit=""):
    return "-" if value is None else format(value, spec) + unit


def print_table(rows, show_env):
    header = ["case", "threads", "pass", "torch ms", "dring ms", "speedup", "sgemm GF/s", "dring GF/s", "of sgemm"]
    if show_env:
        header.insert(3, "dring env: sgemm engine")
    lines = [header]
    for r in rows:
        line = [r["case"], str(r["threads"]), r["pass"], fmt(r["torch_ms"], ".1f"), fmt(r["dring_ms"], ".1f"),
                fmt(r["speedup"], ".2f", "x"), fmt(r["sgemm_gflops"], ".0f"), fmt(r["dring_gflops"], ".1f"),
                fmt(r["dring_fraction_of_sgemm"], ".1%")]
        if show_env:
            line.insert(3, f"{r['dring_env']}: {r['dring_sgemm_engine']}")
        lines.append(line)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if c < 4 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths))))


def write_json(path, content):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(content, indent=2) + "\n")
        print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only the float64 check of the anchors")
    parser.add_argument("--no-check", action="store_true", help="skip the float64 check before timing")
    parser.add_argument("--quick", action="store_true", help="S=4096 instead of 32768")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="storage of q, k, v, dout on both sides (default fp32)")
    parser.add_argument("--dring", default=str(REPO / "build" / "bin" / "dring"), help="the dring binary")
    parser.add_argument("--no-dring", action="store_true", help="time PyTorch only")
    parser.add_argument("--threads", default=None, help="thread counts, e.g. 1,2 (default: 1 and all cores)")
    parser.add_argument("--only", default=None, help="only the cases whose name contains this")
    parser.add_argument("--reps", type=int, default=None, help="timed passes after a warm-up (default 5, full 3)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed passes per measurement")
    parser.add_argument("--dring-env", action="append", default=[], metavar="VAR=VALUE",
                        help="also run dring with this variable set (repeatable), e.g. OPENBLAS_CORETYPE=SkylakeX")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    check = None
    if not args.no_check:
        passed, results = run_check()
        check = {"passed": passed, "tolerance": TOLERANCE, "cases": results}
        if args.check or not passed:
            write_json(args.json, {"check": check})
            return 0 if passed else 1

    cores = len(os.sched_getaffinity(0))
    threads = sorted({int(t) for t in args.threads.split(",")} if args.threads else {1, cores})
    reps = args.reps or (5 if args.quick else 3)
    binary = Path(args.dring)
    use_dring = not args.no_dring
    if use_dring and not os.access(binary, os.X_OK):
        print(f"dring binary {binary} not found: timing PyTorch only (build it with launch/build.sh, or pass --dring)")
        use_dring = False
    openblas_env = {key: os.environ[key] for key in OPENBLAS_VARS if key in os.environ}
    dring_envs = [("as-is", {})]
    if openblas_env:
        dring_envs.append(("OPENBLAS unset", {key: None for key in OPENBLAS_VARS}))
    for spec in args.dring_env:
        key, _, value = spec.partition("=")
        dring_envs.append((spec, {key: value}))
    if not use_dring:
        dring_envs = []

    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **machine(),
            "torch": torch.__version__, "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
            "dilated_kernel": "aten._scaled_dot_product_flash_attention_for_cpu" if HAVE_FLASH else "explicit scores",
            "openblas_env": openblas_env, "dring": str(binary) if use_dring else None,
            "quick": args.quick, "dtype": args.dtype, "threads": threads, "load_average_start": os.getloadavg()}
    print(f"{info['date']}  {info['cpu_model']}, {cores} cores {' '.join(info['cpu_features'])}, "
          f"load average {info['load_average_start'][0]:.2f}")
    print(f"torch {info['torch']} (BLAS {info['torch_blas']}), dilated anchor: {info['dilated_kernel']}; "
          f"OPENBLAS variables: {openblas_env or 'none set'}")

    n = 2048 if args.quick else 4096
    sgemm = {t: sgemm_gflops(t, n, reps) for t in threads}
    print("sgemm ceiling (torch.mm, fp32, n=%d): %s" % (n, ", ".join(f"{t} thread{'s' * (t > 1)} {g:.0f} GFLOP/s" for t, g in sgemm.items())))

    rows, commands = [], []
    for case in bench_cases(args.quick):
        if args.only and args.only not in case.name:
            continue
        flops = case.forward_flops()
        for t in threads:
            torch_times = time_torch(case, t, reps, args.budget,
                                     torch.bfloat16 if args.dtype == "bf16" else torch.float32)
            dring_times, engines = {}, {}
            for label, changes in dring_envs:
                report, line, engines[label] = run_dring(binary, case, t, torch_times["fwd"][1], changes, args.dtype)
                commands.append(line)
                if abs(report["flops"] - flops) > 1e-6 * flops:
                    print(f"warning: dring counts {report['flops']:.4g} FLOPs for {case.name}, this script {flops:.4g}")
                fwd = report["time_ms"]
                dring_times[label] = {"fwd": (fwd, report["ranks"][0]["compute_ms"])}
                if case.backward:
                    bwd = report["backward"]["time_ms"]
                    dring_times[label]["fwd+bwd"] = (fwd + bwd, report["ranks"][0]["compute_ms"]
                                                     + report["backward"]["ranks"][0]["compute_ms"])
            for pass_name, (torch_ms, torch_reps) in torch_times.items():
                pass_flops = flops * (1.0 if pass_name == "fwd" else 3.5)
                for label, _ in dring_envs or [("-", {})]:
                    dring_ms, compute_ms = dring_times.get(label, {}).get(pass_name, (None, None))
                    dring_gflops = pass_flops / (dring_ms * 1e6) if dring_ms else None
                    rows.append({
                        "case": case.name, "seq": case.seq, "heads": case.heads, "kv_heads": case.kv_heads,
                        "head_dim": case.head_dim, "batch": case.batch, "segments": case.segments,
                        "dilations": case.dilations, "causal": case.causal, "dtype": args.dtype, "threads": t,
                        "pass": pass_name,
                        "dring_env": label, "dring_sgemm_engine": engines.get(label), "flops": pass_flops,
                        "reps": torch_reps,
                        "torch_ms": torch_ms, "torch_gflops": pass_flops / (torch_ms * 1e6),
                        "dring_ms": dring_ms, "dring_compute_ms": compute_ms, "dring_gflops": dring_gflops,
                        "speedup": torch_ms / dring_ms if dring_ms else None,
                        "sgemm_gflops": sgemm[t], "load_average": os.getloadavg()[0],
                        "dring_fraction_of_sgemm": dring_gflops / sgemm[t] if dring_gflops else None})
            print(f"  done: {case.name}, {t} thread{'s' * (t > 1)}", flush=True)

    print()
    print("times: median wall ms of a pass (dring: its report's time_ms); speedup: torch ms / dring ms; "
          "fwd+bwd FLOPs 3.5x fwd")
    print_table(rows, bool(dring_envs))
    info["load_average_end"] = os.getloadavg()
    write_json(args.json, {"machine": info, "sgemm_gflops": {str(t): g for t, g in sgemm.items()}, "sgemm_n": n,
                           "check": check, "dring_commands": commands, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
