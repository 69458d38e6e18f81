// verify_command.cpp — `dring verify`: an output file of `dring run` against the float64
// reference computed from its input file: out and lse, and dq, dk, dv when the output has them.
// Rows are shared among the ranks it runs on.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "commands.hpp"
#include "dring/runtime/check.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_check.hpp"
#include "dring/runtime/hdf5_io.hpp"
#include "fault_guard.hpp"

namespace dring::cli {

namespace {

std::vector<float> read_row(const h5::DatasetReader& reader, int64_t b, int64_t pos, int64_t head, int64_t d) {
  std::vector<double> row(d);
  reader.read({b, pos, head, 0}, {1, 1, 1, 1}, {1, 1, 1, d}, row.data());
  return std::vector<float>(row.begin(), row.end());
}

// Max over ranks of (err, ref) pairs and sum of counts.
void reduce(MPI_Comm comm, CheckResult& r) {
  CheckResult mine = r;
  DRING_MPI_CHECK(MPI_Allreduce(&mine.rows, &r.rows, 1, MPI_INT64_T, MPI_SUM, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_abs_err, &r.max_abs_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_rel_err, &r.max_rel_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  r.passed = r.max_rel_err <= r.tolerance;
}

}  // namespace

int verify_command(MPI_Comm comm, const VerifyOptions& o) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));
  h5::RunAttributes attributes;
  bool gradients = false;
  std::unique_ptr<h5::FileRowSource> source;
  std::unique_ptr<h5::DatasetReader> out, lse, dq, dk, dv;
  agree(comm, [&] {
    DRING_CHECK(o.rows >= 0, Status::kInvalidArgument, "--rows must not be negative");
    attributes = h5::read_attributes(o.output);
    const h5::InputDescription input = [&] {
      const FileFaultGuard guard(o.input);  // HDF5 may crash on a corrupt file (fault_guard.hpp)
      return h5::inspect_input(o.input);
    }();
    DRING_CHECK(input.shape == attributes.problem.shape, Status::kInvalidArgument,
                o.output << " was computed from inputs of another shape than " << o.input);
    DRING_CHECK(input.doc_lens.empty() || input.doc_lens == attributes.problem.doc_lens(), Status::kInvalidArgument,
                o.output << " was computed with other documents than the cu_seqlens of " << o.input);
    source = std::make_unique<h5::FileRowSource>(o.input);
    out = std::make_unique<h5::DatasetReader>(o.output, "out");
    lse = std::make_unique<h5::DatasetReader>(o.output, "lse");
    gradients = h5::has_dataset(o.output, "dq");
    if (gradients) {
      DRING_CHECK(input.has_dout, Status::kInvalidArgument,
                  o.output << " holds gradients but " << o.input << " has no dout to check them with");
      dq = std::make_unique<h5::DatasetReader>(o.output, "dq");
      dk = std::make_unique<h5::DatasetReader>(o.output, "dk");
      dv = std::make_unique<h5::DatasetReader>(o.output, "dv");
    }
  });
  const Problem& p = attributes.problem;
  const AttentionShape& s = p.shape;
  const int64_t d = s.head_dim;
  std::vector<RowId> rows;
  if (o.rows == 0) {
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t i = 0; i < s.seq; ++i) {
        for (int64_t h = 0; h < s.heads; ++h) rows.push_back({b, i, h});
      }
    }
  } else {
    // Sample around the shard edges (and document edges) of the run that wrote the file.
    const int world_size = static_cast<int>(std::min<int64_t>(attributes.world_size, s.seq));
    ShardLayout layout(s.seq, world_size);
    try {
      layout = ShardLayout(s.seq, world_size, attributes.layout);
    } catch (const Error&) {  // a layout the recorded world size cannot hold: contiguous edges will do
    }
    rows = sample_rows(s, layout, o.rows, 7, p.config.doc_lens);
  }
  const double tolerance = o.tolerance > 0 ? o.tolerance : default_check_tolerance(parse_dtype(attributes.dtype));
  CheckResult forward, backward;
  forward.tolerance = backward.tolerance = tolerance;
  double grad_err = 0.0, grad_ref = 0.0;
  auto compare = [&](const std::vector<double>& want, const std::vector<float>& got) {
    for (int64_t c = 0; c < d; ++c) {
      const double err = std::abs(static_cast<double>(got[c]) - want[c]);
      grad_err = std::max(grad_err, std::isfinite(err) ? err : std::numeric_limits<double>::infinity());
      grad_ref = std::max(grad_ref, std::abs(want[c]));
    }
  };
  for (size_t n = static_cast<size_t>(rank); n < rows.size(); n += static_cast<size_t>(world)) {
    const RowId& r = rows[n];
    double lse_value = 0.0;
    lse->read({r.batch, r.head, r.pos}, {1, 1, 1}, {1, 1, 1}, &lse_value);
    add_row_error(reference::attention_row(p, *source, r.batch, r.pos, r.head), read_row(*out, r.batch, r.pos, r.head, d).data(),
                  static_cast<float>(lse_value), forward);
    if (!gradients) continue;
    compare(reference::grad_q_row(p, *source, r.batch, r.pos, r.head), read_row(*dq, r.batch, r.pos, r.head, d));
    backward.rows += 1;
    if (r.head < s.kv_heads) {  // each key row once per kv head
      const std::vector<double> kv = reference::grad_kv_row(p, *source, r.batch, r.pos, r.head);
      compare({kv.begin(), kv.begin() + d}, read_row(*dk, r.batch, r.pos, r.head, d));
      compare({kv.begin() + d, kv.end()}, read_row(*dv, r.batch, r.pos, r.head, d));
    }
  }
  reduce(comm, forward);
  double reduced[2] = {0.0, 0.0};
  const double mine[2] = {grad_err, grad_ref};
  DRING_MPI_CHECK(MPI_Allreduce(mine, reduced, 2, MPI_DOUBLE, MPI_MAX, comm));
  backward.max_abs_err = reduced[0];
  backward.max_rel_err = reduced[0] / std::max(reduced[1], std::numeric_limits<double>::min());
  int64_t grad_rows = backward.rows;
  DRING_MPI_CHECK(MPI_Allreduce(&grad_rows, &backward.rows, 1, MPI_INT64_T, MPI_SUM, comm));
  backward.passed = backward.max_rel_err <= tolerance;
  if (rank == 0) {
    std::printf("verify: %s against %s: %lld rows vs float64, max abs err %.3g, max rel err %.3g (tolerance %.1g): %s\n",
                o.output.c_str(), o.input.c_str(), static_cast<long long>(forward.rows), forward.max_abs_err,
                forward.max_rel_err, tolerance, forward.passed ? "passed" : "FAILED");
    if (gradients) {
      std::printf("verify: gradients of %lld rows vs float64, max abs err %.3g, max rel err %.3g: %s\n",
                  static_cast<long long>(backward.rows), backward.max_abs_err, backward.max_rel_err,
                  backward.passed ? "passed" : "FAILED");
    }
  }
  if (!forward.passed || (gradients && !backward.passed)) {
    throw CollectiveError(Status::kCheckFailed, "verify failed: " + o.output + " differs from the float64 reference", -1);
  }
  return 0;
}

}  // namespace dring::cli
