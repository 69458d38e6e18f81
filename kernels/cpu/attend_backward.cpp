// attend_backward.cpp — CPU backward of attention blocks, flash-style: fp32 arithmetic on fp32
// or bf16 q, k, v, dout; dq, dk, dv are fp32 accumulators either way.
//
// For one tile pair (query rows I, key rows J) of one query head, with P = exp(scale*Q K^T - lse):
//   dP = dO V^T,  dS = P * (dP - delta),  dV_J += P^T dO_I,  dK_J += scale dS^T Q_I,
//   dQ_I += scale dS K_J.
// Thread mapping: a work item is one key tile of one block (all the block's query heads and query
// tiles), so it owns dk and dv of those rows outright; the dq tile it updates is shared with the
// other key tiles of the block, so that last product is taken under the tile's lock (items start
// their query sweep at different tiles, so threads rarely meet). Tiny blocks take a direct path,
// a run of them per item. Nothing n x n is ever stored: two q_tile x k_tile scratch tiles a thread.
// fp32, fused path (attend_fused_backward.hpp, where fused_backward_isa says so): same items, same
// locks, but the item packs its K tile once (transposed and pre-scaled, transposed V, K rows), and
// each (query head, query tile) packs its q and dout rows and runs the tile pair as chunks of query
// rows x keys on micro-kernels of dring's own: S and dP in one register block with P and dS formed
// in its epilogue, then dV, dK into the item's dense tiles (added to dk, dv once at the end) and dQ
// into a dense tile added to dq under the lock. Every chunk is masked row by row (lo/hi), so full,
// partial and padding keys take one path.
// AMX (attend_amx_backward.hpp, where the CPU has AMX-BF16): the same items and locks; the item
// packs its key tile once, each query tile runs the five products on the matrix unit (fp32 rows in
// three bf16 parts, bf16 rows as they are) and adds its dQ^T to dq transposed under the lock. fp32
// takes it for blocks whose rows see >= 512 keys on average (amx_grad_pays), bf16 for blocks
// above 16 x 16 (the widened rows keep the smaller ones).
// bf16, fast path (oneDNN bf16 matmul, bf16_matmul.hpp): the item packs its K and V tile once and
// each query tile's q and dout rows densely as bf16; S and dP are bf16 matmuls with fp32 results,
// P and dS are computed in fp32 in one pass per row and rounded to bf16 (dS with the scale folded
// in) for the three
// products that take them, which accumulate in fp32: dV and dK into the item's dense fp32 tiles,
// added to dk and dv once at the end, dQ into a dense fp32 tile added to dq under the lock.
// bf16, portable path: the item widens its K and V tile once, and each query tile's q and dout
// rows, into the thread's scratch (f32_rows.hpp) and runs the fp32 code. The direct path widens
// element by element.
// The mask (BlockMask) gives each query row one interval of keys, both ends non-decreasing in the
// row, so the queries that may see a key tile are one run of rows (rows_seeing, attend.hpp): a key
// tile visits only the query tiles of that run (a sliding window costs O(n*W), not O(n^2)), skips
// those the mask leaves empty, takes full ones unmasked and masks partial ones row by row (P = 0
// outside a row's keys). A row with no visible key contributes nothing, and its lse (-inf when no
// block reached it) is never used in an exponent.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "dring/core/error.hpp"
#include "attend_amx.hpp"
#include "attend_amx_backward.hpp"
#include "attend_fused_backward.hpp"
#include "bf16_matmul.hpp"
#include "dring/kernels/cpu.hpp"
#include "f32_rows.hpp"
#include "vector_math.hpp"
#include "work_items.hpp"

