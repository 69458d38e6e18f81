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


def pair_weights(seq, heads, pairs, causal):
    """[H, S, S]: how many pairs connect query i to key j for head h (the multiset of docs/math.md)."""
    i = torch.arange(seq).view(-1, 1)
    j = torch.arange(seq).view(1, -1)
    m = torch.zeros(heads, seq, seq, dtype=torch.float64)
    for w, r in pairs:
        w = min(w, seq)
        for h in range(heads):
            off = h % r
            linked = ((i % w) % r == off) & ((j % w) % r == off) & (i // w == j // w)
            if causal:
                linked = linked & (j <= i)
            m[h] += linked.double()
    return m


def explicit_attention(q, k, v, pairs, causal, scale):
    """out [B,S,H,D] and lse [B,H,S]: a softmax over each row's keys, weighted by pair multiplicity."""
    group = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, kk) * scale
    m = pair_weights(q.shape[1], q.shape[2], pairs, causal).unsqueeze(0)
    scores = scores.masked_fill(m == 0, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True)
    p = m * torch.exp(scores - top)
    total = p.sum(dim=-1, keepdim=True)
    lse = (top + torch.log(total)).squeeze(-1)
    return torch.einsum("bhij,bjhd->bihd", p / total, vv), lse


def sdpa_attention(q, k, v, causal, scale):
    """PyTorch's scaled_dot_product_attention; GQA by repeating kv heads; scale folded into q (the
    scale= argument is torch >= 2.1 only)."""
    group = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    q = q * (scale * q.shape[-1] ** 0.5)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), kk.transpose(1, 2),
                                                           vv.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


# name, batch, seq, heads, kv_heads, head_dim, pairs ([] is dense), causal, scale (None: 1/sqrt(D))
CASES = [
    ("dense", 2, 37, 2, 2, 8, [], False, 0.3),
    ("dense_causal_gqa", 1, 41, 6, 2, 8, [], True, None),
    ("dilated_gqa_causal", 2, 41, 6, 2, 8, [(8, 2), (24, 1), (64, 4)], True, 0.3),
    ("dilated", 1, 53, 4, 4, 16, [(16, 1), (32, 4)], False, None),
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


def gather_rows(comm, t):
    """The whole sequence: every rank's rows (dim 1), in rank order."""
    return torch.cat([torch.from_numpy(x) for x in comm.allgather(t.detach().double().cpu().numpy())], dim=1)


def run_case(check, comm, case, device, dtype, tolerance):
    name, b, s, h, hkv, d, pairs, causal, scale = case
    torch.manual_seed(7)
    q, k, v, w = (torch.randn(b, s, n, d, dtype=torch.float64) for n in (h, hkv, hkv, h))  # loss = sum(out * w)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    by_sdpa = HAVE_SDPA and not pairs
    if by_sdpa:
        out_ref = sdpa_attention(qr, kr, vr, causal, scale or d ** -0.5)
        lse_ref = None
    else:
        out_ref, lse_ref = explicit_attention(qr, kr, vr, pairs or [(s, 1)], causal, scale or d ** -0.5)
    (out_ref * w).sum().backward()

    begin, rows = dring.shard_range(s, comm)
    mine = slice(begin, begin + rows)
    qs, ks, vs = (x[:, mine].to(device, dtype).requires_grad_() for x in (q, k, v))
    out, lse = dring.attention(qs, ks, vs, seq=s, comm=comm, pairs=pairs, causal=causal, scale=scale, threads=1,
                               return_lse=True)
    (out * w[:, mine].to(device, dtype)).sum().backward()
    what = f"{name} ({device}, {dtype}, vs {'sdpa' if by_sdpa else 'explicit softmax'})"
    for label, got, want in (("out", out, out_ref), ("dq", qs.grad, qr.grad), ("dk", ks.grad, kr.grad),
                             ("dv", vs.grad, vr.grad)):
        check.close(f"{what}: {label}", gather_rows(comm, got), want.detach(), tolerance)
    if lse_ref is not None:
        got = torch.cat([torch.from_numpy(x) for x in comm.allgather(lse.double().cpu().numpy())], dim=2)
        check.close(f"{what}: lse", got, lse_ref.detach(), tolerance)


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
