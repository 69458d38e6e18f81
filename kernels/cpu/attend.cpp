// attend.cpp — CPU attention blocks: tiled online softmax over strided rows, fp32 arithmetic on
// fp32 or bf16 storage.
//
// Thread mapping: the blocks are cut into work items, each a tile of up to q_tile query rows of
// one block (up to kFusedMaxGroup tiles on the fused fp32 tile, make_work), or a run of
// consecutive small blocks (each run whole: attend_small.cpp); an OpenMP team takes items dynamically. A work
// item owns its query rows' (out, lse), so items never write the same memory. Inside an item the
// rows' state is unpacked into running max m, running sum l and unnormalised acc (m = lse, l = 1,
// acc = out: the same distribution), keys are visited k_tile rows at a time — S = alpha*Q*K^T
// (sgemm straight from the strided rows), the block's mask applied, m and l updated,
// P = exp2(S - m), acc = acc*c + P*V (sgemm into the out rows) — and the state is packed back:
// out = acc / l, lse = m + log2(l). That is the log-sum-exp merge of the block into the rows.
// The mask (BlockMask: a band over the rows' positions) gives each row one interval of keys,
// both ends non-decreasing in the row. A query tile visits only the key tiles between its first
// row's first key and its last row's last key (a sliding window costs O(n*W), not O(n^2)); a key
// tile the mask leaves empty is skipped, a full one is taken unmasked, and only a partial one is
// masked row by row. fp32 tiles run on the fused micro-kernel of attend_fused.hpp instead where
// the CPU has AVX-512 or AVX2+FMA and the head_dim suits it (AttendParams::cpu_f32_kernel): same
// algorithm, with the score tile transposed so the softmax vectorises across queries, and no
// sgemm call or operand re-packing per tile. A row with no visible key in the block is left exactly as it was: its
// running max stays -inf or unchanged (never -inf - -inf), and its (out, lse) is not rewritten.
// bf16, fast path (where oneDNN has a native bf16 matmul: AMX or avx512_bf16, bf16_matmul.hpp):
// the item's q rows and each K/V tile are packed densely as bf16, S = alpha*Q*K^T is a bf16
// matmul with fp32 result, the softmax runs in fp32 as above, P is rounded to bf16 (after the
// max subtraction, so its entries are in [0, 1]) and acc += P*V is a bf16 matmul accumulating
// into the fp32 acc. l sums the unrounded P, so rounding P moves out by at most 2^-8 of max|v|
// per call (docs/math.md, "bf16 on the CPU"). bf16, portable path (other CPUs, or
// params.bf16_matmul false): the item's q and out rows and each K/V tile are widened into the
// thread's scratch first (f32_rows.hpp) and the same fp32 code runs there. Either way out is
// rounded to bf16 once, at the end, and lse is fp32. bf16, fused AMX tile (attend_amx.hpp: where
// the CPU has AMX-BF16 and the OS grants it; AttendParams::cpu_bf16_kernel): the fast path's
// arithmetic (P rounded to bf16 for P*V, l summing the unrounded P) in one pass over each key
// tile, without oneDNN's per-call operand reordering; it is taken ahead of the oneDNN tiles.

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "dring/core/error.hpp"
#include "attend_amx.hpp"
#include "attend_fused.hpp"
#include "attend_rows.hpp"
#include "bf16_matmul.hpp"
#include "dring/kernels/cpu.hpp"
#include "f32_rows.hpp"
#include "vector_math.hpp"
#include "work_items.hpp"

