// shard.cpp — allocation and synthetic filling of a rank's tensors.
#include "dring/runtime/shard.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_check.hpp"
#include "dring/runtime/synthetic.hpp"

namespace dring {

namespace {

ShardBuffers allocate_runs(const AttentionShape& s, std::vector<ShardRun> runs, Allocator& allocator, DType dtype,
                           bool backward) {
  ShardBuffers shard;
  int64_t rows = 0, lowest = runs.empty() ? 0 : runs.front().pos.first;
  for (const ShardRun& run : runs) {
    rows += run.pos.count;
    lowest = std::min(lowest, run.pos.first);
  }
  shard.begin = lowest;
  shard.rows = rows;
  shard.runs = std::move(runs);
  const int64_t q_elems = s.q_dims(rows).elements();
  const int64_t kv_elems = s.kv_dims(rows).elements();
  shard.q = TensorBuffer(allocator, q_elems, dtype, MemCategory::kInputs);
  shard.k = TensorBuffer(allocator, kv_elems, dtype, MemCategory::kInputs);
  shard.v = TensorBuffer(allocator, kv_elems, dtype, MemCategory::kInputs);
  shard.out = TensorBuffer(allocator, q_elems, dtype, MemCategory::kOutputs);
  shard.lse = Buffer<float>(allocator, s.q_dims(rows).state_elements(), MemCategory::kOutputs);
  if (backward) allocate_gradients(s, allocator, shard);
  return shard;
}

}  // namespace

ShardBuffers allocate_shard(const AttentionShape& s, const ShardLayout& layout, int rank, Allocator& allocator,
                            DType dtype, bool backward) {
  return allocate_runs(s, layout.runs(rank), allocator, dtype, backward);
}

ShardBuffers allocate_shard(const AttentionShape& s, int64_t begin, int64_t rows, Allocator& allocator, DType dtype,
                            bool backward) {
  return allocate_runs(s, {ShardRun{{begin, rows, 1}, 0, 1}}, allocator, dtype, backward);
}

std::vector<int64_t> shard_positions(const std::vector<ShardRun>& runs, int64_t rows) {
  std::vector<int64_t> out(static_cast<size_t>(rows));
  for (const ShardRun& run : runs) {
    for (int64_t m = 0; m < run.pos.count; ++m) out[run.local_first + m * run.local_stride] = run.pos.at(m);
  }
  return out;
}

void allocate_gradients(const AttentionShape& s, Allocator& allocator, ShardBuffers& shard) {
  const int64_t q_elems = s.q_dims(shard.rows).elements();
  const int64_t kv_elems = s.kv_dims(shard.rows).elements();
  const DType dtype = shard.q.dtype();
  shard.dout = TensorBuffer(allocator, q_elems, dtype, MemCategory::kInputs);
  shard.dq = TensorBuffer(allocator, q_elems, dtype, MemCategory::kOutputs);
  shard.dk = TensorBuffer(allocator, kv_elems, dtype, MemCategory::kOutputs);
  shard.dv = TensorBuffer(allocator, kv_elems, dtype, MemCategory::kOutputs);
}

void fill_synthetic_tensor(uint64_t seed, TensorId id, const AttentionShape& shape, const ShardBuffers& shard,
                           TensorBuffer& buffer, Backend& backend, MemoryTracker& tracker, int threads) {
  if (buffer.size() == 0) return;
  if (backend.space() == MemSpace::kHost && buffer.dtype() == DType::kF32) {
    fill_synthetic(seed, id, shape, shard.runs, shard.rows, buffer.f32(), threads);
    return;
  }
  Buffer<float> staging(tracker, buffer.size(), MemCategory::kWorkspace);
  fill_synthetic(seed, id, shape, shard.runs, shard.rows, staging.data(), threads);
  backend.upload(staging.data(), buffer.data(), buffer.size(), buffer.dtype());
  backend.synchronize();
}

void fill_synthetic_shard(uint64_t seed, const AttentionShape& shape, ShardBuffers& shard, Backend& backend,
                          MemoryTracker& tracker, int threads) {
  fill_synthetic_tensor(seed, TensorId::kQ, shape, shard, shard.q, backend, tracker, threads);
  fill_synthetic_tensor(seed, TensorId::kK, shape, shard, shard.k, backend, tracker, threads);
  fill_synthetic_tensor(seed, TensorId::kV, shape, shard, shard.v, backend, tracker, threads);
  fill_synthetic_tensor(seed, TensorId::kDout, shape, shard, shard.dout, backend, tracker, threads);
}

void check_finite(MPI_Comm comm, const AttentionShape& s, const std::vector<ShardRun>& runs, int64_t rows,
                  const char* name, const float* data, int64_t heads) {
  // First bad element as (global linear index)*2 + (1 if Inf, 0 if NaN); the minimum over ranks is
  // the first bad element of the whole tensor. Local rows are in ascending position order, so a
  // rank's first bad element in local order is also its first in natural order.
  const std::vector<int64_t> position = shard_positions(runs, rows);
  int64_t mine = INT64_MAX;
  const int64_t row_elems = heads * s.head_dim;
  for (int64_t b = 0; b < s.batch && mine == INT64_MAX; ++b) {
    for (int64_t i = 0; i < rows && mine == INT64_MAX; ++i) {
      const float* row = data + (b * rows + i) * row_elems;
      for (int64_t e = 0; e < row_elems; ++e) {
        if (!std::isfinite(row[e])) {
          mine = ((b * s.seq + position[i]) * row_elems + e) * 2 + (std::isinf(row[e]) ? 1 : 0);
          break;
        }
      }
    }
  }
  int64_t first = INT64_MAX;
  DRING_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT64_T, MPI_MIN, comm));
  if (first == INT64_MAX) return;
  const int64_t at = first / 2;
  const int64_t c = at % s.head_dim, h = (at / s.head_dim) % heads, pos = (at / row_elems) % s.seq,
                b = at / (row_elems * s.seq);
  std::ostringstream message;
  message << "input '" << name << "' has a non-finite value: " << name << "[" << b << ", " << pos << ", " << h << ", "
          << c << "] is " << (first % 2 ? "Inf" : "NaN");
  throw CollectiveError(Status::kInvalidArgument, message.str(), -1);
}

}  // namespace dring
