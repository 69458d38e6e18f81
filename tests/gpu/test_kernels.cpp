// test_kernels.cpp — the CUDA forward kernels and the element-wise and row operations of the CUDA
// backend against float64 references computed from the exact values on the device.
//
// Forward: blocks of odd sizes (1, primes, lengths that no tile divides), strided rows, causal,
// windowed and shifted masks (rows that see no key among them), GQA blocks, in two calls that merge into the same rows on top of a prior (out, lse) state, for
// every dtype and head dims 64, 128 and 33; both the generic and the tensor-core kernel. Rows no
// block touches must keep their state bit for bit.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "dring/runtime/cuda_backend.hpp"
#include "gpu_test_util.hpp"

namespace dring {
namespace {

using gpu_test::DeviceTensor;
using gpu_test::random_tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

// A block of the test: q rows q_row0 + n*q_step of head q_head against k/v rows k_row0 + n*k_step
// of kv head kv_head, under `mask`.
struct BlockSpec {
  int64_t q_row0, q_step, q_head, n_q;
  int64_t k_row0, k_step, kv_head, n_k;
  BlockMask mask;
};

// A mask over positions: queries at q_first + i*q_step, keys at k_first + j*k_step.
BlockMask band_mask(Band band, int64_t q_first, int64_t q_step, int64_t k_first, int64_t k_step) {
  return BlockMask{band, q_first, q_step, k_first, k_step};
}

// Two calls; within a call no two blocks share a (row, head).
const std::vector<std::vector<BlockSpec>>& calls() {
  const BlockMask none = BlockMask::none(), causal = BlockMask::causal();
  static const std::vector<std::vector<BlockSpec>> c = {
      {{0, 2, 0, 37, 1, 2, 0, 53, none},
       {1, 2, 1, 61, 1, 2, 1, 61, causal},
       {200, 1, 0, 1, 7, 1, 0, 1, none},
       {220, 1, 1, 13, 100, 1, 0, 130, none},
       {150, 1, 0, 50, 0, 1, 1, 200, causal},
       {0, 1, 2, 301, 0, 1, 1, 301, causal}},
      {{0, 2, 0, 37, 0, 1, 1, 67, band_mask(Band::of(true, 5), 0, 2, 0, 1)},  // causal window
       {0, 1, 2, 301, 100, 1, 0, 129, none},
       // A window around each query: the last rows see no key.
       {240, 1, 1, 61, 0, 1, 0, 200, band_mask(Band::of(false, 50), 240, 1, 0, 1)},
       // Shifted causal band (keys strictly before), different steps.
       {100, 3, 0, 17, 5, 2, 0, 90, band_mask(Band{1, Band::kUnbounded}, 100, 3, 5, 2)},
       // Every key after every query: no row sees anything and every row keeps its state.
       {122, 1, 1, 19, 0, 1, 1, 40, band_mask(Band::of(true, 0), 0, 1, 1000, 1)}},
  };
  return c;
}

struct ForwardResult {
  double out_err = 0.0;
  double lse_err = 0.0;
  int64_t untouched_changed = 0;
  std::string path;
};

int device_major() {
  int device = 0, major = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  return major;
}

ForwardResult run_forward(Backend& backend, DType dtype, int64_t d, bool allow_mma, uint64_t seed) {
  configure_cuda_backend(backend, CudaBackendOptions{allow_mma});
  const int64_t rows = 301, heads = 3, kv_rows = 307, kv_heads = 2;
  const DeviceTensor q = random_tensor(backend, rows * heads * d, dtype, seed);
  const DeviceTensor k = random_tensor(backend, kv_rows * kv_heads * d, dtype, seed + 1);
  const DeviceTensor v = random_tensor(backend, kv_rows * kv_heads * d, dtype, seed + 2);
  DeviceTensor out = random_tensor(backend, rows * heads * d, dtype, seed + 3, 1.0f, MemCategory::kOutputs);
  // Prior state: every other (row, head) holds (random out, random finite lse), the rest (0, -inf).
  std::vector<float> lse0(static_cast<size_t>(heads * rows));
  std::mt19937_64 gen(seed + 4);
  std::uniform_real_distribution<float> uniform(-1.0f, 3.0f);
  std::vector<float> out0 = out.host;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < rows; ++i) {
      if ((i + h) % 2 == 0) {
        lse0[h * rows + i] = uniform(gen);
      } else {
        lse0[h * rows + i] = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < d; ++c) out0[(i * heads + h) * d + c] = 0.0f;
      }
    }
  }
  backend.upload(out0.data(), out.device.data(), rows * heads * d, dtype);
  out0 = gpu_test::download(backend, out.device.data(), dtype, rows * heads * d);
  Buffer<float> lse(backend.allocator(), heads * rows, MemCategory::kOutputs);
  backend.upload(lse0.data(), lse.data(), heads * rows, DType::kF32);

  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = 0.9 / std::sqrt(static_cast<double>(d));
  // Reference: per (row, head), the prior's weight and every (score, value row) the blocks add.
  struct Row {
    std::vector<double> scores;
    std::vector<const float*> values;
  };
  std::vector<Row> ref(static_cast<size_t>(rows * heads));
  ForwardResult result;
  for (const auto& call : calls()) {
    std::vector<kernels::AttendBlock> blocks;
    for (const BlockSpec& s : call) {
      kernels::AttendBlock b;
      b.q = offset(q.device.data(), (s.q_row0 * heads + s.q_head) * d, dtype);
      b.q_stride = s.q_step * heads * d;
      b.out = offset(out.device.data(), (s.q_row0 * heads + s.q_head) * d, dtype);
      b.out_stride = b.q_stride;
      b.lse = lse.data() + s.q_head * rows + s.q_row0;
      b.lse_stride = s.q_step;
      b.k = offset(k.device.data(), (s.k_row0 * kv_heads + s.kv_head) * d, dtype);
      b.v = offset(v.device.data(), (s.k_row0 * kv_heads + s.kv_head) * d, dtype);
      b.kv_stride = s.k_step * kv_heads * d;
      b.n_q = s.n_q;
      b.n_k = s.n_k;
      b.mask = s.mask;
      blocks.push_back(b);
      for (int64_t n = 0; n < s.n_q; ++n) {
        const int64_t i = s.q_row0 + n * s.q_step;
        Row& row = ref[static_cast<size_t>(s.q_head * rows + i)];
        const float* qi = q.host.data() + (i * heads + s.q_head) * d;
        for (int64_t m = 0; m < s.n_k; ++m) {
          if (!s.mask.band.visible(s.mask.q_pos(n), s.mask.k_pos(m))) continue;
          const int64_t j = s.k_row0 + m * s.k_step;
          const float* kj = k.host.data() + (j * kv_heads + s.kv_head) * d;
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(qi[c]) * kj[c];
          row.scores.push_back(params.scale * dot);
          row.values.push_back(v.host.data() + (j * kv_heads + s.kv_head) * d);
        }
      }
    }
    backend.attend(blocks, params);
    result.path = last_attend_path(backend);
  }
  backend.synchronize();
  const std::vector<float> got = gpu_test::download(backend, out.device.data(), dtype, rows * heads * d);
  const std::vector<float> got_lse = gpu_test::download(backend, lse.data(), DType::kF32, heads * rows);

  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < rows; ++i) {
      const Row& row = ref[static_cast<size_t>(h * rows + i)];
      const float* o = got.data() + (i * heads + h) * d;
      const float* o0 = out0.data() + (i * heads + h) * d;
      const float l0 = lse0[h * rows + i], l = got_lse[h * rows + i];
      if (row.scores.empty()) {
        bool same = (l == l0) || (std::isinf(l) && std::isinf(l0));
        for (int64_t c = 0; c < d; ++c) same = same && o[c] == o0[c];
        result.untouched_changed += same ? 0 : 1;
        continue;
      }
      double mx = std::isinf(l0) ? -kInf : static_cast<double>(l0);
      for (double s : row.scores) mx = std::max(mx, s);
      double total = std::isinf(l0) ? 0.0 : std::exp(l0 - mx);
      double scale_v = 0.0;
      std::vector<double> want(static_cast<size_t>(d), 0.0);
      for (int64_t c = 0; c < d; ++c) {
        want[c] = total * o0[c];
        if (!std::isinf(l0)) scale_v = std::max(scale_v, std::abs(static_cast<double>(o0[c])));
      }
      for (size_t n = 0; n < row.scores.size(); ++n) {
        const double p = std::exp(row.scores[n] - mx);
        total += p;
        for (int64_t c = 0; c < d; ++c) {
          want[c] += p * row.values[n][c];
          scale_v = std::max(scale_v, std::abs(static_cast<double>(row.values[n][c])));
        }
      }
      const double want_lse = mx + std::log(total);
      result.lse_err = std::max(result.lse_err, std::abs(l - want_lse) / std::max(1.0, std::abs(want_lse)));
      for (int64_t c = 0; c < d; ++c) {
        const double err = std::abs(o[c] - want[c] / total) / std::max(scale_v, 1e-30);
        result.out_err = std::max(result.out_err, std::isnan(err) ? kInf : err);
      }
    }
  }
  return result;
}

