// dring/kernels/attend.hpp — the kernel family every backend implements: dense attention on one
// block of strided rows, merged into the rows' running (out, lse).
//
// Dilated attention over a ring decomposes into blocks: for one (pair, segment, head) the rows a
// dilation selects are every r-th row of a shard, so q, k and v of a block are plain strided row
// views (row stride r*heads*head_dim in a shard, head_dim in a packed message). The state of a
// query row is its output so far and its log-sum-exp so far: (out, lse) starts at (0, -inf), and
// each block is merged in by log-sum-exp — out' = (e^lse out + sum_j e^s_j v_j) / e^lse', lse' =
// log(e^lse + sum_j e^s_j). Blocks of all pairs and all ring steps merge into the same rows, in
// any order; after the last one, (out, lse) is the answer. No other per-row state exists.
//
// Tensors q, k, v, out, dout are in the params' storage dtype (fp32 on CPUs; fp16, bf16 or fp32
// on GPUs); lse, delta and gradient accumulators are fp32. Pointers are untyped for that reason;
// strides and counts are in elements.
#pragma once

#include <cstdint>

#include "dring/core/dtype.hpp"
#include "dring/core/geometry.hpp"

namespace dring::kernels {

// The query rows of a block that may see a key of [j0, j1): since both ends of a row's key
// interval are non-decreasing in the row, they are the rows from the first whose last key is at or
// after j0 to the last whose first key is before j1, i.e. [begin, end) below (binary searches).
// Rows inside may still see none of these keys (a band narrower than the key step); rows outside
// never do. For the backward kernels, which walk queries per key tile.
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
};
DRING_HD inline RowRange rows_seeing(const BlockMask& mask, int64_t n_q, int64_t n_k, int64_t j0, int64_t j1) {
  if (j0 >= j1 || n_q <= 0) return RowRange{0, 0};
  if (mask.trivial()) return RowRange{0, n_q};
  // The first row i in [0, n_q] with key_end(i) > j0, then the first with key_begin(i) >= j1.
  int64_t lo = 0, hi = n_q;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (mask.key_end(mid, n_k) > j0) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  RowRange rows{lo, n_q};
  hi = n_q;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (mask.key_begin(mid, n_k) >= j1) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  rows.end = lo;
  return rows;
}

// One attention block. Row i of q attends to the rows j of k and v that `mask` admits: all of
// them (BlockMask::none()), j <= i (BlockMask::causal(), q and k the same rows), or in general
// the keys [mask.key_begin(i), mask.key_end(i)) that causality and a window leave between these
// query and key positions. A row with no visible key in the block is left as it was. All
// pointers are non-owning.
struct AttendBlock {
  const void* q = nullptr;
  int64_t q_stride = 0;  // elements between consecutive rows
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_stride = 0;
  void* out = nullptr;  // normalised output so far; the rows of q's layout
  int64_t out_stride = 0;
  float* lse = nullptr;  // natural log; -inf for a row nothing has reached yet
  int64_t lse_stride = 0;
  int64_t n_q = 0;
  int64_t n_k = 0;
  BlockMask mask;
};

// Called now and then by the first worker thread (the calling thread) between tiles, with the
// fraction of the call's work done so far; the ring executor uses it to drive communication
// progress while the kernel runs, and to report progress. Must be cheap. It may throw (an MPI
// error while testing a request, say): the kernel then stops taking work and rethrows the first
// exception on the calling thread once its threads are done, never from inside a parallel region.
struct ProgressHook {
  void (*fn)(void* ctx, double fraction_done) = nullptr;
  void* ctx = nullptr;
  void operator()(double fraction_done) const {
    if (fn != nullptr) fn(ctx, fraction_done);
  }
};

enum class CpuF32Kernel : int { kAuto = 0, kSgemm = 1, kAvx2 = 2, kAvx512 = 3, kAmx = 4 };
enum class CpuBf16Kernel : int { kAuto = 0, kOnednn = 1, kAmx = 2 };