namespace dring::kernels::cpu {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

struct Item {
  int64_t block_begin, block_end;  // a run of small blocks, or one big block
  int64_t key_begin, key_end;      // key tile of a big block
};

// The fused fp32 backward tile the params would choose for fp32 storage: for bf16 blocks small
// enough to run it on their widened rows (bf16_widened_fused).
FusedIsa fused_backward_isa_f32(const AttendParams& p) {
  AttendParams f32 = p;
  f32.dtype = DType::kF32;
  return fused_backward_isa(f32);
}

// bf16 blocks of up to kBf16WidenedFusedScores scores a head (a dilated block of up to 32x32)
// run the fused fp32 backward tile on their widened rows where it runs: oneDNN's bf16 matmuls
// cost more per call than such a block's arithmetic, and the direct path is scalar. With 8-row
// dilated blocks the bf16 backward took twice the fp32 one's time before, 1.6x less after; 32-row
// blocks were level, 64-row ones 5% slower than on the matmul tiles, which larger blocks keep
// (docs/benchmarks.md, 2026-12-04). Where the bf16 AMX backward tile runs, it is faster from
// 32 x 32 up (dring run --dtype bf16 --backward, one thread: 32-row blocks 5.6 ms against 7.4 on
// the widened rows, 16-row ones 7.2 against 6.3), so there the widened rows keep only blocks of up
// to kBf16AmxWidenedScores scores.
constexpr int64_t kBf16WidenedFusedScores = 1024;
constexpr int64_t kBf16AmxWidenedScores = 256;
bool bf16_widened_fused(const GradBlock& b, const AttendParams& p, FusedIsa fused_f32) {
  const int64_t limit = bf16_amx_runs(p) ? kBf16AmxWidenedScores : kBf16WidenedFusedScores;
  return p.dtype == DType::kBF16 && fused_f32 != FusedIsa::kNone && b.n_q * b.n_k <= limit;
}

// Where the fused fp32 backward tile runs, small blocks take it too: on the 8x8 and 16x16 dilated
// rows of dring_kernel_bench --backward it took 59 and 48 ms against the direct path's 87 and 147
// (docs/benchmarks.md, 2026-12-02 evening). The direct path stays for the sgemm tiles, and for
// bf16 blocks that do not take the fused tile on widened rows.
bool is_small(const GradBlock& b, const AttendParams& p, FusedIsa fused, FusedIsa fused_f32) {
  return fused == FusedIsa::kNone && !bf16_widened_fused(b, p, fused_f32) &&
         b.n_heads * b.n_q * b.n_k <= p.small_block_scores;
}

template <class T>
const T* typed(const void* p) {
  return static_cast<const T*>(p);
}

int64_t q_tiles(const GradBlock& b, const AttendParams& p) { return (b.n_q + p.q_tile - 1) / p.q_tile; }

// fp32 blocks take the AMX backward tile (where it runs at all, `amx`) under kAuto only where its
// six products a tile pair pay for packing q and dout in three parts for every item: blocks
// whose rows see at least kAmxGradMinKeys keys on average (kAmx takes it for every block). On
// dring_kernel_bench --backward it ran 1.3x faster than the fused AVX-512 tile on dense 4096 x 4096,
// 1.1x on 1024 x 1024, level on LongNet's causal 512 x 512 and 1024 x 1024 blocks (256 and 512 keys
// seen on average) and 1.1x slower on causal 256 x 256 (docs/benchmarks.md).
constexpr int64_t kAmxGradMinKeys = 512;
bool amx_grad_pays(const GradBlock& b, const AttendParams& p, bool amx) {
  if (!amx) return false;
  if (p.cpu_f32_kernel == CpuF32Kernel::kAmx) return true;
  if (b.mask.trivial()) return b.n_k >= kAmxGradMinKeys;
  int64_t visible = 0;
  for (int64_t i = 0; i < b.n_q; ++i) {
    visible += std::max<int64_t>(b.mask.key_end(i, b.n_k) - b.mask.key_begin(i, b.n_k), 0);
  }
  return visible >= b.n_q * kAmxGradMinKeys;
}

// Keys per work item on the AMX backward tile: kAmxGradKeyTiles key tiles, so that each query
// tile's q and dout are split into parts and packed once for that many keys (with 256 keys the
// packing took 9.5% of the dense backward; with 512 the fp32 dense and causal 4096 x 4096
// backward ran 5-8% faster, with 768 or 1024 level or slower: the item's packed K and V and its dK
// and dV then outgrow L2; docs/benchmarks.md, 2026-12-05).
constexpr int64_t kAmxGradKeyTiles = 2;
int64_t amx_grad_keys(const AttendParams& p) { return kAmxGradKeyTiles * p.k_tile; }

// Spin lock over one dq tile; held only for one small sgemm.
class TileLock {
 public:
  explicit TileLock(std::atomic_flag& flag) : flag_(flag) {
    while (flag_.test_and_set(std::memory_order_acquire)) {
    }
  }
  ~TileLock() { flag_.clear(std::memory_order_release); }
  TileLock(const TileLock&) = delete;
  TileLock& operator=(const TileLock&) = delete;

