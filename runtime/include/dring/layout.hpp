// dring/layout.hpp — where tokens live: shards of the sequence over ranks, and the rows a
// (segment, dilation) pair selects inside a segment. Pure arithmetic, no allocation.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dring/config.hpp"

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

// Rank t owns [begin(t), end(t)); the first seq % world_size ranks hold one token more.
class ShardLayout {
 public:
  ShardLayout(int64_t seq, int world_size);  // throws if seq < world_size

  int world_size() const { return world_size_; }
  int64_t seq() const { return seq_; }
  int64_t begin(int rank) const {
    return rank * base_ + std::min<int64_t>(rank, remainder_);
  }
  int64_t end(int rank) const { return begin(rank + 1); }
  int64_t size(int rank) const { return base_ + (rank < remainder_ ? 1 : 0); }
  int64_t max_size() const { return base_ + (remainder_ > 0 ? 1 : 0); }
  int owner(int64_t pos) const {
    const int64_t big = remainder_ * (base_ + 1);
    return static_cast<int>(pos < big ? pos / (base_ + 1) : remainder_ + (pos - big) / base_);
  }

 private:
  int64_t seq_;
  int world_size_;
  int64_t base_;
  int64_t remainder_;
};

}  // namespace dring
