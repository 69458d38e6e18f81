// c_api.cpp — the C ABI (dring/dring.h) over the C++ runtime. Every entry point catches every
// exception and turns it into a status and a thread-local message; collective entry points agree
// on argument errors first, so every rank returns the same status instead of some waiting.
#include "dring/dring.h"

#include <exception>
#include <iomanip>
#include <memory>
#include <new>
#include <optional>
#include <sstream>
#include <string>

#include "dring/comm/deadline.hpp"
#include "dring/runtime/backend.hpp"
#include "dring/runtime/c_args.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/config.h"
#include "dring/runtime/executor.hpp"
#include "dring/runtime/node.hpp"
#include "dring/runtime/select.hpp"

struct dring_context {
  dring::Problem problem;
  dring::MemoryTracker tracker;
  MPI_Comm comm = MPI_COMM_NULL;  // the caller's, for agreeing on argument errors; NULL: by the transport
  double comm_timeout_s = 0.0;    // every wait for a peer, agreements included
  dring::Runtime runtime;
  std::unique_ptr<dring::RingExecutor> executor;
  // Set by the first call that failed other than by an agreed argument error: the context is then
  // unusable, and every later call fails at once with this status and message.
  dring::Status failed_status = dring::Status::kOk;
  std::string failed_message;
};