 private:
  std::atomic_flag& flag_;
};

template <class T>
void backward_small(const GradBlock& b, int64_t d, float scale) {
  const float alpha = scale * kLog2e;
  for (int64_t n = 0; n < b.n_heads; ++n) {
    const T* q = typed<T>(b.q) + n * b.q_head_step;
    const T* dout = typed<T>(b.dout) + n * b.q_head_step;
    float* dq = b.dq + n * b.q_head_step;
    for (int64_t i = 0; i < b.n_q; ++i) {
      const float lse2 = b.lse[n * b.state_head_step + i * b.state_stride] * kLog2e;
      const float delta = b.delta[n * b.state_head_step + i * b.state_stride];
      const T* qi = q + i * b.q_stride;
      const T* doi = dout + i * b.q_stride;
      float* dqi = dq + i * b.q_stride;
      const int64_t key_begin = b.mask.key_begin(i, b.n_k), key_end = b.mask.key_end(i, b.n_k);
      for (int64_t j = key_begin; j < key_end; ++j) {
        const T* kj = typed<T>(b.k) + j * b.kv_stride;
        const T* vj = typed<T>(b.v) + j * b.kv_stride;
        float s = 0.0f, dp = 0.0f;
        for (int64_t c = 0; c < d; ++c) {
          s += to_f32(qi[c]) * to_f32(kj[c]);
          dp += to_f32(doi[c]) * to_f32(vj[c]);
        }
        const float p = std::exp2(alpha * s - lse2);
        const float ds = p * (dp - delta) * scale;
        float* dkj = b.dk + j * b.dkv_stride;
        float* dvj = b.dv + j * b.dkv_stride;
        for (int64_t c = 0; c < d; ++c) {
          dqi[c] += ds * to_f32(kj[c]);
          dkj[c] += ds * to_f32(qi[c]);
          dvj[c] += p * to_f32(doi[c]);
        }
      }
    }
  }
}

// Calls tile(n, t, i0, i1, full) for every query head n and query tile t = [i0, i1) of `rows`
// (the rows that may see keys [j0, j1)) whose keys there the mask does not hide all of; `full`:
// it hides none. Each key tile starts its walk at another query tile (staggered), so that the
// threads of neighbouring key tiles rarely want the same tile's dq lock at once.
template <class Tile>
void for_each_query_tile(const GradBlock& b, const AttendParams& prm, RowRange rows, int64_t j0, int64_t j1,
                         Tile&& tile) {
  const int64_t first_tile = rows.begin / prm.q_tile, end_tile = (rows.end - 1) / prm.q_tile + 1;
  const int64_t span = end_tile - first_tile;
  const bool trivial = b.mask.trivial();
  for (int64_t n = 0; n < b.n_heads; ++n) {
    for (int64_t step = 0; step < span; ++step) {
      const int64_t t = first_tile + (step + j0 / prm.k_tile) % span;
      const int64_t i0 = t * prm.q_tile, i1 = std::min(b.n_q, i0 + prm.q_tile);
      const bool full = trivial || b.mask.full(i0, i1, j0, j1);
      if (!full && b.mask.empty(i0, i1, j0, j1)) continue;
      tile(n, t, i0, i1, full);
    }
  }
}

// Key tile [j0, j1) of a big block against every query head and visible query tile.
template <class T>
void backward_key_tile(const GradBlock& b, int64_t j0, int64_t j1, const AttendParams& prm, float* scratch,
                       std::atomic_flag* locks) {
  const int64_t d = prm.head_dim;
  DRING_ASSERT(j1 - j0 <= prm.k_tile);  // the scratch holds one key tile
  const float scale = static_cast<float>(prm.scale);
  const float alpha = scale * kLog2e;
  const int64_t nk = j1 - j0, ld = prm.k_tile;
  float* p_tile = scratch;                       // [q_tile, k_tile]: scores, then P
  float* ds_tile = p_tile + prm.q_tile * ld;     // [q_tile, k_tile]: dP, then dS
  // bf16 only: the widened K, V, q and dout tiles.
  float* k_space = kIsBf16<T> ? ds_tile + prm.q_tile * ld : nullptr;
  float* v_space = kIsBf16<T> ? k_space + prm.k_tile * d : nullptr;
  float* q_space = kIsBf16<T> ? v_space + prm.k_tile * d : nullptr;
  float* dout_space = kIsBf16<T> ? q_space + prm.q_tile * d : nullptr;
  int64_t k_ld = 0, v_ld = 0;
  const float* k = f32_rows(typed<T>(b.k) + j0 * b.kv_stride, b.kv_stride, nk, d, k_space, false, &k_ld);
  const float* v = f32_rows(typed<T>(b.v) + j0 * b.kv_stride, b.kv_stride, nk, d, v_space, false, &v_ld);
  float* dk = b.dk + j0 * b.dkv_stride;
  float* dv = b.dv + j0 * b.dkv_stride;
  const int64_t tiles = q_tiles(b, prm);
  // The query rows that may see these keys.
  const RowRange rows = rows_seeing(b.mask, b.n_q, b.n_k, j0, j1);
  if (rows.begin >= rows.end) return;
  for_each_query_tile(b, prm, rows, j0, j1, [&](int64_t n, int64_t t, int64_t i0, int64_t i1, bool full) {
    const int64_t nq = i1 - i0;
    const int64_t at = n * b.q_head_step + i0 * b.q_stride;
    int64_t q_ld = 0, dout_ld = 0;
    const float* q = f32_rows(typed<T>(b.q) + at, b.q_stride, nq, d, q_space, false, &q_ld);
    const float* dout = f32_rows(typed<T>(b.dout) + at, b.q_stride, nq, d, dout_space, false, &dout_ld);
    sgemm(false, true, nq, nk, d, alpha, q, q_ld, k, k_ld, 0.0f, p_tile, ld);
    sgemm(false, true, nq, nk, d, 1.0f, dout, dout_ld, v, v_ld, 0.0f, ds_tile, ld);
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t state = n * b.state_head_step + (i0 + i) * b.state_stride;
      const float lse2 = b.lse[state] * kLog2e;
      const float delta = b.delta[state];
      float* prow = p_tile + i * ld;
      float* dsrow = ds_tile + i * ld;
      // Visible keys of query i0+i in this tile: [lo, hi); P = 0 elsewhere.
      int64_t lo = 0, hi = nk;
      if (!full) {
        lo = std::clamp<int64_t>(b.mask.key_begin(i0 + i, b.n_k) - j0, 0, nk);
        hi = std::clamp<int64_t>(b.mask.key_end(i0 + i, b.n_k) - j0, lo, nk);
      }
      std::fill(prow, prow + lo, 0.0f);
      exp2_shifted_sum(prow + lo, hi - lo, lse2);
      std::fill(prow + hi, prow + nk, 0.0f);
      for (int64_t jj = 0; jj < nk; ++jj) dsrow[jj] = prow[jj] * (dsrow[jj] - delta);
    }
    sgemm(true, false, nk, d, nq, 1.0f, p_tile, ld, dout, dout_ld, 1.0f, dv, b.dkv_stride);
    sgemm(true, false, nk, d, nq, scale, ds_tile, ld, q, q_ld, 1.0f, dk, b.dkv_stride);
    TileLock lock(locks[n * tiles + t]);
    sgemm(false, false, nq, d, nk, scale, ds_tile, ld, k, k_ld, 1.0f, b.dq + at, b.q_stride);
  });
}

