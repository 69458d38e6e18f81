// amx_common.hpp — the pieces the AMX tiles share (attend_amx.cpp's forward, attend_amx_backward.cpp's
// backward): the target attributes, the tile configuration, lane masks, a 16 x 16 transpose in
// registers, exp2 by polynomial, the split of fp32 values into bf16 parts, the part products of a
// tile step, and the packing of rows into the tiles' operand layouts. It defines DRING_AMX: 1 where
// these exist (x86-64, GCC or Clang, Linux), else 0 and nothing else. Nothing here may run before
// amx_bf16_usable() said yes. Every function is a template or inline: two files include it.
//
// Operand layouts (AMX's TDPBF16PS: C[16][16] += A[16][32] B[32][16], A rows of 32 bf16, B as 16
// rows of 16 pairs of bf16 along the sum's index), each in Parts planes (part a of every element
// in plane a):
//   pack_rows       dst[i][e]          rows as they are: A operands summing over head_dim
//   pack_columns    dst[e][i]          rows transposed: A operands summing over rows
//   pack_pairs_d    dst32[e/2][i]      B operands summing over head_dim (X Y^T)
//   pack_pairs_rows dst32[i/2][e]      B operands summing over rows (X Y)
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define DRING_AMX 1
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

// GCC 12's AVX-512 intrinsics fill unused lanes from _mm512_undefined_ps, a self-initialised
// variable its own -Wuninitialized then reports (GCC bug 105593): silenced for these kernels only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace dring::kernels::cpu::amx {
#define DRING_AMX_FN \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,amx-tile,amx-bf16")))
#define DRING_AMX_INLINE DRING_AMX_FN __attribute__((always_inline)) inline

// Eight tiles of 16 rows x 64 bytes: results 0-3, A operands 4-5, B operands 6-7.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
constexpr TileConfig kTileConfig{};

// The first n of 16 (mask16) or 32 (mask32) lanes.
inline __mmask16 mask16(int64_t n) {
  return n <= 0 ? 0 : n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
}
inline __mmask32 mask32(int64_t n) {
  return n <= 0 ? 0 : n >= 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1);
}
// Lanes k .. k+15 that lie in [lo, hi).
inline __mmask16 lanes_in(int64_t lo, int64_t hi, int64_t k) {
  return static_cast<__mmask16>(mask16(hi - k) & ~mask16(lo - k));
}

// Stops the compiler from moving the stores of packed operands past a tile load, or the loads of
// results above the tile stores that wrote them: GCC's tile loads and stores are asm statements
// that do not say they touch memory.
inline void operands_written() { __asm__ volatile("" ::: "memory"); }

// 16 x 16 32-bit elements, transposed in registers.
DRING_AMX_INLINE void transpose16(__m512i (&r)[16]) {
  __m512i t[16];
#pragma GCC unroll 16
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  // u[4k + q], 128-bit lane L: column 4L + q of rows 4k .. 4k+3.
  __m512i u[16];
#pragma GCC unroll 16
  for (int k = 0; k < 4; ++k) {
    u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
#pragma GCC unroll 16
  for (int q = 0; q < 4; ++q) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x88);  // lanes 0, 2 of each
    const __m512i v1 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xdd);  // lanes 1, 3
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x88);
    const __m512i w1 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xdd);
    r[q] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[4 + q] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[8 + q] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
    r[12 + q] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
  }
}

