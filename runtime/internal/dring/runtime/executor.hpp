// dring/runtime/executor.hpp — the ring executor: one rank's part of a distributed pass.
//
// Each rank holds its shard of q, k, v. Forward: the executor runs the local blocks while the
// first message of the plan is in flight, then walks the plan's steps with double-buffered
// receives: while step s computes on the rows it received, step s+1's rows are already arriving.
// Every block (local or received) merges into its rows' (out, lse) by log-sum-exp; after the last
// block they are the answer (there is no other per-row state and no final pass). Backward: the same steps carry K and V again; each rank computes dq for its
// own rows and the dk, dv of the rows it received, which travel straight back to their owner and
// are added there, one step later so that this return also overlaps compute.
//
// The executor decides which blocks run and which rows move; a Backend (cpu, cuda) owns the memory
// and the kernels; a Transport moves the bytes. All tensor pointers are in the backend's memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "dring/runtime/backend.hpp"
#include "dring/comm/transport.hpp"
#include "dring/core/problem.hpp"
#include "dring/core/dtype.hpp"
#include "dring/runtime/plan.hpp"

namespace dring {

struct ExecutorOptions {
  DType dtype = DType::kF32;  // storage dtype of q, k, v, out (and dout, dq, dk, dv)
  LayoutSpec layout;          // which rows each rank holds (layout.hpp); never changes the result
  int threads = 1;            // kernel threads of a CPU backend
  // Cap on one exchange message; 0 picks 1/32 of a shard's K+V bytes (at least 64 KiB), which
  // keeps the exchange buffers a small fraction of the shard.
  int64_t exchange_chunk_bytes = 0;
  int64_t q_tile = 128;
  int64_t k_tile = 256;
  int64_t small_block_scores = 256;
  int64_t fused_small_block_scores = 4096;
  // Called on the calling thread with the fraction of this rank's pass done (0..1), at most a few
  // times a second. Optional.
  std::function<void(double)> on_progress;
};

// This rank's shard: its rows of the sequence (layout().runs(rank), in ascending position order),
// all batches, contiguous, in the backend's memory; tensors in the storage dtype, lse in fp32.
struct ShardInputs {
  const void* q = nullptr;  // [B, rows, H, D]
  const void* k = nullptr;  // [B, rows, Hkv, D]
  const void* v = nullptr;  // [B, rows, Hkv, D]
};
struct ShardOutputs {
  void* out = nullptr;   // [B, rows, H, D]
  float* lse = nullptr;  // [B, H, rows], natural log
};
struct GradInputs {
  ShardInputs forward;          // q, k, v
  const void* out = nullptr;    // saved forward output
  const float* lse = nullptr;   // saved forward lse
  const void* dout = nullptr;   // [B, rows, H, D]
};
struct GradOutputs {
  void* dq = nullptr;  // [B, rows, H, D]
  void* dk = nullptr;  // [B, rows, Hkv, D]
  void* dv = nullptr;  // [B, rows, Hkv, D]
};

struct PassStats {
  double total_ms = 0.0;
  double compute_ms = 0.0;    // time the host spent issuing and running kernels and packing
  // The process's CPU time over those stretches (all its threads). On the CPU backend with one
  // thread: the time the compute takes on a core of its own, even where ranks share cores.
  double compute_cpu_ms = 0.0;
  double comm_wait_ms = 0.0;  // blocked waiting for a message
  int64_t sent_bytes = 0;
  int64_t recv_bytes = 0;
  int64_t steps = 0;
  // Attention work this rank computed in the pass, counting only the scores the band admits:
  // 4*D flops per score forward (q.k and p.v), 10*D backward (recomputed q.k, dout.v, and the
  // products into dv, dq and dk).
  double flops = 0.0;
  int64_t blocks = 0;  // kernel blocks (AttendBlock or GradBlock) this rank handed to its backend
};

class RingExecutor {
 public:
  RingExecutor(const Problem& problem, comm::Transport& transport, Backend& backend, ExecutorOptions options);
  ~RingExecutor();
  RingExecutor(const RingExecutor&) = delete;
  RingExecutor& operator=(const RingExecutor&) = delete;

  // This rank's rows: layout().runs(rank()) and layout().size(rank()).
  const ShardLayout& layout() const;
  int rank() const;
  int64_t shard_rows() const;
  const ExchangePlan& plan() const;

  PassStats forward(const ShardInputs& inputs, const ShardOutputs& outputs);
  // Exact gradient of forward; dq, dk and dv are overwritten.
  PassStats backward(const GradInputs& inputs, const GradOutputs& outputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The message cap ExecutorOptions{exchange_chunk_bytes = 0} resolves to, in rows of K and V of
// `dtype` (a row of a message is one K row and one V row).
int64_t default_message_rows(const Problem& problem, int world_size, int64_t chunk_bytes, DType dtype = DType::kF32);

}  // namespace dring
