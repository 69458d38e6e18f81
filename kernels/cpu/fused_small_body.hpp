// fused_small_body.hpp — one small block whole on the fused fp32 tile's primitives
// (attend_fused.hpp, fused_small_block): included by attend_fused.cpp once per ISA, right after
// fused_tile_body.hpp, whose register blocks, softmax and masks it reuses. No include guard.
//
// A small block (a dilation leaving 8-64 rows per segment) is all one key tile, so nothing of the
// tile loop's machinery pays: the output rows are updated in place — rescaled, P V added and
// divided by the new sum in one pass over each register block — and no state is copied in or
// out. K and V are read where they lie while they are few; past 16 rows a power-of-two row stride
// has them evict each other from L1 (pack_rows), so the caller passes kp and vp and they are
// copied there first. The next block's rows are prefetched a few lines per step of the work
// (RowsAhead says why): such blocks are bound by their rows' cache misses, not by arithmetic.

// The steps of small_block that prefetch a share of the next block's lines: one per transposed
// kW x kW tile, per packed key, per kW columns of e of each score register block, the softmax,
// and per P V register block.
int64_t small_block_steps(const FusedTile& t, int score_keys) {
  const int64_t tiles = (t.nq_pad / kW) * (t.d / kW);
  const int64_t score_blocks = ((t.nq_pad / kW + kNV - 1) / kNV) * ((t.n_keys + score_keys - 1) / score_keys);
  const int64_t pv_blocks = ((t.nq + kRB - 1) / kRB) * ((t.d / kW + kCV - 1) / kCV);
  return tiles + (t.kp != nullptr ? t.n_keys : 0) + score_blocks * (t.d / kW) + 1 + pv_blocks;
}

// st[j + r][u0 * kW + ...] = sum_e k[j + r][e] qt[e][u0 * kW + ...] for KB keys (k rows where
// they lie) and NV query vectors, kW columns of e at a time with a share of prefetches between.
template <int KB, int NV>
void small_score_block(const FusedTile& t, int64_t u0, int64_t j, RowsAhead& ahead, int share) {
  V acc[KB][NV];
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) acc[r][u] = zero();
  }
  const float* k = t.k + j * t.kv_stride;
  const float* qt = t.qt + u0 * kW;
  for (int64_t e0 = 0; e0 < t.d; e0 += kW) {
    accumulate(acc, kW, k + e0, 1, t.kv_stride, qt + e0 * t.ld, t.ld);
    ahead.prefetch(share);
  }
  float* st = t.st + j * t.lds + u0 * kW;
#pragma GCC unroll 8
  for (int r = 0; r < KB; ++r) {
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) store(st + r * t.lds + u * kW, acc[r][u]);
  }
}

// The score tile of NV query vectors from u0, KB keys at a time (the keys [first, end) some of
// its queries see; mask_scores sets the rest to -inf).
template <int KB, int NV>
void small_scores(const FusedTile& t, int64_t u0, int64_t first, int64_t end, RowsAhead& ahead, int share) {
  for (int64_t j = 0; j < t.n_keys; j += KB) {
    const int kb = static_cast<int>(t.n_keys - j < KB ? t.n_keys - j : KB);
    if (j + kb <= first || j >= end) continue;
    with_constant<KB>(kb, [&](auto rows) { small_score_block<rows(), NV>(t, u0, j, ahead, share); });
  }
}

// out[i + r][col, col + CV*kW) = (c * out + sum_j P^T[j][i + r] v[j]) / l for RB rows, over the
// keys [first, end) some of them see; a row that sees no key keeps its bits. If no row of the
// block has earlier state that weighs anything (c = 0: none yet, or a maximum so far below the
// new one that its weight rounds to 0; c * out is then 0 for any finite out), out is not read,
// and with `stream_ok` (t.stream_fresh, its rows aligned to whole vectors) written by streaming
// stores: a dilated block's out rows lie pages apart, and fetching each line only to overwrite it
// all held up the blocks' first pass by 10-15% (docs/benchmarks.md). rows_of then leaves such
// rows unprefetched.
template <int RB, int CV>
void small_pv_block(const FusedTile& t, float* out, int64_t out_stride, int64_t first, int64_t end, int64_t i,
                    int64_t col, bool stream_ok) {
  V acc[RB][CV];
  bool fresh = true;
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) fresh = fresh && t.c[i + r] == 0.0f;
  if (fresh) {
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
      for (int u = 0; u < CV; ++u) acc[r][u] = zero();
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const V c = bcast(t.c[i + r]);
#pragma GCC unroll 8
      for (int u = 0; u < CV; ++u) acc[r][u] = mul(load(out + (i + r) * out_stride + col + u * kW), c);
    }
  }
  accumulate(acc, end - first, t.st + first * t.lds + i, t.lds, 1, t.v + first * t.kv_stride + col, t.kv_stride);
  const bool streamed = fresh && stream_ok;
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    if (t.lo[i + r] >= t.hi[i + r]) continue;
    const V inv = bcast(1.0f / t.l[i + r]);
    float* row = out + (i + r) * out_stride + col;
    if (streamed) {
#pragma GCC unroll 8
      for (int u = 0; u < CV; ++u) stream(row + u * kW, mul(acc[r][u], inv));
    } else {
#pragma GCC unroll 8
      for (int u = 0; u < CV; ++u) store(row + u * kW, mul(acc[r][u], inv));
    }
  }
}

