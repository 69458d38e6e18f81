// dring/check.hpp — `--check`: compare sampled rows of a distributed result with the float64
// reference, which regenerates (or reads) exactly the key rows each sampled row needs.
//
// Error measures, per row: out is compared relative to the largest |v| among the row's keys (the
// natural scale of an average of value rows; relative-to-out would explode where out is near 0),
// lse absolutely and relative to max(1, |lse|). A row the reference says has no keys must have
// out exactly 0 and lse -inf.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dring/core/problem.hpp"
#include "dring/core/dtype.hpp"
#include "dring/kernels/reference.hpp"
#include "dring/runtime/layout.hpp"

namespace dring {

struct RowId {
  int64_t batch = 0;
  int64_t pos = 0;
  int64_t head = 0;
  bool operator==(const RowId&) const = default;
};

struct CheckResult {
  int64_t rows = 0;
  double max_abs_err = 0.0;
  double max_rel_err = 0.0;
  double tolerance = 0.0;
  bool passed = true;
};

// Default tolerances of --check and dring verify by storage dtype (docs/math.md): a few times the
// error a plain implementation of the same precision makes, far below a real mistake.
double default_check_tolerance(DType dtype);

// `count` distinct rows: the first and last of the sequence, the edges of every rank's runs and of
// every document (`doc_lens`, empty for one), the rest spread by a hash of `seed`. The same on
// every rank.
std::vector<RowId> sample_rows(const AttentionShape& shape, const ShardLayout& layout, int64_t count, uint64_t seed,
                               const std::vector<int64_t>& doc_lens = {});

// Adds one row's comparison to `result` (does not decide `passed`).
void add_row_error(const reference::RowResult& ref, const float* out, float lse, CheckResult& result);

// Collective: each rank checks the sampled rows it owns in its shard (out [B, rows, H, D], lse
// [B, H, rows], rows in the layout's local order); the result, reduced over ranks, is returned on every rank.
CheckResult check_rows(const Problem& problem, const ShardLayout& layout, int rank, const float* out, const float* lse,
                       const reference::RowSource& source, const std::vector<RowId>& rows, double tolerance,
                       MPI_Comm comm);

// Collective: the gradients of the sampled rows against the float64 reference: dq of every sampled
// (row, head), and dk, dv of the sampled rows' kv heads while their reference cost (each key row
// needs the forward rows of all queries that read it) stays within `kv_budget_elements` input
// elements read per rank.
// Errors are relative to the largest reference gradient element among the checked rows.
// Inputs of at most `in_memory_elements` values in all (q, k, v, dout) are read from `source` once,
// into float64 tensors the reference then reads (the same values, so the same result); larger
// ones are read row by row as the reference needs them, so the check's memory stays bounded.
inline constexpr int64_t kGradCheckInMemoryElements = int64_t{1} << 20;  // 8 MiB of doubles
struct GradCheckResult {
  CheckResult result;
  int64_t kv_rows = 0;  // key rows whose dk, dv were checked
};
GradCheckResult check_gradient_rows(const Problem& problem, const ShardLayout& layout, int rank, const float* dq,
                                    const float* dk, const float* dv, const reference::RowSource& source,
                                    const std::vector<RowId>& rows, double tolerance, double kv_budget_elements,
                                    MPI_Comm comm, int64_t in_memory_elements = kGradCheckInMemoryElements);

}  // namespace dring
