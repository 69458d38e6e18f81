/* dring.h — the C ABI of dring: distributed dilated (LongNet) ring attention, forward and
 * backward, for trainers that embed the runtime.
 *
 * Model. A context binds one attention problem (shape + configuration) to the caller's MPI
 * communicator. The sequence is sharded over the communicator's ranks by a layout
 * (options.layout): with the default, contiguous, rank t owns rows [begin, begin + rows)
 * (dring_shard_range); with zigzag or striped it owns the rows dring_shard_positions lists, in
 * ascending order. Every tensor passed to dring_forward and dring_backward is that rank's shard,
 * its rows in that order, contiguous, row-major, caller-owned:
 *   q, out, dout, dq  [batch, rows, heads,    head_dim]   options.dtype (float32 by default)
 *   k, v, dk, dv      [batch, rows, kv_heads, head_dim]   options.dtype
 *   lse               [batch, heads, rows]                float32, natural log
 * dring never keeps a pointer after a call returns.
 *
 * ABI. DRING_ABI_VERSION is the version of this interface; it is the SONAME of the library
 * (libdring.so.DRING_ABI_VERSION) and dring_abi_version() returns the one the loaded library was
 * built with. Structs only ever grow at the end, and a field left zero means what the interface
 * meant before the field existed; but a program built against an older header passes a smaller
 * struct, so every growth of dring_problem or dring_options bumps the ABI version (old programs
 * keep using the old library; rebuilding them needs no source change when their structs were
 * zero-initialised, by dring_problem_init, dring_options_init or "= {0}"). docs/install.md, ABI.
 *
 * Collectives. dring_context_create, dring_forward, dring_backward and dring_context_destroy are
 * collective over the communicator: every rank calls them, in the same order, with the same
 * problem. Argument errors are agreed among the ranks first, so every rank returns the same
 * status, and the context stays usable. Any other failure of dring_forward or dring_backward (out
 * of memory, a peer that fails) leaves the context unusable on every rank: the ranks agree on each
 * call's outcome, and every later call on the context fails at once with the first failure's
 * status and message; destroy it (a new context may be created on a healthy communicator).
 * Every wait for a peer has a deadline (options.comm_timeout_s): a peer that does not answer in
 * time makes the call return DRING_COMM_ERROR with a message naming the peer, the step and the
 * time waited; each rank then fails by its own deadline (the communicator may hold an abandoned
 * operation), and ending the job (MPI_Abort) is usually the right answer.
 *
 * Threads. MPI must be initialised (MPI_Init_thread with at least MPI_THREAD_FUNNELED) before a
 * context is created. One context serves one thread at a time; dring calls MPI only from the
 * calling thread and runs its kernels on `threads` OpenMP threads.
 *
 * Errors. Every function returns a dring_status; no C++ exception crosses this interface. The
 * message of the last failure on the calling thread is dring_last_error().
 *
 * Memory and streams. With the CPU backend tensors are host memory and calls are synchronous.
 * With the CUDA backend tensors are device memory of the rank's GPU (chosen by node-local rank);
 * the work runs on options.cuda_stream after whatever the caller enqueued there before, and the
 * call returns once it is complete.
 */
#ifndef DRING_DRING_H
#define DRING_DRING_H

#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DRING_API __attribute__((visibility("default")))
#else
#define DRING_API
#endif

/* The interface version of this header: 1 added documents, a window and layouts. */
#define DRING_ABI_VERSION 1

/* Status codes; the values are part of the ABI. */
typedef enum dring_status {
  DRING_OK = 0,
  DRING_INVALID_ARGUMENT = 1,
  DRING_IO_ERROR = 2,
  DRING_COMM_ERROR = 3,
  DRING_DEVICE_ERROR = 4,
  DRING_OUT_OF_MEMORY = 5,
  DRING_UNSUPPORTED = 6,
  DRING_CHECK_FAILED = 7,
  DRING_INTERNAL = 8
} dring_status;

