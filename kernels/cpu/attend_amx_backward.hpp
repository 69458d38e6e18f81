// attend_amx_backward.hpp — the backward of one tile pair on AMX, for fp32 rows split into three
// bf16 parts (as the forward's AMX tile does, attend_amx.hpp) or bf16 rows as they are: the five
// products on the CPU's matrix unit, P and dS in AVX-512 between them.
//
// Key-major. A work item is one key tile (attend_backward.cpp), so the products are taken with
// the keys as rows wherever that leaves every operand in the layout AMX wants without a
// transpose of P or dS:
//   S^T  = K Q^T        A: K rows (packed once per item)      B: Q as pairs along head_dim
//   dP^T = V dO^T       A: V rows (once per item)             B: dO as pairs along head_dim
//   P^T = exp2(alpha S^T - lse2), dS^T = scale P^T (dP^T - delta)  (lse2, delta per column)
//   dV  += P^T dO       A: P^T rows, as computed              B: dO as pairs of rows
//   dK  += dS^T Q       A: dS^T rows, as computed             B: Q as pairs of rows
//   dQ^T = K^T dS       A: K transposed (once per item)       B: dS^T as pairs of keys
// The keys go through 32 at a time (a strip): its S^T and dP^T for the query columns some row of
// the strip's keys is seen by, P^T and dS^T (masked per element by each query row's [lo, hi)),
// then its rows of dV and dK, summed over those columns. dS^T is also kept as pairs of keys for
// the whole tile, so that dQ^T runs once per query tile, summing over all its keys (each result
// block is stored once; zeros stand where a strip computed nothing). The caller adds dQ^T
// transposed to dq (amx_grad_add_dq) under the query tile's lock, and the item's dK, dV tiles to
// dk, dv at its end.
//
// fp32 rows: every operand and P, dS in three parts with the six part products (docs/math.md), and
// P by the degree-6 exp2, so the gradients carry fp32's rounding, as the forward does.
#pragma once

#include <cstdint>

namespace dring::kernels::cpu {

// One work item's key tile, packed by amx_grad_pack_keys.
struct AmxGradKeys {
  int parts = 3;             // kAmxPartsF32 (fp32 rows) or kAmxPartsBf16
  const void* k = nullptr;   // the tile's first key row
  const void* v = nullptr;
  int64_t kv_stride = 0;     // in elements
  int64_t nk = 0;
  int64_t nk_pad = 0;        // nk rounded up to kAmxCols
  int64_t d = 0;
  int64_t dp = 0;            // d rounded up to kAmxCols
  uint16_t* ka = nullptr;    // [parts][nk_pad][dp]: K rows
  uint16_t* va = nullptr;    // [parts][nk_pad][dp]: V rows
  uint16_t* kt = nullptr;    // [parts][dp][nk_pad]: K transposed
  float* dk = nullptr;       // [nk_pad][dp], accumulated (zeroed by amx_grad_pack_keys)
  float* dv = nullptr;       // [nk_pad][dp], accumulated (zeroed by amx_grad_pack_keys)
};

// One query tile (of one query head) against the item's key tile.
struct AmxGradQueries {
  const void* q = nullptr;     // the tile's first query row
  const void* dout = nullptr;
  int64_t q_stride = 0;        // in elements
  int64_t nq = 0;
  int64_t nq_pad = 0;          // nq rounded up to kAmxCols
  float alpha = 0.0f;          // scale * log2 e
  float scale = 0.0f;
  const float* lse2 = nullptr;   // [nq_pad], lse * log2 e
  const float* delta = nullptr;  // [nq_pad]
  const int32_t* lo = nullptr;   // [nq_pad], visible keys [lo, hi) relative to the key tile;
  const int32_t* hi = nullptr;   // padding rows 0, 0
  uint16_t* qk = nullptr;   // [parts][dp / 2][nq_pad][2], scratch: Q as pairs along head_dim
  uint16_t* ok = nullptr;   // [parts][dp / 2][nq_pad][2], scratch: dO as pairs along head_dim
  uint16_t* qv = nullptr;   // [parts][nq_pad / 2][dp][2], scratch: Q as pairs of rows
  uint16_t* ov = nullptr;   // [parts][nq_pad / 2][dp][2], scratch: dO as pairs of rows
  float* st = nullptr;      // [kAmxStripRows][nq_pad], scratch: a strip's S^T
  float* dpt = nullptr;     // [kAmxStripRows][nq_pad], scratch: a strip's dP^T
  uint16_t* pt = nullptr;   // [parts][kAmxStripRows][nq_pad], scratch: a strip's P^T
  uint16_t* dst = nullptr;  // [parts][kAmxStripRows][nq_pad], scratch: a strip's dS^T
  uint16_t* dsb = nullptr;  // [parts][nk_pad / 2][nq_pad][2], scratch: dS^T as pairs of keys
  float* dqt = nullptr;     // [dp][nq_pad], out: this tile pair's dQ^T (scale folded in)
};

// The key tile into ka, va, kt; dk and dv zeroed (amx_bf16_usable() must be true).
void amx_grad_pack_keys(const AmxGradKeys& k);

// The tile pair's products: dk, dv accumulated, dqt written.
void amx_grad_queries(const AmxGradKeys& k, const AmxGradQueries& q);

// dq[i][e] += dqt[e][i] for i < nq, e < d (dq rows dq_stride apart).
void amx_grad_add_dq(const float* dqt, int64_t nq_pad, int64_t nq, int64_t d, float* dq, int64_t dq_stride);

// Scratch floats of one thread for the regions above (and lse2, delta, lo, hi), for query tiles
// of up to q_tile rows and key tiles of up to k_tile keys.
int64_t amx_grad_floats(int64_t q_tile, int64_t k_tile, int64_t d, int parts);

}  // namespace dring::kernels::cpu
