// masked_blocks.hpp — the CPU attend kernels (forward and backward, fp32 or bf16 storage) on
// single blocks under random BlockMasks, against a float64 computation written here from the
// band's definition (key j counts for query i iff band.lo <= q_pos(i) - k_pos(j) <= band.hi,
// tested pair by pair, never through key_begin/key_end).
//
// Rows start from a random earlier state (or none), so the check covers the merge and the rule
// that a row with no visible key is left exactly as it was; backward gradients accumulate onto
// random values, and rows no key (or no query) reaches must keep them exactly.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "dring/core/geometry.hpp"
#include "dring/kernels/cpu.hpp"
#include "test_util.hpp"

namespace dring::test {

// One block: its mask and its shape; `name` says which kind of band it is.
struct MaskedCase {
  std::string name;
  BlockMask mask;
  int64_t n_q = 0, n_k = 0, d = 0;
};

inline bool visible(const BlockMask& m, int64_t i, int64_t j) {
  const int64_t diff = m.q_pos(i) - m.k_pos(j);
  return diff >= m.band.lo && diff <= m.band.hi;
}

// Every kind of band a kernel meets, with random positions and steps (1..5), on odd shapes: no
// mask, the causal diagonal, causal windows (1, 2, 7, larger than any distance), non-causal
// windows, bands shifted off the diagonal (lo > 0, as striped layouts give), keys entirely after
// the queries (no row sees anything) and a window narrower than the steps (some rows see none).
inline std::vector<MaskedCase> masked_cases(uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  auto at_random = [&](Band band) {
    BlockMask m;
    m.band = band;
    m.q_step = uniform(1, 5);
    m.k_step = uniform(1, 5);
    m.q_first = uniform(0, 40);
    m.k_first = std::max<int64_t>(0, m.q_first + uniform(-30, 30));
    return m;
  };
  std::vector<std::pair<std::string, BlockMask>> masks = {{"none", BlockMask::none()},
                                                          {"causal", BlockMask::causal()}};
  for (int64_t w : {1, 2, 7, 1 << 20}) masks.push_back({"causal window " + std::to_string(w), at_random(Band::of(true, w))});
  for (int64_t w : {1, 4, 33}) masks.push_back({"window " + std::to_string(w), at_random(Band::of(false, w))});
  for (int64_t lo : {1, 3}) masks.push_back({"shifted causal lo " + std::to_string(lo), at_random(Band{lo, Band::kUnbounded})});
  masks.push_back({"shifted window", at_random(Band{2, 9})});
  BlockMask after = at_random(Band::of(true, 0));
  after.k_first = after.q_first + 100000;  // every key after every query
  masks.push_back({"keys after queries", after});
  BlockMask sparse = at_random(Band::of(true, 1));  // only rows whose position is a key's
  sparse.q_step = 2;
  sparse.k_step = 3;
  masks.push_back({"window 1 across steps 2 and 3", sparse});
  BlockMask gaps = at_random(Band::of(true, 4));  // rows see 4 keys each, 40 keys apart: runs of
  gaps.q_step = 40;                               // keys between them that no row sees
  gaps.k_step = 1;
  masks.push_back({"window 4, rows 40 keys apart", gaps});

  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {1, 37}, {7, 7}, {37, 130}, {130, 37},
                                                           {130, 130}, {300, 300}, {7, 300}};
  std::vector<MaskedCase> cases;
  for (size_t s = 0; s < shapes.size(); ++s) {
    for (size_t k = 0; k < masks.size(); ++k) {
      const int64_t d = (s + k) % 2 == 0 ? 5 : 64;
      cases.push_back({masks[k].first, masks[k].second, shapes[s].first, shapes[s].second, d});
    }
  }
  return cases;
}

inline std::string describe(const MaskedCase& c) {
  const BlockMask& m = c.mask;
  return c.name + ": " + std::to_string(c.n_q) + "x" + std::to_string(c.n_k) + " d " + std::to_string(c.d) +
         " band [" + std::to_string(m.band.lo) + ", " + std::to_string(m.band.hi) + "] q " +
         std::to_string(m.q_first) + "+" + std::to_string(m.q_step) + "i k " + std::to_string(m.k_first) + "+" +
         std::to_string(m.k_step) + "j";
}

