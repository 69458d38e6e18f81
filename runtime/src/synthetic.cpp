// synthetic.cpp — counter-based normal samples (splitmix64 hash, Box-Muller).
#include "dring/runtime/synthetic.hpp"

#include <cmath>

namespace dring {

namespace {

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

float normal_from(uint64_t key) {
  const uint64_t bits = mix(key);
  // Two uniforms in (0, 1] and [0, 1) from the two halves.
  const double u1 = (static_cast<double>(bits >> 40) + 1.0) / 16777216.0;
  const double u2 = static_cast<double>((bits >> 8) & 0xffffffULL) / 16777216.0;
  constexpr double kTwoPi = 6.283185307179586;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

}  // namespace

int64_t heads_of(TensorId id, const AttentionShape& shape) {
  return (id == TensorId::kK || id == TensorId::kV) ? shape.kv_heads : shape.heads;
}

float synthetic_value(uint64_t seed, TensorId id, const AttentionShape& shape, int64_t batch, int64_t pos,
                      int64_t head, int64_t c) {
  const TensorDims dims{shape.batch, shape.seq, heads_of(id, shape), shape.head_dim};
  const uint64_t index = static_cast<uint64_t>(dims.at(batch, pos, head) + c);
  return normal_from(mix(mix(seed) ^ static_cast<uint64_t>(id)) ^ index);
}

void fill_synthetic(uint64_t seed, TensorId id, const AttentionShape& shape, int64_t begin, int64_t rows,
                    float* out, int threads) {
  fill_synthetic(seed, id, shape, {ShardRun{{begin, rows, 1}, 0, 1}}, rows, out, threads);
}

void fill_synthetic(uint64_t seed, TensorId id, const AttentionShape& shape, const std::vector<ShardRun>& runs,
                    int64_t rows, float* out, int threads) {
  const TensorDims dims{shape.batch, rows, heads_of(id, shape), shape.head_dim};
  std::vector<int64_t> position(static_cast<size_t>(rows));
  for (const ShardRun& run : runs) {
    for (int64_t m = 0; m < run.pos.count; ++m) position[run.local_first + m * run.local_stride] = run.pos.at(m);
  }
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
  for (int64_t b = 0; b < shape.batch; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t h = 0; h < dims.heads; ++h) {
        float* row = out + dims.at(b, i, h);
        for (int64_t c = 0; c < dims.head_dim; ++c) row[c] = synthetic_value(seed, id, shape, b, position[i], h, c);
      }
    }
  }
}

void SyntheticSource::q_row(int64_t batch, int64_t pos, int64_t head, double* out) const {
  for (int64_t c = 0; c < shape_.head_dim; ++c) out[c] = synthetic_value(seed_, TensorId::kQ, shape_, batch, pos, head, c);
}

void SyntheticSource::dout_row(int64_t batch, int64_t pos, int64_t head, double* out) const {
  for (int64_t c = 0; c < shape_.head_dim; ++c) {
    out[c] = synthetic_value(seed_, TensorId::kDout, shape_, batch, pos, head, c);
  }
}

void SyntheticSource::kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const {
  const int64_t d = shape_.head_dim;
  for (int64_t n = 0; n < rows.count; ++n) {
    const int64_t pos = rows.first + n * rows.stride;
    for (int64_t c = 0; c < d; ++c) {
      k[n * d + c] = synthetic_value(seed_, TensorId::kK, shape_, batch, pos, kv_head, c);
      v[n * d + c] = synthetic_value(seed_, TensorId::kV, shape_, batch, pos, kv_head, c);
    }
  }
}

}  // namespace dring
