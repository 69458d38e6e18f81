// test_cpu_bf16.cpp — bf16 storage on the CPU: the conversions (round to nearest even, NaN, inf,
// denormals), the forward and backward kernels against float64 on odd shapes, on both bf16 paths
// (the fused AMX tile and oneDNN bf16 matmul where the CPU has them, forced with
// params.cpu_bf16_kernel, and the portable widening path, forced with params.bf16_matmul =
// false), and the CpuBackend's tensor and row operations in bf16.
//
// The float64 reference always reads the same bf16-rounded inputs the kernels read, so the errors
// measure the kernels, not the rounding of the inputs. Tolerances (docs/math.md, "bf16 on the
// CPU"), with u = 2^-8 the unit roundoff of bf16:
// - forward, widening path: out is rounded to bf16 once per call, an error of at most u of
//   |out| <= max|v| (out is a convex combination of v rows); an earlier call's error is carried on
//   with a weight <= 1; everything else is fp32 (about 1e-6). So out after `calls` merged calls is
//   within calls * u + 2e-5 of float64, relative to max|v|.
// - forward, matmul paths (oneDNN's bf16 matmul, and the fused AMX tile): P is also rounded to
//   bf16 before P*V (l sums the unrounded P), which moves out by at most u * max|v| more per
//   call: within 2 * calls * u + 2e-5. The AMX tile's exp2 polynomial (relative error 2.6e-6)
//   stays inside the 2e-5 of fp32 arithmetic, for out and for lse.
// - lse is never rounded on either path: the fp32 tolerance, 2e-5.
// - backward, widening path: nothing is rounded (P, dS and the gradients stay fp32): the fp32
//   tolerance of test_backward.cpp, 1e-5 of the largest reference gradient.
// - backward, matmul path: P and dS are rounded to bf16 for the dV, dK and dQ products (fp32
//   accumulation): within u of the largest reference gradient.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "dring/runtime/backend.hpp"
#include "masked_blocks.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

// The unit roundoff of bf16: 8 significant bits, so rounding to nearest moves a value by at most
// half an ulp, 2^-8 of it.
constexpr double kBf16Unit = 1.0 / 256.0;

uint16_t to_bf16(float x) {
  uint16_t b = 0;
  kernels::cpu::f32_to_bf16(&x, &b, 1);
  return b;
}
float from_bf16(uint16_t b) {
  float x = 0.0f;
  kernels::cpu::bf16_to_f32(&b, &x, 1);
  return x;
}
float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

