// attend_small.cpp — the CPU forward's blocks small enough to run whole (a dilation that leaves a
// few rows per segment): which they are, the fused whole-block path (fp32 where a fused ISA
// runs), the row-by-row path (bf16, or no fused ISA), the next block's prefetch and the choice
// to stream first writes. attend.cpp gathers them into work items.

#include <algorithm>
#include <limits>

#include <unistd.h>

#include "attend_rows.hpp"
#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "f32_rows.hpp"

namespace dring::kernels::cpu::forward {

namespace {

// Past this many keys a small block's strided K and V rows are packed (fused_small_block).
constexpr int64_t kSmallPackKeys = 16;

// Scratch floats of attend_small_fused for a block of n_q x n_k: qt, st, m, l, c, lo, hi, and
// past kSmallPackKeys keys the packed K and V.
int64_t small_fused_floats(int64_t n_q, int64_t n_k, int64_t d) {
  const int64_t ld = fused_row_stride(n_q);
  const int64_t packed = n_k > kSmallPackKeys ? 2 * region_floats(n_k * d, 4) : 0;
  return region_floats(d * ld, 4) + region_floats(n_k * ld, 4) + 5 * region_floats(round_up_pad(n_q), 4) + packed;
}

// Floats attend_small packs a block of n_q x n_k into: scores, then q, k, v and out rows.
int64_t small_pack_floats_of(int64_t n_q, int64_t n_k, int64_t d) { return n_k + (2 * n_q + 2 * n_k) * d; }

// Whether a bf16 block's widened rows can run whole on the fused kernel: the limits is_small puts
// on fp32 blocks there, and its scratch after the packed rows.
bool bf16_small_fused_fits(int64_t n_q, int64_t n_k, const AttendParams& p, int64_t scratch_floats) {
  return n_q * n_k <= p.fused_small_block_scores && n_k <= fused_key_tile(p) &&
         region_floats(small_pack_floats_of(n_q, n_k, p.head_dim), 4) + small_fused_floats(n_q, n_k, p.head_dim) <=
             scratch_floats;
}

// One core's L2 cache in bytes (1 MiB where the system does not say).
int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return reported > 0 ? static_cast<int64_t>(reported) : int64_t{1} << 20;
  }();
  return bytes;
}

}  // namespace

// Scratch of the direct path: the score tile's (fp32), the whole thread's scratch (bf16, which
// must pack).
int64_t small_scratch_floats(const AttendParams& p) {
  return p.dtype == DType::kBF16 ? workspace_floats_per_thread(p) : p.q_tile * p.k_tile;
}

// A bf16 block takes the direct path only when it fits the packed scratch; else it is tiled. fp32
// where a fused ISA runs has a limit of its own (AttendParams::fused_small_block_scores), and a
// block whole on the fused kernel is one of its key tiles: no more keys than the tiles take at a
// time, and no more scratch than they use (a skinny block, 1 x 4096 or 4096 x 1, is tiled).
bool is_small(const AttendBlock& b, const AttendParams& p) {
  if (p.dtype == DType::kF32 && fused_isa(p) != FusedIsa::kNone) {
    return b.n_q * b.n_k <= p.fused_small_block_scores && b.n_k <= fused_key_tile(p) &&
           small_fused_floats(b.n_q, b.n_k, p.head_dim) <= fused_floats(p);
  }
  if (b.n_q * b.n_k > p.small_block_scores) return false;
  return p.dtype != DType::kBF16 || small_pack_floats_of(b.n_q, b.n_k, p.head_dim) <= small_scratch_floats(p);
}

