// dring/kernels/dense_batches.hpp — which blocks of a kernel call form one strided-batched dense
// attention problem, the unit a fused library kernel (cuDNN's SDPA) runs; backend-neutral.
//
// The executor emits blocks one (segment, head) at a time, but the blocks of one (pair, offset
// class) are the same dense problem over and over: equal sizes, equal row strides, the same mask
// in row indices, and pointers that step by a constant from one head (or segment) to the next.
// plan_dense finds those runs and describes each as a 4-d problem [batch, heads, rows, head_dim]
// with a base pointer and three strides per tensor, exactly the form cuDNN's graph API takes, so
// the GPU path launches one fused call per problem with no gathered copy. What cannot be said that
// way stays a leftover for dring's own kernels. The rule (docs/cudnn.md "Which blocks go to cuDNN"):
//
//  1. A block is a candidate when the storage dtype is fp16 or bf16 (DenseRule::accept_f32 lets the
//     CPU proof take fp32 too), head_dim is a multiple of 8 and at most max_head_dim, every tensor
//     pointer and row stride is 16-byte aligned, n_q and n_k are at least min_rows, and its mask is
//     a diagonal band cuDNN can express (dense_mask below) under which every query row sees a key.
//  2. Candidates group into runs of consecutive blocks whose q-side pointers (q, out, lse, and for
//     the backward dout, dq, delta) step by constant deltas (the heads dimension) and whose k-side
//     pointers (k, v, dk, dv) repeat for `g` blocks and then step by a constant: query head t reads
//     kv head t / g (GQA with heads_q = g * heads_kv). A GradBlock already serves n_heads query heads
//     of one kv head and is never split.
//  3. Runs with the same sizes, strides and head steps whose first pointers form an arithmetic
//     progression become the batch dimension (segments, offsets, batch elements: whichever
//     progression is longest).
//  4. A problem is kept when it holds at least min_problem_scores visible scores; the blocks of a
//     smaller one are leftovers (a fused launch costs more than the work it would do).
//
// Blocks of one kernel call never share output rows (attend.hpp), so regrouping them changes no
// result: a problem's blocks may run in any order relative to the leftovers.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "dring/kernels/attend.hpp"

namespace dring::kernels {

// The keys query row i sees, in cuDNN's terms with the diagonal aligned top-left (j = i): key j
// counts iff j - i <= right (when has_right) and i - j < left (when has_left). No bound: dense.
struct DenseMask {
  bool has_right = false;
  int64_t right = 0;  // >= 0 (cuDNN's diagonal band right bound; 0 is the causal mask)
  bool has_left = false;
  int64_t left = 0;  // >= 1 (cuDNN's diagonal band left bound, the sliding window)
  bool operator==(const DenseMask&) const = default;
  bool none() const { return !has_right && !has_left; }
  // The same condition as dring's BlockMask on row indices (both firsts 0, steps 1).
  BlockMask block_mask() const;
};

// The dense form of a block's mask, or nothing when cuDNN cannot express it: the query and key
// steps differ (positions are not a shift of row indices), or some query row would see no key
// (cuDNN's lse of an empty row is not dring's -inf), or a left bound with n_q > n_k (cuDNN's
// sliding window needs s_q <= s_kv).
std::optional<DenseMask> dense_mask(const BlockMask& mask, int64_t n_q, int64_t n_k);

// A tensor of a problem: element (b, h, i, c) at base + b*batch_stride + h*head_stride +
// i*row_stride + c, in elements of the tensor's dtype (the storage dtype, fp32 for lse, delta,
// dq, dk, dv). Heads are query heads on the q side, kv heads on the k side. The base is writable
// for the tensors a problem updates (out and lse forward, dq, dk, dv backward).
struct DenseTensor {
  void* base = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t row_stride = 0;
  bool operator==(const DenseTensor&) const = default;
};

// One strided-batched problem: batch x heads_q query heads of s_q rows against heads_kv kv heads
// of s_kv rows (query head h reads kv head h / (heads_q / heads_kv)), head_dim from the params.
struct DenseProblem {
  int64_t batch = 0;
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t s_q = 0;
  int64_t s_kv = 0;
  DenseMask mask;
  DenseTensor q, k, v;
  DenseTensor out;  // forward: the running output the result merges into; backward: the saved output
  DenseTensor lse;  // fp32, head_dim 1: forward: the running lse; backward: the saved lse
  // Backward only (base null in a forward problem).
  DenseTensor dout;
  DenseTensor delta;  // fp32, rowsum(dout * out)
  DenseTensor dq;     // fp32 accumulators
  DenseTensor dk;
  DenseTensor dv;
  // Visible (query, key) pairs over the whole problem.
  double scores() const;
};

struct DenseRule {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;
  int64_t max_head_dim = 128;        // 256 on devices whose cuDNN takes it
  int64_t min_rows = 16;             // n_q and n_k of every block
  double min_problem_scores = 65536; // visible scores of one problem
  bool accept_f32 = false;           // the CPU proof only: cuDNN's SDPA has no fp32
  // The rule with every threshold at its floor: whatever has the shape of a dense problem maps.
  static DenseRule everything(DType dtype, int64_t head_dim);
};

struct DenseForwardPlan {
  std::vector<DenseProblem> problems;
  std::vector<std::vector<size_t>> sources;  // per problem, its blocks' indices in the input
  std::vector<AttendBlock> leftovers;        // for dring's kernels, in their original order
};
struct DenseBackwardPlan {
  std::vector<DenseProblem> problems;
  std::vector<std::vector<size_t>> sources;
  std::vector<GradBlock> leftovers;
};

DenseForwardPlan plan_dense(std::span<const AttendBlock> blocks, const DenseRule& rule);
DenseBackwardPlan plan_dense(std::span<const GradBlock> blocks, const DenseRule& rule);

// Element offset of (batch b, head h) in a problem's tensor.
inline int64_t dense_offset(const DenseTensor& t, int64_t b, int64_t h) {
  return b * t.batch_stride + h * t.head_stride;
}

}  // namespace dring::kernels
