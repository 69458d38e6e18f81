// reference.cpp — float64 dilated attention and its gradient, one row at a time, from the
// definition (docs/math.md).
//
// Documents and the window enter exactly as the definition says: a row's pairs are taken inside
// its own document (segments and head offsets from the document's start, segment min(w, its
// length), so no key crosses a boundary), and its keys in a pair are the segment's rows with the
// row's offset, then cut to j <= i (causal) and |i - j| < W (window).
#include "dring/kernels/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "dring/core/error.hpp"

namespace dring::reference {

namespace {

constexpr int64_t kChunkRows = 4096;  // keys read from the source at a time

// Pair `pair` inside the document that holds position `pos`.
PairGeometry geometry_at(const Documents& docs, const DilatedPair& pair, int64_t pos) {
  const int64_t d = docs.document_of(pos);
  return PairGeometry(pair, docs.begin(d), docs.end(d));
}

// The keys of query `pos` (offset `offset`, which the pair selects) in one pair: the rows of its
// segment with its offset, j <= pos when causal, |pos - j| < W with a window.
StridedRange keys_of_query(const Problem& problem, const PairGeometry& geom, int64_t pos, int64_t offset) {
  const int64_t seg = geom.segment_of(pos);
  int64_t lo = geom.segment_begin(seg), hi = geom.segment_end(seg);
  if (problem.config.causal) hi = std::min(hi, pos + 1);
  if (problem.config.window > 0) {
    lo = std::max(lo, pos - problem.config.window + 1);
    hi = std::min(hi, pos + problem.config.window);
  }
  return geom.selected(seg, offset, lo, hi);
}

// The queries that read key `pos` (offset `offset`, which the pair selects) in one pair: the rows
// of its segment with its offset, i >= pos when causal, |i - pos| < W with a window.
StridedRange queries_of_key(const Problem& problem, const PairGeometry& geom, int64_t pos, int64_t offset) {
  const int64_t seg = geom.segment_of(pos);
  int64_t lo = geom.segment_begin(seg), hi = geom.segment_end(seg);
  if (problem.config.causal) lo = std::max(lo, pos);
  if (problem.config.window > 0) {
    lo = std::max(lo, pos - problem.config.window + 1);
    hi = std::min(hi, pos + problem.config.window);
  }
  return geom.selected(seg, offset, lo, hi);
}

// Calls visit(j, k_row, v_row) for every key of the multiset of (batch, pos, head), pair by pair
// (a key reached by two pairs is visited twice).
template <class Visit>
void for_each_key(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos, int64_t head,
                  Visit&& visit) {
  const int64_t d = problem.shape.head_dim;
  const int64_t kv_head = problem.kv_head_of(head);
  const Documents docs(problem);
  std::vector<double> k, v;
  for (const DilatedPair& pair : problem.pairs()) {
    const PairGeometry geom = geometry_at(docs, pair, pos);
    const int64_t offset = geom.offset_of_head(head);
    if (!geom.selects(pos, offset)) continue;  // this pair does not select the row
    StridedRange keys = keys_of_query(problem, geom, pos, offset);
    while (keys.count > 0) {
      StridedRange chunk = keys;
      chunk.count = std::min(keys.count, kChunkRows);
      k.resize(chunk.count * d);
      v.resize(chunk.count * d);
      source.kv_rows(batch, kv_head, chunk, k.data(), v.data());
      for (int64_t n = 0; n < chunk.count; ++n) visit(chunk.first + n * chunk.stride, &k[n * d], &v[n * d]);
      keys.first += chunk.count * keys.stride;
      keys.count -= chunk.count;
    }
  }
}

double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// What the gradient of one query row needs: q, dout, lse and delta = dout . out.
struct QueryState {
  std::vector<double> q, dout;
  double lse = 0.0;
  double delta = 0.0;
  bool has_keys = false;
};

QueryState query_state(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos, int64_t head) {
  const int64_t d = problem.shape.head_dim;
  QueryState st;
  st.q.resize(d);
  st.dout.resize(d);
  source.q_row(batch, pos, head, st.q.data());
  source.dout_row(batch, pos, head, st.dout.data());
  const RowResult row = attention_row(problem, source, batch, pos, head);
  st.has_keys = row.keys > 0;
  st.lse = row.lse;
  st.delta = dot(st.dout.data(), row.out.data(), d);
  return st;
}

}  // namespace

void RowSource::dout_row(int64_t, int64_t, int64_t, double*) const {
  DRING_FAIL(Status::kInvalidArgument, "this input has no dout (needed for the backward pass)");
}

int64_t InMemorySource::elements(const AttentionShape& s, bool dout) {
  return (dout ? 2 : 1) * s.q_dims(s.seq).elements() + 2 * s.kv_dims(s.seq).elements();
}

InMemorySource::InMemorySource(const AttentionShape& s, const RowSource& source)
    : q_(s.q_dims(s.seq).elements()),
      k_(s.kv_dims(s.seq).elements()),
      v_(k_.size()),
      dout_(source.has_dout() ? q_.size() : 0),
      view_(s, q_.data(), k_.data(), v_.data(), dout_.empty() ? nullptr : dout_.data()) {
  const TensorDims qd = s.q_dims(s.seq), kvd = s.kv_dims(s.seq);
  const int64_t d = s.head_dim;
  std::vector<double> k(s.seq * d), v(s.seq * d);  // one kv head's rows, [S, D]
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t pos = 0; pos < s.seq; ++pos) {
      for (int64_t h = 0; h < s.heads; ++h) {
        source.q_row(b, pos, h, &q_[qd.at(b, pos, h)]);
        if (!dout_.empty()) source.dout_row(b, pos, h, &dout_[qd.at(b, pos, h)]);
      }
    }
    for (int64_t g = 0; g < s.kv_heads; ++g) {
      source.kv_rows(b, g, StridedRange{0, s.seq, 1}, k.data(), v.data());
      for (int64_t pos = 0; pos < s.seq; ++pos) {
        std::copy_n(&k[pos * d], d, &k_[kvd.at(b, pos, g)]);
        std::copy_n(&v[pos * d], d, &v_[kvd.at(b, pos, g)]);
      }
    }
  }
}

