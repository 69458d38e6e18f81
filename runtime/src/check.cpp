// check.cpp — sampled comparison against the float64 reference.
#include "dring/runtime/check.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <tuple>

#include "dring/comm/mpi_check.hpp"

namespace dring {

double default_check_tolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 2e-5;
    case DType::kF16: return 2e-3;
    case DType::kBF16: return 1e-2;
    case DType::kF64: return 1e-12;
  }
  return 2e-5;
}

std::vector<RowId> sample_rows(const AttentionShape& s, const ShardLayout& layout, int64_t count, uint64_t seed,
                               const std::vector<int64_t>& doc_lens) {
  std::vector<RowId> rows;
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  const int64_t total = s.batch * s.seq * s.heads;
  count = std::min(count, total);
  auto add = [&](int64_t b, int64_t pos, int64_t h) {
    if (static_cast<int64_t>(rows.size()) < count && seen.insert({b, pos, h}).second) rows.push_back({b, pos, h});
  };
  // Edges first: where an off-by-one in the layout or the plan would show.
  add(0, 0, 0);
  add(s.batch - 1, s.seq - 1, s.heads - 1);
  // Edges of the runs: the first rows of each rank's first runs (a few per rank; striped layouts
  // have many) and the rows just before them, then the last rows of those runs.
  constexpr size_t kRunsPerRank = 4;
  for (int t = 0; t < layout.world_size(); ++t) {
    const std::vector<ShardRun>& runs = layout.runs(t);
    for (size_t n = 0; n < std::min(runs.size(), kRunsPerRank); ++n) {
      const int64_t first = runs[n].pos.first;
      if (first > 0) {
        add(t % s.batch, first, t % s.heads);
        add(t % s.batch, first - 1, (t + 1) % s.heads);
      }
    }
  }
  for (int t = 0; t < layout.world_size(); ++t) {
    const std::vector<ShardRun>& runs = layout.runs(t);
    for (size_t n = 0; n < std::min(runs.size(), kRunsPerRank); ++n) add((t + 1) % s.batch, runs[n].pos.last(), t % s.heads);
  }
  // Document edges: the first and last row of every document (while the count lasts).
  int64_t doc_begin = 0;
  for (size_t d = 0; d < doc_lens.size() && doc_begin < s.seq; ++d) {
    add(d % s.batch, doc_begin, d % s.heads);
    if (doc_begin + doc_lens[d] - 1 < s.seq) add(d % s.batch, doc_begin + doc_lens[d] - 1, (d + 1) % s.heads);
    doc_begin += doc_lens[d];
  }
  uint64_t state = seed ^ 0x2545f4914f6cdd1dULL;
  while (static_cast<int64_t>(rows.size()) < count) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const int64_t n = static_cast<int64_t>((state >> 17) % static_cast<uint64_t>(total));
    add(n / (s.seq * s.heads), (n / s.heads) % s.seq, n % s.heads);
  }
  return rows;
}

void add_row_error(const reference::RowResult& ref, const float* out, float lse, CheckResult& result) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  result.rows += 1;
  if (ref.keys == 0) {
    bool ok = std::isinf(lse) && lse < 0;
    for (size_t c = 0; c < ref.out.size(); ++c) ok = ok && out[c] == 0.0f;
    if (!ok) result.max_abs_err = result.max_rel_err = kInf;
    return;
  }
  const double lse_err = std::abs(static_cast<double>(lse) - ref.lse);
  double abs_err = std::isfinite(lse_err) ? lse_err : kInf;
  double rel_err = abs_err / std::max(1.0, std::abs(ref.lse));
  const double scale = std::max(ref.value_scale, std::numeric_limits<double>::min());
  for (size_t c = 0; c < ref.out.size(); ++c) {
    const double err = std::abs(static_cast<double>(out[c]) - ref.out[c]);
    const double e = std::isfinite(err) ? err : kInf;  // NaN counts as infinitely wrong
    abs_err = std::max(abs_err, e);
    rel_err = std::max(rel_err, e / scale);
  }
  result.max_abs_err = std::max(result.max_abs_err, abs_err);
  result.max_rel_err = std::max(result.max_rel_err, rel_err);
}

