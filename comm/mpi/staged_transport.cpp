// staged_transport.cpp — MPI point-to-point for device buffers: host staging or CUDA-aware MPI.
#include "dring/comm/staged_transport.hpp"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>

#include "dring/comm/deadline.hpp"
#include "dring/comm/mpi_transport.hpp"

#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

namespace dring::comm {

namespace {

// Pinned buffers are rounded up so that slightly different message sizes share them.
constexpr int64_t kStagingGranule = int64_t{1} << 20;

class StagedRequest final : public Request {
 public:
  StagedRequest(StagedMpiTransport& transport, StagedMpiTransport::Staging* staging, void* device, int64_t bytes,
                bool send, int peer, int tag)
      : transport_(transport), staging_(staging), device_(device), bytes_(bytes), send_(send), peer_(peer), tag_(tag),
        timeout_s_(transport.timeout_s()) {}
  ~StagedRequest() override {
    if (request_ != MPI_REQUEST_NULL) {  // abandoned on an error path: best effort, never throws
      MPI_Cancel(&request_);
      MPI_Request_free(&request_);
      staging_ = nullptr;  // MPI may still touch it: leave it out of the pool for good
    }
    if (staging_ != nullptr) transport_.release(staging_, copy_enqueued_);
  }
  bool test() override {
    if (request_ != MPI_REQUEST_NULL) {
      int done = 0;
      DRING_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
      if (!done) return false;
    }
    land();
    return true;
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) {
      wait_until_deadline_lazy(&request_, timeout_s_, [&] { return describe_point_to_point(send_, peer_, tag_, bytes_); });
    }
    land();
  }
  MPI_Request* handle() { return &request_; }

 private:
  // A completed receive through staging: copy to the device on the compute stream, once.
  void land() {
    if (device_ == nullptr || copy_enqueued_ || staging_ == nullptr) return;
    DRING_CUDA_CHECK(cudaMemcpyAsync(device_, staging_->host.data(), static_cast<size_t>(bytes_),
                                     cudaMemcpyHostToDevice, transport_.compute_stream()));
    copy_enqueued_ = true;
  }

  StagedMpiTransport& transport_;
  StagedMpiTransport::Staging* staging_;
  void* device_;  // receive through staging: where the data goes; else null
  int64_t bytes_;
  bool send_;
  int peer_;
  int tag_;
  double timeout_s_;
  bool copy_enqueued_ = false;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

}  // namespace

bool StagedMpiTransport::cuda_aware_mpi_available() {
  const char* env = std::getenv("DRING_CUDA_AWARE_MPI");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

StagedMpiTransport::StagedMpiTransport(MPI_Comm comm, cudaStream_t compute, Mode mode, MemoryTracker& tracker)
    : MpiCommTransport(comm), compute_(compute), mode_(mode), pinned_(tracker) {
  drained_ = cuda::Event::create();
}

StagedMpiTransport::~StagedMpiTransport() {
  for (const auto& staging : pool_) {
    if (staging->pending_copy) cudaEventSynchronize(staging->reusable.get());
  }
}

void StagedMpiTransport::drain_compute() {
  drained_.record(compute_);
  DRING_CUDA_CHECK(cudaEventSynchronize(drained_.get()));
}

StagedMpiTransport::Staging* StagedMpiTransport::acquire(int64_t bytes) {
  Staging* best = nullptr;
  for (const auto& staging : pool_) {
    if (!staging->busy && staging->host.bytes() >= bytes &&
        (best == nullptr || staging->host.bytes() < best->host.bytes())) {
      best = staging.get();
    }
  }
  if (best == nullptr) {
    auto staging = std::make_unique<Staging>();
    const int64_t rounded = (std::max<int64_t>(bytes, 1) + kStagingGranule - 1) / kStagingGranule * kStagingGranule;
    staging->host = Buffer<std::byte>(pinned_, rounded, MemCategory::kExchange);
    staging->reusable = cuda::Event::create();
    pool_.push_back(std::move(staging));
    best = pool_.back().get();
  } else if (best->pending_copy) {
    DRING_CUDA_CHECK(cudaEventSynchronize(best->reusable.get()));  // the last copy through it is done
    best->pending_copy = false;
  }
  best->busy = true;
  return best;
}

void StagedMpiTransport::release(Staging* staging, bool copy_enqueued) {
  if (copy_enqueued) {
    // The host-to-device copy still reads the buffer: reusable once the stream passes this point.
    if (cudaEventRecord(staging->reusable.get(), compute_) == cudaSuccess) {
      staging->pending_copy = true;
    } else {
      return;  // cannot tell when the copy is done: keep the buffer out of the pool
    }
  }
  staging->busy = false;
}

std::unique_ptr<Request> StagedMpiTransport::post_send_raw(const void* data, int64_t count, DType type, int peer,
                                                           int tag) {
  const int64_t bytes = count * dtype_bytes(type);
  std::unique_ptr<StagedRequest> request;
  const void* from = data;
  if (mode_ == Mode::kHostStaging) {
    Staging* staging = acquire(bytes);
    request = std::make_unique<StagedRequest>(*this, staging, nullptr, bytes, true, peer, tag);
    // In stream order: after the kernels that packed `data`.
    DRING_CUDA_CHECK(cudaMemcpyAsync(staging->host.data(), data, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost,
                                     compute_));
    drain_compute();
    from = staging->host.data();
  } else {
    request = std::make_unique<StagedRequest>(*this, nullptr, nullptr, bytes, true, peer, tag);
    drain_compute();
  }
  DRING_MPI_CHECK(MPI_Isend(from, mpi_count(count), mpi_datatype(type), peer, tag, comm(), request->handle()));
  counters_.sent_bytes += bytes;
  return request;
}

std::unique_ptr<Request> StagedMpiTransport::post_recv_raw(void* data, int64_t count, DType type, int peer,
                                                           int tag) {
  const int64_t bytes = count * dtype_bytes(type);
  std::unique_ptr<StagedRequest> request;
  void* into = data;
  if (mode_ == Mode::kHostStaging) {
    // The copy into `data` happens on the compute stream at completion, after every kernel that
    // read the buffer before: nothing to wait for here.
    Staging* staging = acquire(bytes);
    request = std::make_unique<StagedRequest>(*this, staging, data, bytes, false, peer, tag);
    into = staging->host.data();
  } else {
    request = std::make_unique<StagedRequest>(*this, nullptr, nullptr, bytes, false, peer, tag);
    drain_compute();  // MPI writes `data` directly: the kernels reading it must be done
  }
  DRING_MPI_CHECK(MPI_Irecv(into, mpi_count(count), mpi_datatype(type), peer, tag, comm(), request->handle()));
  counters_.recv_bytes += bytes;
  return request;
}

}  // namespace dring::comm
