// gpu_bench.cpp — the GPU backend timed against ceilings measured in the same run (one GPU, one rank).
//
// Rows of the table (docs/benchmarks.md, GPU):
//   gemm        cuBLAS bf16 GEMM n^3 (2 n^3 FLOPs): the matrix-unit ceiling every ratio uses
//   dense       one AttendBlock per head, [B=1, S, H, D]: 4 S^2 D H FLOPs (half that causal), on the
//               tensor-core kernel ("mma") and the generic one ("simple")
//   dense_bwd   the backward of the dense row (delta, dq, dk, dv): 2.5 times its FLOPs
//   cublas      the cuBLAS standard-attention baseline on the same shape (scores materialised)
//   dilated     a LongNet-style configuration through the ring executor on one rank: effective
//               TFLOP/s = Problem::forward_flops() (the scores the configuration keeps) / time
//   ring        the exchange of a ring step emulated on one GPU: NCCL send/recv to itself of one
//               K/V message per step while the kernels of the previous message run; comm_wait =
//               the GPU time the compute stream waited for transfers, as a share of the pass
//   executor_dense  dense attention through the executor (its overhead against the dense rows)
//   memory      the 8M-token forward (H=8, D=64, bf16, LongNet-style) on one GPU: time and the
//               tracked device peak
// Times are medians over --reps runs after a warm-up, from CUDA events (the executor rows: host
// wall time of whole passes, which end with a synchronisation). Every row carries max_err: sampled
// output rows against float64 (dring::reference on the device data), relative to max |v|.
// Inputs are standard normal from a hash (never zeros). Exit status 1 when an error exceeds the
// dtype's tolerance, 3 when --json cannot be written.
// Usage: dring_gpu_bench [--reps 5] [--quick] [--json FILE] [--memory-seq 8388608]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dring/runtime/check.hpp"
#include "dring/config.h"
#include "dring/runtime/cuda_backend.hpp"
#include "dring/core/cuda.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/kernels/cuda.hpp"
#include "dring/kernels/reference.hpp"
#include "dring/runtime/shard.hpp"
#if DRING_HAVE_NCCL
#include "dring/comm/nccl_transport.hpp"
#endif

namespace {

using namespace dring;
namespace kc = kernels::cuda;

struct Row {
  Row(std::string n, std::string s, std::string t, std::string p, std::string why = "")
      : name(std::move(n)), shape(std::move(s)), dtype(std::move(t)), path(std::move(p)), note(std::move(why)) {}
  std::string name, shape, dtype, path;
  double ms = 0.0, tflops = 0.0, max_err = 0.0, tolerance = 0.0;
  std::string note;
};

float to_host_float(const void* p, DType dtype) {
  switch (dtype) {
    case DType::kF32: return *static_cast<const float*>(p);
    case DType::kF16: return __half2float(*static_cast<const __half*>(p));
    case DType::kBF16: return __bfloat162float(*static_cast<const __nv_bfloat16*>(p));
    case DType::kF64: return static_cast<float>(*static_cast<const double*>(p));
  }
  return 0.0f;
}

// Rows of a [B, S, heads, D] device tensor, fetched on demand (cudaMemcpy2D) for the reference.
class DeviceRowSource final : public reference::RowSource {
 public:
  DeviceRowSource(const AttentionShape& s, DType dtype, const void* q, const void* k, const void* v)
      : s_(s), dtype_(dtype), q_(q), k_(k), v_(v) {}
  void q_row(int64_t b, int64_t pos, int64_t head, double* out) const override {
    fetch(q_, ((b * s_.seq + pos) * s_.heads + head) * s_.head_dim, 1, 0, out);
  }
  void kv_rows(int64_t b, int64_t g, StridedRange rows, double* k, double* v) const override {
    if (rows.count == 0) return;
    const int64_t at = ((b * s_.seq + rows.first) * s_.kv_heads + g) * s_.head_dim;
    const int64_t stride = rows.stride * s_.kv_heads * s_.head_dim;
    fetch(k_, at, rows.count, stride, k);
    fetch(v_, at, rows.count, stride, v);
  }