// Storage: float (fp32) or uint16_t (bf16 bit patterns). `store` rounds fp32 values into the
// storage type; `values` are the exact values it then holds.
template <class T>
struct Stored {
  std::vector<T> data;
  std::vector<float> values;
};
template <class T>
Stored<T> store(const std::vector<float>& x) {
  if constexpr (std::is_same_v<T, float>) {
    return {x, x};
  } else {
    Stored<T> s{std::vector<T>(x.size()), std::vector<float>(x.size())};
    kernels::cpu::f32_to_bf16(x.data(), s.data.data(), static_cast<int64_t>(x.size()));
    kernels::cpu::bf16_to_f32(s.data.data(), s.values.data(), static_cast<int64_t>(x.size()));
    return s;
  }
}
template <class T>
constexpr DType kStorage = std::is_same_v<T, float> ? DType::kF32 : DType::kBF16;

// How a test runs the kernel: tiles small enough that every case has full, partial and empty
// tiles, the direct path or the tiles, and a number of threads.
struct KernelRun {
  bool direct = false;
  int threads = 1;
  int64_t q_tile = 16, k_tile = 24;
  bool bf16_matmul = true;  // bf16 only: false forces the widening path
  kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto;  // fp32 only: the tile kernel
  kernels::CpuBf16Kernel bf16_kernel = kernels::CpuBf16Kernel::kAuto;  // bf16 only: AMX or oneDNN tiles
};

// Every fp32 tile kernel a test runs (a fused one falls back to sgemm where the CPU or head_dim
// does not take it; kAmx runs both passes on the AMX tiles in three bf16 parts where the CPU has
// AMX, else and elsewhere what kAuto runs), and its name.
inline constexpr kernels::CpuF32Kernel kF32Kernels[] = {kernels::CpuF32Kernel::kAvx512, kernels::CpuF32Kernel::kAvx2,
                                                        kernels::CpuF32Kernel::kSgemm, kernels::CpuF32Kernel::kAmx};
inline const char* kernel_name(kernels::CpuF32Kernel k) {
  switch (k) {
    case kernels::CpuF32Kernel::kAvx512: return "avx512";
    case kernels::CpuF32Kernel::kAvx2: return "avx2";
    case kernels::CpuF32Kernel::kSgemm: return "sgemm";
    case kernels::CpuF32Kernel::kAmx: return "amx";
    case kernels::CpuF32Kernel::kAuto: break;
  }
  return "auto";
}

// Whether `runs` (cpu::f32_amx_runs or f32_amx_backward_runs) says an fp32 AMX tile runs on this
// CPU; where it does, checks the choice around it: kAmx and kAuto take it up to head_dim 256, the
// forced kernels never.
inline bool amx_choice_holds(bool (*runs)(const kernels::AttendParams&)) {
  kernels::AttendParams prm;
  prm.head_dim = 64;
  prm.cpu_f32_kernel = kernels::CpuF32Kernel::kAmx;
  if (!runs(prm)) return false;
  prm.cpu_f32_kernel = kernels::CpuF32Kernel::kAuto;
  EXPECT_TRUE(runs(prm));
  for (const auto forced : {kernels::CpuF32Kernel::kAvx512, kernels::CpuF32Kernel::kAvx2, kernels::CpuF32Kernel::kSgemm}) {
    prm.cpu_f32_kernel = forced;
    EXPECT_FALSE(runs(prm)) << kernel_name(forced);
  }
  prm.cpu_f32_kernel = kernels::CpuF32Kernel::kAmx;
  prm.head_dim = 257;
  EXPECT_FALSE(runs(prm));
  return true;
}

inline kernels::AttendParams params_of(const KernelRun& run, DType dtype, int64_t d, double scale) {
  kernels::AttendParams prm;
  prm.dtype = dtype;
  prm.head_dim = d;
  prm.scale = scale;
  prm.threads = run.threads;
  prm.q_tile = run.q_tile;
  prm.k_tile = run.k_tile;
  prm.small_block_scores = prm.fused_small_block_scores = run.direct ? int64_t{1} << 40 : 0;
  prm.bf16_matmul = run.bf16_matmul;
  prm.cpu_f32_kernel = run.f32_kernel;
  prm.cpu_bf16_kernel = run.bf16_kernel;
  return prm;
}