// A random tensor in bf16 and, exactly, the values it holds as floats.
struct Bf16Tensor {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
Bf16Tensor random_bf16(int64_t count, uint64_t seed) {
  const std::vector<float> x = test::random_tensor(count, seed);
  Bf16Tensor t{std::vector<uint16_t>(x.size()), std::vector<float>(x.size())};
  kernels::cpu::f32_to_bf16(x.data(), t.bits.data(), count);
  kernels::cpu::bf16_to_f32(t.bits.data(), t.values.data(), count);
  return t;
}

TEST(Bf16Conversion, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(to_bf16(-2.0f), 0xc000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
  EXPECT_EQ(to_bf16(from_bits(0x3f808000)), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(to_bf16(from_bits(0x3f818000)), 0x3f82);
  // Just above and below a tie.
  EXPECT_EQ(to_bf16(from_bits(0x3f808001)), 0x3f81);
  EXPECT_EQ(to_bf16(from_bits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(to_bf16(from_bits(0xbf808001)), 0xbf81);
  // A carry out of the mantissa into the exponent.
  EXPECT_EQ(to_bf16(from_bits(0x3fffffff)), 0x4000);
}

TEST(Bf16Conversion, InfinityNanAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(to_bf16(inf), 0x7f80);
  EXPECT_EQ(to_bf16(-inf), 0xff80);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // past the largest bf16: inf
  EXPECT_EQ(to_bf16(from_bits(0x7f7f7fff)), 0x7f7f);               // the largest bf16 stays
  // NaNs stay NaN (a plain rounding would turn 0x7f800001 into inf), quiet, with their sign.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xff800001u, 0x7f80ffffu}) {
    const uint16_t b = to_bf16(from_bits(nan));
    EXPECT_TRUE(std::isnan(from_bf16(b))) << std::hex << nan;
    EXPECT_EQ(b & 0x0040, 0x0040) << std::hex << nan;
    EXPECT_EQ(b & 0x8000, (nan >> 16) & 0x8000) << std::hex << nan;
  }
  EXPECT_TRUE(std::isinf(from_bf16(0x7f80)));
}

TEST(Bf16Conversion, DenormalsAndZeros) {
  EXPECT_EQ(to_bf16(0.0f), 0x0000);
  EXPECT_EQ(to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(to_bf16(from_bits(0x00000001)), 0x0000);  // the smallest fp32 denormal rounds to 0
  EXPECT_EQ(to_bf16(from_bits(0x00008000)), 0x0000);  // a tie, to even (0)
  EXPECT_EQ(to_bf16(from_bits(0x00018000)), 0x0002);  // a tie, to even (2)
  EXPECT_EQ(to_bf16(from_bits(0x007fffff)), 0x0080);  // the largest denormal rounds to the smallest normal
  EXPECT_EQ(from_bf16(0x0001), std::ldexp(1.0f, -133));  // bf16 denormals widen exactly
}

// Every bf16 pattern widens and narrows back to itself (NaNs to a quiet NaN); and random floats,
// through the vectorised loops and their tails, round to the nearer neighbour (ties to even).
TEST(Bf16Conversion, ExhaustiveRoundTripAndRandomNearest) {
  std::vector<uint16_t> all(65536), back(65536);
  std::vector<float> wide(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  kernels::cpu::bf16_to_f32(all.data(), wide.data(), 65536);
  kernels::cpu::f32_to_bf16(wide.data(), back.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(wide[i]), i << 16) << std::hex << i;
    if (std::isnan(wide[i])) {
      ASSERT_EQ(back[i], all[i] | 0x0040) << std::hex << i;
    } else {
      ASSERT_EQ(back[i], all[i]) << std::hex << i;
    }
  }
  std::mt19937 gen(7);
  for (int64_t n : {1, 7, 16, 1037}) {
    std::vector<float> x(n);
    for (float& v : x) v = std::bit_cast<float>(static_cast<uint32_t>(gen() & 0xbfffffffu));  // any sign, no inf/NaN exponents
    std::vector<uint16_t> b(n);
    kernels::cpu::f32_to_bf16(x.data(), b.data(), n);
    for (int64_t j = 0; j < n; ++j) {
      const double exact = x[j];
      const double got = from_bf16(b[j]);
      const double up = from_bf16(static_cast<uint16_t>(b[j] + 1)), down = from_bf16(static_cast<uint16_t>(b[j] - 1));
      // No neighbour of the result is nearer to x (past +-0 the next pattern is a NaN: no neighbour).
      if (!std::isnan(up)) {
        ASSERT_LE(std::abs(got - exact), std::abs(up - exact)) << x[j];
      }
      if (!std::isnan(down)) {
        ASSERT_LE(std::abs(got - exact), std::abs(down - exact)) << x[j];
      }
      if (std::abs(exact) >= std::numeric_limits<float>::min()) {  // normal: within half an ulp
        ASSERT_LE(std::abs(got - exact), std::abs(exact) * kBf16Unit) << x[j];
      }
    }
  }
}

struct BlockCase {
  int64_t n_q, n_k, d;
  bool causal;
  int64_t q_rows = 3, kv_rows = 2;  // row strides in multiples of d
};

// A forward path of the bf16 kernels: matmul false is the widening path; with matmul, kernel
// picks the AMX tile (kAmx) or oneDNN's matmul (kOnednn), each where the CPU has it.
struct Bf16Path {
  bool matmul = true;
  kernels::CpuBf16Kernel kernel = kernels::CpuBf16Kernel::kAuto;
};
constexpr Bf16Path kAmxPath{true, kernels::CpuBf16Kernel::kAmx};
constexpr Bf16Path kOnednnPath{true, kernels::CpuBf16Kernel::kOnednn};
constexpr Bf16Path kWidenPath{false, kernels::CpuBf16Kernel::kAuto};

kernels::AttendParams bf16_params(int64_t d, int threads, int64_t small_block_scores, Bf16Path path = {}) {
  kernels::AttendParams prm;
  prm.bf16_matmul = path.matmul;
  prm.cpu_bf16_kernel = path.kernel;
  prm.dtype = DType::kBF16;
  prm.head_dim = d;
  prm.scale = 1.0 / std::sqrt(static_cast<double>(d));
  prm.threads = threads;
  prm.q_tile = 32;
  prm.k_tile = 48;
  prm.small_block_scores = small_block_scores;
  return prm;
}

// Tile sizes and score scale of a run (scale 0: 1/sqrt(d)), and the fp32 kernel choice, which
// decides whether small bf16 blocks run their widened rows whole on the fused fp32 kernel (auto,
// where the CPU has one) or row by row (kSgemm).
struct Tiles {
  int64_t q_tile = 32, k_tile = 48;
  double scale = 0.0;
  kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto;
};

// `calls` kernel calls over disjoint key ranges of one bf16 block, merged into the rows' (out,
// lse); returns the max error of out (relative to max |v|) and of lse against float64 on the same
// bf16 values.
std::pair<double, double> run_block(const BlockCase& c, int64_t small_block_scores, int calls, int threads,
                                    Bf16Path path, Tiles tiles = {}) {
  const int64_t qs = c.q_rows * c.d, kvs = c.kv_rows * c.d;
  const Bf16Tensor q = random_bf16(c.n_q * qs, 11), k = random_bf16(c.n_k * kvs, 12), v = random_bf16(c.n_k * kvs, 13);
  kernels::AttendParams prm = bf16_params(c.d, threads, small_block_scores, path);
  prm.q_tile = tiles.q_tile;
  prm.k_tile = tiles.k_tile;
  if (tiles.scale != 0.0) prm.scale = tiles.scale;
  prm.cpu_f32_kernel = tiles.f32_kernel;
  std::vector<uint16_t> out(c.n_q * qs, 0);
  std::vector<float> lse(c.n_q * 2, -std::numeric_limits<float>::infinity());
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * threads);
  const int parts = c.causal ? 1 : calls;
  for (int part = 0; part < parts; ++part) {
    const int64_t j0 = c.n_k * part / parts, j1 = c.n_k * (part + 1) / parts;
    if (j1 == j0) continue;
    kernels::AttendBlock blk;
    blk.q = q.bits.data();
    blk.q_stride = qs;
    blk.k = k.bits.data() + j0 * kvs;
    blk.v = v.bits.data() + j0 * kvs;
    blk.kv_stride = kvs;
    blk.out = out.data();
    blk.out_stride = qs;
    blk.lse = lse.data();
    blk.lse_stride = 2;
    blk.n_q = c.n_q;
    blk.n_k = j1 - j0;
    blk.mask = c.causal ? dring::BlockMask::causal() : dring::BlockMask::none();
    kernels::cpu::attend({&blk, 1}, prm, workspace.data());
  }
  double err_out = 0.0, err_lse = 0.0, vmax = 0.0;
  for (float x : v.values) vmax = std::max(vmax, std::abs(static_cast<double>(x)));
  const double scale = prm.scale;
  for (int64_t i = 0; i < c.n_q; ++i) {
    const int64_t keys = c.causal ? std::min(i + 1, c.n_k) : c.n_k;
    std::vector<double> s(keys);
    double mx = -INFINITY;
    for (int64_t j = 0; j < keys; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < c.d; ++e) dot += double(q.values[i * qs + e]) * double(k.values[j * kvs + e]);
      mx = std::max(mx, s[j] = dot * scale);
    }
    double denom = 0;
    for (double& x : s) denom += (x = std::exp(x - mx));
    err_lse = std::max(err_lse, std::abs(lse[i * 2] - (mx + std::log(denom))));
    for (int64_t e = 0; e < c.d; ++e) {
      double want = 0;
      for (int64_t j = 0; j < keys; ++j) want += s[j] / denom * v.values[j * kvs + e];
      err_out = std::max(err_out, std::abs(from_bf16(out[i * qs + e]) - want) / vmax);
    }
    for (int64_t e = c.d; e < qs; ++e) EXPECT_EQ(out[i * qs + e], 0) << "wrote between the rows";
  }
  return {err_out, err_lse};
}

// The forward's bound on out after `calls` merged calls, relative to max|v| (file comment); the
// matmul path also rounds P. The direct path of small blocks never rounds P.
double out_bound(int calls, bool matmul) { return (matmul ? 2 : 1) * calls * kBf16Unit + 2e-5; }
// The backward's bound relative to the largest reference gradient.
double grad_bound(bool matmul) { return matmul ? kBf16Unit : 1e-5; }

// Every bf16 forward path (each falls back to the next where the CPU lacks it).
constexpr Bf16Path kPaths[] = {kAmxPath, kOnednnPath, kWidenPath};
// Whether a path runs the AMX tile on this CPU (head_dim 64 stands for any it takes).
bool runs_amx(Bf16Path path, int64_t d = 64) { return kernels::cpu::bf16_amx_runs(bf16_params(d, 1, 0, path)); }
std::string path_name(Bf16Path path) {
  if (runs_amx(path)) return " (AMX tile)";
  return path.matmul && kernels::cpu::bf16_matmul_available() ? " (bf16 matmul)" : " (widening)";
}
// The bound a test may hold a path to: the matmul paths' (P rounded) only where the CPU runs one.
bool runs_matmul(Bf16Path path) { return path.matmul && (kernels::cpu::bf16_matmul_available() || runs_amx(path)); }

TEST(CpuBf16Kernel, TiledPathMatchesFloat64) {
  for (const BlockCase c : {BlockCase{1, 1, 1, false}, BlockCase{1, 97, 8, false}, BlockCase{97, 1, 8, false},
                            BlockCase{31, 47, 13, false}, BlockCase{129, 200, 64, false},
                            BlockCase{130, 130, 64, true}, BlockCase{97, 97, 7, true}, BlockCase{64, 64, 128, true},
                            BlockCase{53, 71, 40, false, 1, 1}}) {
    for (Bf16Path path : kPaths) {
      for (int threads : {1, 2}) {
        const auto [out, lse] = run_block(c, /*small_block_scores=*/0, /*calls=*/1, threads, path);
        const std::string what = std::to_string(c.n_q) + "x" + std::to_string(c.n_k) + " d " + std::to_string(c.d) +
                                  " causal " + std::to_string(c.causal) + path_name(path);
        EXPECT_LT(out, out_bound(1, runs_matmul(path))) << what;
        EXPECT_LT(lse, 2e-5) << what;
      }
    }
  }
}

// Both routes of the direct path: the widened rows whole on the fused fp32 kernel (auto, for the
// head_dims it takes) and row by row (kSgemm, and the head_dims it does not take).
TEST(CpuBf16Kernel, SmallBlockPathMatchesFloat64) {
  for (const auto f32 : {kernels::CpuF32Kernel::kAuto, kernels::CpuF32Kernel::kSgemm}) {
    for (const BlockCase c : {BlockCase{1, 1, 3, false}, BlockCase{2, 5, 8, false}, BlockCase{7, 7, 16, true},
                              BlockCase{13, 11, 64, false}, BlockCase{9, 9, 5, true, 1, 1},
                              BlockCase{9, 9, 5, false, 4, 3}, BlockCase{16, 16, 64, true, 5, 7},
                              BlockCase{3, 17, 32, false}}) {
      Tiles tiles;
      tiles.f32_kernel = f32;
      const auto [out, lse] = run_block(c, /*small_block_scores=*/1 << 30, 1, 1, kAmxPath, tiles);
      EXPECT_LT(out, out_bound(1, false)) << c.n_q << "x" << c.n_k << " d " << c.d;
      EXPECT_LT(lse, 2e-5) << c.n_q << "x" << c.n_k << " d " << c.d;
    }
  }
}

// A block small by its scores but too big for the packed scratch (q_tile 32, k_tile 48, d 64:
// 11840 floats a thread) goes to the tiled path, which must give the same answer.
TEST(CpuBf16Kernel, SmallBlockTooBigToPackTakesTheTiles) {
  const kernels::AttendParams prm = bf16_params(64, 1, 1 << 30);
  ASSERT_LT(kernels::cpu::workspace_floats_per_thread(prm), 61 + (2 * 97 + 2 * 61) * 64);
  for (Bf16Path path : kPaths) {
    for (bool causal : {false, true}) {
      const auto [out, lse] = run_block(BlockCase{97, causal ? 97 : 61, 64, causal}, 1 << 30, 1, 2, path);
      EXPECT_LT(out, out_bound(1, runs_matmul(path))) << path_name(path);
      EXPECT_LT(lse, 2e-5) << path_name(path);
    }
  }
}

TEST(CpuBf16Kernel, MergingBlocksLikeOneBlock) {
  for (Bf16Path path : kPaths) {
    for (int64_t small : {int64_t{0}, int64_t{1} << 30}) {
      const auto [out, lse] = run_block(BlockCase{53, 301, 16, false}, small, /*calls=*/5, 2, path);
      EXPECT_LT(out, out_bound(5, runs_matmul(path) && small == 0)) << path_name(path);
      EXPECT_LT(lse, 2e-5) << path_name(path);
    }
  }
}

TEST(CpuBf16Kernel, Fp16IsRefusedClearly) {
  kernels::AttendParams prm = bf16_params(4, 1, 0);
  prm.dtype = DType::kF16;
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm));
  try {
    kernels::cpu::attend({}, prm, workspace.data());
    ADD_FAILURE() << "fp16 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos) << e.what();
  }
}

struct GradCase {
  int64_t heads, n_q, n_k, d;
  bool causal;
};

// One bf16 GradBlock of `heads` query heads over shared keys, strided rows; dq, dk, dv are fp32.
// Returns the max error against float64 on the same bf16 values, relative to the largest
// reference gradient. lse and delta come from float64 (they are fp32 inputs of the kernel).
double run_grad_block(const GradCase& c, int64_t small_block_scores, int threads, Bf16Path path,
                      kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto) {
  const int64_t qs = 3 * c.d * c.heads, hstep = 2 * c.d, kvs = 2 * c.d;
  const Bf16Tensor q = random_bf16(c.n_q * qs, 41), dout = random_bf16(c.n_q * qs, 42);
  const Bf16Tensor k = random_bf16(c.n_k * kvs, 43), v = random_bf16(c.n_k * kvs, 44);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  std::vector<float> lse(c.heads * c.n_q), delta(c.heads * c.n_q);
  std::vector<double> dq(c.n_q * qs, 0.0), dk(c.n_k * kvs, 0.0), dv(c.n_k * kvs, 0.0);
  for (int64_t n = 0; n < c.heads; ++n) {
    for (int64_t i = 0; i < c.n_q; ++i) {
      const float* qi = &q.values[i * qs + n * hstep];
      const float* gi = &dout.values[i * qs + n * hstep];
      const int64_t keys = c.causal ? std::min(i + 1, c.n_k) : c.n_k;
      std::vector<double> s(keys);
      double mx = -INFINITY, den = 0;
      for (int64_t j = 0; j < keys; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < c.d; ++e) dot += double(qi[e]) * k.values[j * kvs + e];
        mx = std::max(mx, s[j] = dot * scale);
      }
      for (double x : s) den += std::exp(x - mx);
      const double l = mx + std::log(den);
      double dl = 0;
      for (int64_t e = 0; e < c.d; ++e) {
        double o = 0;
        for (int64_t j = 0; j < keys; ++j) o += std::exp(s[j] - l) * v.values[j * kvs + e];
        dl += o * gi[e];
      }
      lse[n * c.n_q + i] = static_cast<float>(l);
      delta[n * c.n_q + i] = static_cast<float>(dl);
      for (int64_t j = 0; j < keys; ++j) {
        const double p = std::exp(s[j] - l);
        double dp = 0;
        for (int64_t e = 0; e < c.d; ++e) dp += double(gi[e]) * v.values[j * kvs + e];
        const double ds = p * (dp - dl) * scale;
        for (int64_t e = 0; e < c.d; ++e) {
          dq[i * qs + n * hstep + e] += ds * k.values[j * kvs + e];
          dk[j * kvs + e] += ds * qi[e];
          dv[j * kvs + e] += p * gi[e];
        }
      }
    }
  }
  std::vector<float> gq(c.n_q * qs, 0.0f), gk(c.n_k * kvs, 0.0f), gv(c.n_k * kvs, 0.0f);
  kernels::GradBlock blk;
  blk.q = q.bits.data();
  blk.dout = dout.bits.data();
  blk.dq = gq.data();
  blk.q_stride = qs;
  blk.q_head_step = hstep;
  blk.lse = lse.data();
  blk.delta = delta.data();
  blk.state_stride = 1;
  blk.state_head_step = c.n_q;
  blk.n_heads = c.heads;
  blk.n_q = c.n_q;
  blk.k = k.bits.data();
  blk.v = v.bits.data();
  blk.kv_stride = kvs;
  blk.dk = gk.data();
  blk.dv = gv.data();
  blk.dkv_stride = kvs;
  blk.n_k = c.n_k;
  blk.mask = c.causal ? dring::BlockMask::causal() : dring::BlockMask::none();
  kernels::AttendParams prm = bf16_params(c.d, threads, small_block_scores, path);
  prm.q_tile = 16;
  prm.k_tile = 24;
  prm.cpu_f32_kernel = f32_kernel;
  // NaN in the scratch: a kernel that reads scratch it did not write shows it.
  std::vector<float> workspace(kernels::cpu::backward_workspace_floats_per_thread(prm) * threads,
                               std::numeric_limits<float>::quiet_NaN());
  kernels::cpu::attend_backward({&blk, 1}, prm, workspace.data());
  double largest = 0.0, worst = 0.0;
  for (const auto* want : {&dq, &dk, &dv}) {
    for (double x : *want) largest = std::max(largest, std::abs(x));
  }
  for (auto [got, want] : {std::pair{&gq, &dq}, std::pair{&gk, &dk}, std::pair{&gv, &dv}}) {
    for (size_t n = 0; n < got->size(); ++n) worst = std::max(worst, std::abs((*got)[n] - (*want)[n]));
  }
  return worst / largest;
}

