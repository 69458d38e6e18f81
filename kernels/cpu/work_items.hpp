// work_items.hpp — the thread team shared by the CPU kernels: work items taken dynamically by an
// OpenMP team, each thread with its slice of the scratch, single-threaded sgemm inside, and the
// progress hook called by the first thread (the caller's, the only one that may call MPI).
//
// No exception leaves the parallel region (that would end the process in std::terminate): the
// first one thrown by a work item or by the progress hook is kept, the remaining items are
// skipped, and it is rethrown on the calling thread once the team has finished.
#pragma once

#include <omp.h>
#if defined(__x86_64__) || defined(__SSE__)
#define DRING_HAS_MXCSR 1
#include <xmmintrin.h>
#else
#define DRING_HAS_MXCSR 0
#endif

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

#include "dring/kernels/attend.hpp"
#include "dring/kernels/cpu_gemm.hpp"

namespace dring::kernels::cpu {

// Flushes denormals to zero (MXCSR FTZ and DAZ) on this thread while it lives, then restores the
// thread's mode. The online softmax's exp2 turns every masked or far-below-max score into a
// result under 2^-126, and each denormal result costs the core a microcode assist: on the
// diagonal tiles of causal blocks that made the fused forward 1.7x slower (docs/benchmarks.md).
// Flushed, such a probability is 0 instead of below 2^-126 of the row's largest one, which no
// fp32 sum that holds that largest one (l >= 1) could register anyway (docs/math.md).
class FlushDenormals {
 public:
  FlushDenormals() {
#if DRING_HAS_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8000 | 0x0040);  // FTZ | DAZ
#endif
  }
  ~FlushDenormals() {
#if DRING_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  [[maybe_unused]] unsigned saved_ = 0;
};

// Calls work(item, scratch) for every item on params.threads threads; scratch is the thread's
// `per_thread` floats of `workspace`. Rethrows the first exception of any thread after the team.
template <class Item, class Work>
void run_items(const std::vector<Item>& items, const AttendParams& params, float* workspace, int64_t per_thread,
               Work&& work) {
  const int64_t n_items = static_cast<int64_t>(items.size());
  std::atomic<int64_t> items_done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(params.threads)
  {
    const int thread = omp_get_thread_num();
    const FlushDenormals flush;
    sgemm_single_thread();  // each worker calls a single-threaded sgemm
    float* scratch = workspace + thread * per_thread;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        work(items[it], scratch);
        const int64_t done = items_done.fetch_add(1, std::memory_order_relaxed) + 1;
        if (thread == 0) params.progress(static_cast<double>(done) / static_cast<double>(n_items));
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace dring::kernels::cpu