// Which tiles of `run` a case has (a test checks that all three kinds occurred), and how many
// rows see no key at all.
struct Coverage {
  int64_t full_tiles = 0, partial_tiles = 0, empty_tiles = 0, rows_without_keys = 0;
  void add(const MaskedCase& c, const KernelRun& run) {
    for (int64_t i0 = 0; i0 < c.n_q; i0 += run.q_tile) {
      for (int64_t j0 = 0; j0 < c.n_k; j0 += run.k_tile) {
        const int64_t i1 = std::min(c.n_q, i0 + run.q_tile), j1 = std::min(c.n_k, j0 + run.k_tile);
        int64_t seen = 0;
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = j0; j < j1; ++j) seen += visible(c.mask, i, j) ? 1 : 0;
        }
        (seen == 0 ? empty_tiles : seen == (i1 - i0) * (j1 - j0) ? full_tiles : partial_tiles) += 1;
      }
    }
    for (int64_t i = 0; i < c.n_q; ++i) {
      bool any = false;
      for (int64_t j = 0; j < c.n_k && !any; ++j) any = visible(c.mask, i, j);
      rows_without_keys += any ? 0 : 1;
    }
  }
};

struct ForwardErrors {
  double out = 0.0;  // relative to the largest |v| or |earlier out|
  double lse = 0.0;
  int64_t changed_rows_without_keys = 0;  // must be 0: such rows keep (out, lse) bit for bit
};

// The forward kernel on one masked block, rows strided (q and out 3d apart, k and v 2d), every
// other row carrying an earlier state.
template <class T>
ForwardErrors check_forward(const MaskedCase& c, const KernelRun& run, uint64_t seed) {
  const int64_t d = c.d, qs = 3 * d, kvs = 2 * d;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const Stored<T> q = store<T>(random_tensor(c.n_q * qs, seed)), k = store<T>(random_tensor(c.n_k * kvs, seed + 1));
  const Stored<T> v = store<T>(random_tensor(c.n_k * kvs, seed + 2));
  Stored<T> out = store<T>(random_tensor(c.n_q * qs, seed + 3));
  std::vector<float> lse(c.n_q * 2);
  // Irregular earlier lse values, so that one rewritten through log2 units would show.
  const std::vector<float> earlier_lse = random_tensor(c.n_q, seed + 4);
  for (int64_t i = 0; i < c.n_q; ++i) {
    lse[i * 2] = i % 2 == 0 ? -std::numeric_limits<float>::infinity() : earlier_lse[i];
    lse[i * 2 + 1] = 12345.0f;  // between the rows: must stay
    if (i % 2 == 0) {
      for (int64_t e = 0; e < d; ++e) out.values[i * qs + e] = 0.0f;  // no earlier state: out is 0
    }
  }
  out = store<T>(out.values);
  const Stored<T> before = out;
  const std::vector<float> lse_before = lse;

  const kernels::AttendParams prm = params_of(run, kStorage<T>, d, scale);
  kernels::AttendBlock blk;
  blk.q = q.data.data();
  blk.q_stride = qs;
  blk.k = k.data.data();
  blk.v = v.data.data();
  blk.kv_stride = kvs;
  blk.out = out.data.data();
  blk.out_stride = qs;
  blk.lse = lse.data();
  blk.lse_stride = 2;
  blk.n_q = c.n_q;
  blk.n_k = c.n_k;
  blk.mask = c.mask;
  // NaN in the scratch: a kernel that reads scratch it did not write shows it.
  std::vector<float> workspace(kernels::cpu::workspace_floats_per_thread(prm) * run.threads,
                               std::numeric_limits<float>::quiet_NaN());
  kernels::cpu::attend({&blk, 1}, prm, workspace.data());
  std::vector<float> got(c.n_q * qs);  // the values out now holds
  if constexpr (std::is_same_v<T, float>) {
    got = out.data;
  } else {
    kernels::cpu::bf16_to_f32(out.data.data(), got.data(), c.n_q * qs);
  }

  ForwardErrors err;
  double magnitude = 0.0;
  for (float x : v.values) magnitude = std::max(magnitude, std::abs(static_cast<double>(x)));
  for (float x : before.values) magnitude = std::max(magnitude, std::abs(static_cast<double>(x)));
  for (int64_t i = 0; i < c.n_q; ++i) {
    // The earlier state is one more term of the softmax: score lse0, value out0.
    const double lse0 = lse_before[i * 2];
    std::vector<double> s;
    std::vector<int64_t> keys;
    for (int64_t j = 0; j < c.n_k; ++j) {
      if (!visible(c.mask, i, j)) continue;
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e) dot += double(q.values[i * qs + e]) * double(k.values[j * kvs + e]);
      s.push_back(dot * scale);
      keys.push_back(j);
    }
    EXPECT_EQ(lse[i * 2 + 1], 12345.0f) << "wrote between the lse entries";
    if (keys.empty()) {
      bool same = lse[i * 2] == lse_before[i * 2] || (std::isinf(lse[i * 2]) && std::isinf(lse_before[i * 2]));
      for (int64_t e = 0; e < d; ++e) same = same && out.data[i * qs + e] == before.data[i * qs + e];
      err.changed_rows_without_keys += same ? 0 : 1;
      continue;
    }
    double mx = lse0;
    for (double x : s) mx = std::max(mx, x);
    const double w0 = std::isinf(lse0) ? 0.0 : std::exp(lse0 - mx);
    double denom = w0;
    for (double& x : s) denom += (x = std::exp(x - mx));
    err.lse = std::max(err.lse, std::abs(lse[i * 2] - (mx + std::log(denom))));
    for (int64_t e = 0; e < d; ++e) {
      double want = w0 * before.values[i * qs + e];
      for (size_t n = 0; n < keys.size(); ++n) want += s[n] * v.values[keys[n] * kvs + e];
      err.out = std::max(err.out, std::abs(got[i * qs + e] - want / denom) / magnitude);
    }
    for (int64_t e = d; e < qs; ++e) {
      EXPECT_EQ(out.data[i * qs + e], before.data[i * qs + e]) << "wrote between the out rows";
    }
  }
  return err;
}