 private:
  void fetch(const void* base, int64_t at, int64_t rows, int64_t stride, double* out) const {
    const int64_t elem = dtype_bytes(dtype_), d = s_.head_dim;
    std::vector<unsigned char> raw(static_cast<size_t>(rows * d * elem));
    DRING_CUDA_CHECK(cudaMemcpy2D(raw.data(), d * elem, static_cast<const char*>(base) + at * elem,
                                  std::max<int64_t>(stride, d) * elem, d * elem, rows, cudaMemcpyDeviceToHost));
    for (int64_t n = 0; n < rows * d; ++n) out[n] = to_host_float(raw.data() + n * elem, dtype_);
  }
  AttentionShape s_;
  DType dtype_;
  const void *q_, *k_, *v_;
};

// Max error of sampled (batch 0) rows of out/lse against float64, relative to max |v|.
double sampled_error(const Problem& p, DType dtype, const void* q, const void* k, const void* v, const void* out,
                     const float* lse, int samples) {
  const AttentionShape& s = p.shape;
  const DeviceRowSource source(s, dtype, q, k, v);
  double worst = 0.0;
  for (int n = 0; n < samples; ++n) {
    const int64_t pos = samples == 1 ? 0 : (s.seq - 1) * n / (samples - 1);
    const int64_t h = n % s.heads;
    const reference::RowResult ref = reference::attention_row(p, source, 0, pos, h);
    std::vector<double> got(static_cast<size_t>(s.head_dim));
    const DeviceRowSource out_source(s, dtype, out, out, out);
    out_source.q_row(0, pos, h, got.data());
    float l = 0.0f;
    DRING_CUDA_CHECK(cudaMemcpy(&l, lse + h * s.seq + pos, sizeof l, cudaMemcpyDeviceToHost));
    if (std::isinf(ref.lse)) {
      if (!(std::isinf(l) && l < 0)) worst = std::max(worst, 1.0);
      continue;
    }
    worst = std::max(worst, std::abs(l - ref.lse) / std::max(1.0, std::abs(ref.lse)));
    for (int64_t c = 0; c < s.head_dim; ++c) {
      const double err = std::abs(got[c] - ref.out[c]) / std::max(ref.value_scale, 1e-30);
      worst = std::max(worst, std::isnan(err) ? 1e30 : err);
    }
  }
  return worst;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? 0.0 : x[x.size() / 2];
}

// Median GPU time (ms) of `reps` runs of `work` on `stream`, after one warm-up.
double time_gpu(cudaStream_t stream, int reps, const std::function<void()>& work) {
  cuda::Event start = cuda::Event::create(true), stop = cuda::Event::create(true);
  work();
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    start.record(stream);
    work();
    stop.record(stream);
    DRING_CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float t = 0.0f;
    DRING_CUDA_CHECK(cudaEventElapsedTime(&t, start.get(), stop.get()));
    ms.push_back(t);
  }
  return median(ms);
}

