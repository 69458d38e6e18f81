// dring/shard.hpp — one rank's tensors: its rows of q, k, v (and dout), out and lse, all tracked.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "dring/config.hpp"
#include "dring/executor.hpp"
#include "dring/memory.hpp"

namespace dring {

struct ShardBuffers {
  int64_t begin = 0;  // first sequence position of the shard
  int64_t rows = 0;
  HostBuffer<float> q, k, v;  // [B, rows, H or Hkv, D], category inputs
  HostBuffer<float> out;      // [B, rows, H, D], category outputs
  HostBuffer<float> lse;      // [B, H, rows], category outputs

  ShardInputs inputs() const { return {q.data(), k.data(), v.data()}; }
  ShardOutputs outputs() { return {out.data(), lse.data()}; }
};

ShardBuffers allocate_shard(const AttentionShape& shape, int64_t begin, int64_t rows, MemoryTracker& tracker);

// Fills q, k and v of the shard from the seed (see synthetic.hpp).
void fill_synthetic_shard(uint64_t seed, const AttentionShape& shape, ShardBuffers& shard, int threads);

// Collective: throws CollectiveError on every rank if any shard of q, k or v (or dout, when given)
// holds a NaN or Inf, naming the first such element in dataset order: "k[0, 17, 1, 5] is NaN".
void check_finite(MPI_Comm comm, const AttentionShape& shape, const ShardBuffers& shard, const float* dout = nullptr);

}  // namespace dring
