// cuda.cpp — the CUDA error path, the owners of streams and events, and pinned host memory.
#include "dring/core/cuda.hpp"

#include <thread>

namespace dring::cuda {

void fail(cudaError_t code, const char* call, const char* file, int line) {
  (void)file;
  (void)line;
  int device = -1;
  cudaGetDevice(&device);
  cudaGetLastError();  // clear a sticky launch error so later calls report their own
  const Status status = code == cudaErrorMemoryAllocation ? Status::kOutOfMemory : Status::kDeviceError;
  DRING_FAIL(status, "CUDA call " << call << " failed on " << error_rank_text() << " (device "
                                  << device << "): " << cudaGetErrorName(code) << ": " << cudaGetErrorString(code));
}

Stream Stream::create() {
  cudaStream_t stream = nullptr;
  DRING_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(stream, true);
}

Stream Stream::create_high_priority() {
  int least = 0, greatest = 0;  // numerically, greatest <= least: lower numbers run first
  DRING_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t stream = nullptr;
  DRING_CUDA_CHECK(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, greatest));
  return Stream(stream, true);
}

Stream::~Stream() {
  if (owned_ && stream_ != nullptr) cudaStreamDestroy(stream_);
}

Event Event::create(bool timing) {
  Event e;
  DRING_CUDA_CHECK(cudaEventCreateWithFlags(&e.event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

bool Event::done() const {
  const cudaError_t rc = cudaEventQuery(event_);
  if (rc == cudaErrorNotReady) return false;
  DRING_CUDA_CHECK(rc);
  return true;
}

void* PinnedAllocator::allocate(int64_t bytes, MemCategory category) {
  void* ptr = nullptr;
  if (bytes > 0) {
    const cudaError_t rc = cudaMallocHost(&ptr, static_cast<size_t>(bytes));
    if (rc != cudaSuccess) {
      cudaGetLastError();
      DRING_FAIL(Status::kOutOfMemory, "pinned host memory: cannot allocate " << bytes << " bytes of "
                                           << mem_category_name(category) << " on " << error_rank_text() << ": "
                                           << cudaGetErrorString(rc));
    }
  }
  tracker_.record_alloc(MemSpace::kHost, category, bytes);
  return ptr;
}

void PinnedAllocator::deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept {
  if (ptr != nullptr) cudaFreeHost(ptr);
  tracker_.record_free(MemSpace::kHost, category, bytes);
}

void wait_polling(cudaEvent_t event, const std::function<void()>& watchdog) {
  using Clock = std::chrono::steady_clock;
  auto last_check = Clock::now();
  for (int spins = 0;; ++spins) {
    const cudaError_t rc = cudaEventQuery(event);
    if (rc == cudaSuccess) return;
    if (rc != cudaErrorNotReady) DRING_CUDA_CHECK(rc);
    // Spin briefly (short kernels), then sleep so a long wait does not burn a core.
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(spins > 1024 ? 200 : 20));
    if (watchdog && Clock::now() - last_check > std::chrono::milliseconds(100)) {
      last_check = Clock::now();
      watchdog();
    }
  }
}

}  // namespace dring::cuda
