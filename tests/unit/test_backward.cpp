// test_backward.cpp — gradients: the float64 reference against central finite differences of the
// float64 forward; per-row reference gradients against the whole-tensor ones; the fp32 CPU
// backward kernel against float64 on strided multi-head blocks (tiled and direct paths).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <iterator>
#include <limits>

#include "dring/kernels/cpu.hpp"
#include "dring/kernels/reference.hpp"
#include "masked_blocks.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

double loss(const Problem& p, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
            const std::vector<double>& dout) {
  const reference::TensorSource<double> source(p.shape, q.data(), k.data(), v.data());
  std::vector<double> out, lse;
  reference::attention_forward(p, source, out, lse);
  double l = 0.0;
  for (size_t n = 0; n < out.size(); ++n) l += out[n] * dout[n];
  return l;
}

std::vector<double> to_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// Plain, with documents (one of length 1), with a window, and both; causal and not.
TEST(ReferenceGradient, MatchesFiniteDifferences) {
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> extensions = {{{}, 0}, {{1, 4, 2}, 0}, {{}, 2}, {{3, 4}, 3}};
  for (const auto& [docs, window] : extensions) {
    for (bool causal : {false, true}) {
      Problem p = test::make_problem(1, 7, 2, 1, 3, {{4, 2}, {7, 1}}, causal, 0.7);
      p.config.doc_lens = docs;
      p.config.window = window;
      auto q = to_double(test::random_tensor(7 * 2 * 3, 21)), dout = to_double(test::random_tensor(7 * 2 * 3, 24));
      auto k = to_double(test::random_tensor(7 * 1 * 3, 22)), v = to_double(test::random_tensor(7 * 1 * 3, 23));
      const reference::TensorSource<double> source(p.shape, q.data(), k.data(), v.data(), dout.data());
      std::vector<double> dq, dk, dv;
      reference::attention_backward(p, source, dq, dk, dv);
      const double eps = 1e-6;
      for (auto [x, grad] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}}) {
        for (size_t n = 0; n < x->size(); ++n) {
          const double keep = (*x)[n];
          (*x)[n] = keep + eps;
          const double up = loss(p, q, k, v, dout);
          (*x)[n] = keep - eps;
          const double down = loss(p, q, k, v, dout);
          (*x)[n] = keep;
          EXPECT_NEAR((*grad)[n], (up - down) / (2 * eps), 1e-7) << "element " << n << " " << p.describe();
        }
      }
    }
  }
}

TEST(ReferenceGradient, PerRowGradientsEqualTheWholeTensor) {
  for (const auto& c : test::standard_configs()) {
    for (const bool extended : {false, true}) {
      Problem p = test::make_problem(2, 29, c.heads, c.kv_heads, 4, c.pairs, c.causal);
      if (extended) {  // documents and a window
        p.config.doc_lens = {5, 1, 12, 11};
        p.config.window = 4;
      }
      const auto q = test::random_tensor(2 * 29 * c.heads * 4, 31), dout = test::random_tensor(2 * 29 * c.heads * 4, 34);
      const auto k = test::random_tensor(2 * 29 * c.kv_heads * 4, 32), v = test::random_tensor(2 * 29 * c.kv_heads * 4, 33);
      const reference::TensorSource<float> source(p.shape, q.data(), k.data(), v.data(), dout.data());
      std::vector<double> dq, dk, dv;
      reference::attention_backward(p, source, dq, dk, dv);
      for (int64_t b = 0; b < 2; ++b) {
        for (int64_t i = 0; i < 29; i += 3) {
          for (int64_t h = 0; h < c.heads; ++h) {
            const auto row = reference::grad_q_row(p, source, b, i, h);
            for (int64_t e = 0; e < 4; ++e) ASSERT_NEAR(row[e], dq[((b * 29 + i) * c.heads + h) * 4 + e], 1e-12) << c.name;
          }
          for (int64_t g = 0; g < c.kv_heads; ++g) {
            const auto row = reference::grad_kv_row(p, source, b, i, g);
            for (int64_t e = 0; e < 4; ++e) {
              ASSERT_NEAR(row[e], dk[((b * 29 + i) * c.kv_heads + g) * 4 + e], 1e-12) << c.name;
              ASSERT_NEAR(row[4 + e], dv[((b * 29 + i) * c.kv_heads + g) * 4 + e], 1e-12) << c.name;
            }
          }
        }
      }
    }
  }
}