class ForwardKernel : public testing::TestWithParam<std::tuple<DType, int64_t>> {};

TEST_P(ForwardKernel, MergesBlocksLikeFloat64) {
  DRING_REQUIRE_GPU();
  const auto [dtype, d] = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const ForwardResult simple = run_forward(*backend, dtype, d, false, 11);
  EXPECT_EQ(simple.path, "simple");
  EXPECT_EQ(simple.untouched_changed, 0);
  EXPECT_LT(simple.out_err, gpu_test::out_tolerance(dtype));
  EXPECT_LT(simple.lse_err, 5e-5);
  RecordProperty("simple_out_err", std::to_string(simple.out_err));

  const ForwardResult fast = run_forward(*backend, dtype, d, true, 11);
  const bool mma_expected = dtype != DType::kF32 && (d == 64 || d == 128) && device_major() >= 8;
  EXPECT_EQ(fast.path, mma_expected ? "mma" : "simple");
  EXPECT_EQ(fast.untouched_changed, 0);
  EXPECT_LT(fast.out_err, gpu_test::out_tolerance(dtype));
  EXPECT_LT(fast.lse_err, 5e-5);
  // flash-attention's rule: the fast path's error at most about twice the plain path's.
  EXPECT_LE(fast.out_err, 2.0 * simple.out_err + 2e-3) << "simple " << simple.out_err;
  RecordProperty("fast_out_err", std::to_string(fast.out_err));
  EXPECT_GT(tracker.stats().device().peak_bytes, 0);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndHeadDims, ForwardKernel,
                         testing::Combine(testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                                          testing::Values(int64_t{64}, int64_t{128}, int64_t{33})),
                         [](const auto& test_info) {
                           return std::string(dtype_name(std::get<0>(test_info.param))) + "_d" +
                                  std::to_string(std::get<1>(test_info.param));
                         });

