// node_probe.cpp — what dring's node placement decides on every rank, for the multi-node test:
// dring::node_placement (MPI_Comm_split_type SHARED: which ranks share this node) and
// dring::default_threads (the kernel threads `dring run` takes when --threads is not given), the
// same functions `dring run` calls. Rank 0 prints one JSON line per rank, in rank order:
//   {"world_rank": 2, "host": "node2", "local_rank": 0, "local_size": 2, "cores": 2,
//    "hardware": 2, "threads": 1}
// Usage: mpirun -np K dring_node_probe   (or srun --mpi=pmix -n K dring_node_probe)
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <thread>
#include <vector>

#include "dring/runtime/node.hpp"

namespace {

struct Placement {
  char host[64];
  int local_rank;
  int local_size;
  int cores;
  int hardware;
  int threads;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world_rank = 0, world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  Placement mine{};
  try {
    const dring::NodePlacement placement = dring::node_placement(MPI_COMM_WORLD);
    mine.local_rank = placement.local_rank;
    mine.local_size = placement.local_size;
    mine.cores = placement.cores;
    mine.threads = dring::default_threads(MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "node_probe: rank %d: %s\n", world_rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  mine.hardware = static_cast<int>(std::thread::hardware_concurrency());
  gethostname(mine.host, sizeof mine.host - 1);
  std::vector<Placement> all(world_rank == 0 ? world_size : 0);
  MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0, MPI_COMM_WORLD);
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    const Placement& p = all[r];
    std::printf(
        "{\"world_rank\": %d, \"host\": \"%s\", \"local_rank\": %d, \"local_size\": %d, \"cores\": %d, "
        "\"hardware\": %d, \"threads\": %d}\n",
        r, p.host, p.local_rank, p.local_size, p.cores, p.hardware, p.threads);
  }
  MPI_Finalize();
  return 0;
}