struct GradCase {
  int64_t heads, n_q, n_k, d;
  bool causal;
  bool packed = false;  // rows d apart (heads d apart in a q row), as in an exchange message
};

// How run_grad_block runs the kernel.
struct GradRun {
  int64_t small_block_scores = 0;
  int threads = 1;
  kernels::CpuF32Kernel kernel = kernels::CpuF32Kernel::kAuto;
  int64_t q_tile = 16, k_tile = 24;
  double scale_factor = 1.0;  // the scale is this over sqrt(d)
};

// One GradBlock of `heads` query heads over shared keys, strided layouts (or packed rows);
// returns the max error of dq, dk, dv against float64, relative to the largest reference gradient.
double run_grad_block(const GradCase& c, const GradRun& run) {
  // Strided: q rows 3*d*heads apart, the heads 2*d apart in a row; k and v rows 2*d apart.
  const int64_t qs = (c.packed ? 1 : 3) * c.d * c.heads, hstep = (c.packed ? 1 : 2) * c.d;
  const int64_t kvs = (c.packed ? 1 : 2) * c.d;
  const auto q = test::random_tensor(c.n_q * qs, 41), dout = test::random_tensor(c.n_q * qs, 42);
  const auto k = test::random_tensor(c.n_k * kvs, 43), v = test::random_tensor(c.n_k * kvs, 44);
  const double scale = run.scale_factor / std::sqrt(static_cast<double>(c.d));
  // float64 forward per (head, row) for lse and delta; float64 gradients.
  std::vector<float> lse(c.heads * c.n_q), delta(c.heads * c.n_q);
  std::vector<double> dq(c.n_q * qs, 0.0), dk(c.n_k * kvs, 0.0), dv(c.n_k * kvs, 0.0);
  for (int64_t n = 0; n < c.heads; ++n) {
    for (int64_t i = 0; i < c.n_q; ++i) {
      const float* qi = &q[i * qs + n * hstep];
      const float* gi = &dout[i * qs + n * hstep];
      const int64_t keys = c.causal ? std::min(i + 1, c.n_k) : c.n_k;
      std::vector<double> s(keys);
      double mx = -INFINITY, den = 0;
      for (int64_t j = 0; j < keys; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < c.d; ++e) dot += double(qi[e]) * k[j * kvs + e];
        mx = std::max(mx, s[j] = dot * scale);
      }
      for (double x : s) den += std::exp(x - mx);
      const double l = mx + std::log(den);
      double dl = 0;
      for (int64_t e = 0; e < c.d; ++e) {
        double o = 0;
        for (int64_t j = 0; j < keys; ++j) o += std::exp(s[j] - l) * v[j * kvs + e];
        dl += o * gi[e];
      }
      lse[n * c.n_q + i] = static_cast<float>(l);
      delta[n * c.n_q + i] = static_cast<float>(dl);
      for (int64_t j = 0; j < keys; ++j) {
        const double p = std::exp(s[j] - l);
        double dp = 0;
        for (int64_t e = 0; e < c.d; ++e) dp += double(gi[e]) * v[j * kvs + e];
        const double ds = p * (dp - dl) * scale;
        for (int64_t e = 0; e < c.d; ++e) {
          dq[i * qs + n * hstep + e] += ds * k[j * kvs + e];
          dk[j * kvs + e] += ds * qi[e];
          dv[j * kvs + e] += p * gi[e];
        }
      }
    }
  }
  std::vector<float> gq(c.n_q * qs, 0.0f), gk(c.n_k * kvs, 0.0f), gv(c.n_k * kvs, 0.0f);
  kernels::GradBlock blk;
  blk.q = q.data();
  blk.dout = dout.data();
  blk.dq = gq.data();
  blk.q_stride = qs;
  blk.q_head_step = hstep;
  blk.lse = lse.data();
  blk.delta = delta.data();
  blk.state_stride = 1;
  blk.state_head_step = c.n_q;
  blk.n_heads = c.heads;
  blk.n_q = c.n_q;
  blk.k = k.data();
  blk.v = v.data();
  blk.kv_stride = kvs;
  blk.dk = gk.data();
  blk.dv = gv.data();
  blk.dkv_stride = kvs;
  blk.n_k = c.n_k;
  blk.mask = c.causal ? dring::BlockMask::causal() : dring::BlockMask::none();
  kernels::AttendParams prm;
  prm.head_dim = c.d;
  prm.scale = scale;
  prm.threads = run.threads;
  prm.q_tile = run.q_tile;
  prm.k_tile = run.k_tile;
  prm.small_block_scores = prm.fused_small_block_scores = run.small_block_scores;
  prm.cpu_f32_kernel = run.kernel;
  // NaN in the scratch: a kernel that reads scratch it did not write shows it.
  std::vector<float> workspace(kernels::cpu::backward_workspace_floats_per_thread(prm) * run.threads,
                               std::numeric_limits<float>::quiet_NaN());
  kernels::cpu::attend_backward({&blk, 1}, prm, workspace.data());
  // Errors relative to the largest reference gradient of the three (with one key, dq and dk are 0
  // up to rounding, so a per-tensor relative error would divide by noise).
  double largest = 0.0, worst = 0.0;
  for (const auto* want : {&dq, &dk, &dv}) {
    for (double x : *want) largest = std::max(largest, std::abs(x));
  }
  for (auto [got, want] : {std::pair{&gq, &dq}, std::pair{&gk, &dk}, std::pair{&gv, &dv}}) {
    for (size_t n = 0; n < got->size(); ++n) worst = std::max(worst, std::abs((*got)[n] - (*want)[n]));
  }
  return worst / largest;
}

