// dring/core/geometry.hpp — which rows a (segment, dilation) pair selects: pure arithmetic on
// positions, shared by the float64 reference, the exchange plan and the executor.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dring/core/problem.hpp"

namespace dring {

// Rows first, first + stride, ..., first + (count-1)*stride.
struct StridedRange {
  int64_t first = 0;
  int64_t count = 0;
  int64_t stride = 1;
  int64_t last() const { return first + (count - 1) * stride; }
  bool operator==(const StridedRange&) const = default;
};

// One (segment length, dilation) pair applied to a sequence of `seq` tokens.
struct PairGeometry {
  int64_t w;    // effective segment length min(w_p, seq)
  int64_t r;    // dilation rate
  int64_t seq;

  PairGeometry(const DilatedPair& pair, int64_t seq_len)
      : w(std::min(pair.segment, seq_len)), r(pair.dilation), seq(seq_len) {}

  int64_t offset_of_head(int64_t head) const { return head % r; }
  int64_t segment_of(int64_t pos) const { return pos / w; }
  int64_t segment_begin(int64_t seg) const { return seg * w; }
  int64_t segment_end(int64_t seg) const { return std::min(seg * w + w, seq); }
  int64_t segment_count() const { return (seq + w - 1) / w; }
  bool selects(int64_t pos, int64_t offset) const { return (pos % w) % r == offset; }

  // The rows of segment `seg` with offset `offset` that lie in [lo, hi).
  StridedRange selected(int64_t seg, int64_t offset, int64_t lo, int64_t hi) const {
    const int64_t base = segment_begin(seg) + offset;
    lo = std::max(lo, base);
    hi = std::min(hi, segment_end(seg));
    const int64_t first = base + (lo - base + r - 1) / r * r;
    const int64_t count = first < hi ? (hi - 1 - first) / r + 1 : 0;
    return StridedRange{first, count, r};
  }
};

}  // namespace dring
