// test_ring_backward.cpp — the distributed backward pass (mpirun with 1, 2, 3 and 4 ranks): every
// rank's dq, dk, dv equal the one-rank run on the same data and the float64 reference gradient,
// for dense, dilated, causal and GQA configurations with lengths that divide nothing; and the
// backward peak memory per rank falls with the ranks.
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

struct GradRun {
  ShardBuffers shard;
  int64_t backward_peak_bytes = 0;
  PassStats stats;
};

GradRun run_backward(const Problem& problem, MPI_Comm comm, uint64_t seed, const ExecutorOptions& options,
                     MemoryTracker& tracker) {
  comm::MpiTransport transport(comm);
  const ShardLayout layout(problem.shape.seq, transport.world_size());
  const int rank = transport.world_rank();
  std::unique_ptr<Backend> backend = make_cpu_backend(tracker, options.threads);
  GradRun run;
  run.shard = allocate_shard(problem.shape, layout.begin(rank), layout.size(rank), backend->allocator(), DType::kF32, true);
  fill_synthetic_shard(seed, problem.shape, run.shard, *backend, tracker, options.threads);
  RingExecutor executor(problem, transport, *backend, options);
  executor.forward(run.shard.inputs(), run.shard.outputs());
  tracker.reset_peaks();
  run.stats = executor.backward(run.shard.grad_inputs(), run.shard.grad_outputs());
  run.backward_peak_bytes = tracker.stats().host().peak_bytes;
  return run;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

class RingBackward : public testing::TestWithParam<int64_t> {};

TEST_P(RingBackward, EqualsOneRankAndReference) {
  const int64_t seq = GetParam();
  if (seq < world_size()) GTEST_SKIP() << "fewer tokens than ranks";  // same decision on every rank
  for (const auto& c : test::standard_configs()) {
    for (int64_t chunk_bytes : {int64_t{0}, int64_t{5 * 2 * 8 * 4}}) {  // automatic, and 5-row messages
      SCOPED_TRACE(testing::Message() << c.name << " seq " << seq << " chunk " << chunk_bytes);
      const Problem p = test::make_problem(2, seq, c.heads, c.kv_heads, 8, c.pairs, c.causal);
      const AttentionShape& s = p.shape;
      ExecutorOptions options;
      options.exchange_chunk_bytes = chunk_bytes;
      options.q_tile = 16;
      options.k_tile = 24;
      options.small_block_scores = 64;
      MemoryTracker dist_tracker, single_tracker;
      const GradRun dist = run_backward(p, MPI_COMM_WORLD, 5, options, dist_tracker);
      const GradRun single = run_backward(p, MPI_COMM_SELF, 5, options, single_tracker);

      const SyntheticSource source(5, s);
      std::vector<double> dq, dk, dv;
      reference::attention_backward(p, source, dq, dk, dv);
      double largest = 0.0;
      for (const auto* g : {&dq, &dk, &dv}) {
        for (double x : *g) largest = std::max(largest, std::abs(x));
      }
      double vs_reference = 0.0, vs_one_rank = 0.0;
      auto compare = [&](const TensorBuffer& got, const TensorBuffer& one, const std::vector<double>& want, int64_t heads) {
        const int64_t row = heads * s.head_dim, rows = dist.shard.rows;
        for (int64_t b = 0; b < s.batch; ++b) {
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t e = 0; e < row; ++e) {
              const float x = got[(b * rows + i) * row + e];
              const int64_t global = (b * s.seq + dist.shard.begin + i) * row + e;
              vs_reference = std::max(vs_reference, std::abs(x - want[global]) / largest);
              vs_one_rank = std::max(vs_one_rank, std::abs(static_cast<double>(x) - one[global]) / largest);
            }
          }
        }
      };
      compare(dist.shard.dq, single.shard.dq, dq, s.heads);
      compare(dist.shard.dk, single.shard.dk, dk, s.kv_heads);
      compare(dist.shard.dv, single.shard.dv, dv, s.kv_heads);
      EXPECT_LT(vs_reference, 2e-6);
      EXPECT_LT(vs_one_rank, 2e-6);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, RingBackward, testing::Values(4, 37, 130));

TEST(RingBackward, PerRankMemoryFallsWithRanks) {
  const int k = world_size();
  const Problem p = test::make_problem(1, 8192, 4, 4, 32, {{1024, 1}, {4096, 2}, {8192, 4}}, false);
  ExecutorOptions options;
  MemoryTracker dist_tracker, single_tracker;
  const GradRun dist = run_backward(p, MPI_COMM_WORLD, 3, options, dist_tracker);
  const GradRun single = run_backward(p, MPI_COMM_SELF, 3, options, single_tracker);
  int64_t worst = 0;
  MPI_Allreduce(&dist.backward_peak_bytes, &worst, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  const double ratio = static_cast<double>(worst) / static_cast<double>(single.backward_peak_bytes);
  RecordProperty("backward_peak_ratio", std::to_string(ratio));
  if (k == 4) {
    EXPECT_LE(ratio, 0.3);
  }
  EXPECT_LE(ratio, 1.0 / k + 0.1) << "worst rank peak " << worst << " bytes, one rank " << single.backward_peak_bytes;
}

}  // namespace
}  // namespace dring
