// dring/kernels/reference.hpp — the float64 oracle of dilated attention.
//
// Written from the definition (docs/math.md), not from the fast paths: for one (batch, row, head)
// it enumerates the row's keys pair by pair, straight from the selection rule (inside the row's
// document, cut by causality and the window), and folds them into one softmax in float64. The whole-tensor reference is that, row by row. Inputs come through a
// RowSource, so the same oracle checks sampled rows of a run far too big to hold in one place
// (rows regenerated from the seed, or read from the input file).
#pragma once

#include <cstdint>
#include <vector>

#include "dring/core/problem.hpp"
#include "dring/core/geometry.hpp"

namespace dring::reference {

class RowSource {
 public:
  virtual ~RowSource() = default;
  // q[batch, pos, head, 0..D).
  virtual void q_row(int64_t batch, int64_t pos, int64_t head, double* out) const = 0;
  // k and v rows of one kv head at rows.first + n*rows.stride, n < rows.count: [count, D] each.
  virtual void kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const = 0;
  // dout[batch, pos, head, 0..D), for the backward pass; sources without dout do not override it.
  virtual bool has_dout() const { return false; }
  virtual void dout_row(int64_t batch, int64_t pos, int64_t head, double* out) const;
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

// Gradients (the source must have dout). The whole tensors, dq [B, S, H, D] and dk, dv
// [B, S, Hkv, D]: every (row, key) term of the forward multiset contributes, with
// p = exp(s - lse), ds = p * (dout.v - dout.out): dq += scale ds k, dk += scale ds q, dv += p dout.
void attention_backward(const Problem& problem, const RowSource& source, std::vector<double>& dq,
                        std::vector<double>& dk, std::vector<double>& dv);
// dq of one (batch, row, head): cost of one forward row.
std::vector<double> grad_q_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                               int64_t head);
// dk and dv of one (batch, key row, kv head): enumerates the queries that read the key, each at the
// cost of its forward row. Returns [dk(D), dv(D)].
std::vector<double> grad_kv_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                                int64_t kv_head);
// Input elements the per-row gradient of key row `pos` reads (to budget --check): the k and v rows
// of the forward row of every query that reads the key.
double grad_kv_row_cost(const Problem& problem, int64_t pos, int64_t kv_head);

// A RowSource over whole tensors in memory: q [B, S, H, D], k and v [B, S, Hkv, D].
template <class T>
class TensorSource final : public RowSource {
 public:
  TensorSource(const AttentionShape& shape, const T* q, const T* k, const T* v, const T* dout = nullptr)
      : shape_(shape), q_(q), k_(k), v_(v), dout_(dout) {}
  void q_row(int64_t b, int64_t pos, int64_t head, double* out) const override { copy_row(q_, b, pos, head, out); }
  bool has_dout() const override { return dout_ != nullptr; }
  void dout_row(int64_t b, int64_t pos, int64_t head, double* out) const override {
    copy_row(dout_, b, pos, head, out);
  }
  void kv_rows(int64_t b, int64_t g, StridedRange rows, double* k, double* v) const override {
    const int64_t d = shape_.head_dim;
    for (int64_t n = 0; n < rows.count; ++n) {
      const int64_t at = shape_.kv_dims(shape_.seq).at(b, rows.first + n * rows.stride, g);
      for (int64_t c = 0; c < d; ++c) {
        k[n * d + c] = static_cast<double>(k_[at + c]);
        v[n * d + c] = static_cast<double>(v_[at + c]);
      }
    }
  }

 private:
  void copy_row(const T* x, int64_t b, int64_t pos, int64_t head, double* out) const {
    const T* row = x + shape_.q_dims(shape_.seq).at(b, pos, head);
    for (int64_t c = 0; c < shape_.head_dim; ++c) out[c] = static_cast<double>(row[c]);
  }
  AttentionShape shape_;
  const T* q_;
  const T* k_;
  const T* v_;
  const T* dout_;
};

// Another source's inputs, read from it once into float64 tensors and served from there (the
// same values): for references that read the same rows many times (a key row's gradient reads
// the forward rows of every query that reads it; a whole-tensor check reads every key row once
// per query row), where a synthetic source pays a hash, a log and a cos per value.
// Holds (dout ? 2 : 1) * B*S*H*D + 2 * B*S*Hkv*D doubles: elements(shape, has_dout).
class InMemorySource final : public RowSource {
 public:
  InMemorySource(const AttentionShape& shape, const RowSource& source);
  InMemorySource(const InMemorySource&) = delete;  // view_ points into this object's vectors
  InMemorySource& operator=(const InMemorySource&) = delete;
  static int64_t elements(const AttentionShape& shape, bool dout);
  void q_row(int64_t b, int64_t pos, int64_t head, double* out) const override { view_.q_row(b, pos, head, out); }
  bool has_dout() const override { return view_.has_dout(); }
  void dout_row(int64_t b, int64_t pos, int64_t head, double* out) const override {
    view_.dout_row(b, pos, head, out);
  }
  void kv_rows(int64_t b, int64_t g, StridedRange rows, double* k, double* v) const override {
    view_.kv_rows(b, g, rows, k, v);
  }

 private:
  std::vector<double> q_, k_, v_, dout_;  // [B, S, H, D], [B, S, Hkv, D] (dout_ empty without one)
  TensorSource<double> view_;
};

}  // namespace dring::reference
