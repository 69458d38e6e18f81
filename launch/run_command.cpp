// run_command.cpp — `dring run`: one distributed forward pass, timed, checked, reported.
//
// Order of work: agree on the problem (every bad input is found here, before any file is
// touched) -> fill or read this rank's shard -> warm-up and timed passes -> --check -> --output
// (atomic) -> table and --json. Only the passes are timed.
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "commands.hpp"
#include "dring/check.hpp"
#include "dring/collective.hpp"
#include "dring/comm/mpi_transport.hpp"
#include "dring/executor.hpp"
#include "dring/hdf5_io.hpp"
#include "dring/report.hpp"
#include "dring/shard.hpp"
#include "dring/synthetic.hpp"

namespace dring::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

AttentionConfig config_from(const RunOptions& o) {
  DRING_CHECK(!(o.segments.empty() && !o.dilations.empty()), Status::kInvalidArgument,
              "--dilations needs --segments (one segment length per dilation rate)");
  DRING_CHECK(o.dilations.empty() || o.dilations.size() == o.segments.size(), Status::kInvalidArgument,
              "--segments has " << o.segments.size() << " values but --dilations has " << o.dilations.size()
                                << " (give one dilation rate per segment length)");
  AttentionConfig config;
  for (size_t i = 0; i < o.segments.size(); ++i) {
    config.pairs.push_back({o.segments[i], o.dilations.empty() ? 1 : o.dilations[i]});
  }
  config.causal = o.causal;
  config.scale = o.scale;
  return config;
}

void check_run_options(const RunOptions& o) {
  DRING_CHECK(o.repeat >= 1, Status::kInvalidArgument, "--repeat must be at least 1 (got " << o.repeat << ")");
  DRING_CHECK(o.threads >= 0, Status::kInvalidArgument, "--threads must be positive (got " << o.threads << ")");
  DRING_CHECK(o.check_rows >= 1, Status::kInvalidArgument, "--check-rows must be at least 1 (got " << o.check_rows << ")");
  DRING_CHECK(o.check_tolerance >= 0, Status::kInvalidArgument, "--check-tol must not be negative");
  DRING_CHECK(o.exchange_chunk_kib >= 0, Status::kInvalidArgument, "--exchange-chunk-kib must not be negative");
  DRING_CHECK(o.output.empty() || o.output != o.input, Status::kInvalidArgument,
              "--output must not be the --input file");
  DRING_CHECK(o.backend != "cuda", Status::kUnsupported,
              "--backend cuda: this build of dring has no CUDA backend (use --backend cpu)");
  DRING_CHECK(o.dtype == "fp32", Status::kUnsupported,
              "--dtype " << o.dtype << " is not supported by the cpu backend (it computes in fp32)");
}

AttentionShape shape_from(const ShapeOptions& s) {
  return AttentionShape{s.batch, s.seq, s.heads, s.kv_heads.value_or(s.heads), s.head_dim};
}

// Prints "dring: <label>: 42% (5.1 s)" on stderr from rank 0, for passes longer than a few seconds.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool enabled) : enabled_(enabled) {}
  void start(std::string label) {
    label_ = std::move(label);
    start_ = last_ = Clock::now();
  }
  void operator()(double fraction) {
    if (!enabled_ || seconds_since(start_) < 3.0 || seconds_since(last_) < 2.0) return;
    last_ = Clock::now();
    std::fprintf(stderr, "dring: %s: %3.0f%% (%.1f s)\n", label_.c_str(), 100.0 * fraction, seconds_since(start_));
  }

 private:
  bool enabled_;
  std::string label_;
  Clock::time_point start_, last_;
};

void write_json_file(const std::string& path, const nlohmann::json& j) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp);
    DRING_CHECK(out.good(), Status::kIoError, "cannot write --json " << path);
    out << j.dump(2) << "\n";
    DRING_CHECK(out.good(), Status::kIoError, "cannot write --json " << path);
  }
  DRING_CHECK(std::rename(temp.c_str(), path.c_str()) == 0, Status::kIoError, "cannot write --json " << path);
}

}  // namespace

int default_threads(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  DRING_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int local_ranks = 1;
  MPI_Comm_size(node, &local_ranks);
  MPI_Comm_free(&node);
  cpu_set_t set;
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::max(1, std::min(allowed, cores / local_ranks));
}