RowResult attention_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                        int64_t head) {
  const int64_t d = problem.shape.head_dim;
  const double scale = problem.scale();
  std::vector<double> q(d);
  source.q_row(batch, pos, head, q.data());
  // Streaming softmax in float64: running max m, sum l and sum of weighted values.
  RowResult result;
  result.out.assign(d, 0.0);
  double m = -std::numeric_limits<double>::infinity();
  double l = 0.0;
  for_each_key(problem, source, batch, pos, head, [&](int64_t, const double* k, const double* v) {
    const double s = scale * dot(q.data(), k, d);
    const double m_new = std::max(m, s);
    const double correction = std::exp(m - m_new);
    const double p = std::exp(s - m_new);
    l = l * correction + p;
    for (int64_t c = 0; c < d; ++c) {
      result.out[c] = result.out[c] * correction + p * v[c];
      result.value_scale = std::max(result.value_scale, std::abs(v[c]));
    }
    m = m_new;
    result.keys += 1;
  });
  if (result.keys == 0) {
    result.lse = -std::numeric_limits<double>::infinity();
    return result;
  }
  for (double& x : result.out) x /= l;
  result.lse = m + std::log(l);
  return result;
}

void attention_forward(const Problem& problem, const RowSource& source, std::vector<double>& out,
                       std::vector<double>& lse) {
  const AttentionShape& s = problem.shape;
  const TensorDims qd = s.q_dims(s.seq);
  out.assign(qd.elements(), 0.0);
  lse.assign(qd.state_elements(), 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.seq; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const RowResult row = attention_row(problem, source, b, i, h);
        std::copy(row.out.begin(), row.out.end(), out.begin() + qd.at(b, i, h));
        lse[qd.state_at(b, h, i)] = row.lse;
      }
    }
  }
}

