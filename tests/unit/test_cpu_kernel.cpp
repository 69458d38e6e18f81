// test_cpu_kernel.cpp — the fp32 CPU attend kernels against float64 on single blocks with
// strided rows: sizes 1, primes, not multiples of the tiles; causal and not; the tiled path and
// the direct small-block path; state carried across calls (the merge of blocks).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dring/kernels/cpu.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

struct BlockCase {
  int64_t n_q, n_k, d;
  bool causal;
};

// Runs `calls` consecutive kernel calls over disjoint key ranges of one block and finalizes;
// returns the max error of out (relative to max |v|) and of lse against float64.
std::pair<double, double> run_block(const BlockCase& c, int64_t small_block_scores, int calls, int threads) {
  // Strided layout: rows of q/acc every 3*d floats, k every 2*d, v every 5*d.
  const int64_t qs = 3 * c.d, ks = 2 * c.d, vs = 5 * c.d;
  const auto q = test::random_tensor(c.n_q * qs, 11);
  const auto k = test::random_tensor(c.n_k * ks, 12);
  const auto v = test::random_tensor(c.n_k * vs, 13);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  std::vector<float> acc(c.n_q * qs, 0.0f), m(c.n_q * 2, -std::numeric_limits<float>::infinity()), l(c.n_q * 2, 0.0f);

  kernels::AttendParams prm;
  prm.head_dim = c.d;
  prm.scale = scale;
  prm.threads = threads;
  prm.q_tile = 32;
  prm.k_tile = 48;
  prm.small_block_scores = small_block_scores;
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * threads);
  // Causal blocks cannot be split by keys (the diagonal lives in one call); split the others.
  const int parts = c.causal ? 1 : calls;
  for (int part = 0; part < parts; ++part) {
    const int64_t j0 = c.n_k * part / parts, j1 = c.n_k * (part + 1) / parts;
    if (j1 == j0) continue;
    kernels::AttendBlock blk;
    blk.q = q.data();
    blk.q_stride = qs;
    blk.k = k.data() + j0 * ks;
    blk.k_stride = ks;
    blk.v = v.data() + j0 * vs;
    blk.v_stride = vs;
    blk.acc = acc.data();
    blk.acc_stride = qs;
    blk.row_max = m.data();
    blk.row_sum = l.data();
    blk.state_stride = 2;
    blk.n_q = c.n_q;
    blk.n_k = j1 - j0;
    blk.causal = c.causal;
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
      for (int64_t e = 0; e < c.d; ++e) dot += double(q[i * qs + e]) * double(k[j * ks + e]);
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    double denom = 0;
    for (double& x : s) denom += (x = std::exp(x - mx));
    const float l_i = l[i * 2];
    const double lse = (m[i * 2] + std::log2(static_cast<double>(l_i))) * std::log(2.0);
    err_lse = std::max(err_lse, std::abs(lse - (mx + std::log(denom))));
    for (int64_t e = 0; e < c.d; ++e) {
      double want = 0;
      for (int64_t j = 0; j < keys; ++j) want += s[j] / denom * v[j * vs + e];
      err_out = std::max(err_out, std::abs(acc[i * qs + e] / l_i - want) / vmax);
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

TEST(CpuKernel, SmallBlockPathMatchesFloat64) {
  for (const BlockCase c : {BlockCase{1, 1, 3, false}, BlockCase{2, 5, 8, false}, BlockCase{7, 7, 16, true},
                            BlockCase{13, 11, 64, false}}) {
    const auto [out, lse] = run_block(c, /*small_block_scores=*/1 << 30, 1, 1);
    EXPECT_LT(out, 2e-6) << c.n_q << "x" << c.n_k;
    EXPECT_LT(lse, 2e-5) << c.n_q << "x" << c.n_k;
  }
}

TEST(CpuKernel, StateCarriesAcrossCallsLikeOneCall) {
  for (int64_t small : {int64_t{0}, int64_t{1} << 30}) {
    const auto [out, lse] = run_block(BlockCase{53, 301, 16, false}, small, /*calls=*/5, 2);
    EXPECT_LT(out, 2e-6);
    EXPECT_LT(lse, 2e-5);
  }
}

TEST(CpuKernel, FinalizeGivesZeroAndMinusInfinityForRowsWithoutKeys) {
  // Two rows, one head, d = 2: row 0 has state (m, l) = (1, 2) in log2 units, row 1 nothing.
  std::vector<float> acc = {4.0f, 6.0f, 0.0f, 0.0f};
  std::vector<float> m = {1.0f, -std::numeric_limits<float>::infinity()}, l = {2.0f, 0.0f};
  std::vector<float> lse(2);
  kernels::cpu::finalize({1, 2, 1, 2, acc.data(), m.data(), l.data(), lse.data()}, 1);
  EXPECT_FLOAT_EQ(acc[0], 2.0f);
  EXPECT_FLOAT_EQ(acc[1], 3.0f);
  EXPECT_FLOAT_EQ(lse[0], 2.0f * std::log(2.0f));
  EXPECT_EQ(acc[2], 0.0f);
  EXPECT_TRUE(std::isinf(lse[1]) && lse[1] < 0);
}

}  // namespace
}  // namespace dring