int run_command(MPI_Comm comm, const RunOptions& o) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));

  // 1. The problem. Rank 0 inspects an input file; every rank validates the same arithmetic.
  Problem problem;
  agree(comm, [&] {
    check_run_options(o);
    problem.config = config_from(o);
    if (o.input.empty()) problem.shape = shape_from(o.shape);
    if (!o.input.empty() && rank == 0) problem.shape = h5::inspect_input(o.input).shape;
  });
  if (!o.input.empty()) {
    int64_t dims[5] = {problem.shape.batch, problem.shape.seq, problem.shape.heads, problem.shape.kv_heads,
                       problem.shape.head_dim};
    DRING_MPI_CHECK(MPI_Bcast(dims, 5, MPI_INT64_T, 0, comm));
    problem.shape = AttentionShape{dims[0], dims[1], dims[2], dims[3], dims[4]};
  }
  agree(comm, [&] {
    validate(problem);
    ShardLayout(problem.shape.seq, world);
  });
  const ShardLayout layout(problem.shape.seq, world);
  const int threads = o.threads > 0 ? o.threads : default_threads(comm);

  // 2. This rank's inputs.
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cpu_backend(tracker, threads);
  ShardBuffers shard = allocate_shard(problem.shape, layout.begin(rank), layout.size(rank), backend->allocator());
  if (o.input.empty()) {
    fill_synthetic_shard(o.shape.seed, problem.shape, shard, *backend, tracker, threads);
  } else {
    const std::pair<const char*, Buffer<float>*> tensors[] = {{"q", &shard.q}, {"k", &shard.k}, {"v", &shard.v}};
    for (const auto& [name, buffer] : tensors) {
      agree(comm, [&] { h5::read_rows(o.input, comm, name, shard.begin, shard.rows, buffer->data()); });
      const int64_t heads = name[0] == 'q' ? problem.shape.heads : problem.shape.kv_heads;
      check_finite(comm, problem.shape, shard.begin, shard.rows, name, buffer->data(), heads);
    }
  }

  // 3. Passes: one warm-up, then --repeat timed ones; each timed as the slowest rank's.
  comm::MpiTransport transport(comm);
  ProgressPrinter progress(rank == 0);
  ExecutorOptions exec;
  exec.threads = threads;
  exec.exchange_chunk_bytes = o.exchange_chunk_kib * 1024;
  exec.on_progress = [&progress](double fraction) { progress(fraction); };
  RingExecutor executor(problem, transport, *backend, exec);
  std::vector<double> pass_ms;
  PassStats last;
  for (int pass = 0; pass <= o.repeat; ++pass) {
    progress.start(pass == 0 ? "warm-up pass" : "pass " + std::to_string(pass) + " of " + std::to_string(o.repeat));
    transport.barrier();
    const auto t0 = Clock::now();
    last = executor.forward(shard.inputs(), shard.outputs());
    const double ms = transport.allreduce_max(seconds_since(t0) * 1e3);
    if (pass > 0) pass_ms.push_back(ms);
  }

  // 4. The report.
  RunReport report;
  report.problem = problem;
  report.world_size = world;
  report.threads = threads;
  report.repeat = o.repeat;
  report.input = o.input.empty() ? "synthetic seed " + std::to_string(o.shape.seed) : o.input;
  report.transport = transport.name();
  report.pass_ms = pass_ms;
  std::vector<double> sorted = pass_ms;
  std::sort(sorted.begin(), sorted.end());
  report.time_ms = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                     : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  report.tokens_per_s = static_cast<double>(problem.shape.batch * problem.shape.seq) / (report.time_ms * 1e-3);
  report.flops = problem.forward_flops();
  report.steps = static_cast<int64_t>(transport.allreduce_max(static_cast<double>(last.steps)));
  RankStats mine;
  mine.rank = rank;
  const MemoryStats memory = tracker.stats();
  mine.peak_tracked_bytes = memory.host().peak_bytes;
  mine.peak_tracked_by_category = memory.host().peak_by_category;
  mine.peak_rss_bytes = process_peak_rss_bytes();
  mine.comm_sent_bytes = last.sent_bytes;
  mine.comm_recv_bytes = last.recv_bytes;
  mine.compute_ms = last.compute_ms;
  mine.comm_wait_ms = last.comm_wait_ms;
  report.ranks = gather_rank_stats(comm, mine);

  // 5. --check against the float64 reference, which regenerates or reads the rows it needs.
  if (o.check) {
    const std::vector<RowId> rows = sample_rows(problem.shape, layout, o.check_rows, o.shape.seed + 1);
    const double tolerance = o.check_tolerance > 0 ? o.check_tolerance : kDefaultCheckTolerance;
    std::unique_ptr<reference::RowSource> source;
    agree(comm, [&] {
      if (o.input.empty()) {
        source = std::make_unique<SyntheticSource>(o.shape.seed, problem.shape);
      } else {
        source = std::make_unique<h5::FileRowSource>(o.input);
      }
    });
    report.check = check_rows(problem, layout, rank, shard.out.data(), shard.lse.data(), *source, rows, tolerance, comm);
  }

  // 6. --output, written under a temporary name and renamed when complete.
  if (!o.output.empty()) {
    h5::OutputFile file(o.output, comm);
    const AttentionShape& s = problem.shape;
    agree(comm, [&] {
      file.write_rows("out", {s.batch, s.seq, s.heads, s.head_dim}, 1, shard.begin, shard.rows, shard.out.data());
      file.write_rows("lse", {s.batch, s.heads, s.seq}, 2, shard.begin, shard.rows, shard.lse.data());
      h5::RunAttributes attributes;
      attributes.problem = problem;
      attributes.world_size = world;
      if (o.input.empty()) attributes.seed = o.shape.seed;
      attributes.input = o.input;
      file.write_attributes(attributes);
    });
    file.commit();
  }

  // 7. Table and JSON from rank 0.
  agree(comm, [&] {
    if (rank != 0) return;
    if (!o.quiet) std::fputs(format_table(report).c_str(), stdout);
    if (!o.json.empty()) write_json_file(o.json, to_json(report));
  });
  if (report.check && !report.check->passed) {
    throw CollectiveError(Status::kCheckFailed,
                          "--check failed: max rel err " + std::to_string(report.check->max_rel_err) +
                              " exceeds the tolerance " + std::to_string(report.check->tolerance),
                          -1);
  }
  return 0;
}

}  // namespace dring::cli
