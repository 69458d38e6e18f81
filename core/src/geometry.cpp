// geometry.cpp — progressions, documents and block masks (geometry.hpp).
#include "dring/core/geometry.hpp"

#include <numeric>

#include "dring/core/error.hpp"

namespace dring {

namespace {

// x with a*x = 1 (mod m), for gcd(a, m) = 1 and m >= 1 (extended Euclid).
int64_t inverse_mod(int64_t a, int64_t m) {
  int64_t old_r = a % m, r = m, old_s = 1, s = 0;
  while (r != 0) {
    const int64_t q = old_r / r;
    old_r -= q * r;
    std::swap(old_r, r);
    old_s -= q * s;
    std::swap(old_s, s);
  }
  return ((old_s % m) + m) % m;
}

}  // namespace

StridedRange clip(const StridedRange& a, int64_t lo, int64_t hi) {
  if (a.count <= 0) return StridedRange{a.first, 0, a.stride};
  lo = std::max(lo, a.first);
  hi = std::min(hi, a.last() + 1);
  const int64_t first = a.first + (lo - a.first + a.stride - 1) / a.stride * a.stride;
  const int64_t count = first < hi ? (hi - 1 - first) / a.stride + 1 : 0;
  return StridedRange{first, count, a.stride};
}

StridedRange intersect(const StridedRange& a, const StridedRange& b) {
  const int64_t g = std::gcd(a.stride, b.stride);
  const int64_t stride = a.stride / g * b.stride;
  if (a.count <= 0 || b.count <= 0 || ((b.first - a.first) % g + g) % g != 0) return StridedRange{a.first, 0, stride};
  // x = a.first + a.stride*m = b.first (mod b.stride): m = ((b.first - a.first)/g) * inv(a.stride/g) mod (b.stride/g).
  const int64_t mod = b.stride / g;
  const int64_t rhs = (((b.first - a.first) / g) % mod + mod) % mod;
  const int64_t m = static_cast<int64_t>(static_cast<__int128>(rhs) * inverse_mod(a.stride / g % mod, mod) % mod);
  const int64_t x = a.first + a.stride * m;  // the smallest common position >= a.first, modulo `stride`
  const int64_t lo = std::max(a.first, b.first), hi = std::min(a.last(), b.last()) + 1;
  const int64_t first = x >= lo ? x - (x - lo) / stride * stride : x + (lo - x + stride - 1) / stride * stride;
  const int64_t count = first < hi ? (hi - 1 - first) / stride + 1 : 0;
  return StridedRange{first, count, stride};
}

Documents::Documents(const Problem& problem) {
  starts_.reserve(problem.config.doc_lens.size() + 2);
  starts_.push_back(0);
  for (const int64_t len : problem.doc_lens()) starts_.push_back(starts_.back() + len);
}

int64_t Documents::document_of(int64_t pos) const {
  // The last start <= pos.
  return static_cast<int64_t>(std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin()) - 1;
}

double BlockMask::visible_pairs(int64_t n_q, int64_t n_k) const {
  if (trivial()) return static_cast<double>(n_q) * static_cast<double>(n_k);
  double pairs = 0.0;
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t b = key_begin(i, n_k), e = key_end(i, n_k);
    if (e > b) pairs += static_cast<double>(e - b);
  }
  return pairs;
}

}  // namespace dring
