// attend.cpp — fp32 CPU attention blocks: tiled online softmax over strided rows.
//
// Thread mapping: the blocks are cut into work items, each a tile of up to q_tile query rows of
// one block (or a run of consecutive small blocks); an OpenMP team takes items dynamically. A work
// item owns its query rows' (out, lse), so items never write the same memory. Inside an item the
// rows' state is unpacked into running max m, running sum l and unnormalised acc (m = lse, l = 1,
// acc = out: the same distribution), keys are visited k_tile rows at a time — S = alpha*Q*K^T
// (sgemm straight from the strided rows), causal mask on the diagonal tile, m and l updated,
// P = exp2(S - m), acc = acc*c + P*V (sgemm into the out rows) — and the state is packed back:
// out = acc / l, lse = m + log2(l). That is the log-sum-exp merge of the block into the rows.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "vector_math.hpp"
#include "work_items.hpp"

namespace dring::kernels::cpu {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// An AttendBlock with its fp32 pointers typed.
struct Block {
  const float* q;
  int64_t q_stride;
  const float* k;
  const float* v;
  int64_t kv_stride;
  float* out;
  int64_t out_stride;
  float* lse;
  int64_t lse_stride;
  int64_t n_q, n_k;
  bool causal;
  explicit Block(const AttendBlock& b)
      : q(static_cast<const float*>(b.q)), q_stride(b.q_stride), k(static_cast<const float*>(b.k)),
        v(static_cast<const float*>(b.v)), kv_stride(b.kv_stride), out(static_cast<float*>(b.out)),
        out_stride(b.out_stride), lse(b.lse), lse_stride(b.lse_stride), n_q(b.n_q), n_k(b.n_k), causal(b.causal) {}
};

// (out, lse) of a row as running (m, l) in log2 units, acc being the out row itself.
inline void unpack(float lse, float* m, float* l) {
  *m = lse == kNegInf ? kNegInf : lse * kLog2e;
  *l = lse == kNegInf ? 0.0f : 1.0f;
}
inline float pack(float* acc, int64_t d, float m, float l) {
  if (l == 0.0f) return kNegInf;  // no key has reached the row yet; acc is still 0
  if (l != 1.0f) scale(acc, d, 1.0f / l);
  return (m + std::log2(l)) * kLn2;
}

struct WorkItem {
  int64_t block_begin;  // blocks [block_begin, block_end): one big block, or a run of small ones
  int64_t block_end;
  int64_t q_begin;  // query rows [q_begin, q_end) of a big block
  int64_t q_end;
};

bool is_small(const AttendBlock& b, const AttendParams& p) { return b.n_q * b.n_k <= p.small_block_scores; }

// Points *x at a packed copy of its `rows` rows (made at `space`) unless they are packed already.
template <class T>
void pack_rows(T** x, int64_t* stride, int64_t rows, int64_t d, float* space) {
  if (*stride == d) return;
  for (int64_t i = 0; i < rows; ++i) std::copy(*x + i * *stride, *x + i * *stride + d, space + i * d);
  *x = space;
  *stride = d;
}

// Direct path for tiny blocks (a dilation that leaves a few rows per segment): per query row, one
// fused online-softmax update (attend_row) per chunk of keys. The rows of a dilated block lie r
// rows apart, often a page or more: when the block fits in the scratch, its strided q, k, v and
// out rows are first copied there in one sweep (many cache misses in flight at once, as in
// sgemm's packing) and out is copied back at the end. On the 8x8 and 16x16 dilated rows of
// dring_kernel_bench this was about 1.8x faster than the same code on the strided rows.
void attend_small(const Block& b, int64_t d, float alpha, float* scratch, int64_t scratch_floats) {
  float* scores = scratch;
  Block p = b;
  int64_t k_stride = b.kv_stride, v_stride = b.kv_stride;
  const bool packed = (2 * b.n_q + 2 * b.n_k) * d + b.n_k <= scratch_floats;
  if (packed) {
    float* space = scratch + b.n_k;
    pack_rows(&p.q, &p.q_stride, b.n_q, d, space);
    pack_rows(&p.k, &k_stride, b.n_k, d, space + b.n_q * d);
    pack_rows(&p.v, &v_stride, b.n_k, d, space + (b.n_q + b.n_k) * d);
    pack_rows(&p.out, &p.out_stride, b.n_q, d, space + (b.n_q + 2 * b.n_k) * d);
  }
  const int64_t chunk = packed ? std::max<int64_t>(b.n_k, 1) : scratch_floats;
  for (int64_t i = 0; i < p.n_q; ++i) {
    float m = 0.0f, l = 0.0f;
    unpack(p.lse[i * p.lse_stride], &m, &l);
    float* acc = p.out + i * p.out_stride;
    const int64_t keys = p.causal ? std::min(p.n_k, i + 1) : p.n_k;
    for (int64_t j0 = 0; j0 < keys; j0 += chunk) {
      attend_row(p.q + i * p.q_stride, p.k + j0 * k_stride, k_stride, p.v + j0 * v_stride, v_stride,
                 std::min(chunk, keys - j0), d, alpha, scores, &m, &l, acc);
    }
    p.lse[i * p.lse_stride] = pack(acc, d, m, l);
  }
  if (p.out != b.out) {  // copy the packed out rows back
    for (int64_t i = 0; i < b.n_q; ++i) std::copy(p.out + i * d, p.out + (i + 1) * d, b.out + i * b.out_stride);
  }
}

// One tile of query rows [i0, i1) of a block against all its (visible) keys.
void attend_tile(const Block& b, int64_t i0, int64_t i1, const AttendParams& prm, float alpha, float* scratch) {
  const int64_t d = prm.head_dim;
  const int64_t bk = prm.k_tile;
  const int64_t nq = i1 - i0;
  float* scores = scratch;              // [q_tile, k_tile]
  float* m = scores + prm.q_tile * bk;  // running max of the tile's rows
  float* l = m + prm.q_tile;            // running sum
  for (int64_t i = 0; i < nq; ++i) unpack(b.lse[(i0 + i) * b.lse_stride], &m[i], &l[i]);
  const float* q = b.q + i0 * b.q_stride;
  float* acc = b.out + i0 * b.out_stride;
  const int64_t key_end = b.causal ? std::min(b.n_k, i1) : b.n_k;
  for (int64_t j0 = 0; j0 < key_end; j0 += bk) {
    const int64_t nk = std::min(bk, key_end - j0);
    sgemm(false, true, nq, nk, d, alpha, q, b.q_stride, b.k + j0 * b.kv_stride, b.kv_stride, 0.0f, scores, bk);
    const bool diagonal = b.causal && j0 + nk - 1 > i0;
    for (int64_t i = 0; i < nq; ++i) {
      float* row = scores + i * bk;
      if (diagonal) {
        // Key j0+jj is visible to query i0+i only if j0+jj <= i0+i.
        for (int64_t jj = std::max<int64_t>(0, i0 + i - j0 + 1); jj < nk; ++jj) row[jj] = kNegInf;
      }
      const float m_new = max_of(row, nk, m[i]);
      if (m_new == kNegInf) {  // nothing visible to this row yet
        std::fill(row, row + nk, 0.0f);
        continue;
      }
      const float row_sum = exp2_shifted_sum(row, nk, m_new);
      const float correction = std::exp2(m[i] - m_new);
      if (correction != 1.0f) scale(acc + i * b.out_stride, d, correction);
      l[i] = l[i] * correction + row_sum;
      m[i] = m_new;
    }
    sgemm(false, false, nq, d, nk, 1.0f, scores, bk, b.v + j0 * b.kv_stride, b.kv_stride, 1.0f, acc, b.out_stride);
  }
  for (int64_t i = 0; i < nq; ++i) b.lse[(i0 + i) * b.lse_stride] = pack(acc + i * b.out_stride, d, m[i], l[i]);
}

std::vector<WorkItem> make_work(std::span<const AttendBlock> blocks, const AttendParams& prm) {
  std::vector<WorkItem> items;
  const int64_t n = static_cast<int64_t>(blocks.size());
  int64_t b = 0;
  while (b < n) {
    if (is_small(blocks[b], prm)) {
      // Gather consecutive small blocks until they are worth about one tile of work.
      int64_t e = b;
      int64_t scores = 0;
      while (e < n && is_small(blocks[e], prm) && scores < prm.q_tile * prm.k_tile) {
        scores += blocks[e].n_q * blocks[e].n_k + 1;
        ++e;
      }
      items.push_back({b, e, 0, 0});
      b = e;
      continue;
    }
    // Causal tiles near the end of a block see the most keys: queue those first so the dynamic
    // schedule ends with the cheap ones.
    const int64_t tiles = (blocks[b].n_q + prm.q_tile - 1) / prm.q_tile;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t i0 = (blocks[b].causal ? tiles - 1 - t : t) * prm.q_tile;
      items.push_back({b, b + 1, i0, std::min(blocks[b].n_q, i0 + prm.q_tile)});
    }
    ++b;
  }
  return items;
}

}  // namespace

