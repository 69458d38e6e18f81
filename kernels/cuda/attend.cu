// attend.cu — the generic forward kernel of the attend family (any dtype, head_dim <= 256), the
// choice between it and the tensor-core kernel (attend_mma.cu), and launch_attend.
//
// The generic kernel is the correctness baseline of the GPU path: plain fp32 arithmetic on CUDA
// cores, written to be read. Thread mapping: a CTA of 4 warps takes a tile of 16 query rows of one
// block (4 rows per warp). Per key tile of 32 rows, staged in shared memory as fp32 (K with an odd
// row stride, so that lane j reading key j's row hits 32 different banks):
//   * scores: lane j computes s_j = alpha * q_i . k_j for its warp's row i (q broadcast from smem),
//   * the warp reduces max and sum of the online softmax with shuffles,
//   * output: lane l owns columns l, l+32, ... of the row (up to 8 fp32 registers) and adds
//     p_j * v_j[c] for the 32 keys, p_j broadcast by shuffle.
// The rows' (out, lse) is unpacked into (acc = out, m = lse, l = 1) at the start and packed back
// at the end: the log-sum-exp merge of the block into the rows (dring/kernels/attend.hpp).
// Masks: each row sees one interval of keys (BlockMask::key_begin/key_end), both ends
// non-decreasing in the row, so a CTA walks only the keys between its first row's first key and
// its last row's last key, skips key tiles the mask leaves empty, and masks per row only when a
// tile is not full. A row that sees no key of the block is not written back: its (out, lse) stays
// exactly as it was.

#include "common.cuh"
#include "dring/kernels/cuda.hpp"
#include "internal.cuh"

namespace dring::kernels::cuda {

namespace {

constexpr int kSimpleWarps = 4;
constexpr int kSimpleRowsPerWarp = 4;
constexpr int kSimpleRows = kSimpleWarps * kSimpleRowsPerWarp;  // query rows per CTA
constexpr int kSimpleKeys = 32;                                  // key rows per shared-memory tile
constexpr int kSimpleCols = kMaxHeadDim / 32;                    // output columns per lane

// Row stride (floats) of a shared-memory tile read lane-per-row: odd, so 32 rows hit 32 banks.
__host__ __device__ inline int odd_stride(int d) { return d | 1; }

int64_t simple_smem_bytes(int64_t d) {
  return static_cast<int64_t>(sizeof(float)) * (kSimpleRows * d + kSimpleKeys * odd_stride(static_cast<int>(d)) +
                                                kSimpleKeys * d);
}

template <class T>
__global__ void __launch_bounds__(kSimpleWarps * 32) attend_simple_kernel(AttendLaunch p) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(p.head_dim);
  const int ks_stride = odd_stride(d);
  float* qs = smem;                        // [16][d], pre-scaled by alpha
  float* ks = qs + kSimpleRows * d;        // [32][ks_stride]
  float* vs = ks + kSimpleKeys * ks_stride;  // [32][d]
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const float neg_inf = kNegInf;
  const float alpha = p.scale * kLog2e;

  const int64_t tile = blockIdx.x;
  const int64_t b = cta_find_item(p.tile_prefix, p.n_blocks, tile);
  const AttendBlock blk = p.blocks[b];
  const int64_t i0 = (tile - p.tile_prefix[b]) * kSimpleRows;
  const T* q = static_cast<const T*>(blk.q);
  const T* k = static_cast<const T*>(blk.k);
  const T* v = static_cast<const T*>(blk.v);
  T* out = static_cast<T*>(blk.out);

  for (int e = static_cast<int>(threadIdx.x); e < kSimpleRows * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const int64_t i = i0 + r;
    qs[e] = i < blk.n_q ? to_float(q[i * blk.q_stride + c]) * alpha : 0.0f;
  }

  // Online-softmax state of the warp's rows, in log2 units: (m, l, acc) with acc = out, l = 1; and
  // each row's visible keys [row_begin, row_end) (empty for rows past the block).
  float m[kSimpleRowsPerWarp], l[kSimpleRowsPerWarp], acc[kSimpleRowsPerWarp][kSimpleCols];
  int64_t row_begin[kSimpleRowsPerWarp], row_end[kSimpleRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kSimpleRowsPerWarp; ++rr) {
    const int64_t i = i0 + warp * kSimpleRowsPerWarp + rr;
    const bool valid = i < blk.n_q;
    const float lse = valid ? blk.lse[i * blk.lse_stride] : neg_inf;
    m[rr] = lse == neg_inf ? neg_inf : lse * kLog2e;
    l[rr] = lse == neg_inf ? 0.0f : 1.0f;
    row_begin[rr] = valid ? blk.mask.key_begin(i, blk.n_k) : 0;
    row_end[rr] = valid ? blk.mask.key_end(i, blk.n_k) : 0;
#pragma unroll
    for (int t = 0; t < kSimpleCols; ++t) {
      const int c = lane + 32 * t;
      acc[rr][t] = valid && c < d ? to_float(out[i * blk.out_stride + c]) : 0.0f;
    }
  }

