// test_cpu_kernel.cpp — the fp32 CPU attend kernels against float64 on single blocks with
// strided rows: sizes 1, primes, not multiples of the tiles; causal and not; the tiled path and
// the direct small-block path; state carried across calls (the merge of blocks).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "dring/kernels/cpu.hpp"
#include "masked_blocks.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

using test::kernel_name;
using test::kF32Kernels;

struct BlockCase {
  int64_t n_q, n_k, d;
  bool causal;
  // Row strides in multiples of d (1 = packed rows, as in an exchange message).
  int64_t q_rows = 3, kv_rows = 2;
};

// Runs `calls` consecutive kernel calls over disjoint key ranges of one block, merging into the
// rows' (out, lse); returns the max error of out (relative to max |v|) and of lse against float64.
std::pair<double, double> run_block(const BlockCase& c, int64_t small_block_scores, int calls, int threads,
                                    kernels::CpuF32Kernel kernel = kernels::CpuF32Kernel::kAuto, int64_t q_tile = 32,
                                    int64_t k_tile = 48, double scale_factor = 1.0, int64_t tiles_per_item = 0) {
  const int64_t qs = c.q_rows * c.d, kvs = c.kv_rows * c.d;
  const auto q = test::random_tensor(c.n_q * qs, 11);
  const auto k = test::random_tensor(c.n_k * kvs, 12);
  const auto v = test::random_tensor(c.n_k * kvs, 13);
  const double scale = scale_factor / std::sqrt(static_cast<double>(c.d));
  std::vector<float> out(c.n_q * qs, 0.0f), lse(c.n_q * 2, -std::numeric_limits<float>::infinity());

  kernels::AttendParams prm;
  prm.head_dim = c.d;
  prm.scale = scale;
  prm.threads = threads;
  prm.q_tile = q_tile;
  prm.k_tile = k_tile;
  prm.small_block_scores = prm.fused_small_block_scores = small_block_scores;
  prm.cpu_f32_kernel = kernel;
  prm.fused_tiles_per_item = tiles_per_item;
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * threads);
  // Causal blocks cannot be split by keys (the diagonal lives in one call); split the others.
  const int parts = c.causal ? 1 : calls;
  for (int part = 0; part < parts; ++part) {
    const int64_t j0 = c.n_k * part / parts, j1 = c.n_k * (part + 1) / parts;
    if (j1 == j0) continue;
    kernels::AttendBlock blk;
    blk.q = q.data();
    blk.q_stride = qs;
    blk.k = k.data() + j0 * kvs;
    blk.v = v.data() + j0 * kvs;
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
  for (float x : v) vmax = std::max(vmax, std::abs(static_cast<double>(x)));
  for (int64_t i = 0; i < c.n_q; ++i) {
    const int64_t keys = c.causal ? std::min(i + 1, c.n_k) : c.n_k;
    std::vector<double> s(keys);
    double mx = -INFINITY;
    for (int64_t j = 0; j < keys; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < c.d; ++e) dot += double(q[i * qs + e]) * double(k[j * kvs + e]);
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    double denom = 0;
    for (double& x : s) denom += (x = std::exp(x - mx));
    err_lse = std::max(err_lse, std::abs(lse[i * 2] - (mx + std::log(denom))));
    for (int64_t e = 0; e < c.d; ++e) {
      double want = 0;
      for (int64_t j = 0; j < keys; ++j) want += s[j] / denom * v[j * kvs + e];
      err_out = std::max(err_out, std::abs(out[i * qs + e] - want) / vmax);
    }
  }
  return {err_out, err_lse};
}

TEST(CpuKernel, TiledPathMatchesFloat64) {
  for (const BlockCase c : {BlockCase{1, 1, 1, false}, BlockCase{1, 97, 8, false}, BlockCase{97, 1, 8, false},
                            BlockCase{31, 47, 13, false}, BlockCase{129, 200, 64, false},
                            BlockCase{130, 130, 64, true}, BlockCase{97, 97, 7, true}, BlockCase{64, 64, 128, true}}) {
    for (int threads : {1, 2}) {
      const auto [out, lse] = run_block(c, /*small_block_scores=*/0, /*calls=*/1, threads);
      EXPECT_LT(out, 2e-6) << c.n_q << "x" << c.n_k << " d " << c.d << " causal " << c.causal;
      EXPECT_LT(lse, 2e-5) << c.n_q << "x" << c.n_k << " d " << c.d << " causal " << c.causal;
    }
  }
}

