// dense_batches.cpp — grouping a kernel call's blocks into strided-batched dense problems
// (dring/kernels/dense_batches.hpp, where the rule is written down).
//
// Both passes go through one internal form: a Unit is a block seen as addresses in bytes, q-side
// (per query row: q, out, lse, dout, delta, dq) and k-side (per key row: k, v, dk, dv), plus a
// Shape that must be equal for units to share a problem. Step 1 grows runs over consecutive units
// (the heads dimension, GQA included), step 2 finds arithmetic progressions among equal runs (the
// batch dimension), step 3 turns each progression into a DenseProblem or back into leftovers.
#include "dring/kernels/dense_batches.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <unordered_map>

namespace dring::kernels {

namespace {

constexpr int kQSlots = 6;  // q, out, lse, dout, delta, dq
constexpr int kKSlots = 4;  // k, v, dk, dv
enum QSlot { kQ = 0, kOut, kLse, kDout, kDelta, kDq };
enum KSlot { kK = 0, kV, kDk, kDv };
using QAddr = std::array<int64_t, kQSlots>;
using KAddr = std::array<int64_t, kKSlots>;
// How many candidate progressions step 2 tries from each run (the nearest unassigned ones).
constexpr int kCandidates = 8;

int64_t addr(const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); }

struct Shape {
  int64_t n_q = 0, n_k = 0;
  DenseMask mask;
  std::array<int64_t, kQSlots> q_rows{};  // row strides in bytes
  std::array<int64_t, kKSlots> k_rows{};
  int64_t heads = 1;  // query heads of one unit (GradBlock::n_heads)
  QAddr head_step{};  // bytes between a unit's query heads (heads > 1)
  bool operator==(const Shape&) const = default;
};

struct Unit {
  size_t index = 0;  // in the caller's span
  Shape shape;
  QAddr q{};
  KAddr k{};
};

// A run of consecutive units: units * shape.heads query heads, heads_kv kv heads.
struct Run {
  size_t first = 0;
  size_t units = 0;
  int64_t heads_kv = 0;
  QAddr q_head{};  // bytes per query head
  KAddr k_head{};  // bytes per kv head
};

struct Sizes {
  std::array<int64_t, kQSlots> q;
  std::array<int64_t, kKSlots> k;
};
Sizes element_sizes(DType dtype) {
  const int64_t e = dtype_bytes(dtype);
  return {{e, e, 4, e, 4, 4}, {e, e, 4, 4}};
}

bool aligned(int64_t bytes) { return bytes % 16 == 0; }

bool candidate(const Unit& u, const DenseRule& rule, bool backward) {
  const bool dtype_ok = rule.dtype == DType::kBF16 || rule.dtype == DType::kF16 ||
                        (rule.accept_f32 && rule.dtype == DType::kF32);
  if (!dtype_ok || rule.head_dim % 8 != 0 || rule.head_dim > rule.max_head_dim) return false;
  if (u.shape.n_q < rule.min_rows || u.shape.n_k < rule.min_rows) return false;
  // What the fused kernel reads in place: q, k, v, and out (backward: out and dout).
  std::vector<int64_t> direct = {u.q[kQ], u.k[kK], u.k[kV], u.q[kOut], u.shape.q_rows[kQ], u.shape.k_rows[kK],
                                 u.shape.q_rows[kOut]};
  if (backward) {
    direct.push_back(u.q[kDout]);
    direct.push_back(u.shape.head_step[kQ]);
  }
  return std::all_of(direct.begin(), direct.end(), aligned);
}

// Step 1: the longest run of units from `first` whose query heads step by constants and whose kv
// head is (query head) / g for a constant g.
Run grow_run(const std::vector<Unit>& units, size_t first) {
  const Unit& u0 = units[first];
  const int64_t per = u0.shape.heads;
  Run run{first, 1, 0, {}, {}};
  bool q_known = per > 1, k_known = false;
  if (q_known) run.q_head = u0.shape.head_step;
  size_t shared = 1;  // leading units that read the same kv rows
  for (size_t n = first + 1; n < units.size(); ++n) {
    const Unit& u = units[n];
    if (!(u.shape == u0.shape)) break;
    const int64_t m = static_cast<int64_t>(n - first);
    if (!q_known) {
      for (int s = 0; s < kQSlots; ++s) run.q_head[s] = u.q[s] - u0.q[s];
      if (run.q_head[kQ] == 0) break;
      q_known = true;
    }
    bool ok = true;
    for (int s = 0; s < kQSlots; ++s) ok = ok && u.q[s] == u0.q[s] + m * per * run.q_head[s];
    if (!ok) break;
    if (!k_known) {
      if (u.k == u0.k) {
        ++shared;
        run.units = n - first + 1;
        continue;
      }
      for (int s = 0; s < kKSlots; ++s) run.k_head[s] = u.k[s] - u0.k[s];
      k_known = true;
    }
    const int64_t g = m / static_cast<int64_t>(shared);
    for (int s = 0; s < kKSlots; ++s) ok = ok && u.k[s] == u0.k[s] + g * run.k_head[s];
    if (!ok) break;
    run.units = n - first + 1;
  }
  if (!k_known) shared = run.units;
  run.units -= run.units % shared;
  run.heads_kv = static_cast<int64_t>(run.units / shared);
  return run;
}

// Everything but the first addresses: runs with equal signatures may share a problem.
std::vector<int64_t> signature(const Run& run, const Unit& u0) {
  const Shape& s = u0.shape;
  std::vector<int64_t> sig = {s.n_q, s.n_k, s.mask.has_right, s.mask.right, s.mask.has_left, s.mask.left, s.heads,
                              static_cast<int64_t>(run.units), run.heads_kv};
  sig.insert(sig.end(), s.q_rows.begin(), s.q_rows.end());
  sig.insert(sig.end(), s.k_rows.begin(), s.k_rows.end());
  sig.insert(sig.end(), s.head_step.begin(), s.head_step.end());
  sig.insert(sig.end(), run.q_head.begin(), run.q_head.end());
  sig.insert(sig.end(), run.k_head.begin(), run.k_head.end());
  return sig;
}

DenseTensor tensor(int64_t base, int64_t batch_bytes, int64_t head_bytes, int64_t row_bytes, int64_t size) {
  return DenseTensor{reinterpret_cast<void*>(static_cast<intptr_t>(base)), batch_bytes / size,
                     head_bytes / size, row_bytes / size};
}

struct Grouping {
  std::vector<DenseProblem> problems;
  std::vector<std::vector<size_t>> sources;
  std::vector<size_t> leftovers;  // indices into the caller's span
};

Grouping group(const std::vector<Unit>& units, std::vector<size_t> leftovers, const DenseRule& rule, bool backward) {
  Grouping out;
  // Step 1.
  std::vector<Run> runs;
  for (size_t n = 0; n < units.size();) {
    Run run = grow_run(units, n);
    runs.push_back(run);
    n += run.units;  // at least 1: a run holds its first unit
  }
  // Step 2: equal signatures, then progressions of first addresses within each.
  std::map<std::vector<int64_t>, std::vector<size_t>> by_signature;
  for (size_t r = 0; r < runs.size(); ++r) {
    by_signature[signature(runs[r], units[runs[r].first])].push_back(r);
  }
  const Sizes size = element_sizes(rule.dtype);
  for (const auto& entry : by_signature) {
    const std::vector<size_t>& members = entry.second;  // not a structured binding: clang 14's
                                                        // lambdas below cannot capture one
    std::unordered_map<int64_t, size_t> at_q;  // first q address -> position in members
    for (size_t i = 0; i < members.size(); ++i) at_q.emplace(units[runs[members[i]].first].q[kQ], i);
    std::vector<bool> taken(members.size(), false);
    auto first_of = [&](size_t i) -> const Unit& { return units[runs[members[i]].first]; };
    // Positions of the progression from i with step (dq, dk), taken ones excluded.
    auto progression = [&](size_t i, const QAddr& dq, const KAddr& dk) {
      std::vector<size_t> chain = {i};
      for (int64_t n = 1;; ++n) {
        const auto it = at_q.find(first_of(i).q[kQ] + n * dq[kQ]);
        if (it == at_q.end() || taken[it->second]) break;
        const Unit& u = first_of(it->second);
        bool ok = true;
        for (int s = 0; s < kQSlots; ++s) ok = ok && u.q[s] == first_of(i).q[s] + n * dq[s];
        for (int s = 0; s < kKSlots; ++s) ok = ok && u.k[s] == first_of(i).k[s] + n * dk[s];
        if (!ok) break;
        chain.push_back(it->second);
      }
      return chain;
    };
    for (size_t i = 0; i < members.size(); ++i) {
      if (taken[i]) continue;
      std::vector<size_t> best = {i};
      QAddr best_dq{};
      KAddr best_dk{};
      int tried = 0;
      for (size_t j = i + 1; j < members.size() && tried < kCandidates; ++j) {
        if (taken[j]) continue;
        ++tried;
        QAddr dq;
        KAddr dk;
        for (int s = 0; s < kQSlots; ++s) dq[s] = first_of(j).q[s] - first_of(i).q[s];
        for (int s = 0; s < kKSlots; ++s) dk[s] = first_of(j).k[s] - first_of(i).k[s];
        if (dq[kQ] == 0) continue;
        std::vector<size_t> chain = progression(i, dq, dk);
        if (chain.size() > best.size()) {
          best = std::move(chain);
          best_dq = dq;
          best_dk = dk;
        }
      }
      for (size_t c : best) taken[c] = true;

      const Run& run = runs[members[i]];
      const Unit& u0 = units[run.first];
      DenseProblem p;
      p.batch = static_cast<int64_t>(best.size());
      p.heads_q = static_cast<int64_t>(run.units) * u0.shape.heads;
      p.heads_kv = run.heads_kv;
      p.s_q = u0.shape.n_q;
      p.s_kv = u0.shape.n_k;
      p.mask = u0.shape.mask;
      auto q_side = [&](int s) {
        return tensor(u0.q[s], best_dq[s], run.q_head[s], u0.shape.q_rows[s], size.q[s]);
      };
      auto k_side = [&](int s) {
        return tensor(u0.k[s], best_dk[s], run.k_head[s], u0.shape.k_rows[s], size.k[s]);
      };
      p.q = q_side(kQ);
      p.out = q_side(kOut);
      p.lse = q_side(kLse);
      p.k = k_side(kK);
      p.v = k_side(kV);
      if (backward) {
        p.dout = q_side(kDout);
        p.delta = q_side(kDelta);
        p.dq = q_side(kDq);
        p.dk = k_side(kDk);
        p.dv = k_side(kDv);
      }
      std::vector<size_t> sources;
      for (size_t c : best) {
        const Run& r = runs[members[c]];
        for (size_t n = 0; n < r.units; ++n) sources.push_back(units[r.first + n].index);
      }
      if (p.scores() >= rule.min_problem_scores) {
        out.problems.push_back(p);
        out.sources.push_back(std::move(sources));
      } else {
        leftovers.insert(leftovers.end(), sources.begin(), sources.end());
      }
    }
  }
  std::sort(leftovers.begin(), leftovers.end());
  out.leftovers = std::move(leftovers);
  return out;
}

// A block as a Unit (its mask set by the caller); e: bytes of the storage dtype.
Unit unit_of(const AttendBlock& b, int64_t e) {
  Unit u;
  u.shape.n_q = b.n_q;
  u.shape.n_k = b.n_k;
  u.shape.q_rows = {b.q_stride * e, b.out_stride * e, b.lse_stride * 4, 0, 0, 0};
  u.shape.k_rows = {b.kv_stride * e, b.kv_stride * e, 0, 0};
  u.q = {addr(b.q), addr(b.out), addr(b.lse), 0, 0, 0};
  u.k = {addr(b.k), addr(b.v), 0, 0};
  return u;
}
Unit unit_of(const GradBlock& b, int64_t e) {
  Unit u;
  u.shape.n_q = b.n_q;
  u.shape.n_k = b.n_k;
  const int64_t qs = b.q_stride, ss = b.state_stride;
  u.shape.q_rows = {qs * e, qs * e, ss * 4, qs * e, ss * 4, qs * 4};
  u.shape.k_rows = {b.kv_stride * e, b.kv_stride * e, b.dkv_stride * 4, b.dkv_stride * 4};
  u.shape.heads = b.n_heads;
  if (b.n_heads > 1) {
    const int64_t qh = b.q_head_step, sh = b.state_head_step;
    u.shape.head_step = {qh * e, qh * e, sh * 4, qh * e, sh * 4, qh * 4};
  }
  u.q = {addr(b.q), addr(b.out), addr(b.lse), addr(b.dout), addr(b.delta), addr(b.dq)};
  u.k = {addr(b.k), addr(b.v), addr(b.dk), addr(b.dv)};
  return u;
}
bool has_out(const AttendBlock&) { return true; }
bool has_out(const GradBlock& b) { return b.out != nullptr; }

template <class Plan, class Block>
Plan plan_blocks(std::span<const Block> blocks, const DenseRule& rule, bool backward) {
  const int64_t e = dtype_bytes(rule.dtype);
  std::vector<Unit> units;
  std::vector<size_t> leftovers;
  for (size_t n = 0; n < blocks.size(); ++n) {
    const Block& b = blocks[n];
    const std::optional<DenseMask> mask = dense_mask(b.mask, b.n_q, b.n_k);
    Unit u = unit_of(b, e);
    u.index = n;
    if (mask) u.shape.mask = *mask;
    if (mask && has_out(b) && candidate(u, rule, backward)) {
      units.push_back(u);
    } else {
      leftovers.push_back(n);
    }
  }
  Grouping g = group(units, std::move(leftovers), rule, backward);
  Plan plan;
  plan.problems = std::move(g.problems);
  plan.sources = std::move(g.sources);
  for (size_t n : g.leftovers) plan.leftovers.push_back(blocks[n]);
  return plan;
}

}  // namespace

