// test_dense_batches.cpp — the rule that groups a kernel call's blocks into dense problems
// (dring/kernels/dense_batches.hpp): the dense form of masks against BlockMask on every (i, j),
// GQA head maps, batch progressions, and what stays a leftover and why. The CPU proof that the
// problems compute the right thing is tests/ring/test_dense_proof.cpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "dring/kernels/dense_batches.hpp"

namespace dring::kernels {
namespace {

bool sees(const BlockMask& m, int64_t i, int64_t j, int64_t n_k) { return m.key_begin(i, n_k) <= j && j < m.key_end(i, n_k); }

// Every mask of two progressions of one step under causality and windows: where dense_mask gives a
// form, it admits exactly the (i, j) the block mask admits and every row sees a key; where it gives
// none, the reason is one of those the header names.
TEST(DenseMask, EqualsTheBlockMaskOnEveryPair) {
  int mapped = 0, refused = 0;
  for (int64_t step : {1, 3}) {
    for (int64_t shift = -9; shift <= 9; ++shift) {
      for (const Band band : {Band::of(false, 0), Band::of(true, 0), Band::of(true, 4), Band::of(false, 5)}) {
        for (int64_t n_q : {1, 5, 8}) {
          for (int64_t n_k : {1, 4, 8}) {
            const BlockMask m = BlockMask::of(band, StridedRange{20 + shift * step, n_q, step}, StridedRange{20, n_k, step});
            const auto dense = dense_mask(m, n_q, n_k);
            bool every_row_sees = true;
            for (int64_t i = 0; i < n_q; ++i) every_row_sees = every_row_sees && m.key_begin(i, n_k) < m.key_end(i, n_k);
            if (!dense) {
              // Refused with every row seeing a key: only for a binding window (some row's first
              // key after 0) that cuDNN cannot take: s_q > s_kv, or row 0 not seeing key 0.
              ++refused;
              bool window_binds = false;
              for (int64_t i = 0; i < n_q; ++i) window_binds = window_binds || m.key_begin(i, n_k) > 0;
              EXPECT_TRUE(!every_row_sees || (window_binds && (n_q > n_k || m.key_begin(0, n_k) > 0)))
                  << "step " << step << " shift " << shift << " n_q " << n_q << " n_k " << n_k;
              continue;
            }
            ++mapped;
            ASSERT_TRUE(every_row_sees) << "step " << step << " shift " << shift << " n_q " << n_q << " n_k " << n_k;
            const BlockMask back = dense->block_mask();
            for (int64_t i = 0; i < n_q; ++i) {
              for (int64_t j = 0; j < n_k; ++j) {
                ASSERT_EQ(sees(back, i, j, n_k), sees(m, i, j, n_k))
                    << "step " << step << " shift " << shift << " n_q " << n_q << " n_k " << n_k << " i " << i << " j " << j;
              }
            }
            if (dense->has_right) {
              EXPECT_GE(dense->right, 0);
            }
            if (dense->has_left) {
              EXPECT_GE(dense->left, 1);
            }
          }
        }
      }
    }
  }
  EXPECT_GT(mapped, 100);
  EXPECT_GT(refused, 10);
}

TEST(DenseMask, NamedCases) {
  EXPECT_EQ(dense_mask(BlockMask::none(), 4, 4), DenseMask{});
  EXPECT_EQ(dense_mask(BlockMask::causal(), 4, 4), (DenseMask{true, 0, false, 0}));
  // Queries two rows after the keys under causality: right bound 2 (j - i <= 2).
  const Band causal = Band::of(true, 0);
  EXPECT_EQ(dense_mask(BlockMask::of(causal, {12, 6, 2}, {8, 6, 2}), 6, 6), (DenseMask{true, 2, false, 0}));
  // Different steps: positions are no shift of row indices.
  EXPECT_FALSE(dense_mask(BlockMask::of(causal, {0, 6, 2}, {0, 6, 3}), 6, 6));
  // Queries before their keys: row 0 would see nothing.
  EXPECT_FALSE(dense_mask(BlockMask::of(causal, {0, 6, 1}, {2, 6, 1}), 6, 6));
}

// A q [rows, heads, d] / kv [rows, kv_heads, d] shard of bf16, and the executor's forward blocks:
// one per (segment, offset, head) of a dilation-r pair, heads h = off, off + r, ... of offset off.
struct Shard {
  int64_t rows, heads, kv_heads, d;
  std::vector<uint16_t> q, k, v, out;
  std::vector<float> lse;
  Shard(int64_t rows_, int64_t heads_, int64_t kv_heads_, int64_t d_)
      : rows(rows_), heads(heads_), kv_heads(kv_heads_), d(d_), q(rows * heads * d), k(rows * kv_heads * d),
        v(k.size()), out(q.size()), lse(rows * heads) {}
  std::vector<AttendBlock> blocks(int64_t w, int64_t r) {
    std::vector<AttendBlock> list;
    for (int64_t seg = 0; seg * w < rows; ++seg) {
      for (int64_t off = 0; off < std::min(r, heads); ++off) {
        const int64_t first = seg * w + off, n = (std::min(rows, seg * w + w) - first + r - 1) / r;
        for (int64_t h = off; h < heads; h += r) {
          const int64_t g = h / (heads / kv_heads);
          AttendBlock b;
          b.q = q.data() + (first * heads + h) * d;
          b.out = out.data() + (first * heads + h) * d;
          b.q_stride = b.out_stride = r * heads * d;
          b.k = k.data() + (first * kv_heads + g) * d;
          b.v = v.data() + (first * kv_heads + g) * d;
          b.kv_stride = r * kv_heads * d;
          b.lse = lse.data() + h * rows + first;
          b.lse_stride = r;
          b.n_q = b.n_k = n;
          b.mask = BlockMask::causal();
          list.push_back(b);
        }
      }
    }
    return list;
  }
};

int64_t heads_in(const std::vector<DenseProblem>& problems) {
  int64_t n = 0;
  for (const DenseProblem& p : problems) n += p.batch * p.heads_q;
  return n;
}

TEST(PlanDense, DilatedGqaPairIsOneProblemPerOffsetWithSegmentsAsBatch) {
  Shard s(256, 8, 2, 16);
  const std::vector<AttendBlock> blocks = s.blocks(64, 2);  // 4 segments, 2 offsets, 4 heads each
  const DenseForwardPlan plan = plan_dense(blocks, DenseRule::everything(DType::kBF16, 16));
  EXPECT_TRUE(plan.leftovers.empty());
  ASSERT_EQ(plan.problems.size(), 2u);
  for (const DenseProblem& p : plan.problems) {
    EXPECT_EQ(p.batch, 4);      // segments
    EXPECT_EQ(p.heads_q, 4);    // heads of one offset
    EXPECT_EQ(p.heads_kv, 2);   // group 4 over dilation 2: two query heads per kv head
    EXPECT_EQ(p.s_q, 32);
    EXPECT_EQ(p.q.row_stride, 2 * 8 * 16);
    EXPECT_EQ(p.q.head_stride, 2 * 16);
    EXPECT_EQ(p.q.batch_stride, 64 * 8 * 16);
    EXPECT_EQ(p.k.head_stride, 16);
    EXPECT_EQ(p.lse.row_stride, 2);
    EXPECT_EQ(p.lse.head_stride, 2 * 256);
    EXPECT_EQ(p.mask, (DenseMask{true, 0, false, 0}));
  }
  EXPECT_EQ(heads_in(plan.problems), static_cast<int64_t>(blocks.size()));
}

// Group 3 over dilation 2: the query heads of an offset read kv heads 0, 0, 1, 2, ... (not h / g).
TEST(PlanDense, AHeadMapThatIsNotAffineSplitsTheClass) {
  Shard s(64, 12, 4, 8);
  const std::vector<AttendBlock> blocks = s.blocks(64, 2);
  const DenseForwardPlan plan = plan_dense(blocks, DenseRule::everything(DType::kBF16, 8));
  EXPECT_GT(plan.problems.size(), 2u);
  EXPECT_EQ(heads_in(plan.problems) + static_cast<int64_t>(plan.leftovers.size()),
            static_cast<int64_t>(blocks.size()));
  for (const DenseProblem& p : plan.problems) EXPECT_EQ(p.heads_q % p.heads_kv, 0);
}

TEST(PlanDense, WhatStaysWithDringsKernels) {
  Shard s(256, 4, 4, 16);
  const std::vector<AttendBlock> blocks = s.blocks(64, 1);
  DenseRule rule = DenseRule::everything(DType::kBF16, 16);
  EXPECT_EQ(plan_dense(blocks, rule).leftovers.size(), 0u);

  DenseRule f32 = rule;
  f32.dtype = DType::kF32;
  f32.accept_f32 = false;  // cuDNN has no fp32 attention
  EXPECT_EQ(plan_dense(blocks, f32).leftovers.size(), blocks.size());

  DenseRule head_dim = rule;
  head_dim.head_dim = 12;  // not a multiple of 8
  EXPECT_EQ(plan_dense(blocks, head_dim).leftovers.size(), blocks.size());

  DenseRule rows = rule;
  rows.min_rows = 65;  // blocks of 64 rows
  EXPECT_EQ(plan_dense(blocks, rows).leftovers.size(), blocks.size());

  DenseRule scores = rule;  // 16 causal 64-row blocks hold 16 * 2080 scores
  scores.min_problem_scores = 16 * 2080 + 1;
  EXPECT_EQ(plan_dense(blocks, scores).leftovers.size(), blocks.size());
  scores.min_problem_scores = 16 * 2080;
  EXPECT_EQ(plan_dense(blocks, scores).problems.size(), 1u);

  std::vector<AttendBlock> strided = blocks;  // different steps: no dense mask
  for (AttendBlock& b : strided) b.mask = BlockMask::of(Band::of(true, 0), {0, 64, 2}, {0, 64, 3});
  EXPECT_EQ(plan_dense(strided, rule).leftovers.size(), blocks.size());
}

}  // namespace
}  // namespace dring::kernels
