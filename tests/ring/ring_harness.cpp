// ring_harness.cpp — see ring_harness.hpp.
#include "ring_harness.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dring/kernels/reference.hpp"
#include "dring/runtime/node.hpp"
#include "dring/runtime/shard.hpp"
#include "dring/runtime/synthetic.hpp"
#include "dense_proof_backend.hpp"
#include "gpu_test_util.hpp"
#include "test_util.hpp"
#if DRING_HAVE_CUDA
#include "dring/runtime/cuda_backend.hpp"
#endif

namespace dring::ring_test {

namespace {

bool g_initialised = false;
bool g_gpu = false;   // every rank sees a GPU
bool g_nccl = false;  // NCCL built, and every rank has a GPU of its own on its node

[[maybe_unused]] bool all_ranks(bool mine) {
  const int in = mine ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&in, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

// A NaN error must fail a bound, and std::max would drop it.
double worst(double so_far, double err) { return std::max(so_far, std::isnan(err) ? 1e30 : err); }

}  // namespace

std::vector<BackendCase> backend_cases(Device device) {
  if (device == Device::kCpu || device == Device::kDense) return {{device, Link::kMpi}};
  std::vector<BackendCase> cases;
  if (device == Device::kCudnn) {
#if DRING_HAVE_CUDNN
    cases.push_back({Device::kCudnn, Link::kMpi});
#endif
    return cases;
  }
#if DRING_HAVE_CUDA
  cases.push_back({Device::kCuda, Link::kMpi});
#if DRING_HAVE_NCCL
  cases.push_back({Device::kCuda, Link::kNccl});
#endif
#endif
  return cases;
}

std::vector<DType> device_dtypes(Device device) {
  if (device == Device::kCpu || device == Device::kDense) return {DType::kF32, DType::kBF16};
  if (device == Device::kCudnn) return {DType::kF16, DType::kBF16};
  return {DType::kF32, DType::kF16, DType::kBF16};
}

std::vector<RingCase> ring_cases(Device device, const std::vector<int64_t>& seqs) {
  std::vector<RingCase> cases;
  for (const BackendCase& backend : backend_cases(device)) {
    for (DType dtype : device_dtypes(device)) {
      for (int64_t seq : seqs) cases.push_back({backend, dtype, seq});
    }
  }
  return cases;
}

std::string case_name(const RingCase& c, bool with_seq) {
  std::string name = c.backend.link == Link::kNccl ? "nccl_" : "mpi_";
  name += dtype_name(c.dtype);
  if (with_seq) name += "_seq" + std::to_string(c.seq);
  return name;
}

void PrintTo(const RingCase& c, std::ostream* os) {
  const Device device = c.backend.device;
  *os << (device == Device::kCpu     ? "cpu/"
          : device == Device::kDense ? "dense/"
          : device == Device::kCudnn ? "cudnn/"
                                     : "cuda/")
      << (c.backend.link == Link::kNccl ? "nccl " : "mpi ")
      << dtype_name(c.dtype) << " seq " << c.seq;
}

void init_ring_harness() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  g_gpu = cuda_available(MPI_COMM_WORLD);
#if DRING_HAVE_CUDA && DRING_HAVE_NCCL
  const NodePlacement place = node_placement(MPI_COMM_WORLD);
  g_nccl = all_ranks(g_gpu && place.local_size <= cuda_device_count());
#endif
  g_initialised = true;
#if DRING_HAVE_CUDA
  if (rank == 0 && !g_gpu) {
    // tests/gpu/CMakeLists.txt matches this line (SKIP_REGULAR_EXPRESSION).
    std::printf("dring-gpu-tests: no GPU visible on some rank; every GPU test is skipped\n");
  }
#endif
}

bool gpu_available() { return g_gpu; }

std::string unavailable_reason(const BackendCase& c) {
  if (!g_initialised) return "init_ring_harness was not called";
  if (c.device == Device::kCpu || c.device == Device::kDense) return "";
  if (!g_gpu) return "no GPU on some rank";
  if (c.link == Link::kNccl && !g_nccl) return "NCCL needs a GPU of its own for every rank of a node";
  return "";
}

Tolerance tolerance(const BackendCase& c, DType dtype) {
  if ((c.device == Device::kCpu || c.device == Device::kDense) && dtype == DType::kF32) return {1e-5, 2e-6, false};
  const double bound = dtype == DType::kF32 ? 2e-5 : 2 * gpu_test::out_tolerance(dtype);
  return {bound, bound, true};
}

namespace {

Runtime make_runtime(const BackendCase& c, MPI_Comm comm, DType dtype, int threads, MemoryTracker& tracker) {
  if (c.device == Device::kCpu) return select_runtime(comm, "cpu", dtype, threads, tracker);
  if (c.device == Device::kDense) {
    Runtime rt = select_runtime(comm, "cpu", dtype, threads, tracker);
    rt.backend = make_dense_proof_backend(std::move(rt.backend));
    return rt;
  }
#if DRING_HAVE_CUDA
  const CudaTransportChoice choice = c.link == Link::kNccl ? CudaTransportChoice::kNccl : CudaTransportChoice::kMpi;
  Runtime rt = make_cuda_runtime(comm, dtype, tracker, nullptr, choice);
  if (c.device == Device::kCudnn) {
    CudaBackendOptions options;
    options.cudnn_min_rows = 1;
    options.cudnn_min_problem_scores = 0.0;
    configure_cuda_backend(*rt.backend, options);
  }
  return rt;
#else
  return select_runtime(comm, "cuda", dtype, threads, tracker);  // throws: no CUDA in this build
#endif
}

}  // namespace

RankRuntime::RankRuntime(const BackendCase& c, MPI_Comm comm, DType dtype, int threads)
    : runtime(make_runtime(c, comm, dtype, threads, tracker)) {}

int RankRuntime::world_rank() const { return runtime.transport->world_rank(); }
int RankRuntime::world_size() const { return runtime.transport->world_size(); }

ExecutorOptions small_tile_options(DType dtype, int64_t exchange_chunk_bytes) {
  ExecutorOptions options;
  options.dtype = dtype;
  options.threads = 1;
  options.exchange_chunk_bytes = exchange_chunk_bytes;
  options.q_tile = 16;
  options.k_tile = 24;
  options.small_block_scores = 64;
  options.fused_small_block_scores = 64;
  return options;
}

PassResult run_pass(RankRuntime& rt, const Problem& problem, uint64_t seed, const ExecutorOptions& options,
                    bool backward) {
  Backend& backend = *rt.runtime.backend;
  const DType dtype = options.dtype;
  auto peak = [&] {
    const MemoryStats stats = rt.tracker.stats();
    return backend.space() == MemSpace::kHost ? stats.host().peak_bytes : stats.device().peak_bytes;
  };
  PassResult run;
  run.rank = rt.world_rank();
  run.transport = rt.runtime.transport->name();
  run.note = rt.runtime.note;
  const ShardLayout layout(problem.shape.seq, rt.world_size(), options.layout);
  ShardBuffers shard = allocate_shard(problem.shape, layout.lowest(run.rank), layout.size(run.rank),
                                      backend.allocator(), dtype, backward);
  run.positions = layout.positions(run.rank);
  if (layout.contiguous()) {
    fill_synthetic_shard(seed, problem.shape, shard, backend, rt.tracker, options.threads);
  } else {
    // The rank's rows of the whole synthetic sequence, gathered in local order.
    const AttentionShape& s = problem.shape;
    auto fill = [&](TensorId id, TensorBuffer& buffer, int64_t heads) {
      if (buffer.size() == 0) return;
      std::vector<float> whole(static_cast<size_t>(s.batch * s.seq * heads * s.head_dim));
      fill_synthetic(seed, id, s, 0, s.seq, whole.data(), 1);
      const int64_t row = heads * s.head_dim;
      std::vector<float> mine(static_cast<size_t>(buffer.size()));
      for (int64_t b = 0; b < s.batch; ++b) {
        for (size_t i = 0; i < run.positions.size(); ++i) {
          std::copy_n(whole.begin() + (b * s.seq + run.positions[i]) * row, row,
                      mine.begin() + (b * static_cast<int64_t>(run.positions.size()) + static_cast<int64_t>(i)) * row);
        }
      }
      backend.upload(mine.data(), buffer.data(), buffer.size(), buffer.dtype());
    };
    fill(TensorId::kQ, shard.q, s.heads);
    fill(TensorId::kK, shard.k, s.kv_heads);
    fill(TensorId::kV, shard.v, s.kv_heads);
    fill(TensorId::kDout, shard.dout, s.heads);
    backend.synchronize();
  }
  RingExecutor executor(problem, *rt.runtime.transport, backend, options);
  run.rows = shard.rows;
  run.forward = executor.forward(shard.inputs(), shard.outputs());
  run.forward_peak_bytes = peak();
  if (backward) {
    rt.tracker.reset_peaks();
    run.backward = executor.backward(shard.grad_inputs(), shard.grad_outputs());
    run.backward_peak_bytes = peak();
  }
  run.out = gpu_test::download(backend, shard.out.data(), dtype, shard.out.size());
  run.lse = gpu_test::download(backend, shard.lse.data(), DType::kF32, shard.lse.size());
  if (backward) {
    run.dq = gpu_test::download(backend, shard.dq.data(), dtype, shard.dq.size());
    run.dk = gpu_test::download(backend, shard.dk.data(), dtype, shard.dk.size());
    run.dv = gpu_test::download(backend, shard.dv.data(), dtype, shard.dv.size());
  }
  return run;
}

Errors forward_errors(const Problem& p, uint64_t seed, const PassResult& dist, const PassResult& single,
                      bool lse_relative) {
  const AttentionShape& s = p.shape;
  // Inputs made once: the reference reads every key row once per query row, and a synthetic
  // value costs a hash, a log and a cos (two thirds of the ring tests' time before).
  const reference::InMemorySource source(s, SyntheticSource(seed, s));
  Errors e;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < dist.rows; ++i) {
      const int64_t pos = dist.positions[i];
      for (int64_t h = 0; h < s.heads; ++h) {
        const reference::RowResult ref = reference::attention_row(p, source, b, pos, h);
        const float lse = dist.lse[(b * s.heads + h) * dist.rows + i];
        const float lse1 = single.lse[(b * s.heads + h) * s.seq + pos];
        if (std::isinf(ref.lse)) {
          EXPECT_TRUE(std::isinf(lse) && lse < 0) << "row " << pos << " head " << h;
          EXPECT_TRUE(std::isinf(lse1) && lse1 < 0) << "one rank: row " << pos << " head " << h;
        } else {
          const double lse_scale = lse_relative ? std::max(1.0, std::abs(ref.lse)) : 1.0;
          e.vs_reference = worst(e.vs_reference, std::abs(lse - ref.lse) / lse_scale);
          e.vs_one_rank = worst(e.vs_one_rank, static_cast<double>(std::abs(lse - lse1)));
        }
        const double scale = std::max(ref.value_scale, 1e-30);
        for (int64_t c = 0; c < s.head_dim; ++c) {
          const float out = dist.out[((b * dist.rows + i) * s.heads + h) * s.head_dim + c];
          const float out1 = single.out[((b * s.seq + pos) * s.heads + h) * s.head_dim + c];
          e.vs_reference = worst(e.vs_reference, std::abs(out - ref.out[c]) / scale);
          e.vs_one_rank = worst(e.vs_one_rank, std::abs(static_cast<double>(out) - out1) / scale);
        }
      }
    }
  }
  return e;
}

