// dense_merge.cu — the element-wise kernels around a fused dense-attention call
// (dring/kernels/cuda_dense.hpp).
//
// Thread mapping: one warp per row of a [batch, heads, rows] grid (grid-stride over rows), its
// lanes splitting the row's head_dim elements; in the merge, every lane reads the row's two lse
// values before lane 0 writes the new one.
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "dring/kernels/cuda_dense.hpp"

namespace dring::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerCta = kThreads / 32;

// Row r of a [batch, heads, rows] grid as (b, h, i).
struct RowIndex {
  int64_t b, h, i;
};
__device__ __forceinline__ RowIndex row_index(int64_t r, int64_t heads, int64_t rows) {
  return RowIndex{r / (heads * rows), (r / rows) % heads, r % rows};
}
__device__ __forceinline__ int64_t at(const DenseTensor& t, const RowIndex& x) {
  return x.b * t.batch_stride + x.h * t.head_stride + x.i * t.row_stride;
}

template <class T>
__global__ void dense_merge_kernel(DenseTensor out, DenseTensor lse, int64_t heads, int64_t rows, int64_t n_rows,
                                   int64_t d, const T* o_blk, const float* lse_blk) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerCta;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32; r < n_rows; r += warps) {
    const RowIndex x = row_index(r, heads, rows);
    const float l_blk = lse_blk[r];
    if (l_blk == -INFINITY) continue;  // the rule sends no such row, but a no-op is the right answer
    float* l_run = static_cast<float*>(lse.base) + at(lse, x);
    const float old = *l_run;
    const float top = fmaxf(old, l_blk);
    const float l_new = top + logf(expf(old - top) + expf(l_blk - top));
    const float w_run = expf(old - l_new), w_blk = expf(l_blk - l_new);
    T* o = static_cast<T*>(out.base) + at(out, x);
    const T* src = o_blk + r * d;
    for (int64_t c = lane; c < d; c += 32) o[c] = from_float<T>(w_run * to_float(o[c]) + w_blk * to_float(src[c]));
    __syncwarp();
    if (lane == 0) *l_run = l_new;
  }
}

__global__ void dense_gather_lse_kernel(DenseTensor lse, int64_t heads, int64_t rows, int64_t n_rows, float* packed) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < n_rows; r += step) {
    packed[r] = static_cast<const float*>(lse.base)[at(lse, row_index(r, heads, rows))];
  }
}

template <class T>
__global__ void dense_add_kernel(DenseTensor acc, int64_t heads, int64_t rows, int64_t n_rows, int64_t d,
                                 const T* packed) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerCta;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32; r < n_rows; r += warps) {
    float* dst = static_cast<float*>(acc.base) + at(acc, row_index(r, heads, rows));
    const T* src = packed + r * d;
    for (int64_t c = lane; c < d; c += 32) dst[c] += to_float(src[c]);
  }
}

}  // namespace

void launch_dense_merge(const DenseProblem& p, int64_t head_dim, DType dtype, const void* o_blk, const float* lse_blk,
                        cudaStream_t stream) {
  const int64_t n_rows = p.batch * p.heads_q * p.s_q;
  if (n_rows == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    dense_merge_kernel<T><<<stride_grid(n_rows * 32, kThreads), kThreads, 0, stream>>>(
        p.out, p.lse, p.heads_q, p.s_q, n_rows, head_dim, static_cast<const T*>(o_blk), lse_blk);
    DRING_CUDA_CHECK_LAUNCH("dense_merge_kernel");
  });
}

void launch_dense_gather_lse(const DenseProblem& p, float* packed, cudaStream_t stream) {
  const int64_t n_rows = p.batch * p.heads_q * p.s_q;
  if (n_rows == 0) return;
  dense_gather_lse_kernel<<<stride_grid(n_rows, kThreads), kThreads, 0, stream>>>(p.lse, p.heads_q, p.s_q, n_rows,
                                                                                  packed);
  DRING_CUDA_CHECK_LAUNCH("dense_gather_lse_kernel");
}

void launch_dense_add(const DenseTensor& acc, int64_t batch, int64_t heads, int64_t rows, int64_t head_dim,
                      DType dtype, const void* packed, cudaStream_t stream) {
  const int64_t n_rows = batch * heads * rows;
  if (n_rows == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    dense_add_kernel<T><<<stride_grid(n_rows * 32, kThreads), kThreads, 0, stream>>>(
        acc, heads, rows, n_rows, head_dim, static_cast<const T*>(packed));
    DRING_CUDA_CHECK_LAUNCH("dense_add_kernel");
  });
}

}  // namespace dring::kernels::cuda
