// test_ring.cpp — the distributed forward pass (run under mpirun with 1, 2, 3 and 4 ranks):
// every rank's shard of out and lse equals the one-rank run on the same data and the float64
// reference; the bytes each rank moves equal the plan's minimum; memory per rank falls.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

#include "dring/comm/mpi_transport.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/kernels/reference.hpp"
#include "dring/runtime/shard.hpp"
#include "dring/runtime/synthetic.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

struct ForwardRun {
  ShardBuffers shard;
  PassStats stats;
  int64_t peak_bytes = 0;
};

// One forward pass of `problem` on `comm`, synthetic inputs from `seed`.
ForwardRun run_forward(const Problem& problem, MPI_Comm comm, uint64_t seed, ExecutorOptions options, MemoryTracker& tracker) {
  comm::MpiTransport transport(comm);
  const ShardLayout layout(problem.shape.seq, transport.world_size());
  const int rank = transport.world_rank();
  ForwardRun run;
  std::unique_ptr<Backend> backend = make_cpu_backend(tracker, options.threads);
  run.shard = allocate_shard(problem.shape, layout.begin(rank), layout.size(rank), backend->allocator());
  fill_synthetic_shard(seed, problem.shape, run.shard, *backend, tracker, options.threads);
  RingExecutor executor(problem, transport, *backend, options);
  run.stats = executor.forward(run.shard.inputs(), run.shard.outputs());
  run.peak_bytes = tracker.stats().host().peak_bytes;
  return run;
}

struct Errors {
  double vs_one_rank = 0.0;  // max |out - out_1| / max|v| and |lse - lse_1|
  double vs_reference = 0.0;
};

Errors compare(const Problem& p, uint64_t seed, const ForwardRun& dist, const ForwardRun& single) {
  const AttentionShape& s = p.shape;
  const SyntheticSource source(seed, s);
  Errors e;
  const int64_t rows = dist.shard.rows;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = dist.shard.begin + i;
      for (int64_t h = 0; h < s.heads; ++h) {
        const reference::RowResult ref = reference::attention_row(p, source, b, pos, h);
        const float lse = dist.shard.lse[(b * s.heads + h) * rows + i];
        const float lse1 = single.shard.lse[(b * s.heads + h) * s.seq + pos];
        if (std::isinf(ref.lse)) {
          EXPECT_TRUE(std::isinf(lse) && lse < 0) << "row " << pos << " head " << h;
          EXPECT_TRUE(std::isinf(lse1) && lse1 < 0);
        } else {
          e.vs_reference = std::max(e.vs_reference, std::abs(lse - ref.lse));
          e.vs_one_rank = std::max(e.vs_one_rank, static_cast<double>(std::abs(lse - lse1)));
        }
        const double scale = std::max(ref.value_scale, 1e-30);
        for (int64_t c = 0; c < s.head_dim; ++c) {
          const float out = dist.shard.out[((b * rows + i) * s.heads + h) * s.head_dim + c];
          const float out1 = single.shard.out[((b * s.seq + pos) * s.heads + h) * s.head_dim + c];
          e.vs_reference = std::max(e.vs_reference, std::abs(out - ref.out[c]) / scale);
          e.vs_one_rank = std::max(e.vs_one_rank, std::abs(static_cast<double>(out) - out1) / scale);
        }
      }
    }
  }
  return e;
}

class RingForward : public testing::TestWithParam<int64_t> {};

TEST_P(RingForward, EqualsOneRankAndReferenceWithMinimalTraffic) {
  const int64_t seq = GetParam();
  const int k = world_size();
  if (seq < k) GTEST_SKIP() << "fewer tokens than ranks";  // same decision on every rank
  for (const auto& c : test::standard_configs()) {
    for (int64_t chunk_bytes : {int64_t{0}, int64_t{3 * 2 * 8 * 4}}) {  // automatic, and 3-row messages
      SCOPED_TRACE(testing::Message() << c.name << " seq " << seq << " ranks " << k << " chunk " << chunk_bytes);
      const Problem p = test::make_problem(2, seq, c.heads, c.kv_heads, 8, c.pairs, c.causal);
      ExecutorOptions options;
      options.threads = 1;
      options.exchange_chunk_bytes = chunk_bytes;
      options.q_tile = 16;
      options.k_tile = 24;
      options.small_block_scores = 64;  // both kernel paths run
      MemoryTracker dist_tracker, single_tracker;
      const ForwardRun dist = run_forward(p, MPI_COMM_WORLD, 42, options, dist_tracker);
      const ForwardRun single = run_forward(p, MPI_COMM_SELF, 42, options, single_tracker);
      const Errors e = compare(p, 42, dist, single);
      EXPECT_LT(e.vs_reference, 1e-5);
      EXPECT_LT(e.vs_one_rank, 1e-5);

      const ExchangePlan plan(p, k, default_message_rows(p, k, chunk_bytes));
      const int rank = dist.shard.begin == 0 ? 0 : ShardLayout(seq, k).owner(dist.shard.begin);
      const int64_t row_bytes = 2 * p.shape.head_dim * 4;
      EXPECT_EQ(dist.stats.sent_bytes, plan.rows_sent(rank) * row_bytes);
      EXPECT_EQ(dist.stats.recv_bytes, plan.rows_received(rank) * row_bytes);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, RingForward, testing::Values(1, 4, 37, 130));

TEST(RingForward, ThreadsDoNotChangeTheResult) {
  const Problem p = test::make_problem(1, 301, 4, 2, 16, {{64, 1}, {128, 2}, {512, 4}}, true);
  ExecutorOptions one, two;
  one.threads = 1;
  two.threads = 2;
  MemoryTracker t1, t2;
  const ForwardRun a = run_forward(p, MPI_COMM_WORLD, 7, one, t1);
  const ForwardRun b = run_forward(p, MPI_COMM_WORLD, 7, two, t2);
  for (int64_t n = 0; n < a.shard.out.size(); ++n) ASSERT_EQ(a.shard.out[n], b.shard.out[n]);
}

// Per-rank tracked memory against the one-rank run, for a LongNet-style configuration whose
// longest segment spans every rank.
TEST(RingForward, PerRankMemoryFallsWithRanks) {
  const int k = world_size();
  const Problem p = test::make_problem(1, 16384, 4, 4, 32, {{1024, 1}, {4096, 2}, {16384, 4}}, false);
  ExecutorOptions options;
  MemoryTracker dist_tracker, single_tracker;
  const ForwardRun dist = run_forward(p, MPI_COMM_WORLD, 3, options, dist_tracker);
  const ForwardRun single = run_forward(p, MPI_COMM_SELF, 3, options, single_tracker);
  int64_t worst = 0;
  MPI_Allreduce(&dist.peak_bytes, &worst, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  const double ratio = static_cast<double>(worst) / static_cast<double>(single.peak_bytes);
  RecordProperty("peak_ratio", std::to_string(ratio));
  if (k == 4) {
    EXPECT_LE(ratio, 0.3);
  }
  EXPECT_LE(ratio, 1.0 / k + 0.1) << "worst rank peak " << worst << " bytes, one rank " << single.peak_bytes;
}

}  // namespace
}  // namespace dring
