// attend_mma.cu — the tensor-core forward kernel: fp16/bf16 storage, fp32 accumulation,
// head_dim 64 or 128, FlashAttention-2 style (mma.sync m16n8k16, sm_80 and later).
//
// Thread mapping: a CTA of 4 warps takes a tile of 64 query rows of one block; warp w owns rows
// 16w..16w+15, and in the mma fragment layout lane (g = lane/4, t = lane%4) holds rows g and g+8 of
// those 16. Q is staged once in shared memory and kept in registers as A fragments. K/V tiles of
// 64 rows stream through a two-stage shared-memory pipeline (cp.async, 16-byte pieces read straight
// from the strided rows of the block, no gathered copy). Per key tile a warp computes its 16x64
// scores S = Q K^T in registers (fp32), masks and rescales them, runs the online softmax on them
// (row max and sum across the 4 lanes of a quad by shuffles), converts P to fp16/bf16 in registers
// (the C-fragment layout of S is the A-fragment layout of P) and accumulates O += P V with V read
// by ldmatrix.trans. Shared-memory rows are 16-byte-chunk XOR swizzled (chunk ^ row%8) so that
// ldmatrix reads are bank-conflict free. Scores never leave registers. The rows' (out, lse) is
// merged exactly as in the generic kernel (attend.cu), and the mask is taken the same way: the key
// tiles span only [first row's first key, last row's last key), a tile the mask leaves empty is
// loaded but not computed (the pipeline stays simple), a full one (classify_tile, tiles.hpp) is
// only scaled, an edge one is masked per element, and a row that sees no key of the block keeps
// its (out, lse) exactly.

#include "common.cuh"
#include "internal.cuh"

namespace dring::kernels::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRows = static_cast<int>(kMmaRows);  // query rows per CTA (16 per warp)
constexpr int kKeys = 64;                           // key rows per tile
static_assert(kRows == 16 * kWarps, "one 16-row mma tile per warp");

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][D] tile.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// c += a * b for one m16n8k16 tile, fp32 accumulators.
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                                        unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one 32-bit register of two 16-bit values, `lo` in the low half.
template <class T>
__device__ __forceinline__ unsigned pack2(float lo, float hi);
template <>
__device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&h);
}
template <>
__device__ __forceinline__ unsigned pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&h);
}

// Rows [row0, row0+64) of a strided row matrix with n rows into a swizzled [64][D] tile (cp.async;
// rows past n are zero-filled).
template <class T, int D>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t stride, int64_t row0, int64_t n) {
  constexpr int kChunks = D / 8;
  for (int e = static_cast<int>(threadIdx.x); e < 64 * kChunks; e += kWarps * 32) {
    const int r = e / kChunks, cc = e % kChunks;
    const int64_t row = row0 + r;
    const bool valid = row < n;
    cp_async16(tile + swz<D>(r, cc), valid ? base + row * stride + cc * 8 : base, valid);
  }
}