struct AttendParams {
  DType dtype = DType::kF32;
  int64_t head_dim = 0;
  double scale = 0.0;  // multiplies q.k
  int threads = 1;
  int64_t q_tile = 128;  // rows of q per work item
  int64_t k_tile = 256;  // rows of k per inner step
  // Blocks with at most this many scores take the direct path (no tile products); measured on
  // dilated 8x8, 16x16 and 32x32 blocks (docs/benchmarks.md), the crossover is near 16x16. In
  // fp32 where a fused ISA runs, fused_small_block_scores replaces it for the forward, and the
  // backward takes its fused tiles for every block (faster there at every size measured).
  int64_t small_block_scores = 256;
  // fp32 forward where a fused ISA runs: blocks with at most this many scores (and no more keys
  // than one key tile of the fused kernel) run whole on it, the next block's rows prefetched
  // meanwhile (attend_fused.hpp, fused_small_block). Up to 64x64 that beat the tiles on the
  // dilated rows of dring_kernel_bench (docs/benchmarks.md).
  int64_t fused_small_block_scores = 4096;
  // fp32 forward on those whole blocks: when a call's small blocks hold more than this many bytes
  // of out rows, a row's first values (no state yet) are written by streaming stores, neither
  // read nor fetched first; rows that fit in the caches stay there for the next read instead.
  // -1 picks it: the threads' L2 caches. The tests force it both ways (0: always).
  int64_t stream_first_writes_bytes = -1;
  // bf16 storage on the CPU: run the tile products as oneDNN bf16 matmuls (AMX or avx512_bf16)
  // where the CPU has them (kernels/cpu/bf16_matmul.hpp); false forces the portable path that
  // widens the tiles to fp32 and runs sgemm (the tests run both). Ignored for other dtypes.
  bool bf16_matmul = true;
  // fp32 on the CPU: the tile kernel of the forward and of the backward. kAuto takes the AMX tiles
  // with every operand in three bf16 parts (fp32-accurate; kernels/cpu/attend_amx.hpp for the
  // forward, attend_amx_backward.hpp for the backward) where the CPU has AMX-BF16 and the OS
  // grants it and head_dim is at most 256; else, and for the small blocks, the fused
  // micro-kernels (kernels/cpu/attend_fused.hpp, attend_fused_backward.hpp) on AVX-512 where the
  // CPU has it and head_dim is a multiple of 16 up to 256, else (forward only) on AVX2+FMA for
  // head_dim a multiple of 8 up to 64, else sgemm. kAuto gives the forward's AMX tile only work
  // items of 256 query rows or more whose rows see 1024 keys or more on average, and the
  // backward's only blocks whose rows see 512 keys or more on average (below that the fused
  // tiles measured faster); kAmx gives them every item and block they can run and is otherwise
  // kAuto; the others force one kernel, never the AMX tiles (tests, benchmarks), and fall back to
  // sgemm where it cannot run (cpu::f32_amx_runs, cpu::f32_amx_backward_runs,
  // cpu::fused_f32_runs, cpu::fused_f32_backward_runs say what runs). Ignored for bf16.
  CpuF32Kernel cpu_f32_kernel = CpuF32Kernel::kAuto;
  // fp32 forward on the fused tile: query tiles (q_tile rows each) per work item, each K/V tile
  // packed once for all of them. 0 picks it: 4, or fewer where that would leave under 8 items per
  // thread. Tests and benchmarks force it.
  int64_t fused_tiles_per_item = 0;
  // bf16 on the CPU, with bf16_matmul set: kAuto and kAmx take the AMX tiles (forward:
  // kernels/cpu/attend_amx.hpp; backward: attend_amx_backward.hpp, for blocks above 16 x 16) where
  // the CPU has AMX-BF16 and AVX512-BF16, the OS grants the tile registers and head_dim is at most
  // 256, else the oneDNN matmul tiles; kOnednn forces those (cpu::bf16_amx_runs says whether the
  // AMX tiles run).
  CpuBf16Kernel cpu_bf16_kernel = CpuBf16Kernel::kAuto;
  ProgressHook progress;
};

// Row movement (a backend's copy_rows and add_rows): `rows` rows of head_dim elements from src (row stride src_stride) to dst (row stride
// dst_stride); strides in elements.
struct RowRun {
  const void* src = nullptr;
  int64_t src_stride = 0;
  void* dst = nullptr;
  int64_t dst_stride = 0;
  int64_t rows = 0;
};

// Backward of one block, flash-style: scores are recomputed tile by tile from q, k and the saved
// lse, with delta = rowsum(dout * out); dq, dk and dv accumulate (+=) in fp32. The block serves
// the `n_heads` query heads that read the same key rows (same kv head, same offset): query head
// n's rows start n * q_head_step elements after head 0's, its lse and delta n * state_head_step
// after. `mask` decides which keys each query sees, as in AttendBlock. Within one call, blocks
// must not share dq rows or dk/dv rows.
struct GradBlock {
  const void* q = nullptr;
  const void* dout = nullptr;
  const void* out = nullptr;  // the saved forward output, the layout of q (fused kernels recompute delta from it)
  float* dq = nullptr;   // fp32, the layout of q
  int64_t q_stride = 0;  // q, dout and dq rows
  int64_t q_head_step = 0;
  const float* lse = nullptr;    // natural log
  const float* delta = nullptr;  // rowsum(dout * out)
  int64_t state_stride = 0;
  int64_t state_head_step = 0;
  int64_t n_heads = 1;
  int64_t n_q = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_stride = 0;
  float* dk = nullptr;  // fp32
  float* dv = nullptr;  // fp32
  int64_t dkv_stride = 0;
  int64_t n_k = 0;
  BlockMask mask;
};

// delta[b, h, i] = sum_c out[b, i, h, c] * dout[b, i, h, c]; out and dout are [batch, rows, heads,
// head_dim] in the storage dtype, delta is [batch, heads, rows] like lse.
struct DeltaParams {
  DType dtype = DType::kF32;
  int64_t batch = 0;
  int64_t rows = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  const void* out = nullptr;
  const void* dout = nullptr;
  float* delta = nullptr;
};

}  // namespace dring::kernels