class Cublas {
 public:
  Cublas() { DRING_CUBLAS_CHECK(cublasCreate(&h_)); }
  ~Cublas() { cublasDestroy(h_); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

std::string shape_text(int64_t b, int64_t s, int64_t h, int64_t d) {
  return "B" + std::to_string(b) + " S" + std::to_string(s) + " H" + std::to_string(h) + " D" + std::to_string(d);
}

// cuBLAS bf16 GEMM n x n x n with fp32 accumulation; error of 8 sampled entries against float64.
Row gemm_row(Backend& backend, cudaStream_t stream, cublasHandle_t handle, int64_t n, int reps) {
  TensorBuffer a(backend.allocator(), n * n, DType::kBF16, MemCategory::kWorkspace);
  TensorBuffer b(backend.allocator(), n * n, DType::kBF16, MemCategory::kWorkspace);
  TensorBuffer c(backend.allocator(), n * n, DType::kF32, MemCategory::kWorkspace);
  kc::launch_fill_random(a.data(), n * n, DType::kBF16, 1, stream);
  kc::launch_fill_random(b.data(), n * n, DType::kBF16, 2, stream);
  DRING_CUBLAS_CHECK(cublasSetStream(handle, stream));
  const float one = 1.0f, zero = 0.0f;
  const int ni = static_cast<int>(n);
  Row row("gemm", std::to_string(n) + "^3", "bf16", "cublas");
  row.ms = time_gpu(stream, reps, [&] {
    DRING_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one, a.data(), CUDA_R_16BF, ni,
                                    b.data(), CUDA_R_16BF, ni, &zero, c.data(), CUDA_R_32F, ni, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
  });
  row.tflops = 2.0 * n * n * n / (row.ms * 1e-3) / 1e12;
  // C[i + j n] = sum_p A[i + p n] B[p + j n] (column-major).
  const DeviceRowSource rows_a({1, n, 1, 1, 1}, DType::kBF16, a.data(), a.data(), a.data());
  for (int s = 0; s < 8; ++s) {
    const int64_t i = (n - 1) * s / 7, j = (n - 1) * (7 - s) / 7;
    std::vector<double> arow(static_cast<size_t>(n)), bcol(static_cast<size_t>(n));
    const DeviceRowSource col_b({1, n, 1, 1, n}, DType::kBF16, b.data(), b.data(), b.data());
    rows_a.kv_rows(0, 0, StridedRange{i, n, n}, arow.data(), bcol.data());  // A row i: stride n
    col_b.q_row(0, j, 0, bcol.data());                                      // B column j: contiguous
    double want = 0.0, mag = 0.0;
    for (int64_t p = 0; p < n; ++p) {
      want += arow[p] * bcol[p];
      mag += std::abs(arow[p] * bcol[p]);
    }
    float got = 0.0f;
    DRING_CUDA_CHECK(cudaMemcpy(&got, static_cast<const float*>(c.data()) + i + j * n, sizeof got, cudaMemcpyDeviceToHost));
    row.max_err = std::max(row.max_err, std::abs(got - want) / mag);
  }
  row.tolerance = 1e-5;
  row.note = "ceiling";
  return row;
}

// q, k, v (standard normal from seeds seed, seed+1, seed+2), out and lse of a dense [1, S, H, D]
// problem on the device.
struct DenseTensors {
  DenseTensors(Backend& backend, cudaStream_t stream, DType dtype, int64_t s, int64_t h, int64_t d, uint64_t seed)
      : q(backend.allocator(), s * h * d, dtype, MemCategory::kInputs),
        k(backend.allocator(), s * h * d, dtype, MemCategory::kInputs),
        v(backend.allocator(), s * h * d, dtype, MemCategory::kInputs),
        out(backend.allocator(), s * h * d, dtype, MemCategory::kOutputs),
        lse(backend.allocator(), h * s, MemCategory::kOutputs) {
    kc::launch_fill_random(q.data(), q.size(), dtype, seed, stream);
    kc::launch_fill_random(k.data(), k.size(), dtype, seed + 1, stream);
    kc::launch_fill_random(v.data(), v.size(), dtype, seed + 2, stream);
  }
  TensorBuffer q, k, v, out;
  Buffer<float> lse;
};

// One AttendBlock per head of a dense [1, S, H, D] problem (rows of all heads interleaved).
std::vector<kernels::AttendBlock> dense_blocks(const TensorBuffer& q, const TensorBuffer& k, const TensorBuffer& v,
                                               TensorBuffer& out, Buffer<float>& lse, int64_t s, int64_t h, int64_t d,
                                               DType dtype, const dring::BlockMask& mask) {
  std::vector<kernels::AttendBlock> blocks;
  for (int64_t head = 0; head < h; ++head) {
    kernels::AttendBlock b;
    b.q = offset(q.data(), head * d, dtype);
    b.k = offset(k.data(), head * d, dtype);
    b.v = offset(v.data(), head * d, dtype);
    b.out = offset(out.data(), head * d, dtype);
    b.q_stride = b.kv_stride = b.out_stride = h * d;
    b.lse = lse.data() + head * s;
    b.lse_stride = 1;
    b.n_q = b.n_k = s;
    b.mask = mask;
    blocks.push_back(b);
  }
  return blocks;
}

// Dense attention [1, S, H, D], one block per head, through Backend::attend (path forced).
Row dense_row(Backend& backend, cudaStream_t stream, DType dtype, int64_t s, int64_t h, int64_t d, bool causal,
              bool mma, int reps) {
  const AttentionShape shape{1, s, h, h, d};
  DenseTensors t(backend, stream, dtype, s, h, d, 11);
  TensorBuffer &q = t.q, &k = t.k, &v = t.v, &out = t.out;
  Buffer<float>& lse = t.lse;
  const std::vector<kernels::AttendBlock> blocks =
      dense_blocks(q, k, v, out, lse, s, h, d, dtype, causal ? dring::BlockMask::causal() : dring::BlockMask::none());
  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = 1.0 / std::sqrt(static_cast<double>(d));
  configure_cuda_backend(backend, CudaBackendOptions{mma});
  auto run = [&] {
    backend.fill(out.data(), out.size(), dtype, 0.0f);
    backend.fill(lse.data(), lse.size(), DType::kF32, -INFINITY);
    backend.attend(blocks, params);
  };
  // The state reset is timed too; it is a small fraction at these sizes and the row says so.
  Row row(causal ? "dense_causal" : "dense", shape_text(1, s, h, d), dtype_name(dtype), "");
  row.ms = time_gpu(stream, reps, run);
  row.path = last_attend_path(backend);
  row.tflops = 4.0 * s * static_cast<double>(s) * d * h * (causal ? 0.5 : 1.0) / (row.ms * 1e-3) / 1e12;
  Problem p;
  p.shape = shape;
  p.config.causal = causal;
  row.max_err = sampled_error(p, dtype, q.data(), k.data(), v.data(), out.data(), lse.data(), 8);
  row.tolerance = default_check_tolerance(dtype);
  row.note = "includes the (out, lse) reset";
  configure_cuda_backend(backend, CudaBackendOptions{});
  return row;
}

// Dense backward [1, S, H, D], one GradBlock per head: delta = rowsum(dout * out), then dq, dk, dv
// (fp32, zeroed first, both timed). FLOPs 2.5 times the forward's (scores recomputed, four
// products), as sdpa_bench.py counts them. Error: dq of 4 sampled rows of head 0 against float64
// computed here from q, k, v and dout alone (its own softmax), relative to max |dq| of those rows.
Row dense_backward_row(Backend& backend, cudaStream_t stream, DType dtype, int64_t s, int64_t h, int64_t d, bool causal,
                       int reps) {
  const int64_t n = s * h * d;
  DenseTensors t(backend, stream, dtype, s, h, d, 31);
  TensorBuffer &q = t.q, &k = t.k, &v = t.v, &out = t.out;
  Buffer<float>& lse = t.lse;
  TensorBuffer dout(backend.allocator(), n, dtype, MemCategory::kInputs);
  Buffer<float> delta(backend.allocator(), h * s, MemCategory::kWorkspace), dq(backend.allocator(), n, MemCategory::kOutputs),
      dk(backend.allocator(), n, MemCategory::kOutputs), dv(backend.allocator(), n, MemCategory::kOutputs);
  kc::launch_fill_random(dout.data(), n, dtype, 34, stream);
  const dring::BlockMask mask = causal ? dring::BlockMask::causal() : dring::BlockMask::none();
  const std::vector<kernels::AttendBlock> blocks = dense_blocks(q, k, v, out, lse, s, h, d, dtype, mask);
  std::vector<kernels::GradBlock> grads;
  for (const kernels::AttendBlock& b : blocks) {
    const int64_t head = static_cast<int64_t>(grads.size());
    kernels::GradBlock g;
    g.q = b.q;
    g.dout = offset(dout.data(), head * d, dtype);
    g.dq = dq.data() + head * d;
    g.q_stride = h * d;
    g.lse = b.lse;
    g.delta = delta.data() + head * s;
    g.state_stride = 1;
    g.n_heads = 1;
    g.n_q = s;
    g.k = b.k;
    g.v = b.v;
    g.kv_stride = h * d;
    g.dk = dk.data() + head * d;
    g.dv = dv.data() + head * d;
    g.dkv_stride = h * d;
    g.n_k = s;
    g.mask = mask;
    grads.push_back(g);
  }
  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = 1.0 / std::sqrt(static_cast<double>(d));
  backend.fill(out.data(), n, dtype, 0.0f);
  backend.fill(lse.data(), h * s, DType::kF32, -INFINITY);
  backend.attend(blocks, params);
  const kernels::DeltaParams dp{dtype, 1, s, h, d, out.data(), dout.data(), delta.data()};
  auto run = [&] {
    backend.fill(dq.data(), n, DType::kF32, 0.0f);
    backend.fill(dk.data(), n, DType::kF32, 0.0f);
    backend.fill(dv.data(), n, DType::kF32, 0.0f);
    backend.delta(dp);
    backend.attend_backward(grads, params);
  };
  Row row(causal ? "dense_bwd_causal" : "dense_bwd", shape_text(1, s, h, d), dtype_name(dtype), "simple");
  row.ms = time_gpu(stream, reps, run);
  row.tflops = 2.5 * 4.0 * s * static_cast<double>(s) * d * h * (causal ? 0.5 : 1.0) / (row.ms * 1e-3) / 1e12;
  // dq_i = scale sum_j p_ij (dout_i . v_j - sum_l p_il dout_i . v_l) k_j, in float64, head 0.
  std::vector<float> hq(static_cast<size_t>(n)), hk(static_cast<size_t>(n)), hv(static_cast<size_t>(n)),
      hdo(static_cast<size_t>(n)), hdq(static_cast<size_t>(n));
  backend.download(q.data(), dtype, hq.data(), n);
  backend.download(k.data(), dtype, hk.data(), n);
  backend.download(v.data(), dtype, hv.data(), n);
  backend.download(dout.data(), dtype, hdo.data(), n);
  backend.download(dq.data(), DType::kF32, hdq.data(), n);
  const double scale = params.scale;
  double worst = 0.0;
  for (int sample = 0; sample < 4; ++sample) {
    const int64_t i = (s - 1) * sample / 3, keys = causal ? i + 1 : s;
    std::vector<double> score(static_cast<size_t>(keys)), dpv(static_cast<size_t>(keys));
    double mx = -INFINITY;
    for (int64_t j = 0; j < keys; ++j) {
      double qk = 0.0, dov = 0.0;
      for (int64_t c = 0; c < d; ++c) {
        qk += static_cast<double>(hq[i * h * d + c]) * hk[j * h * d + c];
        dov += static_cast<double>(hdo[i * h * d + c]) * hv[j * h * d + c];
      }
      score[j] = scale * qk;
      dpv[j] = dov;
      mx = std::max(mx, score[j]);
    }
    double sum = 0.0, dlt = 0.0;
    for (int64_t j = 0; j < keys; ++j) sum += std::exp(score[j] - mx);
    for (int64_t j = 0; j < keys; ++j) dlt += std::exp(score[j] - mx) / sum * dpv[j];
    std::vector<double> want(static_cast<size_t>(d), 0.0);
    for (int64_t j = 0; j < keys; ++j) {
      const double ds = std::exp(score[j] - mx) / sum * (dpv[j] - dlt);
      for (int64_t c = 0; c < d; ++c) want[c] += scale * ds * hk[j * h * d + c];
    }
    double mag = 0.0, err = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      mag = std::max(mag, std::abs(want[c]));
      err = std::max(err, std::abs(want[c] - hdq[i * h * d + c]));
    }
    worst = std::max(worst, err / std::max(mag, 1e-30));
  }
  row.max_err = worst;
  row.tolerance = 4 * default_check_tolerance(dtype);
  row.note = "delta + dq + dk/dv incl. the gradient reset; max_err: dq of 4 rows vs float64";
  return row;
}

Row cublas_row(Backend& backend, cudaStream_t stream, cublasHandle_t handle, DType dtype, int64_t s, int64_t h,
               int64_t d, bool causal, int reps) {
  DenseTensors t(backend, stream, dtype, s, h, d, 11);
  TensorBuffer &q = t.q, &k = t.k, &v = t.v, &out = t.out;
  Buffer<float>& lse = t.lse;
  kc::StandardAttention p{dtype, 1, s, h, h, d, causal, static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))),
                          q.data(), k.data(), v.data(), out.data(), lse.data()};
  Buffer<std::byte> workspace(backend.allocator(), kc::standard_attention_workspace_bytes(p), MemCategory::kWorkspace);
  Row row(causal ? "cublas_causal" : "cublas", shape_text(1, s, h, d), dtype_name(dtype), "cublas");
  row.ms = time_gpu(stream, reps, [&] { kc::standard_attention(p, workspace.data(), handle, stream); });
  // Standard attention computes every score; the causal row is credited the visible half only.
  row.tflops = 4.0 * s * static_cast<double>(s) * d * h * (causal ? 0.5 : 1.0) / (row.ms * 1e-3) / 1e12;
  Problem prob;
  prob.shape = {1, s, h, h, d};
  prob.config.causal = causal;
  row.max_err = sampled_error(prob, dtype, q.data(), k.data(), v.data(), out.data(), lse.data(), 8);
  row.tolerance = default_check_tolerance(dtype);
  row.note = "scores materialised";
  return row;
}

