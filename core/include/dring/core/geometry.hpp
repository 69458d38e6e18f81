// dring/core/geometry.hpp — which rows attend to which: pure arithmetic on positions, shared by
// the float64 reference, the exchange plan, the executor and the kernels (host and device).
//
// A *block* is the rows of one (document, pair, segment, head offset): an arithmetic progression
// of positions. Every term of the function pairs a query and a key of the same block, and the
// band (causality and window) decides which of those pairs count. A rank holds some rows of a
// block (its intersection with the rank's runs, again a progression), so every kernel call is
// "these query rows against those key rows of one block, under this band".
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "dring/core/problem.hpp"

#if defined(__CUDACC__)
#define DRING_HD __host__ __device__
#else
#define DRING_HD
#endif

namespace dring {

// Rows first, first + stride, ..., first + (count-1)*stride (stride >= 1).
struct StridedRange {
  int64_t first = 0;
  int64_t count = 0;
  int64_t stride = 1;
  DRING_HD int64_t last() const { return first + (count - 1) * stride; }
  DRING_HD int64_t at(int64_t n) const { return first + n * stride; }
  bool operator==(const StridedRange&) const = default;
};

// The positions in both progressions (a progression of stride lcm(a.stride, b.stride); count 0
// when they share none).
StridedRange intersect(const StridedRange& a, const StridedRange& b);
// The rows of `a` in [lo, hi).
StridedRange clip(const StridedRange& a, int64_t lo, int64_t hi);

// One (segment length, dilation) pair applied to one document: positions [begin, end) of the
// packed sequence (the whole sequence when there is one document).
struct PairGeometry {
  int64_t w;      // effective segment length min(w_p, document length)
  int64_t r;      // dilation rate
  int64_t begin;  // the document's first position
  int64_t end;    // one past its last

  PairGeometry(const DilatedPair& pair, int64_t seq_len) : PairGeometry(pair, 0, seq_len) {}
  PairGeometry(const DilatedPair& pair, int64_t doc_begin, int64_t doc_end)
      : w(std::min(pair.segment, doc_end - doc_begin)), r(pair.dilation), begin(doc_begin), end(doc_end) {}

  int64_t offset_of_head(int64_t head) const { return head % r; }
  int64_t segment_of(int64_t pos) const { return (pos - begin) / w; }
  int64_t segment_begin(int64_t seg) const { return begin + seg * w; }
  int64_t segment_end(int64_t seg) const { return std::min(begin + seg * w + w, end); }
  int64_t segment_count() const { return (end - begin + w - 1) / w; }
  bool selects(int64_t pos, int64_t offset) const { return ((pos - begin) % w) % r == offset; }

  // The rows of segment `seg` with offset `offset` (one block), all of them or those in [lo, hi).
  StridedRange block(int64_t seg, int64_t offset) const {
    const int64_t first = segment_begin(seg) + offset, stop = segment_end(seg);
    return StridedRange{first, first < stop ? (stop - 1 - first) / r + 1 : 0, r};
  }
  StridedRange selected(int64_t seg, int64_t offset, int64_t lo, int64_t hi) const {
    return clip(block(seg, offset), lo, hi);
  }
};

// The packed documents of a problem: document d holds positions [begin(d), end(d)).
class Documents {
 public:
  explicit Documents(const Problem& problem);
  int64_t count() const { return static_cast<int64_t>(starts_.size()) - 1; }
  int64_t begin(int64_t d) const { return starts_[d]; }
  int64_t end(int64_t d) const { return starts_[d + 1]; }
  int64_t document_of(int64_t pos) const;
  // Documents that hold a position in [lo, hi): [first, last] (first > last when none).
  int64_t first_touching(int64_t lo) const { return document_of(lo); }
  int64_t last_touching(int64_t hi) const { return document_of(hi - 1); }

