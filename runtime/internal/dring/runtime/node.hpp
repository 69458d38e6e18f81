// dring/runtime/node.hpp — what a rank knows about the machine it runs on: its place among the ranks of
// its node (for choosing threads, and a GPU by node-local rank, never by world rank).
#pragma once

#include <mpi.h>

#include <string>

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

// One line when some rank may run on fewer cores than its share of its node (plain
// `mpirun -np 1` binds a rank to one core), saying how many and how to fix the launch; empty
// otherwise. The same on every rank. Collective.
std::string binding_note(MPI_Comm comm);

}  // namespace dring