// A whole forward pass of the executor on one rank, inputs random on the device.
Row executor_row(const std::string& name, Runtime& runtime, MemoryTracker& tracker, const Problem& p, DType dtype,
                 int reps) {
  Backend& backend = *runtime.backend;
  const auto stream = static_cast<cudaStream_t>(cuda_stream_of(backend));
  tracker.reset_peaks();
  ShardBuffers shard = allocate_shard(p.shape, 0, p.shape.seq, backend.allocator(), dtype);
  kc::launch_fill_random(shard.q.data(), shard.q.size(), dtype, 21, stream);
  kc::launch_fill_random(shard.k.data(), shard.k.size(), dtype, 22, stream);
  kc::launch_fill_random(shard.v.data(), shard.v.size(), dtype, 23, stream);
  ExecutorOptions options;
  options.dtype = dtype;
  RingExecutor executor(p, *runtime.transport, backend, options);
  std::vector<double> ms;
  executor.forward(shard.inputs(), shard.outputs());  // warm-up
  for (int r = 0; r < reps; ++r) ms.push_back(executor.forward(shard.inputs(), shard.outputs()).total_ms);
  Row row(name, shape_text(p.shape.batch, p.shape.seq, p.shape.heads, p.shape.head_dim) + " " + p.describe(),
          dtype_name(dtype), last_attend_path(backend));
  row.ms = median(ms);
  row.tflops = p.forward_flops() / (row.ms * 1e-3) / 1e12;
  row.max_err = sampled_error(p, dtype, shard.q.data(), shard.k.data(), shard.v.data(), shard.out.data(),
                              shard.lse.data(), 8);
  row.tolerance = default_check_tolerance(dtype);
  const double gib = static_cast<double>(tracker.stats().device().peak_bytes) / (1 << 30);
  char note[128];
  std::snprintf(note, sizeof note, "effective (kept scores); device peak %.2f GiB", gib);
  row.note = note;
  return row;
}

