// cpu_backend.cpp — the Backend of host memory and the CPU kernels: fp32 or bf16 storage (bf16
// elements are their 16-bit patterns; conversions round to nearest even), fp32 arithmetic.
#include <algorithm>
#include <cstring>

#include "dring/runtime/backend.hpp"
#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"

namespace dring {

namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(MemoryTracker& tracker, int threads) : tracker_(tracker), threads_(threads) {}

  std::string name() const override { return "cpu"; }
  Allocator& allocator() override { return tracker_.host(); }
  bool supports(DType dtype) const override { return dtype == DType::kF32 || dtype == DType::kBF16; }

  void upload(const float* host, void* dst, int64_t count, DType dtype) override {
    require_supported(dtype);
    if (dtype == DType::kBF16) {
      in_chunks(count, [&](int64_t begin, int64_t n) {
        kernels::cpu::f32_to_bf16(host + begin, static_cast<uint16_t*>(dst) + begin, n);
      });
    } else if (host != dst) {
      std::memcpy(dst, host, static_cast<size_t>(count) * sizeof(float));
    }
  }
  void download(const void* src, DType dtype, float* host, int64_t count) override {
    require_supported(dtype);
    if (dtype == DType::kBF16) {
      in_chunks(count, [&](int64_t begin, int64_t n) {
        kernels::cpu::bf16_to_f32(static_cast<const uint16_t*>(src) + begin, host + begin, n);
      });
    } else if (src != host) {
      std::memcpy(host, src, static_cast<size_t>(count) * sizeof(float));
    }
  }
  void fill(void* dst, int64_t count, DType dtype, float value) override {
    require_supported(dtype);
    if (dtype == DType::kBF16) {
      uint16_t bits = 0;
      kernels::cpu::f32_to_bf16(&value, &bits, 1);
      uint16_t* x = static_cast<uint16_t*>(dst);
#pragma omp parallel for num_threads(threads_) schedule(static)
      for (int64_t i = 0; i < count; ++i) x[i] = bits;
      return;
    }
    float* x = static_cast<float*>(dst);
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t i = 0; i < count; ++i) x[i] = value;
  }
  void cast(const float* src, void* dst, int64_t count, DType dtype) override { upload(src, dst, count, dtype); }

  void copy_rows(std::span<const RowRun> runs, int64_t d, DType dtype) override {
    const int64_t bytes = dtype_bytes(dtype);
    for (const RowRun& run : runs) {
      for (int64_t i = 0; i < run.rows; ++i) {
        std::memcpy(offset(run.dst, i * run.dst_stride, dtype), offset(run.src, i * run.src_stride, dtype), d * bytes);
      }
    }
  }
  void add_rows(std::span<const RowRun> runs, int64_t d) override {
    for (const RowRun& run : runs) {
      for (int64_t i = 0; i < run.rows; ++i) {
        float* dst = static_cast<float*>(run.dst) + i * run.dst_stride;
        const float* src = static_cast<const float*>(run.src) + i * run.src_stride;
        for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
      }
    }
  }

  void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) override {
    kernels::cpu::attend(blocks, params, workspace(kernels::cpu::workspace_floats_per_thread(params), params.threads));
  }
  void delta(const kernels::DeltaParams& params) override { kernels::cpu::delta(params, threads_); }
  void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) override {
    kernels::cpu::attend_backward(
        blocks, params, workspace(kernels::cpu::backward_workspace_floats_per_thread(params), params.threads));
  }
  void synchronize() override {}

 private:
  static void require_supported(DType dtype) {
    DRING_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, Status::kUnsupported,
                "the cpu backend stores tensors in fp32 or bf16 (got " << dtype_name(dtype) << ")");
  }
  // f(begin, n) over [0, count) in chunks, on the backend's threads (conversions of whole tensors).
  template <class F>
  void in_chunks(int64_t count, F&& f) {
    constexpr int64_t kChunk = int64_t{1} << 16;
    const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(kChunk, count - c * kChunk));
  }
  // Per-thread scratch, grown on demand and kept (category workspace).
  float* workspace(int64_t per_thread, int threads) {
    const int64_t needed = per_thread * threads;
    if (workspace_.size() < needed) workspace_ = Buffer<float>(tracker_, needed, MemCategory::kWorkspace);
    return workspace_.data();
  }

  MemoryTracker& tracker_;
  int threads_;
  Buffer<float> workspace_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(MemoryTracker& tracker, int threads) {
  return std::make_unique<CpuBackend>(tracker, std::max(threads, 1));
}

}  // namespace dring