// Direct path for tiny blocks (a dilation that leaves a few rows per segment) in bf16, or where no
// fused ISA runs (attend_small_fused takes the others): per query row, one
// fused online-softmax update (attend_row) per chunk of keys. The rows of a dilated block lie r
// rows apart, often a page or more: when the block fits in the scratch, its strided q, k, v and
// out rows are first copied there in one sweep (many cache misses in flight at once, as in
// sgemm's packing) and out is copied back at the end. On the 8x8 and 16x16 dilated rows of
// dring_kernel_bench this was about 1.8x faster than the same code on the strided rows. bf16
// blocks are always packed (widened on the way in, rounded on the way out).
template <class T>
void attend_small(const Block<T>& b, const AttendParams& prm, float alpha, float* scratch, int64_t scratch_floats,
                  RowsAhead* ahead) {
  const int64_t d = prm.head_dim;
  float* scores = scratch;
  const bool packed = (2 * b.n_q + 2 * b.n_k) * d + b.n_k <= scratch_floats;
  DRING_ASSERT(packed || !kIsBf16<T>);  // is_small sends bf16 blocks that do not fit to the tiles
  // The packed rows after the scores: q [n_q, d], k and v [n_k, d], out [n_q, d].
  auto space = [&](int64_t rows_before) { return packed ? scratch + b.n_k + rows_before * d : nullptr; };
  int64_t q_stride = 0, k_stride = 0, v_stride = 0, out_stride = 0;
  const float* q = f32_rows(b.q, b.q_stride, b.n_q, d, space(0), packed, &q_stride);
  const float* k = f32_rows(b.k, b.kv_stride, b.n_k, d, space(b.n_q), packed, &k_stride);
  const float* v = f32_rows(b.v, b.kv_stride, b.n_k, d, space(b.n_q + b.n_k), packed, &v_stride);
  float* out = f32_rows(b.out, b.out_stride, b.n_q, d, space(b.n_q + 2 * b.n_k), packed, &out_stride);
  if constexpr (kIsBf16<T>) {
    // The widened rows as an fp32 block of their own, run whole on the fused kernel where one runs
    // and its scratch fits after them (bf16_small_fused_fits).
    AttendParams f32 = prm;  // the fused kernel the same params choose for fp32 rows
    f32.dtype = DType::kF32;
    const FusedIsa isa = fused_isa(f32);
    const int64_t used = region_floats(small_pack_floats_of(b.n_q, b.n_k, d), 4);
    if (isa != FusedIsa::kNone && bf16_small_fused_fits(b.n_q, b.n_k, f32, scratch_floats)) {
      AttendBlock w{};
      w.q = q;
      w.q_stride = q_stride;
      w.k = k;
      w.v = v;
      w.kv_stride = d;
      w.out = out;
      w.out_stride = out_stride;
      w.lse = b.lse;
      w.lse_stride = b.lse_stride;
      w.n_q = b.n_q;
      w.n_k = b.n_k;
      w.mask = b.mask;
      attend_small_fused(Block<float>(w), f32, alpha, isa, scratch + used, ahead, false);
      store_rows(out, out_stride, b.out, b.out_stride, b.n_q, d);
      return;
    }
  }
  const int64_t chunk = packed ? std::max<int64_t>(b.n_k, 1) : scratch_floats;
  for (int64_t i = 0; i < b.n_q; ++i) {
    int64_t key_begin = 0, key_end = 0;
    b.keys_of(i, &key_begin, &key_end);
    if (key_begin >= key_end) continue;  // no visible key: the row stays as it was
    float m = 0.0f, l = 0.0f;
    unpack(b.lse[i * b.lse_stride], &m, &l);
    float* acc = out + i * out_stride;
    for (int64_t j0 = key_begin; j0 < key_end; j0 += chunk) {
      attend_row(q + i * q_stride, k + j0 * k_stride, k_stride, v + j0 * v_stride, v_stride,
                 std::min(chunk, key_end - j0), d, alpha, scores, &m, &l, acc);
    }
    b.lse[i * b.lse_stride] = pack(acc, d, m, l);
  }
  store_rows(out, out_stride, b.out, b.out_stride, b.n_q, d);  // the packed out rows back
}

template void attend_small<float>(const Block<float>&, const AttendParams&, float, float*, int64_t, RowsAhead*);
template void attend_small<uint16_t>(const Block<uint16_t>&, const AttendParams&, float, float*, int64_t, RowsAhead*);



