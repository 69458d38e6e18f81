// kernel_bench.cpp — the fp32 CPU attend kernel, timed against a ceiling measured in the same run.
//
// The ceiling is the best single-thread sgemm measured on this machine in this run: the kernels'
// own engine (kernels/include/dring/kernels/cpu_gemm.hpp: oneDNN where built, else OpenBLAS) and
// OpenBLAS as the user's environment configures it (square n x n x n, 2n^3 FLOPs, median of
// --reps), measured before and after the rows; the highest is used (a busy machine lowers the
// sgemm rate, and a lowered ceiling would flatter the kernel), and a drift above 10% is flagged.
// A row run on t threads is held to t times that rate. Each row times one
// dring::kernels::cpu::attend call over its blocks (median of --reps after one warm-up; the state
// is reset before each run, outside the timing) and checks ~16 sampled output rows against a
// float64 computation on the same inputs. FLOPs count the two tile products only:
// 4*n_q*n_k*D per dense block, 4*D*n(n+1)/2 per causal block (the visible scores); softmax work
// is free. --q-tile, --k-tile, --small-block-scores and --fused-small-block-scores override the
// kernel's defaults (for tuning).
// --dtype bf16 runs the kernel on bf16 storage (inputs rounded to bf16 first, and the float64
// reference reads the same rounded values): its tiles run on the fused AMX tile or as oneDNN bf16
// matmuls where the CPU has them (--bf16-kernel auto|amx|onednn), or widened to fp32 with
// --bf16-widen; the ceiling stays the fp32 sgemm rate, so a ratio above 1 is the bf16 speed-up
// over that rate. --versus-fp32 (bf16) also times each row on fp32 storage (the same values, the
// fp32 kernel), --versus-onednn (bf16) on the oneDNN bf16 matmul tiles, rep by rep.
// Exit status: 1 if an error is above the tolerance (a wrong kernel is not a fast kernel), 2 if the
// dense D=64 one-thread ratio is below --min-ratio, 3 if the --json report cannot be written.
// --f32-kernel picks the fp32 tile kernel (default auto: the fused micro-kernel where the CPU
// has AVX-512 or AVX2); --versus-sgemm also times each row on the sgemm tiles, rep by rep.
// --backward times dring::kernels::cpu::attend_backward instead (dq, dk, dv from the forward's out
// and lse, delta computed outside the timing): FLOPs are the five tile products, 10*n_q*n_k*D per
// dense block (10*D*n(n+1)/2 causal); max_err covers sampled dq rows and dk, dv rows against float64,
// relative to the largest sampled reference gradient. fp32 only (kernel_bench_backward.cpp; what
// both passes share is in kernel_bench.hpp).
// --only NAME runs only the rows whose case name contains NAME (the min-ratio check then applies
// only if the dense target row ran).
// Usage: dring_kernel_bench [--reps 7] [--json FILE] [--min-ratio 0.5] [--only NAME]   (docs/benchmarks.md)
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "dring/kernels/cpu_gemm.hpp"
#include "kernel_bench.hpp"

namespace dring::bench {

Tensor<float> random_normal(int64_t count, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor<float> x(static_cast<size_t>(count));
  for (float& value : x) value = normal(gen);
  return x;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 == 1 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

Problem make_problem(const Case& c) {
  Problem p;
  const int64_t elems = c.seq * c.heads * c.head_dim;
  p.q = random_normal(elems, 11);
  p.k = random_normal(elems, 12);
  p.v = random_normal(elems, 13);
  p.out.resize(static_cast<size_t>(elems));
  p.lse.resize(static_cast<size_t>(c.seq * c.heads));
  for (float x : p.v) p.v_max = std::max(p.v_max, std::abs(static_cast<double>(x)));
  const int64_t w = c.rows_per_block * c.rate;
  const int64_t row_stride = c.rate * c.heads * c.head_dim;
  for (int64_t s = 0; s < c.seq / w; ++s) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t row0 = s * w + h % c.rate;
      const int64_t offset = (row0 * c.heads + h) * c.head_dim;
      dring::kernels::AttendBlock blk;
      blk.q = p.q.data() + offset;
      blk.k = p.k.data() + offset;
      blk.v = p.v.data() + offset;
      blk.out = p.out.data() + offset;
      blk.q_stride = blk.kv_stride = blk.out_stride = row_stride;
      blk.lse = p.lse.data() + row0 * c.heads + h;
      blk.lse_stride = c.rate * c.heads;
      blk.n_q = blk.n_k = c.rows_per_block;
      blk.mask = c.causal ? dring::BlockMask::causal() : dring::BlockMask::none();
      p.blocks.push_back(blk);
    }
  }
  return p;
}

