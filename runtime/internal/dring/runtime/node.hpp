// dring/runtime/node.hpp — what a rank knows about the machine it runs on: its place among the ranks of
// its node (for choosing threads, and a GPU by node-local rank, never by world rank).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <span>
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

// Whether the node-local rank `local_rank` has a GPU that no other rank of its node uses, from the
// node's table of device ids (CUDA device UUIDs, `id_bytes` each, in node-local rank order, as an
// allgather over the node communicator leaves them). Devices are told apart by id, never by
// counting the devices a rank sees: ranks bound to one GPU each (--gpus-per-task=1, their own
// CUDA_VISIBLE_DEVICES) all see "device 0" yet hold different GPUs. `known` false (this rank could
// not read its device's id) answers false: sharing cannot be ruled out. Pure: no MPI, no CUDA.
bool device_is_exclusive(std::span<const std::byte> ids, int id_bytes, int local_rank, bool known);

}  // namespace dring
