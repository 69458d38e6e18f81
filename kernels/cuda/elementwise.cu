// elementwise.cu — fill, casts, random fill, and the row movement of message packing.
//
// Thread mapping: the element-wise kernels are grid-stride loops, thread x takes elements x,
// x + gridDim*blockDim, ...; the row kernels give a CTA 32 consecutive rows of the concatenated
// runs and each warp 4 of them (lanes split a row: 16-byte vectors where the run is aligned,
// else elements); warp 0 finds the run of the CTA's first row (cta_find_item), each warp walks
// forward from there.
#include <cstdint>

#include "common.cuh"
#include "dring/kernels/cuda.hpp"

namespace dring::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void fill_kernel(T* dst, int64_t count, float value) {
  const T x = from_float<T>(value);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) dst[i] = x;
}

template <class From, class To>
__global__ void cast_kernel(const From* src, To* dst, int64_t count) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    dst[i] = from_float<To>(to_float(src[i]));
  }
}

// splitmix64 of (seed, index): two uniforms, then Box-Muller.
__device__ __forceinline__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <class T>
__global__ void fill_random_kernel(T* dst, int64_t count, uint64_t seed) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    const uint64_t h = mix(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    const float u1 = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
    const float u2 = static_cast<float>((h >> 16) & 0xffffffull) * (1.0f / 16777216.0f);
    dst[i] = from_float<T>(sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

// A CTA of the row kernels takes 32 consecutive global rows, 4 per warp (warp w: rows w, w + 8, ..).
constexpr int kRowWarps = kThreads / 32;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerCta = kRowWarps * kRowsPerWarp;

// The run of global row w, walking forward from run r (rows ascend, so a warp's run index only
// grows; runs with no row are passed over).
__device__ __forceinline__ int64_t advance_run(const RowsLaunch& p, int64_t r, int64_t w) {
  while (p.row_prefix[r + 1] <= w) ++r;
  return r;
}

__device__ __forceinline__ bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// Whether rows of `row_bytes` bytes at src, dst (strides in bytes) move as 16-byte vectors.
__device__ __forceinline__ bool vector_rows(const RowRun& run, int64_t elem_bytes, int64_t row_bytes) {
  return aligned16(run.src) && aligned16(run.dst) && (run.src_stride * elem_bytes) % 16 == 0 &&
         (run.dst_stride * elem_bytes) % 16 == 0 && row_bytes % 16 == 0;
}

// Calls f(run, i) for row i of `run`, for each of the calling warp's rows of this CTA's 32: the
// CTA finds the run of its first row once (cta_find_item), each warp walks forward from there.
template <class F>
__device__ __forceinline__ void for_each_row(const RowsLaunch& p, F&& f) {
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kRowsPerCta;
  int64_t r = cta_find_item(p.row_prefix, p.n_runs, first);
#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t w = first + warp + k * kRowWarps;
    if (w >= p.n_rows) break;
    r = advance_run(p, r, w);
    f(p.runs[r], w - p.row_prefix[r]);
  }
}

// Rows move as bytes (T: 16-bit or 32-bit words of the storage dtype); as 16-byte vectors where the
// run's pointers, strides and the row length allow (the same test for the whole warp).
template <class T>
__global__ void __launch_bounds__(kThreads) copy_rows_kernel(RowsLaunch p) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row_bytes = p.head_dim * static_cast<int64_t>(sizeof(T));
  for_each_row(p, [&](const RowRun& run, int64_t i) {
    const T* src = static_cast<const T*>(run.src) + i * run.src_stride;
    T* dst = static_cast<T*>(run.dst) + i * run.dst_stride;
    if (vector_rows(run, sizeof(T), row_bytes)) {
      const uint4* s = reinterpret_cast<const uint4*>(src);
      uint4* d = reinterpret_cast<uint4*>(dst);
      for (int64_t c = lane; c < row_bytes / 16; c += 32) d[c] = s[c];
    } else {
      for (int64_t c = lane; c < p.head_dim; c += 32) dst[c] = src[c];
    }
  });
}

__global__ void __launch_bounds__(kThreads) add_rows_kernel(RowsLaunch p) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row_bytes = p.head_dim * static_cast<int64_t>(sizeof(float));
  for_each_row(p, [&](const RowRun& run, int64_t i) {
    const float* src = static_cast<const float*>(run.src) + i * run.src_stride;
    float* dst = static_cast<float*>(run.dst) + i * run.dst_stride;
    if (vector_rows(run, sizeof(float), row_bytes)) {
      const float4* s = reinterpret_cast<const float4*>(src);
      float4* d = reinterpret_cast<float4*>(dst);
      for (int64_t c = lane; c < p.head_dim / 4; c += 32) {
        const float4 a = s[c];
        float4 b = d[c];
        b.x += a.x;
        b.y += a.y;
        b.z += a.z;
        b.w += a.w;
        d[c] = b;
      }
    } else {
      for (int64_t c = lane; c < p.head_dim; c += 32) dst[c] += src[c];
    }
  });
}

}  // namespace

void launch_fill(void* dst, int64_t count, DType dtype, float value, cudaStream_t stream) {
  if (count == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<stride_grid(count, kThreads), kThreads, 0, stream>>>(static_cast<T*>(dst), count, value);
    DRING_CUDA_CHECK_LAUNCH("fill_kernel");
  });
}

void launch_cast_from_f32(const float* src, void* dst, int64_t count, DType dtype, cudaStream_t stream) {
  if (count == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cast_kernel<float, T><<<stride_grid(count, kThreads), kThreads, 0, stream>>>(src, static_cast<T*>(dst), count);
    DRING_CUDA_CHECK_LAUNCH("cast_kernel");
  });
}

void launch_cast_to_f32(const void* src, DType dtype, float* dst, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cast_kernel<T, float><<<stride_grid(count, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(src), dst, count);
    DRING_CUDA_CHECK_LAUNCH("cast_kernel");
  });
}

void launch_fill_random(void* dst, int64_t count, DType dtype, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    fill_random_kernel<T><<<stride_grid(count, kThreads), kThreads, 0, stream>>>(static_cast<T*>(dst), count, seed);
    DRING_CUDA_CHECK_LAUNCH("fill_random_kernel");
  });
}

void launch_copy_rows(const RowsLaunch& p, cudaStream_t stream) {
  if (p.n_rows == 0) return;
  // 16-bit rows are copied as 16-bit words: the bytes move unchanged whatever the dtype.
  const dim3 grid = grid_of((p.n_rows + kRowsPerCta - 1) / kRowsPerCta);
  if (p.dtype == DType::kF32) {
    copy_rows_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(p);
  } else {
    copy_rows_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(p);
  }
  DRING_CUDA_CHECK_LAUNCH("copy_rows_kernel");
}

void launch_add_rows(const RowsLaunch& p, cudaStream_t stream) {
  if (p.n_rows == 0) return;
  add_rows_kernel<<<grid_of((p.n_rows + kRowsPerCta - 1) / kRowsPerCta), kThreads, 0, stream>>>(p);
  DRING_CUDA_CHECK_LAUNCH("add_rows_kernel");
}

}  // namespace dring::kernels::cuda
