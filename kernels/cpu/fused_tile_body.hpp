// fused_tile_body.hpp — the body of the fused fp32 forward tile (attend_fused.hpp says what it
// computes), written once over an ISA's primitives: attend_fused.cpp includes it once per ISA,
// inside that ISA's namespace and `#pragma GCC target` region, after defining V (a vector of kW
// floats), kExp2Floor, load, store, bcast, zero, add, sub, mul, fma, vmax, round_even,
// times_pow2, outside, zero_if_neg_inf, transpose_rows and the register blocks kKB x kNV
// (scores), kRB x kCV (P V) and kGroup (the softmax's vectors per pass). No include guard: it is
// included twice.
//
// K and V tiles are packed densely once per key tile (pack_rows says why) and used by every
// sub-tile of the item's query rows (key_tiles).
//
// Register use, per ISA: scores kKB * kNV accumulators, kNV loads of qt and a broadcast of k per
// step of e; P V kRB * kCV accumulators, kCV loads of v and a broadcast of P^T per key.

// f(std::integral_constant<int, n>{}) for a run-time n in [1, N]: the register blocks are
// templates, and the edges of a tile take the smaller ones.
template <int N, class F>
inline void with_constant(int n, F&& f) {
  if constexpr (N > 0) {
    if (n == N) return f(std::integral_constant<int, N>{});
    with_constant<N - 1>(n, f);
  }
}

// 2^t for t <= 0 (exactly 0 at and below kExp2Floor, so -inf gives 0), as exp2_nonpositive in
// vector_math.cpp: 2^f by the same degree-6 polynomial, scaled by 2^rint(t).
inline V exp2_nonpositive(V t) {
  t = vmax(t, bcast(kExp2Floor));
  const V n = round_even(t);
  const V f = sub(t, n);
  V p = bcast(1.546973199e-4f);
  p = fma(p, f, bcast(1.340043217e-3f));
  p = fma(p, f, bcast(9.618025603e-3f));
  p = fma(p, f, bcast(5.550327214e-2f));
  p = fma(p, f, bcast(2.402265121e-1f));
  p = fma(p, f, bcast(6.931472067e-1f));
  p = fma(p, f, bcast(1.0f));
  return times_pow2(p, n);
}

// n rows of d floats, stride apart, to dst densely. Rows a power of two of bytes apart (the
// [S, H, D] layout) fall in a few L1 sets and evict each other; packed, a tile stays in L1.
// The rows are prefetched a tile ahead (scores, prefetch_row): the hardware prefetchers do not
// follow rows that leave a 4 KiB page every few rows, and the copy would otherwise wait on each.
void pack_rows(const float* src, int64_t stride, int64_t n, int64_t d, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t e = 0; e < d; e += kW) store(dst + j * d + e, load(src + j * stride + e));
  }
}

// Row j of rows `stride` apart from `rows`, d floats, into L2.
inline void prefetch_row(const float* rows, int64_t stride, int64_t d, int64_t j) {
  for (int64_t e = 0; e < d; e += 64 / sizeof(float)) __builtin_prefetch(rows + j * stride + e, 0, 2);
}

// The register block both products are made of: acc[r][u] += sum_s a[s * a_step + r * a_row] *
// b[s * b_step + u * kW ...] over `steps` steps, R x U vectors in registers, a broadcast per r
// and U vector loads per step.
template <int R, int U>
__attribute__((always_inline)) inline void accumulate(V (&acc)[R][U], int64_t steps, const float* a, int64_t a_step,
                                                      int64_t a_row, const float* b, int64_t b_step) {
  for (int64_t s = 0; s < steps; ++s) {
    V bv[U];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) bv[u] = load(b + s * b_step + u * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V ab = bcast(a[s * a_step + r * a_row]);
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) acc[r][u] = fma(ab, bv[u], acc[r][u]);
    }
  }
}

// st[r][:] = sum_e k[r][e] qt[e][:] for KB keys (rows d apart) and NV query vectors.
template <int KB, int NV>
void score_block(const FusedTile& t, const float* qt, const float* k, float* st) {
  V acc[KB][NV];
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) acc[r][u] = zero();
  }
  accumulate(acc, t.d, k, 1, t.d, qt, t.ld);
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) store(st + r * t.lds + u * kW, acc[r][u]);
  }
}

// The keys of [j0, j0 + nk) that any of n rows sees (row r: [lo[r], hi[r])), as [*first, *end)
// relative to j0; none: *first == *end. The forward's and the backward's partial tiles both skip
// what lies outside it.
void key_span(const int32_t* lo, const int32_t* hi, int64_t n, int64_t j0, int64_t nk, int64_t* first, int64_t* end) {
  int64_t a = nk, b = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t l = lo[r] - j0 > 0 ? lo[r] - j0 : 0;
    const int64_t h = hi[r] - j0 < nk ? hi[r] - j0 : nk;
    if (l >= h) continue;
    a = l < a ? l : a;
    b = h > b ? h : b;
  }
  *first = a;
  *end = b > a ? b : a;
}

