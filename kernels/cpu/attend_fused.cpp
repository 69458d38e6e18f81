// attend_fused.cpp — the fused fp32 tiles' AVX-512 and AVX2 instances (forward tile, whole small
// block, backward tile) and the run-time choice between them (attend_fused.hpp).
//
// Each instance is fused_tile_body.hpp, fused_small_body.hpp and fused_backward_body.hpp compiled
// for its ISA (DRING_TARGET_BEGIN) in a namespace of its own, over a handful of primitives written
// with that ISA's intrinsics. The rest of the program
// is compiled for baseline x86-64, and an instance runs only where __builtin_cpu_supports (which
// also checks that the OS saves the vector registers) says the CPU has its ISA, so the binary
// runs on any x86-64; elsewhere, and on other architectures, the sgemm tile runs.
#include "attend_fused.hpp"
#include "attend_fused_backward.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#define DRING_FUSED_X86 1
#include <immintrin.h>
// Every function of a region compiled for an ISA: GCC's target pragma, or for clang (the fuzzing
// build) its attribute pragma, which GCC's spelling would leave as an unknown pragma.
#define DRING_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define DRING_TARGET_BEGIN(isa) \
  DRING_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define DRING_TARGET_END _Pragma("clang attribute pop")
#else
#define DRING_TARGET_BEGIN(isa) _Pragma("GCC push_options") DRING_PRAGMA(GCC target(isa))
#define DRING_TARGET_END _Pragma("GCC pop_options")
#endif
#else
#define DRING_FUSED_X86 0
#endif

