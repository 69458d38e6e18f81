// cpu_backend.cpp — the Backend of host memory and the fp32 CPU kernels.
#include <algorithm>
#include <cstring>

#include "dring/backend.hpp"
#include "dring/kernels/cpu.hpp"

namespace dring {

namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(MemoryTracker& tracker, int threads) : tracker_(tracker), threads_(threads) {}

  std::string name() const override { return "cpu"; }
  Allocator& allocator() override { return tracker_.host(); }

  void upload(const float* host, float* dst, int64_t count) override { copy(host, dst, count); }
  void download(const float* src, float* host, int64_t count) override { copy(src, host, count); }
  void fill_zero(float* dst, int64_t count) override {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t i = 0; i < count; ++i) dst[i] = 0.0f;
  }

  void copy_rows(std::span<const RowRun> runs, int64_t d) override {
    for (const RowRun& run : runs) {
      for (int64_t i = 0; i < run.rows; ++i) std::memcpy(run.dst + i * run.dst_stride, run.src + i * run.src_stride, d * 4);
    }
  }
  void add_rows(std::span<const RowRun> runs, int64_t d) override {
    for (const RowRun& run : runs) {
      for (int64_t i = 0; i < run.rows; ++i) {
        float* dst = run.dst + i * run.dst_stride;
        const float* src = run.src + i * run.src_stride;
        for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
      }
    }
  }

  void init_state(const kernels::AttendState& state, int64_t rows, int64_t heads, int64_t head_dim) override {
    kernels::cpu::init_state(state, rows, heads, head_dim, threads_);
  }
  void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) override {
    kernels::cpu::attend(blocks, params, workspace(kernels::cpu::workspace_floats_per_thread(params), params.threads));
  }
  void finalize(const kernels::FinalizeParams& params) override { kernels::cpu::finalize(params, threads_); }
  void delta(const kernels::DeltaParams& params) override { kernels::cpu::delta(params, threads_); }
  void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) override {
    kernels::cpu::attend_backward(
        blocks, params, workspace(kernels::cpu::backward_workspace_floats_per_thread(params), params.threads));
  }
  void synchronize() override {}

 private:
  void copy(const float* src, float* dst, int64_t count) {
    if (src != dst) std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
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