double case_flops(const Case& c, int64_t blocks) {
  const double n = static_cast<double>(c.rows_per_block);
  const double scores = c.causal ? n * (n + 1.0) / 2.0 : n * n;
  return 4.0 * scores * static_cast<double>(c.head_dim) * static_cast<double>(blocks);
}

}  // namespace dring::bench

namespace {

using namespace dring::bench;

constexpr double kTolerance = 1e-4;  // max |out - out64| / max |v|, fp32
// bf16: out rounded once, P rounded once (docs/math.md, "bf16 on the CPU"), on top of fp32's.
constexpr double kBf16Tolerance = 2.0 / 256.0 + 2e-5;
constexpr const char* kTargetCase = "dense";

struct Sgemm {
  int64_t n = 0;
  double time_ms = 0.0;
  double gflops = 0.0;
  double best_gflops = 0.0;
  double max_err = 0.0;  // sampled entries of C against float64, relative to max |C|
};

// One thread of the kernels' engine (kernel_engine) or of OpenBLAS's CBLAS.
Sgemm measure_sgemm(int64_t n, int reps, bool kernel_engine) {
  openblas_set_num_threads(1);
  const auto a = random_normal(n * n, 1), b = random_normal(n * n, 2);
  std::vector<float> c(static_cast<size_t>(n * n));
  const int ni = static_cast<int>(n);
  auto run = [&] {
    if (kernel_engine) {
#pragma omp parallel num_threads(1)
      {
        dring::kernels::cpu::sgemm_single_thread();
        dring::kernels::cpu::sgemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      }
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.data(), ni, b.data(), ni, 0.0f,
                  c.data(), ni);
    }
  };
  run();  // warm-up
  const std::vector<double> times = time_reps_ms(reps, run);
  Sgemm s;
  s.n = n;
  s.time_ms = median(times);
  const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  s.gflops = flops / (s.time_ms * 1e6);
  s.best_gflops = flops / (*std::min_element(times.begin(), times.end()) * 1e6);
  double c_max = 0.0;
  for (float x : c) c_max = std::max(c_max, std::abs(static_cast<double>(x)));
  for (int t = 0; t < kSamples; ++t) {
    const int64_t i = (t * 7919) % n, j = (t * 104729) % n;
    double want = 0.0;
    for (int64_t e = 0; e < n; ++e) want += static_cast<double>(a[i * n + e]) * static_cast<double>(b[e * n + j]);
    s.max_err = std::max(s.max_err, std::abs(static_cast<double>(c[i * n + j]) - want) / c_max);
  }
  return s;
}

