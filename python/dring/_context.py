"""Contexts: one attention problem bound to a communicator (a dring_context), the communicator
chosen for a call, and the cache that lets a training loop reuse contexts step after step.

A communicator is an mpi4py communicator (CPU or CUDA tensors, dring's MPI path), or, for CUDA
tensors in a trainer without MPI (torchrun), a torch.distributed process group: rank 0 has
libdring make an NCCL unique id, the group broadcasts its bytes, and every rank creates its context
from it (docs/install.md, "Without MPI"; needs a libdring with dring_context_create_nccl).
"""
import collections
import ctypes
import os
from ctypes import c_int64, c_void_p

import torch

from . import _lib
from ._lib import DringError

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
NCCL_UNIQUE_ID_BYTES = 128

# Variables that MPI launchers set in every process they start (Open MPI's mpirun, MPICH's and
# Intel MPI's hydra, PMI-1/PMI-2/PMIx under srun, MVAPICH).
_MPI_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS",
                           "MV2_COMM_WORLD_SIZE")

_NO_COMMUNICATOR = (
    "dring: no communicator: this process was not started by an MPI launcher and torch.distributed is not "
    "initialised. Launch it with `mpirun -np N python3 ...` or `srun ...` (or pass comm=, an mpi4py "
    "communicator; a single process may pass mpi4py's MPI.COMM_WORLD); trainers launched by torchrun can "
    "use CUDA tensors after torch.distributed.init_process_group")
_CPU_NEEDS_MPI = (
    "dring: CPU tensors need an MPI communicator, and this process has only a torch.distributed group: launch "
    "it with `mpirun -np N python3 ...` or `srun ...` and pass comm= (an mpi4py communicator) or none at "
    "all (MPI.COMM_WORLD); torch.distributed groups serve CUDA tensors, through NCCL")


def launched_by_mpi():
    """Whether an MPI launcher (mpirun, mpiexec, srun with PMI) started this process."""
    return any(name in os.environ for name in _MPI_LAUNCHER_VARIABLES)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DringError(_lib.UNSUPPORTED, "dring: MPI communicators need mpi4py, built against the MPI that "
                                           "libdring uses (Debian: apt-get install python3-mpi4py; or pip "
                                           f"install mpi4py against the same MPI): {e}") from e
    return MPI


class Communicator:
    """The ranks of one call: an mpi4py communicator, or a torch.distributed group (NCCL path)."""

    def __init__(self, comm=None, group=None):
        dist = torch.distributed
        if comm is not None and group is not None:
            raise DringError(_lib.INVALID_ARGUMENT, "dring: pass comm= (mpi4py) or group= (torch.distributed), "
                                                    "not both")
        if comm is None and group is None:
            if launched_by_mpi():
                comm = _mpi().COMM_WORLD
            elif dist.is_available() and dist.is_initialized():
                group = dist.group.WORLD
            else:
                raise DringError(_lib.INVALID_ARGUMENT, _NO_COMMUNICATOR)
        if comm is not None:
            if not hasattr(comm, "py2f"):
                raise DringError(_lib.INVALID_ARGUMENT, f"dring: comm must be an mpi4py communicator, got "
                                                        f"{type(comm).__name__}")
            self.kind, self.handle = "mpi", comm
            self.rank, self.size = comm.Get_rank(), comm.Get_size()
            self.key = ("mpi", comm.py2f())
        else:
            self.kind, self.handle = "torch", group
            self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)
            self.key = ("torch", id(group))


def shard_range(seq, comm=None, *, group=None, rank=None, world_size=None):
    """(begin, rows): the rows of a seq-token sequence that this rank holds, as dring shards it
    (DESIGN.md section 2: the first seq % world_size ranks hold one row more). The communicator
    is chosen as dring.attention chooses it; rank and world_size, given together, need none."""
    if (rank is None) != (world_size is None):
        raise DringError(_lib.INVALID_ARGUMENT, "dring.shard_range: give rank and world_size together")
    if rank is None:
        c = Communicator(comm, group)
        rank, world_size = c.rank, c.size
    if world_size < 1 or not 0 <= rank < world_size or seq < world_size:
        raise DringError(_lib.INVALID_ARGUMENT, f"dring.shard_range: {seq} tokens cannot be sharded over "
                                                f"{world_size} ranks (rank {rank}): every rank needs a row")
    base, extra = divmod(seq, world_size)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


