// attend_fused_backward.hpp — the fused fp32 backward tile: for one chunk of query rows against
// one chunk of key rows, S and dP, P and dS, and the three gradient products, in micro-kernels of
// this project's own (AVX-512 and AVX2+FMA, the forward's instances: attend_fused.hpp), instead of
// five sgemm calls and two elementwise passes.
//
// Layout: the chunk's query rows q and dout are packed densely ([nq][d]); the key tile is packed
// once per work item, transposed and pre-scaled (kt[e][j] = alpha * k[j][e], alpha = scale *
// log2 e, and vt[e][j] = v[j][e], columns past the tile zero) for the score products, and as rows
// (k, [nk][d]) for dQ. Three passes, each a register block of broadcasts times vector loads:
//   1. S and dP together, kScoresRB query rows x kScoresUB key vectors of each: P = exp2(S - lse2)
//      and dS = scale * P * (dP - delta) in the block's epilogue, stored as [nq][ldp] tiles; then
//      every row's P and dS outside its visible keys [lo, hi) (and the padding keys) are set to 0,
//      which also overwrites whatever the exponent gave there (a row no key reaches may have lse
//      -inf).
//   2. dV += P^T dO and dK += dS^T Q, kGradRB key rows x kGradCV vectors of head_dim, into the
//      item's dense dk and dv tiles.
//   3. dQ += dS K, kGradRB query rows x kGradCV vectors, into the caller's dense dq tile.
#pragma once

#include <cstdint>

#include "attend_fused.hpp"

namespace dring::kernels::cpu {

struct FusedGradTile {
  int64_t nq = 0;      // query rows of the chunk
  int64_t nk = 0;      // keys of the chunk
  int64_t nk_pad = 0;  // nk rounded up to kFusedQueryPad: the columns pass 1 computes
  int64_t d = 0;
  float scale = 0.0f;
  const float* q = nullptr;     // [nq][d]
  const float* dout = nullptr;  // [nq][d]
  const float* lse2 = nullptr;  // [nq], lse * log2 e
  const float* delta = nullptr;  // [nq]
  const int32_t* lo = nullptr;  // [nq], visible keys [lo, hi) relative to the chunk's first key
  const int32_t* hi = nullptr;
  const float* kt = nullptr;  // [d][ldk] from the chunk's first key: alpha * k transposed
  const float* vt = nullptr;  // [d][ldk]: v transposed
  int64_t ldk = 0;
  const float* k = nullptr;  // [nk][d]: k rows, packed
  float* p = nullptr;        // [nq][ldp], scratch: P
  float* ds = nullptr;       // [nq][ldp], scratch: dS (scale folded in)
  int64_t ldp = 0;           // >= nk_pad
  float* dk = nullptr;       // [nk][d], accumulated
  float* dv = nullptr;       // [nk][d], accumulated
  float* dq = nullptr;       // [nq][d], accumulated
};

// The fp32 backward's tile kernel for params (kNone: the sgemm tile): fused_isa's choice.
FusedIsa fused_backward_isa(const AttendParams& params);

// Runs the three passes of one chunk on the ISA's body (isa must not be kNone).
void fused_backward_tile(FusedIsa isa, const FusedGradTile& t);

// A work item's key tile as the chunks read it: kt[e][j] = alpha * k[j][e] and vt[e][j] = v[j][e]
// for its nk keys (rows `stride` apart, d a multiple of the ISA's vector), zero in the columns
// [nk, reach) (reach a multiple of kFusedQueryPad, at most ldk), and kp[j] = k[j] densely; the
// transposes run as kW x kW blocks in registers (isa must not be kNone).
void fused_pack_key_tile(FusedIsa isa, const float* k, const float* v, int64_t stride, int64_t nk, int64_t d,
                         float alpha, float* kt, float* vt, int64_t ldk, int64_t reach, float* kp);

}  // namespace dring::kernels::cpu