namespace {

thread_local std::string last_error;

// Runs body; any exception becomes a status and last_error.
template <class Body>
dring_status guarded(Body&& body) {
  try {
    body();
    last_error.clear();
    return DRING_OK;
  } catch (const dring::Error& e) {
    last_error = e.what();
    return static_cast<dring_status>(e.status());
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
    return DRING_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    last_error = e.what();
    return DRING_INTERNAL;
  } catch (...) {
    last_error = "unknown error";
    return DRING_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  DRING_CHECK(ok, dring::Status::kInvalidArgument, what);
}

// The context's agreement on an outcome: over the caller's MPI communicator, or, for a context
// made from an NCCL unique id (no MPI), over the transport's own collectives.
void context_agree_on(dring_context* ctx, const std::optional<dring::Error>& local, double timeout_s) {
  if (ctx->comm != MPI_COMM_NULL) return dring::agree_on(ctx->comm, local, timeout_s);
  dring::agree_on(*ctx->runtime.transport, local);
}

// Runs `step` (argument checks) on this rank and agrees on the outcome, as dring::agree does.
template <class Step>
void context_agree(dring_context* ctx, Step&& step) {
  std::optional<dring::Error> local;
  try {
    step();
  } catch (const dring::Error& e) {
    local = e;
  }
  context_agree_on(ctx, local, ctx->comm_timeout_s);
}

// The options every context creation checks the same way; resolves the timeout into ctx.
void check_options(const dring_options& o, dring_context* ctx) {
  dring::check_c_options(o);
  ctx->comm_timeout_s = dring::comm::resolve_comm_timeout(o.comm_timeout_s);
}

// What every rank must have passed alike: the problem and the layout.
std::string problem_key(const dring::Problem& problem, const dring::LayoutSpec& layout) {
  const dring::AttentionShape& s = problem.shape;
  std::ostringstream key;
  key << problem.describe() << " " << s.batch << " " << s.seq << " " << s.heads << " " << s.kv_heads << " "
      << s.head_dim << " " << std::setprecision(17) << problem.scale() << " " << layout.describe() << " docs";
  for (int64_t len : problem.config.doc_lens) key << " " << len;
  return key.str();
}

// The executor of a context whose runtime is made.
void make_executor(dring_context* ctx, const dring_options& o, const dring::LayoutSpec& layout, int threads) {
  ctx->runtime.transport->set_timeout(ctx->comm_timeout_s);
  dring::ExecutorOptions exec;
  exec.dtype = static_cast<dring::DType>(o.dtype);  // the enums share their values
  exec.layout = layout;
  exec.threads = threads;
  exec.exchange_chunk_bytes = o.exchange_chunk_bytes;
  ctx->executor =
      std::make_unique<dring::RingExecutor>(ctx->problem, *ctx->runtime.transport, *ctx->runtime.backend, exec);
}

// One collective call on a context (a pass). An argument error the ranks agreed on
// (CollectiveError) leaves the context as it was. Any other failure leaves it unusable, so a
// retry can never match a failed pass's messages. To make that the same on every rank, the ranks
// agree on the call's outcome afterwards (one small allreduce, with twice the deadline so a rank
// that failed early outwaits peers still timing out): a failure one rank met after its last
// exchange fails the call everywhere. A communication failure skips that agreement (the
// communicator may hold an abandoned operation); its peers fail by their own deadlines.
template <class Body>
void collective_call(dring_context* ctx, Body&& body) {
  if (ctx->failed_status != dring::Status::kOk) {
    throw dring::Error(ctx->failed_status, "this context is unusable since an earlier call failed (" +
                                               ctx->failed_message + "); destroy it and create a new one");
  }
  std::optional<dring::Error> local;
  try {
    body();
  } catch (const dring::CollectiveError&) {
    throw;
  } catch (const dring::Error& e) {
    local = e;
  } catch (const std::bad_alloc&) {
    local = dring::Error(dring::Status::kOutOfMemory, "out of memory on " + dring::error_rank_text());
  } catch (const std::exception& e) {
    local = dring::Error(dring::Status::kInternal, std::string("internal error: ") + e.what());
  }
  auto give_up = [&](const dring::Error& e) {
    ctx->failed_status = e.status();
    ctx->failed_message = e.what();
    throw e;
  };
  if (local && local->status() == dring::Status::kCommError) give_up(*local);
  try {
    context_agree_on(ctx, local, 2 * ctx->comm_timeout_s + 1.0);
  } catch (const dring::Error& e) {
    give_up(e);
  }
}

static_assert(static_cast<int>(dring::LayoutKind::kContiguous) == DRING_LAYOUT_CONTIGUOUS &&
              static_cast<int>(dring::LayoutKind::kZigzag) == DRING_LAYOUT_ZIGZAG &&
              static_cast<int>(dring::LayoutKind::kStriped) == DRING_LAYOUT_STRIPED);
static_assert(static_cast<int>(dring::DType::kF32) == DRING_DTYPE_F32 &&
              static_cast<int>(dring::DType::kF16) == DRING_DTYPE_F16 &&
              static_cast<int>(dring::DType::kBF16) == DRING_DTYPE_BF16);

}  // namespace

extern "C" {

void dring_options_init(dring_options* options) {
  if (options == nullptr) return;
  options->backend = DRING_BACKEND_CPU;
  options->threads = 0;
  options->exchange_chunk_bytes = 0;
  options->cuda_stream = nullptr;
  options->dtype = DRING_DTYPE_F32;
  options->comm_timeout_s = 0.0;
  options->layout = DRING_LAYOUT_CONTIGUOUS;
  options->stripe = 0;
}

void dring_problem_init(dring_problem* problem) {
  if (problem == nullptr) return;
  *problem = dring_problem{};
}

dring_status dring_context_create(const dring_problem* problem, MPI_Comm comm, const dring_options* options,
                                  dring_context** context) {
  if (context != nullptr) *context = nullptr;
  return guarded([&] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    DRING_CHECK(initialized, dring::Status::kInvalidArgument, "MPI is not initialised (call MPI_Init_thread first)");
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    DRING_CHECK(provided >= MPI_THREAD_FUNNELED, dring::Status::kInvalidArgument,
                "MPI was initialised with thread level " << provided << "; dring needs at least MPI_THREAD_FUNNELED ("
                                                         << MPI_THREAD_FUNNELED << "): use MPI_Init_thread");
    dring_options defaults;
    dring_options_init(&defaults);
    const dring_options& o = options != nullptr ? *options : defaults;
    auto ctx = std::make_unique<dring_context>();
    dring::LayoutSpec layout;
    dring::agree(comm, [&] {
      require(context != nullptr, "context is NULL");
      ctx->problem = dring::problem_from_c(problem);
      check_options(o, ctx.get());
      layout = dring::layout_from_c(o);
      int size = 0;
      MPI_Comm_size(comm, &size);
      dring::ShardLayout(ctx->problem.shape.seq, size, layout);
    });
    // Every rank must describe the same problem.
    int differing = -1;
    if (!dring::all_ranks_equal(comm, problem_key(ctx->problem, layout), &differing, ctx->comm_timeout_s)) {
      throw dring::CollectiveError(dring::Status::kInvalidArgument,
                                   "ranks passed different problems or layouts (rank " + std::to_string(differing) +
                                       "'s differs from rank 0's)",
                                   differing);
    }
    const int threads = o.threads > 0 ? o.threads : dring::default_threads(comm);
    const char* backend = o.backend == DRING_BACKEND_CUDA ? "cuda" : "cpu";
    ctx->comm = comm;
    const auto dtype = static_cast<dring::DType>(o.dtype);  // the enums share their values
    ctx->runtime = dring::select_runtime(comm, backend, dtype, threads, ctx->tracker, o.cuda_stream);
    make_executor(ctx.get(), o, layout, threads);
    *context = ctx.release();
  });
}

dring_status dring_nccl_unique_id(char out[DRING_NCCL_UNIQUE_ID_BYTES]) {
  return guarded([&] {
    require(out != nullptr, "dring_nccl_unique_id: out is NULL");
    dring::new_nccl_unique_id(out);
  });
}

dring_status dring_context_create_nccl(const dring_problem* problem, const char* unique_id, int rank, int world_size,
                                       const dring_options* options, dring_context** context) {
  if (context != nullptr) *context = nullptr;
  return guarded([&] {
    // Only an unusable call (NULLs, a rank outside the world) returns at once. Any other argument
    // error is held until the communicator exists and then agreed on over it, so the peers (which
    // would otherwise wait in NCCL's initialisation for this rank) fail with it too.
    require(context != nullptr && unique_id != nullptr,
            "dring_context_create_nccl: unique_id and context must not be NULL");
    DRING_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, dring::Status::kInvalidArgument,
                "dring_context_create_nccl: rank " << rank << " is not in [0, world_size " << world_size << ")");
    dring_options defaults;
    dring_options_init(&defaults);
    const dring_options& o = options != nullptr ? *options : defaults;
    auto ctx = std::make_unique<dring_context>();
    ctx->comm_timeout_s = dring::comm::resolve_comm_timeout(0.0);  // until the options are read
    dring::LayoutSpec layout;
    std::optional<dring::Error> local;
    try {
      ctx->problem = dring::problem_from_c(problem);
      check_options(o, ctx.get());
      DRING_CHECK(o.backend == DRING_BACKEND_CUDA, dring::Status::kInvalidArgument,
                  "dring_context_create_nccl needs options->backend = DRING_BACKEND_CUDA (without MPI the CPU backend "
                  "cannot run: launch with mpirun or srun and use dring_context_create)");
      layout = dring::layout_from_c(o);
      dring::ShardLayout(ctx->problem.shape.seq, world_size, layout);
    } catch (const dring::Error& e) {
      local = e;
    }
    const auto dtype = local ? dring::DType::kF32 : static_cast<dring::DType>(o.dtype);
    ctx->runtime = dring::make_nccl_runtime(unique_id, rank, world_size, dtype, ctx->tracker, o.cuda_stream);
    ctx->runtime.transport->set_timeout(ctx->comm_timeout_s);
    // From here on the transport's collectives carry the agreements (ctx->comm stays NULL).
    dring::agree_on(*ctx->runtime.transport, local);
    std::optional<dring::Error> mismatch;
    if (!dring::all_ranks_equal(*ctx->runtime.transport, problem_key(ctx->problem, layout))) {
      mismatch = dring::Error(dring::Status::kInvalidArgument, "ranks passed different problems or layouts");
    }
    dring::agree_on(*ctx->runtime.transport, mismatch);
    context_agree(ctx.get(), [&] { make_executor(ctx.get(), o, layout, 1); });
    *context = ctx.release();
  });
}