// The direct path on every fp32 kernel: the whole-block fused kernel (AVX-512, AVX2: one query
// vector or several, more than one register block of them, padding lanes, key counts that fill
// no register block, K and V read in place or packed past 16 keys) and the row-by-row path
// (sgemm, and head dims the fused kernel does not take); one call, or several merged into the
// rows' state. Key tiles of 128 let every block here run whole on the fused kernel.
TEST(CpuKernel, SmallBlockPathMatchesFloat64) {
  for (const kernels::CpuF32Kernel kernel : kF32Kernels) {
    for (const BlockCase c : {BlockCase{1, 1, 3, false}, BlockCase{2, 5, 8, false}, BlockCase{7, 7, 16, true},
                              BlockCase{13, 11, 64, false}, BlockCase{8, 8, 64, false}, BlockCase{8, 8, 64, true},
                              BlockCase{16, 16, 64, true}, BlockCase{17, 5, 16, false}, BlockCase{5, 17, 16, false},
                              BlockCase{33, 31, 128, true}, BlockCase{70, 9, 64, false}, BlockCase{9, 70, 48, false},
                              BlockCase{31, 33, 72, true}, BlockCase{67, 67, 16, true, 1, 1}}) {
      for (const int calls : {1, 3}) {
        const auto [out, lse] = run_block(c, /*small_block_scores=*/1 << 30, calls, 1, kernel, /*q_tile=*/32,
                                          /*k_tile=*/128);
        const std::string what = std::string(kernel_name(kernel)) + " " + std::to_string(c.n_q) + "x" +
                                 std::to_string(c.n_k) + " d " + std::to_string(c.d) + " causal " +
                                 std::to_string(c.causal) + " calls " + std::to_string(calls);
        EXPECT_LT(out, 2e-6) << what;
        EXPECT_LT(lse, 2e-5) << what;
      }
    }
  }
}

// The small path packs strided rows into scratch and uses packed rows in place: every mix.
TEST(CpuKernel, SmallBlockPathTakesPackedAndStridedRows) {
  for (int64_t q_rows : {1, 4}) {
    for (int64_t kv_rows : {1, 3}) {
      for (bool causal : {false, true}) {
        BlockCase c{9, 9, 5, causal, q_rows, kv_rows};
        const auto [out, lse] = run_block(c, 1 << 30, 1, 1);
        EXPECT_LT(out, 2e-6) << "q stride " << q_rows << "d, kv stride " << kv_rows << "d causal " << causal;
        EXPECT_LT(lse, 2e-5);
      }
    }
  }
}

TEST(CpuKernel, MergingBlocksLikeOneBlock) {
  for (int64_t small : {int64_t{0}, int64_t{1} << 30}) {
    const auto [out, lse] = run_block(BlockCase{53, 301, 16, false}, small, /*calls=*/5, 2);
    EXPECT_LT(out, 2e-6);
    EXPECT_LT(lse, 2e-5);
  }
}

