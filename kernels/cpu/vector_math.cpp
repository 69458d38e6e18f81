// vector_math.cpp — exp2 by range reduction and a polynomial, written so GCC vectorises it.
//
// 2^x = 2^n * 2^f with n = rint(x), f in [-0.5, 0.5]; 2^f is a degree-6 least-squares polynomial
// (relative error 2.6e-9, below float rounding). Arguments are clamped to [-127, 0]: the callers
// pass x - max <= 0, and for x <= -127 the exponent field is zero, so the result is exactly 0,
// which is what masked (-inf) scores must give.
#include "vector_math.hpp"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define DRING_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DRING_VECTOR_CLONES
#endif

namespace dring::kernels::cpu {

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
    float t = x[j] - m;
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
    const float value = p * two_n;
    x[j] = value;
    sum += value;
  }
  return sum;
}

DRING_VECTOR_CLONES
void scale(float* x, int64_t n, float c) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] *= c;
}

}  // namespace dring::kernels::cpu
