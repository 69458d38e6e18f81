// attend_amx.cpp — the fused forward tile on AMX, for bf16 and fp32 rows (attend_amx.hpp), and
// the run-time check that the CPU and the OS allow it.
//
// Every function that uses AVX-512 or AMX instructions carries the target attribute (the rest of
// the program is compiled for baseline x86-64) and runs only after amx_bf16_usable() said yes,
// so the binary runs on any x86-64. Lambdas are avoided in these functions: they would not
// inherit the attribute.
#include "attend_amx.hpp"

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"

#include "amx_common.hpp"  // DRING_AMX

#if DRING_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#endif

namespace dring::kernels::cpu {

#if DRING_AMX

// GCC 12's AVX-512 intrinsics fill unused lanes from _mm512_undefined_ps, a self-initialised
// variable its own -Wuninitialized then reports (GCC bug 105593): silenced for this file's
// kernels only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

// Linux: ask for the tile data state (AMX registers) for this process (asm/prctl.h values).
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

bool cpu_and_os_have_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid(1, a, b, c, d);
  if (((c >> 27) & 1u) == 0) return false;  // no OSXSAVE: xgetbv would fault
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx512 = ((b >> 16) & 1u) && ((b >> 30) & 1u);  // avx512f, avx512bw
  const bool amx = ((d >> 22) & 1u) && ((d >> 24) & 1u);     // amx-bf16, amx-tile
  __cpuid_count(7, 1, a, b, c, d);
  const bool avx512_bf16 = (a >> 5) & 1u;
  if (!avx512 || !amx || !avx512_bf16) return false;
  uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const uint64_t xcr0 = (static_cast<uint64_t>(xcr0_hi) << 32) | xcr0_lo;
  // SSE, AVX, the three AVX-512 states, XTILECFG and XTILEDATA saved by the OS.
  const uint64_t need = 0x6u | 0xe0u | (uint64_t{3} << 17);
  return (xcr0 & need) == need;
}

using namespace amx;

// The item's query rows into qp (part a in plane a), zero padded.
template <int Parts>
DRING_AMX_FN void pack_q(const AmxTile& t) {
  pack_rows<Parts>(t.q, t.q_stride, t.nq, t.nq_pad, t.d, t.dp, t.qp, t.nq_pad * t.dp);
}

// Keys [j0, j0 + nk) into kp (part a in plane a), as 32-bit pairs along head_dim transposed:
// kp32[e/2][j] for j up to nk rounded to kAmxCols (zeros past nk and past d).
template <int Parts>
DRING_AMX_FN void pack_k(const AmxTile& t, int64_t j0, int64_t nk) {
  pack_pairs_d<Parts>(row_at<Parts>(t.k, j0, t.kv_stride), t.kv_stride, nk, amx_round_up(nk, kAmxCols), t.d, t.dp,
                      reinterpret_cast<uint32_t*>(t.kp), t.k_tile, t.dp / 2 * t.k_tile);
}

// Keys [j0, j0 + nk) into vp (part a in plane a), as 32-bit pairs of consecutive keys:
// vp32[j/2][c] (zeros past nk and past d).
template <int Parts>
DRING_AMX_FN void pack_v(const AmxTile& t, int64_t j0, int64_t nk) {
  pack_pairs_rows<Parts>(row_at<Parts>(t.v, j0, t.kv_stride), t.kv_stride, nk, amx_round_up(nk, kAmxCols), t.d, t.dp,
                         reinterpret_cast<uint32_t*>(t.vp), t.k_tile / 2 * t.dp);
}

// Nothing to do between tile products (strip_scores' default).
struct NoWork {
  DRING_AMX_INLINE void operator()() {}
};

