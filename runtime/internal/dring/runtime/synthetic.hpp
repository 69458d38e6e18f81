// dring/synthetic.hpp — reproducible inputs from a seed, generated shard by shard.
//
// Element [b, pos, head, c] of a tensor is a standard normal drawn from a counter-based hash of
// (seed, tensor, b, pos, head, c), rounded to float32. Any rank can therefore generate exactly its
// own rows, the result does not depend on the number of ranks, and the float64 reference can
// regenerate any key row it needs without anyone holding a full tensor.
#pragma once

#include <cstdint>

#include <vector>

#include "dring/core/problem.hpp"
#include "dring/kernels/reference.hpp"
#include "dring/runtime/layout.hpp"

namespace dring {

enum class TensorId : uint64_t { kQ = 1, kK = 2, kV = 3, kDout = 4 };

// Heads of a tensor: H for q (and dout), Hkv for k and v.
int64_t heads_of(TensorId id, const AttentionShape& shape);

float synthetic_value(uint64_t seed, TensorId id, const AttentionShape& shape, int64_t batch, int64_t pos,
                      int64_t head, int64_t c);

// Rows [begin, begin+rows) of every batch: out is [B, rows, heads_of(id), D].
void fill_synthetic(uint64_t seed, TensorId id, const AttentionShape& shape, int64_t begin, int64_t rows,
                    float* out, int threads);
// The rows of a shard of any layout (its runs, `rows` in all), in local order: out is
// [B, rows, heads_of(id), D]. Each element depends only on its global position, so a tensor is the
// same whatever the layout.
void fill_synthetic(uint64_t seed, TensorId id, const AttentionShape& shape, const std::vector<ShardRun>& runs,
                    int64_t rows, float* out, int threads);

class SyntheticSource final : public reference::RowSource {
 public:
  SyntheticSource(uint64_t seed, const AttentionShape& shape) : seed_(seed), shape_(shape) {}
  void q_row(int64_t batch, int64_t pos, int64_t head, double* out) const override;
  void kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const override;
  bool has_dout() const override { return true; }
  void dout_row(int64_t batch, int64_t pos, int64_t head, double* out) const override;

 private:
  uint64_t seed_;
  AttentionShape shape_;
};

}  // namespace dring
