// test_geometry.cpp — the position arithmetic of core/geometry.hpp against brute force: progressions
// (intersect, clip), documents, and BlockMask (key intervals, full and empty tiles, visible pairs)
// over random bands, positions and steps; and rows_seeing (kernels/attend.hpp) built on it.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "dring/core/geometry.hpp"
#include "dring/kernels/attend.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

std::set<int64_t> positions(const StridedRange& r) {
  std::set<int64_t> s;
  for (int64_t n = 0; n < r.count; ++n) s.insert(r.at(n));
  return s;
}

// A range is what it claims: the given set, increasing, with the claimed stride.
void expect_range_is(const StridedRange& r, const std::set<int64_t>& want, const std::string& what) {
  EXPECT_EQ(positions(r), want) << what;
  EXPECT_EQ(r.count, static_cast<int64_t>(want.size())) << what;
}

TEST(Geometry, IntersectAndClipMatchBruteForce) {
  std::mt19937_64 gen(3);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  for (int trial = 0; trial < 3000; ++trial) {
    const StridedRange a{uniform(0, 60), uniform(0, 25), uniform(1, 12)};
    const StridedRange b{uniform(0, 60), uniform(0, 25), uniform(1, 12)};
    const std::string what = "a " + std::to_string(a.first) + "+" + std::to_string(a.stride) + "n x" +
                             std::to_string(a.count) + ", b " + std::to_string(b.first) + "+" +
                             std::to_string(b.stride) + "n x" + std::to_string(b.count);
    std::set<int64_t> common;
    const std::set<int64_t> pa = positions(a), pb = positions(b);
    for (int64_t x : pa) {
      if (pb.count(x) != 0) common.insert(x);
    }
    const StridedRange both = intersect(a, b);
    expect_range_is(both, common, what);
    if (common.size() >= 2) {
      EXPECT_EQ(both.stride, *std::next(common.begin()) - *common.begin()) << what;
    }

    const int64_t lo = uniform(-5, 300), hi = uniform(-5, 300);
    std::set<int64_t> inside;
    for (int64_t x : pa) {
      if (x >= lo && x < hi) inside.insert(x);
    }
    const StridedRange clipped = clip(a, lo, hi);
    expect_range_is(clipped, inside, what + " clip [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
    EXPECT_EQ(clipped.stride, a.stride);
  }
}

TEST(Geometry, DocumentsCoverTheSequenceInOrder) {
  Problem p = test::make_problem(1, 17, 1, 1, 4, {}, false);
  EXPECT_EQ(Documents(p).count(), 1);  // no lengths: one document, the sequence
  p.config.doc_lens = {1, 5, 1, 10};
  const Documents docs(p);
  ASSERT_EQ(docs.count(), 4);
  int64_t start = 0;
  for (int64_t d = 0; d < 4; ++d) {
    EXPECT_EQ(docs.begin(d), start);
    EXPECT_EQ(docs.end(d), start + p.config.doc_lens[d]);
    for (int64_t pos = docs.begin(d); pos < docs.end(d); ++pos) EXPECT_EQ(docs.document_of(pos), d) << pos;
    start = docs.end(d);
  }
  EXPECT_EQ(docs.first_touching(3), 1);
  EXPECT_EQ(docs.last_touching(7), 2);  // [3, 7) ends at position 6, document 2
  EXPECT_EQ(docs.last_touching(6), 1);
}

TEST(Geometry, PairGeometryPerDocumentCountsFromItsStart) {
  const PairGeometry g(DilatedPair{8, 2}, 10, 15);  // a document of length 5 at position 10
  EXPECT_EQ(g.w, 5);                                 // effective segment min(8, 5)
  EXPECT_EQ(g.segment_count(), 1);
  EXPECT_TRUE(g.selects(10, 0));
  EXPECT_TRUE(g.selects(13, 1));
  expect_range_is(g.block(0, 0), {10, 12, 14}, "offset 0");
  expect_range_is(g.block(0, 1), {11, 13}, "offset 1");
}

// Random masks: every kind of band, positions anywhere (also far apart), steps 1..5.
BlockMask random_mask(std::mt19937_64& gen) {
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  BlockMask m;
  switch (uniform(0, 5)) {
    case 0: break;  // none
    case 1: m.band = Band::of(true, 0); break;
    case 2: m.band = Band::of(true, uniform(1, 12)); break;
    case 3: m.band = Band::of(false, uniform(1, 12)); break;
    case 4: m.band = Band{uniform(-6, 6), Band::kUnbounded}; break;
    default: {
      const int64_t lo = uniform(-8, 8);
      m.band = Band{lo, lo + uniform(0, 10)};
    }
  }
  m.q_first = uniform(0, 60);
  m.k_first = uniform(0, 60);
  m.q_step = uniform(1, 5);
  m.k_step = uniform(1, 5);
  return m;
}

TEST(BlockMask, KeyIntervalsTilesAndPairsMatchBruteForce) {
  std::mt19937_64 gen(11);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  for (int trial = 0; trial < 2000; ++trial) {
    const BlockMask m = random_mask(gen);
    const int64_t n_q = uniform(0, 30), n_k = uniform(0, 30);
    const std::string what = "band [" + std::to_string(m.band.lo) + ", " + std::to_string(m.band.hi) + "] q " +
                             std::to_string(m.q_first) + "+" + std::to_string(m.q_step) + "i k " +
                             std::to_string(m.k_first) + "+" + std::to_string(m.k_step) + "j " + std::to_string(n_q) +
                             "x" + std::to_string(n_k);
    auto seen = [&](int64_t i, int64_t j) { return m.band.visible(m.q_pos(i), m.k_pos(j)); };
    double pairs = 0;
    int64_t last_begin = 0, last_end = 0;
    for (int64_t i = 0; i < n_q; ++i) {
      const int64_t b = m.key_begin(i, n_k), e = m.key_end(i, n_k);
      ASSERT_GE(b, 0) << what;
      ASSERT_LE(e, n_k) << what;
      ASSERT_GE(b, last_begin) << what << " row " << i;  // monotone
      ASSERT_GE(e, last_end) << what << " row " << i;
      last_begin = b;
      last_end = e;
      for (int64_t j = 0; j < n_k; ++j) {
        ASSERT_EQ(seen(i, j), j >= b && j < e) << what << " (" << i << ", " << j << ")";
        pairs += seen(i, j) ? 1 : 0;
      }
    }
    EXPECT_EQ(m.visible_pairs(n_q, n_k), pairs) << what;
    for (int tile = 0; tile < 20; ++tile) {
      const int64_t i0 = uniform(0, n_q), i1 = uniform(i0, n_q), j0 = uniform(0, n_k), j1 = uniform(j0, n_k);
      int64_t count = 0;
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) count += seen(i, j) ? 1 : 0;
      }
      const int64_t cells = (i1 - i0) * (j1 - j0);
      EXPECT_EQ(m.full(i0, i1, j0, j1), count == cells) << what;
      EXPECT_EQ(m.empty(i0, i1, j0, j1), count == 0) << what;
      // rows_seeing: every row outside the run sees none of the keys [j0, j1).
      const kernels::RowRange rows = kernels::rows_seeing(m, n_q, n_k, j0, j1);
      for (int64_t i = 0; i < n_q; ++i) {
        if (i >= rows.begin && i < rows.end) continue;
        for (int64_t j = j0; j < j1; ++j) ASSERT_FALSE(seen(i, j)) << what << " rows_seeing misses " << i;
      }
      // ... and it is as short as the key intervals allow: its first row's keys reach j0, its
      // last row's keys start before j1.
      if (rows.begin < rows.end) {
        EXPECT_GT(m.key_end(rows.begin, n_k), j0) << what;
        EXPECT_LT(m.key_begin(rows.end - 1, n_k), j1) << what;
      }
    }
  }
}

TEST(BlockMask, NoneAndCausalAreTheUsualMasks) {
  const BlockMask none = BlockMask::none(), causal = BlockMask::causal();
  EXPECT_TRUE(none.trivial());
  EXPECT_FALSE(causal.trivial());
  for (int64_t i = 0; i < 9; ++i) {
    EXPECT_EQ(none.key_begin(i, 7), 0);
    EXPECT_EQ(none.key_end(i, 7), 7);
    EXPECT_EQ(causal.key_begin(i, 7), 0);
    EXPECT_EQ(causal.key_end(i, 7), std::min<int64_t>(i + 1, 7));
  }
  EXPECT_EQ(causal.visible_pairs(4, 4), 10.0);
  EXPECT_EQ(none.visible_pairs(4, 5), 20.0);
}

}  // namespace
}  // namespace dring