TEST(CpuBackwardKernel, MatchesFloat64OnStridedMultiHeadBlocks) {
  for (const GradCase c : {GradCase{1, 1, 1, 4, false}, GradCase{2, 37, 53, 8, false}, GradCase{3, 61, 61, 16, true},
                           GradCase{1, 100, 7, 64, false}, GradCase{2, 130, 130, 64, true}}) {
    for (int threads : {1, 2}) {
      EXPECT_LT(run_grad_block(c, GradRun{0, threads}), 1e-5) << c.heads << "x" << c.n_q << "x" << c.n_k << " tiled";
    }
    EXPECT_LT(run_grad_block(c, GradRun{int64_t{1} << 40, 1}), 1e-5)
        << c.heads << "x" << c.n_q << "x" << c.n_k << " direct";
  }
}

using test::kernel_name;

// Every fp32 tile kernel of the backward (fused AVX-512, fused AVX2, sgemm, AMX; a test each) against
// float64: the head dims the fused kernels take and two they do not (5, 264: sgemm), odd shapes,
// causal and not, strided and packed rows, the default tiles (several chunks of keys and query rows
// per tile pair, some skipped by the causal mask), tiny tiles and tiles of 45 x 5, one and two
// threads.
void check_tile_kernel(kernels::CpuF32Kernel kernel) {
  struct Tiles {
    int64_t q_tile, k_tile;
  };
  int fused_runs = 0;
  for (const int64_t d : {8, 16, 48, 64, 72, 80, 128, 5, 264}) {
    kernels::AttendParams prm;
    prm.head_dim = d;
    prm.cpu_f32_kernel = kernel;
    const bool fused = kernels::cpu::fused_f32_backward_runs(prm);
    fused_runs += fused ? 1 : 0;
    if (d == 264 || d == 5 || kernel == kernels::CpuF32Kernel::kSgemm) {
      EXPECT_FALSE(fused) << d;
    }
    for (const GradCase c : {GradCase{1, 1, 1, d, false}, GradCase{2, 97, 131, d, false},
                             GradCase{1, 131, 97, d, true, true}, GradCase{2, 203, 200, d, true},
                             GradCase{1, 37, 301, d, false, true}}) {
      for (const Tiles tiles : {Tiles{128, 256}, Tiles{16, 24}, Tiles{45, 5}}) {
        const int threads = tiles.q_tile == 16 ? 2 : 1;
        const double err = run_grad_block(c, GradRun{0, threads, kernel, tiles.q_tile, tiles.k_tile});
        EXPECT_LT(err, 1e-5) << kernel_name(kernel) << (fused ? " fused " : " sgemm ") << c.heads << "x" << c.n_q
                             << "x" << c.n_k << " d " << d << " causal " << c.causal << " packed " << c.packed
                             << " tiles " << tiles.q_tile << "x" << tiles.k_tile << " threads " << threads;
      }
    }
  }
  if (kernel != kernels::CpuF32Kernel::kSgemm && fused_runs == 0) {
    std::printf("note: this CPU cannot run the fused %s kernel; its cases ran on sgemm\n", kernel_name(kernel));
  }
}

