// test_dense_proof.cpp — the CPU proof of the cuDNN mapping (dense_proof_backend.hpp) beyond the
// Dense/* instantiations of the ring suites: the proof really runs dense problems (not everything
// as leftovers) for every standard configuration, at head dims a fused kernel would see, and a
// deliberately wrong stride in the problems is caught by the comparison with float64. On a GPU
// (builds with DRING_HAVE_CUDNN), CudnnPath runs the same shapes through cuDNN itself.
#include <gtest/gtest.h>
#include <mpi.h>

#include "dense_proof_backend.hpp"
#include "dring/config.h"
#if DRING_HAVE_CUDNN
#include "dring/runtime/cuda_backend.hpp"
#endif
#include "ring_harness.hpp"
#include "test_util.hpp"

namespace dring::ring_test {
namespace {

const BackendCase kDenseCase{Device::kDense, Link::kMpi};
const BackendCase kCpuCase{Device::kCpu, Link::kMpi};

[[maybe_unused]] int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

TEST(DenseProof, EveryConfigurationRunsDenseProblemsAndMatchesTheReference) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RankRuntime dist_rt(kDenseCase, MPI_COMM_WORLD, dtype), single_rt(kCpuCase, MPI_COMM_SELF, dtype);
    const Tolerance tol = tolerance(kDenseCase, dtype);
    for (const auto& c : test::standard_configs()) {
      for (const int64_t d : {16, 64}) {
        SCOPED_TRACE(testing::Message() << c.name << " d " << d << " " << dtype_name(dtype));
        const Problem p = test::make_problem(2, 97, c.heads, c.kv_heads, d, c.pairs, c.causal);
        const ExecutorOptions options = small_tile_options(dtype, 0);
        DenseProofStats& stats = dense_proof_stats(*dist_rt.runtime.backend);
        stats = DenseProofStats{};
        const PassResult dist = run_pass(dist_rt, p, 3, options, true);
        const PassResult single = run_pass(single_rt, p, 3, options, true);
        EXPECT_GT(stats.problems, 0);
        EXPECT_GT(stats.problem_blocks, stats.leftover_blocks);
        const Errors f = forward_errors(p, 3, dist, single, tol.lse_relative);
        EXPECT_LT(f.vs_reference, tol.forward);
        const Errors g = backward_errors(p, 3, dist, single);
        EXPECT_LT(g.vs_reference, tol.backward);
      }
    }
  }
}

// A batch stride of k one row short in every batched problem: the proof must notice.
TEST(DenseProof, AWrongStrideFailsTheComparison) {
  RankRuntime dist_rt(kDenseCase, MPI_COMM_WORLD, DType::kF32), single_rt(kCpuCase, MPI_COMM_SELF, DType::kF32);
  dist_rt.runtime.backend = make_dense_proof_backend(make_cpu_backend(dist_rt.tracker, 1), true);
  const Problem p = test::make_problem(2, 97, 4, 4, 16, {{8, 1}, {24, 2}, {64, 4}}, false);
  const ExecutorOptions options = small_tile_options(DType::kF32, 0);
  const PassResult dist = run_pass(dist_rt, p, 3, options, true);
  const PassResult single = run_pass(single_rt, p, 3, options, true);
  EXPECT_GT(forward_errors(p, 3, dist, single, false).vs_reference, 1e-2);
  EXPECT_GT(backward_errors(p, 3, dist, single).vs_reference, 1e-2);
}

#if DRING_HAVE_CUDNN
// The same configurations on the CUDA backend with the cuDNN share at its largest (Device::kCudnn),
// at head dims cuDNN's engines take, against float64 and the one-rank CPU run; and a plain dense
// problem with the default thresholds takes the cuDNN path for all of its blocks.
TEST(CudnnPath, EveryConfigurationMatchesTheReference) {
  const BackendCase cudnn{Device::kCudnn, Link::kMpi};
  DRING_REQUIRE_BACKEND(cudnn);
  for (const DType dtype : {DType::kF16, DType::kBF16}) {
    RankRuntime dist_rt(cudnn, MPI_COMM_WORLD, dtype), single_rt(kCpuCase, MPI_COMM_SELF, DType::kF32);
    const Tolerance tol = tolerance(cudnn, dtype);
    for (const auto& c : test::standard_configs()) {
      for (const int64_t d : {64, 128}) {
        SCOPED_TRACE(testing::Message() << c.name << " d " << d << " " << dtype_name(dtype));
        const Problem p = test::make_problem(2, 97, c.heads, c.kv_heads, d, c.pairs, c.causal);
        const PassResult dist = run_pass(dist_rt, p, 3, small_tile_options(dtype, 0), true);
        const PassResult single = run_pass(single_rt, p, 3, small_tile_options(DType::kF32, 0), true);
        EXPECT_LT(forward_errors(p, 3, dist, single, tol.lse_relative).vs_reference, tol.forward);
        EXPECT_LT(backward_errors(p, 3, dist, single).vs_reference, tol.backward);
      }
    }
  }
}

TEST(CudnnPath, DefaultRuleSendsALargeDenseProblemToCudnn) {
  const BackendCase cuda{Device::kCuda, Link::kMpi};
  DRING_REQUIRE_BACKEND(cuda);
  if (world_size() != 1) GTEST_SKIP() << "one rank: the whole problem is one local call";
  RankRuntime rt(cuda, MPI_COMM_WORLD, DType::kBF16), single_rt(kCpuCase, MPI_COMM_SELF, DType::kF32);
  const Problem p = test::make_problem(1, 1024, 4, 2, 128, {}, true);
  const PassResult dist = run_pass(rt, p, 9, small_tile_options(DType::kBF16, 0), true);
  EXPECT_EQ(last_attend_path(*rt.runtime.backend), "cudnn");
  const PassResult single = run_pass(single_rt, p, 9, small_tile_options(DType::kF32, 0), true);
  const Tolerance tol = tolerance(cuda, DType::kBF16);
  EXPECT_LT(forward_errors(p, 9, dist, single, tol.lse_relative).vs_reference, tol.forward);
  EXPECT_LT(backward_errors(p, 9, dist, single).vs_reference, tol.backward);
}
#endif

}  // namespace
}  // namespace dring::ring_test