def parse_layout(layout):
    """(dring_layout value, stripe, canonical name) of "contiguous", "zigzag", "striped" or "striped:N"."""
    text = str(layout or "contiguous")
    if text == "contiguous":
        return _lib.LAYOUT_CONTIGUOUS, 0, text
    if text == "zigzag":
        return _lib.LAYOUT_ZIGZAG, 0, text
    if text == "striped" or text.startswith("striped:"):
        stripe = text[len("striped:"):] if ":" in text else "1"
        if not stripe.isdigit() or int(stripe) < 1:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: layout {text!r}: the stripe size after 'striped:' must be "
                                                    "a whole number >= 1")
        return _lib.LAYOUT_STRIPED, int(stripe), "striped" if int(stripe) == 1 else f"striped:{int(stripe)}"
    raise DringError(_lib.INVALID_ARGUMENT, f"dring: unknown layout {text!r} (expected contiguous, zigzag, striped or "
                                            "striped:N)")


def _cut(c, n, seq):
    """Piece c of n even pieces of seq starts here (the first seq % n pieces are one longer)."""
    return c * (seq // n) + min(c, seq % n)


def shard_positions(seq, comm=None, *, layout="contiguous", group=None, rank=None, world_size=None):
    """This rank's rows of a seq-token sequence under `layout` (a torch.int64 tensor, ascending):
    the order of the rows of the q, k, v it passes to dring.attention, and of the out it gets. A
    trainer gathers its tokens and position ids (for rotary embeddings, say) at these positions.
    The communicator is chosen as dring.attention chooses it; rank and world_size, given together,
    need none. Layouts (docs/math.md): contiguous (dring.shard_range), zigzag (2k chunks, rank t
    holds t and 2k-1-t), striped (row i on rank i mod k) and striped:N (stripes of N rows)."""
    if (rank is None) != (world_size is None):
        raise DringError(_lib.INVALID_ARGUMENT, "dring.shard_positions: give rank and world_size together")
    if rank is None:
        c = Communicator(comm, group)
        rank, world_size = c.rank, c.size
    kind, stripe, name = parse_layout(layout)
    k = world_size
    if k < 1 or not 0 <= rank < k or seq < k:
        raise DringError(_lib.INVALID_ARGUMENT, f"dring.shard_positions: {seq} tokens cannot be sharded over {k} "
                                                f"ranks (rank {rank}): every rank needs a row")
    if kind == _lib.LAYOUT_CONTIGUOUS:
        return torch.arange(_cut(rank, k, seq), _cut(rank + 1, k, seq), dtype=torch.int64)
    if kind == _lib.LAYOUT_ZIGZAG:
        if seq < 2 * k:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring.shard_positions: the zigzag layout cuts {seq} tokens into "
                                                    f"2 x {k} chunks; it needs at least {2 * k}")
        chunks = [(_cut(c, 2 * k, seq), _cut(c + 1, 2 * k, seq)) for c in (rank, 2 * k - 1 - rank)]
        return torch.cat([torch.arange(a, b, dtype=torch.int64) for a, b in chunks])
    if seq <= (k - 1) * stripe:
        raise DringError(_lib.INVALID_ARGUMENT, f"dring.shard_positions: layout {name} over {k} ranks needs more than "
                                                f"{(k - 1) * stripe} tokens, got {seq}")
    i = torch.arange(seq, dtype=torch.int64)
    return i[(i // stripe) % k == rank]


def documents_of(doc_lens=None, cu_seqlens=None):
    """Document lengths as a tuple of ints (() is one document): doc_lens, or the differences of
    cu_seqlens ([0, l1, l1+l2, ..., seq]; a list or an integer tensor), which must agree if both
    are given. libdring checks the lengths (each >= 1, summing to seq)."""
    lens = None if doc_lens is None else tuple(int(n) for n in (doc_lens.tolist() if torch.is_tensor(doc_lens)
                                                                 else doc_lens))
    if cu_seqlens is not None:
        cu = [int(n) for n in (cu_seqlens.tolist() if torch.is_tensor(cu_seqlens) else cu_seqlens)]
        if len(cu) < 2 or cu[0] != 0:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: cu_seqlens must start at 0 and hold at least 2 values "
                                                    f"([0, l1, l1+l2, ..., seq]), got {cu[:8]}")
        bad = next((n for n in range(1, len(cu)) if cu[n] <= cu[n - 1]), None)
        if bad is not None:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: cu_seqlens is not increasing: cu_seqlens[{bad - 1}] = "
                                                    f"{cu[bad - 1]}, cu_seqlens[{bad}] = {cu[bad]}")
        from_cu = tuple(b - a for a, b in zip(cu, cu[1:]))
        if lens is not None and lens != from_cu:
            raise DringError(_lib.INVALID_ARGUMENT, "dring: doc_lens and cu_seqlens disagree")
        lens = from_cu
    return lens or ()


