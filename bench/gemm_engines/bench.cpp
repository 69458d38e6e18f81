// Single-engine GEMM bench for dring's CPU attention shapes. Usage: bench THREADS [cases]
// cases: a comma list of sq,kern,small,omp (default all). Prints CSV lines:
// engine,case,threads,gflops_best,gflops_median,ns_per_gemm,max_abs_err
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <stdexcept>
#include <vector>

#include "engine.h"

using Clock = std::chrono::steady_clock;

static std::vector<float> randv(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Naive double reference of one row-major GEMM, rows [r0, r1) of C; returns max |C - ref|.
static double check(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                    int ldb, float beta, const float* C0, const float* C, int ldc, int r0 = 0, int r1 = -1) {
  if (r1 < 0) r1 = M;
  double err = 0;
  for (int i = r0; i < r1; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) {
        double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
        s += a * b;
      }
      double ref = alpha * s + (beta != 0 ? beta * (double)C0[(size_t)i * ldc + j] : 0.0);
      err = std::max(err, std::fabs(ref - C[(size_t)i * ldc + j]));
    }
  return err;
}

struct Timing {
  double best, median;  // seconds per iteration
};

// Runs f() enough times that one measurement lasts >= 0.3 s; 5 measurements (3 for long ones).
template <class F>
static Timing time_it(F f) {
  f();  // warm-up (JIT, packing buffers, page faults)
  auto t0 = Clock::now();
  f();
  double one = std::chrono::duration<double>(Clock::now() - t0).count();
  long n = std::max(1L, (long)std::ceil(0.3 / std::max(one, 1e-9)));
  int reps = one > 0.1 ? 3 : 5;
  std::vector<double> ts;
  for (int r = 0; r < reps; ++r) {
    auto a = Clock::now();
    for (long i = 0; i < n; ++i) f();
    ts.push_back(std::chrono::duration<double>(Clock::now() - a).count() / n);
  }
  std::sort(ts.begin(), ts.end());
  return {ts.front(), ts[ts.size() / 2]};
}

static void report(const char* cas, int threads, double flops, double gemms, Timing t, double err) {
  std::printf("%s,%s,%d,%.1f,%.1f,%.0f,%.2e\n", eng_name(), cas, threads, flops / t.best * 1e-9,
              flops / t.median * 1e-9, t.best / gemms * 1e9, err);
  std::fflush(stdout);
}

static void bench_square(int threads) {
  const int n = 2048;
  auto A = randv((size_t)n * n, 1), B = randv((size_t)n * n, 2);
  std::vector<float> C((size_t)n * n, 0.f);
  eng_set_threads(threads);
  eng_sgemm(false, false, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
  double err = check(false, false, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), C.data(), n, 0, 32);
  Timing t = time_it([&] { eng_sgemm(false, false, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n); });
  report("sq2048", threads, 2.0 * n * n * n, 1, t, err);
}

// The kernel's tile shapes: Q tile 128 x D at stride H*D*r, K/V tiles of 256 rows walking a 4096-row buffer.
static void bench_kernel(int D, int H, int r) {
  const int ld = H * D * r, rows = 4096, nq = 128, bk = 256, tiles = rows / bk;
  auto Q = randv((size_t)nq * ld, 3), K = randv((size_t)rows * ld, 4), V = randv((size_t)rows * ld, 5);
  std::vector<float> S((size_t)nq * bk), O((size_t)nq * ld, 0.f);
  auto P = randv((size_t)nq * bk, 6);
  const float alpha = 0.125f;
  eng_set_threads(1);
  // QK^T: S = alpha Q K^T (NT), beta 0.
  eng_sgemm(false, true, nq, bk, D, alpha, Q.data(), ld, K.data(), ld, 0.f, S.data(), bk);
  double e1 = check(false, true, nq, bk, D, alpha, Q.data(), ld, K.data(), ld, 0.f, S.data(), S.data(), bk);
  int j = 0;
  Timing t1 = time_it([&] {
    eng_sgemm(false, true, nq, bk, D, alpha, Q.data(), ld, K.data() + (size_t)j * bk * ld, ld, 0.f, S.data(), bk);
    j = (j + 1) % tiles;
  });
  char name[64];
  std::snprintf(name, sizeof name, "QK_128x256x%d_ld%d", D, ld);
  report(name, 1, 2.0 * nq * bk * D, 1, t1, e1);
  // PV: O += P V (NN), beta 1, O rows strided like out.
  std::vector<float> O0 = O;
  eng_sgemm(false, false, nq, D, bk, 1.f, P.data(), bk, V.data(), ld, 1.f, O.data(), ld);
  double e2 = check(false, false, nq, D, bk, 1.f, P.data(), bk, V.data(), ld, 1.f, O0.data(), O.data(), ld);
  j = 0;
  Timing t2 = time_it([&] {
    eng_sgemm(false, false, nq, D, bk, 1.f, P.data(), bk, V.data() + (size_t)j * bk * ld, ld, 1.f, O.data(), ld);
    j = (j + 1) % tiles;
  });
  std::snprintf(name, sizeof name, "PV_128x%dx256_ld%d", D, ld);
  report(name, 1, 2.0 * nq * bk * D, 1, t2, e2);
}

