// f32_rows.hpp — the storage dtypes of the CPU kernels seen as fp32 rows.
//
// The kernels are templates over the element type T of q, k, v, out, dout: float (fp32 storage)
// or uint16_t (bf16 storage, each element its bit pattern). Their arithmetic is fp32 throughout;
// these helpers give them fp32 rows to work on: fp32 rows are used where they lie, bf16 rows are
// widened into the thread's scratch (packed, row stride d), and rows written there are rounded
// back to bf16 by store_rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dring/core/dtype.hpp"
#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"

namespace dring::kernels::cpu {

template <class T>
constexpr bool kIsBf16 = std::is_same_v<std::remove_const_t<T>, uint16_t>;

// One element as fp32 (the direct paths' scalar loops).
inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t x) {
  const uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// `n` rows of d elements (row stride `stride`) as fp32 rows, their stride in *ld. fp32 rows are
// returned in place, or copied packed to `space` when `pack` is set and they are strided; bf16
// rows are always widened into `space`, packed (space holds n*d floats).
template <class T>
  requires std::is_same_v<std::remove_const_t<T>, float>
T* f32_rows(T* x, int64_t stride, int64_t n, int64_t d, float* space, bool pack, int64_t* ld) {
  *ld = stride;
  if (!pack || stride == d) return x;
  for (int64_t i = 0; i < n; ++i) std::copy(x + i * stride, x + i * stride + d, space + i * d);
  *ld = d;
  return space;
}
inline float* f32_rows(const uint16_t* x, int64_t stride, int64_t n, int64_t d, float* space, bool /*pack*/,
                       int64_t* ld) {
  for (int64_t i = 0; i < n; ++i) bf16_to_f32(x + i * stride, space + i * d, d);
  *ld = d;
  return space;
}

// The inverse: n fp32 rows at src (stride ld) into the tensor's rows (stride `stride`); nothing
// to do when src is the tensor itself.
inline void store_rows(const float* src, int64_t ld, float* dst, int64_t stride, int64_t n, int64_t d) {
  if (src == dst) return;
  for (int64_t i = 0; i < n; ++i) std::copy(src + i * ld, src + i * ld + d, dst + i * stride);
}
inline void store_rows(const float* src, int64_t ld, uint16_t* dst, int64_t stride, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n; ++i) f32_to_bf16(src + i * ld, dst + i * stride, d);
}

// Runs f(T{}) with T the element type of `dtype`: fp32 and bf16; Error kUnsupported otherwise.
template <class F>
void dispatch_storage(DType dtype, F&& f) {
  DRING_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, Status::kUnsupported,
              "the cpu kernels take fp32 or bf16 tensors (got " << dtype_name(dtype) << ")");
  if (dtype == DType::kBF16) {
    f(uint16_t{});
  } else {
    f(float{});
  }
}

}  // namespace dring::kernels::cpu
