// amx_softmax_body.hpp — the online softmax of the AMX tile (attend_amx.hpp says what it
// computes): per row (softmax_row, for alpha <= 0), 16 rows to a vector (softmax_rows16, whole or
// masked rows) and a whole strip of 32 rows cut into units that run between the next strip's
// tile products (StripSoftmax, fp32 rows). Not a header of its own: attend_amx.cpp includes it
// once, inside its anonymous namespace (where amx_common.hpp's DRING_AMX_* attributes and helpers,
// mask16, lanes_in, exp2_by, the exp2 coefficient tables, exp2_nonpositive and split, are in
// scope), before the strip loop that calls it. No include guard.

// x where lanes k .. k+15 lie in [lo, hi), else `fill` (Whole: every lane does).
template <bool Whole>
DRING_AMX_INLINE __m512 visible(__m512 x, __m512 fill, int64_t lo, int64_t hi, int64_t k) {
  if constexpr (Whole) return x;
  return _mm512_mask_mov_ps(fill, lanes_in(lo, hi, k), x);
}

// P's 32 values from k (p0: lanes 0-15, p1: 16-31) into row p's planes (plane apart): rounded to
// bf16, or as Parts bf16 parts.
template <int Parts>
DRING_AMX_INLINE void store_p(uint16_t* p, int64_t plane, __m512 p0, __m512 p1) {
  __m512i x[Parts];
  split<Parts>(p0, p1, x);
#pragma GCC unroll 3
  for (int a = 0; a < Parts; ++a) _mm512_storeu_si512(p + a * plane, x[a]);
}

// The online-softmax update of one row i (strip row r) over its visible keys [lo, hi) of the
// tile (kb <= lo < hi <= ke; Whole: lo == kb and hi == ke), where alpha <= 0 (softmax_rows16
// takes the rows 16 at a time otherwise): m, l updated, acc's row rescaled,
// p[r][kb, ke) = bf16(P) (or its parts). The max of alpha * s is alpha times the max (alpha > 0)
// or the min (alpha <= 0) of s, exactly: rounding is monotone.
template <bool Whole, int Parts>
DRING_AMX_FN void softmax_row(const AmxTile& t, int64_t i, int64_t r, int64_t lo, int64_t hi, int64_t kb,
                              int64_t ke) {
  const float* s = t.st + r * t.k_tile;
  uint16_t* p = t.p + r * t.k_tile;
  const float inf = std::numeric_limits<float>::infinity();
  float extreme = 0.0f;
  if (t.alpha > 0.0f) {
    __m512 mx = _mm512_set1_ps(-inf);
    for (int64_t k = kb; k < ke; k += 16) mx = _mm512_max_ps(mx, visible<Whole>(_mm512_loadu_ps(s + k), mx, lo, hi, k));
    extreme = _mm512_reduce_max_ps(mx);
  } else {
    __m512 mn = _mm512_set1_ps(inf);
    for (int64_t k = kb; k < ke; k += 16) mn = _mm512_min_ps(mn, visible<Whole>(_mm512_loadu_ps(s + k), mn, lo, hi, k));
    extreme = _mm512_reduce_min_ps(mn);
  }
  const float m_old = t.m[i];
  const float m_new = std::max(m_old, t.alpha * extreme);
  const __m512 alpha = _mm512_set1_ps(t.alpha), shift = _mm512_set1_ps(m_new), zero = _mm512_setzero_ps();
  __m512 sum = zero;
  for (int64_t k = kb; k < ke; k += kAmxCols) {
    const __m512 p0 = visible<Whole>(exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k), alpha, shift)),
                                     zero, lo, hi, k);
    const __m512 p1 = visible<Whole>(
        exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k + 16), alpha, shift)), zero, lo, hi, k + 16);
    sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
    store_p<Parts>(p + k, kAmxStripRows * t.k_tile, p0, p1);
  }
  const float c = std::exp2(m_old - m_new);  // 0 when nothing had reached the row
  t.l[i] = t.l[i] * c + _mm512_reduce_add_ps(sum);
  t.m[i] = m_new;
  if (c != 1.0f) {
    float* acc = t.acc + i * t.dp;
    const __m512 cv = _mm512_set1_ps(c);
    for (int64_t e = 0; e < t.dp; e += 16) _mm512_storeu_ps(acc + e, _mm512_mul_ps(_mm512_loadu_ps(acc + e), cv));
  }
}

// Slot of row r's vector in reduce16's input: the tree below leaves a[4j + q]'s result in lane
// 4q + j, so row r goes to slot 4 (r % 4) + r / 4 and its result comes out in lane r.
constexpr int reduce16_slot(int r) { return 4 * (r % 4) + r / 4; }

