// dring/core/tensor.hpp — the index arithmetic of dring's tensors, written once.
//
// Every tensor of a run is row-major [batch, rows, heads, head_dim] (q, k, v, out, dout and the
// gradients; `rows` is the sequence, a shard of it, or a message's rows; `heads` is H for q-shaped
// and Hkv for kv-shaped tensors), and every per-row state is [batch, heads, rows] (lse, delta).
// A StridedRows view names `count` rows of `width` elements that lie `stride` elements apart:
// the rows of one head (stride heads * head_dim), every r-th of them (a dilation), or a packed
// message (stride head_dim).
#pragma once

#include <cstdint>

namespace dring {

struct TensorDims {
  int64_t batch = 1;
  int64_t rows = 0;
  int64_t heads = 1;
  int64_t head_dim = 0;

  // Elements between row i and row i+1 of one head.
  int64_t row_stride() const { return heads * head_dim; }
  int64_t elements() const { return batch * rows * heads * head_dim; }
  // First element of (batch b, row, head h).
  int64_t at(int64_t b, int64_t row, int64_t h) const { return ((b * rows + row) * heads + h) * head_dim; }
  // Per-row state [batch, heads, rows]: the entry of (b, h, row), and the count.
  int64_t state_at(int64_t b, int64_t h, int64_t row) const { return (b * heads + h) * rows + row; }
  int64_t state_elements() const { return batch * heads * rows; }
  bool operator==(const TensorDims&) const = default;
};

// `count` rows of `width` elements, `stride` elements apart (non-owning).
template <class T>
struct StridedRows {
  T* data = nullptr;
  int64_t stride = 0;
  int64_t count = 0;
  int64_t width = 0;
  T* row(int64_t i) const { return data + i * stride; }
};

// Rows `first, first + step, ...` (count of them) of head h of batch b in a tensor of `dims`.
template <class T>
StridedRows<T> head_rows(T* base, const TensorDims& dims, int64_t b, int64_t h, int64_t first, int64_t count,
                         int64_t step = 1) {
  return StridedRows<T>{base + dims.at(b, first, h), step * dims.row_stride(), count, dims.head_dim};
}

}  // namespace dring
