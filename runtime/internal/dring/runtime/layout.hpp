// dring/runtime/layout.hpp — where tokens live: which rows of the sequence each rank holds, and
// in which local order. Pure arithmetic, no allocation beyond the run and piece lists.
//
// A layout changes which rows a rank holds, never the function. A rank's rows are a few *runs*,
// each an arithmetic progression of positions stored at an arithmetic progression of local rows;
// the local order is always ascending position, so a rank's tensors are its rows in sequence
// order. Files, the reference and a trainer's view stay in natural order; only shards differ.
//   contiguous  rank t holds [begin(t), end(t)); the first S % k ranks hold one token more.
//   zigzag      the sequence cut into 2k chunks the same way; rank t holds chunks t and 2k-1-t.
//   striped     stripes of `stripe` rows dealt round robin: stripe q on rank q mod k (stripe 1:
//               row i on rank i mod k). The last stripe may be short.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dring/core/geometry.hpp"

namespace dring {

enum class LayoutKind : int { kContiguous = 0, kZigzag = 1, kStriped = 2 };

struct LayoutSpec {
  LayoutKind kind = LayoutKind::kContiguous;
  int64_t stripe = 1;  // rows per stripe (striped only)
  // "contiguous", "zigzag", "striped" or "striped:N"; throws Error(kInvalidArgument) otherwise.
  static LayoutSpec parse(const std::string& text);
  std::string describe() const;  // the parse() spelling
  bool operator==(const LayoutSpec&) const = default;
};

// Positions first + m*stride (m < count) of the sequence are local rows local_first + m*local_stride.
struct ShardRun {
  StridedRange pos;
  int64_t local_first = 0;
  int64_t local_stride = 1;
  int64_t local(int64_t position) const { return local_first + (position - pos.first) / pos.stride * local_stride; }
  bool operator==(const ShardRun&) const = default;
};

// Some of a rank's rows of a block: a progression of positions stored at a progression of local
// rows.
struct Piece {
  StridedRange pos;
  int64_t local = 0;  // local row of pos.first
  int64_t local_stride = 1;
  bool operator==(const Piece&) const = default;
};

class ShardLayout {
 public:
  // Throws Error(kInvalidArgument) when some rank would hold no row.
  ShardLayout(int64_t seq, int world_size, LayoutSpec spec = {});

  int world_size() const { return world_size_; }
  int64_t seq() const { return seq_; }
  const LayoutSpec& spec() const { return spec_; }
  bool contiguous() const { return spec_.kind == LayoutKind::kContiguous; }
  // Rows of rank t, and the most any rank holds.
  int64_t size(int rank) const { return sizes_[rank]; }
  int64_t max_size() const { return max_size_; }
  // Rank t's runs, ascending by first position.
  const std::vector<ShardRun>& runs(int rank) const { return runs_[rank]; }
  // Lowest and one past the highest position rank t holds.
  int64_t lowest(int rank) const { return runs_[rank].front().pos.first; }
  int64_t highest_end(int rank) const;
  // The rank holding `pos`, and its local row there.
  int owner(int64_t pos) const;
  int64_t local_row(int64_t pos) const;
  // Rank t's rows of `block` (a progression of positions) as few pieces, ascending by first
  // position and disjoint: one per run that holds some, or, for striped:N, one per stripe of the
  // rank that holds some when the block spans no more of those than the runs it can meet
  // (ceil(N / gcd(block stride, N k)), or fewer rows). A rank's N runs each hold a row of every
  // stripe, so a segment a few stripe periods long meets all N runs but only a few stripes; a
  // long dilated segment is the other way round. O(pieces + N / gcd).
  std::vector<Piece> pieces(const StridedRange& block, int rank) const;
  // One piece per run that holds some, whatever the count.
  std::vector<Piece> run_pieces(const StridedRange& block, int rank) const;
  // Rank t's positions in local order (O(rows); for tests, files and a trainer's view).
  std::vector<int64_t> positions(int rank) const;

  // Contiguous layouts: rank t holds [begin(t), end(t)).
  int64_t begin(int rank) const { return runs_[rank].front().pos.first; }
  int64_t end(int rank) const { return begin(rank) + size(rank); }

 private:
  int64_t seq_;
  int world_size_;
  LayoutSpec spec_;
  std::vector<std::vector<ShardRun>> runs_;
  std::vector<int64_t> sizes_;
  int64_t max_size_ = 0;
  // Even cuts: piece c of n over seq starts at c*(seq/n) + min(c, seq % n).
  int64_t cut(int64_t c, int64_t n) const { return c * (seq_ / n) + std::min<int64_t>(c, seq_ % n); }
};

}  // namespace dring
