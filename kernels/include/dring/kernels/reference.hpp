// dring/kernels/reference.hpp — the float64 oracle of dilated attention.
//
// Written from the definition (docs/math.md), not from the fast paths: for one (batch, row, head)
// it enumerates the row's keys pair by pair, straight from the selection rule, and folds them into
// one softmax in float64. The whole-tensor reference is that, row by row. Inputs come through a
// RowSource, so the same oracle checks sampled rows of a run far too big to hold in one place
// (rows regenerated from the seed, or read from the input file).
#pragma once

#include <cstdint>
#include <vector>

#include "dring/config.hpp"
#include "dring/layout.hpp"

namespace dring::reference {

class RowSource {
 public:
  virtual ~RowSource() = default;
  // q[batch, pos, head, 0..D).
  virtual void q_row(int64_t batch, int64_t pos, int64_t head, double* out) const = 0;
  // k and v rows of one kv head at rows.first + n*rows.stride, n < rows.count: [count, D] each.
  virtual void kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const = 0;
};

struct RowResult {
  std::vector<double> out;   // [D]
  double lse = 0.0;          // -inf when the row has no keys
  double value_scale = 0.0;  // max |v| over the row's keys: the natural scale of out's error
  int64_t keys = 0;          // size of the key multiset
};

RowResult attention_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                        int64_t head);

// out [B, S, H, D] and lse [B, H, S], row by row.
void attention_forward(const Problem& problem, const RowSource& source, std::vector<double>& out,
                       std::vector<double>& lse);

// A RowSource over whole tensors in memory: q [B, S, H, D], k and v [B, S, Hkv, D].
template <class T>
class TensorSource final : public RowSource {
 public:
  TensorSource(const AttentionShape& shape, const T* q, const T* k, const T* v)
      : shape_(shape), q_(q), k_(k), v_(v) {}
  void q_row(int64_t b, int64_t pos, int64_t head, double* out) const override {
    const T* row = q_ + ((b * shape_.seq + pos) * shape_.heads + head) * shape_.head_dim;
    for (int64_t c = 0; c < shape_.head_dim; ++c) out[c] = static_cast<double>(row[c]);
  }
  void kv_rows(int64_t b, int64_t g, StridedRange rows, double* k, double* v) const override {
    const int64_t d = shape_.head_dim;
    for (int64_t n = 0; n < rows.count; ++n) {
      const int64_t at = ((b * shape_.seq + rows.first + n * rows.stride) * shape_.kv_heads + g) * d;
      for (int64_t c = 0; c < d; ++c) {
        k[n * d + c] = static_cast<double>(k_[at + c]);
        v[n * d + c] = static_cast<double>(v_[at + c]);
      }
    }
  }

 private:
  AttentionShape shape_;
  const T* q_;
  const T* k_;
  const T* v_;
};

}  // namespace dring::reference
