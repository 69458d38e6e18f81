// test_row_ops.cpp — each backend's data movement (runtime/internal/dring/runtime/backend.hpp)
// against a plain host loop: upload/download, fill, cast, copy_rows and add_rows over several
// RowRuns (odd head dims, strides wider than a row, a run of one row, an empty run, more runs
// than one launch takes), and delta. On every storage dtype the backend takes: fp32 on the CPU;
// fp32, fp16, bf16 on CUDA where every rank sees a GPU (each rank tests its own backend).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "dring/core/error.hpp"
#include "dring/runtime/backend.hpp"
#include "gpu_test_util.hpp"
#include "ring_harness.hpp"
#include "test_util.hpp"
#if DRING_HAVE_CUDA
#include "dring/runtime/cuda_backend.hpp"
#endif

namespace dring::ring_test {
namespace {

struct RowOpsCase {
  Device device = Device::kCpu;
  DType dtype = DType::kF32;
};

std::vector<RowOpsCase> row_ops_cases(Device device) {
  std::vector<RowOpsCase> cases;
  if (backend_cases(device).empty()) return cases;
  for (DType dtype : device_dtypes(device)) cases.push_back({device, dtype});
  return cases;
}

void PrintTo(const RowOpsCase& c, std::ostream* os) {
  *os << (c.device == Device::kCpu ? "cpu " : "cuda ") << dtype_name(c.dtype);
}

std::string row_ops_name(const testing::TestParamInfo<RowOpsCase>& info) { return dtype_name(info.param.dtype); }

// Half a unit in the last place, relative: the most one rounding to the dtype may change a value.
double half_ulp(DType dtype) {
  switch (dtype) {
    case DType::kF16: return 1.0 / 2048;
    case DType::kBF16: return 1.0 / 256;
    default: return 0.0;
  }
}

class RowOps : public testing::TestWithParam<RowOpsCase> {
 public:
  void SetUp() override {
    if (GetParam().device == Device::kCpu) {
      backend_ = make_cpu_backend(tracker_, 2);
      return;
    }
    DRING_REQUIRE_BACKEND((BackendCase{Device::kCuda, Link::kMpi}));
#if DRING_HAVE_CUDA
    backend_ = make_cuda_backend(tracker_, 0);
#endif
    ASSERT_NE(backend_, nullptr);
  }
  DType dtype() const { return GetParam().dtype; }
  Backend& backend() { return *backend_; }
  std::vector<float> get(const TensorBuffer& t) { return gpu_test::download(*backend_, t.data(), t.dtype(), t.size()); }
  gpu_test::DeviceTensor random(int64_t count, DType dtype, uint64_t seed) {
    return gpu_test::random_tensor(*backend_, count, dtype, seed);
  }