// key_span of rows [i, i + n) of t (rows at or past nq, the padding, see none).
void rows_key_span(const FusedTile& t, int64_t i, int64_t n, int64_t j0, int64_t nk, int64_t* first, int64_t* end) {
  key_span(t.lo + i, t.hi + i, i + n < t.nq ? n : t.nq - i, j0, nk, first, end);
}

// The transposed score tile of nk keys from k (packed, rows d apart; the tile's first key is j0).
// Meanwhile the next key tile's k and v rows (n_next rows from next_k, next_v) are prefetched
// into L2, spread over the first pass, a key block's worth of rows per block: a tile of compute
// ahead of their packing. On a partial tile a register block no query of its columns sees is
// skipped (the diagonal tile of a causal block: about half); mask_scores then sets it to -inf.
void scores(const FusedTile& t, const float* k, int64_t j0, int64_t nk, bool full, const float* next_k,
            const float* next_v, int64_t n_next) {
  const int64_t vectors = t.nq_pad / kW;
  for (int64_t u0 = 0; u0 < vectors; u0 += kNV) {
    const int nv = static_cast<int>(vectors - u0 < kNV ? vectors - u0 : kNV);
    const float* qt = t.qt + u0 * kW;
    float* st = t.st + u0 * kW;
    int64_t first = 0, end = nk;
    if (!full) rows_key_span(t, u0 * kW, nv * kW, j0, nk, &first, &end);
    for (int64_t j = 0; j < nk; j += kKB) {
      if (u0 == 0) {
        for (int64_t r = j; r < j + kKB && r < n_next; ++r) {
          prefetch_row(next_k, t.kv_stride, t.d, r);
          prefetch_row(next_v, t.kv_stride, t.d, r);
        }
      }
      const int kb = static_cast<int>(nk - j < kKB ? nk - j : kKB);
      if (j + kb <= first || j >= end) continue;
      with_constant<kKB>(kb, [&](auto rows) {
        with_constant<kNV>(nv, [&](auto cols) {
          score_block<rows(), cols()>(t, qt, k + j * t.d, st + j * t.lds);
        });
      });
    }
  }
}

// -inf where key j0 + j is outside query i's [lo, hi).
void mask_scores(const FusedTile& t, int64_t j0, int64_t nk) {
  for (int64_t j = 0; j < nk; ++j) {
    float* row = t.st + j * t.lds;
    const auto key = static_cast<int32_t>(j0 + j);
    for (int64_t i = 0; i < t.nq_pad; i += kW) store(row + i, outside(load(row + i), key, t.lo + i, t.hi + i));
  }
}

// The online-softmax update of NG query vectors from column u0 on: m, l and c updated, st
// turned into P^T. A column that sees no key keeps m = -inf and gets c = 0, l = 0.
template <int NG>
void softmax_columns(const FusedTile& t, int64_t u0, int64_t nk) {
  V mx[NG], mu[NG], sum[NG];
  const int64_t col = u0 * kW;
#pragma GCC unroll 8
  for (int g = 0; g < NG; ++g) mx[g] = load(t.m + col + g * kW);
  for (int64_t j = 0; j < nk; ++j) {
    const float* row = t.st + j * t.lds + col;
#pragma GCC unroll 8
    for (int g = 0; g < NG; ++g) mx[g] = vmax(mx[g], load(row + g * kW));
  }
#pragma GCC unroll 8
  for (int g = 0; g < NG; ++g) {
    mu[g] = zero_if_neg_inf(mx[g]);  // never -inf - -inf
    sum[g] = zero();
  }
  for (int64_t j = 0; j < nk; ++j) {
    float* row = t.st + j * t.lds + col;
#pragma GCC unroll 8
    for (int g = 0; g < NG; ++g) {
      const V p = exp2_nonpositive(sub(load(row + g * kW), mu[g]));
      store(row + g * kW, p);
      sum[g] = add(sum[g], p);
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < NG; ++g) {
    const V c = exp2_nonpositive(sub(load(t.m + col + g * kW), mu[g]));
    store(t.c + col + g * kW, c);
    store(t.l + col + g * kW, fma(load(t.l + col + g * kW), c, sum[g]));
    store(t.m + col + g * kW, mx[g]);
  }
}

void softmax(const FusedTile& t, int64_t nk) {
  const int64_t vectors = t.nq_pad / kW;
  int64_t u = 0;
  for (; u + kGroup <= vectors; u += kGroup) softmax_columns<kGroup>(t, u, nk);
  for (; u < vectors; ++u) softmax_columns<1>(t, u, nk);
}

// acc[i + r][col, col + CV*kW) = c[i + r] * acc + sum_j P^T[j][i + r] v[j][...] for RB rows.
template <int RB, int CV>
void pv_block(const FusedTile& t, const float* v, int64_t first, int64_t end, int64_t i, int64_t col) {
  V acc[RB][CV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    const V c = bcast(t.c[i + r]);
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) acc[r][u] = mul(load(t.acc + (i + r) * t.d + col + u * kW), c);
  }
  accumulate(acc, end - first, t.st + first * t.lds + i, t.lds, 1, v + first * t.d + col, t.d);
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) store(t.acc + (i + r) * t.d + col + u * kW, acc[r][u]);
  }
}