static_assert(std::size(test::kF32Kernels) == 4, "a new fp32 tile kernel needs its tests here too");
TEST(CpuBackwardKernel, Avx512TileKernelMatchesFloat64) { check_tile_kernel(kernels::CpuF32Kernel::kAvx512); }
TEST(CpuBackwardKernel, Avx2TileKernelMatchesFloat64) { check_tile_kernel(kernels::CpuF32Kernel::kAvx2); }
TEST(CpuBackwardKernel, SgemmTileKernelMatchesFloat64) { check_tile_kernel(kernels::CpuF32Kernel::kSgemm); }
TEST(CpuBackwardKernel, AmxTileKernelMatchesFloat64) { check_tile_kernel(kernels::CpuF32Kernel::kAmx); }

// The fp32 AMX backward tile (three bf16 parts per operand, attend_amx_backward.hpp) is what kAmx
// runs for every block where the CPU has AMX, up to head_dim 256, and kAuto for blocks whose rows
// see at least 512 keys on average; the forced kernels never run it. Its edges, held to the fp32
// bound: head_dim padded to 32 (1, 31, 33, 200) or not (32, 256), query tiles and key tiles padded
// to 32 (37, 48, 300), a key tile's strips that no row sees, causal blocks, packed and strided
// rows, several query heads, a large and a negative scale; and no worse than twice the fused
// tile's error on the same case.
TEST(CpuBackwardKernel, F32AmxTileMatchesFloat64) {
  if (!test::amx_choice_holds(kernels::cpu::f32_amx_backward_runs)) {
    GTEST_SKIP() << "the AMX tile does not run on this CPU";
  }
  kernels::AttendParams prm;
  prm.cpu_f32_kernel = kernels::CpuF32Kernel::kAmx;
  EXPECT_NE(kernels::cpu::tile_kernels(prm).find("backward amx fp32 (3 bf16 parts)"), std::string::npos);
  struct AmxCase {
    GradCase c;
    int64_t q_tile, k_tile;
    double scale_factor = 1.0;
  };
  const AmxCase cases[] = {
      {{1, 1, 1, 1, false}, 16, 32},          {{2, 37, 111, 31, false}, 37, 48},
      {{1, 100, 77, 33, true}, 37, 48},       {{1, 61, 300, 200, false, true}, 16, 300},
      {{3, 129, 129, 32, true, true}, 128, 64}, {{1, 200, 613, 64, false}, 37, 300},
      {{1, 257, 257, 256, true}, 128, 256},   {{2, 95, 130, 64, false}, 37, 48, 10.0},
      {{2, 95, 130, 64, true}, 37, 48, -0.3}, {{1, 300, 70, 64, true}, 128, 256},
  };
  for (const AmxCase& a : cases) {
    const GradCase& c = a.c;
    for (int threads : {1, 2}) {
      const double err = run_grad_block(c, GradRun{0, threads, kernels::CpuF32Kernel::kAmx, a.q_tile, a.k_tile,
                                                   a.scale_factor});
      const double fused = run_grad_block(c, GradRun{0, threads, kernels::CpuF32Kernel::kAvx512, a.q_tile,
                                                     a.k_tile, a.scale_factor});
      const std::string what = std::to_string(c.heads) + "x" + std::to_string(c.n_q) + "x" + std::to_string(c.n_k) +
                               " d " + std::to_string(c.d) + " causal " + std::to_string(c.causal) + " tiles " +
                               std::to_string(a.q_tile) + "x" + std::to_string(a.k_tile) + " scale " +
                               std::to_string(a.scale_factor) + " threads " + std::to_string(threads);
      EXPECT_LT(err, 1e-5 * std::max(1.0, std::abs(a.scale_factor) / 4)) << what;
      // fp32 accuracy, not just the bound: a part fewer, a part product fewer or P by the degree-4
      // exp2 each fail this.
      EXPECT_LT(err, 2 * fused + 1e-8) << what << " fused tile: " << fused;
    }
  }
  // kAuto's gate: the same errors as kAmx where the rows see >= 512 keys on average, as the fused
  // tile's below (a causal block of n rows: (n + 1) / 2 keys on average).
  const auto errors = [](const GradCase& c, kernels::CpuF32Kernel k) {
    return run_grad_block(c, GradRun{0, 1, k, 128, 256});
  };
  const GradCase dense{1, 40, 512, 16, false}, few_keys{1, 40, 511, 16, false};
  const GradCase causal{1, 1023, 1023, 16, true}, causal_short{1, 1021, 1021, 16, true};
  EXPECT_EQ(errors(dense, kernels::CpuF32Kernel::kAuto), errors(dense, kernels::CpuF32Kernel::kAmx));
  EXPECT_NE(errors(dense, kernels::CpuF32Kernel::kAuto), errors(dense, kernels::CpuF32Kernel::kAvx512));
  EXPECT_EQ(errors(few_keys, kernels::CpuF32Kernel::kAuto), errors(few_keys, kernels::CpuF32Kernel::kAvx512));
  EXPECT_NE(errors(few_keys, kernels::CpuF32Kernel::kAuto), errors(few_keys, kernels::CpuF32Kernel::kAmx));
  EXPECT_EQ(errors(causal, kernels::CpuF32Kernel::kAuto), errors(causal, kernels::CpuF32Kernel::kAmx));
  EXPECT_EQ(errors(causal_short, kernels::CpuF32Kernel::kAuto), errors(causal_short, kernels::CpuF32Kernel::kAvx512));
}