dring_status dring_context_create_f(const dring_problem* problem, MPI_Fint comm, const dring_options* options,
                                    dring_context** context) {
  return dring_context_create(problem, MPI_Comm_f2c(comm), options, context);
}

void dring_context_destroy(dring_context* context) {
  try {
    delete context;
  } catch (...) {
  }
}

dring_status dring_shard_range(const dring_context* context, int64_t* begin, int64_t* rows) {
  return guarded([&] {
    require(context != nullptr && begin != nullptr && rows != nullptr, "context, begin and rows must not be NULL");
    const dring::ShardLayout& layout = context->executor->layout();
    DRING_CHECK(layout.contiguous(), dring::Status::kUnsupported,
                "dring_shard_range: the " << layout.spec().describe()
                                          << " layout gives a rank no single range of rows; use dring_shard_positions");
    *begin = layout.lowest(context->executor->rank());
    *rows = context->executor->shard_rows();
  });
}

dring_status dring_shard_positions(const dring_context* context, int64_t* positions, int64_t capacity,
                                   int64_t* count) {
  return guarded([&] {
    require(context != nullptr && count != nullptr, "dring_shard_positions: context and count must not be NULL");
    const dring::ShardLayout& layout = context->executor->layout();
    const int rank = context->executor->rank();
    *count = layout.size(rank);
    if (positions == nullptr) return;
    DRING_CHECK(capacity >= *count, dring::Status::kInvalidArgument,
                "dring_shard_positions: capacity " << capacity << " is less than this rank's " << *count << " rows");
    for (const dring::ShardRun& run : layout.runs(rank)) {
      for (int64_t m = 0; m < run.pos.count; ++m) positions[run.local_first + m * run.local_stride] = run.pos.at(m);
    }
  });
}

