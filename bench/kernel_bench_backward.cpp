// kernel_bench_backward.cpp — dring_kernel_bench --backward: one attend_backward call per rep on
// a row's blocks, checked on sampled dq, dk and dv rows against float64 (kernel_bench.cpp says how
// the rows are timed and judged).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "kernel_bench.hpp"

namespace dring::bench {
namespace {

// The float64 side of the backward's check on block b: scores, dP = dout . v and a row's lse and
// delta, from the same float inputs.
struct GradReference {
  const dring::kernels::AttendBlock& b;
  int64_t d;
  double scale;
  const float* dout;  // at b's first row, same layout as q
  double score(int64_t i, int64_t j) const {
    double dot = 0.0;
    for (int64_t e = 0; e < d; ++e) {
      dot += static_cast<double>(f32(b.q)[i * b.q_stride + e]) * static_cast<double>(f32(b.k)[j * b.kv_stride + e]);
    }
    return dot * scale;
  }
  double dp(int64_t i, int64_t j) const {
    double dot = 0.0;
    for (int64_t e = 0; e < d; ++e) {
      dot += static_cast<double>(dout[i * b.q_stride + e]) * static_cast<double>(f32(b.v)[j * b.kv_stride + e]);
    }
    return dot;
  }
  // lse and delta = sum_j P_ij dP_ij (= rowsum(dout * out)) of row i.
  std::pair<double, double> row_state(int64_t i) const {
    const int64_t keys = b.mask.key_end(i, b.n_k);
    double mx = -std::numeric_limits<double>::infinity(), sum = 0.0, dl = 0.0;
    for (int64_t j = 0; j < keys; ++j) mx = std::max(mx, score(i, j));
    for (int64_t j = 0; j < keys; ++j) sum += std::exp(score(i, j) - mx);
    const double lse = mx + std::log(sum);
    for (int64_t j = 0; j < keys; ++j) dl += std::exp(score(i, j) - lse) * dp(i, j);
    return {lse, dl};
  }
};

// Max over sampled rows of |grad - grad64| of dq (query rows, spread over all blocks, from float64
// lse and delta) and dk, dv (a few key rows of the first block, from every query row's lse and
// delta as the kernel was given them, fp32), relative to the largest sampled reference value.
double sampled_grad_error(const Case& c, const Problem& p, const Tensor<float>& dout, const std::vector<float>& delta,
                          const Tensor<float>& dq, const Tensor<float>& dk, const Tensor<float>& dv,
                          double scale) {
  const int64_t rows = static_cast<int64_t>(p.blocks.size()) * c.rows_per_block, d = c.head_dim;
  std::vector<std::vector<double>> got, want;
  auto offset_of = [&](const void* x, const void* base) { return static_cast<const float*>(x) - f32(base); };
  for (int t = 0; t < kSamples; ++t) {
    const int64_t row = t * (rows - 1) / (kSamples - 1);
    const dring::kernels::AttendBlock& b = p.blocks[row / c.rows_per_block];
    const int64_t i = row % c.rows_per_block, at = offset_of(b.q, p.q.data()) + i * b.q_stride;
    const GradReference ref{b, d, scale, dout.data() + offset_of(b.q, p.q.data())};
    const auto [lse, dl] = ref.row_state(i);
    std::vector<double> g(static_cast<size_t>(d), 0.0);
    for (int64_t j = 0; j < b.mask.key_end(i, b.n_k); ++j) {
      const double ds = std::exp(ref.score(i, j) - lse) * (ref.dp(i, j) - dl) * scale;
      for (int64_t e = 0; e < d; ++e) g[e] += ds * static_cast<double>(f32(b.k)[j * b.kv_stride + e]);
    }
    want.push_back(g);
    got.emplace_back(dq.begin() + at, dq.begin() + at + d);
  }
  // dk and dv of a few key rows of the first block, from all its query rows.
  const dring::kernels::AttendBlock& b = p.blocks[0];
  const GradReference ref{b, d, scale, dout.data() + offset_of(b.q, p.q.data())};
  const float* b_delta = delta.data() + (b.lse - p.lse.data());
  for (int t = 0; t < 4; ++t) {
    const int64_t j = t * (b.n_k - 1) / 3, at = offset_of(b.k, p.k.data()) + j * b.kv_stride;
    std::vector<double> gk(static_cast<size_t>(d), 0.0), gv(static_cast<size_t>(d), 0.0);
    for (int64_t i = 0; i < b.n_q; ++i) {
      if (j >= b.mask.key_end(i, b.n_k)) continue;
      const double pr = std::exp(ref.score(i, j) - static_cast<double>(b.lse[i * b.lse_stride]));
      const double ds = pr * (ref.dp(i, j) - static_cast<double>(b_delta[i * b.lse_stride])) * scale;
      for (int64_t e = 0; e < d; ++e) {
        gk[e] += ds * static_cast<double>(f32(b.q)[i * b.q_stride + e]);
        gv[e] += pr * static_cast<double>(ref.dout[i * b.q_stride + e]);
      }
    }
    want.push_back(gk);
    got.emplace_back(dk.begin() + at, dk.begin() + at + d);
    want.push_back(gv);
    got.emplace_back(dv.begin() + at, dv.begin() + at + d);
  }
  double largest = 0.0, err = 0.0;
  for (const auto& w : want) {
    for (double x : w) largest = std::max(largest, std::abs(x));
  }
  for (size_t n = 0; n < want.size(); ++n) {
    for (int64_t e = 0; e < d; ++e) err = std::max(err, std::abs(got[n][e] - want[n][e]));
  }
  return err / largest;
}

}  // namespace

// run_case for the backward (--backward): the forward runs once to give out and lse, delta is
// computed, then each rep times one attend_backward call (dq, dk, dv zeroed outside the timing);
// versus: the same call on the sgemm tiles just before each measured rep, as in run_case.
Result run_backward_case(const Case& c, int reps, dring::kernels::AttendParams prm, Versus versus) {
  Problem p = make_problem(c);
  prm.head_dim = c.head_dim;
  prm.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  prm.threads = c.threads;
  DRING_CHECK(prm.dtype == dring::DType::kF32, dring::Status::kInvalidArgument, "--backward: fp32 only");
  {
    std::vector<float> ws(static_cast<size_t>(dring::kernels::cpu::workspace_floats_per_thread(prm) * c.threads));
    std::fill(p.lse.begin(), p.lse.end(), -std::numeric_limits<float>::infinity());
    dring::kernels::cpu::attend(p.blocks, prm, ws.data());
  }
  const Tensor<float> dout = random_normal(static_cast<int64_t>(p.q.size()), 14);
  std::vector<float> delta(p.lse.size());
  Tensor<float> dq(p.q.size()), dk(p.q.size()), dv(p.q.size());
  for (size_t r = 0; r < delta.size(); ++r) {  // [seq, heads] like lse; rows of D floats
    double sum = 0.0;
    for (int64_t e = 0; e < c.head_dim; ++e) sum += p.out[r * c.head_dim + e] * dout[r * c.head_dim + e];
    delta[r] = static_cast<float>(sum);
  }
  std::vector<dring::kernels::GradBlock> blocks;
  for (const dring::kernels::AttendBlock& a : p.blocks) {
    const int64_t at = f32(a.q) - p.q.data(), state = a.lse - p.lse.data();
    dring::kernels::GradBlock g;
    g.q = a.q;
    g.dout = dout.data() + at;
    g.out = a.out;
    g.dq = dq.data() + at;
    g.q_stride = a.q_stride;
    g.lse = a.lse;
    g.delta = delta.data() + state;
    g.state_stride = a.lse_stride;
    g.n_q = a.n_q;
    g.k = a.k;
    g.v = a.v;
    g.kv_stride = a.kv_stride;
    g.dk = dk.data() + at;
    g.dv = dv.data() + at;
    g.dkv_stride = a.kv_stride;
    g.n_k = a.n_k;
    g.mask = a.mask;
    blocks.push_back(g);
  }
  std::vector<float> workspace(
      static_cast<size_t>(dring::kernels::cpu::backward_workspace_floats_per_thread(prm) * c.threads));
  auto timed = [&](const dring::kernels::AttendParams& params) {
    for (auto* g : {&dq, &dk, &dv}) std::fill(g->begin(), g->end(), 0.0f);
    const auto t0 = Clock::now();
    dring::kernels::cpu::attend_backward(blocks, params, workspace.data());
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  dring::kernels::AttendParams sgemm_prm = prm;
  sgemm_prm.cpu_f32_kernel = dring::kernels::CpuF32Kernel::kSgemm;
  const auto [times, sgemm_times] = interleaved_reps(
      reps, versus == Versus::kSgemm, [&] { return timed(prm); }, [&] { return timed(sgemm_prm); });
  Result r;
  r.blocks = static_cast<int64_t>(p.blocks.size());
  r.flops = 2.5 * case_flops(c, r.blocks);
  r.time_ms = median(times);
  r.versus_time_ms = versus == Versus::kSgemm ? median(sgemm_times) : 0.0;
  r.gflops = r.flops / (r.time_ms * 1e6);
  r.max_err = sampled_grad_error(c, p, dout, delta, dq, dk, dv, prm.scale);
  return r;
}

}  // namespace dring::bench
