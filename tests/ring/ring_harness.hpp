// ring_harness.hpp — one harness for the ring executor on every backend this build and machine have.
//
// A BackendCase says how a rank makes its runtime: the CPU backend with the MPI transport (always),
// and in builds with DRING_HAVE_CUDA the CUDA backend with the staged MPI transport and, where NCCL
// is built, with NCCL. The suites (test_ring_forward.cpp, test_ring_backward.cpp, test_row_ops.cpp)
// are parameterised over RingCase = (backend case, storage dtype, sequence length) and run the same
// configurations on each: against the float64 reference and against the one-rank run on the same
// data (MPI_COMM_SELF). Whether a case can run here is decided once, collectively, by
// init_ring_harness (an MPI_Allreduce), so every rank runs or skips the same tests and no rank
// skips a collective another enters. Instantiations are named Cpu/..., Dense/..., Cuda/... and Cudnn/...; CTest picks
// them with --gtest_filter (tests/CMakeLists.txt, tests/gpu/CMakeLists.txt).
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "dring/config.h"
#include "dring/core/dtype.hpp"
#include "dring/core/memory.hpp"
#include "dring/core/problem.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/runtime/select.hpp"

namespace dring::ring_test {

// kDense: the CPU backend wrapped by the CPU proof of the cuDNN path (dense_proof_backend.hpp).
// kCudnn: the CUDA backend with every block the rule can map sent to cuDNN (thresholds at their
// floor; builds with DRING_HAVE_CUDNN, fp16 and bf16).
enum class Device { kCpu, kCuda, kDense, kCudnn };
enum class Link { kMpi, kNccl };  // kMpi on CUDA: host staging or CUDA-aware MPI, whichever the run finds

struct BackendCase {
  Device device = Device::kCpu;
  Link link = Link::kMpi;
};

struct RingCase {
  BackendCase backend;
  DType dtype = DType::kF32;
  int64_t seq = 0;
};

// The backend cases a build has, by device (Cuda: none in builds without DRING_HAVE_CUDA).
std::vector<BackendCase> backend_cases(Device device);
// Storage dtypes a device's kernels take: fp32 on CPU; fp32, fp16, bf16 on CUDA.
std::vector<DType> device_dtypes(Device device);
// Every (backend case of `device`, dtype of the device, length) combination.
std::vector<RingCase> ring_cases(Device device, const std::vector<int64_t>& seqs);
// GoogleTest parameter names: "mpi_fp32_seq37", "nccl_bf16_seq130"; "mpi_fp32" without a length.
std::string case_name(const RingCase& c, bool with_seq = true);
inline std::string ring_case_name(const testing::TestParamInfo<RingCase>& info) { return case_name(info.param); }
// What GoogleTest prints for a parameter: "cuda/mpi fp16 seq 37".
void PrintTo(const RingCase& c, std::ostream* os);

// Collective over MPI_COMM_WORLD, once, before the tests: whether every rank sees a GPU, and
// whether NCCL can run (built, and every rank has a GPU of its own on its node). Prints, on rank 0
// of a CUDA build without a GPU, the line tests/gpu/CMakeLists.txt turns into "skipped".
void init_ring_harness();
bool gpu_available();
// Empty when the case can run here; else why not (the same answer on every rank).
std::string unavailable_reason(const BackendCase& c);

#define DRING_REQUIRE_BACKEND(backend_case)                                                  \
  do {                                                                                      \
    const std::string dring_why = ::dring::ring_test::unavailable_reason(backend_case);     \
    if (!dring_why.empty()) GTEST_SKIP() << dring_why << " (decided collectively)";         \
  } while (0)

// Error bounds, both measured against float64 (relative to max |v| for out, to the largest
// gradient element for dq, dk, dv). lse: absolute error, or relative to max(1, |lse|) where
// `lse_relative` (the CUDA kernels' fast exponentials).
struct Tolerance {
  double forward = 0.0;
  double backward = 0.0;
  bool lse_relative = false;
};
Tolerance tolerance(const BackendCase& c, DType dtype);

// A rank's runtime (backend + transport) over `comm`, with the tracker it allocates through; made
// once per test and reused by its passes. Collective over comm.
struct RankRuntime {
  MemoryTracker tracker;
  Runtime runtime;
  RankRuntime(const BackendCase& c, MPI_Comm comm, DType dtype, int threads = 1);
  int world_rank() const;
  int world_size() const;
};

// The options every correctness case runs with: small tiles, so both CPU kernel paths run.
ExecutorOptions small_tile_options(DType dtype, int64_t exchange_chunk_bytes);
// A cap that makes exchange messages `rows` rows of K and V long.
inline int64_t message_cap_bytes(int64_t rows, int64_t head_dim, DType dtype) {
  return rows * 2 * head_dim * dtype_bytes(dtype);
}

// One pass (forward, and backward when asked) on a fresh shard of synthetic inputs from `seed`;
// the results copied to host fp32.
struct PassResult {
  int rank = 0;
  int64_t rows = 0;
  std::vector<int64_t> positions;  // of the rank's rows, in local order (options.layout)
  std::vector<float> out, lse, dq, dk, dv;
  PassStats forward, backward;
  int64_t forward_peak_bytes = 0;   // the backend's memory space, since the runtime was made
  int64_t backward_peak_bytes = 0;  // the backend's memory space, during the backward pass only
  std::string transport, note;
};
PassResult run_pass(RankRuntime& rt, const Problem& problem, uint64_t seed, const ExecutorOptions& options,
                    bool backward);

// Max errors of a distributed run's rows against the float64 reference and against the one-rank
// run on the same data (NaN counts as a huge error). A row the reference says nothing reaches
// must have lse = -inf in both runs (checked with EXPECT) and out = 0 (its error scale is 1e-30).
struct Errors {
  double vs_reference = 0.0;
  double vs_one_rank = 0.0;
};
Errors forward_errors(const Problem& problem, uint64_t seed, const PassResult& dist, const PassResult& single,
                      bool lse_relative);
Errors backward_errors(const Problem& problem, uint64_t seed, const PassResult& dist, const PassResult& single);

// The largest of a value over the ranks of MPI_COMM_WORLD.
int64_t max_over_world(int64_t value);

// The worst rank's tracked peak (forward pass, or the backward pass alone) over the one-rank run's,
// for a LongNet-style problem of `rc.seq` tokens whose longest segment spans every rank; expects it
// to fall as 1/k (at most 1/k + 0.1, and 0.3 at 4 ranks). Collective over MPI_COMM_WORLD.
void expect_peak_falls_with_ranks(const RingCase& rc, bool backward);

}  // namespace dring::ring_test
