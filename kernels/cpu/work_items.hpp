// work_items.hpp — the thread team shared by the CPU kernels: work items taken dynamically by an
// OpenMP team, each thread with its slice of the scratch, single-threaded OpenBLAS inside, and the
// progress hook called by the first thread (the caller's, the only one that may call MPI).
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "dring/kernels/attend.hpp"

extern "C" void openblas_set_num_threads(int num_threads);

namespace dring::kernels::cpu {

// Calls work(item, scratch) for every item on params.threads threads; scratch is the thread's
// `per_thread` floats of `workspace`.
template <class Item, class Work>
void run_items(const std::vector<Item>& items, const AttendParams& params, float* workspace, int64_t per_thread,
               Work&& work) {
  const int64_t n_items = static_cast<int64_t>(items.size());
  // Each worker calls a single-threaded sgemm; OpenBLAS must not start threads of its own.
  openblas_set_num_threads(1);
  std::atomic<int64_t> items_done{0};
#pragma omp parallel num_threads(params.threads)
  {
    const int thread = omp_get_thread_num();
    float* scratch = workspace + thread * per_thread;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      work(items[it], scratch);
      const int64_t done = items_done.fetch_add(1, std::memory_order_relaxed) + 1;
      if (thread == 0) params.progress(static_cast<double>(done) / static_cast<double>(n_items));
    }
  }
}

}  // namespace dring::kernels::cpu