// Two OpenMP threads, each calling the engine single-threaded on its own tiles (as dring's team does).
static void bench_omp_team(int D) {
  const int H = 4, ld = H * D, rows = 4096, nq = 128, bk = 256, tiles = rows / bk;
  const int T = 2;
  std::vector<std::vector<float>> Q(T), K(T), S(T);
  for (int t = 0; t < T; ++t) {
    Q[t] = randv((size_t)nq * ld, 10 + t);
    K[t] = randv((size_t)rows * ld, 20 + t);
    S[t].assign((size_t)nq * bk, 0.f);
  }
  eng_set_threads(1);
  const int iters = 400;
  auto body = [&] {
#pragma omp parallel num_threads(T)
    {
      int t = omp_get_thread_num();
      eng_set_threads(1);
      for (int i = 0; i < iters; ++i)
        eng_sgemm(false, true, nq, bk, D, 0.125f, Q[t].data(), ld, K[t].data() + (size_t)(i % tiles) * bk * ld, ld,
                  0.f, S[t].data(), bk);
    }
  };
  Timing t = time_it(body);
  double err = 0;
  for (int tt = 0; tt < T; ++tt)
    err = std::max(err, check(false, true, nq, bk, D, 0.125f, Q[tt].data(), ld,
                              K[tt].data() + (size_t)((iters - 1) % tiles) * bk * ld, ld, 0.f, S[tt].data(),
                              S[tt].data(), bk));
  char name[64];
  std::snprintf(name, sizeof name, "ompteam2_QK_D%d", D);
  report(name, T, 2.0 * nq * bk * D * iters * T, (double)iters * T, t, err);
}

// Small dilated blocks: S_b = alpha Q_b K_b^T, s x s x 64, rows r*H*D apart; nb blocks, one per segment.
static void bench_small(int s) {
  const int D = 64, H = 4, r = 4, ld = r * H * D;  // 1024
  const int nb = std::max(64, 16384 / (s * s) * 4);  // 1024 for s=8  // enough work per batch
  const long seg = (long)s * ld;                     // one segment of s dilated rows
  auto X = randv((size_t)nb * seg + ld, 7), Y = randv((size_t)nb * seg + ld, 8);
  std::vector<float> S((size_t)nb * s * s, 0.f);
  const float alpha = 0.125f;
  eng_set_threads(1);
  double flops = 2.0 * s * s * D * nb;
  auto errof = [&] {
    double e = 0;
    for (int b = 0; b < nb; b += std::max(1, nb / 8))
      e = std::max(e, check(false, true, s, s, D, alpha, X.data() + b * seg, ld, Y.data() + b * seg, ld, 0.f,
                            S.data() + (size_t)b * s * s, S.data() + (size_t)b * s * s, s));
    return e;
  };
  char name[64];
  Timing t = time_it([&] {
    for (int b = 0; b < nb; ++b)
      eng_sgemm(false, true, s, s, D, alpha, X.data() + b * seg, ld, Y.data() + b * seg, ld, 0.f,
                S.data() + (size_t)b * s * s, s);
  });
  std::snprintf(name, sizeof name, "small%d_loop", s);
  report(name, 1, flops, nb, t, errof());
  for (auto& v : eng_batch_variants()) {
    std::fill(S.begin(), S.end(), 0.f);
    try {
      Timing tb = time_it([&] {
        v.fn(false, true, s, s, D, alpha, X.data(), ld, seg, Y.data(), ld, seg, 0.f, S.data(), s, (long)s * s, nb);
      });
      std::snprintf(name, sizeof name, "small%d_%s", s, v.name.c_str());
      report(name, 1, flops, nb, tb, errof());
    } catch (std::exception& e) { std::printf("%s,small%d_%s,FAILED %s\n", eng_name(), s, v.name.c_str(), e.what()); }
  }
  // Hot: the same block every call (inputs stay in L1/L2): compute + per-call overhead only. Block 0 is checked.
  const int nh = nb;
  Timing th = time_it([&] {
    for (int b = 0; b < nh; ++b)
      eng_sgemm(false, true, s, s, D, alpha, X.data(), ld, Y.data(), ld, 0.f, S.data() + (size_t)b * s * s, s);
  });
  double eh = check(false, true, s, s, D, alpha, X.data(), ld, Y.data(), ld, 0.f, S.data(), S.data(), s);
  std::snprintf(name, sizeof name, "small%d_hot_loop", s);
  report(name, 1, flops, nb, th, eh);
  for (auto& v : eng_batch_variants()) {
    std::fill(S.begin(), S.end(), 0.f);
    try {
      Timing tb = time_it([&] {
        v.fn(false, true, s, s, D, alpha, X.data(), ld, 0, Y.data(), ld, 0, 0.f, S.data(), s, (long)s * s, nh);
      });
      double e2 = check(false, true, s, s, D, alpha, X.data(), ld, Y.data(), ld, 0.f, S.data() + (size_t)(nh - 1) * s * s,
                        S.data() + (size_t)(nh - 1) * s * s, s);
      std::snprintf(name, sizeof name, "small%d_hot_%s", s, v.name.c_str());
      report(name, 1, flops, nb, tb, e2);
    } catch (std::exception& e) { std::printf("%s,small%d_hot_%s,FAILED %s\n", eng_name(), s, v.name.c_str(), e.what()); }
  }
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  std::string cases = argc > 2 ? argv[2] : "sq,kern,small,omp";
  eng_init(threads);
  std::fprintf(stderr, "engine %s: %s\n", eng_name(), eng_info().c_str());
  auto has = [&](const char* c) { return cases.find(c) != std::string::npos; };
  if (has("sq")) bench_square(threads);
  if (threads == 1 && has("kern")) {
    bench_kernel(64, 4, 1);
    bench_kernel(128, 4, 1);
  }
  if (threads == 1 && has("small"))
    for (int s : {8, 16, 32, 64}) bench_small(s);
  if (has("omp")) { bench_omp_team(64); bench_omp_team(128); }
  return 0;
}