namespace dring::kernels::cpu {

namespace forward {

// The fused tile's keys per step: params.k_tile, at most kFusedTileBytes of packed V (the P V
// block re-reads the V tile once per 6 query rows; from L1, not L2: D=128 ran about 20% faster
// with 64-key tiles than with 256 on dense 2048x2048).
constexpr int64_t kFusedTileBytes = 32 * 1024;
int64_t fused_key_tile(const AttendParams& p) {
  return std::min(p.k_tile, std::max<int64_t>(16, kFusedTileBytes / (p.head_dim * int64_t{sizeof(float)})));
}

// Query tiles per work item on the fused tile, at most (make_work): the item packs each K/V tile
// once for all of them (attend_fused.hpp).
constexpr int64_t kFusedMaxGroup = 4;

// Scratch floats of attend_tile_fused: qt, st, kp, vp, acc, m, l, c, lo, hi (each region 64-byte aligned).
int64_t fused_floats(const AttendParams& p) {
  const int64_t rows = std::max(kFusedMaxGroup, p.fused_tiles_per_item) * p.q_tile;
  const int64_t pad = round_up_pad(rows);
  return region_floats(p.head_dim * fused_row_stride(rows), 4) +
         region_floats(p.k_tile * fused_row_stride(round_up_pad(p.q_tile)), 4) +
         2 * region_floats(p.k_tile * p.head_dim, 4) + region_floats(rows * p.head_dim, 4) + 5 * region_floats(pad, 4);
}

}  // namespace forward

namespace {

using namespace forward;

struct WorkItem {
  int64_t block_begin;  // blocks [block_begin, block_end): one big block, or a run of small ones
  int64_t block_end;
  int64_t q_begin;  // query rows [q_begin, q_end) of a big block
  int64_t q_end;
};


// Masks the scores of query rows [i0, i0 + nq) against keys [j0, j0 + nk) (row stride ld) to the
// rows' visible keys: -inf outside each row's key interval.
template <class T>
void mask_tile(const Block<T>& b, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* scores, int64_t ld) {
  for (int64_t i = 0; i < nq; ++i) {
    int64_t key_begin = 0, key_end = 0;
    b.keys_of(i0 + i, &key_begin, &key_end);
    const int64_t lo = std::clamp<int64_t>(key_begin - j0, 0, nk);
    const int64_t hi = std::clamp<int64_t>(key_end - j0, lo, nk);
    float* row = scores + i * ld;
    std::fill(row, row + lo, kNegInf);
    std::fill(row + hi, row + nk, kNegInf);
  }
}

// One tile of query rows [i0, i1) of a block against all its visible keys.
template <class T>
void attend_tile(const Block<T>& b, int64_t i0, int64_t i1, const AttendParams& prm, float alpha, float* scratch) {
  const int64_t d = prm.head_dim;
  const int64_t bk = prm.k_tile;
  const int64_t nq = i1 - i0;
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(i0, i1, &key_begin, &key_end);
  if (key_begin >= key_end) return;  // no row of the tile sees a key: all stay as they were
  float* scores = scratch;              // [q_tile, k_tile]
  float* m = scores + prm.q_tile * bk;  // running max of the tile's rows
  float* l = m + prm.q_tile;            // running sum
  // bf16 only: the widened q, out (acc), K and V tiles.
  float* q_space = kIsBf16<T> ? l + prm.q_tile : nullptr;
  float* acc_space = kIsBf16<T> ? q_space + prm.q_tile * d : nullptr;
  float* k_space = kIsBf16<T> ? acc_space + prm.q_tile * d : nullptr;
  float* v_space = kIsBf16<T> ? k_space + bk * d : nullptr;
  for (int64_t i = 0; i < nq; ++i) unpack(b.lse[(i0 + i) * b.lse_stride], &m[i], &l[i]);
  int64_t q_ld = 0, acc_ld = 0;
  const float* q = f32_rows(b.q + i0 * b.q_stride, b.q_stride, nq, d, q_space, false, &q_ld);
  float* acc = f32_rows(b.out + i0 * b.out_stride, b.out_stride, nq, d, acc_space, false, &acc_ld);
  for (int64_t j0 = key_begin; j0 < key_end; j0 += bk) {
    const int64_t nk = std::min(bk, key_end - j0);
    const bool full = b.trivial || b.mask.full(i0, i1, j0, j0 + nk);
    if (!full && b.mask.empty(i0, i1, j0, j0 + nk)) continue;
    int64_t k_ld = 0, v_ld = 0;
    const float* k = f32_rows(b.k + j0 * b.kv_stride, b.kv_stride, nk, d, k_space, false, &k_ld);
    sgemm(false, true, nq, nk, d, alpha, q, q_ld, k, k_ld, 0.0f, scores, bk);
    if (!full) mask_tile(b, i0, nq, j0, nk, scores, bk);
    for (int64_t i = 0; i < nq; ++i) {
      float* row = scores + i * bk;
      const float m_new = max_of(row, nk, m[i]);
      if (m_new == kNegInf) {  // nothing visible to this row yet
        std::fill(row, row + nk, 0.0f);
        continue;
      }
      const float row_sum = exp2_shifted_sum(row, nk, m_new);
      const float correction = std::exp2(m[i] - m_new);
      if (correction != 1.0f) scale(acc + i * acc_ld, d, correction);
      l[i] = l[i] * correction + row_sum;
      m[i] = m_new;
    }
    const float* v = f32_rows(b.v + j0 * b.kv_stride, b.kv_stride, nk, d, v_space, false, &v_ld);
    sgemm(false, false, nq, d, nk, 1.0f, scores, bk, v, v_ld, 1.0f, acc, acc_ld);
  }
  // Pack back only the rows some key reached; the others keep their (out, lse) bit for bit (for
  // bf16, their widened out rows round back to themselves).
  for (int64_t i = 0; i < nq; ++i) {
    int64_t row_begin = 0, row_end = 0;
    b.keys_of(i0 + i, &row_begin, &row_end);
    if (row_begin < row_end) b.lse[(i0 + i) * b.lse_stride] = pack(acc + i * acc_ld, d, m[i], l[i]);
  }
  store_rows(acc, acc_ld, b.out + i0 * b.out_stride, b.out_stride, nq, d);
}


// The fused tiles hold key indices relative to the tile's first visible key as int32.
template <class T>
bool keys_fit_int32(const Block<T>& b, int64_t i0, int64_t i1) {
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(i0, i1, &key_begin, &key_end);
  return key_end - key_begin < std::numeric_limits<int32_t>::max();
}

// attend_tile on the fused micro-kernel (attend_fused.hpp): the rows' state is unpacked into the
// thread's scratch (acc dense, each row's key interval relative to the tile's first key), the
// ISA body runs the key tiles, and the rows some key reached are packed back.
void attend_tile_fused(const Block<float>& b, int64_t i0, int64_t i1, const AttendParams& prm, float alpha,
                       FusedIsa isa, float* scratch) {
  const int64_t d = prm.head_dim;
  const int64_t nq = i1 - i0;
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(i0, i1, &key_begin, &key_end);
  if (key_begin >= key_end) return;  // no row of the tile sees a key: all stay as they were
  DRING_ASSERT(nq <= std::max(kFusedMaxGroup, prm.fused_tiles_per_item) * prm.q_tile);
  const int64_t pad = round_up_pad(nq);
  FusedTile t;
  point_at_rows(t, b, i0, nq, key_begin, key_end);
  t.nq_pad = pad;
  t.sub_rows = round_up_pad(prm.q_tile);
  t.ld = fused_row_stride(nq);
  t.lds = fused_row_stride(t.sub_rows);
  t.d = d;
  t.k_tile = fused_key_tile(prm);
  t.alpha = alpha;
  ScratchRegions regions(scratch);
  t.qt = regions.take<float>(d * t.ld);
  t.st = regions.take<float>(prm.k_tile * t.lds);
  t.kp = regions.take<float>(prm.k_tile * d);
  t.vp = regions.take<float>(prm.k_tile * d);
  t.acc = regions.take<float>(nq * d);
  auto [lo, hi] = take_row_state(regions, pad, t);
  for (int64_t i = 0; i < pad; ++i) {
    unpack_tile_row(b, i0, i, nq, key_begin, t.n_keys, lo, hi, t.m, t.l);
    if (i < nq) std::copy_n(b.out + (i0 + i) * b.out_stride, d, t.acc + i * d);
  }
  fused_key_tiles(isa, t);
  for (int64_t i = 0; i < nq; ++i) {
    if (lo[i] >= hi[i]) continue;  // no visible key: (out, lse) stay bit for bit
    float* acc = t.acc + i * d;
    b.lse[(i0 + i) * b.lse_stride] = pack(acc, d, t.m[i], t.l[i]);
    std::copy_n(acc, d, b.out + (i0 + i) * b.out_stride);
  }
}


// Scratch floats of attend_tile_bf16: scores, m, l, the fp32 acc and the packed bf16 q, K, V, P.
int64_t bf16_matmul_floats(const AttendParams& p) {
  const int64_t d = p.head_dim;
  return region_floats(p.q_tile * p.k_tile, 4) + 2 * region_floats(p.q_tile, 4) + region_floats(p.q_tile * d, 4) +
         region_floats(p.q_tile * d, 2) + 2 * region_floats(p.k_tile * d, 2) + region_floats(p.q_tile * p.k_tile, 2);
}

// attend_tile for bf16 storage on oneDNN's bf16 matmul (the file comment's fast path). The
// scores tile has row stride nk (oneDNN's fast matmul writes dense results only).
void attend_tile_bf16(const Block<uint16_t>& b, int64_t i0, int64_t i1, const AttendParams& prm, float alpha,
                      float* scratch) {
  const int64_t d = prm.head_dim;
  const int64_t bk = prm.k_tile;
  const int64_t nq = i1 - i0;
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(i0, i1, &key_begin, &key_end);
  if (key_begin >= key_end) return;
  ScratchRegions regions(scratch);
  float* scores = regions.take<float>(prm.q_tile * bk);
  float* m = regions.take<float>(prm.q_tile);
  float* l = regions.take<float>(prm.q_tile);
  float* acc = regions.take<float>(prm.q_tile * d);
  uint16_t* q = regions.take<uint16_t>(prm.q_tile * d);
  uint16_t* k = regions.take<uint16_t>(bk * d);
  uint16_t* v = regions.take<uint16_t>(bk * d);
  uint16_t* p = regions.take<uint16_t>(prm.q_tile * bk);
  // alpha is applied in the softmax (a matmul output scale costs more), unless it is not positive
  // (max would not commute with it; masked -inf would turn +inf): then by the matmul.
  const float gemm_alpha = alpha > 0.0f ? 1.0f : alpha;
  const float softmax_alpha = alpha > 0.0f ? alpha : 1.0f;
  for (int64_t i = 0; i < nq; ++i) unpack(b.lse[(i0 + i) * b.lse_stride], &m[i], &l[i]);
  pack_rows(b.q + i0 * b.q_stride, b.q_stride, nq, d, q);
  for (int64_t i = 0; i < nq; ++i) bf16_to_f32(b.out + (i0 + i) * b.out_stride, acc + i * d, d);
  for (int64_t j0 = key_begin; j0 < key_end; j0 += bk) {
    const int64_t nk = std::min(bk, key_end - j0);
    const bool full = b.trivial || b.mask.full(i0, i1, j0, j0 + nk);
    if (!full && b.mask.empty(i0, i1, j0, j0 + nk)) continue;
    pack_rows(b.k + j0 * b.kv_stride, b.kv_stride, nk, d, k);
    bf16_gemm(false, true, nq, nk, d, gemm_alpha, q, k, 0.0f, scores);
    if (!full) mask_tile(b, i0, nq, j0, nk, scores, nk);
    for (int64_t i = 0; i < nq; ++i) {  // softmax_update, with alpha applied here and P written as bf16
      const float* row = scores + i * nk;
      uint16_t* p_row = p + i * nk;
      const float m_new = std::max(m[i], softmax_alpha * max_of(row, nk, kNegInf));
      if (m_new == kNegInf) {  // nothing visible to this row yet
        std::fill(p_row, p_row + nk, uint16_t{0});
        continue;
      }
      const float row_sum = exp2_scaled_to_bf16(row, nk, softmax_alpha, m_new, p_row);
      const float correction = std::exp2(m[i] - m_new);
      if (correction != 1.0f) scale(acc + i * d, d, correction);
      l[i] = l[i] * correction + row_sum;
      m[i] = m_new;
    }
    pack_rows(b.v + j0 * b.kv_stride, b.kv_stride, nk, d, v);
    bf16_gemm(false, false, nq, d, nk, 1.0f, p, v, 1.0f, acc);
  }
  for (int64_t i = 0; i < nq; ++i) {
    int64_t row_begin = 0, row_end = 0;
    b.keys_of(i0 + i, &row_begin, &row_end);
    if (row_begin < row_end) b.lse[(i0 + i) * b.lse_stride] = pack(acc + i * d, d, m[i], l[i]);
  }
  store_rows(acc, d, b.out + i0 * b.out_stride, b.out_stride, nq, d);
}

// The AMX tile's keys per step: params.k_tile rounded to whole steps of kAmxCols, at most
// kAmxMaxKeys (the strip's scores, P and the packed K and V tiles then stay in L1 and L2); for
// fp32 rows (three parts) at most kAmxMaxKeysF32: dense 4096 x 4096 ran 1.10x (D = 64) and 1.04x
// (D = 128) faster with 256 keys than with 128, 512 no faster (docs/benchmarks.md).
constexpr int64_t kAmxMaxKeys = 128;
constexpr int64_t kAmxMaxKeysF32 = 256;
int64_t amx_key_tile(const AttendParams& p) {
  return std::min(amx_round_up(p.k_tile, kAmxCols), p.dtype == DType::kBF16 ? kAmxMaxKeys : kAmxMaxKeysF32);
}
constexpr int64_t kAmxMaxHeadDim = 256;

// Query tiles per fp32 work item where the AMX tile may take it (tiles_per_item): its packing of
// each K/V tile in three parts is shared by all of them. Against the fused tile's 4, dense 4096 x
// 4096 ran 1.03-1.07x faster and dense S = 32768 (K and V from memory) 1.06-1.11x; the cost is
// scratch, about 0.4 MB more a thread at D = 64 (docs/benchmarks.md).
constexpr int64_t kAmxF32MaxGroup = 8;

// Query rows of an AMX work item: one query tile for bf16, up to kAmxF32MaxGroup for fp32.
int64_t amx_item_rows(const AttendParams& p) {
  return p.dtype == DType::kBF16 ? p.q_tile : std::max(kAmxF32MaxGroup, p.fused_tiles_per_item) * p.q_tile;
}
int amx_parts(const AttendParams& p) { return p.dtype == DType::kBF16 ? kAmxPartsBf16 : kAmxPartsF32; }

// fp32 items take the AMX tile under kAuto only where its six products pay for the three-way
// packing of q, K and V: items of at least kAmxF32MinRows query rows whose rows see at least
// kAmxF32MinKeys keys on average (kAmx takes it for every item). On LongNet's causal blocks
// (dring_kernel_bench's segments rows) it ran 1.25-1.5x slower than the fused tile at 256 x 256,
// 1.1x at 512 x 512, 1.05x at 1024 x 1024 (a range of 1024 keys, 512 seen on average) and 1.1x
// faster on 4096 x 4096 (docs/benchmarks.md); with this gate the first three run on the fused tile.
constexpr int64_t kAmxF32MinRows = 256;
constexpr int64_t kAmxF32MinKeys = 1024;
bool amx_f32_pays(const Block<float>& b, int64_t i0, int64_t i1, const AttendParams& prm) {
  if (prm.cpu_f32_kernel == CpuF32Kernel::kAmx) return true;
  if (i1 - i0 < kAmxF32MinRows) return false;
  int64_t visible = 0;
  for (int64_t i = i0; i < i1; ++i) {
    int64_t key_begin = 0, key_end = 0;
    b.keys_of(i, &key_begin, &key_end);
    visible += std::max<int64_t>(key_end - key_begin, 0);
  }
  return visible >= (i1 - i0) * kAmxF32MinKeys;
}

// Scratch floats of attend_tile_amx: acc, m, l, lo, hi, and the packed q, K, V, two strips' scores
// and P.
int64_t amx_floats(const AttendParams& p) {
  const int64_t rows = amx_round_up(amx_item_rows(p), kAmxRows), dp = amx_round_up(p.head_dim, kAmxCols);
  const int64_t keys = amx_key_tile(p), parts = amx_parts(p);
  return region_floats(rows * dp, 4) + 4 * region_floats(rows, 4) + region_floats(parts * rows * dp, 2) +
         2 * region_floats(parts * keys * dp, 2) + 2 * region_floats(kAmxStripRows * keys, 4) +
         region_floats(parts * kAmxStripRows * keys, 2);
}

// attend_tile on the fused AMX tile (attend_amx.hpp), as attend_tile_fused does on its own: the
// rows' state unpacked into the scratch (acc in fp32, padded to dp columns), the key tiles run
// (bf16 rows as they are, fp32 rows in three bf16 parts), the rows some key reached packed back
// and out stored (bf16: rounded; rows no key reached round back to the bits they had).
template <class T>
void attend_tile_amx(const Block<T>& b, int64_t i0, int64_t i1, const AttendParams& prm, float alpha,
                     float* scratch) {
  const int64_t d = prm.head_dim;
  const int64_t nq = i1 - i0;
  int64_t key_begin = 0, key_end = 0;
  b.keys_of_rows(i0, i1, &key_begin, &key_end);
  if (key_begin >= key_end) return;  // no row of the tile sees a key: all stay as they were
  DRING_ASSERT(nq <= amx_item_rows(prm));
  AmxTile t;
  t.parts = amx_parts(prm);
  point_at_rows(t, b, i0, nq, key_begin, key_end);
  t.nq_pad = amx_round_up(nq, kAmxRows);
  t.d = d;
  t.dp = amx_round_up(d, kAmxCols);
  t.k_tile = amx_key_tile(prm);
  t.alpha = alpha;
  ScratchRegions regions(scratch);
  t.acc = regions.take<float>(t.nq_pad * t.dp);
  t.m = regions.take<float>(t.nq_pad);
  t.l = regions.take<float>(t.nq_pad);
  int32_t* lo = regions.take<int32_t>(t.nq_pad);
  int32_t* hi = regions.take<int32_t>(t.nq_pad);
  t.lo = lo;
  t.hi = hi;
  t.qp = regions.take<uint16_t>(t.parts * t.nq_pad * t.dp);
  t.kp = regions.take<uint16_t>(t.parts * t.k_tile * t.dp);
  t.vp = regions.take<uint16_t>(t.parts * t.k_tile * t.dp);
  t.st = regions.take<float>(kAmxStripRows * t.k_tile);
  t.st_next = regions.take<float>(kAmxStripRows * t.k_tile);
  t.p = regions.take<uint16_t>(t.parts * kAmxStripRows * t.k_tile);
  std::fill(t.acc, t.acc + t.nq_pad * t.dp, 0.0f);
  for (int64_t i = 0; i < t.nq_pad; ++i) {
    unpack_tile_row(b, i0, i, nq, key_begin, t.n_keys, lo, hi, t.m, t.l);
    if (i >= nq) continue;
    const T* out = b.out + (i0 + i) * b.out_stride;
    if constexpr (kIsBf16<T>) {
      bf16_to_f32(out, t.acc + i * t.dp, d);
    } else {
      std::copy_n(out, d, t.acc + i * t.dp);
    }
  }
  amx_key_tiles(t);
  for (int64_t i = 0; i < nq; ++i) {
    if (lo[i] < hi[i]) b.lse[(i0 + i) * b.lse_stride] = pack(t.acc + i * t.dp, d, t.m[i], t.l[i]);
  }
  store_rows(t.acc, t.dp, b.out + i0 * b.out_stride, b.out_stride, nq, d);
}

// Query tiles per work item: kFusedMaxGroup where the fused fp32 tile runs, kAmxF32MaxGroup where
// the fp32 AMX tile may take them (each packs a K/V tile once per item; the fused tile takes an
// AMX-sized item in pieces, and an item neither takes runs a query tile at a time), halved while
// that would leave fewer than kItemsPerThread items per thread for the dynamic schedule to balance
// (or AttendParams::fused_tiles_per_item); 1 on every other path.
constexpr int64_t kItemsPerThread = 8;
int64_t tiles_per_item(std::span<const AttendBlock> blocks, std::span<const char> small, const AttendParams& prm) {
  const bool amx = f32_amx_runs(prm);
  if (fused_isa(prm) == FusedIsa::kNone && !amx) return 1;
  if (prm.fused_tiles_per_item > 0) return prm.fused_tiles_per_item;
  int64_t tiles = 0;
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (!small[b]) tiles += (blocks[b].n_q + prm.q_tile - 1) / prm.q_tile;
  }
  int64_t group = amx ? kAmxF32MaxGroup : kFusedMaxGroup;
  while (group > 1 && tiles < group * kItemsPerThread * prm.threads) group /= 2;
  return group;
}

// The work items over `blocks`, given which blocks take the direct path (small[b], is_small).
std::vector<WorkItem> make_work(std::span<const AttendBlock> blocks, std::span<const char> small,
                                const AttendParams& prm) {
  std::vector<WorkItem> items;
  const int64_t n = static_cast<int64_t>(blocks.size());
  const int64_t rows = tiles_per_item(blocks, small, prm) * prm.q_tile;
  // Consecutive small blocks are gathered until they are worth about one tile of work, or less
  // where that would leave under kItemsPerThread items per thread (blocks of up to 64x64 would
  // otherwise leave a wide team idle).
  int64_t small_scores = 0;
  for (int64_t b = 0; b < n; ++b) {
    if (small[b]) small_scores += blocks[b].n_q * blocks[b].n_k + 1;
  }
  const int64_t item_scores =
      std::clamp<int64_t>(small_scores / (kItemsPerThread * prm.threads), 1, prm.q_tile * prm.k_tile);
  int64_t b = 0;
  while (b < n) {
    if (small[b]) {
      int64_t e = b;
      int64_t scores = 0;
      while (e < n && small[e] && scores < item_scores) {
        scores += blocks[e].n_q * blocks[e].n_k + 1;
        ++e;
      }
      items.push_back({b, e, 0, 0});
      b = e;
      continue;
    }
    // Masked blocks: with causality, items near the end of a block see the most keys; queue those
    // first so the dynamic schedule ends with the cheap ones.
    const int64_t count = (blocks[b].n_q + rows - 1) / rows;
    for (int64_t t = 0; t < count; ++t) {
      const int64_t i0 = (!blocks[b].mask.trivial() ? count - 1 - t : t) * rows;
      items.push_back({b, b + 1, i0, std::min(blocks[b].n_q, i0 + rows)});
    }
    ++b;
  }
  return items;
}

}  // namespace