// max(a, b) (Max) or a + b.
template <bool Max>
DRING_AMX_INLINE __m512 combine(__m512 a, __m512 b) {
  if constexpr (Max) return _mm512_max_ps(a, b);
  return _mm512_add_ps(a, b);
}

// Lane r = the max (Max) or the sum of the 16 lanes of row r (in slot reduce16_slot(r)), for 16
// rows at once: 15 combining steps of half-vectors swapped across 256-bit halves, 128-bit quarters
// and lanes, where 16 horizontal reductions take 4 dependent steps each.
template <bool Max>
DRING_AMX_INLINE __m512 reduce16(const __m512 (&a)[16]) {
  __m512 b[8], c[4], d[2];
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
    b[k] = combine<Max>(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                        _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xee));
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    c[k] = combine<Max>(_mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0x88),
                        _mm512_shuffle_f32x4(b[2 * k], b[2 * k + 1], 0xdd));
  }
#pragma GCC unroll 2
  for (int k = 0; k < 2; ++k) {
    d[k] = combine<Max>(_mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0x44), _mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0xee));
  }
  return combine<Max>(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xdd));
}

// The online-softmax update of the 16 rows i0.. (strip rows r0..) at once over the key tile at
// j0 (nk keys), where alpha > 0: the rows' maxima and sums reduced across rows in vectors
// (reduce16), and m, l and the correction c updated 16 rows to a vector, not row by row (per
// row, the horizontal reductions and the scalar exp2 of c took about as long as the row's
// exponentials; docs/benchmarks.md). Whole: each row sees every key of [kb, ke) (the whole tiles
// of a dense or unmasked block); else each row's visible keys are masked, and a row that sees
// none here keeps its state (c = 1, nothing added) with P = 0.
template <bool Whole, int Parts>
DRING_AMX_FN void softmax_rows16(const AmxTile& t, int64_t i0, int64_t r0, int64_t kb, int64_t ke, int64_t j0,
                                 int64_t nk) {
  const __m512 none = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), zero = _mm512_setzero_ps();
  int64_t lo[16], hi[16];  // the rows' visible keys of the tile
  __mmask16 seen = Whole ? 0xffff : 0;
  for (int r = 0; r < 16; ++r) {
    lo[r] = Whole ? kb : std::clamp<int64_t>(t.lo[i0 + r] - j0, 0, nk);
    hi[r] = Whole ? ke : std::clamp<int64_t>(t.hi[i0 + r] - j0, 0, nk);
    if (!Whole && lo[r] < hi[r]) seen = static_cast<__mmask16>(seen | (1u << r));
  }
  __m512 v[16];
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) {
    const float* s = t.st + (r0 + r) * t.k_tile;
    __m512 mx = none;
    for (int64_t k = kb; k < ke; k += 16) {
      mx = _mm512_max_ps(mx, visible<Whole>(_mm512_loadu_ps(s + k), mx, lo[r], hi[r], k));
    }
    v[reduce16_slot(r)] = mx;
  }
  const __m512 alpha = _mm512_set1_ps(t.alpha);
  const __m512 m_old = _mm512_loadu_ps(t.m + i0);
  const __m512 m_new = _mm512_mask_max_ps(m_old, seen, m_old, _mm512_mul_ps(alpha, reduce16<true>(v)));
  // 0 where nothing had reached the row; 1 where nothing reaches it here.
  const __m512 c =
      _mm512_mask_blend_ps(seen, _mm512_set1_ps(1.0f), exp2_by(_mm512_sub_ps(m_old, m_new), kExp2Degree6));
  _mm512_storeu_ps(t.m + i0, m_new);
#pragma GCC unroll 16
  for (int r = 0; r < 16; ++r) {
    const float* s = t.st + (r0 + r) * t.k_tile;
    uint16_t* p = t.p + (r0 + r) * t.k_tile;
    const __m512 shift = _mm512_set1_ps(t.m[i0 + r]);
    __m512 sum = zero;
    if (Whole || lo[r] < hi[r]) {
      for (int64_t k = kb; k < ke; k += kAmxCols) {
        const __m512 p0 = visible<Whole>(
            exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k), alpha, shift)), zero, lo[r], hi[r], k);
        const __m512 p1 = visible<Whole>(
            exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k + 16), alpha, shift)), zero, lo[r], hi[r],
            k + 16);
        sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
        store_p<Parts>(p + k, kAmxStripRows * t.k_tile, p0, p1);
      }
    } else {
      for (int a = 0; a < Parts; ++a) {
        uint16_t* pa = p + a * kAmxStripRows * t.k_tile;
        for (int64_t k = kb; k < ke; k += kAmxCols) _mm512_storeu_si512(pa + k, _mm512_setzero_si512());
      }
    }
    v[reduce16_slot(r)] = sum;
  }
  _mm512_storeu_ps(t.l + i0, _mm512_fmadd_ps(_mm512_loadu_ps(t.l + i0), c, reduce16<false>(v)));
  alignas(64) float cs[16];
  _mm512_store_ps(cs, c);
  for (int r = 0; r < 16; ++r) {
    if (cs[r] == 1.0f) continue;
    float* acc = t.acc + (i0 + r) * t.dp;
    const __m512 cv = _mm512_set1_ps(cs[r]);
    for (int64_t e = 0; e < t.dp; e += 16) _mm512_storeu_ps(acc + e, _mm512_mul_ps(_mm512_loadu_ps(acc + e), cv));
  }
}

