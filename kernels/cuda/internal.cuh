// internal.cuh — what the files of kernels/cuda share beyond the public launchers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dring/kernels/cuda.hpp"

namespace dring::kernels::cuda {

// Query rows (and key rows per tile) of one CTA of the tensor-core forward kernel.
inline constexpr int64_t kMmaRows = 64;

// attend_mma.cu: the tensor-core forward kernel (fp16/bf16, head_dim 64 or 128, aligned rows).
void launch_attend_mma(const AttendLaunch& launch, cudaStream_t stream);

}  // namespace dring::kernels::cuda
