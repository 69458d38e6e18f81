// dring/runtime/layout.hpp — where tokens live: shards of the sequence over ranks. Pure arithmetic,
// no allocation. (Which rows a pair selects inside a segment: dring/core/geometry.hpp.)
#pragma once

#include <algorithm>
#include <cstdint>

#include "dring/core/geometry.hpp"
#include "dring/core/problem.hpp"

namespace dring {

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