// Max over sampled rows of |out - out64| / max|v|, the float64 output computed from the same
// float inputs (natural exp, scale 1/sqrt(D)).
double sampled_error(const Case& c, const Problem& p, double scale) {
  const int64_t rows = static_cast<int64_t>(p.blocks.size()) * c.rows_per_block;
  double err = 0.0;
  std::vector<double> s, want(static_cast<size_t>(c.head_dim));
  for (int t = 0; t < kSamples; ++t) {
    const int64_t row = t * (rows - 1) / (kSamples - 1);
    const dring::kernels::AttendBlock& b = p.blocks[row / c.rows_per_block];
    const int64_t i = row % c.rows_per_block;
    const int64_t keys = b.mask.key_end(i, b.n_k);
    s.assign(static_cast<size_t>(keys), 0.0);
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < keys; ++j) {
      double dot = 0.0;
      for (int64_t e = 0; e < c.head_dim; ++e) {
        dot += static_cast<double>(f32(b.q)[i * b.q_stride + e]) * static_cast<double>(f32(b.k)[j * b.kv_stride + e]);
      }
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    double denom = 0.0;
    for (double& x : s) denom += (x = std::exp(x - mx));
    std::fill(want.begin(), want.end(), 0.0);
    for (int64_t j = 0; j < keys; ++j) {
      for (int64_t e = 0; e < c.head_dim; ++e) want[e] += s[j] * static_cast<double>(f32(b.v)[j * b.kv_stride + e]);
    }
    for (int64_t e = 0; e < c.head_dim; ++e) {
      const double got = static_cast<double>(f32(b.out)[i * b.out_stride + e]);
      err = std::max(err, std::abs(got - want[e] / denom) / p.v_max);
    }
  }
  return err;
}

// A bf16 copy of x, and x rounded to the values it holds.
Tensor<uint16_t> to_bf16(Tensor<float>& x) {
  Tensor<uint16_t> bits(x.size());
  dring::kernels::cpu::f32_to_bf16(x.data(), bits.data(), static_cast<int64_t>(x.size()));
  dring::kernels::cpu::bf16_to_f32(bits.data(), x.data(), static_cast<int64_t>(x.size()));
  return bits;
}

