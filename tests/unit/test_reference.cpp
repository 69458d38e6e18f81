// test_reference.cpp — the float64 oracle against a second, independent formulation: a weighted
// softmax over the full score matrix, where the weight of (i, j) counts the pairs that connect
// them (tested pair by pair from the definition, documents and window included). Plus the edge
// cases of the definition, and the trainer extensions against what they mean: a problem of
// documents is its documents run one by one, a window wider than the sequence is no window.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "dring/kernels/reference.hpp"
#include "dring/runtime/layout.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

struct Dense {
  std::vector<double> out, lse;
};

// How many pairs connect query (i, head h) to key j, from the definition: i and j in the same
// document; inside it (positions counted from its start, segment w' = min(w, its length)) in the
// same segment with the head's offset; j <= i when causal; |i - j| < W with a window.
int64_t connections(const Problem& p, int64_t h, int64_t i, int64_t j) {
  int64_t start = 0;
  for (const int64_t len : p.doc_lens()) {
    if (i >= start + len) {
      start += len;
      continue;
    }
    if (j < start || j >= start + len) return 0;  // another document
    if (p.config.causal && j > i) return 0;
    if (p.config.window > 0 && std::abs(i - j) >= p.config.window) return 0;
    int64_t count = 0;
    for (const DilatedPair& pair : p.pairs()) {
      const int64_t w = std::min(pair.segment, len), r = pair.dilation, off = h % r;
      const int64_t a = i - start, b = j - start;
      count += a / w == b / w && (a % w) % r == off && (b % w) % r == off ? 1 : 0;
    }
    return count;
  }
  return 0;
}

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
        for (int64_t j = 0; j < s.seq; ++j) weight[j] = static_cast<double>(connections(p, h, i, j));
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

void expect_same(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t n = 0; n < got.size(); ++n) {
    if (std::isinf(want[n])) {
      ASSERT_TRUE(std::isinf(got[n]) && (got[n] < 0) == (want[n] < 0)) << what << " element " << n;
    } else {
      ASSERT_NEAR(got[n], want[n], tol) << what << " element " << n;
    }
  }
}

void expect_matches_weighted_softmax(const Problem& p, const std::string& what) {
  const AttentionShape& s = p.shape;
  const auto q = test::random_tensor(s.batch * s.seq * s.heads * s.head_dim, 1);
  const auto k = test::random_tensor(s.batch * s.seq * s.kv_heads * s.head_dim, 2);
  const auto v = test::random_tensor(s.batch * s.seq * s.kv_heads * s.head_dim, 3);
  const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data());
  std::vector<double> out, lse;
  reference::attention_forward(p, source, out, lse);
  const Dense want = weighted_softmax(p, q, k, v);
  expect_same(out, want.out, 1e-12, what + " out");
  expect_same(lse, want.lse, 1e-12, what + " lse");
}

TEST(Reference, MatchesTheWeightedSoftmaxFormulation) {
  for (int64_t seq : {1, 2, 7, 23, 50}) {
    for (const auto& c : test::standard_configs()) {
      const Problem p = test::make_problem(2, seq, c.heads, c.kv_heads, 5, c.pairs, c.causal, 0.3);
      expect_matches_weighted_softmax(p, std::string(c.name) + " seq " + std::to_string(seq));
    }
  }
}

// Documents (of length 1, shorter and longer than a segment) and windows (1, narrower than a
// segment, wider than the sequence), on every standard configuration.
TEST(Reference, DocumentsAndWindowsMatchTheWeightedSoftmaxFormulation) {
  const std::vector<std::vector<int64_t>> doc_lens = {{}, {1, 30, 1, 9, 2}, {20, 23}};
  for (const auto& docs : doc_lens) {
    for (int64_t window : {0, 1, 3, 10, 100}) {
      for (const auto& c : test::standard_configs()) {
        Problem p = test::make_problem(1, 43, c.heads, c.kv_heads, 4, c.pairs, c.causal, 0.4);
        p.config.doc_lens = docs;
        p.config.window = window;
        expect_matches_weighted_softmax(p, std::string(c.name) + " " + p.describe());
      }
    }
  }
}

