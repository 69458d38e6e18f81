"""dring.attention (the Python package, python/dring) under mpirun against PyTorch itself.

Every rank builds the whole sequence's q, k, v from one seed; dring computes out and the q, k, v
gradients of each rank's rows; the rows are gathered from all ranks into the whole sequence and
compared with PyTorch's own attention on it, in float64, with PyTorch's autograd for the gradients:
torch.nn.functional.scaled_dot_product_attention for dense, causal and GQA (kv heads repeated)
problems where torch >= 2 has it, and for dilated problems (and every problem on an older torch)
an explicit masked softmax written here from the definition (docs/math.md), so the comparison uses
nothing of dring's.

Usage: mpirun -np K python3 test_attention.py [--installed]
  --installed: the package must be the pip-installed one, with its own libdring.so (not
  $DRING_LIBRARY, not the source tree), and its version the CMake project's.
"""
import os
import sys

import torch
from mpi4py import MPI

import dring

HAVE_SDPA = hasattr(torch.nn.functional, "scaled_dot_product_attention")


def pair_weights(seq, heads, pairs, causal, doc_lens=(), window=0):
    """[H, S, S]: how many pairs connect query i to key j for head h (the multiset of docs/math.md),
    inside each document (positions counted from its start, segments cut to its length; dense is
    the pair (document length, 1)), with |i - j| < window when a window is given."""
    m = torch.zeros(heads, seq, seq, dtype=torch.float64)
    start = 0
    for n in (doc_lens or (seq,)):
        i = torch.arange(n).view(-1, 1)
        j = torch.arange(n).view(1, -1)
        for w, r in (pairs or [(n, 1)]):
            w = min(w, n)
            for h in range(heads):
                off = h % r
                linked = ((i % w) % r == off) & ((j % w) % r == off) & (i // w == j // w)
                if causal:
                    linked = linked & (j <= i)
                if window:
                    linked = linked & ((i - j).abs() < window)
                m[h, start:start + n, start:start + n] += linked.double()
        start += n
    return m


def explicit_attention(q, k, v, pairs, causal, scale, doc_lens=(), window=0):
    """out [B,S,H,D] and lse [B,H,S]: a softmax over each row's keys, weighted by pair multiplicity;
    a row without keys has out 0 and lse -inf."""
    group = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, kk) * scale
    m = pair_weights(q.shape[1], q.shape[2], pairs, causal, doc_lens, window).unsqueeze(0)
    scores = scores.masked_fill(m == 0, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)  # rows without keys
    p = m * torch.exp(scores - top)
    total = p.sum(dim=-1, keepdim=True)
    lse = (top + torch.log(total)).squeeze(-1)
    return torch.einsum("bhij,bjhd->bihd", p / total.clamp_min(1e-300), vv), lse


def sdpa_attention(q, k, v, causal, scale):
    """PyTorch's scaled_dot_product_attention; GQA by repeating kv heads; scale folded into q (the
    scale= argument is torch >= 2.1 only)."""
    group = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    q = q * (scale * q.shape[-1] ** 0.5)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), kk.transpose(1, 2),
                                                           vv.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


# name, batch, seq, heads, kv_heads, head_dim, pairs ([] is dense), causal, scale (None: 1/sqrt(D)),
# and optionally a dict of trainer features: doc_lens or cu_seqlens, window, layout.
CASES = [
    ("dense", 2, 37, 2, 2, 8, [], False, 0.3),
    ("dense_causal_gqa", 1, 41, 6, 2, 8, [], True, None),
    ("dilated_gqa_causal", 2, 41, 6, 2, 8, [(8, 2), (24, 1), (64, 4)], True, 0.3),
    ("dilated", 1, 53, 4, 4, 16, [(16, 1), (32, 4)], False, None),
    # Trainer features (docs/math.md): the layout changes only which rows a rank holds.
    ("zigzag_causal_docs", 1, 43, 4, 2, 8, [], True, None, dict(layout="zigzag", doc_lens=[7, 1, 20, 15])),
    ("striped_window_gqa", 1, 41, 4, 2, 8, [], True, 0.3, dict(layout="striped", window=5)),
    ("striped2_dilated_cu_seqlens_window", 2, 38, 4, 4, 8, [(8, 2), (16, 1)], False, None,
     dict(layout="striped:2", cu_seqlens=torch.tensor([0, 11, 12, 38], dtype=torch.int32), window=9)),
    ("contiguous_dilated_docs_causal", 1, 45, 4, 2, 8, [(8, 2), (32, 4)], True, None,
     dict(doc_lens=[30, 15])),
]


class Checker:
    def __init__(self, comm):
        self.comm, self.failures, self.checks = comm, 0, 0

    def expect(self, ok, message):
        self.checks += 1
        if not ok:
            self.failures += 1
            print(f"rank {self.comm.rank}: {message}", flush=True)

    def close(self, what, got, want, tolerance):
        err = (got.double().cpu() - want).abs().max().item() / max(want.abs().max().item(), 1e-30)
        self.expect(err <= tolerance, f"{what} differs from torch by {err:.3g} (tolerance {tolerance})")


