// attend_amx_backward.cpp — the backward of a tile pair on AMX (attend_amx_backward.hpp).
//
// As in attend_amx.cpp, every function with AVX-512 or AMX instructions carries the target
// attribute and runs only after amx_bf16_usable() said yes; lambdas are avoided in them.
#include "attend_amx_backward.hpp"

#include <algorithm>

#include "attend_amx.hpp"
#include "bf16_matmul.hpp"
#include "dring/core/error.hpp"

#include "amx_common.hpp"  // DRING_AMX

namespace dring::kernels::cpu {

int64_t amx_grad_floats(int64_t q_tile, int64_t k_tile, int64_t d, int parts) {
  const int64_t nq = amx_round_up(q_tile, kAmxCols), nk = amx_round_up(k_tile, kAmxCols);
  const int64_t dp = amx_round_up(d, kAmxCols);
  return 3 * region_floats(parts * nk * dp, 2) + 2 * region_floats(nk * dp, 4) +
         4 * region_floats(parts * dp * nq, 2) + 2 * region_floats(kAmxStripRows * nq, 4) +
         2 * region_floats(parts * kAmxStripRows * nq, 2) + region_floats(parts * nk * nq, 2) +
         region_floats(dp * nq, 4) + 4 * region_floats(nq, 4);
}

#if DRING_AMX

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

using namespace amx;

// c[32][32] (= or, accumulating, +=) a[32][kdim] b[kdim][32]: a as rows of bf16 (lda elements
// apart, part planes a_plane apart), b as 32-bit pairs along kdim (ldb pairs a row, planes b_plane
// apart), kdim a multiple of 32, c in fp32 (ldc apart). Four result tiles, one pass over kdim.
template <int Parts>
DRING_AMX_FN void gemm32(const uint16_t* a, int64_t lda, int64_t a_plane, const uint32_t* b, int64_t ldb,
                         int64_t b_plane, int64_t kdim, float* c, int64_t ldc, bool accumulate) {
  const long c_bytes = static_cast<long>(ldc * 4), a_bytes = static_cast<long>(lda * 2);
  const long b_bytes = static_cast<long>(ldb * 4);
  if (accumulate) {
    _tile_loadd(0, c, c_bytes);
    _tile_loadd(1, c + 16, c_bytes);
    _tile_loadd(2, c + 16 * ldc, c_bytes);
    _tile_loadd(3, c + 16 * ldc + 16, c_bytes);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < kdim; k += 32) {
#pragma GCC unroll 3
    for (int part = 0; part < Parts; ++part) {
      const uint16_t* ap = a + part * a_plane + k;
      part_products<2, Parts>(ap, ap + 16 * lda, a_bytes, b + (k / 2) * ldb, b_plane, b_bytes, part);
    }
  }
  _tile_stored(0, c, c_bytes);
  _tile_stored(1, c + 16, c_bytes);
  _tile_stored(2, c + 16 * ldc, c_bytes);
  _tile_stored(3, c + 16 * ldc + 16, c_bytes);
}

// 32-bit pairs of (row x, row x + 1) elements, 16 columns from 0 (kLow) and from 16 (kHigh).
alignas(64) constexpr uint16_t kPairLow[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) constexpr uint16_t kPairHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

// The strip's P^T and dS^T (keys r0 .. r0 + 31 as rows, query columns [qb, qe), multiples of 32)
// from its S^T and dP^T: P = 0 where the key is outside the column's row [lo, hi). Into pt and
// dst (rows of the strip) and dsb (pairs of keys). dsb's columns outside [qb, qe) are not
// written: dQ^T sums a block of 32 query rows over the keys from its rows' first to their last
// (keys_seen), and since both ends of a row's keys grow with the row, a block outside [qb, qe)
// has all its rows before the strip's keys or all after them. A strip no row sees at all may
// still lie inside such a range (rows whose keys jump past it): grad_queries zeroes its dsb rows.
template <int Parts>
DRING_AMX_FN void strip_gradients(const AmxGradKeys& k, const AmxGradQueries& q, int64_t r0, int64_t qb, int64_t qe) {
  const int64_t nqp = q.nq_pad;
  const int64_t strip_plane = kAmxStripRows * nqp, pair_plane = k.nk_pad / 2 * nqp;
  const __m512 alpha = _mm512_set1_ps(q.alpha), scale = _mm512_set1_ps(q.scale);
  const __m512i low = _mm512_load_si512(kPairLow), high = _mm512_load_si512(kPairHigh);
  auto* dsb = reinterpret_cast<uint32_t*>(q.dsb);
  for (int64_t x = 0; x < kAmxStripRows; x += 2) {
    uint32_t* pair_row = dsb + (r0 + x) / 2 * nqp;
    for (int64_t c = qb; c < qe; c += 32) {
      const __m512 lse0 = _mm512_loadu_ps(q.lse2 + c), lse1 = _mm512_loadu_ps(q.lse2 + c + 16);
      const __m512 delta0 = _mm512_loadu_ps(q.delta + c), delta1 = _mm512_loadu_ps(q.delta + c + 16);
      const __m512i lo0 = _mm512_loadu_si512(q.lo + c), lo1 = _mm512_loadu_si512(q.lo + c + 16);
      const __m512i hi0 = _mm512_loadu_si512(q.hi + c), hi1 = _mm512_loadu_si512(q.hi + c + 16);
      __m512i ds[2][Parts];
#pragma GCC unroll 2
      for (int y = 0; y < 2; ++y) {
        const int64_t row = x + y;
        const __m512i key = _mm512_set1_epi32(static_cast<int>(r0 + row));
        const __mmask16 m0 = _mm512_cmple_epi32_mask(lo0, key) & _mm512_cmpgt_epi32_mask(hi0, key);
        const __mmask16 m1 = _mm512_cmple_epi32_mask(lo1, key) & _mm512_cmpgt_epi32_mask(hi1, key);
        const float* s = q.st + row * nqp + c;
        const float* dp = q.dpt + row * nqp + c;
        const __m512 p0 =
            _mm512_maskz_mov_ps(m0, exp2_nonpositive<Parts>(_mm512_fmsub_ps(alpha, _mm512_loadu_ps(s), lse0)));
        const __m512 p1 =
            _mm512_maskz_mov_ps(m1, exp2_nonpositive<Parts>(_mm512_fmsub_ps(alpha, _mm512_loadu_ps(s + 16), lse1)));
        const __m512 ds0 = _mm512_mul_ps(_mm512_mul_ps(p0, _mm512_sub_ps(_mm512_loadu_ps(dp), delta0)), scale);
        const __m512 ds1 = _mm512_mul_ps(_mm512_mul_ps(p1, _mm512_sub_ps(_mm512_loadu_ps(dp + 16), delta1)), scale);
        __m512i pp[Parts];
        split<Parts>(p0, p1, pp);
        split<Parts>(ds0, ds1, ds[y]);
#pragma GCC unroll 3
        for (int a = 0; a < Parts; ++a) {
          _mm512_storeu_si512(q.pt + a * strip_plane + row * nqp + c, pp[a]);
          _mm512_storeu_si512(q.dst + a * strip_plane + row * nqp + c, ds[y][a]);
        }
      }
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) {
        _mm512_storeu_si512(pair_row + a * pair_plane + c, _mm512_permutex2var_epi16(ds[0][a], low, ds[1][a]));
        _mm512_storeu_si512(pair_row + a * pair_plane + c + 16, _mm512_permutex2var_epi16(ds[0][a], high, ds[1][a]));
      }
    }
  }
}

