// dring/kernels/cuda_dense.hpp — the element-wise kernels around a fused dense-attention call
// (kernels/cuda/dense_merge.cu): a fused kernel (cuDNN's SDPA) writes a fresh result of one
// DenseProblem into packed workspace, and these fold it into dring's running state through the
// problem's strides. Packed means [batch, heads, rows, head_dim] (lse: [batch, heads, rows]),
// contiguous. Launchers only enqueue work on `stream`; every pointer is device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dring/core/dtype.hpp"
#include "dring/kernels/dense_batches.hpp"

namespace dring::kernels::cuda {

// Forward: the problem's running (out, lse) merged with the packed block result (o_blk in the
// storage dtype, lse_blk fp32, natural log) by log-sum-exp, row by row, as attend.hpp defines it.
void launch_dense_merge(const DenseProblem& p, int64_t head_dim, DType dtype, const void* o_blk, const float* lse_blk,
                        cudaStream_t stream);

// Backward: the problem's saved lse, strided, into packed fp32 [batch, heads_q, s_q].
void launch_dense_gather_lse(const DenseProblem& p, float* packed, cudaStream_t stream);

// Backward: packed block gradients (the storage dtype) added into fp32 accumulators `acc`, a
// [batch, heads, rows, head_dim] view (the problem's dq with heads_q, s_q; dk or dv with heads_kv, s_kv).
void launch_dense_add(const DenseTensor& acc, int64_t batch, int64_t heads, int64_t rows, int64_t head_dim,
                      DType dtype, const void* packed, cudaStream_t stream);

}  // namespace dring::kernels::cuda
