"""libdring.so through ctypes: loading it, the C structs of dring/dring.h, and its errors.

The bindings are plain ctypes over the C ABI (docs/install.md, Python, says why): no compiled
extension module, so nothing here depends on the Python version, torch's C++ ABI or mpi4py's build.
"""
import ctypes
import glob
import os
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_void_p

# dring_status values (part of the ABI).
OK = 0
INVALID_ARGUMENT = 1
COMM_ERROR = 3
UNSUPPORTED = 6

BACKEND_CPU = 0
BACKEND_CUDA = 1

# dring_layout values.
LAYOUT_CONTIGUOUS = 0
LAYOUT_ZIGZAG = 1
LAYOUT_STRIPED = 2

# The DRING_ABI_VERSION whose structs are declared below (documents, window, layout: version 1).
ABI_VERSION = 1

# Both structs below are read by libdring through a pointer, and a newer libdring may have
# appended fields to them (a communication timeout is being added to dring_options). A ctypes
# Structure of only the fields known here would then let dring_options_init write past its end,
# and dring_context_create read past a dring_problem's end. So each struct lives at the start of a
# zeroed buffer of STRUCT_BYTES, far more than either will grow to, and is reached through
# from_buffer: dring_options_init fills every field the library knows (its defaults for fields
# unknown here), this module then sets only the fields it knows, and unknown trailing fields of a
# problem read as zero, which an ABI-compatible extension must take as "off". Only appending is
# compatible; the known prefix is the contract.
STRUCT_BYTES = 1024


class Problem(ctypes.Structure):
    """The known prefix of dring_problem."""
    _fields_ = [("batch", c_int64), ("seq", c_int64), ("heads", c_int64), ("kv_heads", c_int64),
                ("head_dim", c_int64), ("num_pairs", c_int64), ("segments", POINTER(c_int64)),
                ("dilations", POINTER(c_int64)), ("causal", c_int), ("scale", c_double),
                # ABI version 1
                ("num_docs", c_int64), ("doc_lens", POINTER(c_int64)), ("window", c_int64)]


class Options(ctypes.Structure):
    """The known prefix of dring_options."""
    _fields_ = [("backend", c_int), ("threads", c_int), ("exchange_chunk_bytes", c_int64),
                ("cuda_stream", c_void_p), ("dtype", c_int), ("comm_timeout_s", c_double),
                # ABI version 1
                ("layout", c_int), ("stripe", c_int64)]


def padded(struct_type):
    """A zeroed STRUCT_BYTES buffer and struct_type viewing its start (keep both alive)."""
    assert ctypes.sizeof(struct_type) <= STRUCT_BYTES
    buffer = (ctypes.c_char * STRUCT_BYTES)()
    return buffer, struct_type.from_buffer(buffer)


class DringError(RuntimeError):
    """A dring call failed. `status` is the dring_status code (dring.h), `status_name` its name;
    the message is dring_last_error() for failures inside libdring."""

    _NAMES = {0: "ok", 1: "invalid argument", 2: "I/O error", 3: "communication error", 4: "device error",
              5: "out of memory", 6: "unsupported", 7: "check failed", 8: "internal error"}

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.status_name = self._NAMES.get(status, f"status {status}")


_lib = None
_path = None


def _package_library():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    found = sorted(glob.glob(os.path.join(here, "libdring.so*")))
    return found[0] if found else None


def library_path():
    """The libdring.so this package uses: $DRING_LIBRARY, else the one installed in the package."""
    return os.environ.get("DRING_LIBRARY") or _package_library()


def load():
    """libdring, loaded once, with every function's signature declared."""
    global _lib, _path
    if _lib is not None:
        return _lib
    path = library_path()
    if path is None:
        raise DringError(UNSUPPORTED, "dring: no libdring.so in the package and DRING_LIBRARY is not set: install "
                                      "the package with `pip install ./python`, or point DRING_LIBRARY at a built "
                                      "libdring.so (build/lib/libdring.so)")
    # RTLD_GLOBAL: libdring's MPI, loaded here if mpi4py has not loaded it yet, must be global for
    # Open MPI's plugins; libdring itself exports only dring_* symbols.
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.dring_options_init.argtypes = [c_void_p]
    lib.dring_options_init.restype = None
    lib.dring_context_create_f.argtypes = [c_void_p, c_int, c_void_p, POINTER(c_void_p)]
    lib.dring_context_destroy.argtypes = [c_void_p]
    lib.dring_context_destroy.restype = None
    lib.dring_shard_range.argtypes = [c_void_p, POINTER(c_int64), POINTER(c_int64)]
    lib.dring_forward.argtypes = [c_void_p] * 6
    lib.dring_backward.argtypes = [c_void_p] * 10
    lib.dring_peak_tracked_bytes.argtypes = [c_void_p]
    lib.dring_peak_tracked_bytes.restype = c_int64
    lib.dring_last_error.restype = c_char_p
    lib.dring_status_string.argtypes = [c_int]
    lib.dring_status_string.restype = c_char_p
    lib.dring_version.restype = c_char_p
    # ABI version 1 (documents, window, layouts); an older libdring has neither function and would
    # silently ignore the fields, so the package refuses those features with it (abi_version()).
    if hasattr(lib, "dring_abi_version"):
        lib.dring_abi_version.restype = c_int
    if hasattr(lib, "dring_shard_positions"):
        lib.dring_shard_positions.argtypes = [c_void_p, POINTER(c_int64), c_int64, POINTER(c_int64)]
    # Part 4 of issue 12 (docs/install.md, "Without MPI"): present in libraries that have them.
    if hasattr(lib, "dring_nccl_unique_id"):
        lib.dring_nccl_unique_id.argtypes = [c_void_p]
    if hasattr(lib, "dring_context_create_nccl"):
        lib.dring_context_create_nccl.argtypes = [c_void_p, c_void_p, c_int, c_int, c_void_p, POINTER(c_void_p)]
    _lib, _path = lib, path
    return lib


def check(status):
    """Raises DringError with libdring's message for a failed status."""
    if status != OK:
        raise DringError(status, _lib.dring_last_error().decode(errors="replace"))


def version():
    """The version libdring reports (dring_version())."""
    return load().dring_version().decode()


def abi_version():
    """The DRING_ABI_VERSION libdring was built with (0 for libraries older than dring_abi_version)."""
    lib = load()
    return lib.dring_abi_version() if hasattr(lib, "dring_abi_version") else 0