// The query columns [*qb, *qe) (whole steps of 32) whose rows see a key of [j, j + n); false when
// none does.
bool columns_seeing(const AmxGradQueries& q, int64_t j, int64_t n, int64_t* qb, int64_t* qe) {
  int64_t first = q.nq, end = 0;
  for (int64_t i = 0; i < q.nq; ++i) {
    if (std::max<int64_t>(q.lo[i], j) < std::min<int64_t>(q.hi[i], j + n)) {
      first = std::min(first, i);
      end = i + 1;
    }
  }
  if (first >= end) return false;
  *qb = first / 32 * 32;
  *qe = amx_round_up(end, 32);
  return true;
}

// The keys [*kb, *ke) (whole steps of 32) that the query rows [i, i + n) see; false when none.
bool keys_seen(const AmxGradQueries& q, int64_t nk, int64_t i, int64_t n, int64_t* kb, int64_t* ke) {
  int64_t lo = nk, hi = 0;
  for (int64_t r = i; r < std::min(i + n, q.nq); ++r) {
    if (q.lo[r] >= q.hi[r]) continue;
    lo = std::min<int64_t>(lo, q.lo[r]);
    hi = std::max<int64_t>(hi, q.hi[r]);
  }
  if (lo >= hi) return false;
  *kb = lo / 32 * 32;
  *ke = amx_round_up(hi, 32);
  return true;
}

