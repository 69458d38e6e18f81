// cuda_backend.cpp — the Backend on one GPU: tracked device memory, one compute stream, and the
// descriptor ring that carries each call's blocks or row runs to the kernels (kernels/cuda).
#include "dring/runtime/cuda_backend.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "dring/config.h"
#include "dring/core/cuda.hpp"
#include "dring/core/error.hpp"
#include "dring/kernels/cuda.hpp"
#if DRING_HAVE_CUDNN
#include "dring/runtime/cudnn_attention.hpp"
#endif

namespace dring {

namespace {

namespace kc = kernels::cuda;

// Stream-ordered device memory on the compute stream (cudaMallocAsync where the device has memory
// pools, else cudaMalloc): no device-wide synchronisation on free, which matters while NCCL
// kernels wait for peers.
class CudaAllocator final : public Allocator {
 public:
  CudaAllocator(MemoryTracker& tracker, cudaStream_t stream, int device, bool pools)
      : tracker_(tracker), stream_(stream), device_(device), pools_(pools) {}
  MemSpace space() const override { return MemSpace::kDevice; }
  void* allocate(int64_t bytes, MemCategory category) override {
    void* p = nullptr;
    const cudaError_t rc = pools_ ? cudaMallocAsync(&p, static_cast<size_t>(bytes), stream_)
                                  : cudaMalloc(&p, static_cast<size_t>(bytes));
    if (rc != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      DRING_FAIL(Status::kOutOfMemory, "device memory: cannot allocate " << bytes << " bytes of "
                                           << mem_category_name(category) << " on " << error_rank_text()
                                           << " (device " << device_ << ", "
                                           << free_bytes << " of " << total_bytes
                                           << " bytes free): " << cudaGetErrorString(rc));
    }
    tracker_.record_alloc(MemSpace::kDevice, category, bytes);
    return p;
  }
  void deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept override {
    if (pools_) {
      cudaFreeAsync(ptr, stream_);
    } else {
      cudaFree(ptr);
    }
    tracker_.record_free(MemSpace::kDevice, category, bytes);
  }

 private:
  MemoryTracker& tracker_;
  cudaStream_t stream_;
  int device_;
  bool pools_;
};

// Pinned host / device slot pairs, used round robin: a call's descriptors are written to the
// pinned half, copied to the device half on the compute stream, read by the launch; the slot is
// reused only after that launch (its event) completed.
class DescriptorRing {
 public:
  static constexpr int kSlots = 6;
  static constexpr int64_t kSlotBytes = int64_t{2} << 20;

  DescriptorRing(Allocator& device, MemoryTracker& tracker) : pinned_(tracker) {
    for (Slot& slot : slots_) {
      slot.host = Buffer<std::byte>(pinned_, kSlotBytes, MemCategory::kWorkspace);
      slot.device = Buffer<std::byte>(device, kSlotBytes, MemCategory::kWorkspace);
      slot.done = cuda::Event::create();
    }
  }
  DescriptorRing(const DescriptorRing&) = delete;
  DescriptorRing& operator=(const DescriptorRing&) = delete;

  // Copies bytes [0, bytes) of `host` to the device in stream order; the result is valid for the
  // launches enqueued before seal().
  void* stage(const void* host, int64_t bytes, cudaStream_t stream, const std::function<void()>& watchdog) {
    DRING_ASSERT(bytes <= kSlotBytes);
    Slot& slot = slots_[next_];
    if (slot.used) cuda::wait_polling(slot.done.get(), watchdog);
    std::memcpy(slot.host.data(), host, static_cast<size_t>(bytes));
    DRING_CUDA_CHECK(cudaMemcpyAsync(slot.device.data(), slot.host.data(), static_cast<size_t>(bytes),
                                     cudaMemcpyHostToDevice, stream));
    return slot.device.data();
  }
  void seal(cudaStream_t stream) {
    Slot& slot = slots_[next_];
    slot.done.record(stream);
    slot.used = true;
    next_ = (next_ + 1) % kSlots;
  }