// The backward takes the forward's paths (kPaths): the AMX tile (attend_amx_backward.hpp),
// oneDNN's matmul tiles, the widening path; each falls back to the next where the CPU lacks it.

// The widening path rounds nothing in the backward (P, dS and the gradients stay fp32), so on the
// same bf16 inputs it keeps the fp32 tolerance; the matmul path rounds P and dS (grad_bound).
// With the fp32 kernel on auto, blocks of up to 1024 scores a head whose head_dim the fused fp32
// backward takes run it on their widened rows (also fp32 throughout); kSgemm keeps them on the
// matmul, widening or direct path.
TEST(CpuBf16BackwardKernel, MatchesFloat64OnStridedMultiHeadBlocks) {
  for (const GradCase c : {GradCase{1, 1, 1, 4, false}, GradCase{2, 37, 53, 8, false}, GradCase{3, 61, 61, 16, true},
                           GradCase{1, 100, 7, 64, false}, GradCase{2, 130, 130, 64, true},
                           GradCase{1, 41, 29, 40, true}, GradCase{2, 70, 150, 128, false},
                           GradCase{4, 8, 8, 64, true}, GradCase{1, 29, 31, 32, false},
                           GradCase{1, 70, 90, 200, true}, GradCase{2, 40, 33, 256, false}}) {
    const std::string what = std::to_string(c.heads) + "x" + std::to_string(c.n_q) + "x" + std::to_string(c.n_k) +
                             " d " + std::to_string(c.d);
    for (const auto f32 : {kernels::CpuF32Kernel::kAuto, kernels::CpuF32Kernel::kSgemm}) {
      const std::string route = f32 == kernels::CpuF32Kernel::kAuto ? " (f32 auto)" : " (f32 sgemm)";
      for (Bf16Path path : kPaths) {
        for (int threads : {1, 2}) {
          EXPECT_LT(run_grad_block(c, 0, threads, path, f32), grad_bound(runs_matmul(path)))
              << what << " tiled" << path_name(path) << route;
        }
      }
      EXPECT_LT(run_grad_block(c, int64_t{1} << 40, 1, kOnednnPath, f32), 1e-5) << what << " direct" << route;
    }
  }
}