struct BackwardErrors {
  double worst = 0.0;  // max |error| of dq, dk, dv relative to the largest gradient term or sum
  int64_t changed_rows_without_terms = 0;  // dq rows of queries, dk/dv rows of keys, no term reaches
};

// The backward kernel on one masked block of two query heads (rows strided: q, dout, dq rows 3d*2
// apart with the heads 2d apart, k, v, dk, dv 2d apart). lse is the block's own plus up to 0.5 (as
// if other blocks had reached the row), or -inf / anything for a row no key reaches; delta is
// random. The gradients accumulate onto random values.
template <class T>
BackwardErrors check_backward(const MaskedCase& c, const KernelRun& run, uint64_t seed) {
  const int64_t d = c.d, heads = 2, hstep = 2 * d, qs = 3 * d * heads, kvs = 2 * d;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const Stored<T> q = store<T>(random_tensor(c.n_q * qs, seed)), dout = store<T>(random_tensor(c.n_q * qs, seed + 1));
  const Stored<T> k = store<T>(random_tensor(c.n_k * kvs, seed + 2)), v = store<T>(random_tensor(c.n_k * kvs, seed + 3));
  const std::vector<float> noise = random_tensor(heads * c.n_q, seed + 4);
  std::vector<float> lse(heads * c.n_q), delta(heads * c.n_q);
  auto score = [&](int64_t n, int64_t i, int64_t j) {
    double dot = 0.0;
    for (int64_t e = 0; e < d; ++e) dot += double(q.values[i * qs + n * hstep + e]) * k.values[j * kvs + e];
    return dot * scale;
  };
  for (int64_t n = 0; n < heads; ++n) {
    for (int64_t i = 0; i < c.n_q; ++i) {
      double mx = -INFINITY, sum = 0.0;
      for (int64_t j = 0; j < c.n_k; ++j) mx = visible(c.mask, i, j) ? std::max(mx, score(n, i, j)) : mx;
      for (int64_t j = 0; j < c.n_k; ++j) sum += visible(c.mask, i, j) ? std::exp(score(n, i, j) - mx) : 0.0;
      const float extra = 0.25f * (noise[n * c.n_q + i] + 1.0f);
      lse[n * c.n_q + i] = sum > 0 ? static_cast<float>(mx + std::log(sum)) + std::clamp(extra, 0.0f, 0.5f)
                                   : (i % 2 == 0 ? -std::numeric_limits<float>::infinity() : extra);
      delta[n * c.n_q + i] = 0.5f * noise[n * c.n_q + i];
    }
  }
  // Earlier gradients, small beside this block's (fp32 rounding of a large one would hide errors).
  auto small_random = [&](int64_t count, uint64_t s) {
    std::vector<float> x = random_tensor(count, s);
    for (float& e : x) e *= 0.01f;
    return x;
  };
  const std::vector<float> dq0 = small_random(c.n_q * qs, seed + 5), dk0 = small_random(c.n_k * kvs, seed + 6);
  const std::vector<float> dv0 = small_random(c.n_k * kvs, seed + 7);
  std::vector<double> dq(dq0.begin(), dq0.end()), dk(dk0.begin(), dk0.end()), dv(dv0.begin(), dv0.end());
  std::vector<bool> q_reached(c.n_q, false), k_reached(c.n_k, false);
  double largest = 0.0;
  for (int64_t n = 0; n < heads; ++n) {
    for (int64_t i = 0; i < c.n_q; ++i) {
      for (int64_t j = 0; j < c.n_k; ++j) {
        if (!visible(c.mask, i, j)) continue;
        q_reached[i] = k_reached[j] = true;
        const double p = std::exp(score(n, i, j) - double(lse[n * c.n_q + i]));
        double dp = 0.0;
        for (int64_t e = 0; e < d; ++e) dp += double(dout.values[i * qs + n * hstep + e]) * v.values[j * kvs + e];
        const double ds = p * (dp - delta[n * c.n_q + i]) * scale;
        for (int64_t e = 0; e < d; ++e) {
          const double terms[3] = {ds * k.values[j * kvs + e], ds * q.values[i * qs + n * hstep + e],
                                   p * dout.values[i * qs + n * hstep + e]};
          dq[i * qs + n * hstep + e] += terms[0];
          dk[j * kvs + e] += terms[1];
          dv[j * kvs + e] += terms[2];
          for (double t : terms) largest = std::max(largest, std::abs(t));
        }
      }
    }
  }
  std::vector<float> gq = dq0, gk = dk0, gv = dv0;
  kernels::GradBlock blk;
  blk.q = q.data.data();
  blk.dout = dout.data.data();
  blk.dq = gq.data();
  blk.q_stride = qs;
  blk.q_head_step = hstep;
  blk.lse = lse.data();
  blk.delta = delta.data();
  blk.state_stride = 1;
  blk.state_head_step = c.n_q;
  blk.n_heads = heads;
  blk.n_q = c.n_q;
  blk.k = k.data.data();
  blk.v = v.data.data();
  blk.kv_stride = kvs;
  blk.dk = gk.data();
  blk.dv = gv.data();
  blk.dkv_stride = kvs;
  blk.n_k = c.n_k;
  blk.mask = c.mask;
  const kernels::AttendParams prm = params_of(run, kStorage<T>, d, scale);
  // NaN in the scratch: a kernel that reads scratch it did not write shows it.
  std::vector<float> workspace(kernels::cpu::backward_workspace_floats_per_thread(prm) * run.threads,
                               std::numeric_limits<float>::quiet_NaN());
  kernels::cpu::attend_backward({&blk, 1}, prm, workspace.data());

  BackwardErrors err;
  // Relative to the largest term or sum of terms (a sum over many keys may outgrow every term).
  for (size_t n = 0; n < dq.size(); ++n) largest = std::max(largest, std::abs(dq[n] - dq0[n]));
  for (size_t n = 0; n < dk.size(); ++n) largest = std::max({largest, std::abs(dk[n] - dk0[n]), std::abs(dv[n] - dv0[n])});
  largest = std::max(largest, 1e-3);  // a block with no visible pair has no gradient at all
  for (auto [got, want] : {std::pair{&gq, &dq}, std::pair{&gk, &dk}, std::pair{&gv, &dv}}) {
    for (size_t n = 0; n < got->size(); ++n) {
      err.worst = std::max(err.worst, std::abs((*got)[n] - (*want)[n]) / largest);
      if (std::isnan((*got)[n])) err.worst = INFINITY;
    }
  }
  for (int64_t i = 0; i < c.n_q; ++i) {
    if (q_reached[i]) continue;
    for (int64_t e = 0; e < qs; ++e) err.changed_rows_without_terms += gq[i * qs + e] == dq0[i * qs + e] ? 0 : 1;
  }
  for (int64_t j = 0; j < c.n_k; ++j) {
    if (k_reached[j]) continue;
    for (int64_t e = 0; e < kvs; ++e) {
      err.changed_rows_without_terms += gk[j * kvs + e] == dk0[j * kvs + e] && gv[j * kvs + e] == dv0[j * kvs + e] ? 0 : 1;
    }
  }
  return err;
}

