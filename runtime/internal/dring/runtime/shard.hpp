// dring/shard.hpp — one rank's tensors: its rows of q, k, v (and dout), out and lse, all tracked.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dring/runtime/backend.hpp"
#include "dring/core/problem.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/core/memory.hpp"
#include "dring/runtime/synthetic.hpp"

namespace dring {

// Tensors in the backend's memory (host or device), in the storage dtype; lse in fp32. Local row
// order is ascending position (layout.hpp): `runs` say which positions the rows hold.
struct ShardBuffers {
  int64_t begin = 0;  // lowest sequence position of the shard (its first, for a contiguous layout)
  int64_t rows = 0;
  std::vector<ShardRun> runs;  // the rank's runs of its layout; one run [begin, begin+rows) when contiguous
  TensorBuffer q, k, v;  // [B, rows, H or Hkv, D], category inputs
  TensorBuffer out;      // [B, rows, H, D], category outputs
  Buffer<float> lse;     // [B, H, rows], category outputs
  // Backward only (empty otherwise): dout is an input, dq, dk, dv outputs shaped like q, k, v.
  TensorBuffer dout, dq, dk, dv;

  ShardInputs inputs() const { return {q.data(), k.data(), v.data()}; }
  ShardOutputs outputs() { return {out.data(), lse.data()}; }
  GradInputs grad_inputs() const { return {inputs(), out.data(), lse.data(), dout.data()}; }
  GradOutputs grad_outputs() { return {dq.data(), dk.data(), dv.data()}; }
};

// The rows of rank `rank` of `layout`.
ShardBuffers allocate_shard(const AttentionShape& shape, const ShardLayout& layout, int rank, Allocator& allocator,
                            DType dtype = DType::kF32, bool backward = false);
// Rows [begin, begin+rows) (a contiguous shard).
ShardBuffers allocate_shard(const AttentionShape& shape, int64_t begin, int64_t rows, Allocator& allocator,
                            DType dtype = DType::kF32, bool backward = false);
// The positions of a shard's rows, in local order.
std::vector<int64_t> shard_positions(const std::vector<ShardRun>& runs, int64_t rows);
// Adds dout, dq, dk and dv to a forward shard (so the forward pass is measured without them).
void allocate_gradients(const AttentionShape& shape, Allocator& allocator, ShardBuffers& shard);

// Fills q, k, v and dout (those allocated) of the shard from the seed (see synthetic.hpp), through
// a host staging buffer when the backend's memory is not the host's.
void fill_synthetic_shard(uint64_t seed, const AttentionShape& shape, ShardBuffers& shard, Backend& backend,
                          MemoryTracker& tracker, int threads);
// Fills one tensor of the shard (q, k, v or dout) the same way.
void fill_synthetic_tensor(uint64_t seed, TensorId id, const AttentionShape& shape, const ShardBuffers& shard,
                           TensorBuffer& buffer, Backend& backend, MemoryTracker& tracker, int threads);

// Collective: throws CollectiveError on every rank if any rank's rows of tensor `name` (host
// memory, [B, rows, heads, D], the positions of `runs`) hold a NaN or Inf, naming the first such
// element of the whole tensor in natural order: "k[0, 17, 1, 5] is NaN".
void check_finite(MPI_Comm comm, const AttentionShape& shape, const std::vector<ShardRun>& runs, int64_t rows,
                  const char* name, const float* data, int64_t heads);

}  // namespace dring