// acc = c * acc + P V over the tile's nk keys from v (packed, rows d apart; the tile's first key
// is j0). On a partial tile each block of rows takes only the keys one of them sees: P is 0
// elsewhere, so that is exact.
void pv(const FusedTile& t, const float* v, int64_t j0, int64_t nk, bool full) {
  const int64_t vectors = t.d / kW;
  for (int64_t i = 0; i < t.nq; i += kRB) {
    const int rb = static_cast<int>(t.nq - i < kRB ? t.nq - i : kRB);
    int64_t first = 0, end = nk;
    if (!full) rows_key_span(t, i, rb, j0, nk, &first, &end);  // none: acc is only rescaled
    for (int64_t u0 = 0; u0 < vectors; u0 += kCV) {
      const int cv = static_cast<int>(vectors - u0 < kCV ? vectors - u0 : kCV);
      with_constant<kRB>(rb, [&](auto rows) {
        with_constant<kCV>(cv, [&](auto cols) { pv_block<rows(), cols()>(t, v, first, end, i, u0 * kW); });
      });
    }
  }
}

// The rows [s0, s0 + sub_rows) of t as a tile of their own: the same packed qt and key range,
// their slice of the state, and the shared score tile.
FusedTile sub_tile(const FusedTile& t, int64_t s0) {
  FusedTile s = t;
  s.nq = t.nq - s0 < t.sub_rows ? t.nq - s0 : t.sub_rows;
  s.nq_pad = (t.nq_pad - s0 < t.sub_rows ? t.nq_pad - s0 : t.sub_rows);
  s.qt = t.qt + s0;
  s.acc = t.acc + s0 * t.d;
  s.lo = t.lo + s0;
  s.hi = t.hi + s0;
  s.m = t.m + s0;
  s.l = t.l + s0;
  s.c = t.c + s0;
  return s;
}

// qt[e][i] = alpha * q[i][e], the padding columns 0: kW x kW blocks transposed in registers.
void transpose_queries(const FusedTile& t) {
  for (int64_t i0 = 0; i0 < t.nq_pad; i0 += kW) {
    const int64_t n = t.nq - i0 < kW ? (t.nq > i0 ? t.nq - i0 : 0) : kW;
    for (int64_t e0 = 0; e0 < t.d; e0 += kW) {
      transpose_rows(t.q + i0 * t.q_stride + e0, t.q_stride, static_cast<int>(n), t.alpha, t.qt + e0 * t.ld + i0, t.ld);
    }
  }
}

void key_tiles(const FusedTile& t) {
  transpose_queries(t);
  // Rows already dense (a packed exchange message, a single head) are used where they are.
  const bool dense = t.kv_stride == t.d;
  for (int64_t j0 = 0; j0 < t.n_keys; j0 += t.k_tile) {
    const int64_t nk = t.n_keys - j0 < t.k_tile ? t.n_keys - j0 : t.k_tile;
    const int64_t j_next = j0 + nk, n_next = t.n_keys - j_next < t.k_tile ? t.n_keys - j_next : t.k_tile;
    const float* k = dense ? t.k + j0 * t.d : t.kp;
    const float* v = dense ? t.v + j0 * t.d : t.vp;
    bool packed = dense, first = true;
    // Each sub-tile of query rows runs the whole tile step on the key tile packed once for all.
    for (int64_t s0 = 0; s0 < t.nq; s0 += t.sub_rows) {
      const FusedTile s = sub_tile(t, s0);
      bool full = true, any = false;
      for (int64_t i = 0; i < s.nq; ++i) {
        const int64_t lo = s.lo[i], hi = s.hi[i];
        full = full && lo <= j0 && hi >= j0 + nk;
        any = any || ((lo > j0 ? lo : j0) < (hi < j0 + nk ? hi : j0 + nk));
      }
      if (!any) continue;  // no row of the sub-tile sees a key of this tile
      if (!packed) {
        pack_rows(t.k + j0 * t.kv_stride, t.kv_stride, nk, t.d, t.kp);
        pack_rows(t.v + j0 * t.kv_stride, t.kv_stride, nk, t.d, t.vp);
        packed = true;
      }
      // The next tile's rows are prefetched while the first sub-tile computes its scores.
      scores(s, k, j0, nk, full, t.k + j_next * t.kv_stride, t.v + j_next * t.kv_stride, first ? n_next : 0);
      first = false;
      if (!full) mask_scores(s, j0, nk);
      softmax(s, nk);
      pv(s, v, j0, nk, full);
    }
  }
}