class ElementWise : public testing::TestWithParam<DType> {};

TEST_P(ElementWise, UploadDownloadFillCastAreExact) {
  DRING_REQUIRE_GPU();
  const DType dtype = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const int64_t n = 100003;
  const DeviceTensor x = random_tensor(*backend, n, dtype, 5);
  const double ulp = dtype == DType::kF32 ? 0.0 : (dtype == DType::kF16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8));
  std::mt19937_64 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float want = normal(gen);  // the values random_tensor drew
    ASSERT_LE(std::abs(x.host[i] - want), ulp * std::abs(want) + 1e-7) << i;
  }
  // cast from fp32 device memory gives what upload gives.
  Buffer<float> f32(backend->allocator(), n, MemCategory::kWorkspace);
  std::vector<float> values(static_cast<size_t>(n));
  gen.seed(5);
  for (float& value : values) value = normal(gen);
  backend->upload(values.data(), f32.data(), n, DType::kF32);
  TensorBuffer y(backend->allocator(), n, dtype, MemCategory::kWorkspace);
  backend->cast(f32.data(), y.data(), n, dtype);
  EXPECT_EQ(gpu_test::download(*backend, y.data(), dtype, n), x.host);
  backend->fill(y.data(), n, dtype, 1.5f);
  for (float value : gpu_test::download(*backend, y.data(), dtype, n)) ASSERT_EQ(value, 1.5f);
}

