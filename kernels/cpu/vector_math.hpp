// vector_math.hpp — the element-wise loops of the CPU softmax, vectorised.
//
// Each function is compiled for AVX-512, AVX2 and baseline x86-64 (GCC target_clones) and the
// best one is picked when the program loads, so a binary built on one machine runs on any x86-64.
#pragma once

#include <cstdint>

namespace dring::kernels::cpu {

// max(m, x[0..n)).
float max_of(const float* x, int64_t n, float m);
// x[j] = 2^(x[j] - m) for j < n (exactly 0 where x[j] is -inf); returns the sum of the new x.
float exp2_shifted_sum(float* x, int64_t n, float m);
// x[j] *= c.
void scale(float* x, int64_t n, float c);

}  // namespace dring::kernels::cpu