// st[r][kb, ke) = q[r0 + r] . k for the strip's RT tiles of 16 rows; `between` runs after each
// group of part products (vector work of another strip, overlapping the matrix unit's).
template <int RT, int Parts, class Between = NoWork>
DRING_AMX_FN void strip_scores(const AmxTile& t, int64_t r0, int64_t kb, int64_t ke, Between between = {}) {
  operands_written();
  const auto* kp32 = reinterpret_cast<const uint32_t*>(t.kp);
  const int64_t q_plane = t.nq_pad * t.dp, k_plane = t.dp / 2 * t.k_tile;
  const long q_bytes = static_cast<long>(t.dp * 2), k_bytes = static_cast<long>(t.k_tile * 4);
  const long s_bytes = static_cast<long>(t.k_tile * 4);
  const uint16_t* q = t.qp + r0 * t.dp;
  for (int64_t j = kb; j < ke; j += kAmxCols) {
    _tile_zero(0);
    _tile_zero(1);
    if constexpr (RT == 2) {
      _tile_zero(2);
      _tile_zero(3);
    }
    for (int64_t e = 0; e < t.dp; e += kAmxCols) {
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) {
        const uint16_t* qa = q + a * q_plane + e;
        part_products<RT, Parts>(qa, qa + kAmxRows * t.dp, q_bytes, kp32 + (e / 2) * t.k_tile + j, k_plane, k_bytes,
                                 a);
        between();
      }
    }
    _tile_stored(0, t.st + j, s_bytes);
    _tile_stored(1, t.st + j + 16, s_bytes);
    if constexpr (RT == 2) {
      _tile_stored(2, t.st + kAmxRows * t.k_tile + j, s_bytes);
      _tile_stored(3, t.st + kAmxRows * t.k_tile + j + 16, s_bytes);
    }
  }
}

// acc[r0 + r] += p[r][kb, ke) v for the strip's RT tiles of 16 rows.
template <int RT, int Parts>
DRING_AMX_FN void strip_pv(const AmxTile& t, int64_t r0, int64_t kb, int64_t ke) {
  operands_written();
  const auto* vp32 = reinterpret_cast<const uint32_t*>(t.vp);
  const int64_t p_plane = kAmxStripRows * t.k_tile, v_plane = t.k_tile / 2 * t.dp;
  const long acc_bytes = static_cast<long>(t.dp * 4), p_bytes = static_cast<long>(t.k_tile * 2);
  const long v_bytes = static_cast<long>(t.dp * 4);
  for (int64_t c = 0; c < t.dp; c += kAmxCols) {
    float* acc = t.acc + r0 * t.dp + c;
    _tile_loadd(0, acc, acc_bytes);
    _tile_loadd(1, acc + 16, acc_bytes);
    if constexpr (RT == 2) {
      _tile_loadd(2, acc + kAmxRows * t.dp, acc_bytes);
      _tile_loadd(3, acc + kAmxRows * t.dp + 16, acc_bytes);
    }
    for (int64_t j = kb; j < ke; j += kAmxCols) {
#pragma GCC unroll 3
      for (int a = 0; a < Parts; ++a) {
        const uint16_t* pa = t.p + a * p_plane + j;
        part_products<RT, Parts>(pa, pa + kAmxRows * t.k_tile, p_bytes, vp32 + (j / 2) * t.dp + c, v_plane, v_bytes, a);
      }
    }
    _tile_stored(0, acc, acc_bytes);
    _tile_stored(1, acc + 16, acc_bytes);
    if constexpr (RT == 2) {
      _tile_stored(2, acc + kAmxRows * t.dp, acc_bytes);
      _tile_stored(3, acc + kAmxRows * t.dp + 16, acc_bytes);
    }
  }
}

// The softmax: per row, 16 rows at a time, and a strip cut into units.
#include "amx_softmax_body.hpp"

// The keys the strip's rows (RT tiles of 16 rows from r0) see of the tile at j0 (nk keys),
// relative to j0 and widened to whole steps of kAmxCols: [*kb, *ke); false when none.
template <int RT>
DRING_AMX_INLINE bool strip_range(const AmxTile& t, int64_t r0, int64_t j0, int64_t nk, int64_t* kb, int64_t* ke) {
  int64_t lo_min = nk, hi_max = 0;
  for (int64_t r = 0; r < RT * kAmxRows; ++r) {
    const int64_t lo = std::max<int64_t>(t.lo[r0 + r] - j0, 0), hi = std::min<int64_t>(t.hi[r0 + r] - j0, nk);
    if (lo >= hi) continue;
    lo_min = std::min(lo_min, lo);
    hi_max = std::max(hi_max, hi);
  }
  if (lo_min >= hi_max) return false;
  *kb = lo_min / kAmxCols * kAmxCols;
  *ke = amx_round_up(hi_max, kAmxCols);
  return true;
}

