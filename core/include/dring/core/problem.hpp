// dring/core/problem.hpp — what is computed: tensor shape plus the dilated-attention configuration.
//
// The function is LongNet's dilated attention (docs/math.md): a list of (segment length,
// dilation rate) pairs, head h using offset h mod r in each pair, one joint softmax per row over
// the multiset union of its keys across pairs. Dense attention is the single pair (S, 1).
// Trainer extensions: packed documents (each a sequence of its own, no key crosses a boundary)
// and a window W (every term restricted to |i - j| < W; causal: 0 <= i - j < W).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dring/core/tensor.hpp"

namespace dring {

struct DilatedPair {
  int64_t segment = 0;   // w_p >= 1
  int64_t dilation = 1;  // r_p >= 1, w_p % r_p == 0
  bool operator==(const DilatedPair&) const = default;
};

// Tensors are [batch, seq, heads, head_dim] (q) and [batch, seq, kv_heads, head_dim] (k, v).
struct AttentionShape {
  int64_t batch = 1;
  int64_t seq = 0;
  int64_t heads = 1;
  int64_t kv_heads = 1;
  int64_t head_dim = 64;
  // The q-shaped and kv-shaped tensors of `rows` rows (the whole sequence, a shard, a message).
  TensorDims q_dims(int64_t rows) const { return TensorDims{batch, rows, heads, head_dim}; }
  TensorDims kv_dims(int64_t rows) const { return TensorDims{batch, rows, kv_heads, head_dim}; }
  bool operator==(const AttentionShape&) const = default;
};

struct AttentionConfig {
  std::vector<DilatedPair> pairs;  // empty means dense: the single pair (seq, 1)
  bool causal = false;
  double scale = 0.0;              // 0 means 1/sqrt(head_dim)
  // Packed documents: lengths l1, l2, ... summing to seq (empty means one document of length seq).
  // Each document is a sequence of its own: segments and head offsets count from its start, its
  // effective segment is min(w, its length), and no key crosses its boundary.
  std::vector<int64_t> doc_lens;
  int64_t window = 0;              // W >= 1 restricts every term to |i - j| < W; 0 means no window
  bool operator==(const AttentionConfig&) const = default;
};

struct Problem {
  AttentionShape shape;
  AttentionConfig config;

  // The pairs actually used: `config.pairs`, or {(seq, 1)} when that is empty.
  std::vector<DilatedPair> pairs() const;
  double scale() const;
  // The documents' lengths actually used: `config.doc_lens`, or {seq} when that is empty.
  std::vector<int64_t> doc_lens() const;
  int64_t group_size() const { return shape.heads / shape.kv_heads; }  // q heads per kv head
  int64_t kv_head_of(int64_t head) const { return head / group_size(); }
  // Floating-point work of the forward pass: 4*D per (query, key) score, summed over pairs,
  // documents and heads, counting only the scores the window and causality leave.
  double forward_flops() const;
  // "w1,w2:r1,r2 causal window=W docs=N" — for reports and file attributes.
  std::string describe() const;
  bool operator==(const Problem&) const = default;
};

// Throws Error(kInvalidArgument) with a one-line message naming the first problem found.
void validate(const Problem& problem);

}  // namespace dring
