// attend_amx.hpp — the fused forward tile on AMX, for bf16 rows and (split into bf16 parts) for
// fp32 rows: scores, online softmax and P V of one work item with the tile products on the CPU's
// matrix unit (TDPBF16PS) and the softmax in AVX-512.
//
// Layout. The item's query rows are packed once into qp [nq_pad][dp] (bf16, zero padded: nq to
// a multiple of 16 rows, head_dim to a multiple of 32). Per key tile of up to k_tile keys, K is
// packed as the B operand of S = Q K^T (pairs along head_dim: kp[e/2][j] holds k[j][e], k[j][e+1];
// a 16x16 transpose of 32-bit pairs) and V as the B operand of P V (pairs along keys: vp[j/2][c]
// holds v[j][c], v[j+1][c]). The queries then go through the tile 32 rows (one strip) at a time:
// the strip's scores st [32][k_tile] come out of the tiles in fp32 (2x2 result tiles of 16x16,
// 16 query rows x 32 head_dim per A tile); the softmax runs along each row (alpha applied in
// fp32, masked keys excluded, the running max m and sum l updated, acc's row rescaled where the
// max moved; where 16 rows all see the whole key range, their maxima, sums and m, l updated 16
// rows to a vector) and writes P rounded to bf16 (nearest even, vcvtne2ps2bf16) into p [32][k_tile];
// and acc [nq_pad][dp] (fp32) accumulates P V in 2x2 result tiles loaded from and stored back
// to acc. A strip only visits the keys (in steps of 32) its rows can see. exp2 is a degree-4
// polynomial (relative error 2.6e-6, far below P's rounding; l sums the unrounded values, as the
// oneDNN path does). The item's state (acc, m, l: the unpacked (out, lse)) lives in the caller's
// scratch; attend.cpp unpacks it before and packs it after.
//
// fp32 rows (parts = 3). The same tile runs fp32 storage to fp32 accuracy: every operand (q, K,
// V and P) is split into three bf16 parts whose sum is the fp32 value (hi = bf16(x), mid =
// bf16(x - hi), lo = bf16(x - hi - mid): 24 bits of significand between them), each packed as
// above into its own plane, and each product runs as the six part products whose weight is at
// least 2^-24 of the whole (hi.hi, hi.mid, mid.hi, hi.lo, mid.mid, lo.hi; the three dropped ones
// are below fp32's own rounding). Each part product is exact in AMX's fp32 accumulation, so the
// scores and P V carry fp32's rounding, not bf16's. exp2 is then the degree-6 polynomial (relative
// error about 2e-9), and P is split like the operands. docs/math.md has the error analysis.
// There the softmax of a strip whose rows all see its whole key range runs in small units
// between the next strip's score products (two score buffers), overlapping the vector units'
// work with the matrix unit's.
//
// The tile registers are configured (one palette: eight 16 x 64-byte tiles) at the start of
// every item and released at its end, so whatever else runs on the thread (oneDNN's AMX kernels
// in the backward) may use its own configuration in between.
#pragma once

#include <cstdint>

namespace dring::kernels::cpu {

// True when this CPU has AMX-TILE, AMX-BF16 and AVX512-BF16 (cpuid), the OS saves the AVX-512
// and tile state (XCR0) and it let this process use the tile data (Linux arch_prctl, asked once).
bool amx_bf16_usable();

// Query rows are padded to kAmxRows, head_dim and each key tile to kAmxCols.
constexpr int64_t kAmxRows = 16;
constexpr int64_t kAmxCols = 32;
constexpr int64_t kAmxStripRows = 2 * kAmxRows;
constexpr int64_t amx_round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// Operand parts per storage: bf16 rows go in as they are, fp32 rows as three bf16 parts.
constexpr int kAmxPartsBf16 = 1;
constexpr int kAmxPartsF32 = 3;

// One work item's key range for amx_key_tiles. lo/hi: each query row's visible keys [lo, hi)
// relative to k (0 <= lo, hi <= n_keys; lo >= hi for none; padding rows 0, 0).
struct AmxTile {
  int parts = kAmxPartsBf16;  // kAmxPartsF32: q, k, v point at fp32 rows
  const void* q = nullptr;    // the item's first row (bf16 or fp32, as parts says)
  int64_t q_stride = 0;       // in elements
  const void* k = nullptr;    // k and v at the range's first key
  const void* v = nullptr;
  int64_t kv_stride = 0;
  int64_t nq = 0;
  int64_t nq_pad = 0;  // nq rounded up to kAmxRows
  int64_t n_keys = 0;
  int64_t d = 0;
  int64_t dp = 0;      // d rounded up to kAmxCols
  int64_t k_tile = 0;  // a multiple of kAmxCols
  float alpha = 0.0f;  // scale * log2(e): scores in log2 units
  const int32_t* lo = nullptr;  // [nq_pad]
  const int32_t* hi = nullptr;
  float* acc = nullptr;  // [nq_pad][dp], unnormalised output (padding columns 0)
  float* m = nullptr;    // [nq_pad], running max, log2 units
  float* l = nullptr;    // [nq_pad], running sum
  uint16_t* qp = nullptr;  // [parts][nq_pad][dp], scratch
  uint16_t* kp = nullptr;  // [parts][dp / 2][k_tile][2], scratch
  uint16_t* vp = nullptr;  // [parts][k_tile / 2][dp][2], scratch
  float* st = nullptr;      // [kAmxStripRows][k_tile], scratch: even strips' scores
  float* st_next = nullptr; // [kAmxStripRows][k_tile], scratch: odd strips' scores
  uint16_t* p = nullptr;   // [parts][kAmxStripRows][k_tile], scratch
};

// Runs every key tile of t (amx_bf16_usable() must be true).
void amx_key_tiles(const AmxTile& t);

}  // namespace dring::kernels::cpu