TEST_P(ElementWise, CopyRowsAndAddRows) {
  DRING_REQUIRE_GPU();
  const DType dtype = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const int64_t d = 33, rows = 97;
  const DeviceTensor src = random_tensor(*backend, rows * 3 * d, dtype, 7);
  DeviceTensor dst = random_tensor(*backend, rows * 2 * d, dtype, 8);
  // Rows 0, 3, 6, .. of src (stride 3d) into dst rows 5, 7, 9, .. (stride 2d); and one single row.
  std::vector<RowRun> runs = {{src.device.data(), 3 * d, offset(dst.device.data(), 5 * d, dtype), 2 * d, 31},
                              {offset(src.device.data(), 2 * d, dtype), d, dst.device.data(), d, 1}};
  backend->copy_rows(runs, d, dtype);
  std::vector<float> want = dst.host;
  for (int64_t i = 0; i < 31; ++i) {
    for (int64_t c = 0; c < d; ++c) want[(5 + 2 * i) * d + c] = src.host[3 * i * d + c];
  }
  for (int64_t c = 0; c < d; ++c) want[c] = src.host[2 * d + c];
  EXPECT_EQ(gpu_test::download(*backend, dst.device.data(), dtype, rows * 2 * d), want);

  const DeviceTensor a = random_tensor(*backend, rows * d, DType::kF32, 9);
  DeviceTensor b = random_tensor(*backend, rows * 2 * d, DType::kF32, 10);
  std::vector<RowRun> adds = {{a.device.data(), d, offset(b.device.data(), d, DType::kF32), 2 * d, 47}};
  backend->add_rows(adds, d);
  std::vector<float> sum = b.host;
  for (int64_t i = 0; i < 47; ++i) {
    for (int64_t c = 0; c < d; ++c) sum[(1 + 2 * i) * d + c] += a.host[i * d + c];
  }
  EXPECT_EQ(gpu_test::download(*backend, b.device.data(), DType::kF32, rows * 2 * d), sum);
}

TEST_P(ElementWise, DeltaIsRowDotProduct) {
  DRING_REQUIRE_GPU();
  const DType dtype = GetParam();
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cuda_backend(tracker, 0);
  const int64_t batch = 2, rows = 37, heads = 3, d = 65;
  const DeviceTensor out = random_tensor(*backend, batch * rows * heads * d, dtype, 12);
  const DeviceTensor dout = random_tensor(*backend, batch * rows * heads * d, dtype, 13);
  Buffer<float> delta(backend->allocator(), batch * heads * rows, MemCategory::kWorkspace);
  backend->delta({dtype, batch, rows, heads, d, out.device.data(), dout.device.data(), delta.data()});
  const std::vector<float> got = gpu_test::download(*backend, delta.data(), DType::kF32, batch * heads * rows);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        double want = 0.0;
        for (int64_t c = 0; c < d; ++c) {
          const int64_t at = ((b * rows + i) * heads + h) * d + c;
          want += static_cast<double>(out.host[at]) * dout.host[at];
        }
        EXPECT_NEAR(got[(b * heads + h) * rows + i], want, 1e-5 * std::max(1.0, std::abs(want)));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ElementWise, testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& test_info) { return std::string(dtype_name(test_info.param)); });

}  // namespace
}  // namespace dring
