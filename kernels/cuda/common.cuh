// common.cuh — device helpers shared by the CUDA kernels: storage-type conversion, warp
// reductions, the search that maps a CTA to its block, and the dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dring/core/cuda.hpp"
#include "dring/core/dtype.hpp"
#include "dring/core/error.hpp"
#include "dring/kernels/tiles.hpp"

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

// The item (block, row run) of tile x: the largest b in [0, n) with prefix[b] <= x, items with no
// tile skipped (dring/kernels/tiles.hpp). The calling warp searches 32 entries a round, one per
// lane; every lane of the warp gets the answer. The whole warp must call it.
__device__ __forceinline__ int64_t warp_find_item(const int64_t* prefix, int64_t n, int64_t x) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  SearchRange r{0, n - 1};
  while (!r.settled()) {
    const int64_t at = search_probe(r, lane);
    const unsigned le = __ballot_sync(kFullMask, at >= 0 && prefix[at] <= x);  // lane 0's always holds
    r = search_narrow(r, 31 - __clz(le));
  }
  return r.lo;
}

// The same for a whole CTA: warp 0 searches, the answer reaches every thread through shared
// memory. Every thread of the CTA must call it, once per kernel (a barrier inside).
__device__ __forceinline__ int64_t cta_find_item(const int64_t* prefix, int64_t n, int64_t x) {
  __shared__ int64_t item;
  if (threadIdx.x < 32) {
    const int64_t b = warp_find_item(prefix, n, x);
    if (threadIdx.x == 0) item = b;
  }
  __syncthreads();
  return item;
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