template <int Parts>
DRING_AMX_FN void pack_keys(const AmxGradKeys& k) {
  const int64_t plane = k.nk_pad * k.dp;
  pack_rows<Parts>(k.k, k.kv_stride, k.nk, k.nk_pad, k.d, k.dp, k.ka, plane);
  pack_rows<Parts>(k.v, k.kv_stride, k.nk, k.nk_pad, k.d, k.dp, k.va, plane);
  pack_columns<Parts>(k.k, k.kv_stride, k.nk, k.nk_pad, k.d, k.dp, k.kt, k.nk_pad, plane);
  std::fill(k.dk, k.dk + plane, 0.0f);
  std::fill(k.dv, k.dv + plane, 0.0f);
}

template <int Parts>
DRING_AMX_FN void grad_queries(const AmxGradKeys& k, const AmxGradQueries& q) {
  const int64_t dp = k.dp, nqp = q.nq_pad, nkp = k.nk_pad;
  const int64_t key_plane = nkp * dp, d_plane = dp / 2 * nqp, row_plane = nqp / 2 * dp;
  const int64_t strip_plane = kAmxStripRows * nqp, pair_plane = nkp / 2 * nqp;
  auto* qk = reinterpret_cast<uint32_t*>(q.qk);
  auto* ok = reinterpret_cast<uint32_t*>(q.ok);
  auto* qv = reinterpret_cast<uint32_t*>(q.qv);
  auto* ov = reinterpret_cast<uint32_t*>(q.ov);
  const auto* dsb = reinterpret_cast<const uint32_t*>(q.dsb);
  pack_pairs_d<Parts>(q.q, q.q_stride, q.nq, nqp, k.d, dp, qk, nqp, d_plane);
  pack_pairs_d<Parts>(q.dout, q.q_stride, q.nq, nqp, k.d, dp, ok, nqp, d_plane);
  pack_pairs_rows<Parts>(q.q, q.q_stride, q.nq, nqp, k.d, dp, qv, row_plane);
  pack_pairs_rows<Parts>(q.dout, q.q_stride, q.nq, nqp, k.d, dp, ov, row_plane);
  _tile_loadconfig(&kTileConfig);
  for (int64_t r0 = 0; r0 < nkp; r0 += kAmxStripRows) {
    int64_t qb = 0, qe = 0;
    if (!columns_seeing(q, r0, kAmxStripRows, &qb, &qe)) {
      auto* pair_row = reinterpret_cast<uint32_t*>(q.dsb) + r0 / 2 * nqp;
      for (int a = 0; a < Parts; ++a) std::fill_n(pair_row + a * pair_plane, kAmxStripRows / 2 * nqp, 0u);
      continue;
    }
    operands_written();
    for (int64_t c = qb; c < qe; c += 32) {
      gemm32<Parts>(k.ka + r0 * dp, dp, key_plane, qk + c, nqp, d_plane, dp, q.st + c, nqp, false);
      gemm32<Parts>(k.va + r0 * dp, dp, key_plane, ok + c, nqp, d_plane, dp, q.dpt + c, nqp, false);
    }
    operands_written();
    strip_gradients<Parts>(k, q, r0, qb, qe);
    operands_written();
    for (int64_t e = 0; e < dp; e += 32) {
      gemm32<Parts>(q.pt + qb, nqp, strip_plane, ov + qb / 2 * dp + e, dp, row_plane, qe - qb, k.dv + r0 * dp + e, dp,
                    true);
      gemm32<Parts>(q.dst + qb, nqp, strip_plane, qv + qb / 2 * dp + e, dp, row_plane, qe - qb, k.dk + r0 * dp + e, dp,
                    true);
    }
  }
  operands_written();
  for (int64_t c = 0; c < nqp; c += 32) {
    int64_t kb = 0, ke = 0;
    if (!keys_seen(q, k.nk, c, 32, &kb, &ke)) {
      for (int64_t e = 0; e < dp; ++e) std::fill_n(q.dqt + e * nqp + c, 32, 0.0f);
      continue;
    }
    for (int64_t e = 0; e < dp; e += 32) {
      gemm32<Parts>(k.kt + e * nkp + kb, nkp, key_plane, dsb + kb / 2 * nqp + c, nqp, pair_plane, ke - kb,
                    q.dqt + e * nqp + c, nqp, false);
    }
  }
  _tile_release();
  operands_written();
}

