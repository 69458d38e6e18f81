// test_baseline.cpp — the cuBLAS standard-attention baseline against float64, dense and causal, with
// GQA, odd lengths (1, 37, 130) and head dims 64 and 33, for every dtype; and the tensor-core or
// generic forward kernel against the baseline on the same data (the second oracle).
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "dring/runtime/cuda_backend.hpp"
#include "dring/kernels/cuda.hpp"
#include "gpu_test_util.hpp"

namespace dring {
namespace {

using gpu_test::DeviceTensor;
using gpu_test::random_tensor;

class CublasHandle {
 public:
  CublasHandle() { DRING_CUBLAS_CHECK(cublasCreate(&handle_)); }
  ~CublasHandle() { cublasDestroy(handle_); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

class Baseline : public testing::TestWithParam<std::tuple<DType, int64_t, int64_t, bool>> {};

TEST_P(Baseline, MatchesFloat64AndTheKernels) {
  DRING_REQUIRE_GPU();
  const auto [dtype, seq, d, causal] = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const int64_t batch = 2, heads = 4, kv_heads = 2, group = heads / kv_heads;
  const DeviceTensor q = random_tensor(*backend, batch * seq * heads * d, dtype, 31);
  const DeviceTensor k = random_tensor(*backend, batch * seq * kv_heads * d, dtype, 32);
  const DeviceTensor v = random_tensor(*backend, batch * seq * kv_heads * d, dtype, 33);
  TensorBuffer out(backend->allocator(), batch * seq * heads * d, dtype, MemCategory::kOutputs);
  Buffer<float> lse(backend->allocator(), batch * heads * seq, MemCategory::kOutputs);
  kernels::cuda::StandardAttention p;
  p.dtype = dtype;
  p.batch = batch;
  p.seq = seq;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.causal = causal;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  p.q = q.device.data();
  p.k = k.device.data();
  p.v = v.device.data();
  p.out = out.data();
  p.lse = lse.data();
  Buffer<std::byte> workspace(backend->allocator(), kernels::cuda::standard_attention_workspace_bytes(p),
                              MemCategory::kWorkspace);
  CublasHandle handle;
  kernels::cuda::standard_attention(p, workspace.data(), handle.get(), static_cast<cudaStream_t>(cuda_stream_of(*backend)));
  const std::vector<float> got = gpu_test::download(*backend, out.data(), dtype, out.size());
  const std::vector<float> got_lse = gpu_test::download(*backend, lse.data(), DType::kF32, lse.size());

  // The same function through the attend kernels: one block per (batch, head), state (0, -inf).
  TensorBuffer out2(backend->allocator(), out.size(), dtype, MemCategory::kOutputs);
  Buffer<float> lse2(backend->allocator(), lse.size(), MemCategory::kOutputs);
  backend->fill(out2.data(), out2.size(), dtype, 0.0f);
  backend->fill(lse2.data(), lse2.size(), DType::kF32, -INFINITY);
  std::vector<kernels::AttendBlock> blocks;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      kernels::AttendBlock blk;
      blk.q = offset(q.device.data(), (b * seq * heads + h) * d, dtype);
      blk.q_stride = heads * d;
      blk.out = offset(out2.data(), (b * seq * heads + h) * d, dtype);
      blk.out_stride = heads * d;
      blk.k = offset(k.device.data(), (b * seq * kv_heads + h / group) * d, dtype);
      blk.v = offset(v.device.data(), (b * seq * kv_heads + h / group) * d, dtype);
      blk.kv_stride = kv_heads * d;
      blk.lse = lse2.data() + (b * heads + h) * seq;
      blk.lse_stride = 1;
      blk.n_q = blk.n_k = seq;
      blk.mask = causal ? dring::BlockMask::causal() : dring::BlockMask::none();
      blocks.push_back(blk);
    }
  }
  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = p.scale;
  backend->attend(blocks, params);
  const std::vector<float> got2 = gpu_test::download(*backend, out2.data(), dtype, out2.size());

  double err = 0.0, err_lse = 0.0, err_kernels = 0.0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < seq; ++i) {
        const int64_t keys = causal ? i + 1 : seq;
        std::vector<double> s(static_cast<size_t>(keys));
        double mx = -1e300, scale_v = 0.0;
        for (int64_t j = 0; j < keys; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) {
            dot += static_cast<double>(q.host[((b * seq + i) * heads + h) * d + c]) *
                   k.host[((b * seq + j) * kv_heads + g) * d + c];
          }
          s[j] = p.scale * dot;
          mx = std::max(mx, s[j]);
        }
        double total = 0.0;
        std::vector<double> want(static_cast<size_t>(d), 0.0);
        for (int64_t j = 0; j < keys; ++j) {
          const double e = std::exp(s[j] - mx);
          total += e;
          for (int64_t c = 0; c < d; ++c) {
            const double x = v.host[((b * seq + j) * kv_heads + g) * d + c];
            want[c] += e * x;
            scale_v = std::max(scale_v, std::abs(x));
          }
        }
        err_lse = std::max(err_lse, std::abs(got_lse[(b * heads + h) * seq + i] - (mx + std::log(total))));
        for (int64_t c = 0; c < d; ++c) {
          const int64_t at = ((b * seq + i) * heads + h) * d + c;
          err = std::max(err, std::abs(got[at] - want[c] / total) / scale_v);
          err_kernels = std::max(err_kernels, std::abs(static_cast<double>(got2[at]) - got[at]) / scale_v);
        }
      }
    }
  }
  EXPECT_LT(err, gpu_test::out_tolerance(dtype));
  EXPECT_LT(err_lse, 5e-5);
  EXPECT_LT(err_kernels, 2 * gpu_test::out_tolerance(dtype));
  EXPECT_FALSE(std::isnan(err) || std::isnan(err_kernels));
}

INSTANTIATE_TEST_SUITE_P(Shapes, Baseline,
                         testing::Combine(testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                                          testing::Values(int64_t{1}, int64_t{37}, int64_t{130}),
                                          testing::Values(int64_t{64}, int64_t{33}), testing::Bool()),
                         [](const auto& test_info) {
                           return std::string(dtype_name(std::get<0>(test_info.param))) + "_s" +
                                  std::to_string(std::get<1>(test_info.param)) + "_d" +
                                  std::to_string(std::get<2>(test_info.param)) + (std::get<3>(test_info.param) ? "_causal" : "");
                         });

}  // namespace
}  // namespace dring