 private:
  struct Slot {
    Buffer<std::byte> host;  // pinned
    Buffer<std::byte> device;
    cuda::Event done;
    bool used = false;
  };
  cuda::PinnedAllocator pinned_;  // before slots_: the buffers are freed first
  Slot slots_[kSlots];
  int next_ = 0;
};

// A launch's descriptor arrays packed into one byte image: items, then int64 prefix sums.
class Image {
 public:
  template <class T>
  int64_t add(const T* data, int64_t count) {
    const int64_t at = (static_cast<int64_t>(bytes_.size()) + 15) / 16 * 16;
    bytes_.resize(static_cast<size_t>(at + count * static_cast<int64_t>(sizeof(T))));
    if (count > 0) std::memcpy(bytes_.data() + at, data, static_cast<size_t>(count) * sizeof(T));
    return at;
  }
  const std::byte* data() const { return bytes_.data(); }
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  void clear() { bytes_.clear(); }

 private:
  std::vector<std::byte> bytes_;
};

// Items per launch so that a launch's image fits one ring slot.
constexpr int64_t items_per_launch(int64_t item_bytes, int prefixes) {
  return (DescriptorRing::kSlotBytes - 64 * (prefixes + 1)) / (item_bytes + 8 * prefixes) - 1;
}

template <class T>
const T* at(const void* base, int64_t offset) {
  return reinterpret_cast<const T*>(static_cast<const std::byte*>(base) + offset);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(MemoryTracker& tracker, int device, cudaStream_t external) : tracker_(tracker), device_(device) {
    DRING_CUDA_CHECK(cudaSetDevice(device));
    stream_ = external != nullptr ? cuda::Stream::borrow(external) : cuda::Stream::create();
    int pools = 0, major = 0;
    DRING_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
    DRING_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    mma_capable_ = major >= 8;
    allocator_ = std::make_unique<CudaAllocator>(tracker, stream_.get(), device, pools != 0);
    ring_ = std::make_unique<DescriptorRing>(*allocator_, tracker);
    idle_ = cuda::Event::create();
#if DRING_HAVE_CUDNN
    if (major >= 8) cudnn_ = std::make_unique<CudnnAttention>(stream_.get(), *allocator_, major);
#endif
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_.get());  // nothing in flight reads memory freed below
  }

  std::string name() const override { return "cuda"; }
  Allocator& allocator() override { return *allocator_; }
  bool supports(DType) const override { return true; }

  void upload(const float* host, void* dst, int64_t count, DType dtype) override {
    if (dtype == DType::kF32) {
      DRING_CUDA_CHECK(cudaMemcpyAsync(dst, host, static_cast<size_t>(count) * 4, cudaMemcpyHostToDevice, stream()));
    } else {
      Buffer<float> staging(*allocator_, std::min(count, kStagingFloats), MemCategory::kWorkspace);
      for (int64_t off = 0; off < count; off += kStagingFloats) {
        const int64_t n = std::min(kStagingFloats, count - off);
        DRING_CUDA_CHECK(cudaMemcpyAsync(staging.data(), host + off, static_cast<size_t>(n) * 4,
                                         cudaMemcpyHostToDevice, stream()));
        kc::launch_cast_from_f32(staging.data(), offset(dst, off, dtype), n, dtype, stream());
      }
    }
    synchronize();  // the caller may reuse `host` when this returns
  }
  void download(const void* src, DType dtype, float* host, int64_t count) override {
    if (dtype == DType::kF32) {
      DRING_CUDA_CHECK(cudaMemcpyAsync(host, src, static_cast<size_t>(count) * 4, cudaMemcpyDeviceToHost, stream()));
    } else {
      Buffer<float> staging(*allocator_, std::min(count, kStagingFloats), MemCategory::kWorkspace);
      for (int64_t off = 0; off < count; off += kStagingFloats) {
        const int64_t n = std::min(kStagingFloats, count - off);
        kc::launch_cast_to_f32(offset(src, off, dtype), dtype, staging.data(), n, stream());
        DRING_CUDA_CHECK(cudaMemcpyAsync(host + off, staging.data(), static_cast<size_t>(n) * 4,
                                         cudaMemcpyDeviceToHost, stream()));
      }
    }
    synchronize();
  }
  void fill(void* dst, int64_t count, DType dtype, float value) override {
    kc::launch_fill(dst, count, dtype, value, stream());
  }
  void cast(const float* src, void* dst, int64_t count, DType dtype) override {
    kc::launch_cast_from_f32(src, dst, count, dtype, stream());
  }