// Scratch floats of backward_key_tile_bf16: S and dP in fp32, K, V, q, dout, P and dS
// packed bf16, the dK and dV tiles and the dQ tile in fp32.
int64_t bf16_matmul_floats(const AttendParams& p) {
  const int64_t d = p.head_dim, qk = p.q_tile * p.k_tile;
  return 2 * region_floats(qk, 4) + 2 * region_floats(p.k_tile * d, 2) + 2 * region_floats(p.q_tile * d, 2) +
         2 * region_floats(qk, 2) + 2 * region_floats(p.k_tile * d, 4) + region_floats(p.q_tile * d, 4);
}

// backward_key_tile for bf16 storage on oneDNN's bf16 matmul (the file comment's fast path).
// Every tile is dense: S, dP, P and dS have row stride nk.
void backward_key_tile_bf16(const GradBlock& b, int64_t j0, int64_t j1, const AttendParams& prm, float* scratch,
                            std::atomic_flag* locks) {
  const int64_t d = prm.head_dim;
  DRING_ASSERT(j1 - j0 <= prm.k_tile);
  const float scale = static_cast<float>(prm.scale);
  const float alpha = scale * kLog2e;
  const int64_t nk = j1 - j0;
  const RowRange rows = rows_seeing(b.mask, b.n_q, b.n_k, j0, j1);
  if (rows.begin >= rows.end) return;
  ScratchRegions regions(scratch);
  float* p_tile = regions.take<float>(prm.q_tile * prm.k_tile);
  float* ds_tile = regions.take<float>(prm.q_tile * prm.k_tile);
  uint16_t* k = regions.take<uint16_t>(prm.k_tile * d);
  uint16_t* v = regions.take<uint16_t>(prm.k_tile * d);
  uint16_t* q = regions.take<uint16_t>(prm.q_tile * d);
  uint16_t* dout = regions.take<uint16_t>(prm.q_tile * d);
  uint16_t* p16 = regions.take<uint16_t>(prm.q_tile * prm.k_tile);
  uint16_t* ds16 = regions.take<uint16_t>(prm.q_tile * prm.k_tile);
  float* dk_tile = regions.take<float>(prm.k_tile * d);
  float* dv_tile = regions.take<float>(prm.k_tile * d);
  float* dq_tile = regions.take<float>(prm.q_tile * d);
  // alpha in the row pass (cheaper than a matmul output scale), unless it is not positive.
  const float gemm_alpha = alpha > 0.0f ? 1.0f : alpha;
  const float softmax_alpha = alpha > 0.0f ? alpha : 1.0f;
  pack_rows(typed<uint16_t>(b.k) + j0 * b.kv_stride, b.kv_stride, nk, d, k);
  pack_rows(typed<uint16_t>(b.v) + j0 * b.kv_stride, b.kv_stride, nk, d, v);
  std::fill(dk_tile, dk_tile + nk * d, 0.0f);
  std::fill(dv_tile, dv_tile + nk * d, 0.0f);
  const int64_t tiles = q_tiles(b, prm);
  for_each_query_tile(b, prm, rows, j0, j1, [&](int64_t n, int64_t t, int64_t i0, int64_t i1, bool full) {
    const int64_t nq = i1 - i0;
    const int64_t at = n * b.q_head_step + i0 * b.q_stride;
    pack_rows(typed<uint16_t>(b.q) + at, b.q_stride, nq, d, q);
    pack_rows(typed<uint16_t>(b.dout) + at, b.q_stride, nq, d, dout);
    bf16_gemm(false, true, nq, nk, d, gemm_alpha, q, k, 0.0f, p_tile);
    bf16_gemm(false, true, nq, nk, d, 1.0f, dout, v, 0.0f, ds_tile);
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t state = n * b.state_head_step + (i0 + i) * b.state_stride;
      // Visible keys of query i0+i in this tile: [lo, hi); P = dS = 0 elsewhere.
      int64_t lo = 0, hi = nk;
      if (!full) {
        lo = std::clamp<int64_t>(b.mask.key_begin(i0 + i, b.n_k) - j0, 0, nk);
        hi = std::clamp<int64_t>(b.mask.key_end(i0 + i, b.n_k) - j0, lo, nk);
      }
      uint16_t* prow = p16 + i * nk;
      uint16_t* dsrow = ds16 + i * nk;
      std::fill(prow, prow + lo, uint16_t{0});
      std::fill(dsrow, dsrow + lo, uint16_t{0});
      softmax_grad_to_bf16(p_tile + i * nk + lo, ds_tile + i * nk + lo, hi - lo, softmax_alpha,
                           b.lse[state] * kLog2e, b.delta[state], scale, prow + lo, dsrow + lo);
      std::fill(prow + hi, prow + nk, uint16_t{0});
      std::fill(dsrow + hi, dsrow + nk, uint16_t{0});
    }
    bf16_gemm(true, false, nk, d, nq, 1.0f, p16, dout, 1.0f, dv_tile);
    bf16_gemm(true, false, nk, d, nq, 1.0f, ds16, q, 1.0f, dk_tile);
    bf16_gemm(false, false, nq, d, nk, 1.0f, ds16, k, 0.0f, dq_tile);
    TileLock lock(locks[n * tiles + t]);
    for (int64_t i = 0; i < nq; ++i) add(b.dq + at + i * b.q_stride, dq_tile + i * d, d);
  });
  for (int64_t j = 0; j < nk; ++j) {
    add(b.dk + (j0 + j) * b.dkv_stride, dk_tile + j * d, d);
    add(b.dv + (j0 + j) * b.dkv_stride, dv_tile + j * d, d);
  }
}

