// attend_backward.cpp — fp32 CPU backward of attention blocks, flash-style.
//
// For one tile pair (query rows I, key rows J) of one query head, with P = exp(scale*Q K^T - lse):
//   dP = dO V^T,  dS = P * (dP - delta),  dV_J += P^T dO_I,  dK_J += scale dS^T Q_I,
//   dQ_I += scale dS K_J.
// Thread mapping: a work item is one key tile of one block (all the block's query heads and query
// tiles), so it owns dk and dv of those rows outright; the dq tile it updates is shared with the
// other key tiles of the block, so that last product is taken under the tile's lock (items start
// their query sweep at different tiles, so threads rarely meet). Tiny blocks take a direct path,
// a run of them per item. Nothing n x n is ever stored: two q_tile x k_tile scratch tiles a thread.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "vector_math.hpp"
#include "work_items.hpp"

namespace dring::kernels::cpu {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

struct Item {
  int64_t block_begin, block_end;  // a run of small blocks, or one big block
  int64_t key_begin, key_end;      // key tile of a big block
};

bool is_small(const GradBlock& b, const AttendParams& p) { return b.n_heads * b.n_q * b.n_k <= p.small_block_scores; }

const float* f32(const void* p) { return static_cast<const float*>(p); }

int64_t q_tiles(const GradBlock& b, const AttendParams& p) { return (b.n_q + p.q_tile - 1) / p.q_tile; }

// Spin lock over one dq tile; held only for one small sgemm.
class TileLock {
 public:
  explicit TileLock(std::atomic_flag& flag) : flag_(flag) {
    while (flag_.test_and_set(std::memory_order_acquire)) {
    }
  }
  ~TileLock() { flag_.clear(std::memory_order_release); }
  TileLock(const TileLock&) = delete;
  TileLock& operator=(const TileLock&) = delete;

 private:
  std::atomic_flag& flag_;
};

void backward_small(const GradBlock& b, int64_t d, float scale) {
  const float alpha = scale * kLog2e;
  for (int64_t n = 0; n < b.n_heads; ++n) {
    const float* q = f32(b.q) + n * b.q_head_step;
    const float* dout = f32(b.dout) + n * b.q_head_step;
    float* dq = b.dq + n * b.q_head_step;
    for (int64_t i = 0; i < b.n_q; ++i) {
      const float lse2 = b.lse[n * b.state_head_step + i * b.state_stride] * kLog2e;
      const float delta = b.delta[n * b.state_head_step + i * b.state_stride];
      const float* qi = q + i * b.q_stride;
      const float* doi = dout + i * b.q_stride;
      float* dqi = dq + i * b.q_stride;
      const int64_t keys = b.causal ? std::min(b.n_k, i + 1) : b.n_k;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = f32(b.k) + j * b.kv_stride;
        const float* vj = f32(b.v) + j * b.kv_stride;
        float s = 0.0f, dp = 0.0f;
        for (int64_t c = 0; c < d; ++c) {
          s += qi[c] * kj[c];
          dp += doi[c] * vj[c];
        }
        const float p = std::exp2(alpha * s - lse2);
        const float ds = p * (dp - delta) * scale;
        float* dkj = b.dk + j * b.dkv_stride;
        float* dvj = b.dv + j * b.dkv_stride;
        for (int64_t c = 0; c < d; ++c) {
          dqi[c] += ds * kj[c];
          dkj[c] += ds * qi[c];
          dvj[c] += p * doi[c];
        }
      }
    }
  }
}