#if DRING_HAVE_NCCL
// Ring steps on one GPU: per step, NCCL sends one K/V message to this rank itself while the blocks of
// the previous message run (queries: `rows` rows x H heads; keys: the message's rows).
Row ring_row(MemoryTracker& tracker, DType dtype, int64_t rows, int64_t h, int64_t d, int steps, int reps) {
  Runtime runtime = make_cuda_runtime(MPI_COMM_SELF, dtype, tracker, nullptr, CudaTransportChoice::kNccl);
  Backend& backend = *runtime.backend;
  auto& nccl = dynamic_cast<comm::NcclTransport&>(*runtime.transport);
  const auto stream = static_cast<cudaStream_t>(cuda_stream_of(backend));
  const int64_t q_elems = rows * h * d, msg_elems = 2 * rows * h * d;  // K then V, all heads
  TensorBuffer q(backend.allocator(), q_elems, dtype, MemCategory::kInputs), out(backend.allocator(), q_elems, dtype, MemCategory::kOutputs);
  TensorBuffer send(backend.allocator(), msg_elems, dtype, MemCategory::kExchange);
  TensorBuffer recv[2] = {TensorBuffer(backend.allocator(), msg_elems, dtype, MemCategory::kExchange),
                          TensorBuffer(backend.allocator(), msg_elems, dtype, MemCategory::kExchange)};
  Buffer<float> lse(backend.allocator(), h * rows, MemCategory::kOutputs);
  kc::launch_fill_random(q.data(), q_elems, dtype, 31, stream);
  kc::launch_fill_random(send.data(), msg_elems, dtype, 32, stream);
  for (auto& r : recv) kc::launch_fill_random(r.data(), msg_elems, dtype, 33, stream);
  kernels::AttendParams params;
  params.dtype = dtype;
  params.head_dim = d;
  params.scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto blocks_on = [&](const void* payload) {
    std::vector<kernels::AttendBlock> blocks;
    for (int64_t head = 0; head < h; ++head) {
      kernels::AttendBlock b;
      b.q = offset(q.data(), head * d, dtype);
      b.out = offset(out.data(), head * d, dtype);
      b.q_stride = b.out_stride = h * d;
      b.k = offset(payload, head * d, dtype);
      b.v = offset(payload, (rows * h + head) * d, dtype);
      b.kv_stride = h * d;
      b.lse = lse.data() + head * rows;
      b.lse_stride = 1;
      b.n_q = b.n_k = rows;
      blocks.push_back(b);
    }
    return blocks;
  };
  auto pass = [&](bool exchange) {
    backend.fill(out.data(), q_elems, dtype, 0.0f);
    backend.fill(lse.data(), h * rows, DType::kF32, -INFINITY);
    std::unique_ptr<comm::Request> r, s;
    // One step: the receive and the send to itself in one NCCL group.
    auto post = [&](int slot) {
      nccl.begin_step();
      r = nccl.post_recv_raw(recv[slot].data(), msg_elems, dtype, 0, 1);
      s = nccl.post_send_raw(send.data(), msg_elems, dtype, 0, 1);
      nccl.end_step();
    };
    if (exchange) post(0);
    for (int step = 0; step < steps; ++step) {
      if (r) r->wait();
      if (s) s->wait();
      if (exchange && step + 1 < steps) post((step + 1) % 2);
      backend.attend(blocks_on(recv[step % 2].data()), params);
    }
    if (r) r->wait();
    if (s) s->wait();
  };
  const double compute_ms = time_gpu(stream, reps, [&] { pass(false); });
  nccl.take_device_wait_ms();  // start counting here
  const double total_ms = time_gpu(stream, reps, [&] { pass(true); });
  backend.synchronize();
  const double wait_ms = nccl.take_device_wait_ms() / (reps + 1);  // per pass (warm-up included in the count)
  Row row("ring_overlap", std::to_string(steps) + " steps x " + shape_text(1, rows, h, d), dtype_name(dtype),
          last_attend_path(backend));
  row.ms = total_ms;
  row.tflops = 4.0 * rows * static_cast<double>(rows) * d * h * steps / (total_ms * 1e-3) / 1e12;
  row.max_err = 0.0;
  row.tolerance = 0.0;
  char note[200];
  std::snprintf(note, sizeof note,
                "comm_wait %.1f%% of the pass (%.3f ms); compute-only pass %.3f ms; message %.1f MiB (NCCL to self)",
                100.0 * wait_ms / total_ms, wait_ms, compute_ms,
                static_cast<double>(msg_elems * dtype_bytes(dtype)) / (1 << 20));
  row.note = note;
  return row;
}
#endif