// The fused tile's chunks (attend_fused_backward.hpp): kFusedChunkBytes of head_dim-wide fp32
// rows, a multiple of kFusedQueryPad, at most kFusedMaxChunk: 128 rows at D=64, 64 at D=128. A
// chunk's q and dout rows, its P and dS tiles and a key chunk's rows and gradients then stay in L2
// and the blocks' operands in L1. Measured on dense 4096 x 4096, one thread (docs/benchmarks.md):
// 16 KiB (64 rows at D=64, 32 at D=128) was no faster at D=64 and slower at D=128.
constexpr int64_t kFusedChunkBytes = 32 * 1024;
constexpr int64_t kFusedMaxChunk = 128;
int64_t fused_chunk(int64_t d) {
  const int64_t rows = kFusedChunkBytes / (d * int64_t{sizeof(float)}) / kFusedQueryPad * kFusedQueryPad;
  return std::clamp<int64_t>(rows, kFusedQueryPad, kFusedMaxChunk);
}
constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
// The row stride of kt, vt (keys) and of P, dS (a key chunk): one cache line more than the padded
// keys, so that a column of rows (read down by the score and dV/dK blocks) does not fall into the
// few L1 sets a power-of-two stride maps to (as fused_row_stride does for the forward).
constexpr int64_t padded_keys(int64_t n) { return round_up(n, kFusedQueryPad) + kFusedQueryPad; }

// Scratch floats of backward_key_tile_fused: kt, vt, the packed k rows, the dK and dV tiles, q,
// dout and the dQ tile, P and dS, lse2, delta and the rows' keys in the tile, lo and hi.
int64_t fused_floats(const AttendParams& p) {
  const int64_t d = p.head_dim, ldk = padded_keys(p.k_tile);
  const int64_t kc = std::min(fused_chunk(d), p.k_tile), qc = std::min(fused_chunk(d), p.q_tile);
  return 2 * region_floats(d * ldk, 4) + 3 * region_floats(p.k_tile * d, 4) + 3 * region_floats(p.q_tile * d, 4) +
         2 * region_floats(qc * padded_keys(kc), 4) + 4 * region_floats(p.q_tile, 4) + 2 * region_floats(qc, 4);
}

// One row of d elements as fp32 into dst.
inline void copy_row(const float* src, int64_t d, float* dst) { std::copy_n(src, d, dst); }
inline void copy_row(const uint16_t* src, int64_t d, float* dst) { bf16_to_f32(src, dst, d); }

