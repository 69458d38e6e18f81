// shard.cpp — allocation and synthetic filling of a rank's tensors.
#include "dring/shard.hpp"

#include "dring/synthetic.hpp"

namespace dring {

ShardBuffers allocate_shard(const AttentionShape& s, int64_t begin, int64_t rows, MemoryTracker& tracker) {
  ShardBuffers shard;
  shard.begin = begin;
  shard.rows = rows;
  const int64_t q_elems = s.batch * rows * s.heads * s.head_dim;
  const int64_t kv_elems = s.batch * rows * s.kv_heads * s.head_dim;
  shard.q = HostBuffer<float>(tracker, q_elems, MemCategory::kInputs);
  shard.k = HostBuffer<float>(tracker, kv_elems, MemCategory::kInputs);
  shard.v = HostBuffer<float>(tracker, kv_elems, MemCategory::kInputs);
  shard.out = HostBuffer<float>(tracker, q_elems, MemCategory::kOutputs);
  shard.lse = HostBuffer<float>(tracker, s.batch * s.heads * rows, MemCategory::kOutputs);
  return shard;
}

void fill_synthetic_shard(uint64_t seed, const AttentionShape& shape, ShardBuffers& shard, int threads) {
  fill_synthetic(seed, TensorId::kQ, shape, shard.begin, shard.rows, shard.q.data(), threads);
  fill_synthetic(seed, TensorId::kK, shape, shard.begin, shard.rows, shard.k.data(), threads);
  fill_synthetic(seed, TensorId::kV, shape, shard.begin, shard.rows, shard.v.data(), threads);
}

}  // namespace dring
