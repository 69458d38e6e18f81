// dring/runtime/cudnn_attention.hpp — the CUDA backend's cuDNN share of a kernel call (builds with
// DRING_HAVE_CUDNN only): the call's blocks go through the rule (kernels::plan_dense), the dense
// problems run on cuDNN's fused attention (kernels::cudnn::Sdpa), and what is left, leftovers and
// problems cuDNN turned down, goes back to the backend for dring's kernels. Everything is enqueued
// on the backend's compute stream, so the order with dring's kernels is stream order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dring/core/memory.hpp"
#include "dring/kernels/cudnn.hpp"
#include "dring/kernels/dense_batches.hpp"

namespace dring {

// Thresholds of the rule (dense_batches.hpp); CudaBackendOptions carries them.
struct CudnnRuleOptions {
  int64_t min_rows = 16;
  double min_problem_scores = 65536;
};

// The cuDNN handle is made on the first call, so a backend configured with use_cudnn = false never
// touches cuDNN (a way round a broken cuDNN install without rebuilding).
class CudnnAttention {
 public:
  // `compute_major`: the device's compute capability (cuDNN's head_dim limit is 256 from sm_90 on, 128 before).
  CudnnAttention(cudaStream_t stream, Allocator& device, int compute_major);
  ~CudnnAttention();

  // Runs cuDNN's share of `blocks`; returns the blocks left for dring's kernels (valid until the
  // next call).
  std::span<const kernels::AttendBlock> attend(std::span<const kernels::AttendBlock> blocks,
                                               const kernels::AttendParams& params, const CudnnRuleOptions& rule);
  std::span<const kernels::GradBlock> attend_backward(std::span<const kernels::GradBlock> blocks,
                                                      const kernels::AttendParams& params,
                                                      const CudnnRuleOptions& rule);

  // The path of the last forward call for reports: "cudnn" when cuDNN ran every block, "cudnn+<kernel
  // path>" when both ran, `kernel_path` when cuDNN ran none.
  std::string path(const std::string& kernel_path, bool kernels_ran) const;

 private:
  kernels::DenseRule rule_for(const kernels::AttendParams& params, const CudnnRuleOptions& options) const;
  kernels::cudnn::Sdpa& sdpa();

  cudaStream_t stream_;
  Allocator& device_;
  std::unique_ptr<kernels::cudnn::Sdpa> sdpa_;
  int64_t max_head_dim_;
  int64_t last_problems_ = 0;
  std::vector<kernels::AttendBlock> rest_;
  std::vector<kernels::GradBlock> rest_grad_;
};

}  // namespace dring