DRING_AMX_FN void add_dq(const float* dqt, int64_t nq_pad, int64_t nq, int64_t d, float* dq, int64_t dq_stride) {
  for (int64_t i0 = 0; i0 < nq; i0 += 16) {
    for (int64_t e0 = 0; e0 < d; e0 += 16) {
      __m512i r[16];
#pragma GCC unroll 16
      for (int x = 0; x < 16; ++x) {
        r[x] = e0 + x < d ? _mm512_loadu_si512(dqt + (e0 + x) * nq_pad + i0) : _mm512_setzero_si512();
      }
      transpose16(r);  // r[x]: row i0 + x, elements e0 .. e0 + 15
      const __mmask16 cols = mask16(d - e0);
      for (int64_t x = 0; x < 16 && i0 + x < nq; ++x) {
        float* to = dq + (i0 + x) * dq_stride + e0;
        _mm512_mask_storeu_ps(to, cols, _mm512_add_ps(_mm512_maskz_loadu_ps(cols, to), _mm512_castsi512_ps(r[x])));
      }
    }
  }
}

}  // namespace

#pragma GCC diagnostic pop

void amx_grad_pack_keys(const AmxGradKeys& k) {
  DRING_ASSERT(amx_bf16_usable() && k.nk_pad % kAmxCols == 0 && k.dp % kAmxCols == 0);
  if (k.parts == kAmxPartsF32) {
    pack_keys<kAmxPartsF32>(k);
  } else {
    DRING_ASSERT(k.parts == kAmxPartsBf16);
    pack_keys<kAmxPartsBf16>(k);
  }
}

void amx_grad_queries(const AmxGradKeys& k, const AmxGradQueries& q) {
  DRING_ASSERT(amx_bf16_usable() && q.nq_pad % kAmxCols == 0);
  if (k.parts == kAmxPartsF32) {
    grad_queries<kAmxPartsF32>(k, q);
  } else {
    grad_queries<kAmxPartsBf16>(k, q);
  }
}

void amx_grad_add_dq(const float* dqt, int64_t nq_pad, int64_t nq, int64_t d, float* dq, int64_t dq_stride) {
  add_dq(dqt, nq_pad, nq, d, dq, dq_stride);
}

#else

void amx_grad_pack_keys(const AmxGradKeys&) { DRING_ASSERT(false); }
void amx_grad_queries(const AmxGradKeys&, const AmxGradQueries&) { DRING_ASSERT(false); }
void amx_grad_add_dq(const float*, int64_t, int64_t, int64_t, float*, int64_t) { DRING_ASSERT(false); }

#endif

}  // namespace dring::kernels::cpu