// Every case of masked_cases under every run (direct path, tiles on one and two threads), and the
// coverage the cases promise: full, partial and empty tiles, and rows that see no key at all.
template <class Check>
void for_all_masked(Check&& check, bool bf16_matmul = true,
                    kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto,
                    kernels::CpuBf16Kernel bf16_kernel = kernels::CpuBf16Kernel::kAuto) {
  // The direct path twice: with tiles this small its fp32 blocks fit the whole-block fused
  // kernel's scratch only when tiny (the rest run row by row); with the default tiles all do.
  KernelRun runs[] = {{true, 1}, {false, 1}, {false, 2}, {true, 2, 128, 256}};
  for (KernelRun& run : runs) {
    run.bf16_matmul = bf16_matmul;
    run.f32_kernel = f32_kernel;
    run.bf16_kernel = bf16_kernel;
  }
  Coverage coverage;
  uint64_t seed = 100;
  for (const MaskedCase& c : masked_cases(7)) {
    for (size_t r = 0; r < std::size(runs); ++r) {
      const KernelRun& run = runs[r];
      // The second direct run takes the first one's inputs.
      check(c, run, seed + 20 * (r % 3), describe(c) + (run.direct ? " direct" : " tiled") + " threads " +
                                             std::to_string(run.threads) + " q_tile " + std::to_string(run.q_tile));
    }
    seed += 60;
    coverage.add(c, runs[1]);
  }
  EXPECT_GT(coverage.full_tiles, 0);
  EXPECT_GT(coverage.partial_tiles, 0);
  EXPECT_GT(coverage.empty_tiles, 0);
  EXPECT_GT(coverage.rows_without_keys, 0);
}