// The strip's softmax and P V, after its scores.
template <int RT, int Parts>
DRING_AMX_FN void strip_end(const AmxTile& t, int64_t r0, int64_t j0, int64_t nk, int64_t kb, int64_t ke) {
  operands_written();  // the strip's scores, stored by tile stores
  for (int64_t r = 0; r < RT * kAmxRows; ++r) {
    const int64_t lo = std::max<int64_t>(t.lo[r0 + r] - j0, 0), hi = std::min<int64_t>(t.hi[r0 + r] - j0, nk);
    if (r % 16 == 0 && t.alpha > 0.0f) {
      if (rows16_whole(t, r0 + r, j0, nk, kb, ke)) {
        softmax_rows16<true, Parts>(t, r0 + r, r, kb, ke, j0, nk);
      } else {
        softmax_rows16<false, Parts>(t, r0 + r, r, kb, ke, j0, nk);
      }
      r += 15;
      continue;
    }
    if (lo < hi) {
      if (lo == kb && hi == ke) {
        softmax_row<true, Parts>(t, r0 + r, r, lo, hi, kb, ke);
      } else {
        softmax_row<false, Parts>(t, r0 + r, r, lo, hi, kb, ke);
      }
    } else {  // the row sees nothing here: P = 0, its state unchanged
      for (int a = 0; a < Parts; ++a) {
        uint16_t* p = t.p + (a * kAmxStripRows + r) * t.k_tile;
        for (int64_t k = kb; k < ke; k += kAmxCols) _mm512_storeu_si512(p + k, _mm512_setzero_si512());
      }
    }
  }
  strip_pv<RT, Parts>(t, r0, kb, ke);
}

// Rows [j, j + n) of k and v into L2: the next key tile's, spread over the strips of this one
// (rows of [S, H, D] tensors leave a 4 KiB page every few rows, which the hardware prefetchers
// do not follow; packing them would otherwise wait on each).
template <int Parts>
void prefetch_rows(const AmxTile& t, int64_t j, int64_t n) {
  const int64_t row_bytes = t.d * (Parts == 1 ? 2 : 4);
  for (int64_t r = j; r < j + n; ++r) {
    const char* k = static_cast<const char*>(row_at<Parts>(t.k, r, t.kv_stride));
    const char* v = static_cast<const char*>(row_at<Parts>(t.v, r, t.kv_stride));
    for (int64_t b = 0; b < row_bytes; b += 64) {
      __builtin_prefetch(k + b, 0, 2);
      __builtin_prefetch(v + b, 0, 2);
    }
  }
}

