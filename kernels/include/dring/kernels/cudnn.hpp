// dring/kernels/cudnn.hpp — cuDNN's fused attention (SDPA) on the DenseProblems of
// dring/kernels/dense_batches.hpp, through the cudnn-frontend graph API (kernels/cudnn/sdpa.cpp;
// builds with DRING_HAVE_CUDNN only). Nothing here exposes a cuDNN type.
//
// Forward: cuDNN computes a fresh (O, Stats) of the problem into packed workspace, Stats being the
// log-sum-exp of the scaled scores in natural log (the frontend's convention unless
// set_stats_use_log2, which dring never sets), and launch_dense_merge folds it into the running
// (out, lse). Backward: the saved lse is gathered into packed Stats, cuDNN's SDPA backward takes
// q, k, v, the saved out, dout and Stats, and writes the block's dQ, dK, dV (storage dtype) into
// packed workspace; launch_dense_add adds them to the fp32 accumulators. With the final out and lse
// these are exactly the block's terms of the full gradient (docs/cudnn.md "Backward").
//
// One Sdpa per CUDA backend: a cudnnHandle bound to the backend's compute stream, built graphs
// cached per shape key (dtype, sizes, strides, mask, scale) with their workspace sizes, and
// workspace that grows through the backend's allocator. Not thread safe.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "dring/core/memory.hpp"
#include "dring/kernels/attend.hpp"
#include "dring/kernels/dense_batches.hpp"

namespace dring::kernels::cudnn {

// The version of the cuDNN library loaded at run time (cudnnGetVersion, e.g. 91900).
int64_t library_version();

class Sdpa {
 public:
  // `device` allocates device memory in stream order on `stream`.
  Sdpa(cudaStream_t stream, Allocator& device);
  ~Sdpa();
  Sdpa(const Sdpa&) = delete;
  Sdpa& operator=(const Sdpa&) = delete;

  // Enqueue problem p on the stream and return true; or return false, having enqueued nothing,
  // when cuDNN has no engine for its graph (then the caller runs the problem's blocks itself; the
  // answer is cached per shape). params: dtype fp16 or bf16, head_dim, scale.
  bool forward(const DenseProblem& p, const AttendParams& params);
  bool backward(const DenseProblem& p, const AttendParams& params);

  int64_t cached_graphs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dring::kernels::cudnn
