// test_cuda_transport.cpp — what only the CUDA runtime has (builds with DRING_HAVE_CUDA; skipped,
// collectively, without a GPU): device memory reported by category, and the NCCL transport with
// one rank (a self exchange, a whole pass identical to the MPI transport's, and the watchdog on an
// unmatched receive). The ring cases themselves run on CUDA in test_ring_forward.cpp and
// test_ring_backward.cpp.
#include "dring/config.h"

#if DRING_HAVE_CUDA

#include <gtest/gtest.h>
#include <mpi.h>

#include "dring/core/error.hpp"
#include "dring/runtime/cuda_backend.hpp"
#include "gpu_test_util.hpp"
#include "ring_harness.hpp"
#include "test_util.hpp"
#if DRING_HAVE_NCCL
#include "dring/comm/nccl_transport.hpp"
#endif

namespace dring::ring_test {
namespace {

TEST(CudaRuntime, ReportsDeviceMemoryAndTransport) {
  DRING_REQUIRE_GPU();
  MemoryTracker tracker;
  Runtime runtime = make_cuda_runtime(MPI_COMM_WORLD, DType::kBF16, tracker, nullptr);
  EXPECT_EQ(runtime.backend->name(), "cuda");
  EXPECT_EQ(runtime.backend->space(), MemSpace::kDevice);
  EXPECT_NE(runtime.note.find("cuda device"), std::string::npos) << runtime.note;
  {
    TensorBuffer t(runtime.backend->allocator(), 1000, DType::kBF16, MemCategory::kInputs);
    EXPECT_EQ(tracker.stats().device().current_by_category[static_cast<int>(MemCategory::kInputs)], 2000);
  }
  EXPECT_EQ(tracker.stats().device().current_by_category[static_cast<int>(MemCategory::kInputs)], 0);
}

#if DRING_HAVE_NCCL

// NCCL tests use one rank (a communicator of MPI_COMM_SELF); they run in the one-rank job only.
bool one_rank_job() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size == 1;
}

TEST(CudaNcclTransport, SelfExchangeMovesTheBytes) {
  DRING_REQUIRE_GPU();
  if (!one_rank_job()) GTEST_SKIP() << "one-rank job only";  // the same on every rank
  MemoryTracker tracker;
  Runtime runtime = make_cuda_runtime(MPI_COMM_SELF, DType::kBF16, tracker, nullptr, CudaTransportChoice::kNccl);
  ASSERT_STREQ(runtime.transport->name(), "nccl");
  Backend& backend = *runtime.backend;
  const int64_t n = 4099;
  const gpu_test::DeviceTensor src = gpu_test::random_tensor(backend, n, DType::kBF16, 3);
  TensorBuffer dst(backend.allocator(), n, DType::kBF16, MemCategory::kExchange);
  backend.fill(dst.data(), n, DType::kBF16, 0.0f);
  runtime.transport->begin_step();  // a send to itself must be in the receive's group
  auto recv = runtime.transport->post_recv_raw(dst.data(), n, DType::kBF16, 0, 1);
  auto send = runtime.transport->post_send_raw(src.device.data(), n, DType::kBF16, 0, 1);
  runtime.transport->end_step();
  recv->wait();
  send->wait();
  EXPECT_EQ(gpu_test::download(backend, dst.data(), DType::kBF16, n), src.host);
  EXPECT_EQ(runtime.transport->counters().sent_bytes, 2 * n);
  EXPECT_EQ(runtime.transport->counters().recv_bytes, 2 * n);
}

TEST(CudaNcclTransport, OneRankPassEqualsMpiTransportPass) {
  DRING_REQUIRE_GPU();
  if (!one_rank_job()) GTEST_SKIP() << "one-rank job only";
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Problem p = test::make_problem(1, 130, 4, 2, 64, {{16, 1}, {64, 2}, {1000, 4}}, true);
    RankRuntime nccl_rt({Device::kCuda, Link::kNccl}, MPI_COMM_SELF, dtype);
    RankRuntime mpi_rt({Device::kCuda, Link::kMpi}, MPI_COMM_SELF, dtype);
    ExecutorOptions options;
    options.dtype = dtype;
    const PassResult nccl = run_pass(nccl_rt, p, 9, options, true);
    EXPECT_EQ(nccl.transport, "nccl");
    const PassResult mpi = run_pass(mpi_rt, p, 9, options, true);
    const Errors e = forward_errors(p, 9, nccl, mpi, tolerance({Device::kCuda, Link::kNccl}, dtype).lse_relative);
    EXPECT_LT(e.vs_reference, tolerance({Device::kCuda, Link::kNccl}, dtype).forward);
    EXPECT_EQ(e.vs_one_rank, 0.0);  // same kernels, same order: identical
    EXPECT_EQ(nccl.dq, mpi.dq);
  }
}

// An unmatched receive: an error naming the rank, no hang. With one rank the only peer is the
// rank itself, and NCCL rejects a receive from self without a send in its group when the group
// is issued (ncclInvalidUsage from ncclGroupEnd, inside post_recv); a receive that NCCL accepted
// but never matched would instead be aborted by the watchdog (timeout). Either is accepted here.
// CTest runs this suite alone (gpu_nccl_watchdog), so that a hang fails only that entry.
TEST(CudaNcclWatchdog, UnmatchedReceiveTimesOut) {
  DRING_REQUIRE_GPU();
  if (!one_rank_job()) GTEST_SKIP() << "one-rank job only";
  MemoryTracker tracker;
  Runtime runtime = make_cuda_runtime(MPI_COMM_SELF, DType::kF32, tracker, nullptr, CudaTransportChoice::kNccl);
  auto* nccl = dynamic_cast<comm::NcclTransport*>(runtime.transport.get());
  ASSERT_NE(nccl, nullptr);
  nccl->set_timeout(2.0);
  Buffer<float> buffer(runtime.backend->allocator(), 1024, MemCategory::kExchange);
  try {
    auto recv = nccl->post_recv(std::span<float>(buffer.data(), 1024), 0, 7);
    recv->wait();
    runtime.backend->synchronize();
    ADD_FAILURE() << "an unmatched receive completed";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kCommError) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos) << e.what();
  }
}

#endif  // DRING_HAVE_NCCL

}  // namespace
}  // namespace dring::ring_test

#endif  // DRING_HAVE_CUDA