// softmax_rows16<true> for a whole strip of 32 rows (i0.., strip rows 0..31 of t.st), cut into
// units of 32 scores of one row so that they can run between the next strip's tile products:
// begin() takes the rows' maxima and corrections, step(n) does n units (exponentials, parts of
// P, partial sums), finish() the rest and the sums, l and the rescale of acc.
template <int Parts>
struct StripSoftmax {
  const AmxTile* t = nullptr;
  int64_t i0 = 0, kb = 0, ke = 0;
  int64_t row = 0, k = 0;
  __m512 alpha, c[2];
  __m512 sum[32];
  float shift[32];

  DRING_AMX_INLINE void begin() {
    operands_written();  // the strip's scores, stored by tile stores
    alpha = _mm512_set1_ps(t->alpha);
#pragma GCC unroll 2
    for (int g = 0; g < 2; ++g) {
      __m512 v[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) {
        const float* s = t->st + (16 * g + r) * t->k_tile;
        __m512 mx = _mm512_loadu_ps(s + kb);
        for (int64_t kk = kb + 16; kk < ke; kk += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + kk));
        v[reduce16_slot(r)] = mx;
      }
      float* m = t->m + i0 + 16 * g;
      const __m512 m_old = _mm512_loadu_ps(m);
      const __m512 m_new = _mm512_max_ps(m_old, _mm512_mul_ps(alpha, reduce16<true>(v)));
      c[g] = exp2_by(_mm512_sub_ps(m_old, m_new), kExp2Degree6);
      _mm512_storeu_ps(m, m_new);
      _mm512_storeu_ps(shift + 16 * g, m_new);
    }
    for (int r = 0; r < 32; ++r) sum[r] = _mm512_setzero_ps();
    row = 0;
    k = kb;
  }
  DRING_AMX_INLINE void step(int n) {
    for (; n > 0 && row < 32; --n) {
      const float* s = t->st + row * t->k_tile;
      const __m512 sh = _mm512_set1_ps(shift[row]);
      const __m512 p0 = exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k), alpha, sh));
      const __m512 p1 = exp2_nonpositive<Parts>(_mm512_fmsub_ps(_mm512_loadu_ps(s + k + 16), alpha, sh));
      sum[row] = _mm512_add_ps(sum[row], _mm512_add_ps(p0, p1));
      store_p<Parts>(t->p + row * t->k_tile + k, kAmxStripRows * t->k_tile, p0, p1);
      k += kAmxCols;
      if (k == ke) {
        k = kb;
        ++row;
      }
    }
  }
  DRING_AMX_INLINE void finish() {
    step(1 << 30);
#pragma GCC unroll 2
    for (int g = 0; g < 2; ++g) {
      __m512 v[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) v[reduce16_slot(r)] = sum[16 * g + r];
      float* l = t->l + i0 + 16 * g;
      _mm512_storeu_ps(l, _mm512_fmadd_ps(_mm512_loadu_ps(l), c[g], reduce16<false>(v)));
      alignas(64) float cs[16];
      _mm512_store_ps(cs, c[g]);
      for (int r = 0; r < 16; ++r) {
        if (cs[r] == 1.0f) continue;
        float* acc = t->acc + (i0 + 16 * g + r) * t->dp;
        const __m512 cv = _mm512_set1_ps(cs[r]);
        for (int64_t e = 0; e < t->dp; e += 16) _mm512_storeu_ps(acc + e, _mm512_mul_ps(_mm512_loadu_ps(acc + e), cv));
      }
    }
  }
};

// Runs n units of a StripSoftmax between tile products.
template <int Parts>
struct SoftmaxUnits {
  StripSoftmax<Parts>* sm;
  int n;
  DRING_AMX_INLINE void operator()() { sm->step(n); }
};

// Whether the 16 rows from i (tile rows) each see every key of [kb, ke) of the key tile at j0 (nk
// keys), as softmax_rows16<true> needs.
DRING_AMX_INLINE bool rows16_whole(const AmxTile& t, int64_t i, int64_t j0, int64_t nk, int64_t kb, int64_t ke) {
  if (ke > nk) return false;
  for (int64_t r = i; r < i + 16; ++r) {
    if (t.lo[r] - j0 > kb || t.hi[r] - j0 < ke) return false;
  }
  return true;
}