  void copy_rows(std::span<const RowRun> runs, int64_t d, DType dtype) override { rows(runs, d, dtype, false); }
  void add_rows(std::span<const RowRun> runs, int64_t d) override { rows(runs, d, DType::kF32, true); }

  void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) override {
#if DRING_HAVE_CUDNN
    if (use_cudnn()) blocks = cudnn_->attend(blocks, params, cudnn_rule());  // cuDNN's share, then the rest
#endif
    const kc::AttendPath path = kc::choose_attend_path(blocks, params.dtype, params.head_dim, allow_mma());
    last_path_ = kc::path_name(path);
#if DRING_HAVE_CUDNN
    if (use_cudnn()) last_path_ = cudnn_->path(last_path_, !blocks.empty());
#endif
    const int64_t tile_rows = kc::attend_tile_rows(path);
    constexpr int64_t kPerLaunch = items_per_launch(sizeof(kernels::AttendBlock), 1);
    for (size_t first = 0; first < blocks.size(); first += kPerLaunch) {
      const auto part = blocks.subspan(first, std::min<size_t>(kPerLaunch, blocks.size() - first));
      prefix_.assign(1, 0);
      for (const auto& b : part) prefix_.push_back(prefix_.back() + (b.n_q + tile_rows - 1) / tile_rows);
      image_.clear();
      const int64_t blocks_at = image_.add(part.data(), static_cast<int64_t>(part.size()));
      const int64_t prefix_at = image_.add(prefix_.data(), static_cast<int64_t>(prefix_.size()));
      const void* device = ring_->stage(image_.data(), image_.size(), stream(), watchdog_);
      kc::AttendLaunch launch;
      launch.blocks = at<kernels::AttendBlock>(device, blocks_at);
      launch.tile_prefix = at<int64_t>(device, prefix_at);
      launch.n_blocks = static_cast<int64_t>(part.size());
      launch.n_tiles = prefix_.back();
      launch.dtype = params.dtype;
      launch.head_dim = params.head_dim;
      launch.scale = static_cast<float>(params.scale);
      launch.path = path;
      kc::launch_attend(launch, stream());
      ring_->seal(stream());
    }
    params.progress(1.0);  // enqueued: lets the executor drive its transport meanwhile
  }
  void delta(const kernels::DeltaParams& params) override { kc::launch_delta(params, stream()); }
  void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) override {
#if DRING_HAVE_CUDNN
    if (use_cudnn()) blocks = cudnn_->attend_backward(blocks, params, cudnn_rule());
#endif
    constexpr int64_t kPerLaunch = items_per_launch(sizeof(kernels::GradBlock), 2);
    constexpr int64_t rows = kc::kGradTileRows;
    std::vector<int64_t> kv_prefix;
    for (size_t first = 0; first < blocks.size(); first += kPerLaunch) {
      const auto part = blocks.subspan(first, std::min<size_t>(kPerLaunch, blocks.size() - first));
      prefix_.assign(1, 0);
      kv_prefix.assign(1, 0);
      for (const auto& b : part) {
        prefix_.push_back(prefix_.back() + b.n_heads * ((b.n_q + rows - 1) / rows));
        kv_prefix.push_back(kv_prefix.back() + (b.n_k + rows - 1) / rows);
      }
      image_.clear();
      const int64_t blocks_at = image_.add(part.data(), static_cast<int64_t>(part.size()));
      const int64_t dq_at = image_.add(prefix_.data(), static_cast<int64_t>(prefix_.size()));
      const int64_t dkv_at = image_.add(kv_prefix.data(), static_cast<int64_t>(kv_prefix.size()));
      const void* device = ring_->stage(image_.data(), image_.size(), stream(), watchdog_);
      kc::GradLaunch launch;
      launch.blocks = at<kernels::GradBlock>(device, blocks_at);
      launch.dq_prefix = at<int64_t>(device, dq_at);
      launch.dkv_prefix = at<int64_t>(device, dkv_at);
      launch.n_blocks = static_cast<int64_t>(part.size());
      launch.dq_tiles = prefix_.back();
      launch.dkv_tiles = kv_prefix.back();
      launch.dtype = params.dtype;
      launch.head_dim = params.head_dim;
      launch.scale = static_cast<float>(params.scale);
      kc::launch_attend_backward(launch, stream());
      ring_->seal(stream());
    }
    params.progress(1.0);
  }

  void synchronize() override {
    idle_.record(stream());
    cuda::wait_polling(idle_.get(), watchdog_);
  }

  cudaStream_t stream() const { return stream_.get(); }
  void set_options(const CudaBackendOptions& options) { options_ = options; }
  void set_watchdog(std::function<void()> watchdog) { watchdog_ = std::move(watchdog); }
  const std::string& last_path() const { return last_path_; }

 private:
  static constexpr int64_t kStagingFloats = int64_t{16} << 20;  // 64 MiB per upload/download chunk

  bool allow_mma() const { return options_.allow_mma && mma_capable_; }