TEST(CpuBf16BackwardKernel, DeltaReadsBf16) {
  const int64_t batch = 2, rows = 13, heads = 3, d = 37, n = batch * rows * heads * d;
  const Bf16Tensor out = random_bf16(n, 51), dout = random_bf16(n, 52);
  std::vector<float> delta(batch * heads * rows);
  kernels::DeltaParams p;
  p.dtype = DType::kBF16;
  p.batch = batch;
  p.rows = rows;
  p.heads = heads;
  p.head_dim = d;
  p.out = out.bits.data();
  p.dout = dout.bits.data();
  p.delta = delta.data();
  kernels::cpu::delta(p, 2);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        double want = 0;
        for (int64_t c = 0; c < d; ++c) {
          const int64_t at = ((b * rows + i) * heads + h) * d + c;
          want += double(out.values[at]) * dout.values[at];
        }
        EXPECT_NEAR(delta[(b * heads + h) * rows + i], want, 1e-5 * d);
      }
    }
  }
}

TEST(CpuBackendBf16, TensorsAndRows) {
  MemoryTracker tracker;
  const std::unique_ptr<Backend> backend = make_cpu_backend(tracker, 2);
  EXPECT_TRUE(backend->supports(DType::kBF16));
  EXPECT_TRUE(backend->supports(DType::kF32));
  EXPECT_FALSE(backend->supports(DType::kF16));

  // upload rounds (across the parallel chunks), download widens exactly, cast is upload.
  const int64_t n = (int64_t{1} << 17) + 3;
  const std::vector<float> x = test::random_tensor(n, 61);
  TensorBuffer t(backend->allocator(), n, DType::kBF16, MemCategory::kInputs);
  backend->upload(x.data(), t.data(), n, DType::kBF16);
  std::vector<float> back(n);
  backend->download(t.data(), DType::kBF16, back.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], from_bf16(to_bf16(x[i]))) << i;
  backend->fill(t.data(), n, DType::kBF16, 0.0f);
  backend->cast(x.data(), t.data(), n, DType::kBF16);
  const uint16_t* bits = static_cast<const uint16_t*>(t.data());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bits[i], to_bf16(x[i])) << i;
  backend->fill(t.data(), n, DType::kBF16, 1.0f / 3.0f);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bits[i], to_bf16(1.0f / 3.0f)) << i;

  // copy_rows moves 2-byte rows between strided layouts, and nothing else.
  const int64_t d = 5;
  std::vector<uint16_t> src(7 * 3 * d), dst(4 * 2 * d, 0xffff);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i + 1);
  const RowRun run{src.data() + d, 3 * d, dst.data(), 2 * d, 4};  // rows 0..3 at stride 3d, from column d
  backend->copy_rows({&run, 1}, d, DType::kBF16);
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < d; ++c) {
      EXPECT_EQ(dst[r * 2 * d + c], src[d + r * 3 * d + c]);
      EXPECT_EQ(dst[r * 2 * d + d + c], 0xffff);
    }
  }
  // add_rows stays fp32 (the gradient accumulators).
  std::vector<float> a(2 * d, 1.0f), g(2 * d, 0.5f);
  const RowRun add{g.data(), d, a.data(), d, 2};
  backend->add_rows({&add, 1}, d);
  for (float e : a) EXPECT_EQ(e, 1.5f);

  try {
    backend->upload(x.data(), t.data(), 4, DType::kF16);
    ADD_FAILURE() << "fp16 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kUnsupported);
  }
}

