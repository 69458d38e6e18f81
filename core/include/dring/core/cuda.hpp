// dring/core/cuda.hpp — CUDA errors as dring::Error, move-only owners of CUDA streams and events
// (destructors never throw), and the tracked pinned-host allocator. The CUDA part of the ground
// floor (target dring_core_cuda): it needs the CUDA runtime, never MPI. Only in builds with
// DRING_HAVE_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

#include "dring/core/error.hpp"
#include "dring/core/memory.hpp"

namespace dring::cuda {

// Throws Error(kDeviceError, or kOutOfMemory for an allocation) naming the call, the CUDA error,
// the device and the world rank (dring/core/error.hpp, error_rank_text).
[[noreturn]] void fail(cudaError_t code, const char* call, const char* file, int line);

}  // namespace dring::cuda

#define DRING_CUDA_CHECK(call)                                                                \
  do {                                                                                        \
    const cudaError_t dring_cuda_rc_ = (call);                                                \
    if (dring_cuda_rc_ != cudaSuccess) ::dring::cuda::fail(dring_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad configuration shows up here, not at the next synchronisation.
#define DRING_CUDA_CHECK_LAUNCH(kernel_name) DRING_CUDA_CHECK(((void)(kernel_name), cudaGetLastError()))

namespace dring::cuda {

// A stream: created (non-blocking) and destroyed by this object, or borrowed from the caller.
class Stream {
 public:
  Stream() = default;
  static Stream create();
  // The current device's highest stream priority: for communication, whose kernels (NCCL's) wait
  // on peers and should take a multiprocessor as soon as one frees up rather than queue behind
  // the attention kernels of the compute stream.
  static Stream create_high_priority();
  static Stream borrow(cudaStream_t stream) { return Stream(stream, false); }
  Stream(Stream&& other) noexcept { swap(other); }
  Stream& operator=(Stream&& other) noexcept {
    Stream moved(std::move(other));
    swap(moved);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  cudaStream_t get() const { return stream_; }

 private:
  Stream(cudaStream_t stream, bool owned) : stream_(stream), owned_(owned) {}
  void swap(Stream& other) noexcept {
    std::swap(stream_, other.stream_);
    std::swap(owned_, other.owned_);
  }
  cudaStream_t stream_ = nullptr;
  bool owned_ = false;
};

// An event without timing (for ordering), or with timing (for measuring).
class Event {
 public:
  Event() = default;
  static Event create(bool timing = false);
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    Event moved(std::move(other));
    std::swap(event_, moved.event_);
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();
  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream) { DRING_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  bool done() const;  // cudaEventQuery, errors thrown

 private:
  cudaEvent_t event_ = nullptr;
};

// Page-locked host memory (cudaMallocHost) for transfers that overlap compute, recorded in the
// tracker as host memory of the buffer's category. Use it through Buffer<T>.
class PinnedAllocator final : public Allocator {
 public:
  explicit PinnedAllocator(MemoryTracker& tracker) : tracker_(tracker) {}
  MemSpace space() const override { return MemSpace::kHost; }
  void* allocate(int64_t bytes, MemCategory category) override;
  void deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept override;

 private:
  MemoryTracker& tracker_;
};

// Blocks the calling thread until `event` has completed, polling, and calls `watchdog` (when set)
// about every 100 ms while it waits: a communicator that stopped making progress throws from there
// instead of leaving the rank blocked for ever.
void wait_polling(cudaEvent_t event, const std::function<void()>& watchdog);

}  // namespace dring::cuda