// 2^t for t <= 0 (0 at and below -151; lanes the caller masks may hold anything): 2^f by the
// polynomial c (highest degree first) on [-0.5, 0.5], scaled by 2^rint(t).
template <std::size_t N>
DRING_AMX_INLINE __m512 exp2_by(__m512 t, const float (&c)[N]) {
  t = _mm512_max_ps(t, _mm512_set1_ps(-151.0f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(c[0]);
#pragma GCC unroll 8
  for (std::size_t i = 1; i < N; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
  return _mm512_scalef_ps(p, n);
}

// Degree 4 (relative error 2.6e-6): P, which is rounded to bf16 anyway.
constexpr float kExp2Degree4[] = {9.569715630e-3f, 5.591696922e-2f, 2.402474576e-1f, 6.931219351e-1f,
                                  9.999992645e-1f};
// Degree 6 (relative error about 2e-9, vector_math.cpp's): the rows' correction c, which scales l
// and so moves lse by its error.
constexpr float kExp2Degree6[] = {1.546973199e-4f, 1.340043217e-3f, 9.618025603e-3f, 5.550327214e-2f,
                                  2.402265121e-1f, 6.931472067e-1f, 1.0f};
// P's exponentials: degree 4 where P is rounded to bf16 anyway, degree 6 where its parts carry
// fp32's precision.
template <int Parts>
DRING_AMX_INLINE __m512 exp2_nonpositive(__m512 t) {
  if constexpr (Parts == 1) return exp2_by(t, kExp2Degree4);
  return exp2_by(t, kExp2Degree6);
}

// The fp32 value of 16 bf16 numbers.
DRING_AMX_INLINE __m512 widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// x0 (lanes 0-15) and x1 (lanes 16-31) as Parts vectors of 32 bf16 (cvtne2ps_pbh order) whose sum
// is x: part a is x less the parts before it, rounded to bf16. Each subtraction is exact (the
// part is x's leading bits rounded), so three parts hold all 24 bits of an fp32 significand.
template <int Parts>
DRING_AMX_INLINE void split(__m512 x0, __m512 x1, __m512i (&out)[Parts]) {
#pragma GCC unroll 3
  for (int a = 0; a < Parts; ++a) {
    out[a] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0));
    if (a + 1 < Parts) {
      x0 = _mm512_sub_ps(x0, widen(_mm512_castsi512_si256(out[a])));
      x1 = _mm512_sub_ps(x1, widen(_mm512_extracti64x4_epi64(out[a], 1)));
    }
  }
}

// Elements [e, e + 32) of a row (the first n of them; zeros past n, and all zeros for a null
// row) as Parts vectors of 32 bf16: bf16 rows as they are, fp32 rows split.
template <int Parts>
DRING_AMX_INLINE void load_parts(const void* row, int64_t e, int64_t n, __m512i (&out)[Parts]) {
  if (row == nullptr) {
#pragma GCC unroll 3
    for (int a = 0; a < Parts; ++a) out[a] = _mm512_setzero_si512();
  } else if constexpr (Parts == 1) {
    out[0] = _mm512_maskz_loadu_epi16(mask32(n), static_cast<const uint16_t*>(row) + e);
  } else {
    const float* x = static_cast<const float*>(row) + e;
    split(_mm512_maskz_loadu_ps(mask16(n), x), _mm512_maskz_loadu_ps(mask16(n - 16), x + 16), out);
  }
}

// Row r of a [S, *] tensor of bf16 (Parts == 1) or fp32 elements, stride in elements.
template <int Parts>
inline const void* row_at(const void* base, int64_t r, int64_t stride) {
  if constexpr (Parts == 1) return static_cast<const uint16_t*>(base) + r * stride;
  return static_cast<const float*>(base) + r * stride;
}

// The part products of a tile step: A operand part a (its first 16 rows at a_top into tile 4,
// the next 16 at a_bottom into tile 5) against B operand parts 0 .. Parts-1-a (tiles 6, 7: the
// first 16 and next 16 columns of part b at b_part + b * b_plane) into result tiles 0-3. Parts ==
// 3 gives the six products of weight >= 2^-24 (attend_amx.hpp). Tile 5 is loaded after the
// first two products are issued (the bf16 tile measured 4% slower on [S, 4, 64] rows with it
// loaded up front).
template <int RT, int Parts>
DRING_AMX_INLINE void part_products(const uint16_t* a_top, const uint16_t* a_bottom, long a_bytes,
                                    const uint32_t* b_part, int64_t b_plane, long b_bytes, int a) {
  _tile_loadd(4, a_top, a_bytes);
#pragma GCC unroll 3
  for (int b = 0; b < Parts - a; ++b) {
    const uint32_t* bt = b_part + b * b_plane;
    _tile_loadd(6, bt, b_bytes);
    _tile_loadd(7, bt + 16, b_bytes);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if constexpr (RT == 2) {
      if (b == 0) _tile_loadd(5, a_bottom, a_bytes);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}


// Rows [0, n) of src (stride in elements) into Parts planes of [n_pad][dp] bf16 (dst[i][e]; zeros
// past n and past d).
template <int Parts>
DRING_AMX_FN void pack_rows(const void* src, int64_t stride, int64_t n, int64_t n_pad, int64_t d, int64_t dp,
                            uint16_t* dst, int64_t plane) {
  for (int64_t i = 0; i < n_pad; ++i) {
    for (int64_t e = 0; e < dp; e += 32) {
      __m512i x[Parts];
      load_parts<Parts>(i < n ? row_at<Parts>(src, i, stride) : nullptr, e, d - e, x);
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) _mm512_storeu_si512(dst + a * plane + i * dp + e, x[a]);
    }
  }
}

// Rows jb .. jb + 15 of src (zeros past n), elements [e, e + 32) (zeros past d), as Parts planes
// of 16 x 16 32-bit pairs, transposed: r[a][x] holds the pairs (e + 2x, e + 2x + 1) of the 16 rows.
template <int Parts>
DRING_AMX_INLINE void load_pairs_transposed(const void* src, int64_t stride, int64_t n, int64_t jb, int64_t e,
                                            int64_t d, __m512i (&r)[Parts][16]) {
#pragma GCC unroll 16
  for (int x = 0; x < 16; ++x) {
    const int64_t j = jb + x;
    __m512i parts[Parts];
    load_parts<Parts>(j < n ? row_at<Parts>(src, j, stride) : nullptr, e, d - e, parts);
#pragma GCC unroll 3
    for (int a = 0; a < Parts; ++a) r[a][x] = parts[a];
  }
#pragma GCC unroll 3
  for (int a = 0; a < Parts; ++a) transpose16(r[a]);
}

// Rows [0, n) of src as 32-bit pairs along head_dim, transposed: dst32[e/2][i] (ld pairs a row of
// the result) for i < n_pad (a multiple of 16), zeros past n and past d.
template <int Parts>
DRING_AMX_FN void pack_pairs_d(const void* src, int64_t stride, int64_t n, int64_t n_pad, int64_t d, int64_t dp,
                               uint32_t* dst, int64_t ld, int64_t plane) {
  for (int64_t jb = 0; jb < n_pad; jb += 16) {
    for (int64_t e = 0; e < dp; e += 32) {
      __m512i r[Parts][16];
      load_pairs_transposed<Parts>(src, stride, n, jb, e, d, r);
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) {
#pragma GCC unroll 16
        for (int x = 0; x < 16; ++x) _mm512_storeu_si512(dst + a * plane + (e / 2 + x) * ld + jb, r[a][x]);
      }
    }
  }
}

// Rows [0, n) of src as 32-bit pairs of consecutive rows: dst32[i/2][c] (dp pairs a row of the
// result) for i < n_pad (even), zeros past n and past d.
template <int Parts>
DRING_AMX_FN void pack_pairs_rows(const void* src, int64_t stride, int64_t n, int64_t n_pad, int64_t d, int64_t dp,
                                  uint32_t* dst, int64_t plane) {
  alignas(64) static constexpr uint16_t kLow[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t kHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                     24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i low = _mm512_load_si512(kLow), high = _mm512_load_si512(kHigh);
  for (int64_t j = 0; j < n_pad; j += 2) {
    for (int64_t c = 0; c < dp; c += 32) {
      __m512i a[Parts], b[Parts];
      load_parts<Parts>(j < n ? row_at<Parts>(src, j, stride) : nullptr, c, d - c, a);
      load_parts<Parts>(j + 1 < n ? row_at<Parts>(src, j + 1, stride) : nullptr, c, d - c, b);
#pragma GCC unroll 3
      for (int x = 0; x < Parts; ++x) {
        uint32_t* to = dst + x * plane + (j / 2) * dp + c;
        _mm512_storeu_si512(to, _mm512_permutex2var_epi16(a[x], low, b[x]));
        _mm512_storeu_si512(to + 16, _mm512_permutex2var_epi16(a[x], high, b[x]));
      }
    }
  }
}

// Rows [0, n) of src transposed: dst[e][i] (ld elements a row of the result) for e < dp and
// i < n_pad (a multiple of 16), zeros past n and past d. A 16 x 16 transpose of 32-bit pairs,
// then each pair's halves apart.
template <int Parts>
DRING_AMX_FN void pack_columns(const void* src, int64_t stride, int64_t n, int64_t n_pad, int64_t d, int64_t dp,
                               uint16_t* dst, int64_t ld, int64_t plane) {
  alignas(64) static constexpr uint16_t kApart[32] = {0, 2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                                                      1, 3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  const __m512i apart = _mm512_load_si512(kApart);
  for (int64_t jb = 0; jb < n_pad; jb += 16) {
    for (int64_t e = 0; e < dp; e += 32) {
      __m512i r[Parts][16];
      load_pairs_transposed<Parts>(src, stride, n, jb, e, d, r);
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) {
#pragma GCC unroll 16
        for (int x = 0; x < 16; ++x) {
          const __m512i y = _mm512_permutexvar_epi16(apart, r[a][x]);
          uint16_t* to = dst + a * plane + (e + 2 * x) * ld + jb;
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), _mm512_castsi512_si256(y));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + ld), _mm512_extracti64x4_epi64(y, 1));
        }
      }
    }
  }
}

}  // namespace dring::kernels::cpu::amx

#pragma GCC diagnostic pop

#else
#define DRING_AMX 0
#endif
