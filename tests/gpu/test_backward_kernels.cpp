// test_backward_kernels.cpp — the CUDA backward kernels against the float64 formula, for every dtype
// and head dims 64, 128 and 33: blocks with several query heads (GQA), strided rows, causal,
// windowed and shifted masks (rows that see no key, with lse = -inf, among them), odd sizes; dq, dk,
// dv accumulate (+=) into prior fp32 values.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "dring/runtime/cuda_backend.hpp"
#include "gpu_test_util.hpp"

namespace dring {
namespace {

using gpu_test::DeviceTensor;
using gpu_test::random_tensor;

struct GradSpec {
  int64_t q_row0, q_step, first_head, head_step, n_heads, n_q;
  int64_t k_row0, k_step, kv_head, n_k;
  BlockMask mask;
};

bool visible(const GradSpec& s, int64_t a, int64_t m) { return s.mask.band.visible(s.mask.q_pos(a), s.mask.k_pos(m)); }

class BackwardKernel : public testing::TestWithParam<std::tuple<DType, int64_t>> {};

TEST_P(BackwardKernel, MatchesFloat64Gradients) {
  DRING_REQUIRE_GPU();
  const auto [dtype, d] = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const int64_t rows = 211, heads = 3, kv_rows = 260, kv_heads = 2;
  const DeviceTensor q = random_tensor(*backend, rows * heads * d, dtype, 21);
  const DeviceTensor dout = random_tensor(*backend, rows * heads * d, dtype, 22);
  const DeviceTensor k = random_tensor(*backend, kv_rows * kv_heads * d, dtype, 23);
  const DeviceTensor v = random_tensor(*backend, kv_rows * kv_heads * d, dtype, 24);
  DeviceTensor dq = random_tensor(*backend, rows * heads * d, DType::kF32, 25);
  DeviceTensor dk = random_tensor(*backend, kv_rows * kv_heads * d, DType::kF32, 26);
  DeviceTensor dv = random_tensor(*backend, kv_rows * kv_heads * d, DType::kF32, 27);
  const DeviceTensor delta = random_tensor(*backend, heads * rows, DType::kF32, 28, 0.5f);
  // Blocks own disjoint dq rows and disjoint dk/dv rows.
  const BlockMask none = BlockMask::none();
  const std::vector<GradSpec> specs = {
      {0, 2, 0, 2, 2, 37, 0, 3, 0, 41, none},               // query heads 0 and 2, kv head 0
      {0, 1, 1, 1, 1, 70, 0, 1, 1, 70, BlockMask::causal()},  // head 1 causal, kv head 1 rows 0..69
      {200, 1, 1, 1, 1, 1, 250, 1, 1, 1, none},               // one row, one key
      {120, 1, 1, 1, 1, 67, 100, 1, 1, 131, none},
      // A window of 20 around each query (positions = rows), kv head 0 rows 130..259.
      {100, 1, 0, 1, 1, 100, 130, 1, 0, 130, BlockMask{Band::of(false, 20), 100, 1, 130, 1}},
      // The 8 keys strictly before each query; rows past key 38 see none (lse = -inf).
      {100, 1, 2, 1, 1, 61, 70, 1, 1, 30, BlockMask{Band{1, 8}, 70, 1, 70, 1}},
  };
  const double scale = 1.1 / std::sqrt(static_cast<double>(d));
  // lse of each (row, head) the blocks read: the row's own log-sum-exp over its keys in its block,
  // plus a small offset (any value defines the same formula; this keeps p in a sane range).
  std::vector<float> lse(static_cast<size_t>(heads * rows), 0.0f);
  auto score = [&](int64_t i, int64_t h, int64_t j, int64_t g) {
    double dot = 0.0;
    for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(q.host[(i * heads + h) * d + c]) * k.host[(j * kv_heads + g) * d + c];
    return scale * dot;
  };
  for (const GradSpec& s : specs) {
    for (int64_t n = 0; n < s.n_heads; ++n) {
      const int64_t h = s.first_head + n * s.head_step;
      for (int64_t a = 0; a < s.n_q; ++a) {
        const int64_t i = s.q_row0 + a * s.q_step;
        double mx = -1e300, sum = 0.0;
        for (int64_t m = 0; m < s.n_k; ++m) {
          if (visible(s, a, m)) mx = std::max(mx, score(i, h, s.k_row0 + m * s.k_step, s.kv_head));
        }
        for (int64_t m = 0; m < s.n_k; ++m) {
          if (visible(s, a, m)) sum += std::exp(score(i, h, s.k_row0 + m * s.k_step, s.kv_head) - mx);
        }
        // -inf for a row that sees no key: the kernels must never put it in an exponent.
        lse[h * rows + i] = sum > 0 ? static_cast<float>(mx + std::log(sum) + 0.25) : -INFINITY;
      }
    }
  }
  Buffer<float> lse_dev(backend->allocator(), heads * rows, MemCategory::kWorkspace);
  backend->upload(lse.data(), lse_dev.data(), heads * rows, DType::kF32);

  std::vector<double> want_dq(dq.host.begin(), dq.host.end()), want_dk(dk.host.begin(), dk.host.end()),
      want_dv(dv.host.begin(), dv.host.end());
  std::vector<kernels::GradBlock> blocks;
  for (const GradSpec& s : specs) {
    kernels::GradBlock b;
    const int64_t at = (s.q_row0 * heads + s.first_head) * d;
    b.q = offset(q.device.data(), at, dtype);
    b.dout = offset(dout.device.data(), at, dtype);
    b.dq = static_cast<float*>(dq.device.data()) + at;
    b.q_stride = s.q_step * heads * d;
    b.q_head_step = s.head_step * d;
    b.lse = lse_dev.data() + s.first_head * rows + s.q_row0;
    b.delta = static_cast<const float*>(delta.device.data()) + s.first_head * rows + s.q_row0;
    b.state_stride = s.q_step;
    b.state_head_step = s.head_step * rows;
    b.n_heads = s.n_heads;
    b.n_q = s.n_q;
    const int64_t kv_at = (s.k_row0 * kv_heads + s.kv_head) * d;
    b.k = offset(k.device.data(), kv_at, dtype);
    b.v = offset(v.device.data(), kv_at, dtype);
    b.kv_stride = s.k_step * kv_heads * d;
    b.dk = static_cast<float*>(dk.device.data()) + kv_at;
    b.dv = static_cast<float*>(dv.device.data()) + kv_at;
    b.dkv_stride = b.kv_stride;
    b.n_k = s.n_k;
    b.mask = s.mask;
    blocks.push_back(b);
    for (int64_t n = 0; n < s.n_heads; ++n) {
      const int64_t h = s.first_head + n * s.head_step;
      for (int64_t a = 0; a < s.n_q; ++a) {
        const int64_t i = s.q_row0 + a * s.q_step;
        for (int64_t m = 0; m < s.n_k; ++m) {
          if (!visible(s, a, m)) continue;
          const int64_t j = s.k_row0 + m * s.k_step;
          const double p = std::exp(score(i, h, j, s.kv_head) - lse[h * rows + i]);
          double dp = 0.0;
          for (int64_t c = 0; c < d; ++c) {
            dp += static_cast<double>(dout.host[(i * heads + h) * d + c]) * v.host[(j * kv_heads + s.kv_head) * d + c];
          }
          const double ds = p * (dp - delta.host[h * rows + i]);
          for (int64_t c = 0; c < d; ++c) {
            want_dq[(i * heads + h) * d + c] += scale * ds * k.host[(j * kv_heads + s.kv_head) * d + c];
            want_dk[(j * kv_heads + s.kv_head) * d + c] += scale * ds * q.host[(i * heads + h) * d + c];
            want_dv[(j * kv_heads + s.kv_head) * d + c] += p * dout.host[(i * heads + h) * d + c];
          }
        }
      }
    }
  }
  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = scale;
  backend->attend_backward(blocks, params);
  backend->synchronize();
  auto check = [&](const DeviceTensor& got_t, const std::vector<double>& want, const char* name) {
    const std::vector<float> got = gpu_test::download(*backend, got_t.device.data(), DType::kF32,
                                                      static_cast<int64_t>(want.size()));
    double largest = 0.0, err = 0.0;
    for (double x : want) largest = std::max(largest, std::abs(x));
    for (size_t n = 0; n < want.size(); ++n) err = std::max(err, std::abs(got[n] - want[n]));
    EXPECT_LT(err / largest, 1e-5) << name;
    EXPECT_FALSE(std::isnan(err)) << name;
  };
  check(dq, want_dq, "dq");
  check(dk, want_dk, "dk");
  check(dv, want_dv, "dv");
}

INSTANTIATE_TEST_SUITE_P(DtypesAndHeadDims, BackwardKernel,
                         testing::Combine(testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                                          testing::Values(int64_t{64}, int64_t{128}, int64_t{33})),
                         [](const auto& test_info) {
                           return std::string(dtype_name(std::get<0>(test_info.param))) + "_d" +
                                  std::to_string(std::get<1>(test_info.param));
                         });

}  // namespace
}  // namespace dring