BlockMask DenseMask::block_mask() const {
  BlockMask m;
  if (has_right) m.band.lo = -right;
  if (has_left) m.band.hi = left - 1;
  return m;
}

std::optional<DenseMask> dense_mask(const BlockMask& mask, int64_t n_q, int64_t n_k) {
  if (n_q <= 0 || n_k <= 0) return std::nullopt;
  if (mask.trivial()) return DenseMask{};
  if (mask.q_step != mask.k_step) return std::nullopt;
  // Positions differ by shift + step * (i - j): the band on positions is a band on i - j,
  // lo_ij <= i - j <= hi_ij (each side only where the band has it and it can bind).
  const int64_t step = mask.q_step, shift = mask.q_first - mask.k_first;
  const bool has_lo = mask.band.lo > -Band::kUnbounded && BlockMask::ceil_div(mask.band.lo - shift, step) > -(n_k - 1);
  const bool has_hi = mask.band.hi < Band::kUnbounded && BlockMask::floor_div(mask.band.hi - shift, step) < n_q - 1;
  const int64_t lo_ij = has_lo ? BlockMask::ceil_div(mask.band.lo - shift, step) : -(n_k - 1);
  const int64_t hi_ij = has_hi ? BlockMask::floor_div(mask.band.hi - shift, step) : n_q - 1;
  // Every row must see a key: row 0 a key j <= -lo_ij, the last row a key j >= n_q - 1 - hi_ij.
  if (lo_ij > 0 || hi_ij < n_q - n_k || lo_ij > hi_ij) return std::nullopt;
  DenseMask dense;
  if (has_lo) {
    dense.has_right = true;
    dense.right = -lo_ij;
  }
  if (has_hi) {
    if (hi_ij < 0 || n_q > n_k) return std::nullopt;  // cuDNN: left bound >= 1, s_q <= s_kv
    dense.has_left = true;
    dense.left = hi_ij + 1;
  }
  return dense;
}

double DenseProblem::scores() const {
  return static_cast<double>(batch) * static_cast<double>(heads_q) * mask.block_mask().visible_pairs(s_q, s_kv);
}

DenseRule DenseRule::everything(DType dtype, int64_t head_dim) {
  DenseRule rule;
  rule.dtype = dtype;
  rule.head_dim = head_dim;
  rule.max_head_dim = std::numeric_limits<int64_t>::max();
  rule.min_rows = 1;
  rule.min_problem_scores = 0.0;
  rule.accept_f32 = true;
  return rule;
}

DenseForwardPlan plan_dense(std::span<const AttendBlock> blocks, const DenseRule& rule) {
  return plan_blocks<DenseForwardPlan>(blocks, rule, false);
}

DenseBackwardPlan plan_dense(std::span<const GradBlock> blocks, const DenseRule& rule) {
  return plan_blocks<DenseBackwardPlan>(blocks, rule, true);
}

}  // namespace dring::kernels
