// dring/core/dtype.hpp — the one element-type enum of dring: storage types of tensors (q, k, v,
// out, dout, dq, dk, dv are stored in the run's dtype; lse, the backward's delta and gradient
// accumulators are always float32) and the element types transports move (float64 too, for
// checks and reductions). The values of the storage types match the C ABI's dring_dtype.
#pragma once

#include <cstdint>
#include <string>

namespace dring {

enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };

inline constexpr int64_t dtype_bytes(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kF64: return 8;
  }
  return 0;
}
const char* dtype_name(DType t);
// A storage dtype by name: "fp32", "fp16", "bf16"; throws Error(kInvalidArgument) otherwise.
DType parse_dtype(const std::string& name);

// The DType of a C++ element type, for typed spans.
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::kF32; }
template <>
constexpr DType dtype_of<double>() { return DType::kF64; }

// Pointer arithmetic in elements of a dtype, on untyped tensor pointers. A null pointer stays null
// (arithmetic on it would be undefined): the executor enumerates blocks without their payload to
// count work.
inline const void* offset(const void* p, int64_t elements, DType t) {
  return p == nullptr ? nullptr : static_cast<const char*>(p) + elements * dtype_bytes(t);
}
inline void* offset(void* p, int64_t elements, DType t) {
  return p == nullptr ? nullptr : static_cast<char*>(p) + elements * dtype_bytes(t);
}

}  // namespace dring