template <int Parts>
DRING_AMX_FN void key_tiles(const AmxTile& t) {
  AmxTile alt = t;  // odd strips' scores in the second buffer
  alt.st = t.st_next;
  _tile_loadconfig(&kTileConfig);
  pack_q<Parts>(t);
  for (int64_t j0 = 0; j0 < t.n_keys; j0 += t.k_tile) {
    const int64_t nk = std::min(t.k_tile, t.n_keys - j0);
    bool any = false;
    for (int64_t i = 0; i < t.nq && !any; ++i) any = std::max<int64_t>(t.lo[i], j0) < std::min<int64_t>(t.hi[i], j0 + nk);
    if (!any) continue;  // no row sees a key of this tile
    pack_k<Parts>(t, j0, nk);
    pack_v<Parts>(t, j0, nk);
    const int64_t strips = (t.nq_pad + kAmxStripRows - 1) / kAmxStripRows;
    const int64_t next = std::min(t.k_tile, t.n_keys - j0 - nk);  // rows of the next key tile
    // fp32 rows: a whole strip's softmax runs between the next strip's score products, a few
    // units of 32 scores after each group of part products, so that the vector units work while
    // the matrix unit does (each strip's scores in its own buffer; 1.05-1.08x on dense rows,
    // docs/benchmarks.md). Issued as a block before or after the products, nothing overlapped:
    // the pending tile instructions fill the reorder window. Other strips, and bf16 (its lighter
    // softmax measured level to 3% slower), run strip by strip.
    bool pending = false, p_whole = false;
    int64_t p_r0 = 0, p_kb = 0, p_ke = 0;
    const AmxTile* p_t = &t;
    for (int64_t n = 0; n <= strips; ++n) {
      const int64_t r0 = n * kAmxStripRows;
      const AmxTile& cur = n % 2 == 0 ? t : alt;
      const bool full = n < strips && r0 + kAmxStripRows <= t.nq_pad;
      if (n < strips && next > 0) {
        prefetch_rows<Parts>(t, j0 + nk + next * n / strips, next * (n + 1) / strips - next * n / strips);
      }
      int64_t kb = 0, ke = 0;
      bool began = false;
      if (pending && p_whole && full) {
        StripSoftmax<Parts> sm;
        sm.t = p_t;
        sm.i0 = p_r0;
        sm.kb = p_kb;
        sm.ke = p_ke;
        sm.begin();
        began = strip_range<2>(cur, r0, j0, nk, &kb, &ke);
        if (began) {
          const int64_t units = 32 * ((p_ke - p_kb) / kAmxCols);
          const int64_t calls = (ke - kb) / kAmxCols * (t.dp / kAmxCols) * Parts;
          const auto per_call = static_cast<int>((units + calls - 1) / calls);
          strip_scores<2, Parts>(cur, r0, kb, ke, SoftmaxUnits<Parts>{&sm, per_call});
        }
        sm.finish();
        strip_pv<2, Parts>(*p_t, p_r0, p_kb, p_ke);
      } else {
        if (pending) {
          if (p_r0 + kAmxStripRows <= t.nq_pad) {
            strip_end<2, Parts>(*p_t, p_r0, j0, nk, p_kb, p_ke);
          } else {
            strip_end<1, Parts>(*p_t, p_r0, j0, nk, p_kb, p_ke);
          }
        }
        if (full) {
          began = strip_range<2>(cur, r0, j0, nk, &kb, &ke);
          if (began) strip_scores<2, Parts>(cur, r0, kb, ke);
        } else if (n < strips) {
          began = strip_range<1>(cur, r0, j0, nk, &kb, &ke);
          if (began) strip_scores<1, Parts>(cur, r0, kb, ke);
        }
      }
      pending = began;
      p_whole = Parts == kAmxPartsF32 && began && full && t.alpha > 0.0f && rows16_whole(cur, r0, j0, nk, kb, ke) &&
                rows16_whole(cur, r0 + 16, j0, nk, kb, ke);
      p_r0 = r0;
      p_kb = kb;
      p_ke = ke;
      p_t = &cur;
    }
  }
  _tile_release();
}

}  // namespace

#pragma GCC diagnostic pop

bool amx_bf16_usable() {
  static const bool usable = cpu_isa_cap() >= CpuIsaCap::kAmx && cpu_and_os_have_amx_bf16() &&
                             syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return usable;
}

void amx_key_tiles(const AmxTile& t) {
  DRING_ASSERT(amx_bf16_usable() && t.nq_pad % kAmxRows == 0 && t.dp % kAmxCols == 0 && t.k_tile % kAmxCols == 0);
  DRING_ASSERT(t.parts == kAmxPartsBf16 || t.parts == kAmxPartsF32);
  if (t.parts == kAmxPartsF32) {
    key_tiles<kAmxPartsF32>(t);
  } else {
    key_tiles<kAmxPartsBf16>(t);
  }
}

#else

bool amx_bf16_usable() { return false; }
void amx_key_tiles(const AmxTile&) { DRING_ASSERT(false); }

#endif

}  // namespace dring::kernels::cpu
