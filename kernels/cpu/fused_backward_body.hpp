// fused_backward_body.hpp — the body of the fused fp32 backward tile (attend_fused_backward.hpp
// says what it computes), written once over an ISA's primitives: attend_fused.cpp includes it once
// per ISA, right after fused_tile_body.hpp (whose exp2_nonpositive, accumulate and with_constant
// it uses), inside that ISA's namespace and target region. No include guard: it is included twice.
//
// Register blocks, set per ISA (attend_fused.cpp): pass 1 holds kScoresRB x kScoresUB vectors of
// S and as many of dP, and per step of e loads kScoresUB vectors of kt and of vt and broadcasts
// q and dout per row (where kRegisters holds them all at once; else kt's vectors, then vt's in the
// same registers); passes 2 and 3 hold kGradRB rows x kGradCV vectors of head_dim, with kGradCV
// loads and kGradRB broadcasts per step.

// Pass 1 on RB query rows from i and UB key vectors from column j.
template <int RB, int UB>
void grad_scores_block(const FusedGradTile& t, int64_t i, int64_t j) {
  V s[RB][UB], dp[RB][UB];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < UB; ++u) s[r][u] = dp[r][u] = zero();
  }
  const float* q = t.q + i * t.d;
  const float* dout = t.dout + i * t.d;
  for (int64_t e = 0; e < t.d; ++e) {
    if constexpr (2 * RB * UB + 2 * UB + 2 <= kRegisters) {
      // Both products' key vectors and broadcasts live at once (AVX-512: 30 of 32 registers).
      V kv[UB], vv[UB];
#pragma GCC unroll 8
      for (int u = 0; u < UB; ++u) {
        kv[u] = load(t.kt + e * t.ldk + j + u * kW);
        vv[u] = load(t.vt + e * t.ldk + j + u * kW);
      }
#pragma GCC unroll 8
      for (int r = 0; r < RB; ++r) {
        const V qb = bcast(q[r * t.d + e]);
        const V ob = bcast(dout[r * t.d + e]);
#pragma GCC unroll 8
        for (int u = 0; u < UB; ++u) {
          s[r][u] = fma(qb, kv[u], s[r][u]);
          dp[r][u] = fma(ob, vv[u], dp[r][u]);
        }
      }
    } else {
      // S's key vectors, then dP's in the same registers (AVX2: 15 of 16).
      const auto product = [&](V(&acc)[RB][UB], const float* rows, const float* cols) {
        V kv[UB];
#pragma GCC unroll 8
        for (int u = 0; u < UB; ++u) kv[u] = load(cols + e * t.ldk + j + u * kW);
#pragma GCC unroll 8
        for (int r = 0; r < RB; ++r) {
          const V b = bcast(rows[r * t.d + e]);
#pragma GCC unroll 8
          for (int u = 0; u < UB; ++u) acc[r][u] = fma(b, kv[u], acc[r][u]);
        }
      };
      product(s, q, t.kt);
      product(dp, dout, t.vt);
    }
  }
  const V scale = bcast(t.scale);
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    const V lse2 = bcast(t.lse2[i + r]);
    const V delta = bcast(t.delta[i + r]);
    float* p_row = t.p + (i + r) * t.ldp + j;
    float* ds_row = t.ds + (i + r) * t.ldp + j;
#pragma GCC unroll 8
    for (int u = 0; u < UB; ++u) {
      const V p = exp2_nonpositive(sub(s[r][u], lse2));
      store(p_row + u * kW, p);
      store(ds_row + u * kW, mul(mul(p, sub(dp[r][u], delta)), scale));
    }
  }
}

// Whether every row of the chunk sees every key (then no block is skipped).
bool chunk_full(const FusedGradTile& t) {
  for (int64_t i = 0; i < t.nq; ++i) {
    if (t.lo[i] != 0 || t.hi[i] != t.nk) return false;
  }
  return true;
}

// The query rows [*first, *end) of the chunk that see some key of [j, j + n).
void grad_keys_row_span(const FusedGradTile& t, int64_t j, int64_t n, int64_t* first, int64_t* end) {
  int64_t a = t.nq, b = 0;
  for (int64_t r = 0; r < t.nq; ++r) {
    if (t.lo[r] >= j + n || t.hi[r] <= j || t.lo[r] >= t.hi[r]) continue;
    a = r < a ? r : a;
    b = r + 1;
  }
  *first = a;
  *end = b > a ? b : a;
}