// The direct path of a small fp32 block where a fused ISA runs: the whole block as one key tile
// of the fused kernel (fused_small_block), its out rows updated in place, its lse packed here,
// and the next block's rows (`ahead`, may be null) prefetched along the way. Against the row by
// row attend_small below, on the 8x8 and 16x16 dilated rows of dring_kernel_bench: about 3x less
// compute with the rows in cache, 1.5-2x less time with them in memory (docs/benchmarks.md).
void attend_small_fused(const Block<float>& b, const AttendParams& prm, float alpha, FusedIsa isa, float* scratch,
                        RowsAhead* ahead, bool stream_fresh) {
  const int64_t nq = b.n_q;
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(0, nq, &key_begin, &key_end);
  if (key_begin >= key_end) return;  // no row sees a key: all stay as they were
  const int64_t pad = round_up_pad(nq);
  FusedTile t;
  point_at_rows(t, b, 0, nq, key_begin, key_end);
  t.nq_pad = pad;
  t.sub_rows = pad;
  t.ld = t.lds = fused_row_stride(nq);
  t.d = prm.head_dim;
  t.k_tile = t.n_keys;
  t.alpha = alpha;
  t.stream_fresh = stream_fresh;
  ScratchRegions regions(scratch);
  t.qt = regions.take<float>(t.d * t.ld);
  t.st = regions.take<float>(t.n_keys * t.ld);
  auto [lo, hi] = take_row_state(regions, pad, t);
  if (t.n_keys > kSmallPackKeys && t.kv_stride != t.d) {
    t.kp = regions.take<float>(t.n_keys * t.d);
    t.vp = regions.take<float>(t.n_keys * t.d);
  }
  bool full = true;
  for (int64_t i = 0; i < pad; ++i) {
    unpack_tile_row(b, 0, i, nq, key_begin, t.n_keys, lo, hi, t.m, t.l);
    full = full && (i >= nq || (lo[i] == 0 && hi[i] == t.n_keys));
  }
  fused_small_block(isa, t, b.out, b.out_stride, full, ahead);
  for (int64_t i = 0; i < nq; ++i) {
    if (lo[i] < hi[i]) b.lse[i * b.lse_stride] = lse_of(t.m[i], t.l[i]);
  }
}

// The rows of block b, for prefetching while the block before it computes. With `streamed`
// (the call streams first writes, and b runs on this thread, so its rows' state is read without
// a race) its out rows are left out when its first row has no state yet (lse -inf, as on every
// row's first block): such rows are written without being read, by streaming stores that fetch
// nothing (small_pv_block), and prefetching them would only take miss buffers from the rows that
// are read. With both, the first pass over dring_kernel_bench's dilated rows is 10-15% faster
// (docs/benchmarks.md).
RowsAhead rows_of(const AttendBlock& b, int64_t d, int64_t element_bytes, bool streamed) {
  RowsAhead a;
  a.row_bytes = d * element_bytes;
  const void* rows[4] = {b.q, b.k, b.v, b.out};
  const int64_t stride[4] = {b.q_stride, b.kv_stride, b.kv_stride, b.out_stride};
  const int64_t count[4] = {b.n_q, b.n_k, b.n_k, b.n_q};
  for (int t = 0; t < 4; ++t) {
    a.rows[t] = static_cast<const char*>(rows[t]);
    a.stride[t] = stride[t] * element_bytes;
    a.count[t] = count[t];
  }
  if (streamed && b.n_q > 0 && b.lse[0] == -std::numeric_limits<float>::infinity()) a.count[3] = 0;
  return a;
}


// Whether the small fp32 blocks of a call write their rows' first values by streaming stores
// (fused_small_block): by default only when their out rows add up to more than the threads' L2
// caches hold, so that the rows would have left the caches before anything reads them again.
// Rows that fit are read back from the cache by the call's next pair or the next call; streamed
// past it instead, a forward at S = 4096 (640 KiB of out rows) took 15% longer
// (docs/benchmarks.md).
bool streams_first_writes(std::span<const AttendBlock> blocks, std::span<const char> small, const AttendParams& prm) {
  int64_t bytes = 0;
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (small[b]) bytes += blocks[b].n_q * prm.head_dim * static_cast<int64_t>(sizeof(float));
  }
  const int64_t limit =
      prm.stream_first_writes_bytes >= 0 ? prm.stream_first_writes_bytes : prm.threads * l2_cache_bytes();
  return bytes > limit;
}

}  // namespace dring::kernels::cpu::forward