// Dense causal attention with a window W: row i sees exactly keys max(0, i-W+1)..i, written here
// as the usual sliding-window softmax.
TEST(Reference, DenseCausalWindowIsTheSlidingWindowSoftmax) {
  const int64_t seq = 31, d = 6;
  for (int64_t window : {1, 2, 5, 31, 40}) {
    Problem p = test::make_problem(1, seq, 1, 1, d, {}, true);
    p.config.window = window;
    const auto q = test::random_tensor(seq * d, 4), k = test::random_tensor(seq * d, 5), v = test::random_tensor(seq * d, 6);
    const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data());
    for (int64_t i = 0; i < seq; ++i) {
      const reference::RowResult row = reference::attention_row(p, source, 0, i, 0);
      const int64_t first = std::max<int64_t>(0, i - window + 1);
      ASSERT_EQ(row.keys, i - first + 1);
      std::vector<double> e;
      double mx = -INFINITY, denom = 0.0;
      for (int64_t j = first; j <= i; ++j) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; ++c) dot += double(q[i * d + c]) * k[j * d + c];
        e.push_back(dot * p.scale());
        mx = std::max(mx, e.back());
      }
      for (double& x : e) denom += (x = std::exp(x - mx));
      EXPECT_NEAR(row.lse, mx + std::log(denom), 1e-12) << "window " << window << " row " << i;
      for (int64_t c = 0; c < d; ++c) {
        double want = 0.0;
        for (int64_t j = first; j <= i; ++j) want += e[j - first] / denom * v[j * d + c];
        EXPECT_NEAR(row.out[c], want, 1e-12) << "window " << window << " row " << i;
      }
    }
  }
}

TEST(Reference, AWindowAsWideAsTheSequenceIsNoWindow) {
  for (const auto& c : test::standard_configs()) {
    const Problem plain = test::make_problem(2, 19, c.heads, c.kv_heads, 3, c.pairs, c.causal);
    const auto q = test::random_tensor(2 * 19 * c.heads * 3, 7), dout = test::random_tensor(2 * 19 * c.heads * 3, 10);
    const auto k = test::random_tensor(2 * 19 * c.kv_heads * 3, 8), v = test::random_tensor(2 * 19 * c.kv_heads * 3, 9);
    const reference::TensorSource<float> source(plain.shape, q.data(), k.data(), v.data(), dout.data());
    std::vector<double> out, lse, dq, dk, dv;
    reference::attention_forward(plain, source, out, lse);
    reference::attention_backward(plain, source, dq, dk, dv);
    for (int64_t window : {19, 20, 1000}) {
      Problem wide = plain;
      wide.config.window = window;
      std::vector<double> wout, wlse, wdq, wdk, wdv;
      reference::attention_forward(wide, source, wout, wlse);
      reference::attention_backward(wide, source, wdq, wdk, wdv);
      const std::string what = std::string(c.name) + " window " + std::to_string(window);
      expect_same(wout, out, 0.0, what);
      expect_same(wlse, lse, 0.0, what);
      expect_same(wdq, dq, 0.0, what);
      expect_same(wdk, dk, 0.0, what);
      expect_same(wdv, dv, 0.0, what);
    }
  }
}

// Rows [begin, begin + len) of a [batch, seq, heads, d] tensor, as a [batch, len, heads, d] one.
template <class T>
std::vector<T> rows_of(const std::vector<T>& x, int64_t batch, int64_t seq, int64_t heads, int64_t d, int64_t begin,
                       int64_t len) {
  std::vector<T> part;
  for (int64_t b = 0; b < batch; ++b) {
    const auto first = x.begin() + ((b * seq + begin) * heads) * d;
    part.insert(part.end(), first, first + len * heads * d);
  }
  return part;
}