#if DRING_HAVE_CUDNN
  bool use_cudnn() const { return cudnn_ != nullptr && options_.use_cudnn; }
  CudnnRuleOptions cudnn_rule() const { return {options_.cudnn_min_rows, options_.cudnn_min_problem_scores}; }
#endif

  void rows(std::span<const RowRun> runs, int64_t d, DType dtype, bool add) {
    constexpr int64_t kPerLaunch = items_per_launch(sizeof(RowRun), 1);
    for (size_t first = 0; first < runs.size(); first += kPerLaunch) {
      const auto part = runs.subspan(first, std::min<size_t>(kPerLaunch, runs.size() - first));
      prefix_.assign(1, 0);
      for (const RowRun& run : part) prefix_.push_back(prefix_.back() + run.rows);
      if (prefix_.back() == 0) continue;
      image_.clear();
      const int64_t runs_at = image_.add(part.data(), static_cast<int64_t>(part.size()));
      const int64_t prefix_at = image_.add(prefix_.data(), static_cast<int64_t>(prefix_.size()));
      const void* device = ring_->stage(image_.data(), image_.size(), stream(), watchdog_);
      kc::RowsLaunch launch;
      launch.runs = at<RowRun>(device, runs_at);
      launch.row_prefix = at<int64_t>(device, prefix_at);
      launch.n_runs = static_cast<int64_t>(part.size());
      launch.n_rows = prefix_.back();
      launch.head_dim = d;
      launch.dtype = dtype;
      add ? kc::launch_add_rows(launch, stream()) : kc::launch_copy_rows(launch, stream());
      ring_->seal(stream());
    }
  }

  MemoryTracker& tracker_;
  int device_;
  cuda::Stream stream_;
  bool mma_capable_ = false;
  std::unique_ptr<CudaAllocator> allocator_;
  std::unique_ptr<DescriptorRing> ring_;
#if DRING_HAVE_CUDNN
  std::unique_ptr<CudnnAttention> cudnn_;  // after allocator_: its workspace is freed first
#endif
  cuda::Event idle_;
  CudaBackendOptions options_;
  std::function<void()> watchdog_;
  std::string last_path_ = "none";
  std::vector<int64_t> prefix_;
  Image image_;
};

CudaBackend& as_cuda(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  DRING_CHECK(cuda != nullptr, Status::kInvalidArgument, "backend '" << backend.name() << "' is not the cuda backend");
  return *cuda;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(MemoryTracker& tracker, int device, void* cuda_stream) {
  return std::make_unique<CudaBackend>(tracker, device, static_cast<cudaStream_t>(cuda_stream));
}

void configure_cuda_backend(Backend& backend, const CudaBackendOptions& options) { as_cuda(backend).set_options(options); }

void set_cuda_watchdog(Backend& backend, std::function<void()> watchdog) {
  as_cuda(backend).set_watchdog(std::move(watchdog));
}

void* cuda_stream_of(Backend& backend) { return as_cuda(backend).stream(); }

std::string last_attend_path(Backend& backend) { return as_cuda(backend).last_path(); }

}  // namespace dring
