// vector_math.cpp — exp2 by range reduction and a polynomial, the fused row update of the
// small-block path and the bf16 <-> fp32 conversions, written so GCC vectorises them (omp simd
// reductions allow reordered sums).
//
// 2^x = 2^n * 2^f with n = rint(x), f in [-0.5, 0.5]; 2^f is a degree-6 least-squares polynomial
// (relative error 2.6e-9, below float rounding). Arguments are clamped to [-127, 0]: the callers
// pass x - max <= 0, and for x <= -127 the exponent field is zero, so the result is exactly 0,
// which is what masked (-inf) scores must give; 2^0 is exactly 1.
#include "vector_math.hpp"

#include "dring/kernels/cpu.hpp"

#include <bit>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define DRING_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DRING_VECTOR_CLONES
#endif

namespace dring::kernels::cpu {

namespace {

// Inlined into each clone, so it is vectorised with that clone's instructions.
inline float exp2_nonpositive(float t) {
  t = t < -127.0f ? -127.0f : t;
  const float ni = std::rint(t);
  const float f = t - ni;
  float p = 1.546973199e-4f;
  p = p * f + 1.340043217e-3f;
  p = p * f + 9.618025603e-3f;
  p = p * f + 5.550327214e-2f;
  p = p * f + 2.402265121e-1f;
  p = p * f + 6.931472067e-1f;
  p = p * f + 1.0f;
  const int32_t e = static_cast<int32_t>(ni) + 127;
  const uint32_t bits = static_cast<uint32_t>(e) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// fp32 to bf16, to nearest even, NaN kept a (quiet) NaN: f32_to_bf16's rounding, inlined.
inline uint16_t round_bf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

}  // namespace

DRING_VECTOR_CLONES
float max_of(const float* x, int64_t n, float m) {
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

DRING_VECTOR_CLONES
float exp2_shifted_sum(float* x, int64_t n, float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float value = exp2_nonpositive(x[j] - m);
    x[j] = value;
    sum += value;
  }
  return sum;
}

// The rounding of f32_to_bf16 below, for the finite non-negative values exp2 gives.
DRING_VECTOR_CLONES
float exp2_scaled_to_bf16(const float* x, int64_t n, float alpha, float m, uint16_t* p) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float value = exp2_nonpositive(alpha * x[j] - m);
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    p[j] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    sum += value;
  }
  return sum;
}

DRING_VECTOR_CLONES
void softmax_grad_to_bf16(const float* s, const float* dp, int64_t n, float alpha, float m, float delta, float c,
                          uint16_t* p16, uint16_t* ds16) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float p = exp2_nonpositive(alpha * s[j] - m);
    p16[j] = round_bf16(p);
    ds16[j] = round_bf16(p * (dp[j] - delta) * c);
  }
}

DRING_VECTOR_CLONES
void scale(float* x, int64_t n, float c) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] *= c;
}

DRING_VECTOR_CLONES
void add(float* x, const float* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] += y[j];
}

// Scores four keys at a time (four independent sums hide the latency of the vector adds), then
// the max, the exponentials and the update of acc, all in this one call.
DRING_VECTOR_CLONES
void attend_row(const float* q, const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n,
                int64_t d, float alpha, float* scores, float* m, float* l, float* acc) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* k0 = k + j * k_stride;
    const float* k1 = k0 + k_stride;
    const float* k2 = k1 + k_stride;
    const float* k3 = k2 + k_stride;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t e = 0; e < d; ++e) {
      s0 += q[e] * k0[e];
      s1 += q[e] * k1[e];
      s2 += q[e] * k2[e];
      s3 += q[e] * k3[e];
    }
    scores[j] = alpha * s0;
    scores[j + 1] = alpha * s1;
    scores[j + 2] = alpha * s2;
    scores[j + 3] = alpha * s3;
  }
  for (; j < n; ++j) {
    const float* kj = k + j * k_stride;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t e = 0; e < d; ++e) s += q[e] * kj[e];
    scores[j] = alpha * s;
  }
  float m_new = *m;
  for (j = 0; j < n; ++j) m_new = scores[j] > m_new ? scores[j] : m_new;
  if (m_new == -INFINITY) return;  // no keys, nothing visible yet
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (j = 0; j < n; ++j) {
    const float p = exp2_nonpositive(scores[j] - m_new);
    scores[j] = p;
    sum += p;
  }
  const float correction = exp2_nonpositive(*m - m_new);  // 0 when m was -inf
  if (correction != 1.0f) {
#pragma omp simd
    for (int64_t e = 0; e < d; ++e) acc[e] *= correction;
  }
  for (j = 0; j < n; ++j) {
    const float pj = scores[j];
    const float* vj = v + j * v_stride;
#pragma omp simd
    for (int64_t e = 0; e < d; ++e) acc[e] += pj * vj[e];
  }
  *l = *l * correction + sum;
  *m = m_new;
}

// bf16 is the upper half of an fp32: widening is a 16-bit shift, exact for every value.
DRING_VECTOR_CLONES
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dst[j] = std::bit_cast<float>(static_cast<uint32_t>(src[j]) << 16);
}

// Narrowing rounds to nearest, ties to even: add 0x7fff plus the lowest kept bit, then drop the
// low half (a carry into the exponent is the correct round-up, to inf past the largest finite
// value). A NaN would round like a number and could become inf, so it keeps its upper half with
// the quiet bit set instead. Branch-free (a select), so the loop vectorises.
DRING_VECTOR_CLONES
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t bits = std::bit_cast<uint32_t>(src[j]);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (bits >> 16) | 0x40u;
    dst[j] = static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

}  // namespace dring::kernels::cpu