template <class T>
void check_masked_forward(double out_bound, double lse_bound, bool bf16_matmul = true,
                          kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto,
                          kernels::CpuBf16Kernel bf16_kernel = kernels::CpuBf16Kernel::kAuto) {
  for_all_masked([&](const MaskedCase& c, const KernelRun& run, uint64_t seed, const std::string& what) {
    const ForwardErrors f = check_forward<T>(c, run, seed);
    EXPECT_LT(f.out, out_bound) << what;
    EXPECT_LT(f.lse, lse_bound) << what;
    EXPECT_EQ(f.changed_rows_without_keys, 0) << what;
  }, bf16_matmul, f32_kernel, bf16_kernel);
}

template <class T>
void check_masked_backward(double grad_bound, bool bf16_matmul = true,
                           kernels::CpuF32Kernel f32_kernel = kernels::CpuF32Kernel::kAuto,
                           kernels::CpuBf16Kernel bf16_kernel = kernels::CpuBf16Kernel::kAuto) {
  for_all_masked([&](const MaskedCase& c, const KernelRun& run, uint64_t seed, const std::string& what) {
    const BackwardErrors b = check_backward<T>(c, run, seed);
    EXPECT_LT(b.worst, grad_bound) << what;
    EXPECT_EQ(b.changed_rows_without_terms, 0) << what;
  }, bf16_matmul, f32_kernel, bf16_kernel);
}

}  // namespace dring::test