CheckResult check_rows(const Problem& problem, const ShardLayout& layout, int rank, const float* out, const float* lse,
                       const reference::RowSource& source, const std::vector<RowId>& rows, double tolerance,
                       MPI_Comm comm) {
  const AttentionShape& s = problem.shape;
  const TensorDims q = s.q_dims(layout.size(rank));
  CheckResult mine;
  for (const RowId& row : rows) {
    if (layout.owner(row.pos) != rank) continue;
    const int64_t i = layout.local_row(row.pos);
    const reference::RowResult ref = reference::attention_row(problem, source, row.batch, row.pos, row.head);
    add_row_error(ref, out + q.at(row.batch, i, row.head), lse[q.state_at(row.batch, row.head, i)], mine);
  }
  CheckResult all;
  all.tolerance = tolerance;
  DRING_MPI_CHECK(MPI_Allreduce(&mine.rows, &all.rows, 1, MPI_INT64_T, MPI_SUM, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_abs_err, &all.max_abs_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_rel_err, &all.max_rel_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  all.passed = all.max_rel_err <= tolerance;
  return all;
}

GradCheckResult check_gradient_rows(const Problem& problem, const ShardLayout& layout, int rank, const float* dq,
                                    const float* dk, const float* dv, const reference::RowSource& source,
                                    const std::vector<RowId>& rows, double tolerance, double kv_budget_elements,
                                    MPI_Comm comm, int64_t in_memory_elements) {
  const AttentionShape& s = problem.shape;
  const int64_t d = s.head_dim;
  const TensorDims q = s.q_dims(layout.size(rank)), kvd = s.kv_dims(layout.size(rank));
  double max_err = 0.0, max_ref = 0.0, spent = 0.0;
  int64_t q_rows = 0, kv_rows = 0;
  // The dk and dv reference reads the forward row of every query that reads a sampled key, so it
  // reads the same input rows over and over, and from a synthetic source every value costs a hash,
  // a log and a cos: `--check --backward` on a 301-row problem took 6-8 s, 85% of it making
  // inputs. Small inputs are therefore read once (check.hpp).
  std::optional<reference::InMemorySource> in_memory;
  if (reference::InMemorySource::elements(s, source.has_dout()) <= in_memory_elements) in_memory.emplace(s, source);
  const reference::RowSource& inputs = in_memory ? static_cast<const reference::RowSource&>(*in_memory) : source;
  auto compare = [&](const std::vector<double>& want, const float* got) {
    for (int64_t c = 0; c < d; ++c) {
      const double err = std::abs(static_cast<double>(got[c]) - want[c]);
      max_err = std::max(max_err, std::isfinite(err) ? err : std::numeric_limits<double>::infinity());
      max_ref = std::max(max_ref, std::abs(want[c]));
    }
  };
  for (const RowId& row : rows) {
    if (layout.owner(row.pos) != rank) continue;
    const int64_t i = layout.local_row(row.pos);
    compare(reference::grad_q_row(problem, inputs, row.batch, row.pos, row.head),
            dq + q.at(row.batch, i, row.head));
    ++q_rows;
    const int64_t g = problem.kv_head_of(row.head);
    const double cost = reference::grad_kv_row_cost(problem, row.pos, g);
    if (spent + cost > kv_budget_elements) continue;
    spent += cost;
    const std::vector<double> kv = reference::grad_kv_row(problem, inputs, row.batch, row.pos, g);
    const int64_t at = kvd.at(row.batch, i, g);
    compare(std::vector<double>(kv.begin(), kv.begin() + d), dk + at);
    compare(std::vector<double>(kv.begin() + d, kv.end()), dv + at);
    ++kv_rows;
  }
  GradCheckResult all;
  all.result.tolerance = tolerance;
  double reduced[2] = {0.0, 0.0};
  const double mine[2] = {max_err, max_ref};
  DRING_MPI_CHECK(MPI_Allreduce(mine, reduced, 2, MPI_DOUBLE, MPI_MAX, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&q_rows, &all.result.rows, 1, MPI_INT64_T, MPI_SUM, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&kv_rows, &all.kv_rows, 1, MPI_INT64_T, MPI_SUM, comm));
  all.result.max_abs_err = reduced[0];
  all.result.max_rel_err = reduced[0] / std::max(reduced[1], std::numeric_limits<double>::min());
  all.result.passed = all.result.max_rel_err <= tolerance;
  return all;
}

}  // namespace dring