Problem longnet(int64_t seq, int64_t heads, int64_t d, std::vector<DilatedPair> pairs) {
  Problem p;
  p.shape = {1, seq, heads, heads, d};
  p.config.pairs = std::move(pairs);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  CLI::App app{"dring_gpu_bench: the GPU backend against ceilings measured in the same run"};
  int reps = 5;
  bool quick = false;
  std::string json_path;
  int64_t memory_seq = 8388608;
  app.add_option("--reps", reps, "timed runs per row (median)");
  app.add_flag("--quick", quick, "small shapes (a smoke test of the bench itself)");
  app.add_option("--json", json_path, "write the rows as JSON");
  app.add_option("--memory-seq", memory_seq, "tokens of the one-GPU memory row (0: skip it)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    MPI_Finalize();
    return rc;
  }
  int status = 0;
  try {
    DRING_CHECK(cuda_device_count() > 0, Status::kUnsupported, "dring_gpu_bench: no CUDA device is visible");
    MemoryTracker tracker;
    Runtime runtime = make_cuda_runtime(MPI_COMM_SELF, DType::kBF16, tracker, nullptr, CudaTransportChoice::kMpi);
    Backend& backend = *runtime.backend;
    const auto stream = static_cast<cudaStream_t>(cuda_stream_of(backend));
    cudaDeviceProp prop{};
    DRING_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    Cublas cublas;
    std::vector<Row> rows;
    const int64_t s_dense = quick ? 2048 : 16384;
    rows.push_back(gemm_row(backend, stream, cublas.get(), quick ? 2048 : 8192, reps));
    rows.push_back(dense_row(backend, stream, DType::kBF16, s_dense, 16, 128, false, true, reps));
    rows.push_back(dense_row(backend, stream, DType::kBF16, s_dense, 16, 128, true, true, reps));
    rows.push_back(dense_row(backend, stream, DType::kF16, s_dense, 16, 128, false, true, reps));
    rows.push_back(dense_row(backend, stream, DType::kBF16, s_dense, 32, 64, false, true, reps));
    rows.push_back(dense_backward_row(backend, stream, DType::kBF16, s_dense, 16, 128, false, reps));
    rows.push_back(dense_backward_row(backend, stream, DType::kBF16, s_dense, 16, 128, true, reps));
    rows.push_back(dense_row(backend, stream, DType::kBF16, quick ? 1024 : 4096, 16, 128, false, false, reps));
    rows.push_back(dense_row(backend, stream, DType::kF32, quick ? 1024 : 4096, 16, 128, false, false, reps));
    rows.push_back(cublas_row(backend, stream, cublas.get(), DType::kBF16, s_dense, 16, 128, false, reps));
    rows.push_back(cublas_row(backend, stream, cublas.get(), DType::kBF16, s_dense, 16, 128, true, reps));
    const int64_t s_dilated = quick ? 16384 : 262144;
    rows.push_back(executor_row("dilated", runtime, tracker,
                                longnet(s_dilated, 8, 64, {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}}), DType::kBF16,
                                reps));
    rows.push_back(executor_row("executor_dense", runtime, tracker, longnet(quick ? 8192 : 32768, 8, 64, {}),
                                DType::kBF16, reps));
#if DRING_HAVE_NCCL
    rows.push_back(ring_row(tracker, DType::kBF16, quick ? 1024 : 4096, 8, 64, 16, reps));
#else
    rows.push_back(Row("ring_overlap", "-", "bf16", "-", "skipped: this build has no NCCL"));
#endif
    if (memory_seq > 0) {
      const int64_t seq = quick ? 1 << 20 : memory_seq;
      rows.push_back(executor_row("memory", runtime, tracker,
                                  longnet(seq, 8, 64, {{4096, 1}, {16384, 4}, {65536, 16}, {262144, 64}, {1048576, 256}}),
                                  DType::kBF16, 1));
    }

    const double ceiling = rows[0].tflops;
    char when[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::printf("# dring_gpu_bench  %s  device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", when, prop.name, prop.major,
                prop.minor, prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1 << 30));
    std::printf("# time: median of %d after a warm-up (CUDA events; executor rows: wall time of whole passes)\n", reps);
    std::printf("# ratio = TFLOP/s / cuBLAS bf16 GEMM TFLOP/s of this run (%.1f); max_err: sampled rows vs float64\n",
                ceiling);
    std::printf("%-20s %-44s %-5s %-7s %10s %9s %6s %9s  %s\n", "case", "shape", "dtype", "path", "time_ms", "TFLOP/s",
                "ratio", "max_err", "note");
    nlohmann::json out = nlohmann::json::array();
    for (const Row& r : rows) {
      const bool bad = r.tolerance > 0 && !(r.max_err <= r.tolerance);
      if (bad) status = 1;
      std::printf("%-20s %-44s %-5s %-7s %10.3f %9.1f %6.3f %9.1e  %s%s\n", r.name.c_str(), r.shape.c_str(),
                  r.dtype.c_str(), r.path.c_str(), r.ms, r.tflops, ceiling > 0 ? r.tflops / ceiling : 0.0, r.max_err,
                  r.note.c_str(), bad ? "  ** ERROR ABOVE TOLERANCE **" : "");
      out.push_back({{"case", r.name}, {"shape", r.shape}, {"dtype", r.dtype}, {"path", r.path}, {"time_ms", r.ms},
                     {"tflops", r.tflops}, {"gemm_tflops", ceiling}, {"max_err", r.max_err},
                     {"tolerance", r.tolerance}, {"note", r.note}});
    }
    if (!json_path.empty()) {
      nlohmann::json doc{{"date", when}, {"device", prop.name}, {"rows", out}};
      std::ofstream f(json_path + ".tmp");
      f << doc.dump(2) << "\n";
      f.close();
      if (!f.good() || std::rename((json_path + ".tmp").c_str(), json_path.c_str()) != 0) status = 3;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dring_gpu_bench: %s\n", e.what());
    status = 2;
  }
  MPI_Finalize();
  return status;
}
