// common.cuh — device helpers shared by the CUDA kernels: storage-type conversion, warp
// reductions, the prefix search that maps a CTA to its block, and the dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dring/core/cuda.hpp"
#include "dring/core/dtype.hpp"
#include "dring/core/error.hpp"

namespace dring::kernels::cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kNegInf = -__builtin_huge_valf();

template <class T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// The largest b in [0, n) with prefix[b] <= x (prefix ascending, prefix[0] = 0 <= x): the item
// that global index x belongs to; items with no entries (prefix[b] == prefix[b+1]) are skipped.
__device__ __forceinline__ int64_t find_item(const int64_t* prefix, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= x) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Calls f(T{}) with T the storage type of `dtype`.
template <class F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kF16: f(__half{}); return;
    case DType::kBF16: f(__nv_bfloat16{}); return;
    case DType::kF64: break;  // not a storage dtype of the kernels
  }
  DRING_FAIL(Status::kInternal, "internal error: the CUDA kernels take no dtype " << dtype_name(dtype));
}

// A grid of `blocks` CTAs, checked against the hardware's limit on gridDim.x.
inline dim3 grid_of(int64_t blocks) {
  DRING_CHECK(blocks >= 1 && blocks <= 0x7fffffff, Status::kUnsupported,
              "a CUDA launch of " << blocks << " thread blocks exceeds the grid limit; split the call");
  return dim3(static_cast<unsigned>(blocks));
}

// Grid of a grid-stride loop over `count` items: enough CTAs to fill any current GPU.
inline dim3 stride_grid(int64_t count, int threads) {
  const int64_t wanted = (count + threads - 1) / threads;
  return dim3(static_cast<unsigned>(wanted < 1 ? 1 : (wanted > 65536 ? 65536 : wanted)));
}

}  // namespace dring::kernels::cuda