int64_t workspace_floats_per_thread(const AttendParams& params) {
  return params.q_tile * params.k_tile + 2 * params.q_tile;
}

void attend(std::span<const AttendBlock> blocks, const AttendParams& prm, float* workspace) {
  DRING_ASSERT(prm.head_dim >= 1 && prm.q_tile >= 1 && prm.k_tile >= 1 && prm.threads >= 1);
  DRING_CHECK(prm.dtype == DType::kF32, Status::kUnsupported, "the cpu kernels compute in fp32 only");
  DRING_ASSERT(prm.head_dim <= std::numeric_limits<int>::max());
  const float alpha = static_cast<float>(prm.scale) * kLog2e;
  const std::vector<WorkItem> items = make_work(blocks, prm);
  run_items(items, prm, workspace, workspace_floats_per_thread(prm), [&](const WorkItem& item, float* scratch) {
    for (int64_t b = item.block_begin; b < item.block_end; ++b) {
      const Block blk(blocks[b]);
      if (is_small(blocks[b], prm)) {
        attend_small(blk, prm.head_dim, alpha, scratch, prm.q_tile * prm.k_tile);
      } else {
        attend_tile(blk, item.q_begin, item.q_end, prm, alpha, scratch);
      }
    }
  });
}

}  // namespace dring::kernels::cpu