// backward_key_tile on the fused tile kernel. The key tile is packed once (kt, vt, k rows) and
// its gradients accumulate in dense tiles added to dk and dv at the end; per query head and
// query tile, q and dout are packed and the tile's dQ accumulates densely, to be added to dq
// under the tile's lock; the tile pair runs as chunks of query rows x keys, skipping those the
// mask leaves empty.
template <class T>
void backward_key_tile_fused(const GradBlock& b, int64_t j0, int64_t j1, const AttendParams& prm, FusedIsa isa,
                             float* scratch, std::atomic_flag* locks) {
  const int64_t d = prm.head_dim;
  DRING_ASSERT(j1 - j0 <= prm.k_tile);
  const float scale = static_cast<float>(prm.scale);
  const float alpha = scale * kLog2e;
  const int64_t nk = j1 - j0;
  const RowRange rows = rows_seeing(b.mask, b.n_q, b.n_k, j0, j1);
  if (rows.begin >= rows.end) return;
  const int64_t kc = std::min(fused_chunk(d), prm.k_tile), qc = std::min(fused_chunk(d), prm.q_tile);
  const int64_t ldk = padded_keys(prm.k_tile), ldp = padded_keys(kc);
  ScratchRegions regions(scratch);
  float* kt = regions.take<float>(d * ldk);
  float* vt = regions.take<float>(d * ldk);
  float* kp = regions.take<float>(prm.k_tile * d);
  float* dk_tile = regions.take<float>(prm.k_tile * d);
  float* dv_tile = regions.take<float>(prm.k_tile * d);
  float* q = regions.take<float>(prm.q_tile * d);
  float* dout = regions.take<float>(prm.q_tile * d);
  float* dq_tile = regions.take<float>(prm.q_tile * d);
  float* p_tile = regions.take<float>(qc * ldp);
  float* ds_tile = regions.take<float>(qc * ldp);
  float* lse2 = regions.take<float>(prm.q_tile);
  float* delta = regions.take<float>(prm.q_tile);
  int32_t* lo = regions.take<int32_t>(qc);
  int32_t* hi = regions.take<int32_t>(qc);
  int32_t* tile_lo = regions.take<int32_t>(prm.q_tile);
  int32_t* tile_hi = regions.take<int32_t>(prm.q_tile);
  // Zero padding past the last key as far as a chunk's padded keys can reach (< nk + 16), not to
  // the row's end: a small block (8 keys) would otherwise write 30 times its own rows in zeros.
  const int64_t reach = std::min(ldk, padded_keys(nk));
  // bf16 K and V rows are widened first (their own scratch regions), then packed as fp32 ones.
  int64_t kv_ld = b.kv_stride;
  const float* k_rows = nullptr;
  const float* v_rows = nullptr;
  if constexpr (kIsBf16<T>) {
    k_rows = f32_rows(typed<T>(b.k) + j0 * b.kv_stride, b.kv_stride, nk, d, regions.take<float>(prm.k_tile * d), true,
                      &kv_ld);
    v_rows = f32_rows(typed<T>(b.v) + j0 * b.kv_stride, b.kv_stride, nk, d, regions.take<float>(prm.k_tile * d), true,
                      &kv_ld);
  } else {
    k_rows = typed<T>(b.k) + j0 * b.kv_stride;
    v_rows = typed<T>(b.v) + j0 * b.kv_stride;
  }
  fused_pack_key_tile(isa, k_rows, v_rows, kv_ld, nk, d, alpha, kt, vt, ldk, reach, kp);
  std::fill(dk_tile, dk_tile + nk * d, 0.0f);
  std::fill(dv_tile, dv_tile + nk * d, 0.0f);
  FusedGradTile t;
  t.d = d;
  t.scale = scale;
  t.lo = lo;
  t.hi = hi;
  t.ldk = ldk;
  t.p = p_tile;
  t.ds = ds_tile;
  t.ldp = ldp;
  const int64_t tiles = q_tiles(b, prm);
  const bool trivial = b.mask.trivial();
  for_each_query_tile(b, prm, rows, j0, j1, [&](int64_t n, int64_t tile, int64_t i0, int64_t i1, bool) {
    const int64_t nq = i1 - i0;
    const int64_t at = n * b.q_head_step + i0 * b.q_stride;
    for (int64_t i = 0; i < nq; ++i) {
      copy_row(typed<T>(b.q) + at + i * b.q_stride, d, q + i * d);
      copy_row(typed<T>(b.dout) + at + i * b.q_stride, d, dout + i * d);
      const int64_t state = n * b.state_head_step + (i0 + i) * b.state_stride;
      lse2[i] = b.lse[state] * kLog2e;
      delta[i] = b.delta[state];
      // Visible keys of the row, relative to the key tile (the mask's arithmetic once per row).
      const int64_t row_lo = trivial ? 0 : std::clamp<int64_t>(b.mask.key_begin(i0 + i, b.n_k) - j0, 0, nk);
      const int64_t row_hi = trivial ? nk : std::clamp<int64_t>(b.mask.key_end(i0 + i, b.n_k) - j0, 0, nk);
      tile_lo[i] = static_cast<int32_t>(row_lo);
      tile_hi[i] = static_cast<int32_t>(row_hi);
    }
    std::fill(dq_tile, dq_tile + nq * d, 0.0f);
    for (int64_t c0 = 0; c0 < nk; c0 += kc) {
      const int64_t c1 = std::min(nk, c0 + kc);
      const auto chunk_keys = static_cast<int32_t>(c1 - c0), first = static_cast<int32_t>(c0);
      for (int64_t q0 = 0; q0 < nq; q0 += qc) {
        const int64_t q1 = std::min(nq, q0 + qc);
        // Visible keys of each row, relative to the chunk's first key; chunks none sees are skipped.
        bool any = false;
        for (int64_t i = q0; i < q1; ++i) {
          lo[i - q0] = std::clamp(tile_lo[i] - first, 0, chunk_keys);
          hi[i - q0] = std::clamp(tile_hi[i] - first, 0, chunk_keys);
          any = any || lo[i - q0] < hi[i - q0];
        }
        if (!any) continue;
        t.nq = q1 - q0;
        t.nk = c1 - c0;
        t.nk_pad = round_up(t.nk, kFusedQueryPad);
        t.q = q + q0 * d;
        t.dout = dout + q0 * d;
        t.lse2 = lse2 + q0;
        t.delta = delta + q0;
        t.kt = kt + c0;
        t.vt = vt + c0;
        t.k = kp + c0 * d;
        t.dk = dk_tile + c0 * d;
        t.dv = dv_tile + c0 * d;
        t.dq = dq_tile + q0 * d;
        fused_backward_tile(isa, t);
      }
    }
    TileLock lock(locks[n * tiles + tile]);
    for (int64_t i = 0; i < nq; ++i) add(b.dq + at + i * b.q_stride, dq_tile + i * d, d);
  });
  for (int64_t j = 0; j < nk; ++j) {
    add(b.dk + (j0 + j) * b.dkv_stride, dk_tile + j * d, d);
    add(b.dv + (j0 + j) * b.dkv_stride, dv_tile + j * d, d);
  }
}