def pairs_of(pairs=None, segments=None, dilations=None):
    """The configuration as a tuple of (segment, dilation); () is dense attention."""
    if pairs is not None and (segments is not None or dilations is not None):
        raise DringError(_lib.INVALID_ARGUMENT, "dring: give pairs= or segments=/dilations=, not both")
    if pairs is None:
        segments = list(segments or ())
        dilations = list(dilations) if dilations is not None else [1] * len(segments)
        if len(segments) != len(dilations):
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: {len(segments)} segments but {len(dilations)} "
                                                    "dilations")
        pairs = zip(segments, dilations)
    return tuple((int(w), int(r)) for w, r in pairs)


class Context:
    """A dring_context: one problem on one communicator. Creating and closing it are collective.

    Tensors for it: q [batch, rows, heads, head_dim], k and v [batch, rows, kv_heads, head_dim] of
    this rank's rows (positions(): begin .. begin + rows for the contiguous layout); contiguous;
    float32 on the CPU; on CUDA (a build with the CUDA backend) float32, float16 or bfloat16, worked
    on in the current stream at creation. Packed documents (doc_lens, or cu_seqlens), a window
    (window=W: keys with |i - j| < W) and the layout are part of the problem.
    """

    def __init__(self, *, seq, heads, head_dim, batch=1, kv_heads=None, pairs=None, segments=None,
                 dilations=None, causal=False, scale=None, comm=None, group=None, device="cpu",
                 dtype=torch.float32, threads=0, exchange_chunk_bytes=0, doc_lens=None, cu_seqlens=None,
                 window=None, layout="contiguous"):
        lib = _lib.load()
        self.handle = None
        self.comm = comm if isinstance(comm, Communicator) else Communicator(comm, group)
        self.batch, self.seq, self.heads, self.head_dim = int(batch), int(seq), int(heads), int(head_dim)
        self.kv_heads = int(kv_heads or heads)
        self.pairs = pairs_of(pairs, segments, dilations)
        self.causal, self.scale = bool(causal), float(scale or 0.0)
        self.doc_lens = documents_of(doc_lens, cu_seqlens)
        if window is not None and int(window) < 1:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: window must be at least 1 (got {window}); pass None for "
                                                    "no window")
        self.window = int(window or 0)
        layout_kind, stripe, self.layout = parse_layout(layout)
        if (self.doc_lens or self.window or layout_kind != _lib.LAYOUT_CONTIGUOUS) and _lib.abi_version() < 1:
            raise DringError(_lib.UNSUPPORTED, f"dring: {_lib.library_path()} is older than documents, windows and "
                                               "layouts (ABI version 1); use the libdring of this package")
        self.device, self.dtype = torch.device(device), dtype
        if self.dtype not in _DTYPES:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: dtype must be one of {list(_DTYPES)}, got {dtype}")
        if self.device.type == "cpu" and self.dtype != torch.float32:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: CPU tensors must be float32, got {dtype}")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type not in ("cpu", "cuda"):
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: tensors on {self.device}: only cpu and cuda")

        problem_buffer, problem = _lib.padded(_lib.Problem)
        n = max(len(self.pairs), 1)
        segments_c = (c_int64 * n)(*[w for w, _ in self.pairs])
        dilations_c = (c_int64 * n)(*[r for _, r in self.pairs])
        problem.batch, problem.seq, problem.heads = self.batch, self.seq, self.heads
        problem.kv_heads, problem.head_dim, problem.num_pairs = self.kv_heads, self.head_dim, len(self.pairs)
        problem.segments, problem.dilations = segments_c, dilations_c
        problem.causal, problem.scale = int(self.causal), self.scale
        docs_c = (c_int64 * max(len(self.doc_lens), 1))(*self.doc_lens)
        problem.num_docs, problem.doc_lens, problem.window = len(self.doc_lens), docs_c, self.window

        options_buffer, options = _lib.padded(_lib.Options)
        lib.dring_options_init(options_buffer)
        options.threads, options.exchange_chunk_bytes = int(threads), int(exchange_chunk_bytes)
        options.dtype = _DTYPES[self.dtype]
        options.layout, options.stripe = layout_kind, stripe
        if self.device.type == "cuda":
            options.backend = _lib.BACKEND_CUDA
            options.cuda_stream = torch.cuda.current_stream(self.device).cuda_stream

        handle = c_void_p()
        if self.comm.kind == "mpi":
            _lib.check(lib.dring_context_create_f(problem_buffer, self.comm.handle.py2f(), options_buffer,
                                                  ctypes.byref(handle)))
        elif self.device.type != "cuda":
            raise DringError(_lib.INVALID_ARGUMENT, _CPU_NEEDS_MPI)
        else:
            self._create_nccl(lib, problem_buffer, options_buffer, handle)
        self.handle = handle
        if hasattr(lib, "dring_shard_positions"):
            count = c_int64()
            _lib.check(lib.dring_shard_positions(self.handle, None, 0, ctypes.byref(count)))
            self._positions = torch.empty(count.value, dtype=torch.int64)
            _lib.check(lib.dring_shard_positions(self.handle, ctypes.cast(self._positions.data_ptr(),
                                                                          ctypes.POINTER(c_int64)),
                                                 count.value, ctypes.byref(count)))
        else:
            begin, rows = c_int64(), c_int64()
            _lib.check(lib.dring_shard_range(self.handle, ctypes.byref(begin), ctypes.byref(rows)))
            self._positions = torch.arange(begin.value, begin.value + rows.value, dtype=torch.int64)
        self.rows = len(self._positions)
        self.begin = int(self._positions[0])  # the first of them (contiguous: the range begin .. begin + rows)

    def positions(self):
        """This rank's rows of the sequence (a torch.int64 tensor, ascending): the order of the rows
        of its q, k, v and out. Contiguous layout: begin .. begin + rows."""
        return self._positions.clone()

    def _create_nccl(self, lib, problem_buffer, options_buffer, handle):
        """The torchrun path: rank 0's NCCL unique id, broadcast over the torch.distributed group."""
        if not hasattr(lib, "dring_context_create_nccl") or not hasattr(lib, "dring_nccl_unique_id"):
            raise DringError(_lib.UNSUPPORTED, "dring: this libdring has no dring_context_create_nccl, so a "
                                               "torch.distributed group cannot be used yet: launch with mpirun "
                                               "or srun and an MPI communicator (docs/install.md, Without MPI)")
        dist, group = torch.distributed, self.comm.handle
        # Byte 0: rank 0's status in making the id (so a failure there reaches every rank instead of
        # leaving them in the broadcast); bytes 1..128: the id.
        message = (ctypes.c_char * (1 + NCCL_UNIQUE_ID_BYTES))()
        if self.comm.rank == 0:
            status = lib.dring_nccl_unique_id(ctypes.byref(message, 1))
            message[0] = bytes([min(status, 255)])
        on = self.device if dist.get_backend(group) == "nccl" else torch.device("cpu")
        shared = torch.tensor(list(message.raw), dtype=torch.uint8, device=on)
        if group is dist.group.WORLD:
            source = 0
        elif hasattr(dist, "get_global_rank"):  # torch >= 2
            source = dist.get_global_rank(group, 0)
        else:
            source = dist.distributed_c10d._get_global_rank(group, 0)
        dist.broadcast(shared, src=source, group=group)
        data = bytes(shared.cpu().tolist())
        if data[0] != _lib.OK:
            raise DringError(data[0], "dring: rank 0 could not make an NCCL unique id" +
                             (f": {lib.dring_last_error().decode()}" if self.comm.rank == 0 else ""))
        unique_id = ctypes.create_string_buffer(data[1:], NCCL_UNIQUE_ID_BYTES)
        with torch.cuda.device(self.device):
            _lib.check(lib.dring_context_create_nccl(problem_buffer, unique_id, self.comm.rank, self.comm.size,
                                                     options_buffer, ctypes.byref(handle)))

    @property
    def closed(self):
        return self.handle is None

    def close(self):
        """Collective: every rank closes its context of the same problem, in the same order."""
        if self.handle is not None:
            _lib.load().dring_context_destroy(self.handle)
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def peak_tracked_bytes(self):
        """Bytes this rank's dring memory peaked at since the context was created."""
        return _lib.load().dring_peak_tracked_bytes(self.handle)

    def require(self, name, t, heads):
        """Raises DringError unless t is a tensor this context takes for `name`."""
        shape = (self.batch, self.rows, heads, self.head_dim)
        if t.device != self.device:
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: {name} is on {t.device}, this context on {self.device}")
        if t.dtype != self.dtype or tuple(t.shape) != shape:
            held = (f"rows {self.begin}..{self.begin + self.rows}" if self.layout == "contiguous" else
                    f"{self.rows} rows under the {self.layout} layout, Context.positions()")
            raise DringError(_lib.INVALID_ARGUMENT, f"dring: {name} must be a {self.dtype} tensor of shape {shape} "
                                                    f"(rank {self.comm.rank} holds {held} of {self.seq}), got "
                                                    f"{t.dtype} {tuple(t.shape)}")

    def forward(self, q, k, v):
        """out, lse of this rank's rows (collective); q, k, v contiguous (see require)."""
        lib = _lib.load()
        out = torch.empty_like(q)
        lse = torch.empty((self.batch, self.heads, self.rows), dtype=torch.float32, device=q.device)
        _lib.check(lib.dring_forward(self.handle, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                     lse.data_ptr()))
        return out, lse

    def backward(self, q, k, v, out, lse, dout):
        """dq, dk, dv (collective); the tensors as forward had and returned them."""
        lib = _lib.load()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _lib.check(lib.dring_backward(self.handle, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                      lse.data_ptr(), dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr()))
        return dq, dk, dv