 private:
  MemoryTracker tracker_;
  std::unique_ptr<Backend> backend_;
};

TEST_P(RowOps, UploadRoundsOnceAndDownloadIsExact) {
  for (int64_t count : {int64_t{1}, int64_t{37}, int64_t{4099}}) {
    const std::vector<float> x = gpu_test::random_tensor(backend(), count, DType::kF32, 11).host;
    TensorBuffer t(backend().allocator(), count, dtype(), MemCategory::kInputs);
    backend().upload(x.data(), t.data(), count, dtype());
    const std::vector<float> y = get(t);
    for (int64_t n = 0; n < count; ++n) {
      const double bound = half_ulp(dtype()) * std::abs(x[n]) + (dtype() == DType::kF16 ? 0x1p-25 : 0.0);
      ASSERT_LE(std::abs(static_cast<double>(y[n]) - x[n]), bound) << "element " << n << " of " << count;
    }
    // Values of the dtype survive a round trip unchanged.
    backend().upload(y.data(), t.data(), count, dtype());
    EXPECT_EQ(get(t), y);
  }
}

TEST_P(RowOps, FillWritesExactlyItsRange) {
  for (int64_t count : {int64_t{1}, int64_t{37}, int64_t{4099}}) {
    const std::vector<float> before(static_cast<size_t>(count + 2), 7.0f);
    TensorBuffer t(backend().allocator(), count + 2, dtype(), MemCategory::kWorkspace);
    backend().upload(before.data(), t.data(), count + 2, dtype());
    backend().fill(offset(t.data(), 1, dtype()), count, dtype(), -1.5f);
    std::vector<float> want(static_cast<size_t>(count + 2), -1.5f);
    want.front() = want.back() = 7.0f;
    EXPECT_EQ(get(t), want) << count;
  }
}

TEST_P(RowOps, CastEqualsUpload) {
  const int64_t count = 1031;
  const std::vector<float> x = test::random_tensor(count, 12);
  TensorBuffer src(backend().allocator(), count, DType::kF32, MemCategory::kWorkspace);
  TensorBuffer via_upload(backend().allocator(), count, dtype(), MemCategory::kWorkspace);
  TensorBuffer via_cast(backend().allocator(), count, dtype(), MemCategory::kWorkspace);
  backend().upload(x.data(), src.data(), count, DType::kF32);
  backend().upload(x.data(), via_upload.data(), count, dtype());
  backend().cast(static_cast<const float*>(src.data()), via_cast.data(), count, dtype());
  EXPECT_EQ(get(via_cast), get(via_upload));
}

// Runs over a source of src_rows rows of width src_width and a destination of dst_rows rows of
// width dst_width (elements); no two runs share a destination row.
struct RunSpec {
  int64_t src_row, src_col, src_step;  // first row, first element within it, rows between rows
  int64_t dst_row, dst_col, dst_step;
  int64_t rows;
};

std::vector<RowRun> make_runs(const std::vector<RunSpec>& specs, const void* src, int64_t src_width, void* dst,
                              int64_t dst_width, DType dtype) {
  std::vector<RowRun> runs;
  for (const RunSpec& s : specs) {
    RowRun run;
    run.src = offset(src, s.src_row * src_width + s.src_col, dtype);
    run.src_stride = s.src_step * src_width;
    run.dst = offset(dst, s.dst_row * dst_width + s.dst_col, dtype);
    run.dst_stride = s.dst_step * dst_width;
    run.rows = s.rows;
    runs.push_back(run);
  }
  return runs;
}

// What copy_rows (add = false) or add_rows (add = true) must leave in `dst`: a plain loop.
void apply_runs(const std::vector<RunSpec>& specs, const std::vector<float>& src, int64_t src_width,
                std::vector<float>& dst, int64_t dst_width, int64_t d, bool add) {
  for (const RunSpec& s : specs) {
    for (int64_t i = 0; i < s.rows; ++i) {
      for (int64_t c = 0; c < d; ++c) {
        const float x = src[(s.src_row + i * s.src_step) * src_width + s.src_col + c];
        float& y = dst[(s.dst_row + i * s.dst_step) * dst_width + s.dst_col + c];
        y = add ? y + x : x;
      }
    }
  }
}

// 13 rows (a prime) every third source row, one row, an empty run, then 7 rows into every other
// destination row; destinations 0..12, 13, 20..32.
std::vector<RunSpec> mixed_runs() {
  return {{2, 1, 3, 0, 0, 1, 13}, {0, 0, 1, 13, 1, 1, 1}, {4, 0, 1, 14, 0, 1, 0}, {5, 2, 2, 20, 2, 2, 7}};
}

// For d = 64: 16-byte aligned runs (columns 0, 8, 16) and one that is not (column 3), of 1 to 37
// rows, so that CTAs of 32 rows span several runs of both kinds.
std::vector<RunSpec> aligned_runs() {
  return {{0, 0, 1, 0, 0, 1, 37}, {40, 8, 2, 37, 16, 1, 5}, {3, 3, 3, 42, 3, 1, 9}, {60, 16, 1, 51, 8, 2, 1}};
}

// One row per run, more runs than one launch of the CUDA backend takes (about 43,000).
std::vector<RunSpec> many_runs(int64_t n) {
  std::vector<RunSpec> specs;
  for (int64_t r = 0; r < n; ++r) specs.push_back({(r * 7) % n, 0, 1, r, 0, 1, 1});
  return specs;
}

// Row widths 2d + 5 and d + 3 (elements) leave no row 16-byte aligned: the CUDA kernels' element
// path. aligned_runs() uses widths 2d and d + 16 with d = 64, where runs starting at a column that
// is a multiple of 8 move as 16-byte vectors and the others (column 3) do not, in one launch.
void check_rows(RowOps& t, Backend& backend, DType dtype, bool add, const std::vector<RunSpec>& specs,
                int64_t src_rows, int64_t dst_rows, int64_t d, bool aligned = false) {
  const int64_t src_width = aligned ? 2 * d : 2 * d + 5, dst_width = aligned ? d + 16 : d + 3;
  const gpu_test::DeviceTensor src = t.random(src_rows * src_width, dtype, 21);
  gpu_test::DeviceTensor dst = t.random(dst_rows * dst_width, dtype, 22);
  const std::vector<RowRun> runs = make_runs(specs, src.device.data(), src_width, dst.device.data(), dst_width, dtype);
  add ? backend.add_rows(runs, d) : backend.copy_rows(runs, d, dtype);
  std::vector<float> want = dst.host;
  apply_runs(specs, src.host, src_width, want, dst_width, d, add);
  const std::vector<float> got = t.get(dst.device);
  ASSERT_EQ(got.size(), want.size());
  for (size_t n = 0; n < want.size(); ++n) {
    // copy: the bits move; add: one fp32 addition each (exact up to rounding mode)
    if (add) {
      ASSERT_FLOAT_EQ(got[n], want[n]) << "element " << n << " d " << d;
    } else {
      ASSERT_EQ(got[n], want[n]) << "element " << n << " d " << d;
    }
  }
}

TEST_P(RowOps, CopyRowsMovesStridedRuns) {
  for (int64_t d : {int64_t{1}, int64_t{7}, int64_t{33}}) {
    SCOPED_TRACE(testing::Message() << "d " << d);
    check_rows(*this, backend(), dtype(), false, mixed_runs(), 41, 34, d);
  }
  check_rows(*this, backend(), dtype(), false, aligned_runs(), 70, 60, 64, true);
  check_rows(*this, backend(), dtype(), false, many_runs(50021), 50021, 50021, 3);
}

TEST_P(RowOps, AddRowsAddsStridedRuns) {
  if (dtype() != DType::kF32) GTEST_SKIP() << "add_rows adds fp32 gradient accumulators only";
  for (int64_t d : {int64_t{1}, int64_t{7}, int64_t{33}}) {
    SCOPED_TRACE(testing::Message() << "d " << d);
    check_rows(*this, backend(), dtype(), true, mixed_runs(), 41, 34, d);
  }
  check_rows(*this, backend(), dtype(), true, aligned_runs(), 70, 60, 64, true);
  check_rows(*this, backend(), dtype(), true, many_runs(50021), 50021, 50021, 3);
}

TEST_P(RowOps, DeltaIsRowDotOfOutAndDout) {
  for (int64_t d : {int64_t{1}, int64_t{33}}) {
    const int64_t batch = 2, rows = 37, heads = 3, count = batch * rows * heads * d;
    const gpu_test::DeviceTensor out = random(count, dtype(), 31);
    const gpu_test::DeviceTensor dout = random(count, dtype(), 32);
    TensorBuffer delta(backend().allocator(), batch * heads * rows, DType::kF32, MemCategory::kWorkspace);
    kernels::DeltaParams params;
    params.dtype = dtype();
    params.batch = batch;
    params.rows = rows;
    params.heads = heads;
    params.head_dim = d;
    params.out = out.device.data();
    params.dout = dout.device.data();
    params.delta = static_cast<float*>(delta.data());
    backend().delta(params);
    const std::vector<float> got = get(delta);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < rows; ++i) {
          double want = 0.0, magnitude = 0.0;
          for (int64_t c = 0; c < d; ++c) {
            const int64_t at = ((b * rows + i) * heads + h) * d + c;
            want += static_cast<double>(out.host[at]) * dout.host[at];
            magnitude += std::abs(static_cast<double>(out.host[at]) * dout.host[at]);
          }
          const float x = got[(b * heads + h) * rows + i];
          // an fp32 dot product of d terms: within (d + 1) units of 2^-23 of the sum of |terms|
          ASSERT_LE(std::abs(x - want), static_cast<double>(d + 1) * 0x1p-23 * magnitude) << "b " << b << " h " << h << " i " << i << " d " << d;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, RowOps, testing::ValuesIn(row_ops_cases(Device::kCpu)), row_ops_name);
#if DRING_HAVE_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, RowOps, testing::ValuesIn(row_ops_cases(Device::kCuda)), row_ops_name);
#endif

// The CPU backend stores fp32 and bf16, not fp16, and says so.
TEST(CpuRowOps, RejectsOtherDtypes) {
  MemoryTracker tracker;
  const std::unique_ptr<Backend> backend = make_cpu_backend(tracker, 1);
  EXPECT_TRUE(backend->supports(DType::kF32));
  EXPECT_TRUE(backend->supports(DType::kBF16));
  EXPECT_FALSE(backend->supports(DType::kF16));
  float x = 1.0f;
  EXPECT_THROW(backend->fill(&x, 1, DType::kF16, 0.0f), Error);
}

}  // namespace
}  // namespace dring::ring_test