bool bf16_amx_runs(const AttendParams& params) {
  return params.dtype == DType::kBF16 && params.bf16_matmul && params.cpu_bf16_kernel != CpuBf16Kernel::kOnednn &&
         params.head_dim <= kAmxMaxHeadDim && amx_bf16_usable();
}

bool f32_amx_runs(const AttendParams& params) {
  const CpuF32Kernel want = params.cpu_f32_kernel;
  return params.dtype == DType::kF32 && (want == CpuF32Kernel::kAuto || want == CpuF32Kernel::kAmx) &&
         params.head_dim <= kAmxMaxHeadDim && amx_bf16_usable();
}

int64_t workspace_floats_per_thread(const AttendParams& params) {
  const int64_t f32 = params.q_tile * params.k_tile + 2 * params.q_tile;
  if (params.dtype != DType::kBF16) {
    return std::max({f32, fused_floats(params), f32_amx_runs(params) ? amx_floats(params) : 0});
  }
  // Any bf16 path: widened q, out, K, V tiles, the matmul path's or the AMX tile's packed tiles.
  return std::max({f32 + 2 * (params.q_tile + params.k_tile) * params.head_dim, bf16_matmul_floats(params),
                   amx_floats(params)});
}

void attend(std::span<const AttendBlock> blocks, const AttendParams& prm, float* workspace) {
  DRING_ASSERT(prm.head_dim >= 1 && prm.q_tile >= 1 && prm.k_tile >= 1 && prm.threads >= 1);
  DRING_ASSERT(prm.head_dim <= std::numeric_limits<int>::max());
  dispatch_storage(prm.dtype, [&](auto element) {
    using T = decltype(element);
    const float alpha = static_cast<float>(prm.scale) * kLog2e;
    // Which path each block takes, decided once (is_small).
    std::vector<char> small(blocks.size());
    for (size_t b = 0; b < blocks.size(); ++b) small[b] = is_small(blocks[b], prm);
    const std::vector<WorkItem> items = make_work(blocks, small, prm);
    const int64_t small_scratch = small_scratch_floats(prm);
    const int64_t scratch_floats = workspace_floats_per_thread(prm);
    const bool matmul = kIsBf16<T> && prm.bf16_matmul && bf16_matmul_available();
    const bool amx = kIsBf16<T> ? bf16_amx_runs(prm) : f32_amx_runs(prm);
    const FusedIsa fused = fused_isa(prm);
    const bool stream_fresh = !kIsBf16<T> && fused != FusedIsa::kNone && streams_first_writes(blocks, small, prm);
    run_items(items, prm, workspace, scratch_floats, [&](const WorkItem& item, float* scratch) {
      for (int64_t b = item.block_begin; b < item.block_end; ++b) {
        const Block<T> blk(blocks[b]);
        if (small[b]) {
          // The next small block's rows, prefetched while this one computes (on the fused kernel).
          const bool next = b + 1 < static_cast<int64_t>(blocks.size()) && small[b + 1];
          RowsAhead ahead = next ? rows_of(blocks[b + 1], prm.head_dim, sizeof(T), stream_fresh && b + 1 < item.block_end)
                                 : RowsAhead{};
          if constexpr (!kIsBf16<T>) {
            // is_small chose this block for the fused whole-block kernel only if its scratch fits
            // (small_fused_floats <= fused_floats <= scratch_floats).
            if (fused != FusedIsa::kNone) {
              attend_small_fused(blk, prm, alpha, fused, scratch, &ahead, stream_fresh);
              continue;
            }
          }
          attend_small(blk, prm, alpha, scratch, small_scratch, &ahead);
        } else if constexpr (kIsBf16<T>) {
          if (amx && keys_fit_int32(blk, item.q_begin, item.q_end)) {
            attend_tile_amx(blk, item.q_begin, item.q_end, prm, alpha, scratch);
          } else if (matmul) {
            attend_tile_bf16(blk, item.q_begin, item.q_end, prm, alpha, scratch);
          } else {
            attend_tile(blk, item.q_begin, item.q_end, prm, alpha, scratch);
          }
        } else if (amx && keys_fit_int32(blk, item.q_begin, item.q_end) &&
                   amx_f32_pays(blk, item.q_begin, item.q_end, prm)) {
          attend_tile_amx(blk, item.q_begin, item.q_end, prm, alpha, scratch);
        } else {
          // The fused tile takes up to fused_rows rows at once (an item sized for the AMX tile in
          // pieces); where it cannot take them whole, a query tile at a time.
          const int64_t fused_rows = std::max(kFusedMaxGroup, prm.fused_tiles_per_item) * prm.q_tile;
          for (int64_t g0 = item.q_begin; g0 < item.q_end; g0 += fused_rows) {
            const int64_t g1 = std::min(item.q_end, g0 + fused_rows);
            if (fused != FusedIsa::kNone && keys_fit_int32(blk, g0, g1)) {
              attend_tile_fused(blk, g0, g1, prm, alpha, fused, scratch);
              continue;
            }
            for (int64_t i0 = g0; i0 < g1; i0 += prm.q_tile) {
              const int64_t i1 = std::min(g1, i0 + prm.q_tile);
              if (fused != FusedIsa::kNone && keys_fit_int32(blk, i0, i1)) {
                attend_tile_fused(blk, i0, i1, prm, alpha, fused, scratch);
              } else {
                attend_tile(blk, i0, i1, prm, alpha, scratch);
              }
            }
          }
        }
      }
      // The small blocks' out rows may have been written by streaming stores (fused_small_block).
      if (stream_fresh && small[item.block_begin]) fused_streams_done();
    });
  });
}

}  // namespace dring::kernels::cpu