Errors backward_errors(const Problem& p, uint64_t seed, const PassResult& dist, const PassResult& single) {
  const AttentionShape& s = p.shape;
  const reference::InMemorySource source(s, SyntheticSource(seed, s));  // as in forward_errors
  std::vector<double> dq, dk, dv;
  reference::attention_backward(p, source, dq, dk, dv);
  double largest = 0.0;
  for (const auto* g : {&dq, &dk, &dv}) {
    for (double x : *g) largest = std::max(largest, std::abs(x));
  }
  Errors e;
  auto compare = [&](const std::vector<float>& got, const std::vector<float>& one, const std::vector<double>& want,
                     int64_t heads) {
    const int64_t row = heads * s.head_dim;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t i = 0; i < dist.rows; ++i) {
        for (int64_t n = 0; n < row; ++n) {
          const float x = got[(b * dist.rows + i) * row + n];
          const int64_t global = (b * s.seq + dist.positions[i]) * row + n;
          e.vs_reference = worst(e.vs_reference, std::abs(x - want[global]) / largest);
          e.vs_one_rank = worst(e.vs_one_rank, std::abs(static_cast<double>(x) - one[global]) / largest);
        }
      }
    }
  };
  compare(dist.dq, single.dq, dq, s.heads);
  compare(dist.dk, single.dk, dk, s.kv_heads);
  compare(dist.dv, single.dv, dv, s.kv_heads);
  return e;
}