def gather_rows(comm, t, positions, dim=1):
    """The whole sequence in natural order: every rank's rows (along dim) put at its positions."""
    parts = comm.allgather((positions.numpy(), t.detach().double().cpu().numpy()))
    whole = torch.empty(t.shape[:dim] + (sum(len(p) for p, _ in parts),) + t.shape[dim + 1:], dtype=torch.float64)
    for pos, rows in parts:
        whole.index_copy_(dim, torch.from_numpy(pos), torch.from_numpy(rows))
    return whole


def run_case(check, comm, case, device, dtype, tolerance):
    name, b, s, h, hkv, d, pairs, causal, scale = case[:9]
    extra = dict(case[9]) if len(case) > 9 else {}
    layout = extra.get("layout", "contiguous")
    doc_lens = extra.get("doc_lens")
    if doc_lens is None and extra.get("cu_seqlens") is not None:
        cu = extra["cu_seqlens"].tolist()
        doc_lens = [b_ - a_ for a_, b_ in zip(cu, cu[1:])]
    torch.manual_seed(7)
    q, k, v, w = (torch.randn(b, s, n, d, dtype=torch.float64) for n in (h, hkv, hkv, h))  # loss = sum(out * w)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    by_sdpa = HAVE_SDPA and not pairs and not extra
    if by_sdpa:
        out_ref = sdpa_attention(qr, kr, vr, causal, scale or d ** -0.5)
        lse_ref = None
    else:
        out_ref, lse_ref = explicit_attention(qr, kr, vr, pairs, causal, scale or d ** -0.5, doc_lens,
                                              extra.get("window", 0))
    (out_ref * w).sum().backward()

    positions = dring.shard_positions(s, comm, layout=layout)
    if layout == "contiguous":
        begin, rows = dring.shard_range(s, comm)
        check.expect(torch.equal(positions, torch.arange(begin, begin + rows)), f"{name}: shard_positions != range")
    qs, ks, vs = (x[:, positions].to(device, dtype).requires_grad_() for x in (q, k, v))
    out, lse = dring.attention(qs, ks, vs, seq=s, comm=comm, pairs=pairs, causal=causal, scale=scale, threads=1,
                               return_lse=True, **extra)
    (out * w[:, positions].to(device, dtype)).sum().backward()
    what = f"{name} ({device}, {dtype}, vs {'sdpa' if by_sdpa else 'explicit softmax'})"
    for label, got, want in (("out", out, out_ref), ("dq", qs.grad, qr.grad), ("dk", ks.grad, kr.grad),
                             ("dv", vs.grad, vr.grad)):
        check.close(f"{what}: {label}", gather_rows(comm, got, positions), want.detach(), tolerance)
    if lse_ref is not None:
        got = gather_rows(comm, lse, positions, dim=2)
        finite = torch.isfinite(lse_ref)
        check.expect(torch.equal(torch.isfinite(got), finite), f"{what}: lse is -inf on other rows than torch's")
        check.close(f"{what}: lse", got[finite], lse_ref.detach()[finite], tolerance)