// Key tile [j0, j1) of a big block against every query head and visible query tile.
void backward_key_tile(const GradBlock& b, int64_t j0, int64_t j1, const AttendParams& prm, float* scratch,
                       std::atomic_flag* locks) {
  const int64_t d = prm.head_dim;
  const float scale = static_cast<float>(prm.scale);
  const float alpha = scale * kLog2e;
  const int64_t nk = j1 - j0, ld = prm.k_tile;
  float* p_tile = scratch;                       // [q_tile, k_tile]: scores, then P
  float* ds_tile = p_tile + prm.q_tile * ld;     // [q_tile, k_tile]: dP, then dS
  const float* k = f32(b.k) + j0 * b.kv_stride;
  const float* v = f32(b.v) + j0 * b.kv_stride;
  float* dk = b.dk + j0 * b.dkv_stride;
  float* dv = b.dv + j0 * b.dkv_stride;
  const int64_t tiles = q_tiles(b, prm);
  // Causal: query tiles ending before j0 see none of these keys.
  const int64_t first_tile = b.causal ? j0 / prm.q_tile : 0;
  const int64_t span = tiles - first_tile;
  const int ki = static_cast<int>(d), kk = static_cast<int>(ld);
  for (int64_t n = 0; n < b.n_heads; ++n) {
    for (int64_t step = 0; step < span; ++step) {
      const int64_t t = first_tile + (step + j0 / prm.k_tile) % span;  // staggered start
      const int64_t i0 = t * prm.q_tile, i1 = std::min(b.n_q, i0 + prm.q_tile);
      const int64_t nq = i1 - i0;
      const float* q = f32(b.q) + n * b.q_head_step + i0 * b.q_stride;
      const float* dout = f32(b.dout) + n * b.q_head_step + i0 * b.q_stride;
      const int qs = static_cast<int>(b.q_stride), kvs = static_cast<int>(b.kv_stride);
      sgemm(false, true, nq, nk, ki, alpha, q, qs, k, kvs, 0.0f, p_tile, kk);
      sgemm(false, true, nq, nk, ki, 1.0f, dout, qs, v, kvs, 0.0f, ds_tile, kk);
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t state = n * b.state_head_step + (i0 + i) * b.state_stride;
        const float lse2 = b.lse[state] * kLog2e;
        const float delta = b.delta[state];
        float* prow = p_tile + i * ld;
        float* dsrow = ds_tile + i * ld;
        // Visible keys of query i0+i: j0+jj <= i0+i when causal.
        const int64_t visible = b.causal ? std::clamp<int64_t>(i0 + i - j0 + 1, 0, nk) : nk;
        exp2_shifted_sum(prow, visible, lse2);
        std::fill(prow + visible, prow + nk, 0.0f);
        for (int64_t jj = 0; jj < nk; ++jj) dsrow[jj] = prow[jj] * (dsrow[jj] - delta);
      }
      const int ds = static_cast<int>(b.dkv_stride);
      sgemm(true, false, nk, ki, nq, 1.0f, p_tile, kk, dout, qs, 1.0f, dv, ds);
      sgemm(true, false, nk, ki, nq, scale, ds_tile, kk, q, qs, 1.0f, dk, ds);
      TileLock lock(locks[n * tiles + t]);
      sgemm(false, false, nq, ki, nk, scale, ds_tile, kk, k, kvs, 1.0f, b.dq + n * b.q_head_step + i0 * b.q_stride, qs);
    }
  }
}

}  // namespace

int64_t backward_workspace_floats_per_thread(const AttendParams& params) {
  return 2 * params.q_tile * params.k_tile;
}

void attend_backward(std::span<const GradBlock> blocks, const AttendParams& prm, float* workspace) {
  DRING_ASSERT(prm.head_dim >= 1 && prm.q_tile >= 1 && prm.k_tile >= 1 && prm.threads >= 1);
  DRING_CHECK(prm.dtype == DType::kF32, Status::kUnsupported, "the cpu kernels compute in fp32 only");
  // Work items, and one lock per (block, head, query tile) of the big blocks.
  std::vector<Item> items;
  std::vector<int64_t> lock_base(blocks.size(), 0);
  int64_t locks_needed = 0;
  const int64_t n = static_cast<int64_t>(blocks.size());
  for (int64_t b = 0; b < n;) {
    if (is_small(blocks[b], prm)) {
      int64_t e = b, work = 0;
      while (e < n && is_small(blocks[e], prm) && work < prm.q_tile * prm.k_tile) {
        work += blocks[e].n_heads * blocks[e].n_q * blocks[e].n_k + 1;
        ++e;
      }
      items.push_back({b, e, 0, 0});
      b = e;
      continue;
    }
    lock_base[b] = locks_needed;
    locks_needed += blocks[b].n_heads * q_tiles(blocks[b], prm);
    for (int64_t j0 = 0; j0 < blocks[b].n_k; j0 += prm.k_tile) {
      items.push_back({b, b + 1, j0, std::min(blocks[b].n_k, j0 + prm.k_tile)});
    }
    ++b;
  }
  std::unique_ptr<std::atomic_flag[]> locks(new std::atomic_flag[std::max<int64_t>(locks_needed, 1)]);
  run_items(items, prm, workspace, backward_workspace_floats_per_thread(prm), [&](const Item& item, float* scratch) {
    for (int64_t b = item.block_begin; b < item.block_end; ++b) {
      if (is_small(blocks[b], prm)) {
        backward_small(blocks[b], prm.head_dim, static_cast<float>(prm.scale));
      } else {
        backward_key_tile(blocks[b], item.key_begin, item.key_end, prm, scratch, locks.get() + lock_base[b]);
      }
    }
  });
}

void delta(const DeltaParams& p, int threads) {
  DRING_CHECK(p.dtype == DType::kF32, Status::kUnsupported, "the cpu kernels compute in fp32 only");
  const int64_t rows = p.batch * p.rows;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t br = 0; br < rows; ++br) {
    const int64_t b = br / p.rows, i = br % p.rows;
    for (int64_t h = 0; h < p.heads; ++h) {
      const float* o = f32(p.out) + (br * p.heads + h) * p.head_dim;
      const float* g = f32(p.dout) + (br * p.heads + h) * p.head_dim;
      float sum = 0.0f;
      for (int64_t c = 0; c < p.head_dim; ++c) sum += o[c] * g[c];
      p.delta[(b * p.heads + h) * p.rows + i] = sum;
    }
  }
}

}  // namespace dring::kernels::cpu
