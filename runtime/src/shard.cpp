// shard.cpp — allocation and synthetic filling of a rank's tensors.
#include "dring/shard.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "dring/collective.hpp"
#include "dring/comm/mpi_transport.hpp"
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

void check_finite(MPI_Comm comm, const AttentionShape& s, const ShardBuffers& shard, const float* dout) {
  struct Tensor {
    const char* name;
    const float* data;
    int64_t heads;
  };
  const Tensor tensors[4] = {{"q", shard.q.data(), s.heads},
                             {"k", shard.k.data(), s.kv_heads},
                             {"v", shard.v.data(), s.kv_heads},
                             {"dout", dout, s.heads}};
  for (const Tensor& t : tensors) {
    if (t.name == std::string("dout") && dout == nullptr) continue;
    // First bad element as (global linear index)*2 + (1 if Inf, 0 if NaN); the minimum over ranks
    // is the first bad element of the whole tensor.
    int64_t mine = INT64_MAX;
    const int64_t row_elems = t.heads * s.head_dim;
    for (int64_t b = 0; b < s.batch && mine == INT64_MAX; ++b) {
      for (int64_t i = 0; i < shard.rows && mine == INT64_MAX; ++i) {
        const float* row = t.data + (b * shard.rows + i) * row_elems;
        for (int64_t e = 0; e < row_elems; ++e) {
          if (!std::isfinite(row[e])) {
            const int64_t global = (b * s.seq + shard.begin + i) * row_elems + e;
            mine = global * 2 + (std::isinf(row[e]) ? 1 : 0);
            break;
          }
        }
      }
    }
    int64_t first = INT64_MAX;
    DRING_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT64_T, MPI_MIN, comm));
    if (first == INT64_MAX) continue;
    const int64_t at = first / 2;
    const int64_t c = at % s.head_dim, h = (at / s.head_dim) % t.heads, pos = (at / row_elems) % s.seq,
                  b = at / (row_elems * s.seq);
    std::ostringstream message;
    message << "input '" << t.name << "' has a non-finite value: " << t.name << "[" << b << ", " << pos << ", " << h
            << ", " << c << "] is " << (first % 2 ? "Inf" : "NaN");
    throw CollectiveError(Status::kInvalidArgument, message.str(), -1);
  }
}

}  // namespace dring