// A row's first small block writes its out without reading it (streaming stores where the rows
// are aligned to whole vectors, as here, and the call asks for them: always, and never, the
// default for a call this small), its later blocks merge into it. Three calls over many
// blocks of a dilated-like layout (rows 512 B apart, 64-byte aligned): the rows on one side of h
// take the first keys, then every row the rest (a register block of rows either side of h has
// state in some rows and none in others), then the other rows the first keys; each row has then
// seen every key of its block. Block sizes that no register block divides, one thread and two.
TEST(CpuKernel, SmallBlockFirstWritesAndMergesMatchFloat64) {
  const int64_t d = 64, stride = 2 * d, blocks = 7;
  for (const kernels::CpuF32Kernel kernel : kF32Kernels) {
    for (const int64_t n : {int64_t{13}, int64_t{40}, int64_t{64}}) {
      for (const auto& [threads, low_first, stream_bytes] :
           {std::tuple{1, true, 0}, std::tuple{1, false, 0}, std::tuple{2, false, 0}, std::tuple{1, false, -1}}) {
        const int64_t h = n / 3 + 1, a = n / 2;  // rows [0, h) or [h, n) take keys [0, a) first
        const int64_t rows = blocks * n;
        const auto q = test::random_tensor(rows * stride, 31);
        const auto k = test::random_tensor(rows * stride, 32);
        const auto v = test::random_tensor(rows * stride, 33);
        std::vector<float> out_storage(rows * stride + 16, 0.0f);
        float* out = out_storage.data();
        while (reinterpret_cast<uintptr_t>(out) % 64 != 0) ++out;
        std::vector<float> lse(rows, -std::numeric_limits<float>::infinity());
        kernels::AttendParams prm;
        prm.head_dim = d;
        prm.scale = 1.0 / 8.0;
        prm.threads = threads;
        prm.k_tile = 128;
        prm.small_block_scores = prm.fused_small_block_scores = 1 << 30;
        prm.cpu_f32_kernel = kernel;
        prm.stream_first_writes_bytes = stream_bytes;
        std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * threads);
        auto call = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
          std::vector<kernels::AttendBlock> list;
          for (int64_t b = 0; b < blocks; ++b) {
            kernels::AttendBlock blk;
            blk.q = q.data() + (b * n + i0) * stride;
            blk.k = k.data() + (b * n + j0) * stride;
            blk.v = v.data() + (b * n + j0) * stride;
            blk.q_stride = blk.kv_stride = blk.out_stride = stride;
            blk.out = out + (b * n + i0) * stride;
            blk.lse = lse.data() + b * n + i0;
            blk.lse_stride = 1;
            blk.n_q = i1 - i0;
            blk.n_k = j1 - j0;
            list.push_back(blk);
          }
          kernels::cpu::attend(list, prm, workspace.data());
        };
        // Rows [0, h) first, then [h, n): both orders, so that a register block's first row may
        // have state while a later one has none, and the other way round.
        if (low_first) {
          call(0, h, 0, a);
          call(0, n, a, n);
          call(h, n, 0, a);
        } else {
          call(h, n, 0, a);
          call(0, n, a, n);
          call(0, h, 0, a);
        }
        double err = 0.0, err_lse = 0.0, vmax = 0.0;
        for (float x : v) vmax = std::max(vmax, std::abs(static_cast<double>(x)));
        for (int64_t b = 0; b < blocks; ++b) {
          for (int64_t i = b * n; i < (b + 1) * n; ++i) {
            std::vector<double> s(n);
            double mx = -INFINITY, denom = 0.0;
            for (int64_t j = 0; j < n; ++j) {
              double dot = 0.0;
              for (int64_t e = 0; e < d; ++e) dot += double(q[i * stride + e]) * double(k[(b * n + j) * stride + e]);
              mx = std::max(mx, s[j] = dot * prm.scale);
            }
            for (double& x : s) denom += (x = std::exp(x - mx));
            err_lse = std::max(err_lse, std::abs(lse[i] - (mx + std::log(denom))));
            for (int64_t e = 0; e < d; ++e) {
              double want = 0.0;
              for (int64_t j = 0; j < n; ++j) want += s[j] / denom * v[(b * n + j) * stride + e];
              err = std::max(err, std::abs(out[i * stride + e] - want) / vmax);
            }
          }
        }
        const std::string what = std::string(kernel_name(kernel)) + " blocks of " + std::to_string(n) + " rows, " +
                                 std::to_string(threads) + " threads, rows " + (low_first ? "[0, h)" : "[h, n)") +
                                 " first, streamed past " + std::to_string(stream_bytes) + " bytes";
        EXPECT_LT(err, 2e-6) << what;
        EXPECT_LT(err_lse, 2e-5) << what;
      }
    }
  }
}

TEST(CpuKernel, RowsNoKeyReachesStayZeroWithMinusInfinity) {
  // A block with no keys leaves its rows' (out, lse) at (0, -inf), on both paths.
  for (int64_t small : {int64_t{0}, int64_t{1} << 30}) {
    std::vector<float> q(8, 1.0f), out(8, 0.0f), lse(2, -std::numeric_limits<float>::infinity());
    kernels::AttendBlock blk;
    blk.q = q.data();
    blk.q_stride = 4;
    blk.k = blk.v = q.data();
    blk.kv_stride = 4;
    blk.out = out.data();
    blk.out_stride = 4;
    blk.lse = lse.data();
    blk.lse_stride = 1;
    blk.n_q = 2;
    blk.n_k = 0;
    kernels::AttendParams prm;
    prm.head_dim = 4;
    prm.scale = 0.5;
    prm.small_block_scores = prm.fused_small_block_scores = small;
    std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm));
    kernels::cpu::attend({&blk, 1}, prm, workspace.data());
    for (float x : out) EXPECT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
  }
}

