// cuda_util.cpp — the CUDA error path and the owners of streams, events and pinned memory.
#include "dring/cuda_util.hpp"

#include <mpi.h>

#include <thread>

namespace dring::cuda {

int world_rank_or_unknown() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

void fail(cudaError_t code, const char* call, const char* file, int line) {
  (void)file;
  (void)line;
  int device = -1;
  cudaGetDevice(&device);
  cudaGetLastError();  // clear a sticky launch error so later calls report their own
  const Status status = code == cudaErrorMemoryAllocation ? Status::kOutOfMemory : Status::kDeviceError;
  DRING_FAIL(status, "CUDA call " << call << " failed on world rank " << world_rank_or_unknown() << " (device "
                                  << device << "): " << cudaGetErrorName(code) << ": " << cudaGetErrorString(code));
}

Stream Stream::create() {
  cudaStream_t stream = nullptr;
  DRING_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
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

PinnedBuffer::PinnedBuffer(int64_t bytes) : bytes_(bytes) {
  if (bytes > 0) DRING_CUDA_CHECK(cudaMallocHost(&data_, static_cast<size_t>(bytes)));
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
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
