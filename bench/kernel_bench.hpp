// kernel_bench.hpp — what the forward and backward rows of dring_kernel_bench share: the table's
// cases, their problems (blocks over one [seq, heads, D] tensor) and the timing helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "dring/kernels/cpu.hpp"

namespace dring::bench {

using Clock = std::chrono::steady_clock;

// Tensors are allocated 64-byte aligned, as the runtime's host allocator does (core/memory.cpp):
// a plain std::vector of 64 MiB starts 16 bytes into a page, so every 256-byte row of a small
// dilated block would span five cache lines instead of four.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { std::free(p); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
};
template <class T>
using Tensor = std::vector<T, CacheLineAllocator<T>>;

constexpr int kSamples = 16;  // output rows checked against float64 per row of the table

// One row of the table: `blocks` blocks of n x n rows of a [seq, heads, D] tensor, made by the
// dilated pair (w, r) = (n*r, r): block (segment s, head h) takes rows s*w + (h mod r) + r*t.
// Dense attention is the pair (seq, 1) on one head (or on each of 4 heads: the *_h4 rows).
struct Case {
  std::string name;
  int64_t seq;
  int64_t heads;
  int64_t head_dim;
  int64_t rate;
  int64_t rows_per_block;
  bool causal;
  int threads;
};

struct Problem {
  Tensor<float> q, k, v, out, lse;
  std::vector<dring::kernels::AttendBlock> blocks;
  double v_max = 0.0;
};

inline const float* f32(const void* x) { return static_cast<const float*>(x); }

struct Result {
  int64_t blocks = 0;
  double flops = 0.0;
  double time_ms = 0.0;
  double gflops = 0.0;
  double max_err = 0.0;
  double versus_time_ms = 0.0;  // --versus-*: the same call on the other kernel or dtype, interleaved
};

Tensor<float> random_normal(int64_t count, uint64_t seed);
double median(std::vector<double> x);

template <class F>
std::vector<double> time_reps_ms(int reps, F&& run) {
  std::vector<double> times;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    run();
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return times;
}

Problem make_problem(const Case& c);
double case_flops(const Case& c, int64_t blocks);

// The times of `reps` runs of measured() after one warm-up, and with versus, of other() run just
// before each (so that both see the same machine: this VM's speed drifts by 20-40% within a
// minute). measured() runs last, so that a check afterwards reads its output.
template <class Measured, class Other>
std::pair<std::vector<double>, std::vector<double>> interleaved_reps(int reps, bool versus, Measured&& measured,
                                                                     Other&& other) {
  std::vector<double> times, other_times;
  for (int rep = 0; rep <= reps; ++rep) {  // rep 0 is the warm-up
    if (versus) {
      const double ms = other();
      if (rep > 0) other_times.push_back(ms);
    }
    const double ms = measured();
    if (rep > 0) times.push_back(ms);
  }
  return {times, other_times};
}

// What a row is also timed on, rep by rep, to compare with the measured kernel.
enum class Versus { kNone, kSgemm, kFp32, kOnednn };

// The backward's row (--backward, kernel_bench_backward.cpp).
Result run_backward_case(const Case& c, int reps, dring::kernels::AttendParams prm, Versus versus);

}  // namespace dring::bench