# Contexts by (communicator, problem, options), most recently used last. Evicting one closes it,
# which is collective: every rank makes the same calls in the same order (dring's contract), so
# every rank evicts the same context at the same call.
_cache = collections.OrderedDict()
_cache_size = 16


def cached_context(**spec):
    """The cached Context for spec (Context's arguments), created on first use."""
    original = dict(spec)
    comm = Communicator(spec.pop("comm", None), spec.pop("group", None))
    stream = None
    device = torch.device(spec.get("device", "cpu"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        spec["device"] = device
        stream = torch.cuda.current_stream(device).cuda_stream
    spec["pairs"] = pairs_of(spec.pop("pairs", None), spec.pop("segments", None), spec.pop("dilations", None))
    spec["doc_lens"] = documents_of(spec.pop("doc_lens", None), spec.pop("cu_seqlens", None))
    spec["layout"] = parse_layout(spec.get("layout"))[2]
    key = (comm.key, stream, tuple(sorted((k, str(v)) for k, v in spec.items())))
    context = _cache.get(key)
    if context is not None and not context.closed:
        _cache.move_to_end(key)
        return context
    context = Context(comm=comm, **spec)
    context.recreate = lambda: cached_context(**original)
    _cache[key] = context
    while len(_cache) > _cache_size:
        _cache.popitem(last=False)[1].close()
    return context


def clear_cache(comm=None, *, group=None):
    """Closes the cached contexts (collective), all of them or those of one communicator. Call it
    before freeing a communicator that dring.attention has used."""
    key = None if comm is None and group is None else Communicator(comm, group).key
    for k in [k for k in _cache if key is None or k[0] == key]:
        _cache.pop(k).close()


def set_cache_size(size):
    """How many contexts the cache keeps (16 by default); the least recently used are closed."""
    global _cache_size
    if size < 1:
        raise DringError(_lib.INVALID_ARGUMENT, "dring.set_cache_size: the cache holds at least one context")
    _cache_size = int(size)
    while len(_cache) > _cache_size:
        _cache.popitem(last=False)[1].close()
