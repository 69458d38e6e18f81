// test_reference.cpp — the float64 oracle against a second, independent formulation: a weighted
// softmax over the full score matrix, where the weight of (i, j) counts the pairs that connect
// them. Plus the edge cases of the definition.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dring/kernels/reference.hpp"
#include "dring/runtime/layout.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

struct Dense {
  std::vector<double> out, lse;
};

Dense weighted_softmax(const Problem& p, const std::vector<float>& q, const std::vector<float>& k,
                       const std::vector<float>& v) {
  const AttentionShape& s = p.shape;
  Dense r;
  r.out.assign(s.batch * s.seq * s.heads * s.head_dim, 0.0);
  r.lse.assign(s.batch * s.heads * s.seq, 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t g = p.kv_head_of(h);
      for (int64_t i = 0; i < s.seq; ++i) {
        std::vector<double> weight(s.seq, 0.0), score(s.seq, 0.0);
        for (const DilatedPair& pair : p.pairs()) {
          const PairGeometry geom(pair, s.seq);
          const int64_t off = h % pair.dilation;
          for (int64_t j = 0; j < s.seq; ++j) {
            const bool connected = (i % geom.w) % geom.r == off && (j % geom.w) % geom.r == off &&
                                   i / geom.w == j / geom.w && (!p.config.causal || j <= i);
            weight[j] += connected ? 1.0 : 0.0;
          }
        }
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.seq; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < s.head_dim; ++c) {
            dot += static_cast<double>(q[((b * s.seq + i) * s.heads + h) * s.head_dim + c]) *
                   static_cast<double>(k[((b * s.seq + j) * s.kv_heads + g) * s.head_dim + c]);
          }
          score[j] = dot * p.scale();
          if (weight[j] > 0) mx = std::max(mx, score[j]);
        }
        double denom = 0.0;
        double* out = &r.out[((b * s.seq + i) * s.heads + h) * s.head_dim];
        for (int64_t j = 0; j < s.seq; ++j) {
          if (weight[j] == 0) continue;
          const double e = weight[j] * std::exp(score[j] - mx);
          denom += e;
          for (int64_t c = 0; c < s.head_dim; ++c) out[c] += e * v[((b * s.seq + j) * s.kv_heads + g) * s.head_dim + c];
        }
        if (denom > 0) {
          for (int64_t c = 0; c < s.head_dim; ++c) out[c] /= denom;
          r.lse[(b * s.heads + h) * s.seq + i] = mx + std::log(denom);
        } else {
          r.lse[(b * s.heads + h) * s.seq + i] = -std::numeric_limits<double>::infinity();
        }
      }
    }
  }
  return r;
}

TEST(Reference, MatchesTheWeightedSoftmaxFormulation) {
  for (int64_t seq : {1, 2, 7, 23, 50}) {
    for (const auto& c : test::standard_configs()) {
      const Problem p = test::make_problem(2, seq, c.heads, c.kv_heads, 5, c.pairs, c.causal, 0.3);
      const auto q = test::random_tensor(2 * seq * c.heads * 5, 1);
      const auto k = test::random_tensor(2 * seq * c.kv_heads * 5, 2);
      const auto v = test::random_tensor(2 * seq * c.kv_heads * 5, 3);
      const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data());
      std::vector<double> out, lse;
      reference::attention_forward(p, source, out, lse);
      const Dense want = weighted_softmax(p, q, k, v);
      for (size_t n = 0; n < out.size(); ++n) ASSERT_NEAR(out[n], want.out[n], 1e-12) << c.name << " seq " << seq;
      for (size_t n = 0; n < lse.size(); ++n) {
        if (std::isinf(want.lse[n])) {
          ASSERT_TRUE(std::isinf(lse[n]) && lse[n] < 0) << c.name;
        } else {
          ASSERT_NEAR(lse[n], want.lse[n], 1e-12) << c.name << " seq " << seq;
        }
      }
    }
  }
}

TEST(Reference, RowsNoPairSelectsAreZeroWithMinusInfinityLse) {
  // Pair (4, 4): head 0 reads rows 0, 4, 8, ... only.
  const Problem p = test::make_problem(1, 9, 1, 1, 3, {{4, 4}}, false);
  const auto q = test::random_tensor(27, 4), k = test::random_tensor(27, 5), v = test::random_tensor(27, 6);
  const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data());
  const reference::RowResult unselected = reference::attention_row(p, source, 0, 5, 0);
  EXPECT_EQ(unselected.keys, 0);
  EXPECT_TRUE(std::isinf(unselected.lse) && unselected.lse < 0);
  for (double x : unselected.out) EXPECT_EQ(x, 0.0);
  // Row 4 is alone in its dilated segment: its output is its own value row.
  const reference::RowResult alone = reference::attention_row(p, source, 0, 4, 0);
  EXPECT_EQ(alone.keys, 1);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(alone.out[c], v[4 * 3 + c], 1e-7);
}

TEST(Reference, AKeyReachedByTwoPairsCountsTwice) {
  const Problem once = test::make_problem(1, 12, 2, 2, 4, {{6, 2}}, false);
  const Problem twice = test::make_problem(1, 12, 2, 2, 4, {{6, 2}, {6, 2}}, false);
  const auto q = test::random_tensor(96, 7), k = test::random_tensor(96, 8), v = test::random_tensor(96, 9);
  const reference::TensorSource<float> source(once.shape, q.data(), k.data(), v.data());
  for (int64_t i = 0; i < 12; ++i) {
    const auto a = reference::attention_row(once, source, 0, i, 1);
    const auto b = reference::attention_row(twice, source, 0, i, 1);
    EXPECT_EQ(b.keys, 2 * a.keys);
    if (a.keys == 0) continue;
    EXPECT_NEAR(b.lse, a.lse + std::log(2.0), 1e-12);
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(b.out[c], a.out[c], 1e-12);
  }
}

}  // namespace
}  // namespace dring
