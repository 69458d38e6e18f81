// reference.cpp — float64 dilated attention, one row at a time, from the definition.
#include "dring/kernels/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dring::reference {

namespace {
constexpr int64_t kChunkRows = 4096;  // keys read from the source at a time
}

RowResult attention_row(const Problem& problem, const RowSource& source, int64_t batch, int64_t pos,
                        int64_t head) {
  const int64_t d = problem.shape.head_dim;
  const double scale = problem.scale();
  const int64_t kv_head = problem.kv_head_of(head);
  std::vector<double> q(d), k, v;
  source.q_row(batch, pos, head, q.data());

  // Streaming softmax in float64: running max m, sum l and sum of weighted values.
  RowResult result;
  result.out.assign(d, 0.0);
  double m = -std::numeric_limits<double>::infinity();
  double l = 0.0;
  for (const DilatedPair& pair : problem.pairs()) {
    const PairGeometry geom(pair, problem.shape.seq);
    const int64_t offset = geom.offset_of_head(head);
    if (!geom.selects(pos, offset)) continue;  // this pair does not select the row
    const int64_t seg = geom.segment_of(pos);
    const int64_t key_end = problem.config.causal ? pos + 1 : geom.segment_end(seg);
    StridedRange keys = geom.selected(seg, offset, geom.segment_begin(seg), key_end);
    while (keys.count > 0) {
      StridedRange chunk = keys;
      chunk.count = std::min(keys.count, kChunkRows);
      k.resize(chunk.count * d);
      v.resize(chunk.count * d);
      source.kv_rows(batch, kv_head, chunk, k.data(), v.data());
      for (int64_t j = 0; j < chunk.count; ++j) {
        double s = 0.0;
        for (int64_t c = 0; c < d; ++c) s += q[c] * k[j * d + c];
        s *= scale;
        const double m_new = std::max(m, s);
        const double correction = std::exp(m - m_new);
        const double p = std::exp(s - m_new);
        l = l * correction + p;
        for (int64_t c = 0; c < d; ++c) {
          result.out[c] = result.out[c] * correction + p * v[j * d + c];
          result.value_scale = std::max(result.value_scale, std::abs(v[j * d + c]));
        }
        m = m_new;
      }
      result.keys += chunk.count;
      keys.first += chunk.count * keys.stride;
      keys.count -= chunk.count;
    }
  }
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
  out.assign(s.batch * s.seq * s.heads * s.head_dim, 0.0);
  lse.assign(s.batch * s.heads * s.seq, 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.seq; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const RowResult row = attention_row(problem, source, b, i, h);
        std::copy(row.out.begin(), row.out.end(), out.begin() + ((b * s.seq + i) * s.heads + h) * s.head_dim);
        lse[(b * s.heads + h) * s.seq + i] = row.lse;
      }
    }
  }
}

}  // namespace dring::reference