int64_t max_over_world(int64_t value) {
  int64_t result = 0;
  MPI_Allreduce(&value, &result, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  return result;
}

void expect_peak_falls_with_ranks(const RingCase& rc, bool backward) {
  int k = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &k);
  const Problem p = test::make_problem(1, rc.seq, 4, 4, 32, {{1024, 1}, {4096, 2}, {rc.seq, 4}}, false);
  ExecutorOptions options;
  options.dtype = rc.dtype;
  RankRuntime dist_rt(rc.backend, MPI_COMM_WORLD, rc.dtype), single_rt(rc.backend, MPI_COMM_SELF, rc.dtype);
  const PassResult dist = run_pass(dist_rt, p, 3, options, backward);
  const PassResult single = run_pass(single_rt, p, 3, options, backward);
  const int64_t mine = backward ? dist.backward_peak_bytes : dist.forward_peak_bytes;
  const int64_t one_rank = backward ? single.backward_peak_bytes : single.forward_peak_bytes;
  const int64_t worst = max_over_world(mine);
  const double ratio = static_cast<double>(worst) / static_cast<double>(one_rank);
  testing::Test::RecordProperty(backward ? "backward_peak_ratio" : "peak_ratio", std::to_string(ratio));
  if (k == 4) {
    EXPECT_LE(ratio, 0.3);
  }
  EXPECT_LE(ratio, 1.0 / k + 0.1) << "worst rank peak " << worst << " bytes, one rank " << one_rank;
}

}  // namespace dring::ring_test

namespace dring::gpu_test {

// gpu_test_util.hpp's collective answer (DRING_REQUIRE_GPU), in the binaries of this harness.
bool available() { return ring_test::gpu_available(); }

}  // namespace dring::gpu_test