typedef enum dring_backend { DRING_BACKEND_CPU = 0, DRING_BACKEND_CUDA = 1 } dring_backend;

/* Storage type of q, k, v, out, dout, dq, dk, dv (lse is always float32). The CPU backend takes
 * float32 only; the CUDA backend all three, always accumulating in float32. */
typedef enum dring_dtype { DRING_DTYPE_F32 = 0, DRING_DTYPE_F16 = 1, DRING_DTYPE_BF16 = 2 } dring_dtype;

/* Which rows each rank holds (never changes the result; docs/math.md). With k ranks:
 * CONTIGUOUS  rank t holds one range, the first seq % k ranks one row more (dring_shard_range).
 * ZIGZAG      the sequence cut into 2k chunks the same way; rank t holds chunks t and 2k-1-t, which
 *             balances causal work. Needs seq >= 2k.
 * STRIPED     stripes of options.stripe rows (0 means 1) dealt round robin: stripe q on rank q mod k.
 *             Needs seq > (k-1) * stripe. */
typedef enum dring_layout { DRING_LAYOUT_CONTIGUOUS = 0, DRING_LAYOUT_ZIGZAG = 1, DRING_LAYOUT_STRIPED = 2 } dring_layout;

/* The function (docs/math.md). num_pairs == 0 means dense attention. Zero-initialise it (or call
 * dring_problem_init): fields added later are zero in old code, which means what it meant before. */
typedef struct dring_problem {
  int64_t batch;
  int64_t seq;
  int64_t heads;
  int64_t kv_heads; /* divides heads */
  int64_t head_dim;
  int64_t num_pairs;
  const int64_t* segments;  /* num_pairs segment lengths, each >= 1 */
  const int64_t* dilations; /* num_pairs dilation rates, each >= 1, dividing its segment */
  int causal;               /* 0 or 1 */
  double scale;             /* 0: 1/sqrt(head_dim) */
  /* Fields are only ever added below this line, at the end (ABI version 1 and later). */
  int64_t num_docs;          /* packed documents: 0 means one document of length seq */
  const int64_t* doc_lens;   /* num_docs lengths, each >= 1, summing to seq (cu_seqlens differenced) */
  int64_t window;            /* W >= 1 keeps only keys with |i - j| < W (causal: 0 <= i - j < W); 0: none */
} dring_problem;

typedef struct dring_options {
  dring_backend backend;        /* DRING_BACKEND_CPU (default) */
  int threads;                  /* kernel threads per rank; 0: cores of the node / ranks on it */
  int64_t exchange_chunk_bytes; /* cap on one message; 0: automatic (1/32 of a shard's K and V, at least 64 KiB) */
  void* cuda_stream;            /* cudaStream_t for the CUDA backend; NULL: the default stream */
  dring_dtype dtype;            /* DRING_DTYPE_F32 (default) */
  /* Fields are only ever added below this line, at the end; dring_options_init sets every one. */
  double comm_timeout_s; /* seconds a wait for a peer may take before the call fails with DRING_COMM_ERROR;
                            0 (default): the environment variable DRING_COMM_TIMEOUT_S, else 600 */
  dring_layout layout;   /* DRING_LAYOUT_CONTIGUOUS (default); ABI version 1 and later */
  int64_t stripe;        /* rows per stripe of DRING_LAYOUT_STRIPED; 0 (default) means 1 */
} dring_options;

typedef struct dring_context dring_context; /* opaque */

/* Fills *options with the defaults. */
DRING_API void dring_options_init(dring_options* options);
/* Sets every field of *problem to zero (dense, non-causal, one document, no window); set the shape
 * and what differs afterwards. */
DRING_API void dring_problem_init(dring_problem* problem);

/* Collective. On success *context is a new context; on failure it is NULL. `options` may be NULL. */
DRING_API dring_status dring_context_create(const dring_problem* problem, MPI_Comm comm,
                                            const dring_options* options, dring_context** context);