// The progress hook may throw (an MPI error while testing a request): the kernels must carry the
// exception out of their OpenMP team and rethrow it on the calling thread, not std::terminate.
// One thread: the hook runs on thread 0 after each of its items, and with a team of two a busy
// machine can leave thread 0 without items (then nothing throws and the test would prove nothing).
TEST(CpuKernel, ProgressHookExceptionIsRethrownAfterTheTeam) {
  const int64_t d = 16, n = 300;
  const auto q = test::random_tensor(n * d, 21);
  std::vector<float> out(n * d, 0.0f), lse(n, -std::numeric_limits<float>::infinity());
  std::vector<float> dq(n * d, 0.0f), dk(n * d, 0.0f), dv(n * d, 0.0f), delta(n, 0.0f);
  kernels::AttendParams prm;
  prm.head_dim = d;
  prm.scale = 0.25;
  prm.threads = 1;
  prm.q_tile = 16;
  prm.k_tile = 32;
  int calls = 0;
  prm.progress = kernels::ProgressHook{[](void* ctx, double) {
                                         if (++*static_cast<int*>(ctx) == 2) throw std::runtime_error("peer died");
                                       },
                                       &calls};
  kernels::AttendBlock blk;
  blk.q = blk.k = blk.v = q.data();
  blk.q_stride = blk.kv_stride = blk.out_stride = d;
  blk.out = out.data();
  blk.lse = lse.data();
  blk.lse_stride = 1;
  blk.n_q = blk.n_k = n;
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * prm.threads);
  EXPECT_THROW(kernels::cpu::attend({&blk, 1}, prm, workspace.data()), std::runtime_error);

  calls = 0;
  kernels::GradBlock g;
  g.q = g.k = g.v = g.dout = q.data();
  g.dq = dq.data();
  g.dk = dk.data();
  g.dv = dv.data();
  g.q_stride = g.kv_stride = g.dkv_stride = d;
  g.lse = lse.data();
  g.delta = delta.data();
  g.state_stride = 1;
  g.n_q = g.n_k = n;
  std::vector<float> grad_workspace(kernels::cpu::backward_workspace_floats_per_thread(prm) * prm.threads);
  EXPECT_THROW(kernels::cpu::attend_backward({&g, 1}, prm, grad_workspace.data()), std::runtime_error);
}

// The fp32 tile kernels: the fused micro-kernel on AVX-512 and on AVX2 (forced, where the CPU has
// them) and sgemm. Head dims the fused kernel takes (multiples of 16 for AVX-512, of 8 for AVX2)
// and ones it leaves to sgemm; shapes that divide no register block (6 keys, 6 query rows, 16
// queries) nor the tiles; dense and causal; one and several calls merged; tiles other than the
// defaults: a q_tile that is no multiple of 16 and a k_tile under one key block; items of one
// query tile and of three (each key tile packed once for sub-tiles of 48, 48 and fewer rows, the
// causal ones skipping the key tiles a sub-tile cannot see).
TEST(CpuKernel, F32TileKernelsMatchFloat64) {
  struct Tiles {
    int64_t q_tile, k_tile, per_item;
  };
  int fused_runs = 0;
  for (const kernels::CpuF32Kernel kernel : kF32Kernels) {
    for (const int64_t d : {8, 16, 48, 64, 72, 80, 128, 5, 264}) {
      kernels::AttendParams prm;
      prm.head_dim = d;
      prm.cpu_f32_kernel = kernel;
      const bool fused = kernels::cpu::fused_f32_runs(prm);
      fused_runs += fused ? 1 : 0;
      if (d == 264 || d == 5 || kernel == kernels::CpuF32Kernel::kSgemm) {
        EXPECT_FALSE(fused) << d;
      }
      for (const BlockCase c : {BlockCase{1, 1, d, false}, BlockCase{97, 131, d, false}, BlockCase{131, 97, d, true},
                                BlockCase{200, 203, d, true, 1, 1}, BlockCase{37, 301, d, false, 5, 3}}) {
        for (const Tiles tiles : {Tiles{128, 256, 0}, Tiles{45, 5, 1}, Tiles{45, 5, 3}}) {
          const int calls = c.n_k > 200 ? 3 : 1;
          const auto [out, lse] = run_block(c, 0, calls, 2, kernel, tiles.q_tile, tiles.k_tile, 1.0, tiles.per_item);
          const bool amx = kernels::cpu::f32_amx_runs(prm);
          const std::string what = std::string(kernel_name(kernel)) + (amx ? " amx " : fused ? " fused " : " sgemm ") +
                                   std::to_string(c.n_q) + "x" + std::to_string(c.n_k) + " d " +
                                   std::to_string(d) + " causal " + std::to_string(c.causal) + " tiles " +
                                   std::to_string(tiles.q_tile) + "x" + std::to_string(tiles.k_tile) + " per item " +
                                   std::to_string(tiles.per_item);
          EXPECT_LT(out, 2e-6) << what;
          EXPECT_LT(lse, 2e-5) << what;
        }
      }
    }
  }
  if (fused_runs == 0) std::printf("note: this CPU has neither AVX-512 nor AVX2+FMA; only sgemm was tested\n");
}

