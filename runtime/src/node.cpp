// node.cpp — node-local placement of a rank.
#include "dring/runtime/node.hpp"

#include <sched.h>

#include <algorithm>
#include <thread>

#include "dring/comm/mpi_check.hpp"

namespace dring {

NodePlacement node_placement(MPI_Comm comm) {
  NodePlacement placement;
  MPI_Comm node = MPI_COMM_NULL;
  DRING_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  MPI_Comm_rank(node, &placement.local_rank);
  MPI_Comm_size(node, &placement.local_size);
  MPI_Comm_free(&node);
  cpu_set_t set;
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  placement.cores = std::max(1, std::min(allowed, hardware));
  return placement;
}

int default_threads(MPI_Comm comm) {
  const NodePlacement placement = node_placement(comm);
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  // A rank bound to fewer cores than its share gets those; an unbound rank gets its share.
  return std::max(1, std::min(placement.cores, hardware / placement.local_size));
}

}  // namespace dring
