// dring/comm/staged_transport.hpp — MPI point-to-point for buffers in GPU memory.
//
// For runs where NCCL cannot be used (several ranks share one GPU, which NCCL refuses, or a build
// without NCCL). Two modes:
//   * host staging (default): a send copies the device rows into pinned host memory (in the order
//     of the compute stream, so the packing kernels enqueued before the send are complete), then
//     MPI_Isend; a receive lands in pinned memory and is copied to the device on the compute stream
//     when the request completes (test or wait), so kernels enqueued after the wait see it.
//   * CUDA-aware MPI (when the MPI library says it is, MPIX_Query_cuda_support, and
//     DRING_CUDA_AWARE_MPI is not 0): device pointers go to MPI directly, after the compute stream's
//     work so far has completed.
// Pinned staging buffers are pooled, reused once the copies that read them are done, and recorded
// in the MemoryTracker (host, category exchange) by their allocator. Only in builds with DRING_HAVE_CUDA.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "dring/comm/mpi_transport.hpp"
#include "dring/comm/transport.hpp"
#include "dring/core/cuda.hpp"
#include "dring/core/memory.hpp"

namespace dring::comm {

class StagedMpiTransport final : public MpiCommTransport {
 public:
  enum class Mode { kHostStaging, kCudaAware };

  // Duplicates `comm` (dring's messages never match the caller's). `compute` is the stream of the
  // backend whose buffers travel. Not collective beyond MPI_Comm_dup.
  StagedMpiTransport(MPI_Comm comm, cudaStream_t compute, Mode mode, MemoryTracker& tracker);
  ~StagedMpiTransport() override;
  StagedMpiTransport(const StagedMpiTransport&) = delete;
  StagedMpiTransport& operator=(const StagedMpiTransport&) = delete;

  // Whether the MPI library moves device memory itself, and the environment allows using it.
  static bool cuda_aware_mpi_available();

  const char* name() const override { return mode_ == Mode::kCudaAware ? "mpi-cuda-aware" : "mpi-staged"; }
  Mode mode() const { return mode_; }

  std::unique_ptr<Request> post_send_raw(const void* data, int64_t count, DType type, int peer,
                                         int tag) override;
  std::unique_ptr<Request> post_recv_raw(void* data, int64_t count, DType type, int peer, int tag) override;
  // A pinned staging buffer of the pool (internal, used by the requests).
  struct Staging {
    Buffer<std::byte> host;
    cuda::Event reusable;  // completes when the last copy out of/into `host` is done
    bool busy = false;
    bool pending_copy = false;
  };
  Staging* acquire(int64_t bytes);
  void release(Staging* staging, bool copy_enqueued);
  cudaStream_t compute_stream() const { return compute_; }

 private:
  // Blocks until the compute stream's work enqueued so far has completed.
  void drain_compute();

  cudaStream_t compute_;
  Mode mode_;
  cuda::PinnedAllocator pinned_;  // before pool_: the buffers are freed first
  cuda::Event drained_;
  std::vector<std::unique_ptr<Staging>> pool_;
};

}  // namespace dring::comm
