"""The PyTorch embedding (examples/torch/dring_torch.py) under mpirun: each rank's out and
q/k/v gradients through dring's C ABI equal PyTorch's own autograd, in float64, on a dense
expression of the same function (a score matrix weighted by the number of pairs connecting each
query and key). Usage: mpirun -np K python3 test_torch_autograd.py LIBDRING."""
import os
import sys

import torch
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "torch"))
import dring_torch  # noqa: E402


def weights(seq, heads, pairs, causal):
    """[H, S, S]: how many pairs connect query i to key j for head h (docs/math.md)."""
    i = torch.arange(seq).view(-1, 1)
    j = torch.arange(seq).view(1, -1)
    m = torch.zeros(heads, seq, seq, dtype=torch.float64)
    for w, r in pairs:
        w = min(w, seq)
        for h in range(heads):
            off = h % r
            m[h] += (((i % w) % r == off) & ((j % w) % r == off) & (i // w == j // w)
                     & ((j <= i) if causal else torch.ones_like(i == j))).double()
    return m


def reference(q, k, v, pairs, causal, scale):
    """Dense float64 attention with multiset weights; autograd gives its exact gradient."""
    b, s, h, d = q.shape
    group = h // k.shape[2]
    kk = k.repeat_interleave(group, dim=2)
    vv = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, kk) * scale
    m = weights(s, h, pairs, causal).unsqueeze(0)
    scores = scores.masked_fill(m == 0, float("-inf"))
    p = m * torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    p = p / p.sum(dim=-1, keepdim=True)
    return torch.einsum("bhij,bjhd->bihd", p, vv)


def main():
    library = sys.argv[1]
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    failures = 0
    # Where every rank has a GPU (and dring was built with CUDA), the same cases run on GPU tensors
    # too; decided together, so no rank skips a collective the others enter.
    cuda = comm.allreduce(int(torch.cuda.is_available()), op=MPI.MIN) == 1
    runs = [("cpu", torch.float32, 1e-5)]
    if cuda:
        torch.cuda.set_device(comm.rank % torch.cuda.device_count())
        runs += [("cuda", torch.float32, 1e-4), ("cuda", torch.bfloat16, 3e-2)]
    cases = [
        ("dense", 2, 37, 2, 2, 8, [], False),
        ("dilated_gqa_causal", 2, 41, 6, 2, 8, [(8, 2), (24, 1), (64, 4)], True),
        ("dilated", 1, 53, 4, 4, 16, [(16, 1), (32, 4)], False),
    ]
    for name, b, s, h, hkv, d, pairs, causal in cases:
        torch.manual_seed(7)
        q = torch.randn(b, s, h, d, dtype=torch.float64)
        k = torch.randn(b, s, hkv, d, dtype=torch.float64)
        v = torch.randn(b, s, hkv, d, dtype=torch.float64)
        w = torch.randn(b, s, h, d, dtype=torch.float64)  # loss = sum(out * w)
        scale = 0.3
        qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
        out_ref = reference(qr, kr, vr, pairs or [(s, 1)], causal, scale)
        (out_ref * w).sum().backward()

        for device, dtype, tolerance in runs:
            with dring_torch.DringContext(comm, seq=s, heads=h, kv_heads=hkv, head_dim=d, batch=b,
                                          segments=[p[0] for p in pairs], dilations=[p[1] for p in pairs],
                                          causal=causal, scale=scale, threads=1, device=device, dtype=dtype,
                                          library=library) as ctx:
                rows = slice(ctx.begin, ctx.begin + ctx.rows)
                qs, ks, vs = (x[:, rows].to(device, dtype).contiguous().requires_grad_() for x in (q, k, v))
                out = dring_torch.dring_attention(qs, ks, vs, ctx)
                (out * w[:, rows].to(device, dtype)).sum().backward()
                checks = [("out", out.detach(), out_ref.detach()[:, rows]), ("dq", qs.grad, qr.grad[:, rows]),
                          ("dk", ks.grad, kr.grad[:, rows]), ("dv", vs.grad, vr.grad[:, rows])]
                for what, got, want in checks:
                    err = (got.double().cpu() - want).abs().max().item() / want.abs().max().item()
                    if err > tolerance:
                        print(f"rank {comm.rank}: {name} ({device}, {dtype}): {what} differs from torch "
                              f"autograd: {err:.3g}", flush=True)
                        failures += 1
        # A bad call raises DringError with dring's message, on every rank alike.
        try:
            dring_torch.DringContext(comm, seq=s, heads=h, kv_heads=hkv, head_dim=d, segments=[6],
                                     dilations=[4], library=library)
            failures += 1
        except dring_torch.DringError as e:
            if e.status != 1 or "not a multiple" not in str(e):
                failures += 1
    failures = comm.allreduce(failures, op=MPI.MAX)
    if comm.rank == 0:
        where = "cpu and cuda" if cuda else "cpu (no GPU: cuda cases skipped)"
        print(f"test_torch_autograd on {comm.size} rank(s), {where}: {'FAILED' if failures else 'passed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