 private:
  std::vector<int64_t> starts_;  // 0, l1, l1 + l2, ..., seq
};

// Visits every (pair index p, PairGeometry of p in its document, segment) whose segment holds a
// position in [lo, hi): visit(p, geom, seg). Pairs outermost, then documents, then segments.
template <class Visit>
void for_each_segment(const Problem& problem, const Documents& docs, int64_t lo, int64_t hi, Visit&& visit) {
  if (lo >= hi) return;
  const std::vector<DilatedPair> pairs = problem.pairs();
  for (int p = 0; p < static_cast<int>(pairs.size()); ++p) {
    for (int64_t d = docs.first_touching(lo); d <= docs.last_touching(hi); ++d) {
      const PairGeometry geom(pairs[p], docs.begin(d), docs.end(d));
      const int64_t seg_lo = geom.segment_of(std::max(lo, geom.begin));
      const int64_t seg_hi = geom.segment_of(std::min(hi, geom.end) - 1);
      for (int64_t seg = seg_lo; seg <= seg_hi; ++seg) visit(p, geom, seg);
    }
  }
}

// Which keys a query sees, by positions: the key at kp counts for the query at qp iff
// lo <= qp - kp <= hi. Causality sets lo = 0; a window W sets hi = W - 1 (and lo = 1 - W when
// not causal). Unbounded sides are +-kUnbounded, far beyond any position difference.
struct Band {
  static constexpr int64_t kUnbounded = int64_t{1} << 61;
  int64_t lo = -kUnbounded;
  int64_t hi = kUnbounded;

  static Band of(const AttentionConfig& config) { return of(config.causal, config.window); }
  static Band of(bool causal, int64_t window) {
    Band band;
    if (causal) band.lo = 0;
    if (window > 0) {
      band.hi = window - 1;
      if (!causal) band.lo = 1 - window;
    }
    return band;
  }
  DRING_HD bool visible(int64_t qp, int64_t kp) const { return qp - kp >= lo && qp - kp <= hi; }
  DRING_HD bool unbounded() const { return lo <= -kUnbounded && hi >= kUnbounded; }
  bool operator==(const Band&) const = default;
};

// The band of one kernel block in row indices: query row i is at position q_first + i*q_step,
// key row j at k_first + j*k_step (steps >= 1), and (i, j) counts iff the band admits their
// positions. Since positions grow with i and j, the keys of query i are one interval of j,
// [key_begin(i), key_end(i)), and both ends are non-decreasing in i.
struct BlockMask {
  Band band;
  int64_t q_first = 0;
  int64_t q_step = 1;
  int64_t k_first = 0;
  int64_t k_step = 1;

  // Every key visible to every query (the usual off-diagonal block).
  static BlockMask none() { return BlockMask{}; }
  // Query i sees keys j <= i: q and k are the same rows.
  static BlockMask causal() {
    BlockMask m;
    m.band.lo = 0;
    return m;
  }
  // A block of positions q (queries) against k (keys) under `band`.
  static BlockMask of(const Band& band, const StridedRange& q, const StridedRange& k) {
    return BlockMask{band, q.first, q.stride, k.first, k.stride};
  }

  DRING_HD bool trivial() const { return band.unbounded(); }
  DRING_HD int64_t q_pos(int64_t i) const { return q_first + i * q_step; }
  DRING_HD int64_t k_pos(int64_t j) const { return k_first + j * k_step; }
  // First key visible to query i, clamped to [0, n_k].
  DRING_HD int64_t key_begin(int64_t i, int64_t n_k) const {
    if (band.hi >= Band::kUnbounded) return 0;
    const int64_t j = ceil_div(q_pos(i) - band.hi - k_first, k_step);
    return j < 0 ? 0 : (j > n_k ? n_k : j);
  }
  // One past the last key visible to query i, clamped to [0, n_k].
  DRING_HD int64_t key_end(int64_t i, int64_t n_k) const {
    if (band.lo <= -Band::kUnbounded) return n_k;
    const int64_t j = floor_div(q_pos(i) - band.lo - k_first, k_step) + 1;
    return j < 0 ? 0 : (j > n_k ? n_k : j);
  }
  // Every (i, j) of the tile [i0, i1) x [j0, j1) visible (exact).
  DRING_HD bool full(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (i0 >= i1 || j0 >= j1) return true;
    return q_pos(i0) - k_pos(j1 - 1) >= band.lo && q_pos(i1 - 1) - k_pos(j0) <= band.hi;
  }
  // No (i, j) of the tile visible (exact: the first visible key of each row is checked).
  DRING_HD bool empty(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (i0 >= i1 || j0 >= j1) return true;
    if (q_pos(i1 - 1) - k_pos(j0) < band.lo || q_pos(i0) - k_pos(j1 - 1) > band.hi) return true;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = key_begin(i, j1), e = key_end(i, j1);
      if (b < e && e > j0) return false;
    }
    return true;
  }
  // Number of visible (i, j) in [0, n_q) x [0, n_k).
  double visible_pairs(int64_t n_q, int64_t n_k) const;

  DRING_HD static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
  DRING_HD static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
};

}  // namespace dring