// General masks (masked_blocks.hpp): every kind of band, odd shapes, both paths, 1 and 2
// threads; rows no term reaches keep their gradients exactly, even with lse = -inf. On every fp32
// tile kernel (a test each, so that ctest can run them side by side), with the masked cases' small
// tiles and with the default ones.
void check_masks(kernels::CpuF32Kernel kernel) {
  test::check_masked_backward<float>(1e-5, true, kernel);
  uint64_t seed = 9000;
  for (const test::MaskedCase& c : test::masked_cases(11)) {
    test::KernelRun run;
    run.q_tile = 128;
    run.k_tile = 256;
    run.f32_kernel = kernel;
    const test::BackwardErrors b = test::check_backward<float>(c, run, seed += 20);
    EXPECT_LT(b.worst, 1e-5) << test::describe(c) << " tiles 128x256";
    EXPECT_EQ(b.changed_rows_without_terms, 0) << test::describe(c) << " tiles 128x256";
  }
}

TEST(CpuBackwardKernel, GeneralMasksMatchFloat64OnAvx512) { check_masks(kernels::CpuF32Kernel::kAvx512); }
TEST(CpuBackwardKernel, GeneralMasksMatchFloat64OnAvx2) { check_masks(kernels::CpuF32Kernel::kAvx2); }
TEST(CpuBackwardKernel, GeneralMasksMatchFloat64OnSgemm) { check_masks(kernels::CpuF32Kernel::kSgemm); }
TEST(CpuBackwardKernel, GeneralMasksMatchFloat64OnAmx) { check_masks(kernels::CpuF32Kernel::kAmx); }

}  // namespace
}  // namespace dring