// Pass 1. On a partial chunk (a causal diagonal: about half) a block of rows x keys that none of
// its rows sees is skipped; the masking below sets its P and dS to 0.
void grad_scores(const FusedGradTile& t, bool full) {
  const int64_t vectors = t.nk_pad / kW;
  for (int64_t u0 = 0; u0 < vectors; u0 += kScoresUB) {
    const int ub = static_cast<int>(vectors - u0 < kScoresUB ? vectors - u0 : kScoresUB);
    for (int64_t i = 0; i < t.nq; i += kScoresRB) {
      const int rb = static_cast<int>(t.nq - i < kScoresRB ? t.nq - i : kScoresRB);
      if (!full) {
        int64_t first = 0, end = 0;
        key_span(t.lo + i, t.hi + i, rb, 0, t.nk, &first, &end);
        if (end <= u0 * kW || first >= (u0 + ub) * kW) continue;
      }
      with_constant<kScoresRB>(rb, [&](auto rows) {
        with_constant<kScoresUB>(ub, [&](auto cols) { grad_scores_block<rows(), cols()>(t, i, u0 * kW); });
      });
    }
  }
  // P = dS = 0 outside each row's visible keys and on the padding keys.
  for (int64_t i = 0; i < t.nq; ++i) {
    const int64_t lo = t.lo[i], hi = t.hi[i] > lo ? t.hi[i] : lo;
    float* p_row = t.p + i * t.ldp;
    float* ds_row = t.ds + i * t.ldp;
    for (int64_t c = 0; c < lo; ++c) p_row[c] = ds_row[c] = 0.0f;
    for (int64_t c = hi; c < t.nk_pad; ++c) p_row[c] = ds_row[c] = 0.0f;
  }
}

// out[j + r][col, col + CV*kW) += sum_s a[s][j + r] b[s][col...] over the chunk's query rows
// [s0, s1) (a: P or dS, b: dout or q; 0 for the other rows): pass 2 on RB key rows.
template <int RB, int CV>
void grad_kv_block(const FusedGradTile& t, const float* a, const float* b, float* out, int64_t j, int64_t col,
                   int64_t s0, int64_t s1) {
  V acc[RB][CV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) acc[r][u] = load(out + (j + r) * t.d + col + u * kW);
  }
  accumulate(acc, s1 - s0, a + s0 * t.ldp + j, t.ldp, 1, b + s0 * t.d + col, t.d);
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) store(out + (j + r) * t.d + col + u * kW, acc[r][u]);
  }
}

// dq[i + r][col...] += sum_s dS[i + r][s] k[s][col...] over the chunk's keys [f0, f1) (dS is 0
// for the others): pass 3.
template <int RB, int CV>
void grad_q_block(const FusedGradTile& t, int64_t i, int64_t col, int64_t f0, int64_t f1) {
  V acc[RB][CV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) acc[r][u] = load(t.dq + (i + r) * t.d + col + u * kW);
  }
  accumulate(acc, f1 - f0, t.ds + i * t.ldp + f0, 1, t.ldp, t.k + f0 * t.d + col, t.d);
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < CV; ++u) store(t.dq + (i + r) * t.d + col + u * kW, acc[r][u]);
  }
}

// Blocks of up to kGradRB rows of `rows` times kGradCV vectors of head_dim:
// f(rows block, cols block, row, col).
template <class F>
void over_row_blocks(int64_t rows, int64_t d, F&& f) {
  const int64_t vectors = d / kW;
  for (int64_t u0 = 0; u0 < vectors; u0 += kGradCV) {
    const int cv = static_cast<int>(vectors - u0 < kGradCV ? vectors - u0 : kGradCV);
    for (int64_t r0 = 0; r0 < rows; r0 += kGradRB) {
      const int rb = static_cast<int>(rows - r0 < kGradRB ? rows - r0 : kGradRB);
      with_constant<kGradRB>(rb, [&](auto rb_c) {
        with_constant<kGradCV>(cv, [&](auto cv_c) { f(rb_c, cv_c, r0, u0 * kW); });
      });
    }
  }
}

// fused_pack_key_tile (attend_fused_backward.hpp). Key blocks past nk transpose no rows: zeros.
void pack_key_tile(const float* k, const float* v, int64_t stride, int64_t nk, int64_t d, float alpha, float* kt,
                   float* vt, int64_t ldk, int64_t reach, float* kp) {
  for (int64_t j0 = 0; j0 < reach; j0 += kW) {
    const int n = static_cast<int>(std::clamp<int64_t>(nk - j0, 0, kW));
    const int64_t from = n > 0 ? j0 * stride : 0;  // no row is read when n is 0
    for (int64_t e0 = 0; e0 < d; e0 += kW) {
      transpose_rows(k + from + e0, stride, n, alpha, kt + e0 * ldk + j0, ldk);
      transpose_rows(v + from + e0, stride, n, 1.0f, vt + e0 * ldk + j0, ldk);
    }
  }
  pack_rows(k, stride, nk, d, kp);
}

// Passes 2 and 3 take, for each block of rows, only the keys (or query rows) where P and dS can
// be non-zero: exact, and about half of a causal diagonal chunk's work.
void backward_tile(const FusedGradTile& t) {
  const bool full = chunk_full(t);
  grad_scores(t, full);
  over_row_blocks(t.nk, t.d, [&](auto rb, auto cv, int64_t j, int64_t col) {
    int64_t s0 = 0, s1 = t.nq;
    if (!full) grad_keys_row_span(t, j, rb(), &s0, &s1);
    grad_kv_block<rb(), cv()>(t, t.p, t.dout, t.dv, j, col, s0, s1);
    grad_kv_block<rb(), cv()>(t, t.ds, t.q, t.dk, j, col, s0, s1);
  });
  over_row_blocks(t.nq, t.d, [&](auto rb, auto cv, int64_t i, int64_t col) {
    int64_t f0 = 0, f1 = t.nk;
    if (!full) key_span(t.lo + i, t.hi + i, rb(), 0, t.nk, &f0, &f1);
    grad_q_block<rb(), cv()>(t, i, col, f0, f1);
  });
}
