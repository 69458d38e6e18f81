"""dring_torch — dilated ring attention for PyTorch, through dring's C ABI (libdring.so).

A trainer copies this file. It binds dring/dring.h with ctypes and wraps dring_forward and
dring_backward in a torch.autograd.Function, so a model can call

    ctx = DringContext(comm, seq=..., heads=..., kv_heads=..., head_dim=..., batch=...,
                       segments=[2048, 8192], dilations=[1, 2], causal=True)
    out = dring_attention(q, k, v, ctx)       # this rank's rows, [B, rows, H, D]
    out.sum().backward()                      # q.grad, k.grad, v.grad of this rank's rows

Every rank of `comm` (an mpi4py communicator) holds rows ctx.begin .. ctx.begin + ctx.rows of the
sequence; forward and backward are collective, so every rank must call them in the same order.
Tensors: contiguous; on the CPU float32; with `device="cuda"` (a dring build with CUDA) on the
rank's GPU, float32, float16 or bfloat16 (`dtype`), and dring works on torch's current stream.
"""
import ctypes
import os
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_void_p

import torch

_DEFAULT_LIBRARY = os.path.join(os.path.dirname(__file__), "..", "..", "build", "lib", "libdring.so")


class _Problem(ctypes.Structure):
    _fields_ = [("batch", c_int64), ("seq", c_int64), ("heads", c_int64), ("kv_heads", c_int64),
                ("head_dim", c_int64), ("num_pairs", c_int64), ("segments", POINTER(c_int64)),
                ("dilations", POINTER(c_int64)), ("causal", c_int), ("scale", c_double)]


class _Options(ctypes.Structure):
    _fields_ = [("backend", c_int), ("threads", c_int), ("exchange_chunk_bytes", c_int64),
                ("cuda_stream", c_void_p), ("dtype", c_int), ("comm_timeout_s", ctypes.c_double)]


_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


_lib = None


def load_library(path=None):
    """Loads libdring.so once (path, $DRING_LIBRARY, or the build tree next to this file)."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(path or os.environ.get("DRING_LIBRARY", _DEFAULT_LIBRARY), mode=ctypes.RTLD_GLOBAL)
        lib.dring_options_init.argtypes = [POINTER(_Options)]
        lib.dring_context_create_f.argtypes = [POINTER(_Problem), c_int, POINTER(_Options), POINTER(c_void_p)]
        lib.dring_context_destroy.argtypes = [c_void_p]
        lib.dring_shard_range.argtypes = [c_void_p, POINTER(c_int64), POINTER(c_int64)]
        lib.dring_forward.argtypes = [c_void_p] + [c_void_p] * 5
        lib.dring_backward.argtypes = [c_void_p] + [c_void_p] * 9
        lib.dring_last_error.restype = c_char_p
        lib.dring_status_string.restype = c_char_p
        _lib = lib
    return _lib


class DringError(RuntimeError):
    """A dring call failed; `status` is the dring_status code."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _check(status):
    if status != 0:
        raise DringError(status, _lib.dring_last_error().decode())


class DringContext:
    """One attention problem bound to an mpi4py communicator (collective to create and close)."""

    def __init__(self, comm, *, seq, heads, head_dim, batch=1, kv_heads=None, segments=(), dilations=None,
                 causal=False, scale=0.0, threads=0, device="cpu", dtype=torch.float32, library=None):
        lib = load_library(library)
        segments = list(segments)
        dilations = list(dilations) if dilations is not None else [1] * len(segments)
        self._segments = (c_int64 * max(len(segments), 1))(*segments)
        self._dilations = (c_int64 * max(len(dilations), 1))(*dilations)
        if len(segments) != len(dilations):
            raise ValueError("segments and dilations differ in length")
        self.batch, self.seq, self.heads = batch, seq, heads
        self.kv_heads, self.head_dim = kv_heads or heads, head_dim
        problem = _Problem(batch, seq, heads, self.kv_heads, head_dim, len(segments), self._segments,
                           self._dilations, int(causal), float(scale))
        options = _Options()
        lib.dring_options_init(ctypes.byref(options))
        options.threads = threads
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}")
        self.device, self.dtype = torch.device(device), dtype
        options.dtype = _DTYPES[dtype]
        if self.device.type == "cuda":
            options.backend = 1
            options.cuda_stream = c_void_p(torch.cuda.current_stream(self.device).cuda_stream)
        handle = c_void_p()
        _check(lib.dring_context_create_f(ctypes.byref(problem), comm.py2f(), ctypes.byref(options),
                                          ctypes.byref(handle)))
        self.handle = handle
        begin, rows = c_int64(), c_int64()
        _check(lib.dring_shard_range(self.handle, ctypes.byref(begin), ctypes.byref(rows)))
        self.begin, self.rows = begin.value, rows.value

    def close(self):
        if self.handle:
            _lib.dring_context_destroy(self.handle)
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _require(self, name, t, heads):
        shape = (self.batch, self.rows, heads, self.head_dim)
        if t.device.type != self.device.type:
            raise DringError(1, f"{name} is on {t.device}, this context on {self.device}")
        if t.dtype != self.dtype or tuple(t.shape) != shape or not t.is_contiguous():
            raise DringError(1, f"{name} must be a contiguous {self.dtype} tensor of shape {shape}, "
                                f"got {t.dtype} {tuple(t.shape)}")


def _ptr(t):
    return c_void_p(t.data_ptr())


class _DringAttention(torch.autograd.Function):
    @staticmethod
    def forward(fctx, q, k, v, context):
        for name, t, heads in (("q", q, context.heads), ("k", k, context.kv_heads), ("v", v, context.kv_heads)):
            context._require(name, t, heads)
        out = torch.empty_like(q)
        lse = torch.empty((context.batch, context.heads, context.rows), dtype=torch.float32, device=q.device)
        _check(_lib.dring_forward(context.handle, _ptr(q), _ptr(k), _ptr(v), _ptr(out), _ptr(lse)))
        fctx.save_for_backward(q, k, v, out, lse)
        fctx.context = context
        return out

    @staticmethod
    def backward(fctx, dout):
        q, k, v, out, lse = fctx.saved_tensors
        dout = dout.contiguous().to(q.dtype)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _check(_lib.dring_backward(fctx.context.handle, _ptr(q), _ptr(k), _ptr(v), _ptr(out), _ptr(lse),
                                   _ptr(dout), _ptr(dq), _ptr(dk), _ptr(dv)))
        return dq, dk, dv, None


def dring_attention(q, k, v, context):
    """Dilated attention of this rank's rows: q [B, rows, H, D], k and v [B, rows, Hkv, D]."""
    return _DringAttention.apply(q, k, v, context)