// versus: each rep also runs the same call on the sgemm tiles (cpu_f32_kernel kSgemm), on fp32
// storage of the same values, or on the oneDNN bf16 tiles, just before the measured one, so
// that both see the same machine (this VM's speed drifts by 20-40% within a minute); the result
// carries both medians.
Result run_case(const Case& c, int reps, dring::kernels::AttendParams prm, Versus versus) {
  Problem p = make_problem(c);
  prm.head_dim = c.head_dim;
  prm.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  prm.threads = c.threads;
  // bf16: the kernel runs on 16-bit copies at the same offsets; the reference reads p's floats.
  const bool bf16 = prm.dtype == dring::DType::kBF16;
  Tensor<uint16_t> q16, k16, v16, out16;
  std::vector<dring::kernels::AttendBlock> blocks = p.blocks;
  if (bf16) {
    q16 = to_bf16(p.q);
    k16 = to_bf16(p.k);
    v16 = to_bf16(p.v);
    out16.assign(p.out.size(), 0);
    auto at = [](const void* x, const Tensor<float>& base, auto& bits) {
      return bits.data() + (static_cast<const float*>(x) - base.data());
    };
    for (dring::kernels::AttendBlock& b : blocks) {
      b.q = at(b.q, p.q, q16);
      b.k = at(b.k, p.k, k16);
      b.v = at(b.v, p.v, v16);
      b.out = at(b.out, p.out, out16);
    }
  }
  dring::kernels::AttendParams other_prm = prm;
  other_prm.cpu_f32_kernel = versus == Versus::kSgemm ? dring::kernels::CpuF32Kernel::kSgemm : prm.cpu_f32_kernel;
  other_prm.cpu_bf16_kernel = versus == Versus::kOnednn ? dring::kernels::CpuBf16Kernel::kOnednn : prm.cpu_bf16_kernel;
  if (versus == Versus::kFp32) other_prm.dtype = dring::DType::kF32;
  const std::vector<dring::kernels::AttendBlock>& other_blocks = versus == Versus::kFp32 ? p.blocks : blocks;
  std::vector<float> workspace(static_cast<size_t>(
      std::max(dring::kernels::cpu::workspace_floats_per_thread(prm),
               dring::kernels::cpu::workspace_floats_per_thread(other_prm)) *
      c.threads));
  auto timed = [&](const dring::kernels::AttendParams& params, const std::vector<dring::kernels::AttendBlock>& run) {
    // Every row back to (out, lse) = (0, -inf), outside the timing.
    std::fill(p.out.begin(), p.out.end(), 0.0f);
    std::fill(out16.begin(), out16.end(), uint16_t{0});
    std::fill(p.lse.begin(), p.lse.end(), -std::numeric_limits<float>::infinity());
    const auto t0 = Clock::now();
    dring::kernels::cpu::attend(run, params, workspace.data());
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  const auto [times, versus_times] = interleaved_reps(
      reps, versus != Versus::kNone, [&] { return timed(prm, blocks); }, [&] { return timed(other_prm, other_blocks); });
  if (bf16) dring::kernels::cpu::bf16_to_f32(out16.data(), p.out.data(), static_cast<int64_t>(out16.size()));
  Result r;
  r.blocks = static_cast<int64_t>(p.blocks.size());
  r.flops = case_flops(c, r.blocks);
  r.time_ms = median(times);
  r.versus_time_ms = versus != Versus::kNone ? median(versus_times) : 0.0;
  r.gflops = r.flops / (r.time_ms * 1e6);
  r.max_err = sampled_error(c, p, prm.scale);
  return r;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// OpenBLAS picks its kernels by CPU model; an older release may not know a newer CPU and fall
// back to AVX2 kernels on an AVX-512 machine (the ceiling is then half of what the CPU can do).
bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool openblas_uses_avx512(const std::string& core) {
  for (const char* name : {"SkylakeX", "Cooperlake", "SapphireRapids"}) {
    if (core.find(name) != std::string::npos) return true;
  }
  return false;
}

nlohmann::json sgemm_json(const Sgemm& s) {
  return {{"n", s.n},           {"threads", 1},
          {"time_ms", s.time_ms}, {"gflops", s.gflops},
          {"best_gflops", s.best_gflops}, {"max_err", s.max_err}};
}

dring::kernels::AttendParams with_head_dim(dring::kernels::AttendParams p, int64_t d) {
  p.head_dim = d;
  return p;
}

// Which fp32 tile kernel runs at head_dim d: the AMX tile (on the blocks its gate takes, unless
// forced), the fused one (named by the widest ISA the request and the CPU allow, as
// kernels/cpu/attend_fused.cpp picks) or sgemm.
std::string f32_kernel_ran(const dring::kernels::AttendParams& tiles, int64_t d, bool backward) {
  using K = dring::kernels::CpuF32Kernel;
  auto runs = backward ? dring::kernels::cpu::fused_f32_backward_runs : dring::kernels::cpu::fused_f32_runs;
  const auto p = with_head_dim(tiles, d);
  if (!backward && dring::kernels::cpu::f32_amx_runs(p)) return "amx fp32";
  if (backward && dring::kernels::cpu::f32_amx_backward_runs(p)) {
    return p.cpu_f32_kernel == K::kAmx ? "amx fp32" : "amx fp32 where rows see 512 keys, else fused avx512";
  }
  if (p.dtype != dring::DType::kF32 || !runs(p)) return "sgemm";
  if (p.cpu_f32_kernel == K::kAvx2) return "fused avx2";
  if (p.cpu_f32_kernel == K::kAvx512) return "fused avx512";
  auto forced = p;
  forced.cpu_f32_kernel = K::kAvx512;
  return runs(forced) ? "fused avx512" : "fused avx2";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dring_kernel_bench: the fp32 CPU attend kernel against the single-thread sgemm rate"};
  int reps = 7;
  int64_t sgemm_n = 2048;
  std::string json_path;
  double min_ratio = 0.0;
  dring::kernels::AttendParams tiles;  // the library's defaults unless overridden
  app.add_option("--reps", reps, "timed repetitions per row (median reported), after one warm-up")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--sgemm-n", sgemm_n, "size of the square sgemm that sets the ceiling")
      ->check(CLI::Range(int64_t{1}, int64_t{16384}));
  app.add_option("--json", json_path, "also write the results to this JSON file");
  app.add_option("--min-ratio", min_ratio, "exit 2 if the dense D=64 (or --head-dim) one-thread ratio is below this")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--q-tile", tiles.q_tile, "query rows per work item (default: the kernel's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--k-tile", tiles.k_tile, "key rows per inner step (default: the kernel's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--small-block-scores", tiles.small_block_scores,
                 "blocks with at most this many scores take the direct path (default: the kernel's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--fused-small-block-scores", tiles.fused_small_block_scores,
                 "fp32 forward on a fused ISA: blocks with at most this many scores run whole (default: the kernel's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--tiles-per-item", tiles.fused_tiles_per_item,
                 "fp32 fused tile: query tiles per work item, each K/V tile packed once for them (default 0: the kernel's choice)")
      ->check(CLI::Range(int64_t{0}, int64_t{64}));
  std::string only;
  app.add_option("--only", only, "run only the rows whose case name contains this (e.g. small_blocks)");
  int64_t head_dim = 0;
  app.add_option("--head-dim", head_dim, "run every row at this head_dim (default 0: each row's own, 64 or 128)")
      ->check(CLI::Range(int64_t{0}, int64_t{1024}));
  std::string dtype = "fp32";
  bool bf16_widen = false;
  app.add_option("--dtype", dtype, "storage dtype of q, k, v, out")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_flag("--bf16-widen", bf16_widen, "bf16: force the portable path (tiles widened to fp32, sgemm)");
  bool versus_sgemm = false, versus_fp32 = false, versus_onednn = false;
  app.add_flag("--versus-sgemm", versus_sgemm,
               "also time every row on the sgemm tiles, rep by rep just before the measured kernel; adds columns "
               "sgemm_ms and speedup (sgemm_ms / time_ms)");
  app.add_flag("--versus-fp32", versus_fp32,
               "bf16: also time every row on fp32 storage of the same values, rep by rep; adds fp32_ms and speedup");
  app.add_flag("--versus-onednn", versus_onednn,
               "bf16: also time every row on the oneDNN bf16 matmul tiles, rep by rep; adds onednn_ms and speedup");
  std::string bf16_kernel = "auto";
  app.add_option("--bf16-kernel", bf16_kernel,
                 "bf16 forward tiles: auto (the AMX tile where the CPU has it, else oneDNN), amx, onednn")
      ->check(CLI::IsMember({"auto", "amx", "onednn"}));
  std::string f32_kernel = "auto";
  app.add_option("--f32-kernel", f32_kernel,
                 "fp32 tile kernel: auto (the AMX tiles in three bf16 parts where the CPU has AMX, on the blocks "
                 "their gates take; else fused AVX-512 or AVX2 where the CPU has it), sgemm, avx2, avx512, amx (the "
                 "AMX tiles on every block)")
      ->check(CLI::IsMember({"auto", "sgemm", "avx2", "avx512", "amx"}));
  bool backward = false;
  app.add_flag("--backward", backward,
               "time the backward (dq, dk, dv) instead of the forward; with --versus-sgemm, against the backward's "
               "sgemm tiles");
  CLI11_PARSE(app, argc, argv);
  tiles.cpu_f32_kernel = f32_kernel == "sgemm"    ? dring::kernels::CpuF32Kernel::kSgemm
                         : f32_kernel == "avx2"   ? dring::kernels::CpuF32Kernel::kAvx2
                         : f32_kernel == "avx512" ? dring::kernels::CpuF32Kernel::kAvx512
                         : f32_kernel == "amx"    ? dring::kernels::CpuF32Kernel::kAmx
                                                  : dring::kernels::CpuF32Kernel::kAuto;
  tiles.cpu_bf16_kernel = bf16_kernel == "amx"      ? dring::kernels::CpuBf16Kernel::kAmx
                          : bf16_kernel == "onednn" ? dring::kernels::CpuBf16Kernel::kOnednn
                                                    : dring::kernels::CpuBf16Kernel::kAuto;
  tiles.dtype = dring::parse_dtype(dtype);
  const Versus versus = versus_sgemm ? Versus::kSgemm
                        : versus_fp32 ? Versus::kFp32
                        : versus_onednn ? Versus::kOnednn
                                        : Versus::kNone;
  const char* versus_name = versus == Versus::kSgemm ? "sgemm" : versus == Versus::kFp32 ? "fp32" : "onednn";
  if (backward && versus != Versus::kNone && versus != Versus::kSgemm) {
    std::fprintf(stderr, "dring_kernel_bench: --backward compares with --versus-sgemm only\n");
    return 2;
  }
  tiles.bf16_matmul = !bf16_widen;
  const double tolerance = tiles.dtype == dring::DType::kBF16 ? kBf16Tolerance : kTolerance;

  try {
    std::vector<Case> cases = {
        {kTargetCase, 4096, 1, 64, 1, 4096, false, 1},
        {"dense", 4096, 1, 128, 1, 4096, false, 1},
        {"causal", 4096, 1, 64, 1, 4096, true, 1},
        // [S, 4, 64]: the rows of one head 1 KiB apart, as the runtime passes them.
        {"dense_h4", 4096, 4, 64, 1, 4096, false, 1},
        {"causal_h4", 4096, 4, 64, 1, 4096, true, 1},
        // LongNet's middle blocks (segments 256, 1024, 4096 at dilations 1, 2, 4 on S = 4096).
        {"segments", 4096, 4, 64, 1, 256, true, 1},
        {"segments", 4096, 4, 64, 2, 512, true, 1},
        {"segments", 4096, 4, 64, 4, 1024, true, 1},
        {"segments", 4096, 4, 64, 4, 1024, false, 1},
        {"small_blocks", 32768, 8, 64, 8, 8, false, 1},
        {"small_blocks", 32768, 8, 64, 8, 16, false, 1},
        {"small_blocks", 32768, 8, 64, 8, 32, false, 1},
        {"small_blocks", 32768, 8, 64, 8, 64, false, 1},
        {"dense", 4096, 1, 64, 1, 4096, false, 2},
    };
    std::erase_if(cases, [&](const Case& c) { return c.name.find(only) == std::string::npos; });
    if (head_dim > 0) {
      for (Case& c : cases) c.head_dim = head_dim;
      // The two dense rows of one thread are now the same row.
      auto same = [](const Case& a, const Case& b) {
        return std::tie(a.name, a.seq, a.heads, a.rate, a.rows_per_block, a.causal, a.threads) ==
               std::tie(b.name, b.seq, b.heads, b.rate, b.rows_per_block, b.causal, b.threads);
      };
      cases.erase(std::unique(cases.begin(), cases.end(), same), cases.end());
    }
    DRING_CHECK(!cases.empty(), dring::Status::kInvalidArgument, "--only " << only << ": no case has that in its name");
    // The report is written to a temporary name and renamed at the end, so a failed run never
    // leaves a half-written file; opening it now fails before minutes of measuring.
    const std::string json_tmp = json_path + ".tmp";
    std::ofstream json_out;
    if (!json_path.empty()) {
      json_out.open(json_tmp);
      DRING_CHECK(json_out.good(), dring::Status::kIoError, "--json: cannot write " << json_tmp);
    }
    const std::string date = utc_now();
    const Sgemm before = measure_sgemm(sgemm_n, reps, true);
    const Sgemm openblas_before = measure_sgemm(sgemm_n, reps, false);
    std::vector<Result> results;
    for (const Case& c : cases) {
      results.push_back(backward ? run_backward_case(c, reps, tiles, versus) : run_case(c, reps, tiles, versus));
    }
    const Sgemm after = measure_sgemm(sgemm_n, reps, true);
    const Sgemm openblas_after = measure_sgemm(sgemm_n, reps, false);
    const double engine_best = std::max(before.gflops, after.gflops);
    const double openblas_best = std::max(openblas_before.gflops, openblas_after.gflops);
    const double ceiling = std::max(engine_best, openblas_best);
    const double drift = std::abs(before.gflops - after.gflops) / engine_best;

    const std::string core = openblas_get_corename();
    const std::string engine = dring::kernels::cpu::sgemm_engine();
    std::printf("# dring_kernel_bench  %s  cpu: %s  kernel sgemm: %s  OpenBLAS core: %s\n", date.c_str(),
                cpu_model().c_str(), engine.c_str(), core.c_str());
    std::printf("# ceiling: sgemm %lld^3, 1 thread, median of %d: kernel engine %.1f GFLOP/s before the rows, "
                "%.1f after; OpenBLAS %.1f / %.1f; using the best, %.1f; max_err %.1e\n",
                static_cast<long long>(sgemm_n), reps, before.gflops, after.gflops, openblas_before.gflops,
                openblas_after.gflops, ceiling, std::max(before.max_err, after.max_err));
    if (engine.rfind("openblas", 0) == 0 && cpu_has_avx512() && !openblas_uses_avx512(core)) {
      const char* forced = std::getenv("OPENBLAS_CORETYPE");
      std::printf("# note: this CPU has AVX-512 but OpenBLAS runs its %s kernels%s%s%s\n", core.c_str(),
                  forced != nullptr ? " because the environment sets OPENBLAS_CORETYPE=" : "",
                  forced != nullptr ? forced : "",
                  forced != nullptr ? "" : "; OPENBLAS_CORETYPE=SkylakeX may raise both the ceiling and the kernel");
    }
    if (drift > 0.1) {
      std::printf("# warning: the ceiling moved %.0f%% during the run; the machine was busy\n", 100 * drift);
    }
    std::printf("# time_ms: median of %d after 1 warm-up; sgemm = threads x 1-thread ceiling; "
                "max_err: %d sampled rows vs float64, / max|v|, tolerance %.0e\n",
                reps, kSamples, tolerance);
    if (backward) {
      std::printf("# pass: backward (dq, dk, dv); FLOPs: the five tile products, 2.5x the forward's count\n");
    }
    std::printf("# fp32 tile kernel at D=64 and 128: %s, %s (asked: %s)\n",
                f32_kernel_ran(tiles, 64, backward).c_str(), f32_kernel_ran(tiles, 128, backward).c_str(),
                f32_kernel.c_str());
    std::printf("# dtype %s%s, q_tile %lld, k_tile %lld, small_block_scores %lld (fused fp32: %lld), tiles_per_item %lld\n",
                dtype.c_str(),
                tiles.dtype != dring::DType::kBF16                                  ? ""
                : dring::kernels::cpu::bf16_amx_runs(with_head_dim(tiles, 64))        ? " (fused AMX tile)"
                : tiles.bf16_matmul && dring::kernels::cpu::bf16_matmul_available() ? " (onednn bf16 matmul)"
                                                                                    : " (widened to fp32)",
                static_cast<long long>(tiles.q_tile), static_cast<long long>(tiles.k_tile),
                static_cast<long long>(tiles.small_block_scores), static_cast<long long>(tiles.fused_small_block_scores),
                static_cast<long long>(tiles.fused_tiles_per_item));
    std::printf("%-13s %6s %6s %6s %4s %7s %10s %9s %9s %7s %9s%s", "case", "blocks", "n_q", "n_k", "D", "threads",
                "time_ms", "GFLOP/s", "sgemm", "ratio", "max_err", versus != Versus::kNone ? " " : "");
    if (versus != Versus::kNone) std::printf("%10s_ms  speedup", versus_name);
    std::printf("\n");

    nlohmann::json report;
    report["benchmark"] = "dring_kernel_bench";
    report["date_utc"] = date;
    report["cpu"] = cpu_model();
    report["cpu_avx512f"] = cpu_has_avx512();
    report["openblas"] = {{"core", core}, {"config", openblas_get_config()}};
    report["sgemm_engine"] = engine;
    report["openblas_sgemm_before"] = sgemm_json(openblas_before);
    report["openblas_sgemm_after"] = sgemm_json(openblas_after);
    report["reps"] = reps;
    report["tolerance"] = tolerance;
    report["dtype"] = dtype;
    report["bf16_matmul"] = tiles.dtype == dring::DType::kBF16 && tiles.bf16_matmul &&
                            dring::kernels::cpu::bf16_matmul_available();
    report["f32_kernel"] = f32_kernel;
    report["f32_kernel_d64"] = f32_kernel_ran(tiles, 64, backward);
    report["pass"] = backward ? "backward" : "forward";
    report["bf16_kernel"] = bf16_kernel;
    report["bf16_amx_d64"] = dring::kernels::cpu::bf16_amx_runs(with_head_dim(tiles, 64));
    report["q_tile"] = tiles.q_tile;
    report["k_tile"] = tiles.k_tile;
    report["small_block_scores"] = tiles.small_block_scores;
    report["fused_small_block_scores"] = tiles.fused_small_block_scores;
    report["tiles_per_item"] = tiles.fused_tiles_per_item;
    report["sgemm_before"] = sgemm_json(before);
    report["sgemm_after"] = sgemm_json(after);
    report["ceiling_gflops"] = ceiling;
    report["ceiling_drift"] = drift;
    report["cases"] = nlohmann::json::array();

    bool correct = std::max(before.max_err, after.max_err) <= kTolerance;  // the fp32 sgemm
    double target_ratio = 0.0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const Result& r = results[i];
      const double case_ceiling = ceiling * c.threads;
      const double ratio = r.gflops / case_ceiling;
      std::printf("%-13s %6lld %6lld %6lld %4lld %7d %10.3f %9.1f %9.1f %7.3f %9.1e", c.name.c_str(),
                  static_cast<long long>(r.blocks), static_cast<long long>(c.rows_per_block),
                  static_cast<long long>(c.rows_per_block), static_cast<long long>(c.head_dim), c.threads, r.time_ms,
                  r.gflops, case_ceiling, ratio, r.max_err);
      if (versus != Versus::kNone) std::printf(" %13.3f %7.2fx", r.versus_time_ms, r.versus_time_ms / r.time_ms);
      std::printf("\n");
      correct = correct && r.max_err <= tolerance;
      if (c.name == kTargetCase && c.head_dim == (head_dim > 0 ? head_dim : 64) && c.threads == 1) {
        target_ratio = ratio;
      }
      report["cases"].push_back({{"case", c.name},
                                 {"blocks", r.blocks},
                                 {"n_q", c.rows_per_block},
                                 {"n_k", c.rows_per_block},
                                 {"head_dim", c.head_dim},
                                 {"causal", c.causal},
                                 {"threads", c.threads},
                                 {"flops", r.flops},
                                 {"time_ms", r.time_ms},
                                 {"gflops", r.gflops},
                                 {"ceiling_gflops", case_ceiling},
                                 {"ratio", ratio},
                                 {"max_err", r.max_err},
                                 {"versus", versus != Versus::kNone ? versus_name : ""},
                                 {"versus_time_ms", r.versus_time_ms}});
    }
    const bool has_target = std::any_of(cases.begin(), cases.end(), [](const Case& c) { return c.name == kTargetCase; });
    const bool fast_enough = !has_target || target_ratio >= min_ratio;
    report["target_ratio"] = target_ratio;
    report["min_ratio"] = min_ratio;
    report["correct"] = correct;
    report["passed"] = correct && fast_enough;
    if (!json_path.empty()) {
      json_out << report.dump(2) << "\n";
      json_out.close();
      DRING_CHECK(json_out.good(), dring::Status::kIoError, "--json: cannot write " << json_tmp);
      std::error_code ec;
      std::filesystem::rename(json_tmp, json_path, ec);
      DRING_CHECK(!ec, dring::Status::kIoError, "--json: cannot rename " << json_tmp << " to " << json_path << ": "
                                                                        << ec.message());
    }
    if (!correct) {
      std::fprintf(stderr, "dring_kernel_bench: an error is above the tolerance %.0e\n", tolerance);
      return 1;
    }
    if (!fast_enough) {
      std::fprintf(stderr, "dring_kernel_bench: dense D=64 one-thread ratio %.3f is below --min-ratio %.3f\n",
                   target_ratio, min_ratio);
      return 2;
    }
  } catch (const dring::Error& e) {
    std::fprintf(stderr, "dring_kernel_bench: %s\n", e.what());
    return 3;
  }
  return 0;
}
