// dring/executor.hpp — the ring executor: one rank's part of a distributed forward pass.
//
// Each rank holds its shard of q, k, v. The executor runs the local blocks while the first
// message of the plan is in flight, then walks the plan's steps with double-buffered receives:
// while step s computes on the rows it received, step s+1's rows are already arriving. Every
// block (local or received) folds into one online-softmax state per row, which is finalized into
// out and lse at the end. Kernels never see MPI; the transport never sees attention.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "dring/comm/transport.hpp"
#include "dring/config.hpp"
#include "dring/kernels/attend.hpp"
#include "dring/memory.hpp"
#include "dring/plan.hpp"

namespace dring {

struct ExecutorOptions {
  int threads = 1;
  // Cap on one exchange message; 0 picks 1/16 of a shard's K+V bytes (at least 64 KiB), which
  // keeps the three exchange buffers under a fifth of the shard's K and V.
  int64_t exchange_chunk_bytes = 0;
  int64_t q_tile = 128;
  int64_t k_tile = 256;
  int64_t small_block_scores = 1024;
  // Called on the calling thread with the fraction of this rank's pass done (0..1), at most a few
  // times a second. Optional.
  std::function<void(double)> on_progress;
};

// This rank's shard: rows [begin, end) of the sequence, all batches, contiguous.
struct ShardInputs {
  const float* q = nullptr;  // [B, rows, H, D]
  const float* k = nullptr;  // [B, rows, Hkv, D]
  const float* v = nullptr;  // [B, rows, Hkv, D]
};
struct ShardOutputs {
  float* out = nullptr;  // [B, rows, H, D]
  float* lse = nullptr;  // [B, H, rows]
};

struct PassStats {
  double total_ms = 0.0;
  double compute_ms = 0.0;    // kernels, packing, finalize
  double comm_wait_ms = 0.0;  // blocked waiting for a message
  int64_t sent_bytes = 0;
  int64_t recv_bytes = 0;
  int64_t steps = 0;
};

class RingExecutor {
 public:
  RingExecutor(const Problem& problem, comm::Transport& transport, MemoryTracker& tracker, ExecutorOptions options);
  ~RingExecutor();
  RingExecutor(const RingExecutor&) = delete;
  RingExecutor& operator=(const RingExecutor&) = delete;

  int64_t shard_begin() const;
  int64_t shard_rows() const;
  const ExchangePlan& plan() const { return plan_; }

  PassStats forward(const ShardInputs& inputs, const ShardOutputs& outputs);

 private:
  struct Impl;
  Problem problem_;
  comm::Transport& transport_;
  ExchangePlan plan_;
  std::unique_ptr<Impl> impl_;
};

// The message cap ExecutorOptions{exchange_chunk_bytes = 0} resolves to, in rows.
int64_t default_message_rows(const Problem& problem, int world_size, int64_t chunk_bytes);

}  // namespace dring