// One staged key tile (kt, vt: keys [j0, j0 + 64) of the block, valid below tile_end) against the
// warp's 16 rows: S = Q K^T in registers, masked unless `full` (TileKind::kFull: every pair
// visible, no key past tile_end), the online-softmax update of (m, l, o), then O += P V.
template <class T, int D>
__device__ __forceinline__ void attend_mma_tile(const T* kt, const T* vt, const unsigned (&qf)[D / 16][4], int64_t j0,
                                                int64_t tile_end, bool full, const int64_t (&row_begin)[2],
                                                const int64_t (&row_end)[2], float alpha, float (&m)[2], float (&l)[2],
                                                float (&o)[D / 8][4]) {
  const int lane = static_cast<int>(threadIdx.x) % 32, tig = lane & 3;
  const float neg_inf = kNegInf;
  // S = Q K^T: 8 n-tiles of 8 keys, fragment element e at row g + 8*(e/2), key 8*nt + 2*tig + e%2.
  float s[kKeys / 8][4];
#pragma unroll
  for (int nt = 0; nt < kKeys / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int nn = 0; nn < kKeys / 16; ++nn) {
      unsigned r[4];
      ldmatrix_x4(r, kt + swz<D>(nn * 16 + (lane & 7) + (lane >> 4) * 8, kk * 2 + ((lane >> 3) & 1)));
      mma16816<T>(s[2 * nn], qf[kk], r[0], r[1]);
      mma16816<T>(s[2 * nn + 1], qf[kk], r[2], r[3]);
    }
  }

  // Scale into log2 units; on an edge tile (not full: the band's diagonal, or the block's last keys)
  // mask the keys past the tile's end and outside each row's keys. `full` is the same in the whole
  // CTA, so the branch does not diverge.
  if (full) {
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] *= alpha;
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = j0 + nt * 8 + tig * 2 + (e & 1);
        const bool visible = j < tile_end && j >= row_begin[e >> 1] && j < row_end[e >> 1];
        s[nt][e] = visible ? s[nt][e] * alpha : neg_inf;
      }
    }
  }

  // Online softmax of the two rows; s becomes P.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = neg_inf;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    const float m_new = fmaxf(m[h], mx);
    const float m_use = m_new == neg_inf ? 0.0f : m_new;  // all masked so far: every p is 0
    const float correction = exp2f(m[h] - m_use);
    m[h] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 2 * h; e < 2 * h + 2; ++e) {
        s[nt][e] = exp2f(s[nt][e] - m_use);
        sum += s[nt][e];
      }
    }
    l[h] = l[h] * correction + sum;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      o[t][2 * h] *= correction;
      o[t][2 * h + 1] *= correction;
    }
  }

  // O += P V: P's A fragments straight from the S accumulators of two adjacent n-tiles.
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    const unsigned a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                           pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                           pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
    for (int dd = 0; dd < D / 16; ++dd) {
      unsigned r[4];
      ldmatrix_x4_trans(r, vt + swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dd * 2 + (lane >> 4)));
      mma16816<T>(o[2 * dd], a, r[0], r[1]);
      mma16816<T>(o[2 * dd + 1], a, r[2], r[3]);
    }
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kWarps * 32) attend_mma_kernel(AttendLaunch p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the host never picks this path below sm_80
#else
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // [64][D]
  T* ks = qs + kRows * D;                  // [2][64][D]
  T* vs = ks + 2 * kKeys * D;              // [2][64][D]
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane >> 2, tig = lane & 3;
  const float neg_inf = kNegInf;
  const float alpha = p.scale * kLog2e;

  const int64_t tile = blockIdx.x;
  const int64_t b = cta_find_item(p.tile_prefix, p.n_blocks, tile);
  const AttendBlock blk = p.blocks[b];
  const int64_t i0 = (tile - p.tile_prefix[b]) * kRows;
  const T* q = static_cast<const T*>(blk.q);
  const T* k = static_cast<const T*>(blk.k);
  const T* v = static_cast<const T*>(blk.v);
  T* out = static_cast<T*>(blk.out);
  // Every row of the tile sees keys in [its first row's first key, its last row's last key).
  const int64_t rows_end = blk.n_q < i0 + kRows ? blk.n_q : i0 + kRows;
  const int64_t key_begin = blk.mask.key_begin(i0, blk.n_k);
  const int64_t key_end = blk.mask.key_end(rows_end - 1, blk.n_k);
  const int64_t n_tiles = key_begin < key_end ? (key_end - key_begin + kKeys - 1) / kKeys : 0;

  load_tile<T, D>(qs, q, blk.q_stride, i0, blk.n_q);
  cp_async_commit();
  if (n_tiles > 0) {
    load_tile<T, D>(ks, k, blk.kv_stride, key_begin, key_end);
    load_tile<T, D>(vs, v, blk.kv_stride, key_begin, key_end);
  }
  cp_async_commit();

  // This lane's two rows (h = 0: row g, h = 1: row g + 8 of the warp's 16), their visible keys
  // [row_begin, row_end) and their state in log2 units. l is this lane's partial sum (the quad's
  // four lanes add up at the end), so the prior state's l = 1 is counted by lane t = 0 only.
  int64_t row_i[2], row_begin[2], row_end[2];
  float m[2], l[2];
  float o[D / 8][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_i[h] = i0 + warp * 16 + g + 8 * h;
    const bool valid = row_i[h] < blk.n_q;
    row_begin[h] = valid ? blk.mask.key_begin(row_i[h], blk.n_k) : 0;
    row_end[h] = valid ? blk.mask.key_end(row_i[h], blk.n_k) : 0;
    const float lse = valid ? blk.lse[row_i[h] * blk.lse_stride] : neg_inf;
    m[h] = lse == neg_inf ? neg_inf : lse * kLog2e;
    l[h] = lse != neg_inf && tig == 0 ? 1.0f : 0.0f;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        o[t][2 * h + e] = valid ? to_float(out[row_i[h] * blk.out_stride + t * 8 + tig * 2 + e]) : 0.0f;
      }
    }
  }

  unsigned qf[D / 16][4];
  for (int64_t jt = 0; jt < n_tiles; ++jt) {
    const int stage = static_cast<int>(jt & 1);
    if (jt + 1 < n_tiles) {  // prefetch the next tile into the other stage
      load_tile<T, D>(ks + (stage ^ 1) * kKeys * D, k, blk.kv_stride, key_begin + (jt + 1) * kKeys, key_end);
      load_tile<T, D>(vs + (stage ^ 1) * kKeys * D, v, blk.kv_stride, key_begin + (jt + 1) * kKeys, key_end);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (jt == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        ldmatrix_x4(qf[kk], qs + swz<D>(warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, kk * 2 + (lane >> 4)));
      }
    }
    // Keys [j0, j0 + kKeys) of the block; the same answer in every thread of the CTA.
    const int64_t j0 = key_begin + jt * kKeys;
    const int64_t tile_end = key_end < j0 + kKeys ? key_end : j0 + kKeys;
    const TileKind kind = classify_tile(blk.mask, i0, rows_end, j0, tile_end, kKeys);
    if (kind != TileKind::kEmpty) {
      attend_mma_tile<T, D>(ks + stage * kKeys * D, vs + stage * kKeys * D, qf, j0, tile_end,
                            kind == TileKind::kFull, row_begin, row_end, alpha, m, l, o);
    }
    __syncthreads();  // this stage is consumed before the next prefetch overwrites it
  }
  cp_async_wait<0>();

  float total[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    total[h] = l[h] + __shfl_xor_sync(kFullMask, l[h], 1);
    total[h] += __shfl_xor_sync(kFullMask, total[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t i = row_i[h];
    // Rows past the block, rows that see no key and rows nothing has reached keep their state.
    if (n_tiles == 0 || i >= blk.n_q || row_begin[h] >= row_end[h] || total[h] == 0.0f) continue;
    const float inv = 1.0f / total[h];
    T* row = out + i * blk.out_stride;
#pragma unroll
    for (int t = 0; t < D / 8; ++t) {
      *reinterpret_cast<unsigned*>(row + t * 8 + tig * 2) = pack2<T>(o[t][2 * h] * inv, o[t][2 * h + 1] * inv);
    }
    if (tig == 0) blk.lse[i * blk.lse_stride] = (m[h] + log2f(total[h])) * kLn2;
  }
#endif
}

template <class T, int D>
void launch_mma(const AttendLaunch& p, cudaStream_t stream) {
  const int smem = (kRows + 4 * kKeys) * D * static_cast<int>(sizeof(T));
  auto kernel = attend_mma_kernel<T, D>;
  if (smem > 48 * 1024) {
    DRING_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  kernel<<<grid_of(p.n_tiles), kWarps * 32, static_cast<size_t>(smem), stream>>>(p);
  DRING_CUDA_CHECK_LAUNCH("attend_mma_kernel");
}

}  // namespace

void launch_attend_mma(const AttendLaunch& p, cudaStream_t stream) {
  const bool bf16 = p.dtype == DType::kBF16;
  DRING_ASSERT((bf16 || p.dtype == DType::kF16) && (p.head_dim == 64 || p.head_dim == 128));
  if (bf16) {
    p.head_dim == 64 ? launch_mma<__nv_bfloat16, 64>(p, stream) : launch_mma<__nv_bfloat16, 128>(p, stream);
  } else {
    p.head_dim == 64 ? launch_mma<__half, 64>(p, stream) : launch_mma<__half, 128>(p, stream);
  }
}

}  // namespace dring::kernels::cuda