dring_status dring_forward(dring_context* context, const float* q, const float* k, const float* v, float* out,
                           float* lse) {
  return guarded([&] {
    require(context != nullptr, "context is NULL");
    collective_call(context, [&] {
      context_agree(context, [&] {
        require(q != nullptr && k != nullptr && v != nullptr && out != nullptr && lse != nullptr,
                "dring_forward: q, k, v, out and lse must not be NULL");
      });
      context->executor->forward({q, k, v}, {out, lse});
    });
  });
}

dring_status dring_backward(dring_context* context, const float* q, const float* k, const float* v, const float* out,
                            const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  return guarded([&] {
    require(context != nullptr, "context is NULL");
    collective_call(context, [&] {
      context_agree(context, [&] {
        require(q != nullptr && k != nullptr && v != nullptr && out != nullptr && lse != nullptr && dout != nullptr &&
                    dq != nullptr && dk != nullptr && dv != nullptr,
                "dring_backward: no tensor may be NULL");
      });
      context->executor->backward({{q, k, v}, out, lse, dout}, {dq, dk, dv});
    });
  });
}

int64_t dring_peak_tracked_bytes(const dring_context* context) {
  if (context == nullptr) return 0;
  const dring::MemoryStats stats = context->tracker.stats();
  return stats.host().peak_bytes + stats.device().peak_bytes;
}

const char* dring_last_error(void) { return last_error.c_str(); }

const char* dring_status_string(dring_status status) {
  return dring::status_name(static_cast<dring::Status>(status));
}

const char* dring_version(void) { return DRING_VERSION; }

int dring_abi_version(void) { return DRING_ABI_VERSION; }

}  // extern "C"
