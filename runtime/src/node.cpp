// node.cpp — node-local placement of a rank.
#include "dring/runtime/node.hpp"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "dring/comm/mpi_check.hpp"
#include "dring/core/error.hpp"

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

std::string binding_note(MPI_Comm comm) {
  const NodePlacement placement = node_placement(comm);
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int share = std::max(1, hardware / placement.local_size);
  // The worst rank: the fewest allowed cores relative to its share.
  int mine[2] = {placement.cores < share ? placement.cores : share, share};
  int worst[2] = {0, 0};
  struct {
    int value;
    int rank;
  } in{mine[0] - mine[1], 0}, out{0, 0};
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &in.rank));
  DRING_MPI_CHECK(MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MINLOC, comm));
  if (out.value >= 0) return "";
  if (in.rank == out.rank) {
    worst[0] = mine[0];
    worst[1] = mine[1];
  }
  DRING_MPI_CHECK(MPI_Bcast(worst, 2, MPI_INT, out.rank, comm));
  return "rank " + std::to_string(out.rank) + " may run on " + std::to_string(worst[0]) + " of the " +
         std::to_string(worst[1]) + " cores its share of the node allows (the launcher bound it): launch with "
         "`mpirun --bind-to none` (or `--map-by slot:PE=" + std::to_string(worst[1]) +
         "`), or `srun --cpus-per-task=" + std::to_string(worst[1]) + "`";
}

bool device_is_exclusive(std::span<const std::byte> ids, int id_bytes, int local_rank, bool known) {
  DRING_CHECK(id_bytes > 0 && ids.size() % static_cast<size_t>(id_bytes) == 0, Status::kInternal,
              "internal error: a device id table of " << ids.size() << " bytes in ids of " << id_bytes << " bytes");
  const size_t width = static_cast<size_t>(id_bytes);
  const size_t ranks = ids.size() / width;
  DRING_CHECK(local_rank >= 0 && static_cast<size_t>(local_rank) < ranks, Status::kInternal,
              "internal error: node-local rank " << local_rank << " outside a table of " << ranks << " ranks");
  if (!known) return false;
  const std::byte* mine = ids.data() + static_cast<size_t>(local_rank) * width;
  for (size_t other = 0; other < ranks; ++other) {
    if (other != static_cast<size_t>(local_rank) && std::memcmp(ids.data() + other * width, mine, width) == 0) {
      return false;
    }
  }
  return true;
}

}  // namespace dring
