// test_ring_faults.cpp — a rank that cannot allocate its exchange buffers (injected on the last
// rank) makes every rank's pass fail at once, forward and backward, the failing rank with its own
// error and its peers naming it, instead of the peers waiting for messages that never come.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "dring/core/error.hpp"
#include "dring/runtime/shard.hpp"
#include "ring_harness.hpp"
#include "test_util.hpp"

namespace dring::ring_test {
namespace {

// Forwards to a real allocator, except that exchange buffers fail when `fail` is set.
class FailingExchangeAllocator final : public Allocator {
 public:
  explicit FailingExchangeAllocator(Allocator& inner) : inner_(inner) {}
  MemSpace space() const override { return inner_.space(); }
  void* allocate(int64_t bytes, MemCategory category) override {
    if (fail && category == MemCategory::kExchange) DRING_FAIL(Status::kOutOfMemory, "injected: no exchange memory");
    return inner_.allocate(bytes, category);
  }
  void deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept override {
    inner_.deallocate(ptr, bytes, category);
  }
  bool fail = false;

 private:
  Allocator& inner_;
};

// A backend that is `inner` in everything but its allocator.
class WithAllocator final : public Backend {
 public:
  WithAllocator(Backend& inner, Allocator& allocator) : inner_(inner), allocator_(allocator) {}
  std::string name() const override { return inner_.name(); }
  Allocator& allocator() override { return allocator_; }
  bool supports(DType dtype) const override { return inner_.supports(dtype); }
  void upload(const float* host, void* dst, int64_t count, DType dtype) override { inner_.upload(host, dst, count, dtype); }
  void download(const void* src, DType dtype, float* host, int64_t count) override {
    inner_.download(src, dtype, host, count);
  }
  void fill(void* dst, int64_t count, DType dtype, float value) override { inner_.fill(dst, count, dtype, value); }
  void cast(const float* src, void* dst, int64_t count, DType dtype) override { inner_.cast(src, dst, count, dtype); }
  void copy_rows(std::span<const RowRun> runs, int64_t head_dim, DType dtype) override {
    inner_.copy_rows(runs, head_dim, dtype);
  }
  void add_rows(std::span<const RowRun> runs, int64_t head_dim) override { inner_.add_rows(runs, head_dim); }
  void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) override {
    inner_.attend(blocks, params);
  }
  void delta(const kernels::DeltaParams& params) override { inner_.delta(params); }
  void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) override {
    inner_.attend_backward(blocks, params);
  }
  void synchronize() override { inner_.synchronize(); }

 private:
  Backend& inner_;
  Allocator& allocator_;
};

TEST(CpuRingFaults, ExchangeAllocationFailureOnOneRankFailsEveryRankAtOnce) {
  const BackendCase cpu{Device::kCpu, Link::kMpi};
  RankRuntime rt(cpu, MPI_COMM_WORLD, DType::kF32);
  const int k = rt.world_size(), rank = rt.world_rank();
  if (k < 2) GTEST_SKIP() << "needs a peer";
  const Problem p = test::make_problem(1, 64, 2, 2, 8, {}, false);
  FailingExchangeAllocator allocator(rt.runtime.backend->allocator());
  WithAllocator backend(*rt.runtime.backend, allocator);
  const ShardLayout layout(64, k);
  ShardBuffers shard = allocate_shard(p.shape, layout.begin(rank), layout.size(rank), allocator, DType::kF32, true);
  fill_synthetic_shard(1, p.shape, shard, backend, rt.tracker, 1);
  RingExecutor executor(p, *rt.runtime.transport, backend, ExecutorOptions{});
  allocator.fail = rank == k - 1;
  for (bool backward : {false, true}) {
    const auto t0 = MPI_Wtime();
    try {
      if (backward) {
        executor.backward(shard.grad_inputs(), shard.grad_outputs());
      } else {
        executor.forward(shard.inputs(), shard.outputs());
      }
      ADD_FAILURE() << "the pass succeeded on rank " << rank;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::kOutOfMemory) << e.what();
      const std::string want = rank == k - 1 ? "injected" : "world rank " + std::to_string(k - 1) + " could not";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    EXPECT_LT(MPI_Wtime() - t0, 10.0) << "a rank waited for the failed one";
  }
  // Once the memory is there again, the same executor runs a pass on every rank.
  allocator.fail = false;
  EXPECT_NO_THROW(executor.forward(shard.inputs(), shard.outputs()));
}

}  // namespace
}  // namespace dring::ring_test