// The fp32 AMX tile (three bf16 parts per operand) is what kAuto and kAmx run for the forward's
// tiles where the CPU has AMX, up to head_dim 256; the forced kernels never run it. Then its
// edges, held to the fp32 bounds: head_dim padded to 32 (1, 31, 33, 200) or not (32, 256), query
// rows padded to 16 (q_tile 37: strips of 32 and 16 rows), key tiles of 48 (run as 64) and of 300
// (capped at 256) with the running max moving between them, causal blocks, strided and packed
// rows, calls merged, a large and a negative scale. And it is a different computation from the
// fused tile (its lse differs), so neither silently stands in for the other, and kAuto takes it
// exactly where its size gate says.
TEST(CpuKernel, F32AmxTileMatchesFloat64) {
  if (!test::amx_choice_holds(kernels::cpu::f32_amx_runs)) GTEST_SKIP() << "the AMX tile does not run on this CPU";
  struct AmxCase {
    BlockCase block;
    int64_t q_tile, k_tile;
    double scale_factor = 1.0;
    int calls = 1;
  };
  const AmxCase cases[] = {
      {{1, 1, 1, false}, 16, 32},           {{37, 111, 31, false}, 37, 48},       {{100, 77, 33, true}, 37, 48},
      {{61, 300, 200, false}, 16, 300},     {{129, 129, 32, true, 1, 1}, 128, 64}, {{200, 613, 64, false}, 37, 300},
      {{257, 257, 256, true}, 128, 256},    {{95, 130, 64, false}, 37, 48, 10.0}, {{95, 130, 64, true}, 37, 48, -0.3},
      {{53, 301, 16, false}, 37, 48, 1.0, 5},
  };
  for (const AmxCase& a : cases) {
    const BlockCase& c = a.block;
    for (int threads : {1, 2}) {
      const auto [out, lse] = run_block(c, 0, a.calls, threads, kernels::CpuF32Kernel::kAmx, a.q_tile, a.k_tile,
                                        a.scale_factor);
      const std::string what = std::to_string(c.n_q) + "x" + std::to_string(c.n_k) + " d " + std::to_string(c.d) +
                               " causal " + std::to_string(c.causal) + " tiles " + std::to_string(a.q_tile) + "x" +
                               std::to_string(a.k_tile) + " scale " + std::to_string(a.scale_factor) + " threads " +
                               std::to_string(threads);
      const double grow = std::max(1.0, std::abs(a.scale_factor) / 4);
      EXPECT_LT(out, 2e-6 * grow) << what;
      EXPECT_LT(lse, 2e-5 * grow) << what;
      // fp32 accuracy, not just the bounds: no worse than twice the fused fp32 tile's error on the
      // same case (measured 0.3-1.3x of it); a part fewer, a part product fewer or P by the degree-4
      // exp2 each fail this.
      const auto [out_fused, lse_fused] = run_block(c, 0, a.calls, threads, kernels::CpuF32Kernel::kAvx512, a.q_tile,
                                                    a.k_tile, a.scale_factor);
      EXPECT_LT(out, 2 * out_fused + 2e-8) << what << " fused tile: " << out_fused;
      EXPECT_LT(lse, 2 * lse_fused + 2e-7) << what << " fused tile: " << lse_fused;
    }
  }
  const BlockCase c{64, 200, 64, false};
  const auto [out_amx, lse_amx] = run_block(c, 0, 1, 1, kernels::CpuF32Kernel::kAmx);
  const auto [out_fused, lse_fused] = run_block(c, 0, 1, 1, kernels::CpuF32Kernel::kAvx512);
  EXPECT_NE(lse_amx, lse_fused);
  // kAuto gives it only items of >= 256 rows seeing >= 1024 keys on average: the same errors as
  // kAmx there, as the fused tile's below (one item of 300 rows each: q_tile 300, per item 1).
  const auto errors = [](const BlockCase& b, kernels::CpuF32Kernel k) {
    return run_block(b, 0, 1, 1, k, 300, 256, 1.0, 1);
  };
  const BlockCase big{300, 1100, 64, false}, few_keys{300, 1000, 64, false}, few_rows{255, 1100, 64, false};
  const BlockCase causal{300, 1100, 64, true};  // a range of 300 keys, 150 seen on average
  EXPECT_EQ(errors(big, kernels::CpuF32Kernel::kAuto), errors(big, kernels::CpuF32Kernel::kAmx));
  EXPECT_NE(errors(big, kernels::CpuF32Kernel::kAuto), errors(big, kernels::CpuF32Kernel::kAvx512));
  EXPECT_EQ(errors(few_keys, kernels::CpuF32Kernel::kAuto), errors(few_keys, kernels::CpuF32Kernel::kAvx512));
  EXPECT_NE(errors(few_keys, kernels::CpuF32Kernel::kAuto), errors(few_keys, kernels::CpuF32Kernel::kAmx));
  EXPECT_EQ(errors(few_rows, kernels::CpuF32Kernel::kAuto), errors(few_rows, kernels::CpuF32Kernel::kAvx512));
  EXPECT_EQ(errors(causal, kernels::CpuF32Kernel::kAuto), errors(causal, kernels::CpuF32Kernel::kAvx512));
  // head_dim 72: no fused tile (not a multiple of 16, above AVX2's default 64 beside AVX-512), so
  // kAuto groups query tiles for the AMX tile; an item under the gate runs a query tile at a time
  // on sgemm.
  const BlockCase d72{131, 97, 72, true};
  const auto grouped = [&](kernels::CpuF32Kernel k) { return run_block(d72, 0, 1, 1, k, 45, 48, 1.0, 3); };
  EXPECT_EQ(grouped(kernels::CpuF32Kernel::kAuto), grouped(kernels::CpuF32Kernel::kSgemm));
  const BlockCase big72{300, 1100, 72, false};
  EXPECT_EQ(errors(big72, kernels::CpuF32Kernel::kAuto), errors(big72, kernels::CpuF32Kernel::kAmx));
}

