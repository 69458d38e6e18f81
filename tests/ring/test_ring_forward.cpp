// test_ring_forward.cpp — the distributed forward pass on every backend case (ring_harness.hpp), run
// under mpirun with 1 to 4 ranks: every rank's shard of out and lse equals the one-rank run on the
// same data and the float64 reference, for dense, local, dilated multi-pair, causal and GQA
// configurations, lengths 1, 4, 37 and 130 (1, a prime, and lengths no tile or rank count divides),
// automatic and 3-row messages; the bytes each rank moves equal the plan's minimum; the transport
// is the one the case asked for; and per-rank memory falls with the ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include "dring/runtime/shard.hpp"
#include "ring_harness.hpp"
#include "test_util.hpp"

namespace dring::ring_test {
namespace {

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// Head dims: 8 everywhere; on CUDA also 64, which takes the tensor-core kernel (or cuDNN) for fp16 / bf16.
std::vector<int64_t> forward_head_dims(Device device) {
  if (device == Device::kCpu || device == Device::kDense) return {8};
  return {8, 64};
}

class RingForward : public testing::TestWithParam<RingCase> {};

TEST_P(RingForward, EqualsOneRankAndReferenceWithMinimalTraffic) {
  const RingCase& rc = GetParam();
  DRING_REQUIRE_BACKEND(rc.backend);
  const int k = world_size();
  if (rc.seq < k) GTEST_SKIP() << "fewer tokens than ranks";  // same decision on every rank
  RankRuntime dist_rt(rc.backend, MPI_COMM_WORLD, rc.dtype), single_rt(rc.backend, MPI_COMM_SELF, rc.dtype);
  const std::string want_transport = rc.backend.link == Link::kNccl ? "nccl" : "mpi";
  EXPECT_EQ(std::string(dist_rt.runtime.transport->name()).rfind(want_transport, 0), 0u)
      << dist_rt.runtime.transport->name() << "; " << dist_rt.runtime.note;
  if (rc.backend.device == Device::kCuda && rc.backend.link == Link::kMpi) {
    EXPECT_NE(dist_rt.runtime.note.find("MPI transport"), std::string::npos) << dist_rt.runtime.note;
  }
  const Tolerance tol = tolerance(rc.backend, rc.dtype);
  for (const auto& c : test::standard_configs()) {
    for (int64_t d : forward_head_dims(rc.backend.device)) {
      for (int64_t chunk_bytes : {int64_t{0}, message_cap_bytes(3, d, rc.dtype)}) {  // automatic, 3 rows
        SCOPED_TRACE(testing::Message() << c.name << " seq " << rc.seq << " d " << d << " ranks " << k << " chunk "
                                        << chunk_bytes << " " << case_name(rc, false));
        const Problem p = test::make_problem(2, rc.seq, c.heads, c.kv_heads, d, c.pairs, c.causal);
        const ExecutorOptions options = small_tile_options(rc.dtype, chunk_bytes);
        const PassResult dist = run_pass(dist_rt, p, 42, options, false);
        const PassResult single = run_pass(single_rt, p, 42, options, false);
        const Errors e = forward_errors(p, 42, dist, single, tol.lse_relative);
        EXPECT_LT(e.vs_reference, tol.forward);
        EXPECT_LT(e.vs_one_rank, tol.forward);

        const ExchangePlan plan(p, k, default_message_rows(p, k, chunk_bytes, rc.dtype));
        const int64_t row_bytes = 2 * d * dtype_bytes(rc.dtype);
        EXPECT_EQ(dist.forward.sent_bytes, plan.rows_sent(dist.rank) * row_bytes);
        EXPECT_EQ(dist.forward.recv_bytes, plan.rows_received(dist.rank) * row_bytes);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, RingForward, testing::ValuesIn(ring_cases(Device::kCpu, {1, 4, 37, 130})),
                         ring_case_name);
INSTANTIATE_TEST_SUITE_P(Dense, RingForward, testing::ValuesIn(ring_cases(Device::kDense, {1, 4, 37, 130})),
                         ring_case_name);
#if DRING_HAVE_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, RingForward, testing::ValuesIn(ring_cases(Device::kCuda, {1, 4, 37, 130})),
                         ring_case_name);
#endif
#if DRING_HAVE_CUDNN
INSTANTIATE_TEST_SUITE_P(Cudnn, RingForward, testing::ValuesIn(ring_cases(Device::kCudnn, {37, 130})),
                         ring_case_name);
#endif

// Kernel threads of the CPU backend split work, never change the arithmetic.
TEST(CpuRingForward, ThreadsDoNotChangeTheResult) {
  const BackendCase cpu{Device::kCpu, Link::kMpi};
  const Problem p = test::make_problem(1, 301, 4, 2, 16, {{64, 1}, {128, 2}, {512, 4}}, true);
  ExecutorOptions one, two;
  one.threads = 1;
  two.threads = 2;
  RankRuntime rt1(cpu, MPI_COMM_WORLD, DType::kF32, 1), rt2(cpu, MPI_COMM_WORLD, DType::kF32, 2);
  const PassResult a = run_pass(rt1, p, 7, one, false);
  const PassResult b = run_pass(rt2, p, 7, two, false);
  ASSERT_EQ(a.out.size(), b.out.size());
  for (size_t n = 0; n < a.out.size(); ++n) ASSERT_EQ(a.out[n], b.out[n]);
}

// Per-rank tracked memory (the backend's space) against the one-rank run, for a LongNet-style
// configuration whose longest segment spans every rank. CPU only: the CUDA backend keeps a fixed
// 12 MiB descriptor ring per rank, more than this problem's whole shard at 4 ranks.
class RingMemory : public testing::TestWithParam<RingCase> {};

TEST_P(RingMemory, ForwardPeakPerRankFallsWithRanks) {
  const RingCase& rc = GetParam();
  DRING_REQUIRE_BACKEND(rc.backend);
  expect_peak_falls_with_ranks(rc, false);
}

INSTANTIATE_TEST_SUITE_P(Cpu, RingMemory, testing::ValuesIn(ring_cases(Device::kCpu, {16384})), ring_case_name);

}  // namespace
}  // namespace dring::ring_test
