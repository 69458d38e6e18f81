// attend_backward.cu — backward of attention blocks on the GPU (generic: any dtype, head_dim <= 256,
// fp32 arithmetic), and the delta kernel.
//
// For one (query row i, key row j) of one query head, with p = exp(scale q_i.k_j - lse_i) and
// ds = p (dout_i.v_j - delta_i):  dq_i += scale ds k_j,  dk_j += scale ds q_i,  dv_j += p dout_i.
// Two kernels split the work so that every CTA owns the rows it writes (no atomics, deterministic):
//   * dq: a CTA of 4 warps takes 16 query rows of one query head of a block (4 rows per warp) and
//     walks the block's keys 32 at a time (K and V staged in shared memory, odd row stride): lane j
//     computes s and dout.v for key j, then lane l adds ds_j k_j[c] for its columns c = l, l+32, ..
//   * dk, dv: a CTA takes 16 key rows of a block (4 per warp) and walks every query head and the
//     visible queries 32 at a time (q, dout, lse, delta staged): lane i computes s and dout_i.v for
//     query i, then lane l adds ds_i q_i[c] and p_i dout_i[c] for its columns.
// Scores are recomputed in both (the price of owning the outputs); nothing n x n is stored.
// Masks: each query row sees one interval of keys (BlockMask::key_begin/key_end), both ends
// non-decreasing in the row. The dq kernel walks only the keys between its first row's first key
// and its last row's last key; the dk/dv kernel walks only the queries that may see its keys
// (rows_seeing, attend.hpp). Both skip chunks the mask leaves empty and mask per element only in
// chunks that are not full; a row with no visible key contributes nothing (its lse, -inf when no
// block reached it, never enters an exponent).

#include "common.cuh"
#include "dring/kernels/cuda.hpp"

namespace dring::kernels::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kTileRows = kWarps * kRowsPerWarp;  // rows a CTA owns
constexpr int kChunk = 32;                        // rows of the other side per shared-memory step
constexpr int kCols = kMaxHeadDim / 32;
static_assert(kTileRows == kGradTileRows, "the prefix sums of the host count 16-row tiles");

__host__ __device__ inline int odd_stride(int d) { return d | 1; }

// Shared memory of either kernel: 2 x [16][d] for the owned rows, 2 x [32][odd d] for the streamed
// rows, and 2 x 32 floats of per-row state.
int64_t grad_smem_bytes(int64_t d) {
  return static_cast<int64_t>(sizeof(float)) *
         (2 * kTileRows * d + 2 * kChunk * odd_stride(static_cast<int>(d)) + 2 * kChunk);
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32) grad_q_kernel(GradLaunch p) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(p.head_dim), ds = odd_stride(d);
  float* qs = smem;                 // [16][d] this tile's q rows
  float* dos = qs + kTileRows * d;  // [16][d] and dout rows
  float* ks = dos + kTileRows * d;  // [32][ds]
  float* vs = ks + kChunk * ds;     // [32][ds]
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const float alpha = p.scale * kLog2e;

  const int64_t tile = blockIdx.x;
  const int64_t b = cta_find_item(p.dq_prefix, p.n_blocks, tile);
  const GradBlock blk = p.blocks[b];
  const int64_t q_tiles = (blk.n_q + kTileRows - 1) / kTileRows;
  const int64_t local = tile - p.dq_prefix[b];
  const int64_t head = local / q_tiles;
  const int64_t i0 = (local % q_tiles) * kTileRows;
  const T* q = static_cast<const T*>(blk.q) + head * blk.q_head_step;
  const T* dout = static_cast<const T*>(blk.dout) + head * blk.q_head_step;
  float* dq = blk.dq + head * blk.q_head_step;
  const float* lse = blk.lse + head * blk.state_head_step;
  const float* delta = blk.delta + head * blk.state_head_step;
  const T* k = static_cast<const T*>(blk.k);
  const T* v = static_cast<const T*>(blk.v);

  for (int e = static_cast<int>(threadIdx.x); e < kTileRows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const int64_t i = i0 + r;
    const bool valid = i < blk.n_q;
    qs[e] = valid ? to_float(q[i * blk.q_stride + c]) : 0.0f;
    dos[e] = valid ? to_float(dout[i * blk.q_stride + c]) : 0.0f;
  }
  float lse2[kRowsPerWarp], dlt[kRowsPerWarp], acc[kRowsPerWarp][kCols];
  int64_t row_begin[kRowsPerWarp], row_end[kRowsPerWarp];  // each row's visible keys
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t i = i0 + warp * kRowsPerWarp + rr;
    const bool valid = i < blk.n_q;
    lse2[rr] = valid ? lse[i * blk.state_stride] * kLog2e : 0.0f;
    dlt[rr] = valid ? delta[i * blk.state_stride] : 0.0f;
    row_begin[rr] = valid ? blk.mask.key_begin(i, blk.n_k) : 0;
    row_end[rr] = valid ? blk.mask.key_end(i, blk.n_k) : 0;
