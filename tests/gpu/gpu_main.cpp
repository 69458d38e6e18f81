// gpu_main.cpp — GoogleTest main of the GPU suites (run under mpirun, see mpi_gtest.hpp): decides
// once and collectively whether every rank sees a GPU (an MPI_Allreduce, so no rank ever skips a
// collective another rank enters), and says so on one line that CTest turns into "skipped".
#include <mpi.h>

#include <cstdio>

#include "dring/runtime/cuda_backend.hpp"
#include "gpu_test_util.hpp"
#include "mpi_gtest.hpp"

namespace dring::gpu_test {

namespace {
bool g_available = false;
}

bool available() { return g_available; }

}  // namespace dring::gpu_test

int main(int argc, char** argv) {
  return dring::test::run_mpi_gtests(argc, argv, [](int rank) {
    const int mine = dring::cuda_device_count() > 0 ? 1 : 0;
    int all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    dring::gpu_test::g_available = all == 1;
    if (rank == 0 && all == 0) {
      // tests/gpu/CMakeLists.txt matches this line (SKIP_REGULAR_EXPRESSION).
      std::printf("dring-gpu-tests: no GPU visible on some rank; every GPU test is skipped\n");
    }
  });
}