// Scales the kernels must take as they come: negative (the max is taken after the scale, so the
// fused kernel's pre-scaled q must not change which key is largest), zero (all keys equal), and
// large enough that most probabilities underflow (exp2 of scores far below the max, the AVX-512
// instance's range down to 2^-151 and the AVX2 one's flush at 2^-127).
TEST(CpuKernel, F32TileKernelsTakeAnyScale) {
  for (const kernels::CpuF32Kernel kernel : kF32Kernels) {
    for (const double factor : {-1.0, 0.0, 40.0}) {
      for (const BlockCase c : {BlockCase{97, 131, 64, false}, BlockCase{131, 97, 16, true}}) {
        const auto [out, lse] = run_block(c, 0, 1, 1, kernel, 128, 256, factor);
        const std::string what = std::string(kernel_name(kernel)) + " scale factor " + std::to_string(factor) +
                                 " d " + std::to_string(c.d);
        // fp32 scores carry an error proportional to their size: the bounds grow with the scale
        // (the sgemm tiles measure the same: 5.3e-6 at factor 40, D=64, against 5.5e-6 fused).
        const double grow = std::max(1.0, std::abs(factor) / 4);
        EXPECT_LT(out, 2e-6 * grow) << what;
        EXPECT_LT(lse, 2e-5 * grow) << what;
      }
    }
  }
}

// General masks (masked_blocks.hpp): every kind of band, odd shapes, both paths, 1 and 2
// threads, rows with an earlier state and rows that see no key; on every fp32 tile kernel (a
// test each, so that ctest can run them side by side).
static_assert(std::size(test::kF32Kernels) == 4, "a new fp32 tile kernel needs its tests here too");
TEST(CpuKernel, GeneralMasksMatchFloat64OnAvx512) {
  test::check_masked_forward<float>(2e-6, 2e-5, true, kernels::CpuF32Kernel::kAvx512);
}
TEST(CpuKernel, GeneralMasksMatchFloat64OnAvx2) {
  test::check_masked_forward<float>(2e-6, 2e-5, true, kernels::CpuF32Kernel::kAvx2);
}
TEST(CpuKernel, GeneralMasksMatchFloat64OnSgemm) {
  test::check_masked_forward<float>(2e-6, 2e-5, true, kernels::CpuF32Kernel::kSgemm);
}
TEST(CpuKernel, GeneralMasksMatchFloat64OnAmx) {
  test::check_masked_forward<float>(2e-6, 2e-5, true, kernels::CpuF32Kernel::kAmx);
}

}  // namespace
}  // namespace dring
