// attend_rows.hpp — what the files of the CPU forward kernel share (attend.cpp: the work items and
// the tiles; attend_small.cpp: the blocks small enough to run whole): a block's rows typed, a
// row's (out, lse) as running online-softmax state, a fused tile's rows and row state, and the
// small-block paths' entry points. Internal to kernels/cpu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>

#include "attend_fused.hpp"
#include "bf16_matmul.hpp"
#include "dring/kernels/attend.hpp"
#include "vector_math.hpp"

namespace dring::kernels::cpu::forward {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// An AttendBlock with its pointers typed: T is float (fp32) or uint16_t (bf16).
template <class T>
struct Block {
  const T* q;
  int64_t q_stride;
  const T* k;
  const T* v;
  int64_t kv_stride;
  T* out;
  int64_t out_stride;
  float* lse;
  int64_t lse_stride;
  int64_t n_q, n_k;
  BlockMask mask;
  bool trivial;  // every key visible to every row
  explicit Block(const AttendBlock& b)
      : q(static_cast<const T*>(b.q)), q_stride(b.q_stride), k(static_cast<const T*>(b.k)),
        v(static_cast<const T*>(b.v)), kv_stride(b.kv_stride), out(static_cast<T*>(b.out)),
        out_stride(b.out_stride), lse(b.lse), lse_stride(b.lse_stride), n_q(b.n_q), n_k(b.n_k), mask(b.mask),
        trivial(b.mask.trivial()) {}
  // The visible keys of row i: [*begin, *end) (empty when *begin >= *end).
  void keys_of(int64_t i, int64_t* begin, int64_t* end) const {
    *begin = trivial ? 0 : mask.key_begin(i, n_k);
    *end = trivial ? n_k : mask.key_end(i, n_k);
  }
  // The keys some row of [i0, i1) may see: every row's keys lie in [first row's first key, last
  // row's last key), both ends being monotone.
  void keys_of_rows(int64_t i0, int64_t i1, int64_t* begin, int64_t* end) const {
    int64_t unused = 0;
    keys_of(i0, begin, &unused);
    keys_of(i1 - 1, &unused, end);
  }
};

// (out, lse) of a row as running (m, l) in log2 units, acc being the out row itself.
inline void unpack(float lse, float* m, float* l) {
  *m = lse == kNegInf ? kNegInf : lse * kLog2e;
  *l = lse == kNegInf ? 0.0f : 1.0f;
}
inline float lse_of(float m, float l) { return l == 0.0f ? kNegInf : (m + std::log2(l)) * kLn2; }
inline float pack(float* acc, int64_t d, float m, float l) {
  if (l == 0.0f) return kNegInf;  // no key has reached the row yet; acc is still 0
  if (l != 1.0f) scale(acc, d, 1.0f / l);
  return lse_of(m, l);
}

inline int64_t round_up_pad(int64_t n) { return (n + kFusedQueryPad - 1) / kFusedQueryPad * kFusedQueryPad; }

// A fused tile's (FusedTile, AmxTile) rows: the item's nq query rows from i0, and the keys
// [key_begin, key_end) its rows may see.
template <class Tile, class T>
void point_at_rows(Tile& t, const Block<T>& b, int64_t i0, int64_t nq, int64_t key_begin, int64_t key_end) {
  t.q = b.q + i0 * b.q_stride;
  t.q_stride = b.q_stride;
  t.k = b.k + key_begin * b.kv_stride;
  t.v = b.v + key_begin * b.kv_stride;
  t.kv_stride = b.kv_stride;
  t.nq = nq;
  t.n_keys = key_end - key_begin;
}

// Row i of a fused tile (its query row i0 + i; i >= nq is padding, which sees no key): its
// visible keys relative to key_begin, clamped to [0, n_keys], into lo[i], hi[i], and its lse
// unpacked into m[i], l[i] (padding: -inf, 0).
template <class T>
void unpack_tile_row(const Block<T>& b, int64_t i0, int64_t i, int64_t nq, int64_t key_begin, int64_t n_keys,
                     int32_t* lo, int32_t* hi, float* m, float* l) {
  int64_t row_begin = 0, row_end = 0;
  if (i < nq) b.keys_of(i0 + i, &row_begin, &row_end);
  lo[i] = static_cast<int32_t>(std::clamp(row_begin - key_begin, int64_t{0}, n_keys));
  hi[i] = static_cast<int32_t>(std::clamp(row_end - key_begin, int64_t{0}, n_keys));
  m[i] = kNegInf;
  l[i] = 0.0f;
  if (i < nq) unpack(b.lse[(i0 + i) * b.lse_stride], &m[i], &l[i]);
}

// A fused tile's per-row state from the scratch, pad entries each: m, l, c into t, and the rows'
// key intervals lo, hi (into t and returned, writable, for unpack_tile_row).
inline std::pair<int32_t*, int32_t*> take_row_state(ScratchRegions& regions, int64_t pad, FusedTile& t) {
  t.m = regions.take<float>(pad);
  t.l = regions.take<float>(pad);
  t.c = regions.take<float>(pad);
  int32_t* lo = regions.take<int32_t>(pad);
  int32_t* hi = regions.take<int32_t>(pad);
  t.lo = lo;
  t.hi = hi;
  return {lo, hi};
}


// attend.cpp: the fused tile's keys per step, and its scratch floats per thread.
int64_t fused_key_tile(const AttendParams& p);
int64_t fused_floats(const AttendParams& p);

// attend_small.cpp: which blocks run whole (is_small), on the fused kernel (attend_small_fused,
// fp32 where a fused ISA runs) or row by row (attend_small, the others; scratch_floats =
// small_scratch_floats); the rows of the next block, for its prefetch (rows_of); and whether a
// call's small fp32 blocks write their rows' first values by streaming stores.
bool is_small(const AttendBlock& b, const AttendParams& p);
int64_t small_scratch_floats(const AttendParams& p);
template <class T>
void attend_small(const Block<T>& b, const AttendParams& prm, float alpha, float* scratch, int64_t scratch_floats,
                  RowsAhead* ahead);
void attend_small_fused(const Block<float>& b, const AttendParams& prm, float alpha, FusedIsa isa, float* scratch,
                        RowsAhead* ahead, bool stream_fresh);
RowsAhead rows_of(const AttendBlock& b, int64_t d, int64_t element_bytes, bool streamed);
bool streams_first_writes(std::span<const AttendBlock> blocks, std::span<const char> small, const AttendParams& prm);

}  // namespace dring::kernels::cpu::forward
