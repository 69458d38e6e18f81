// gpu_test_util.hpp — helpers of the GPU suites: the collective skip, device tensors with their
// exact host values, and tolerances by storage dtype.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "dring/runtime/backend.hpp"

namespace dring::gpu_test {

// Whether every rank sees a GPU; decided once, collectively, in gpu_main.cpp.
bool available();

#define DRING_REQUIRE_GPU()                                                                        \
  do {                                                                                             \
    if (!::dring::gpu_test::available()) GTEST_SKIP() << "no GPU on some rank (decided collectively)"; \
  } while (0)

// A tensor in device memory, and on the host the exact values it holds (the random fp32 values
// rounded through the storage dtype), so a float64 reference sees exactly what the kernels see.
struct DeviceTensor {
  TensorBuffer device;
  std::vector<float> host;
};

inline std::vector<float> download(Backend& backend, const void* data, DType dtype, int64_t count) {
  std::vector<float> host(static_cast<size_t>(count));
  if (count > 0) backend.download(data, dtype, host.data(), count);
  return host;
}

inline DeviceTensor random_tensor(Backend& backend, int64_t count, DType dtype, uint64_t seed, float stddev = 1.0f,
                                  MemCategory category = MemCategory::kInputs) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& x : values) x = normal(gen);
  DeviceTensor t{TensorBuffer(backend.allocator(), count, dtype, category), {}};
  backend.upload(values.data(), t.device.data(), count, dtype);
  t.host = download(backend, t.device.data(), dtype, count);
  return t;
}

// Error bounds of an output element relative to the natural scale of the result (max |v|), by
// storage dtype: fp32 arithmetic, and one or two roundings to fp16 / bf16.
inline double out_tolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 2e-5;
    case DType::kF16: return 4e-3;
    case DType::kBF16: return 2e-2;
    case DType::kF64: return 1e-12;
  }
  return 2e-5;
}

inline const char* dtype_label(DType dtype) { return dtype_name(dtype); }

}  // namespace dring::gpu_test
