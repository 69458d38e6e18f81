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
// p[j] = bf16(2^(alpha * x[j] - m)) for j < n, rounded to nearest even (exactly 0 where x[j] is
// -inf; alpha > 0, alpha * x[j] <= m); returns the sum of the unrounded fp32 values.
float exp2_scaled_to_bf16(const float* x, int64_t n, float alpha, float m, uint16_t* p);
// One query row of the backward in one pass: p_j = 2^(alpha * s[j] - m) and
// ds_j = p_j * (dp[j] - delta) * c for j < n, written rounded to bf16 (nearest even) to p16 and
// ds16 (alpha > 0, alpha * s[j] <= m up to rounding).
void softmax_grad_to_bf16(const float* s, const float* dp, int64_t n, float alpha, float m, float delta, float c,
                          uint16_t* p16, uint16_t* ds16);
// x[j] *= c.
void scale(float* x, int64_t n, float c);
// x[j] += y[j].
void add(float* x, const float* y, int64_t n);

// One query row against n keys, the whole online-softmax update in one call (the direct path of
// small blocks, where per-call overhead is what costs): s_j = alpha * q.k_j, m' = max(m, s_j),
// acc = acc*2^(m-m') + sum_j 2^(s_j-m') v_j, l = l*2^(m-m') + sum_j 2^(s_j-m'), m = m'.
// k_j = k + j*k_stride and v_j = v + j*v_stride hold d floats; `scores` holds n floats of scratch.
// m in log2 units; a row with m = -inf and no keys stays untouched.
void attend_row(const float* q, const float* k, int64_t k_stride, const float* v, int64_t v_stride, int64_t n,
                int64_t d, float alpha, float* scores, float* m, float* l, float* acc);

}  // namespace dring::kernels::cpu
