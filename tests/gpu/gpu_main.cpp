// gpu_main.cpp — GoogleTest main of the GPU suites (run under mpirun): initialises MPI, decides
// once and collectively whether every rank sees a GPU (an MPI_Allreduce, so no rank ever skips a
// collective another rank enters), and says so on one line that CTest turns into "skipped".
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "dring/cuda_backend.hpp"
#include "gpu_test_util.hpp"

namespace dring::gpu_test {

namespace {
bool g_available = false;
}

bool available() { return g_available; }

}  // namespace dring::gpu_test

namespace {

class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, result.file_name() ? result.file_name() : "?",
                   result.line_number(), result.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int mine = dring::cuda_device_count() > 0 ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  dring::gpu_test::g_available = all == 1;
  if (rank == 0 && all == 0) {
    // tests/gpu/CMakeLists.txt matches this line (SKIP_REGULAR_EXPRESSION).
    std::printf("dring-gpu-tests: no GPU visible on some rank; every GPU test is skipped\n");
  }
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  const int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}