// backward_key_tile on AMX (attend_amx_backward.hpp): the key tile packed once, then per query
// head and query tile the five products, dQ^T added to dq under the tile's lock, and the item's
// dK and dV tiles added to dk and dv at the end.
template <class T>
void backward_key_tile_amx(const GradBlock& b, int64_t j0, int64_t j1, const AttendParams& prm, float* scratch,
                           std::atomic_flag* locks) {
  const int64_t d = prm.head_dim, nk = j1 - j0;
  DRING_ASSERT(j1 - j0 <= amx_grad_keys(prm));
  const RowRange rows = rows_seeing(b.mask, b.n_q, b.n_k, j0, j1);
  if (rows.begin >= rows.end) return;
  const int parts = kIsBf16<T> ? kAmxPartsBf16 : kAmxPartsF32;
  const int64_t nq_max = amx_round_up(prm.q_tile, kAmxCols), nk_max = amx_round_up(amx_grad_keys(prm), kAmxCols);
  const int64_t dp = amx_round_up(d, kAmxCols);
  ScratchRegions regions(scratch);
  AmxGradKeys k;
  k.parts = parts;
  k.k = typed<T>(b.k) + j0 * b.kv_stride;
  k.v = typed<T>(b.v) + j0 * b.kv_stride;
  k.kv_stride = b.kv_stride;
  k.nk = nk;
  k.nk_pad = amx_round_up(nk, kAmxCols);
  k.d = d;
  k.dp = dp;
  k.ka = regions.take<uint16_t>(parts * nk_max * dp);
  k.va = regions.take<uint16_t>(parts * nk_max * dp);
  k.kt = regions.take<uint16_t>(parts * nk_max * dp);
  k.dk = regions.take<float>(nk_max * dp);
  k.dv = regions.take<float>(nk_max * dp);
  AmxGradQueries q;
  q.q_stride = b.q_stride;
  q.alpha = static_cast<float>(prm.scale) * kLog2e;
  q.scale = static_cast<float>(prm.scale);
  q.qk = regions.take<uint16_t>(parts * dp * nq_max);
  q.ok = regions.take<uint16_t>(parts * dp * nq_max);
  q.qv = regions.take<uint16_t>(parts * dp * nq_max);
  q.ov = regions.take<uint16_t>(parts * dp * nq_max);
  q.st = regions.take<float>(kAmxStripRows * nq_max);
  q.dpt = regions.take<float>(kAmxStripRows * nq_max);
  q.pt = regions.take<uint16_t>(parts * kAmxStripRows * nq_max);
  q.dst = regions.take<uint16_t>(parts * kAmxStripRows * nq_max);
  q.dsb = regions.take<uint16_t>(parts * nk_max * nq_max);
  q.dqt = regions.take<float>(dp * nq_max);
  float* lse2 = regions.take<float>(nq_max);
  float* delta = regions.take<float>(nq_max);
  int32_t* lo = regions.take<int32_t>(nq_max);
  int32_t* hi = regions.take<int32_t>(nq_max);
  q.lse2 = lse2;
  q.delta = delta;
  q.lo = lo;
  q.hi = hi;
  amx_grad_pack_keys(k);
  const int64_t tiles = q_tiles(b, prm);
  const bool trivial = b.mask.trivial();
  for_each_query_tile(b, prm, rows, j0, j1, [&](int64_t n, int64_t tile, int64_t i0, int64_t i1, bool) {
    const int64_t nq = i1 - i0;
    const int64_t at = n * b.q_head_step + i0 * b.q_stride;
    q.q = typed<T>(b.q) + at;
    q.dout = typed<T>(b.dout) + at;
    q.nq = nq;
    q.nq_pad = amx_round_up(nq, kAmxCols);
    for (int64_t i = 0; i < q.nq_pad; ++i) {
      if (i >= nq) {  // padding rows: no key, P = dS = 0
        lse2[i] = delta[i] = 0.0f;
        lo[i] = hi[i] = 0;
        continue;
      }
      const int64_t state = n * b.state_head_step + (i0 + i) * b.state_stride;
      lse2[i] = b.lse[state] * kLog2e;
      delta[i] = b.delta[state];
      lo[i] = static_cast<int32_t>(trivial ? 0 : std::clamp<int64_t>(b.mask.key_begin(i0 + i, b.n_k) - j0, 0, nk));
      hi[i] = static_cast<int32_t>(trivial ? nk : std::clamp<int64_t>(b.mask.key_end(i0 + i, b.n_k) - j0, 0, nk));
    }
    amx_grad_queries(k, q);
    TileLock lock(locks[n * tiles + tile]);
    amx_grad_add_dq(q.dqt, q.nq_pad, nq, d, b.dq + at, b.q_stride);
  });
  for (int64_t j = 0; j < nk; ++j) {
    add(b.dk + (j0 + j) * b.dkv_stride, k.dk + j * dp, d);
    add(b.dv + (j0 + j) * b.dkv_stride, k.dv + j * dp, d);
  }
}

}  // namespace

FusedIsa fused_backward_isa(const AttendParams& params) {
  // The forward's choice: AVX-512 where the CPU has it, else AVX2 up to head_dim 128 (64 on an
  // AVX-512 CPU, for head_dims that are not multiples of 16). The AVX2 instance, once 0.72-0.88x
  // of oneDNN's AVX2 sgemm backward, is level with it on dense blocks, 1.2-1.6x faster on
  // LongNet's and 1.3-5x on small ones since its pass-1 block was reshaped (docs/benchmarks.md,
  // "Without AMX").
  return fused_isa(params);
}

bool fused_f32_backward_runs(const AttendParams& params) { return fused_backward_isa(params) != FusedIsa::kNone; }

bool f32_amx_backward_runs(const AttendParams& params) { return f32_amx_runs(params); }

int64_t backward_workspace_floats_per_thread(const AttendParams& params) {
  const int64_t f32 = 2 * params.q_tile * params.k_tile;
  if (params.dtype != DType::kBF16) {
    const int64_t fused = fused_backward_isa(params) != FusedIsa::kNone ? fused_floats(params) : 0;
    const int64_t amx = f32_amx_backward_runs(params)
                            ? amx_grad_floats(params.q_tile, amx_grad_keys(params), params.head_dim, kAmxPartsF32)
                            : 0;
    return std::max({f32, fused, amx});
  }
  // Any bf16 path: widened K, V, q, dout tiles, the matmul path's packed tiles, or the fused tile
  // with the key tile's widened K and V rows.
  const int64_t widened_fused = fused_backward_isa_f32(params) != FusedIsa::kNone
                                    ? fused_floats(params) + 2 * region_floats(params.k_tile * params.head_dim, 4)
                                    : 0;
  return std::max({f32 + 2 * (params.q_tile + params.k_tile) * params.head_dim, bf16_matmul_floats(params),
                   widened_fused,
                   bf16_amx_runs(params)
                       ? amx_grad_floats(params.q_tile, amx_grad_keys(params), params.head_dim, kAmxPartsBf16)
                       : 0});
}

