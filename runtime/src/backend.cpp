// backend.cpp — the host views of a TensorBuffer.
#include "dring/runtime/backend.hpp"
#include "dring/core/error.hpp"

namespace dring {

float* TensorBuffer::f32() {
  DRING_ASSERT(dtype_ == DType::kF32 && storage_.space() == MemSpace::kHost);
  return reinterpret_cast<float*>(storage_.data());
}

const float* TensorBuffer::f32() const {
  DRING_ASSERT(dtype_ == DType::kF32 && storage_.space() == MemSpace::kHost);
  return reinterpret_cast<const float*>(storage_.data());
}

}  // namespace dring
