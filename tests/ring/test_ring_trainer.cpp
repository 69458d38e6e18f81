// test_ring_trainer.cpp — the trainer features through the ring, on every backend case
// (ring_harness.hpp), under mpirun with 1 to 4 ranks: every layout (contiguous, zigzag, striped,
// striped:3, and striped:4, whose stripes hold blocks of dilation 2 and 4 as one progression of
// local rows) x packed documents (none; lengths 1 and longer than a shard) x window (none, 1, 5,
// more than S) x causal x the standard configurations (dense, local, dilated multi-pair, GQA),
// forward and backward, equal to the one-rank contiguous run and to the float64 reference, with
// a length no rank count or tile divides; and each rank's bytes equal the plan's.
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

class RingTrainer : public testing::TestWithParam<RingCase> {};

TEST_P(RingTrainer, LayoutsDocumentsWindowsEqualOneRankAndReference) {
  const RingCase& rc = GetParam();
  DRING_REQUIRE_BACKEND(rc.backend);
  const int k = world_size();
  const int64_t seq = rc.seq;
  if (seq < 2 * k) GTEST_SKIP() << "zigzag needs 2 rows per rank";  // same decision on every rank
  RankRuntime dist_rt(rc.backend, MPI_COMM_WORLD, rc.dtype), single_rt(rc.backend, MPI_COMM_SELF, rc.dtype);
  const Tolerance tol = tolerance(rc.backend, rc.dtype);
  const int64_t d = 8;
  // Documents: none; a length-1 document, one longer than any shard, short ones; the last fills S.
  const std::vector<std::vector<int64_t>> documents = {{}, {1, seq / 2 + 1, 3, 1, seq - seq / 2 - 6}};
  // The one-rank run does not depend on the layout: one per problem, against every layout's.
  const std::vector<std::string> layouts = {"contiguous", "zigzag", "striped", "striped:3", "striped:4"};
  for (const auto& docs : documents) {
    for (int64_t window : {int64_t{0}, int64_t{1}, int64_t{5}, seq + 3}) {
      for (const auto& c : test::standard_configs()) {
        Problem p = test::make_problem(1, seq, c.heads, c.kv_heads, d, c.pairs, c.causal);
        p.config.doc_lens = docs;
        p.config.window = window;
        ExecutorOptions options = small_tile_options(rc.dtype, message_cap_bytes(4, d, rc.dtype));
        const PassResult single = run_pass(single_rt, p, 11, options, true);
        for (const std::string& layout : layouts) {
          const LayoutSpec spec = LayoutSpec::parse(layout);
          if (spec.kind == LayoutKind::kStriped && seq <= (k - 1) * spec.stripe) continue;
          SCOPED_TRACE(testing::Message() << c.name << " layout " << layout << " docs " << docs.size() << " window "
                                          << window << " seq " << seq << " ranks " << k << " "
                                          << case_name(rc, false));
          options.layout = spec;
          const PassResult dist = run_pass(dist_rt, p, 11, options, true);
          const Errors f = forward_errors(p, 11, dist, single, tol.lse_relative);
          EXPECT_LT(f.vs_reference, tol.forward);
          EXPECT_LT(f.vs_one_rank, tol.forward);
          const Errors g = backward_errors(p, 11, dist, single);
          EXPECT_LT(g.vs_reference, tol.backward);
          EXPECT_LT(g.vs_one_rank, tol.backward);

          const ExchangePlan plan(p, ShardLayout(seq, k, options.layout),
                                  default_message_rows(p, k, options.exchange_chunk_bytes, rc.dtype));
          const int64_t row_bytes = 2 * d * dtype_bytes(rc.dtype);
          EXPECT_EQ(dist.forward.sent_bytes, plan.rows_sent(dist.rank) * row_bytes);
          EXPECT_EQ(dist.forward.recv_bytes, plan.rows_received(dist.rank) * row_bytes);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, RingTrainer, testing::ValuesIn(ring_cases(Device::kCpu, {37})), ring_case_name);
INSTANTIATE_TEST_SUITE_P(Dense, RingTrainer, testing::ValuesIn(ring_cases(Device::kDense, {37})), ring_case_name);
#if DRING_HAVE_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, RingTrainer, testing::ValuesIn(ring_cases(Device::kCuda, {37})), ring_case_name);
#endif
#if DRING_HAVE_CUDNN
INSTANTIATE_TEST_SUITE_P(Cudnn, RingTrainer, testing::ValuesIn(ring_cases(Device::kCudnn, {37})), ring_case_name);
#endif

// Per-rank work: with causal attention, zigzag and striped balance what contiguous does not, and
// the ranks' flops add up to the problem's; each rank's compute CPU time is counted.
TEST(CpuRingTrainer, CausalWorkIsBalancedByZigzagAndStriped) {
  const BackendCase cpu{Device::kCpu, Link::kMpi};
  RankRuntime rt(cpu, MPI_COMM_WORLD, DType::kF32);
  const int k = world_size();
  for (const std::string layout : {"contiguous", "zigzag", "striped"}) {
    for (const auto& pairs : {std::vector<DilatedPair>{}, std::vector<DilatedPair>{{64, 1}, {256, 2}, {1024, 4}}}) {
      const Problem p = test::make_problem(1, 1031, 4, 4, 8, pairs, true);
      ExecutorOptions options;
      options.layout = LayoutSpec::parse(layout);
      const PassResult run = run_pass(rt, p, 3, options, false);
      double flops = run.forward.flops, lo = 0.0, hi = 0.0, total = 0.0;
      MPI_Allreduce(&flops, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
      MPI_Allreduce(&flops, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      MPI_Allreduce(&flops, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      EXPECT_NEAR(total, p.forward_flops(), 1e-9 * p.forward_flops()) << layout;
      // One kernel thread: the process's CPU time over the compute is at most its wall time.
      EXPECT_GT(run.forward.compute_cpu_ms, 0.0);
      EXPECT_LE(run.forward.compute_cpu_ms, 1.1 * run.forward.compute_ms + 5.0);
      if (k > 1 && layout != "contiguous") {
        EXPECT_LE(hi / lo, 1.10) << layout << " " << pairs.size() << " pairs";
      }
      if (k > 1 && layout == "contiguous" && pairs.empty()) {
        EXPECT_GT(hi / lo, 2.0);
      }
    }
  }
}

// Pieces that are one progression of local rows run as one kernel block: a zigzag rank's two
// chunks are adjacent in its local rows, so without a window a causal block that spans both is
// one call, and so are both chunks against an earlier rank's keys. At 2 ranks (chunks of 512 rows):
// dense, one local and one received block per head on each rank (unmerged: 4 and 5 per head);
// LongNet (512 x 1 within chunks, 2048 x 4 across all four), 4 per head (unmerged: 6 and 7).
TEST(CpuRingTrainer, ZigzagChunksOfABlockRunAsOneCall) {
  const BackendCase cpu{Device::kCpu, Link::kMpi};
  RankRuntime rt(cpu, MPI_COMM_WORLD, DType::kF32);
  if (world_size() != 2) GTEST_SKIP() << "block counts written for 2 ranks";
  const int64_t heads = 4;
  for (const auto& pairs : {std::vector<DilatedPair>{}, std::vector<DilatedPair>{{512, 1}, {2048, 4}}}) {
    SCOPED_TRACE(testing::Message() << "pairs " << pairs.size());
    const Problem p = test::make_problem(1, 2048, heads, heads, 8, pairs, true);
    ExecutorOptions options;
    options.layout = LayoutSpec::parse("zigzag");
    const PassResult run = run_pass(rt, p, 3, options, true);
    const int64_t per_head = pairs.empty() ? 2 : 4;
    EXPECT_EQ(run.forward.blocks, per_head * heads);
    EXPECT_EQ(run.backward.blocks, per_head * heads);
  }
}

}  // namespace
}  // namespace dring::ring_test