// A problem of documents is its documents, each run as a sequence of its own on the same rows,
// concatenated: forward (out, lse) and backward (dq, dk, dv). Documents of length 1, shorter and
// longer than a segment, with and without causality and a window, dilated pairs and GQA.
TEST(Reference, DocumentsAreSequencesOfTheirOwn) {
  const int64_t batch = 2, seq = 37, d = 3;
  const std::vector<int64_t> lens = {1, 13, 2, 20, 1};
  for (const auto& c : test::standard_configs()) {
    for (int64_t window : {0, 4}) {
      Problem p = test::make_problem(batch, seq, c.heads, c.kv_heads, d, c.pairs, c.causal, 0.5);
      p.config.doc_lens = lens;
      p.config.window = window;
      const auto q = test::random_tensor(batch * seq * c.heads * d, 11), dout = test::random_tensor(batch * seq * c.heads * d, 14);
      const auto k = test::random_tensor(batch * seq * c.kv_heads * d, 12), v = test::random_tensor(batch * seq * c.kv_heads * d, 13);
      const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data(), dout.data());
      std::vector<double> out, lse, dq, dk, dv;
      reference::attention_forward(p, source, out, lse);
      reference::attention_backward(p, source, dq, dk, dv);
      int64_t begin = 0;
      for (const int64_t len : lens) {
        Problem one = p;
        one.shape.seq = len;
        one.config.doc_lens.clear();
        const auto q_part = rows_of(q, batch, seq, c.heads, d, begin, len);
        const auto dout_part = rows_of(dout, batch, seq, c.heads, d, begin, len);
        const auto k_part = rows_of(k, batch, seq, c.kv_heads, d, begin, len);
        const auto v_part = rows_of(v, batch, seq, c.kv_heads, d, begin, len);
        const reference::TensorSource<float> part(one.shape, q_part.data(), k_part.data(), v_part.data(), dout_part.data());
        std::vector<double> pout, plse, pdq, pdk, pdv;
        reference::attention_forward(one, part, pout, plse);
        reference::attention_backward(one, part, pdq, pdk, pdv);
        const std::string what = std::string(c.name) + " window " + std::to_string(window) + " document at " +
                                 std::to_string(begin) + " of length " + std::to_string(len);
        expect_same(rows_of(out, batch, seq, c.heads, d, begin, len), pout, 1e-13, what + " out");
        expect_same(rows_of(dq, batch, seq, c.heads, d, begin, len), pdq, 1e-13, what + " dq");
        expect_same(rows_of(dk, batch, seq, c.kv_heads, d, begin, len), pdk, 1e-13, what + " dk");
        expect_same(rows_of(dv, batch, seq, c.kv_heads, d, begin, len), pdv, 1e-13, what + " dv");
        std::vector<double> doc_lse;  // lse is [batch, heads, seq]
        for (int64_t bh = 0; bh < batch * c.heads; ++bh) {
          doc_lse.insert(doc_lse.end(), lse.begin() + bh * seq + begin, lse.begin() + bh * seq + begin + len);
        }
        expect_same(doc_lse, plse, 1e-13, what + " lse");
        begin += len;
      }
    }
  }
}

// grad_kv_row_cost counts, for every (query, pair) that reads the key, the query's whole multiset
// of keys, two rows of head_dim each.
TEST(Reference, GradKvRowCostCountsTheReadingQueriesKeys) {
  const int64_t d = 3;
  for (const auto& c : test::standard_configs()) {
    Problem p = test::make_problem(1, 29, c.heads, c.kv_heads, d, c.pairs, c.causal);
    p.config.doc_lens = {4, 1, 17, 7};
    p.config.window = 5;
    const auto q = test::random_tensor(29 * c.heads * d, 1), kv = test::random_tensor(29 * c.kv_heads * d, 2);
    const reference::TensorSource<float> source(p.shape, q.data(), kv.data(), kv.data());
    for (int64_t pos = 0; pos < 29; ++pos) {
      for (int64_t g = 0; g < c.kv_heads; ++g) {
        double want = 0.0;
        for (int64_t h = g * p.group_size(); h < (g + 1) * p.group_size(); ++h) {
          for (int64_t i = 0; i < 29; ++i) {
            const int64_t n = connections(p, h, i, pos);
            if (n > 0) want += static_cast<double>(n * reference::attention_row(p, source, 0, i, h).keys);
          }
        }
        EXPECT_EQ(reference::grad_kv_row_cost(p, pos, g), 2.0 * want * d) << c.name << " key " << pos;
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