  // Every row of the tile sees keys in [its first row's first key, its last row's last key).
  const int64_t rows_end = blk.n_q < i0 + kSimpleRows ? blk.n_q : i0 + kSimpleRows;
  const int64_t key_begin = blk.mask.key_begin(i0, blk.n_k);
  const int64_t key_end = blk.mask.key_end(rows_end - 1, blk.n_k);
  for (int64_t j0 = key_begin; j0 < key_end; j0 += kSimpleKeys) {
    const int keys = static_cast<int>(key_end - j0 < kSimpleKeys ? key_end - j0 : kSimpleKeys);
    // The same answer in every thread of the CTA, so skipping here keeps the barriers uniform.
    if (blk.mask.empty(i0, rows_end, j0, j0 + keys)) continue;
    const bool full = blk.mask.full(i0, rows_end, j0, j0 + keys);
    __syncthreads();  // the previous key tile is consumed (and, the first time, q is staged)
    for (int e = static_cast<int>(threadIdx.x); e < kSimpleKeys * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const int64_t j = j0 + r;
      const bool valid = r < keys;
      ks[r * ks_stride + c] = valid ? to_float(k[j * blk.kv_stride + c]) : 0.0f;
      vs[r * d + c] = valid ? to_float(v[j * blk.kv_stride + c]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kSimpleRowsPerWarp; ++rr) {
      const int r = warp * kSimpleRowsPerWarp + rr;
      const int64_t i = i0 + r;
      if (i >= blk.n_q) continue;  // the same for the whole warp
      const int64_t j = j0 + lane;
      float s = neg_inf;
      if (lane < keys && (full || (j >= row_begin[rr] && j < row_end[rr]))) {
        s = 0.0f;
        for (int c = 0; c < d; ++c) s += qs[r * d + c] * ks[lane * ks_stride + c];
      }
      const float m_new = fmaxf(m[rr], warp_max(s));
      if (m_new == neg_inf) continue;  // nothing visible to this row yet (warp-uniform)
      const float pj = exp2f(s - m_new);  // 0 for a masked key (s = -inf, m_new finite)
      const float correction = exp2f(m[rr] - m_new);
      l[rr] = l[rr] * correction + warp_sum(pj);
      m[rr] = m_new;
#pragma unroll
      for (int t = 0; t < kSimpleCols; ++t) acc[rr][t] *= correction;
      for (int jj = 0; jj < keys; ++jj) {
        const float pjj = __shfl_sync(kFullMask, pj, jj);
#pragma unroll
        for (int t = 0; t < kSimpleCols; ++t) {
          const int c = lane + 32 * t;
          if (c < d) acc[rr][t] += pjj * vs[jj * d + c];
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kSimpleRowsPerWarp; ++rr) {
    const int64_t i = i0 + warp * kSimpleRowsPerWarp + rr;
    // Rows past the block, rows that see no key and rows nothing has reached keep their state.
    if (i >= blk.n_q || row_begin[rr] >= row_end[rr] || l[rr] == 0.0f) continue;
    const float inv = 1.0f / l[rr];
#pragma unroll
    for (int t = 0; t < kSimpleCols; ++t) {
      const int c = lane + 32 * t;
      if (c < d) out[i * blk.out_stride + c] = from_float<T>(acc[rr][t] * inv);
    }
    if (lane == 0) blk.lse[i * blk.lse_stride] = (m[rr] + log2f(l[rr])) * kLn2;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

const char* path_name(AttendPath path) {
  switch (path) {
    case AttendPath::kSimple: return "simple";
    case AttendPath::kMma: return "mma";
  }
  return "?";
}

AttendPath choose_attend_path(std::span<const AttendBlock> blocks, DType dtype, int64_t head_dim, bool allow_mma) {
  if (!allow_mma || dtype == DType::kF32 || (head_dim != 64 && head_dim != 128)) return AttendPath::kSimple;
  // The tensor-core kernel moves rows in 16-byte pieces: every row must start 16-byte aligned.
  for (const AttendBlock& b : blocks) {
    if (!aligned16(b.q) || !aligned16(b.k) || !aligned16(b.v) || !aligned16(b.out) || b.q_stride % 8 != 0 ||
        b.kv_stride % 8 != 0 || b.out_stride % 8 != 0) {
      return AttendPath::kSimple;
    }
  }
  return AttendPath::kMma;
}

int64_t attend_tile_rows(AttendPath path) { return path == AttendPath::kMma ? kMmaRows : kSimpleRows; }

void launch_attend(const AttendLaunch& p, cudaStream_t stream) {
  if (p.n_tiles == 0) return;
  DRING_CHECK(p.head_dim >= 1 && p.head_dim <= kMaxHeadDim, Status::kUnsupported,
              "the cuda kernels take head_dim 1.." << kMaxHeadDim << " (got " << p.head_dim << ")");
  if (p.path == AttendPath::kMma) {
    launch_attend_mma(p, stream);
    return;
  }
  const int64_t smem = simple_smem_bytes(p.head_dim);
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto kernel = attend_simple_kernel<T>;
    if (smem > 48 * 1024) {
      DRING_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<grid_of(p.n_tiles), kSimpleWarps * 32, static_cast<size_t>(smem), stream>>>(p);
    DRING_CUDA_CHECK_LAUNCH("attend_simple_kernel");
  });
}

}  // namespace dring::kernels::cuda
