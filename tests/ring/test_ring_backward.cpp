// test_ring_backward.cpp — the distributed backward pass on every backend case (ring_harness.hpp),
// run under mpirun with 1 to 4 ranks: every rank's dq, dk, dv equal the one-rank run on the same
// data and the float64 reference gradient, for dense, dilated, causal and GQA configurations with
// lengths that divide nothing, automatic and 5-row messages; and the backward peak memory per
// rank falls with the ranks; and the gradient check (`--check --backward`) gives the same result
// whether it holds the inputs in memory or reads them row by row.
#include <gtest/gtest.h>
#include <mpi.h>

#include <limits>

#include "dring/runtime/check.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/synthetic.hpp"
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

// `--check --backward` reads small inputs once into float64 tensors and larger ones row by row
// from the source (check.hpp): both must give the same result, bit for bit, on a shape that
// exercises the tensors' indexing (batch 2, GQA, dilated causal pairs, packed documents, zigzag),
// for correct gradients (the check passes) and for corrupted ones (it fails, by the same error).
TEST(CpuGradientCheck, InMemoryInputsGiveTheStreamedResult) {
  const int k = world_size();
  const int64_t seq = 37, d = 8;
  RankRuntime rt(BackendCase{}, MPI_COMM_WORLD, DType::kF32);
  Problem p = test::make_problem(2, seq, 6, 3, d, {{12, 3}, {24, 2}}, true);
  p.config.doc_lens = {1, 20, 16};
  ExecutorOptions options = small_tile_options(DType::kF32, message_cap_bytes(4, d, DType::kF32));
  options.layout = LayoutSpec::parse("zigzag");
  PassResult run = run_pass(rt, p, 7, options, true);
  const ShardLayout layout(seq, k, options.layout);
  const SyntheticSource source(7, p.shape);
  const std::vector<RowId> rows = sample_rows(p.shape, layout, 48, 3, p.config.doc_lens);
  const double budget = 1e12;  // every sampled row's dk, dv
  auto both_ways = [&](const char* what) {
    SCOPED_TRACE(what);
    const GradCheckResult memo = check_gradient_rows(p, layout, run.rank, run.dq.data(), run.dk.data(), run.dv.data(),
                                                     source, rows, 1e-4, budget, MPI_COMM_WORLD,
                                                     std::numeric_limits<int64_t>::max());
    const GradCheckResult streamed = check_gradient_rows(p, layout, run.rank, run.dq.data(), run.dk.data(),
                                                         run.dv.data(), source, rows, 1e-4, budget, MPI_COMM_WORLD, 0);
    EXPECT_EQ(memo.result.rows, streamed.result.rows);
    EXPECT_EQ(memo.kv_rows, streamed.kv_rows);
    EXPECT_EQ(memo.result.max_abs_err, streamed.result.max_abs_err);
    EXPECT_EQ(memo.result.max_rel_err, streamed.result.max_rel_err);
    EXPECT_EQ(memo.result.passed, streamed.result.passed);
    EXPECT_EQ(memo.result.rows, static_cast<int64_t>(rows.size()));
    EXPECT_EQ(memo.kv_rows, static_cast<int64_t>(rows.size()));
    return memo.result;
  };
  const CheckResult good = both_ways("gradients as computed");
  EXPECT_TRUE(good.passed) << good.max_rel_err;

  // One element of dq and of dk wrong on every rank that owns a sampled row.
  for (const RowId& row : rows) {
    if (layout.owner(row.pos) != run.rank) continue;
    const int64_t i = layout.local_row(row.pos);
    run.dq[p.shape.q_dims(run.rows).at(row.batch, i, row.head) + 3] += 0.5f;
    run.dk[p.shape.kv_dims(run.rows).at(row.batch, i, p.kv_head_of(row.head)) + 5] -= 0.5f;
    break;
  }
  const CheckResult bad = both_ways("two elements corrupted");
  EXPECT_FALSE(bad.passed);
  EXPECT_GT(bad.max_abs_err, 0.4);
}

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
