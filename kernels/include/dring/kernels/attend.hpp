// dring/kernels/attend.hpp — the kernel family every backend implements: dense attention on one
// block of strided rows, accumulated into an online-softmax state.
//
// Dilated attention over a ring decomposes into blocks: for one (pair, segment, head) the rows a
// dilation selects are every r-th row of a shard, so q, k and v of a block are plain strided row
// views (row stride r*heads*head_dim in a shard, head_dim in a packed message). Each block updates
// a per-row state (running maximum m, running sum l, unnormalised output acc); blocks of all pairs
// and all ring steps accumulate into the same state, and `finalize` turns it into out and lse.
// This is the log-sum-exp merge of blocks, done incrementally.
//
// State units: m is kept in log2 units of the scaled score (scale*q.k*log2(e)), so the kernels
// use exp2; finalize converts lse back to natural log.
#pragma once

#include <cstdint>

namespace dring::kernels {

// One dense (optionally causal) attention block. Row i of q attends to rows j of k and v; with
// `causal`, only to j <= i (q and k are then the same rows). All pointers are non-owning.
struct AttendBlock {
  const float* q = nullptr;
  int64_t q_stride = 0;  // elements between consecutive rows
  const float* k = nullptr;
  int64_t k_stride = 0;
  const float* v = nullptr;
  int64_t v_stride = 0;
  float* acc = nullptr;  // unnormalised output rows, head_dim each
  int64_t acc_stride = 0;
  float* row_max = nullptr;  // m, log2 units
  float* row_sum = nullptr;  // l
  int64_t state_stride = 0;
  int64_t n_q = 0;
  int64_t n_k = 0;
  bool causal = false;
};

// Called now and then by the first worker thread (the calling thread) between tiles, with the
// fraction of the call's work done so far; the ring executor uses it to drive communication
// progress while the kernel runs, and to report progress. Must be cheap and must not throw.
struct ProgressHook {
  void (*fn)(void* ctx, double fraction_done) = nullptr;
  void* ctx = nullptr;
  void operator()(double fraction_done) const {
    if (fn != nullptr) fn(ctx, fraction_done);
  }
};

struct AttendParams {
  int64_t head_dim = 0;
  double scale = 0.0;  // multiplies q.k
  int threads = 1;
  int64_t q_tile = 128;  // rows of q per work item
  int64_t k_tile = 256;  // rows of k per inner step
  // Blocks with at most this many scores take the direct path (no tile products).
  int64_t small_block_scores = 1024;
  ProgressHook progress;
};

// Backward of one block, flash-style: scores are recomputed tile by tile from q, k and the saved
// lse, with delta = rowsum(dout * out); dq, dk and dv accumulate (+=). The block serves the
// `n_heads` query heads that read the same key rows (same kv head, same offset): query head n's
// rows start n * q_head_step elements after head 0's, its lse and delta n * state_head_step after.
// With `causal`, query i sees keys j <= i. Within one call, blocks must not share dq rows or dk/dv
// rows.
struct GradBlock {
  const float* q = nullptr;
  const float* dout = nullptr;
  float* dq = nullptr;
  int64_t q_stride = 0;  // q, dout and dq rows
  int64_t q_head_step = 0;
  const float* lse = nullptr;    // natural log
  const float* delta = nullptr;  // rowsum(dout * out)
  int64_t state_stride = 0;
  int64_t state_head_step = 0;
  int64_t n_heads = 1;
  int64_t n_q = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t kv_stride = 0;
  float* dk = nullptr;
  float* dv = nullptr;
  int64_t dkv_stride = 0;
  int64_t n_k = 0;
  bool causal = false;
};

// delta[b, h, i] = sum_c out[b, i, h, c] * dout[b, i, h, c]; out and dout are [batch, rows, heads,
// head_dim], delta is [batch, heads, rows] like lse.
struct DeltaParams {
  int64_t batch = 0;
  int64_t rows = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  const float* out = nullptr;
  const float* dout = nullptr;
  float* delta = nullptr;
};

// Row state over `rows` rows of `heads` heads: acc = 0, m = -inf, l = 0.
struct AttendState {
  float* acc = nullptr;  // [rows, heads, head_dim]
  float* row_max = nullptr;  // [rows, heads]
  float* row_sum = nullptr;  // [rows, heads]
};

// Finalize: out = acc / l (0 where l = 0), lse = ln(sum exp(score)) (-inf where l = 0).
// acc is [batch, rows, heads, head_dim] and becomes out in place; lse is [batch, heads, rows].
struct FinalizeParams {
  int64_t batch = 0;
  int64_t rows = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  float* acc = nullptr;
  const float* row_max = nullptr;  // [batch, rows, heads]
  const float* row_sum = nullptr;
  float* lse = nullptr;
};

}  // namespace dring::kernels