#pragma unroll
    for (int t = 0; t < kCols; ++t) acc[rr][t] = 0.0f;
  }

  // Every row of the tile sees keys in [its first row's first key, its last row's last key).
  const int64_t rows_end = blk.n_q < i0 + kTileRows ? blk.n_q : i0 + kTileRows;
  const int64_t key_begin = blk.mask.key_begin(i0, blk.n_k);
  const int64_t key_end = blk.mask.key_end(rows_end - 1, blk.n_k);
  for (int64_t j0 = key_begin; j0 < key_end; j0 += kChunk) {
    const int keys = static_cast<int>(key_end - j0 < kChunk ? key_end - j0 : kChunk);
    // The same answer in every thread of the CTA, so skipping here keeps the barriers uniform.
    if (blk.mask.empty(i0, rows_end, j0, j0 + keys)) continue;
    const bool full = blk.mask.full(i0, rows_end, j0, j0 + keys);
    __syncthreads();
    for (int e = static_cast<int>(threadIdx.x); e < kChunk * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const int64_t j = j0 + r;
      const bool valid = r < keys;
      ks[r * ds + c] = valid ? to_float(k[j * blk.kv_stride + c]) : 0.0f;
      vs[r * ds + c] = valid ? to_float(v[j * blk.kv_stride + c]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      const int64_t i = i0 + r;
      if (i >= blk.n_q) continue;  // warp-uniform
      const int64_t j = j0 + lane;
      float dsj = 0.0f;
      if (lane < keys && (full || (j >= row_begin[rr] && j < row_end[rr]))) {
        float s = 0.0f, dp = 0.0f;
        for (int c = 0; c < d; ++c) {
          s += qs[r * d + c] * ks[lane * ds + c];
          dp += dos[r * d + c] * vs[lane * ds + c];
        }
        const float pj = exp2f(s * alpha - lse2[rr]);
        dsj = pj * (dp - dlt[rr]);
      }
      for (int jj = 0; jj < keys; ++jj) {
        const float x = __shfl_sync(kFullMask, dsj, jj);
#pragma unroll
        for (int t = 0; t < kCols; ++t) {
          const int c = lane + 32 * t;
          if (c < d) acc[rr][t] += x * ks[jj * ds + c];
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t i = i0 + warp * kRowsPerWarp + rr;
    if (i >= blk.n_q) continue;
#pragma unroll
    for (int t = 0; t < kCols; ++t) {
      const int c = lane + 32 * t;
      if (c < d) dq[i * blk.q_stride + c] += p.scale * acc[rr][t];
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32) grad_kv_kernel(GradLaunch p) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(p.head_dim), ds = odd_stride(d);
  float* kts = smem;                 // [16][d] this tile's key rows
  float* vts = kts + kTileRows * d;  // [16][d] and value rows
  float* qs = vts + kTileRows * d;   // [32][ds] streamed query rows
  float* dos = qs + kChunk * ds;     // [32][ds] and their dout rows
  float* lse2s = dos + kChunk * ds;  // [32]
  float* dlts = lse2s + kChunk;      // [32]
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const float alpha = p.scale * kLog2e;

  const int64_t tile = blockIdx.x;
  const int64_t b = cta_find_item(p.dkv_prefix, p.n_blocks, tile);
  const GradBlock blk = p.blocks[b];
  const int64_t j0 = (tile - p.dkv_prefix[b]) * kTileRows;
  const T* k = static_cast<const T*>(blk.k);
  const T* v = static_cast<const T*>(blk.v);

  for (int e = static_cast<int>(threadIdx.x); e < kTileRows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const int64_t j = j0 + r;
    const bool valid = j < blk.n_k;
    kts[e] = valid ? to_float(k[j * blk.kv_stride + c]) : 0.0f;
    vts[e] = valid ? to_float(v[j * blk.kv_stride + c]) : 0.0f;
  }
  float dk[kRowsPerWarp][kCols], dv[kRowsPerWarp][kCols];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
#pragma unroll
    for (int t = 0; t < kCols; ++t) dk[rr][t] = dv[rr][t] = 0.0f;
  }
  // Only the queries [rows.begin, rows.end) may see a key of this tile.
  const int64_t j_end = blk.n_k < j0 + kTileRows ? blk.n_k : j0 + kTileRows;
  const RowRange rows = rows_seeing(blk.mask, blk.n_q, blk.n_k, j0, j_end);
  for (int64_t head = 0; head < blk.n_heads; ++head) {
    const T* q = static_cast<const T*>(blk.q) + head * blk.q_head_step;
    const T* dout = static_cast<const T*>(blk.dout) + head * blk.q_head_step;
    const float* lse = blk.lse + head * blk.state_head_step;
    const float* delta = blk.delta + head * blk.state_head_step;
    for (int64_t c0 = rows.begin; c0 < rows.end; c0 += kChunk) {
      const int queries = static_cast<int>(rows.end - c0 < kChunk ? rows.end - c0 : kChunk);
      // The same answer in every thread of the CTA, so skipping here keeps the barriers uniform.
      if (blk.mask.empty(c0, c0 + queries, j0, j_end)) continue;
      const bool full = blk.mask.full(c0, c0 + queries, j0, j_end);
      __syncthreads();
      for (int e = static_cast<int>(threadIdx.x); e < kChunk * d; e += blockDim.x) {
        const int r = e / d, c = e % d;
        const int64_t i = c0 + r;
        const bool valid = r < queries;
        qs[r * ds + c] = valid ? to_float(q[i * blk.q_stride + c]) : 0.0f;
        dos[r * ds + c] = valid ? to_float(dout[i * blk.q_stride + c]) : 0.0f;
      }
      for (int r = static_cast<int>(threadIdx.x); r < kChunk; r += blockDim.x) {
        const int64_t i = c0 + r;
        const bool valid = r < queries;
        lse2s[r] = valid ? lse[i * blk.state_stride] * kLog2e : 0.0f;
        dlts[r] = valid ? delta[i * blk.state_stride] : 0.0f;
      }
      __syncthreads();
      // This lane's query and its visible keys.
      const int64_t i = c0 + lane;
      const int64_t i_begin = lane < queries ? blk.mask.key_begin(i, blk.n_k) : 0;
      const int64_t i_end = lane < queries ? blk.mask.key_end(i, blk.n_k) : 0;
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int r = warp * kRowsPerWarp + rr;
        const int64_t j = j0 + r;
        if (j >= blk.n_k) continue;  // warp-uniform
        float pi = 0.0f, dsi = 0.0f;
        if (lane < queries && (full || (j >= i_begin && j < i_end))) {
          float s = 0.0f, dp = 0.0f;
          for (int c = 0; c < d; ++c) {
            s += qs[lane * ds + c] * kts[r * d + c];
            dp += dos[lane * ds + c] * vts[r * d + c];
          }
          pi = exp2f(s * alpha - lse2s[lane]);
          dsi = pi * (dp - dlts[lane]);
        }
        for (int ii = 0; ii < queries; ++ii) {
          const float x = __shfl_sync(kFullMask, dsi, ii);
          const float y = __shfl_sync(kFullMask, pi, ii);
#pragma unroll
          for (int t = 0; t < kCols; ++t) {
            const int c = lane + 32 * t;
            if (c < d) {
              dk[rr][t] += x * qs[ii * ds + c];
              dv[rr][t] += y * dos[ii * ds + c];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t j = j0 + warp * kRowsPerWarp + rr;
    if (j >= blk.n_k) continue;
#pragma unroll
    for (int t = 0; t < kCols; ++t) {
      const int c = lane + 32 * t;
      if (c < d) {
        blk.dk[j * blk.dkv_stride + c] += p.scale * dk[rr][t];
        blk.dv[j * blk.dkv_stride + c] += dv[rr][t];
      }
    }
  }
}

// delta[b, h, i] = out[b, i, h, :] . dout[b, i, h, :]: warp w of the grid-stride loop takes row
// (b, i, h); lanes split the head_dim columns and reduce by shuffles.
template <class T>
__global__ void delta_kernel(DeltaParams p) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  const int64_t rows = p.batch * p.rows * p.heads;
  const T* out = static_cast<const T*>(p.out);
  const T* dout = static_cast<const T*>(p.dout);
  for (int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < rows; w += warps) {
    float sum = 0.0f;
    for (int64_t c = lane; c < p.head_dim; c += 32) {
      sum += to_float(out[w * p.head_dim + c]) * to_float(dout[w * p.head_dim + c]);
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      const int64_t h = w % p.heads, i = (w / p.heads) % p.rows, bb = w / (p.heads * p.rows);
      p.delta[(bb * p.heads + h) * p.rows + i] = sum;
    }
  }
}

}  // namespace

void launch_attend_backward(const GradLaunch& p, cudaStream_t stream) {
  if (p.n_blocks == 0) return;
  DRING_CHECK(p.head_dim >= 1 && p.head_dim <= kMaxHeadDim, Status::kUnsupported,
              "the cuda kernels take head_dim 1.." << kMaxHeadDim << " (got " << p.head_dim << ")");
  const int64_t smem = grad_smem_bytes(p.head_dim);
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto dq_kernel = grad_q_kernel<T>;
    auto kv_kernel = grad_kv_kernel<T>;
    if (smem > 48 * 1024) {
      DRING_CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      DRING_CUDA_CHECK(cudaFuncSetAttribute(kv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    if (p.dq_tiles > 0) {
      dq_kernel<<<grid_of(p.dq_tiles), kWarps * 32, static_cast<size_t>(smem), stream>>>(p);
      DRING_CUDA_CHECK_LAUNCH("grad_q_kernel");
    }
    if (p.dkv_tiles > 0) {
      kv_kernel<<<grid_of(p.dkv_tiles), kWarps * 32, static_cast<size_t>(smem), stream>>>(p);
      DRING_CUDA_CHECK_LAUNCH("grad_kv_kernel");
    }
  });
}

void launch_delta(const DeltaParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch * p.rows * p.heads;
  if (rows == 0) return;
  constexpr int kThreads = 256;
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    delta_kernel<T><<<stride_grid(rows * 32, kThreads), kThreads, 0, stream>>>(p);
    DRING_CUDA_CHECK_LAUNCH("delta_kernel");
  });
}

}  // namespace dring::kernels::cuda
