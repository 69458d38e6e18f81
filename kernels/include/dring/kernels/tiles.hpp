// dring/kernels/tiles.hpp — the arithmetic of a GPU launch's tiles, host and device (DRING_HD), so
// that the CPU tests prove it: which item (block, row run) a tile belongs to, and which tiles need
// a mask per element.
//
// Search. A launch over many items numbers their tiles consecutively: item b holds tiles
// [prefix[b], prefix[b+1]) of an ascending prefix table (prefix[0] = 0; an item with no tile has
// prefix[b] == prefix[b+1]). The item of tile x is the largest b in [0, n) with prefix[b] <= x.
// A plain binary search run by every thread costs each thread log2(n) dependent loads from global
// memory. Here one warp searches for the whole CTA: in a round, lane l reads the entry at
// search_probe(range, l); the lanes whose entry is <= x form a prefix of the warp (the table
// ascends), and the last of them narrows the range 32-fold (search_narrow). A range of at most 32
// entries is settled in one round, so n items take ceil(log32(n)) + 1 rounds at most; the result
// goes to the CTA through shared memory. The CPU tests run the same functions with a loop standing
// in for the warp's ballot.
#pragma once

#include <cstdint>

#include "dring/core/geometry.hpp"

namespace dring::kernels {

inline constexpr int kSearchLanes = 32;

// Candidates [lo, hi] for the answer: prefix[lo] <= x always holds, the answer is <= hi.
struct SearchRange {
  int64_t lo = 0;
  int64_t hi = 0;
  DRING_HD bool settled() const { return lo >= hi; }
};

// Distance between the entries two neighbouring lanes read.
DRING_HD inline int64_t search_step(const SearchRange& r) {
  const int64_t width = r.hi - r.lo + 1;
  return width <= kSearchLanes ? 1 : (width + kSearchLanes - 1) / kSearchLanes;
}

// The entry lane `lane` reads in this round, or -1 when the lane has none (past the range).
DRING_HD inline int64_t search_probe(const SearchRange& r, int lane) {
  const int64_t at = r.lo + static_cast<int64_t>(lane) * search_step(r);
  return at <= r.hi ? at : -1;
}

// The range after a round in which `last` was the highest lane whose entry is <= x (lane 0's
// always is: its entry is prefix[lo]).
DRING_HD inline SearchRange search_narrow(const SearchRange& r, int last) {
  const int64_t step = search_step(r);
  const int64_t lo = r.lo + static_cast<int64_t>(last) * step;
  const int64_t next = lo + step - 1;
  return SearchRange{lo, next < r.hi ? next : r.hi};
}

// The whole search over an n-entry table, serial (the host's and the tests' version; `probe_le(at)`
// answers prefix[at] <= x). The device runs the same rounds with one lane per probe.
template <class ProbeLe>
DRING_HD inline int64_t search_item(int64_t n, ProbeLe probe_le) {
  SearchRange r{0, n - 1};
  while (!r.settled()) {
    int last = 0;
    for (int lane = 1; lane < kSearchLanes; ++lane) {
      const int64_t at = search_probe(r, lane);
      if (at < 0 || !probe_le(at)) break;
      last = lane;
    }
    r = search_narrow(r, last);
  }
  return r.lo;
}

// Masks. A kernel stages key tiles of `tile_keys` rows; the tile of query rows [i0, i1) and keys
// [j0, j1) (j1 - j0 <= tile_keys; fewer only at the end of the block's keys, the rest zero-filled)
// is skipped when empty, run with no per-element test when full (every pair visible and no padded
// key row), and masked element by element only on the edges: the band's diagonals and the block's
// last keys.
enum class TileKind : int { kEmpty = 0, kFull = 1, kEdge = 2 };

DRING_HD inline TileKind classify_tile(const BlockMask& mask, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                                       int64_t tile_keys) {
  if (mask.empty(i0, i1, j0, j1)) return TileKind::kEmpty;
  return j1 - j0 == tile_keys && mask.full(i0, i1, j0, j1) ? TileKind::kFull : TileKind::kEdge;
}

}  // namespace dring::kernels
