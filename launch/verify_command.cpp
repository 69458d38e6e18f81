// verify_command.cpp — `dring verify`: an output file of `dring run` against the float64
// reference computed from its input file. Rows are shared among the ranks it runs on.
#include <cstdio>
#include <limits>

#include "commands.hpp"
#include "dring/check.hpp"
#include "dring/collective.hpp"
#include "dring/comm/mpi_transport.hpp"
#include "dring/hdf5_io.hpp"

namespace dring::cli {

int verify_command(MPI_Comm comm, const VerifyOptions& o) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));
  h5::RunAttributes attributes;
  std::vector<RowId> rows;
  std::unique_ptr<h5::FileRowSource> source;
  std::unique_ptr<h5::DatasetReader> out, lse;
  agree(comm, [&] {
    DRING_CHECK(o.rows >= 0, Status::kInvalidArgument, "--rows must not be negative");
    attributes = h5::read_attributes(o.output);
    const h5::InputDescription input = h5::inspect_input(o.input);
    DRING_CHECK(input.shape == attributes.problem.shape, Status::kInvalidArgument,
                o.output << " was computed from inputs of another shape than " << o.input);
    source = std::make_unique<h5::FileRowSource>(o.input);
    out = std::make_unique<h5::DatasetReader>(o.output, "out");
    lse = std::make_unique<h5::DatasetReader>(o.output, "lse");
  });
  const Problem& p = attributes.problem;
  const AttentionShape& s = p.shape;
  if (o.rows == 0) {
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t i = 0; i < s.seq; ++i) {
        for (int64_t h = 0; h < s.heads; ++h) rows.push_back({b, i, h});
      }
    }
  } else {
    // Sample around the shard edges of the run that wrote the file.
    rows = sample_rows(s, ShardLayout(s.seq, std::min<int64_t>(attributes.world_size, s.seq)), o.rows, 7);
  }
  CheckResult mine;
  std::vector<double> out_row(s.head_dim);
  std::vector<float> out_f(s.head_dim);
  for (size_t n = static_cast<size_t>(rank); n < rows.size(); n += static_cast<size_t>(world)) {
    const RowId& r = rows[n];
    out->read({r.batch, r.pos, r.head, 0}, {1, 1, 1, 1}, {1, 1, 1, s.head_dim}, out_row.data());
    double lse_value = 0.0;
    lse->read({r.batch, r.head, r.pos}, {1, 1, 1}, {1, 1, 1}, &lse_value);
    for (int64_t c = 0; c < s.head_dim; ++c) out_f[c] = static_cast<float>(out_row[c]);
    add_row_error(reference::attention_row(p, *source, r.batch, r.pos, r.head), out_f.data(),
                  static_cast<float>(lse_value), mine);
  }
  CheckResult all;
  all.tolerance = o.tolerance > 0 ? o.tolerance : kDefaultCheckTolerance;
  DRING_MPI_CHECK(MPI_Allreduce(&mine.rows, &all.rows, 1, MPI_INT64_T, MPI_SUM, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_abs_err, &all.max_abs_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  DRING_MPI_CHECK(MPI_Allreduce(&mine.max_rel_err, &all.max_rel_err, 1, MPI_DOUBLE, MPI_MAX, comm));
  all.passed = all.max_rel_err <= all.tolerance;
  if (rank == 0) {
    std::printf("verify: %s against %s: %lld rows vs float64, max abs err %.3g, max rel err %.3g (tolerance %.1g): %s\n",
                o.output.c_str(), o.input.c_str(), static_cast<long long>(all.rows), all.max_abs_err, all.max_rel_err,
                all.tolerance, all.passed ? "passed" : "FAILED");
  }
  if (!all.passed) {
    throw CollectiveError(Status::kCheckFailed, "verify failed: " + o.output + " differs from the float64 reference", -1);
  }
  return 0;
}

}  // namespace dring::cli
