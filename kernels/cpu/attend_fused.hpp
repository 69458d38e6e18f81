// attend_fused.hpp — the fused fp32 forward tile: scores, online softmax and P V of one work item
// in micro-kernels of this project's own, for AVX-512 and for AVX2+FMA, picked at run time.
//
// The layout turns the softmax sideways so that it vectorises across queries. The item's query
// rows are packed once, transposed and pre-scaled: qt[e][i] = alpha * q[i][e] (alpha = scale *
// log2 e, so scores are in log2 units and any sign of scale is exact: max is taken after it).
// For each key tile the score tile is computed transposed, st[j][i] = sum_e k[j][e] qt[e][i],
// by a register block of KB keys x NV query vectors (K rows packed, one broadcast per key and
// e, NV vector loads of qt); a partial tile's scores outside each row's key interval become
// -inf (one compare per vector); the running max m, sum l and the correction c of a vector of
// queries are updated over the tile's rows; st becomes P^T in place; and acc[i] = c_i * acc[i] +
// sum_j P^T[j][i] v[j] by a register block of RB query rows x CV vectors of head_dim (V rows
// packed, P^T broadcast). The item's state (acc, m, l: the unpacked (out, lse)) lives in
// the caller's scratch; attend.cpp unpacks it before and packs it after. An item may hold several
// query tiles' rows (sub_rows each): each key tile is then packed once and the tile step runs for
// each sub-tile in turn, on one score tile, so the packing of K and V, whose strided loads miss,
// is paid once per key tile and item rather than once per query tile.
#pragma once

#include <cstdint>

#include "dring/kernels/attend.hpp"

namespace dring::kernels::cpu {

enum class FusedIsa { kNone, kAvx2, kAvx512 };

// The fused kernel params' kernel choice, the CPU and head_dim give (kNone: the sgemm tile).
FusedIsa fused_isa(const AttendParams& params);

// Query rows are padded to a multiple of this in qt, st, m, l, c.
constexpr int64_t kFusedQueryPad = 16;

// The row stride of qt and st for nq query rows: one cache line more than the padded rows, so
// that a column of them (read down by the P V and score blocks) does not fall into the few L1
// sets a power-of-two stride maps to.
constexpr int64_t fused_row_stride(int64_t nq) {
  return (nq + kFusedQueryPad - 1) / kFusedQueryPad * kFusedQueryPad + kFusedQueryPad;
}

// One work item's key range for the ISA body. lo/hi: each query row's visible keys [lo, hi)
// relative to k (0 <= lo, hi <= n_keys; lo >= hi for none; padding rows 0, 0).
struct FusedTile {
  const float* q = nullptr;  // the item's first row
  int64_t q_stride = 0;
  const float* k = nullptr;  // k and v at the range's first key
  const float* v = nullptr;
  int64_t kv_stride = 0;
  int64_t nq = 0;      // query rows
  int64_t nq_pad = 0;    // nq rounded up to kFusedQueryPad
  int64_t sub_rows = 0;  // query rows per sub-tile, a multiple of kFusedQueryPad
  int64_t ld = 0;        // row stride of qt: fused_row_stride(nq)
  int64_t lds = 0;       // row stride of st: fused_row_stride(sub_rows)
  int64_t n_keys = 0;
  int64_t d = 0;
  int64_t k_tile = 0;
  float alpha = 0.0f;
  const int32_t* lo = nullptr;  // [nq_pad]
  const int32_t* hi = nullptr;
  float* acc = nullptr;  // [nq][d], unnormalised output
  float* m = nullptr;    // [nq_pad], running max, log2 units
  float* l = nullptr;    // [nq_pad], running sum
  float* c = nullptr;    // [nq_pad], scratch: the tile's correction
  float* qt = nullptr;   // [d][ld], scratch
  float* st = nullptr;   // [k_tile][lds], scratch: one sub-tile's scores
  float* kp = nullptr;   // [k_tile][d], scratch: the key tile's k rows, packed
  float* vp = nullptr;   // [k_tile][d], and its v rows
  bool stream_fresh = false;  // small blocks: rows with no state yet may be written by streaming stores
};

// Runs every key tile of t on the ISA's body (isa must not be kNone).
void fused_key_tiles(FusedIsa isa, const FusedTile& t);

// The rows of the block after a small one (q, k, v, out: rows[t], stride[t] bytes apart,
// count[t] of them, row_bytes each: fp32 or bf16 storage), prefetched a few cache lines at a time
// while the small block computes. A dilated block's rows lie pages apart, where the hardware
// prefetchers do not follow; issued all at once, the prefetches queue behind the core's few
// outstanding misses and stall the very work they should overlap.
struct RowsAhead {
  const char* rows[4] = {};
  int64_t stride[4] = {};
  int64_t count[4] = {};
  int64_t row_bytes = 0;
  int64_t lines() const { return (count[0] + count[1] + count[2] + count[3]) * ((row_bytes + 63) / 64); }
  // The next n lines (or as many as are left).
  void prefetch(int n) {
    while (n > 0 && tensor_ < 4) {
      if (row_ >= count[tensor_]) {
        ++tensor_;
        row_ = 0;
        continue;
      }
      __builtin_prefetch(rows[tensor_] + row_ * stride[tensor_] + col_, 0, 3);
      col_ += 64;  // bytes per line
      if (col_ >= row_bytes) {
        col_ = 0;
        ++row_;
      }
      --n;
    }
  }

 private:
  int tensor_ = 0;
  int64_t row_ = 0, col_ = 0;
};

// One small block whole (fused_small_body.hpp): t holds all its n_keys keys as one tile (st of
// n_keys rows, lds == ld; acc unused; kp and vp null, or room for n_keys packed rows each, into
// which K and V are then copied first; m and l the rows' unpacked state, updated), and
// the out rows (out_stride apart) are updated in place, out = (c * out + P V) / l, for the rows
// that see a key; the others keep their bits. `full`: every row sees every key (lo, hi unread
// but for the rows' skip test).
// `ahead` (may be null): the next block's rows, prefetched along the way.
// With t.stream_fresh, rows with no earlier state may be written by streaming stores: call
// fused_streams_done before anything on another thread reads them.
void fused_small_block(FusedIsa isa, const FusedTile& t, float* out, int64_t out_stride, bool full, RowsAhead* ahead);

// Orders this thread's streaming stores before its later stores (a store fence).
void fused_streams_done();

}  // namespace dring::kernels::cpu