void small_block(const FusedTile& in, float* out, int64_t out_stride, bool full, RowsAhead& ahead) {
  FusedTile t = in;
  const int64_t vectors = t.nq_pad / kW;
  // One query vector (the blocks of 8-16 rows): twice the keys per score register block, so that
  // as many accumulation chains are in flight as the FMA units need.
  const int score_keys = vectors == 1 ? 2 * kKB : kKB;
  const int64_t steps = small_block_steps(t, score_keys);
  const int share = static_cast<int>((ahead.lines() + steps - 1) / steps);
  for (int64_t i0 = 0; i0 < t.nq_pad; i0 += kW) {  // qt, as transpose_queries
    const int64_t n = t.nq - i0 < kW ? (t.nq > i0 ? t.nq - i0 : 0) : kW;
    for (int64_t e0 = 0; e0 < t.d; e0 += kW) {
      transpose_rows(t.q + i0 * t.q_stride + e0, t.q_stride, static_cast<int>(n), t.alpha, t.qt + e0 * t.ld + i0, t.ld);
      ahead.prefetch(share);
    }
  }
  if (t.kp != nullptr) {
    for (int64_t j = 0; j < t.n_keys; ++j) {
      pack_rows(t.k + j * t.kv_stride, t.kv_stride, 1, t.d, t.kp + j * t.d);
      pack_rows(t.v + j * t.kv_stride, t.kv_stride, 1, t.d, t.vp + j * t.d);
      ahead.prefetch(share);
    }
    t.k = t.kp;
    t.v = t.vp;
    t.kv_stride = t.d;
  }
  for (int64_t u0 = 0; u0 < vectors; u0 += kNV) {
    const int nv = static_cast<int>(vectors - u0 < kNV ? vectors - u0 : kNV);
    int64_t first = 0, end = t.n_keys;
    if (!full) rows_key_span(t, u0 * kW, nv * kW, 0, t.n_keys, &first, &end);
    if (nv == 1) {
      small_scores<2 * kKB, 1>(t, u0, first, end, ahead, share);
    } else {
      with_constant<kNV>(nv, [&](auto cols) { small_scores<kKB, cols()>(t, u0, first, end, ahead, share); });
    }
  }
  if (!full) mask_scores(t, 0, t.n_keys);
  softmax(t, t.n_keys);
  ahead.prefetch(share);
  const int64_t col_vectors = t.d / kW;
  const bool stream_ok =
      t.stream_fresh &&
      (reinterpret_cast<uintptr_t>(out) | static_cast<uintptr_t>(out_stride) * sizeof(float)) % sizeof(V) == 0;
  for (int64_t i = 0; i < t.nq; i += kRB) {
    const int rb = static_cast<int>(t.nq - i < kRB ? t.nq - i : kRB);
    int64_t first = 0, end = t.n_keys;
    if (!full) rows_key_span(t, i, rb, 0, t.n_keys, &first, &end);
    for (int64_t u0 = 0; u0 < col_vectors; u0 += kCV) {
      const int cv = static_cast<int>(col_vectors - u0 < kCV ? col_vectors - u0 : kCV);
      with_constant<kRB>(rb, [&](auto rows) {
        with_constant<kCV>(cv, [&](auto cols) {
          small_pv_block<rows(), cols()>(t, out, out_stride, first, end, i, u0 * kW, stream_ok);
        });
      });
      ahead.prefetch(share);
    }
  }
  ahead.prefetch(static_cast<int>(ahead.lines()));  // what skipped steps left
}
