"""dring.attention: dilated attention of this rank's rows as a torch.autograd.Function, whose
forward is dring_forward and whose backward is dring_backward (the exact gradient)."""
import torch

from . import _lib
from ._context import cached_context
from ._lib import DringError


class Attention(torch.autograd.Function):
    """apply(q, k, v, context, return_lse): out (and lse, not differentiable) of this rank's rows."""

    @staticmethod
    def forward(fctx, q, k, v, context, return_lse):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        for name, t, heads in (("q", q, context.heads), ("k", k, context.kv_heads), ("v", v, context.kv_heads)):
            context.require(name, t, heads)
        out, lse = context.forward(q, k, v)
        fctx.save_for_backward(q, k, v, out, lse)
        fctx.context = context
        if return_lse:
            fctx.mark_non_differentiable(lse)
            return out, lse
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # dring_backward has no gradient of its own
    def backward(fctx, dout, *_):
        q, k, v, out, lse = fctx.saved_tensors
        context = fctx.context
        if context.closed:
            recreate = getattr(context, "recreate", None)
            if recreate is None:
                raise DringError(_lib.INVALID_ARGUMENT, "dring: the context of this forward pass was closed before "
                                                        "its backward pass")
            # Evicted from the cache since the forward pass (collectively, on every rank alike): the
            # same problem again; out and lse were saved, so nothing of the old context is needed.
            context = recreate()
        dq, dk, dv = context.backward(q, k, v, out, lse, dout.contiguous().to(q.dtype))
        return dq, dk, dv, None, None


def attention(q, k, v, *, seq=None, comm=None, group=None, pairs=None, segments=None, dilations=None,
              causal=False, scale=None, threads=0, exchange_chunk_bytes=0, return_lse=False, context=None,
              doc_lens=None, cu_seqlens=None, window=None, layout="contiguous"):
    """Dilated (LongNet) attention of this rank's rows of a sequence sharded over the ranks.

    q: [batch, rows, heads, head_dim]; k, v: [batch, rows, kv_heads, head_dim] (kv_heads divides
    heads: grouped-query attention); rows are this rank's, dring.shard_positions(seq, comm, layout=layout)
    (for the contiguous layout the range dring.shard_range(seq, comm)). Returns
    out like q (and with return_lse=True also lse [batch, heads, rows], float32, not
    differentiable). Forward and backward are collective: every rank of the communicator calls them
    in the same order with the same problem.

    seq: the whole sequence's length. comm: an mpi4py communicator; without one, MPI.COMM_WORLD when
    an MPI launcher started the process, else (CUDA tensors only) the torch.distributed group
    `group` or the default one. pairs: [(segment, dilation), ...] or segments= and dilations=; none
    is dense attention. causal; scale (default 1/sqrt(head_dim)). doc_lens=[l1, l2, ...] (summing to
    seq) or cu_seqlens=[0, l1, l1+l2, ..., seq] (a list or an integer tensor): packed documents, each
    attending only within itself. window=W: only keys with |i - j| < W. layout: "contiguous",
    "zigzag" (balances causal work), "striped" or "striped:N"; it decides which rows this rank
    holds (shard_positions), never the result. threads: kernel threads per rank
    (0: the node's cores over its ranks). The context of each (communicator, problem) is created
    once and cached (dring.clear_cache); context= passes one made by dring.Context instead.
    """
    if context is None:
        if seq is None:
            raise DringError(_lib.INVALID_ARGUMENT, "dring.attention: seq= (the whole sequence's length) is "
                                                    "required: q holds only this rank's rows")
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise DringError(_lib.INVALID_ARGUMENT, "dring.attention: q, k and v must be [batch, rows, heads, "
                                                    f"head_dim], got {tuple(q.shape)}, {tuple(k.shape)}, "
                                                    f"{tuple(v.shape)}")
        batch, _, heads, head_dim = q.shape
        spec = dict(seq=seq, batch=batch, heads=heads, kv_heads=k.shape[2], head_dim=head_dim, pairs=pairs,
                    segments=segments, dilations=dilations, causal=causal, scale=scale, comm=comm, group=group,
                    device=q.device, dtype=q.dtype, threads=threads, exchange_chunk_bytes=exchange_chunk_bytes,
                    doc_lens=doc_lens, cu_seqlens=cu_seqlens, window=window, layout=layout)
        context = cached_context(**spec)
    return Attention.apply(q, k, v, context, bool(return_lse))