// General masks in bf16 (masked_blocks.hpp), on both paths, with the bounds of the file comment
// (the direct path of small blocks is the same on both, and rounds neither P nor dS).
TEST(CpuBf16Kernel, GeneralMasksMatchFloat64) {
  for (Bf16Path path : kPaths) {
    SCOPED_TRACE(path_name(path));
    test::check_masked_forward<uint16_t>(out_bound(1, runs_matmul(path)), 2e-5, path.matmul,
                                         kernels::CpuF32Kernel::kAuto, path.kernel);
  }
}
TEST(CpuBf16BackwardKernel, GeneralMasksMatchFloat64) {
  for (Bf16Path path : kPaths) {
    SCOPED_TRACE(path_name(path));
    test::check_masked_backward<uint16_t>(grad_bound(runs_matmul(path)), path.matmul, kernels::CpuF32Kernel::kAuto,
                                          path.kernel);
  }
}

// The matmul path is taken where the CPU has it: its error shows P's rounding, which the
// widening path does not have (a path silently falling back would pass every bound above).
TEST(CpuBf16Kernel, MatmulPathIsTakenWhereAvailable) {
  if (!kernels::cpu::bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul on this CPU";
  const BlockCase c{64, 200, 64, false};
  const auto [fast, lse_fast] = run_block(c, 0, 1, 1, kOnednnPath);
  const auto [wide, lse_wide] = run_block(c, 0, 1, 1, kWidenPath);
  EXPECT_NE(fast, wide);
  EXPECT_LT(lse_fast, 2e-5);
  EXPECT_LT(lse_wide, 2e-5);
}

// The backward's AMX tile is what kAuto runs where the CPU has it (on blocks above 16 x 16), and a
// different computation from the oneDNN tiles (another exp2 polynomial for P), so neither stands
// in for the other in the tests above.
TEST(CpuBf16BackwardKernel, AmxTileIsTakenWhereAvailable) {
  if (!runs_amx(kAmxPath)) GTEST_SKIP() << "the AMX tile does not run on this CPU";
  EXPECT_EQ(kernels::cpu::tile_kernels(bf16_params(64, 1, 0, kAmxPath)), "forward amx bf16, backward amx bf16");
  for (const GradCase c : {GradCase{2, 130, 130, 64, true}, GradCase{1, 17, 16, 64, false}}) {
    const double automatic = run_grad_block(c, 0, 1, Bf16Path{}, kernels::CpuF32Kernel::kAuto);
    const double amx = run_grad_block(c, 0, 1, kAmxPath, kernels::CpuF32Kernel::kAuto);
    const double onednn = run_grad_block(c, 0, 1, kOnednnPath, kernels::CpuF32Kernel::kAuto);
    EXPECT_EQ(automatic, amx) << c.n_q << "x" << c.n_k;
    EXPECT_NE(amx, onednn) << c.n_q << "x" << c.n_k;
    EXPECT_LT(amx, grad_bound(true)) << c.n_q << "x" << c.n_k;
  }
  // 16 x 16 and smaller: the fused fp32 tile on the widened rows (fp32 throughout), either way.
  const GradCase small{2, 16, 16, 64, false};
  EXPECT_EQ(run_grad_block(small, 0, 1, kAmxPath, kernels::CpuF32Kernel::kAuto),
            run_grad_block(small, 0, 1, kOnednnPath, kernels::CpuF32Kernel::kAuto));
}

// The AMX tile on shapes that reach every edge of it: query rows padded to 16 (q_tile 37 gives
// a strip of 32 rows and one of 16; 16 gives only the latter), head_dim padded to 32 (1, 5, 31,
// 33, 40, 200) or not (32, 64, 128, 256), key tiles not a multiple of 32 (k_tile 48 becomes 64),
// the largest key tile (300 is capped at 256), several key tiles with the running max moving
// between them, causal blocks, strided rows, a large and a negative scale (the max is taken
// after scaling, so its sign must not matter), and calls merged into earlier results.
TEST(CpuBf16Kernel, AmxTileMatchesFloat64OnOddShapes) {
  if (!runs_amx(kAmxPath)) GTEST_SKIP() << "the AMX tile does not run on this CPU";
  struct AmxCase {
    BlockCase block;
    Tiles tiles;
    int calls = 1;
  };
  const AmxCase cases[] = {
      {{1, 1, 1, false}, {16, 32}},          {{37, 111, 5, false}, {37, 48}},
      {{100, 77, 31, true}, {37, 48}},       {{61, 300, 33, false}, {16, 300}},
      {{129, 129, 40, true, 1, 1}, {128, 64}}, {{200, 513, 64, false}, {37, 300}},
      {{257, 257, 64, true}, {128, 256}},    {{70, 190, 128, false, 2, 1}, {64, 96}},
      {{33, 65, 200, true}, {37, 48}},       {{48, 100, 256, false}, {48, 64}},
      {{95, 130, 32, false}, {37, 48, 10.0}}, {{95, 130, 64, true}, {37, 48, -0.3}},
      {{53, 301, 16, false}, {37, 48}, 5},
  };
  for (const AmxCase& a : cases) {
    const BlockCase& c = a.block;
    for (int threads : {1, 2}) {
      const auto [out, lse] = run_block(c, 0, a.calls, threads, kAmxPath, a.tiles);
      const std::string what = std::to_string(c.n_q) + "x" + std::to_string(c.n_k) + " d " + std::to_string(c.d) +
                               " causal " + std::to_string(c.causal) + " q_tile " + std::to_string(a.tiles.q_tile) +
                               " k_tile " + std::to_string(a.tiles.k_tile) + " scale " +
                               std::to_string(a.tiles.scale) + " threads " + std::to_string(threads);
      EXPECT_LT(out, out_bound(c.causal ? 1 : a.calls, true)) << what;
      EXPECT_LT(lse, 2e-5) << what;
    }
  }
}

// The AMX tile is what kAuto runs where the CPU has it, kOnednn turns it off, and it is a
// different computation from the oneDNN tiles (its lse error differs: another exp2 polynomial;
// out's largest error is its final rounding to bf16 on both), so neither silently stands in for
// the other in the tests above.
TEST(CpuBf16Kernel, AmxTileIsTakenWhereAvailable) {
  if (!runs_amx(kAmxPath)) GTEST_SKIP() << "the AMX tile does not run on this CPU";
  EXPECT_TRUE(runs_amx(Bf16Path{true, kernels::CpuBf16Kernel::kAuto}));
  EXPECT_FALSE(runs_amx(kOnednnPath));
  EXPECT_FALSE(runs_amx(kWidenPath));
  EXPECT_FALSE(runs_amx(kAmxPath, 257));
  const BlockCase c{64, 200, 64, false};
  const auto [amx, lse_amx] = run_block(c, 0, 1, 1, kAmxPath);
  const auto [onednn, lse_onednn] = run_block(c, 0, 1, 1, kOnednnPath);
  EXPECT_LT(amx, out_bound(1, true));
  EXPECT_LT(onednn, out_bound(1, true));
  EXPECT_NE(lse_amx, lse_onednn);
}

}  // namespace
}  // namespace dring
