"""attention.py: dring's PyTorch op in a program of its own (README.md, Embedding, shows it whole;
tests/python runs it under mpirun and fails if the copy there differs). Causal GQA attention over
the ranks of MPI_COMM_WORLD: each rank passes its rows of q, k, v, gets its rows of out and, from
backward, of the gradients, and checks out and dq against plain PyTorch on the whole sequence.
Run: mpirun -np 2 python3 examples/torch/attention.py (after pip install ./python)"""
import torch
from mpi4py import MPI

import dring

comm = MPI.COMM_WORLD
seq, heads, kv_heads, head_dim = 1024, 8, 2, 32
torch.manual_seed(0)  # the whole sequence, the same on every rank (for the check below)
q, k, v = (torch.randn(1, seq, n, head_dim) for n in (heads, kv_heads, kv_heads))

begin, rows = dring.shard_range(seq, comm)  # this rank's rows: begin .. begin + rows
mine = slice(begin, begin + rows)
qs, ks, vs = (x[:, mine].clone().requires_grad_() for x in (q, k, v))
# Dense here; LongNet's dilated attention is pairs=[(segment, dilation), ...], e.g. [(256, 1), (1024, 4)].
out = dring.attention(qs, ks, vs, seq=seq, comm=comm, causal=True)
out.square().sum().backward()  # qs.grad, ks.grad, vs.grad: this rank's rows

# PyTorch on the whole sequence: row i of head h attends to keys 0..i of kv head h // (heads // kv_heads).
q_ref = q[:, mine].clone().requires_grad_()
kk, vv = (x.repeat_interleave(heads // kv_heads, dim=2) for x in (k, v))
scores = torch.einsum("bihd,bjhd->bhij", q_ref, kk) / head_dim ** 0.5
scores = scores.masked_fill(torch.arange(seq) > torch.arange(begin, begin + rows)[:, None], float("-inf"))
ref = torch.einsum("bhij,bjhd->bihd", scores.softmax(dim=-1), vv)
ref.square().sum().backward()
err = max((out - ref).abs().max().item() / ref.abs().max().item(),
          (qs.grad - q_ref.grad).abs().max().item() / q_ref.grad.abs().max().item())
err = comm.allreduce(err, op=MPI.MAX)
if comm.rank == 0:
    print(f"dring {dring.__version__}: {comm.size} ranks, causal GQA, seq {seq}: out and dq vs PyTorch, max "
          f"relative error {err:.1e}: {'passed' if err < 1e-4 else 'FAILED'}")
raise SystemExit(0 if err < 1e-4 else 1)
