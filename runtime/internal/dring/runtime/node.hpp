// dring/node.hpp — what a rank knows about the machine it runs on: its place among the ranks of
// its node (for choosing threads, and a GPU by node-local rank, never by world rank).
#pragma once

#include <mpi.h>

namespace dring {

struct NodePlacement {
  int local_rank = 0;  // among the ranks sharing this node
  int local_size = 1;
  int cores = 1;       // cores this process may run on
};

// Collective over comm (MPI_Comm_split_type of shared memory).
NodePlacement node_placement(MPI_Comm comm);

// Threads per rank when not given: the cores this rank may use, shared among the ranks of its
// node, so ranks x threads never exceed the cores. Collective.
int default_threads(MPI_Comm comm);

}  // namespace dring