def check_package(check, comm, installed):
    """Version, library, shard layout, the context cache, eviction before backward, errors."""
    check.expect(dring.__version__ == dring.library_version(),
                 f"dring.__version__ {dring.__version__} != libdring's {dring.library_version()}")
    if installed:
        package_dir = os.path.dirname(os.path.abspath(dring.__file__))
        check.expect("site-packages" in package_dir and "DRING_LIBRARY" not in os.environ
                     and dring.library_path().startswith(package_dir),
                     f"not the installed package: {dring.__file__}, library {dring.library_path()}")

    # shard_range's arithmetic is the layout libdring computes for its contexts.
    for seq in (comm.size, 37, 100):
        with dring.Context(comm=comm, seq=seq, heads=2, head_dim=4, threads=1) as ctx:
            check.expect((ctx.begin, ctx.rows) == dring.shard_range(seq, comm),
                         f"shard_range({seq}) {dring.shard_range(seq, comm)} != libdring's {(ctx.begin, ctx.rows)}")
            begin, rows = ctx.begin, ctx.rows
            q = torch.randn(1, rows, 2, 4, requires_grad=True)
            out = dring.attention(q, q, q, context=ctx)
            out.sum().backward()
            check.expect(out.shape == q.shape and q.grad is not None, "attention with context= failed")

    # shard_positions' arithmetic is the layout libdring computes, for every layout.
    for layout in ("contiguous", "zigzag", "striped", "striped:3"):
        seq = 4 * comm.size + 3
        with dring.Context(comm=comm, seq=seq, heads=2, head_dim=4, threads=1, layout=layout) as ctx:
            mine = dring.shard_positions(seq, comm, layout=layout)
            check.expect(torch.equal(ctx.positions(), mine),
                         f"shard_positions({seq}, {layout}) {mine.tolist()} != libdring's {ctx.positions().tolist()}")
    everyone = torch.cat([dring.shard_positions(50, layout="zigzag", rank=r, world_size=3) for r in range(3)])
    check.expect(torch.equal(everyone.sort().values, torch.arange(50)), "zigzag positions do not cover the sequence")

    # Bad documents, windows and layouts: DringError naming the problem, on every rank alike.
    x1 = torch.randn(1, dring.shard_range(29, comm)[1], 2, 8)
    for kwargs, want in ((dict(doc_lens=[10, 18]), "sum to 28"), (dict(doc_lens=[29, 0]), "length 0"),
                         (dict(window=0), "window must be at least 1"), (dict(layout="diagonal"), "unknown layout"),
                         (dict(cu_seqlens=[0, 20, 10, 29]), "not increasing"),
                         (dict(cu_seqlens=[0, 29], doc_lens=[10, 19]), "disagree")):
        try:
            dring.attention(x1, x1, x1, seq=29, comm=comm, threads=1, **kwargs)
            check.expect(False, f"{kwargs} was accepted")
        except dring.DringError as e:
            check.expect(e.status == 1 and want in str(e), f"wrong error for {kwargs}: {e}")

    # One context per (communicator, problem): a training loop's steps reuse it.
    from dring import _context
    dring.clear_cache()
    begin, rows = dring.shard_range(29, comm)
    for _ in range(3):
        x = torch.randn(1, rows, 2, 8)
        dring.attention(x, x, x, seq=29, comm=comm, causal=True, threads=1)
    check.expect(len(_context._cache) == 1, f"3 steps of one problem made {len(_context._cache)} contexts")

    # A context evicted between forward and backward is made again for the backward pass.
    dring.set_cache_size(1)
    x = torch.randn(1, rows, 2, 8, dtype=torch.float64)
    xa = x.float().requires_grad_()
    out_a = dring.attention(xa, xa, xa, seq=29, comm=comm, causal=True, threads=1)
    xb = x.float().requires_grad_()
    dring.attention(xb, xb, xb, seq=29, comm=comm, causal=False, threads=1).sum().backward()
    out_a.sum().backward()
    xc = x.float().requires_grad_()
    dring.set_cache_size(16)
    dring.attention(xc, xc, xc, seq=29, comm=comm, causal=True, threads=1).sum().backward()
    check.expect(torch.equal(xa.grad, xc.grad), "backward after its context was evicted differs")

    # libdring's errors arrive as DringError with its message, on every rank alike.
    try:
        dring.attention(x.float(), x.float(), x.float(), seq=29, comm=comm, pairs=[(6, 4)])
        check.expect(False, "segment 6 with dilation 4 was accepted")
    except dring.DringError as e:
        check.expect(e.status == 1 and "not a multiple" in str(e), f"wrong error for segment 6, dilation 4: {e}")
    try:
        dring.attention(x, x, x, seq=29, comm=comm)
        check.expect(False, "float64 CPU tensors were accepted")
    except dring.DringError as e:
        check.expect(e.status == 1 and "float32" in str(e), f"wrong error for float64: {e}")


def main():
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    check = Checker(comm)
    # Where every rank has a GPU, the same cases run on GPU tensors too (decided together, so no
    # rank skips a collective that others enter); a CPU-only libdring says so and they are skipped.
    runs = [("cpu", torch.float32, 2e-5)]
    cuda = comm.allreduce(int(torch.cuda.is_available()), op=MPI.MIN) == 1
    if cuda:
        torch.cuda.set_device(comm.rank % torch.cuda.device_count())
        runs += [("cuda", torch.float32, 1e-4), ("cuda", torch.bfloat16, 3e-2)]
    skipped = []
    for device, dtype, tolerance in runs:
        for case in CASES:
            try:
                run_case(check, comm, case, device, dtype, tolerance)
            except dring.DringError as e:
                if device == "cuda" and e.status == 6:
                    skipped.append(f"{case[0]} on cuda ({e})")
                else:
                    raise
    check_package(check, comm, "--installed" in sys.argv)

    failures = comm.allreduce(check.failures)
    checks = comm.allreduce(check.checks)
    if comm.rank == 0:
        how = ("dense/causal/GQA against scaled_dot_product_attention, dilated against an explicit masked softmax"
               if HAVE_SDPA else f"torch {torch.__version__} has no scaled_dot_product_attention: every case "
                                 "against an explicit masked softmax")
        where = "cpu and cuda" if cuda else "cpu (no GPU: cuda cases skipped)"
        print(f"test_attention, {comm.size} rank(s), torch {torch.__version__}, {where}; {how}"
              + (f"; skipped: {skipped}" if skipped else ""))
        print(f"{checks - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
