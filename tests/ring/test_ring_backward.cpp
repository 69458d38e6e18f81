// test_ring_backward.cpp — the distributed backward pass on every backend case (ring_harness.hpp),
// run under mpirun with 1 to 4 ranks: every rank's dq, dk, dv equal the one-rank run on the same
// data and the float64 reference gradient, for dense, dilated, causal and GQA configurations with
// lengths that divide nothing, automatic and 5-row messages; and the backward peak memory per
// rank falls with the ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include "ring_harness.hpp"
#include "test_util.hpp"

namespace dring::ring_test {
namespace {

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

class RingBackward : public testing::TestWithParam<RingCase> {};

TEST_P(RingBackward, EqualsOneRankAndReference) {
  const RingCase& rc = GetParam();
  DRING_REQUIRE_BACKEND(rc.backend);
  if (rc.seq < world_size()) GTEST_SKIP() << "fewer tokens than ranks";  // same decision on every rank
  RankRuntime dist_rt(rc.backend, MPI_COMM_WORLD, rc.dtype), single_rt(rc.backend, MPI_COMM_SELF, rc.dtype);
  const Tolerance tol = tolerance(rc.backend, rc.dtype);
  const int64_t d = 8;
  for (const auto& c : test::standard_configs()) {
    for (int64_t chunk_bytes : {int64_t{0}, message_cap_bytes(5, d, rc.dtype)}) {  // automatic, 5 rows
      SCOPED_TRACE(testing::Message() << c.name << " seq " << rc.seq << " chunk " << chunk_bytes << " "
                                      << case_name(rc, false));
      const Problem p = test::make_problem(2, rc.seq, c.heads, c.kv_heads, d, c.pairs, c.causal);
      const ExecutorOptions options = small_tile_options(rc.dtype, chunk_bytes);
      const PassResult dist = run_pass(dist_rt, p, 5, options, true);
      const PassResult single = run_pass(single_rt, p, 5, options, true);
      const Errors e = backward_errors(p, 5, dist, single);
      EXPECT_LT(e.vs_reference, tol.backward);
      EXPECT_LT(e.vs_one_rank, tol.backward);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, RingBackward, testing::ValuesIn(ring_cases(Device::kCpu, {4, 37, 130})),
                         ring_case_name);
INSTANTIATE_TEST_SUITE_P(Dense, RingBackward, testing::ValuesIn(ring_cases(Device::kDense, {4, 37, 130})),
                         ring_case_name);
#if DRING_HAVE_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, RingBackward, testing::ValuesIn(ring_cases(Device::kCuda, {4, 37, 130})),
                         ring_case_name);
#endif
#if DRING_HAVE_CUDNN
INSTANTIATE_TEST_SUITE_P(Cudnn, RingBackward, testing::ValuesIn(ring_cases(Device::kCudnn, {37, 130})),
                         ring_case_name);
#endif

// The backward pass's peak (the backend's space, counted from the end of the forward pass) against
// the one-rank run. CPU only, for the reason given in test_ring_forward.cpp.
class RingBackwardMemory : public testing::TestWithParam<RingCase> {};

TEST_P(RingBackwardMemory, PeakPerRankFallsWithRanks) {
  const RingCase& rc = GetParam();
  DRING_REQUIRE_BACKEND(rc.backend);
  expect_peak_falls_with_ranks(rc, true);
}

INSTANTIATE_TEST_SUITE_P(Cpu, RingBackwardMemory, testing::ValuesIn(ring_cases(Device::kCpu, {8192})),
                         ring_case_name);

}  // namespace
}  // namespace dring::ring_test
