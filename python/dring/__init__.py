"""dring: sequence-parallel dilated (LongNet) ring attention for PyTorch, over MPI.

    from mpi4py import MPI
    import dring

    begin, rows = dring.shard_range(seq, MPI.COMM_WORLD)      # this rank's rows of the sequence
    out = dring.attention(q, k, v, seq=seq, comm=MPI.COMM_WORLD,
                          pairs=[(2048, 1), (8192, 2)], causal=True)
    out.sum().backward()                                       # q.grad, k.grad, v.grad

    pos = dring.shard_positions(seq, MPI.COMM_WORLD, layout="zigzag")   # balanced causal work
    out = dring.attention(q, k, v, seq=seq, causal=True, layout="zigzag",
                          cu_seqlens=[0, 1000, seq], window=512)       # q, k, v: rows pos

q [batch, rows, heads, head_dim] and k, v [batch, rows, kv_heads, head_dim] are this rank's rows;
forward and backward are collective. libdring (the C ABI, dring/dring.h) does the work; this
package binds it with ctypes. docs/install.md (Python) covers installing and the choices made.
"""
from ._attention import Attention, attention
from ._context import Context, clear_cache, launched_by_mpi, set_cache_size, shard_positions, shard_range
from ._lib import DringError, library_path
from ._lib import version as library_version

try:
    from ._version import __version__  # written by the package build from the CMake project version
except ImportError:  # used from the source tree (PYTHONPATH=python, DRING_LIBRARY=...): ask the library
    def __getattr__(name):
        if name == "__version__":
            return library_version()
        raise AttributeError(f"module 'dring' has no attribute '{name}'")

__all__ = ["Attention", "Context", "DringError", "attention", "clear_cache", "launched_by_mpi", "library_path",
           "library_version", "set_cache_size", "shard_positions", "shard_range", "__version__"]