void attend_backward(std::span<const GradBlock> blocks, const AttendParams& prm, float* workspace) {
  DRING_ASSERT(prm.head_dim >= 1 && prm.q_tile >= 1 && prm.k_tile >= 1 && prm.threads >= 1);
  // Work items, and one lock per (block, head, query tile) of the big blocks.
  std::vector<Item> items;
  std::vector<int64_t> lock_base(blocks.size(), 0);
  int64_t locks_needed = 0;
  const int64_t n = static_cast<int64_t>(blocks.size());
  const FusedIsa fused = fused_backward_isa(prm);
  const FusedIsa fused_f32 = fused_backward_isa_f32(prm);
  // The big blocks the AMX tile takes, in items of amx_grad_keys keys: fp32 ones where it pays,
  // bf16 ones wherever it runs but those the widened fused tile takes (a non-big block never
  // reaches it: is_small is asked first).
  const bool amx_f32 = f32_amx_backward_runs(prm);
  const bool amx_bf16 = prm.dtype == DType::kBF16 && bf16_amx_runs(prm);
  std::vector<uint8_t> on_amx(blocks.size());
  for (int64_t b = 0; b < n; ++b) {
    on_amx[b] = amx_grad_pays(blocks[b], prm, amx_f32) || (amx_bf16 && !bf16_widened_fused(blocks[b], prm, fused_f32));
  }
  for (int64_t b = 0; b < n;) {
    if (is_small(blocks[b], prm, fused, fused_f32)) {
      int64_t e = b, work = 0;
      while (e < n && is_small(blocks[e], prm, fused, fused_f32) && work < prm.q_tile * prm.k_tile) {
        work += blocks[e].n_heads * blocks[e].n_q * blocks[e].n_k + 1;
        ++e;
      }
      items.push_back({b, e, 0, 0});
      b = e;
      continue;
    }
    lock_base[b] = locks_needed;
    locks_needed += blocks[b].n_heads * q_tiles(blocks[b], prm);
    const int64_t keys = on_amx[b] != 0 ? amx_grad_keys(prm) : prm.k_tile;
    for (int64_t j0 = 0; j0 < blocks[b].n_k; j0 += keys) {
      items.push_back({b, b + 1, j0, std::min(blocks[b].n_k, j0 + keys)});
    }
    ++b;
  }
  std::unique_ptr<std::atomic_flag[]> locks(new std::atomic_flag[std::max<int64_t>(locks_needed, 1)]);
  dispatch_storage(prm.dtype, [&](auto element) {
    using T = decltype(element);
    const bool matmul = kIsBf16<T> && prm.bf16_matmul && bf16_matmul_available();
    run_items(items, prm, workspace, backward_workspace_floats_per_thread(prm), [&](const Item& item, float* scratch) {
      for (int64_t b = item.block_begin; b < item.block_end; ++b) {
        if (is_small(blocks[b], prm, fused, fused_f32)) {
          backward_small<T>(blocks[b], prm.head_dim, static_cast<float>(prm.scale));
        } else if (on_amx[b] != 0) {
          backward_key_tile_amx<T>(blocks[b], item.key_begin, item.key_end, prm, scratch, locks.get() + lock_base[b]);
        } else if (!kIsBf16<T> && fused != FusedIsa::kNone) {
          backward_key_tile_fused<T>(blocks[b], item.key_begin, item.key_end, prm, fused, scratch,
                                     locks.get() + lock_base[b]);
        } else if (bf16_widened_fused(blocks[b], prm, fused_f32)) {
          backward_key_tile_fused<T>(blocks[b], item.key_begin, item.key_end, prm, fused_f32, scratch,
                                     locks.get() + lock_base[b]);
        } else if (matmul) {
          backward_key_tile_bf16(blocks[b], item.key_begin, item.key_end, prm, scratch, locks.get() + lock_base[b]);
        } else {
          backward_key_tile<T>(blocks[b], item.key_begin, item.key_end, prm, scratch, locks.get() + lock_base[b]);
        }
      }
    });
  });
}

void delta(const DeltaParams& p, int threads) {
  dispatch_storage(p.dtype, [&](auto element) {
    using T = decltype(element);
    const int64_t rows = p.batch * p.rows;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t br = 0; br < rows; ++br) {
      const int64_t b = br / p.rows, i = br % p.rows;
      for (int64_t h = 0; h < p.heads; ++h) {
        const T* o = typed<T>(p.out) + (br * p.heads + h) * p.head_dim;
        const T* g = typed<T>(p.dout) + (br * p.heads + h) * p.head_dim;
        // A simd reduction: the compiler may reorder the sum into vector lanes. As one serial chain
        // of dependent adds a row it made a backward pass at S = 32768, H = 4, D = 64 about 5 ms
        // (bf16) and 1.5 ms (fp32) longer (docs/benchmarks.md, 2026-12-04).
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < p.head_dim; ++c) sum += to_f32(o[c]) * to_f32(g[c]);
        p.delta[(b * p.heads + h) * p.rows + i] = sum;
      }
    }
  });
}

}  // namespace dring::kernels::cpu