void attention_backward(const Problem& problem, const RowSource& source, std::vector<double>& dq,
                        std::vector<double>& dk, std::vector<double>& dv) {
  const AttentionShape& s = problem.shape;
  const int64_t d = s.head_dim;
  const double scale = problem.scale();
  const TensorDims qd = s.q_dims(s.seq), kvd = s.kv_dims(s.seq);
  dq.assign(qd.elements(), 0.0);
  dk.assign(kvd.elements(), 0.0);
  dv.assign(kvd.elements(), 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.seq; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const QueryState st = query_state(problem, source, b, i, h);
        if (!st.has_keys) continue;
        double* dq_row = &dq[qd.at(b, i, h)];
        const int64_t g = problem.kv_head_of(h);
        for_each_key(problem, source, b, i, h, [&](int64_t j, const double* k, const double* v) {
          const double p = std::exp(scale * dot(st.q.data(), k, d) - st.lse);
          const double ds = p * (dot(st.dout.data(), v, d) - st.delta);
          double* dk_row = &dk[kvd.at(b, j, g)];
          double* dv_row = &dv[kvd.at(b, j, g)];
          for (int64_t c = 0; c < d; ++c) {
            dq_row[c] += scale * ds * k[c];
            dk_row[c] += scale * ds * st.q[c];
            dv_row[c] += p * st.dout[c];
          }
        });
      }
    }
  }
}

std::vector<double> grad_q_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                               int64_t head) {
  const int64_t d = problem.shape.head_dim;
  const double scale = problem.scale();
  std::vector<double> dq(d, 0.0);
  const QueryState st = query_state(problem, source, batch, pos, head);
  if (!st.has_keys) return dq;
  for_each_key(problem, source, batch, pos, head, [&](int64_t, const double* k, const double* v) {
    const double p = std::exp(scale * dot(st.q.data(), k, d) - st.lse);
    const double ds = p * (dot(st.dout.data(), v, d) - st.delta);
    for (int64_t c = 0; c < d; ++c) dq[c] += scale * ds * k[c];
  });
  return dq;
}

namespace {
// Calls visit(i, h) for every (query row, query head) whose key multiset holds key row `pos` of kv
// head g, once per pair that connects them.
template <class Visit>
void for_each_query_of_key(const Problem& problem, int64_t pos, int64_t kv_head, Visit&& visit) {
  const int64_t group = problem.group_size();
  const Documents docs(problem);
  for (const DilatedPair& pair : problem.pairs()) {
    const PairGeometry geom = geometry_at(docs, pair, pos);
    const int64_t offset = ((pos - geom.begin) % geom.w) % geom.r;  // the one offset selecting the key
    const StridedRange queries = queries_of_key(problem, geom, pos, offset);
    for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) {
      if (geom.offset_of_head(h) != offset) continue;
      for (int64_t n = 0; n < queries.count; ++n) visit(queries.first + n * queries.stride, h);
    }
  }
}
}  // namespace

double grad_kv_row_cost(const Problem& problem, int64_t pos, int64_t kv_head) {
  // Each query that reads the key costs its forward row: every key of its multiset, a k and a v row.
  double key_rows = 0.0;
  const Documents docs(problem);
  for_each_query_of_key(problem, pos, kv_head, [&](int64_t i, int64_t h) {
    for (const DilatedPair& pair : problem.pairs()) {
      const PairGeometry geom = geometry_at(docs, pair, i);
      const int64_t off = geom.offset_of_head(h);
      if (!geom.selects(i, off)) continue;
      key_rows += static_cast<double>(keys_of_query(problem, geom, i, off).count);
    }
  });
  return 2.0 * key_rows * static_cast<double>(problem.shape.head_dim);
}

std::vector<double> grad_kv_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                                int64_t kv_head) {
  const int64_t d = problem.shape.head_dim;
  const double scale = problem.scale();
  std::vector<double> grads(2 * d, 0.0), k(d), v(d);
  source.kv_rows(batch, kv_head, StridedRange{pos, 1, 1}, k.data(), v.data());
  for_each_query_of_key(problem, pos, kv_head, [&](int64_t i, int64_t h) {
    const QueryState st = query_state(problem, source, batch, i, h);
    const double p = std::exp(scale * dot(st.q.data(), k.data(), d) - st.lse);
    const double ds = p * (dot(st.dout.data(), v.data(), d) - st.delta);
    for (int64_t c = 0; c < d; ++c) {
      grads[c] += scale * ds * st.q[c];
      grads[d + c] += p * st.dout[c];
    }
  });
  return grads;
}

}  // namespace dring::reference