/* The same, with the communicator as a Fortran handle (MPI_Comm_c2f; mpi4py: comm.py2f()), for
 * language bindings that cannot name an MPI_Comm. */
DRING_API dring_status dring_context_create_f(const dring_problem* problem, MPI_Fint comm,
                                              const dring_options* options, dring_context** context);

/* Without MPI (trainers launched by torchrun, CUDA tensors): a context over an NCCL communicator. */
/* Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES). */
#define DRING_NCCL_UNIQUE_ID_BYTES 128
/* Local. Writes a new NCCL unique id (ncclGetUniqueId) to out. One process calls it and its caller
 * sends the bytes to every process of the job (e.g. torch.distributed.broadcast).
 * DRING_UNSUPPORTED in a build without NCCL. */
DRING_API dring_status dring_nccl_unique_id(char out[DRING_NCCL_UNIQUE_ID_BYTES]);
/* Collective over the world_size processes that pass the same id, each with its own rank
 * (0 <= rank < world_size). Like dring_context_create, with no MPI: the transport is an NCCL
 * communicator (ncclCommInitRank(world_size, id, rank)) on the current CUDA device (cudaGetDevice at
 * this call: set it first, e.g. torch.cuda.set_device(local_rank)); errors are agreed on over it.
 * options->backend must be DRING_BACKEND_CUDA; options->cuda_stream as for dring_context_create.
 * MPI need not be initialised and is not used. dring_shard_range, dring_shard_positions,
 * dring_forward, dring_backward and dring_context_destroy work on such a context as on any other.
 * DRING_UNSUPPORTED in a build without NCCL. */
DRING_API dring_status dring_context_create_nccl(const dring_problem* problem, const char* unique_id, int rank,
                                                 int world_size, const dring_options* options,
                                                 dring_context** context);

/* Collective. NULL is ignored. */
DRING_API void dring_context_destroy(dring_context* context);

/* This rank's rows of the sequence, for the contiguous layout. Local, no communication. With
 * another layout it returns DRING_UNSUPPORTED (the rows are no range): use dring_shard_positions. */
DRING_API dring_status dring_shard_range(const dring_context* context, int64_t* begin, int64_t* rows);

/* The positions (global rows, 0 .. seq-1) this rank holds, in the order of its tensors' rows
 * (ascending), under any layout. *count is set to their number; positions (may be NULL for a
 * count-only query) receives them when capacity >= *count, else the call returns
 * DRING_INVALID_ARGUMENT and writes nothing. Local, no communication. A trainer uses this to lay
 * out its tokens and position ids (e.g. rotary embeddings) to match. */
DRING_API dring_status dring_shard_positions(const dring_context* context, int64_t* positions, int64_t capacity,
                                             int64_t* count);

/* Collective. out and lse of this rank's rows. */
DRING_API dring_status dring_forward(dring_context* context, const float* q, const float* k, const float* v, float* out,
                                     float* lse);

/* Collective. The exact gradient of dring_forward for the given dout; out and lse are those the
 * forward pass returned. dq, dk and dv are overwritten. */
DRING_API dring_status dring_backward(dring_context* context, const float* q, const float* k, const float* v,
                                      const float* out, const float* lse, const float* dout, float* dq, float* dk,
                                      float* dv);

/* Bytes this rank's tracked memory peaked at since the context was created (all categories). */
DRING_API int64_t dring_peak_tracked_bytes(const dring_context* context);

/* The message of the last failed call on this thread ("" if none). Valid until the next call. */
DRING_API const char* dring_last_error(void);
DRING_API const char* dring_status_string(dring_status status);
/* "0.2.0" */
DRING_API const char* dring_version(void);
/* DRING_ABI_VERSION of the header the loaded library was built with. */
DRING_API int dring_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* DRING_DRING_H */