namespace dring::kernels::cpu {

namespace {

// Past this head_dim the qt tile outgrows the L1 cache and sgemm's packing pays for itself.
constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kAvx2DefaultMaxHeadDim = 128;
constexpr int64_t kAvx2DefaultMaxHeadDimBesideAvx512 = 64;

}  // namespace

#if DRING_FUSED_X86

// The primitives both ISAs spell alike but for the vector width in the intrinsics' names.
#define DRING_FUSED_PRIMITIVES(BITS)                                                \
  inline V load(const float* p) { return _mm##BITS##_loadu_ps(p); }                \
  inline void store(float* p, V x) { _mm##BITS##_storeu_ps(p, x); }                \
  inline void stream(float* p, V x) { _mm##BITS##_stream_ps(p, x); }                \
  inline V bcast(float x) { return _mm##BITS##_set1_ps(x); }                        \
  inline V zero() { return _mm##BITS##_setzero_ps(); }                              \
  inline V add(V a, V b) { return _mm##BITS##_add_ps(a, b); }                       \
  inline V sub(V a, V b) { return _mm##BITS##_sub_ps(a, b); }                       \
  inline V mul(V a, V b) { return _mm##BITS##_mul_ps(a, b); }                       \
  inline V fma(V a, V b, V c) { return _mm##BITS##_fmadd_ps(a, b, c); }            \
  inline V vmax(V a, V b) { return _mm##BITS##_max_ps(a, b); }

// GCC 12's AVX-512 intrinsics fill unused lanes from _mm512_undefined_ps, a self-initialised
// variable its own -Wuninitialized then reports (GCC bug 105593): silenced for this region only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
DRING_TARGET_BEGIN("avx512f,avx2,fma")
namespace avx512 {
namespace {

using V = __m512;
constexpr int kW = 16;
constexpr int kRegisters = 32;
constexpr int kKB = 6, kNV = 4;  // scores: 24 accumulators of 32
constexpr int kRB = 6, kCV = 4;  // P V: 24 accumulators
constexpr int kGroup = 4;        // softmax: 8 live vectors, the exp polynomial's constants, temporaries
constexpr int kScoresRB = 6, kScoresUB = 2;  // backward S and dP: 24 accumulators
constexpr int kGradRB = 6, kGradCV = 4;      // backward dV, dK, dQ: 24 accumulators

DRING_FUSED_PRIMITIVES(512)
inline V round_even(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// p * 2^n for integer-valued n in [kExp2Floor, 0] and p in [0.7, 1.42]: vscalefps, one rounding.
// At the floor, p * 2^-151 < 2^-150 rounds to exactly 0 (what masked, -inf, scores must give);
// between it and -126 the result is a denormal rather than the 0 of the AVX2 path.
constexpr float kExp2Floor = -151.0f;
inline V times_pow2(V p, V n) { return _mm512_scalef_ps(p, n); }
// s, with -inf in the lanes whose [lo, hi) does not hold key.
inline V outside(V s, int32_t key, const int32_t* lo, const int32_t* hi) {
  const __mmask16 before = _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(lo), _mm512_set1_epi32(key));
  const __mmask16 after = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(key + 1), _mm512_loadu_si512(hi));
  return _mm512_mask_mov_ps(s, before | after, bcast(-std::numeric_limits<float>::infinity()));
}
inline V zero_if_neg_inf(V x) {
  const __mmask16 k = _mm512_cmp_ps_mask(x, bcast(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
  return _mm512_mask_mov_ps(x, k, zero());
}
// dst[e * dst_ld + i] = a * src[i * src_ld + e] for e, i < 16, rows i >= n taken as 0: a 16x16
// transpose in registers (pairs of rows, then quads, then 128-bit lanes twice).
inline void transpose_rows(const float* src, int64_t src_ld, int n, float a, float* dst, int64_t dst_ld) {
  V r[16], t[16];
  const int quads = (n + 3) / 4;
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < n ? load(src + i * src_ld) : zero();
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {
    if (m >= quads) {  // four zero rows
      for (int c = 0; c < 4; ++c) t[4 * m + c] = zero();
      continue;
    }
    const V p0 = _mm512_unpacklo_ps(r[4 * m], r[4 * m + 1]), p1 = _mm512_unpackhi_ps(r[4 * m], r[4 * m + 1]);
    const V p2 = _mm512_unpacklo_ps(r[4 * m + 2], r[4 * m + 3]), p3 = _mm512_unpackhi_ps(r[4 * m + 2], r[4 * m + 3]);
    // t[4m + c], lane L: element 4L + c of rows 4m .. 4m + 3.
    t[4 * m] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(p0), _mm512_castps_pd(p2)));
    t[4 * m + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(p0), _mm512_castps_pd(p2)));
    t[4 * m + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(p1), _mm512_castps_pd(p3)));
    t[4 * m + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(p1), _mm512_castps_pd(p3)));
  }
  const V scale = bcast(a);
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    // Lanes 0 and 2 (even) or 1 and 3 (odd) of rows 0-7 and of rows 8-15, then of both.
    const V even01 = _mm512_shuffle_f32x4(t[c], t[4 + c], 0x88);
    const V odd01 = _mm512_shuffle_f32x4(t[c], t[4 + c], 0xDD);
    const V even23 = _mm512_shuffle_f32x4(t[8 + c], t[12 + c], 0x88);
    const V odd23 = _mm512_shuffle_f32x4(t[8 + c], t[12 + c], 0xDD);
    store(dst + c * dst_ld, mul(scale, _mm512_shuffle_f32x4(even01, even23, 0x88)));        // element c
    store(dst + (4 + c) * dst_ld, mul(scale, _mm512_shuffle_f32x4(odd01, odd23, 0x88)));   // 4 + c
    store(dst + (8 + c) * dst_ld, mul(scale, _mm512_shuffle_f32x4(even01, even23, 0xDD)));  // 8 + c
    store(dst + (12 + c) * dst_ld, mul(scale, _mm512_shuffle_f32x4(odd01, odd23, 0xDD)));  // 12 + c
  }
}

#include "fused_tile_body.hpp"
#include "fused_small_body.hpp"
#include "fused_backward_body.hpp"

}  // namespace
}  // namespace avx512
DRING_TARGET_END
#pragma GCC diagnostic pop

DRING_TARGET_BEGIN("avx2,fma")
namespace avx2 {
namespace {

using V = __m256;
constexpr int kW = 8;
constexpr int kRegisters = 16;
constexpr int kKB = 6, kNV = 2;  // scores: 12 accumulators of 16
constexpr int kRB = 3, kCV = 4;  // P V: 12 accumulators
constexpr int kGroup = 4;        // softmax: 12 live vectors
// Backward S and dP: 12 accumulators, 10 loads a step of e for 12 FMAs (6 x 1, the blocks'
// earlier shape, took 14 and ran 1.2x slower); dV, dK, dQ: 12 accumulators, 4 x 3 (3 x 4 ran
// 1.04x slower, 6 x 2 level; docs/benchmarks.md, "Without AMX").
constexpr int kScoresRB = 3, kScoresUB = 2;
constexpr int kGradRB = 4, kGradCV = 3;

DRING_FUSED_PRIMITIVES(256)
inline V round_even(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// p * 2^n for integer-valued n in [kExp2Floor, 0] (0 at the floor: a zero exponent field).
constexpr float kExp2Floor = -127.0f;
inline V times_pow2(V p, V n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
inline V outside(V s, int32_t key, const int32_t* lo, const int32_t* hi) {
  const __m256i lo_v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo));
  const __m256i hi_v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi));
  const __m256i before = _mm256_cmpgt_epi32(lo_v, _mm256_set1_epi32(key));
  const __m256i after = _mm256_cmpgt_epi32(_mm256_set1_epi32(key + 1), hi_v);
  return _mm256_blendv_ps(s, bcast(-std::numeric_limits<float>::infinity()),
                          _mm256_castsi256_ps(_mm256_or_si256(before, after)));
}
inline V zero_if_neg_inf(V x) {
  return _mm256_blendv_ps(x, zero(), _mm256_cmp_ps(x, bcast(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ));
}
// dst[e * dst_ld + i] = a * src[i * src_ld + e] for e, i < 8, rows i >= n taken as 0: an 8x8
// transpose in registers (pairs of rows, then quads, then the 128-bit halves).
inline void transpose_rows(const float* src, int64_t src_ld, int n, float a, float* dst, int64_t dst_ld) {
  V r[8], t[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = i < n ? load(src + i * src_ld) : zero();
#pragma GCC unroll 2
  for (int m = 0; m < 2; ++m) {
    const V p0 = _mm256_unpacklo_ps(r[4 * m], r[4 * m + 1]), p1 = _mm256_unpackhi_ps(r[4 * m], r[4 * m + 1]);
    const V p2 = _mm256_unpacklo_ps(r[4 * m + 2], r[4 * m + 3]), p3 = _mm256_unpackhi_ps(r[4 * m + 2], r[4 * m + 3]);
    // t[4m + c], half H: element 4H + c of rows 4m .. 4m + 3.
    t[4 * m] = _mm256_shuffle_ps(p0, p2, 0x44);
    t[4 * m + 1] = _mm256_shuffle_ps(p0, p2, 0xEE);
    t[4 * m + 2] = _mm256_shuffle_ps(p1, p3, 0x44);
    t[4 * m + 3] = _mm256_shuffle_ps(p1, p3, 0xEE);
  }
  const V scale = bcast(a);
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    store(dst + c * dst_ld, mul(scale, _mm256_permute2f128_ps(t[c], t[4 + c], 0x20)));        // element c
    store(dst + (4 + c) * dst_ld, mul(scale, _mm256_permute2f128_ps(t[c], t[4 + c], 0x31)));  // 4 + c
  }
}

#include "fused_tile_body.hpp"
#include "fused_small_body.hpp"
#include "fused_backward_body.hpp"

}  // namespace
}  // namespace avx2
DRING_TARGET_END
#undef DRING_FUSED_PRIMITIVES

FusedIsa fused_isa(const AttendParams& params) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && cpu_isa_cap() >= CpuIsaCap::kAvx512;
  static const bool has_avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_isa_cap() >= CpuIsaCap::kAvx2;
  const CpuF32Kernel want = params.cpu_f32_kernel;
  const int64_t d = params.head_dim;
  if (params.dtype != DType::kF32 || d > kMaxHeadDim || want == CpuF32Kernel::kSgemm) return FusedIsa::kNone;
  const bool any = want == CpuF32Kernel::kAuto || want == CpuF32Kernel::kAmx;
  if ((any || want == CpuF32Kernel::kAvx512) && has_avx512 && d % 16 == 0) return FusedIsa::kAvx512;
  // AVX2 by default only up to D=128: against oneDNN's AVX2 sgemm tiles (ONEDNN_MAX_CPU_ISA=AVX2
  // on the AVX-512 machine of docs/benchmarks.md, "Without AMX") it measured, forward and backward,
  // level on dense blocks and 1.1-4.9x on dilated and small ones at D=128, but 0.89-0.99x on dense
  // and 0.91-1.06x on 1024-row blocks at D=256. Where the CPU has AVX-512 (head_dims that are not
  // multiples of 16) only up to D=64: past it oneDNN's sgemm runs zmm code against the tile's ymm.
  const int64_t avx2_max = has_avx512 ? kAvx2DefaultMaxHeadDimBesideAvx512 : kAvx2DefaultMaxHeadDim;
  const bool avx2_by_default = any && d <= avx2_max;
  if ((avx2_by_default || want == CpuF32Kernel::kAvx2) && has_avx2 && d % 8 == 0) return FusedIsa::kAvx2;
  return FusedIsa::kNone;
}

void fused_key_tiles(FusedIsa isa, const FusedTile& t) {
  DRING_ASSERT(isa != FusedIsa::kNone && t.nq_pad % kFusedQueryPad == 0);
  if (isa == FusedIsa::kAvx512) {
    avx512::key_tiles(t);
  } else {
    avx2::key_tiles(t);
  }
}

void fused_small_block(FusedIsa isa, const FusedTile& t, float* out, int64_t out_stride, bool full,
                       RowsAhead* ahead) {
  DRING_ASSERT(isa != FusedIsa::kNone && t.nq_pad % kFusedQueryPad == 0 && t.lds == t.ld);
  RowsAhead none;
  RowsAhead& rows = ahead != nullptr ? *ahead : none;
  if (isa == FusedIsa::kAvx512) {
    avx512::small_block(t, out, out_stride, full, rows);
  } else {
    avx2::small_block(t, out, out_stride, full, rows);
  }
}

void fused_backward_tile(FusedIsa isa, const FusedGradTile& t) {
  DRING_ASSERT(isa != FusedIsa::kNone && t.nk_pad % kFusedQueryPad == 0 && t.ldp >= t.nk_pad);
  if (isa == FusedIsa::kAvx512) {
    avx512::backward_tile(t);
  } else {
    avx2::backward_tile(t);
  }
}

void fused_pack_key_tile(FusedIsa isa, const float* k, const float* v, int64_t stride, int64_t nk, int64_t d,
                         float alpha, float* kt, float* vt, int64_t ldk, int64_t reach, float* kp) {
  DRING_ASSERT(isa != FusedIsa::kNone && reach % kFusedQueryPad == 0 && reach <= ldk && nk <= reach);
  if (isa == FusedIsa::kAvx512) {
    avx512::pack_key_tile(k, v, stride, nk, d, alpha, kt, vt, ldk, reach, kp);
  } else {
    avx2::pack_key_tile(k, v, stride, nk, d, alpha, kt, vt, ldk, reach, kp);
  }
}

void fused_streams_done() { _mm_sfence(); }

#else

FusedIsa fused_isa(const AttendParams&) { return FusedIsa::kNone; }
void fused_streams_done() {}
void fused_key_tiles(FusedIsa, const FusedTile&) { DRING_ASSERT(false); }
void fused_small_block(FusedIsa, const FusedTile&, float*, int64_t, bool, RowsAhead*) { DRING_ASSERT(false); }
void fused_backward_tile(FusedIsa, const FusedGradTile&) { DRING_ASSERT(false); }
void fused_pack_key_tile(FusedIsa, const float*, const float*, int64_t, int64_t, int64_t, float, float*, float*,
                         int64_t, int64_t, float*) {
  DRING_ASSERT(false);
}

#endif

bool fused_f32_runs(const AttendParams& params) { return fused_isa(params) != FusedIsa::kNone; }

}  // namespace dring::kernels::cpu
