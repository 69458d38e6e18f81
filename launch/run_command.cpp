// run_command.cpp — `dring run`: distributed forward (and backward) passes, timed, checked, reported.
//
// Order of work: agree on the problem (every bad input is found here, before any file is
// touched) -> fill or read this rank's shard -> warm-up and timed forward passes -> with
// --backward, dout and warm-up and timed backward passes -> --check -> --output (atomic) -> table
// and --json. Only the passes are timed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>

#include "commands.hpp"
#include "fault_guard.hpp"
#include "write_watchdog.hpp"
#include "run_options.hpp"
#include "dring/kernels/cpu.hpp"
#include "dring/kernels/cpu_gemm.hpp"
#include "dring/runtime/check.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/comm/deadline.hpp"
#include "dring/comm/mpi_check.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/runtime/hdf5_io.hpp"
#include "dring/runtime/node.hpp"
#include "dring/runtime/report.hpp"
#include "dring/runtime/select.hpp"
#include "dring/runtime/shard.hpp"
#include "dring/runtime/synthetic.hpp"

namespace dring::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Work of the --check of dk/dv rows allowed per rank, in input elements the float64 reference
// reads (regenerated from the seed at some tens of ns each, or read from the file): ~10 s.
constexpr double kGradCheckBudgetElements = 3e8;

std::string lengths_text(const std::vector<int64_t>& lens) {
  std::ostringstream text;
  for (size_t i = 0; i < lens.size() && i < 8; ++i) text << (i ? "," : "") << lens[i];
  if (lens.size() > 8) text << ",... (" << lens.size() << " documents)";
  return text.str();
}

// The documents: --doc-lens, the input's cu_seqlens, or both when they agree.
void settle_documents(const RunOptions& o, const std::vector<int64_t>& file_doc_lens, Problem& problem) {
  if (!file_doc_lens.empty()) {
    DRING_CHECK(o.doc_lens.empty() || o.doc_lens == file_doc_lens, Status::kInvalidArgument,
                "--doc-lens " << lengths_text(o.doc_lens) << " disagrees with the cu_seqlens of " << o.input
                              << " (documents " << lengths_text(file_doc_lens) << ")");
    problem.config.doc_lens = file_doc_lens;
  }
  int64_t total = 0;
  for (int64_t len : o.doc_lens) total += len;
  DRING_CHECK(o.doc_lens.empty() || total == problem.shape.seq, Status::kInvalidArgument,
              "--doc-lens sums to " << total << ", not to the sequence length "
                                    << problem.shape.seq << (o.input.empty() ? " (--seq)" : " of " + o.input));
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

// Runs `collective`; a wait on the peers that passes its deadline is named by `where`.
template <class Collective>
auto named_wait(const std::string& where, Collective&& collective) {
  try {
    return collective();
  } catch (const CollectiveError&) {
    throw;
  } catch (const Error& e) {
    if (e.status() != Status::kCommError) throw;
    DRING_FAIL(Status::kCommError, where << ": " << e.what());
  }
}

// One warm-up pass, then `repeat` timed ones, each the slowest rank's time.
struct Timed {
  std::vector<double> pass_ms;
  PassStats last;
};
Timed timed_passes(const char* what, int repeat, comm::Transport& transport, ProgressPrinter& progress,
                   const std::function<PassStats()>& pass) {
  Timed timed;
  for (int n = 0; n <= repeat; ++n) {
    const std::string label =
        n == 0 ? std::string(what) + " warm-up" : std::string(what) + " " + std::to_string(n) + " of " + std::to_string(repeat);
    progress.start(label);
    named_wait("before the " + label, [&] { transport.barrier(); });
    const auto t0 = Clock::now();
    timed.last = pass();
    const double ms = named_wait("after the " + label, [&] { return transport.allreduce_max(seconds_since(t0) * 1e3); });
    if (n > 0) timed.pass_ms.push_back(ms);
  }
  return timed;
}

RankStats rank_stats(int rank, const MemoryTracker& tracker, const PassStats& pass) {
  RankStats mine;
  mine.rank = rank;
  const MemoryStats memory = tracker.stats();
  mine.peak_tracked_bytes = memory.host().peak_bytes + memory.device().peak_bytes;
  for (int c = 0; c < kMemCategoryCount; ++c) {
    mine.peak_tracked_by_category[c] = memory.host().peak_by_category[c] + memory.device().peak_by_category[c];
  }
  mine.peak_rss_bytes = process_peak_rss_bytes();
  mine.comm_sent_bytes = pass.sent_bytes;
  mine.comm_recv_bytes = pass.recv_bytes;
  mine.compute_ms = pass.compute_ms;
  mine.compute_cpu_ms = pass.compute_cpu_ms;
  mine.comm_wait_ms = pass.comm_wait_ms;
  mine.flops = pass.flops;
  return mine;
}

// Whether a tensor can be read and written as floats in place (fp32 in host memory).
bool host_f32(const TensorBuffer& t, Backend& backend) {
  return backend.space() == MemSpace::kHost && t.dtype() == DType::kF32;
}

// Reads rows of dataset `name` of the input into a tensor of the shard, and checks them.
void read_input(MPI_Comm comm, const std::string& path, const Problem& problem, const ShardBuffers& shard,
                const char* name, TensorBuffer& tensor, Backend& backend, MemoryTracker& tracker) {
  const int64_t heads = (name[0] == 'k' || name[0] == 'v') ? problem.shape.kv_heads : problem.shape.heads;
  Buffer<float> staging;
  float* host = nullptr;
  if (host_f32(tensor, backend)) {
    host = tensor.f32();
  } else {
    staging = Buffer<float>(tracker, tensor.size(), MemCategory::kWorkspace);
    host = staging.data();
  }
  agree(comm, [&] { h5::read_rows(path, comm, name, shard.runs, shard.rows, host); });
  check_finite(comm, problem.shape, shard.runs, shard.rows, name, host, heads);
  if (!host_f32(tensor, backend)) backend.upload(host, tensor.data(), tensor.size(), tensor.dtype());
}

// A tensor (or the fp32 lse) as fp32 host memory: the memory itself, or a downloaded copy.
class HostView {
 public:
  HostView(const TensorBuffer& t, Backend& backend, MemoryTracker& tracker)
      : HostView(t.data(), t.size(), t.dtype(), host_f32(t, backend), backend, tracker) {}
  HostView(const Buffer<float>& b, Backend& backend, MemoryTracker& tracker)
      : HostView(b.data(), b.size(), DType::kF32, b.space() == MemSpace::kHost, backend, tracker) {}
  const float* data() const { return data_; }

 private:
  HostView(const void* data, int64_t count, DType dtype, bool readable, Backend& backend, MemoryTracker& tracker) {
    if (count == 0) return;
    if (readable) {
      data_ = static_cast<const float*>(data);
      return;
    }
    copy_ = Buffer<float>(tracker, count, MemCategory::kWorkspace);
    backend.download(data, dtype, copy_.data(), count);
    backend.synchronize();
    data_ = copy_.data();
  }
  Buffer<float> copy_;
  const float* data_ = nullptr;
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

int run_command(MPI_Comm comm, const RunOptions& o) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));

  // 1. The problem. Rank 0 inspects an input file; every rank validates the same arithmetic.
  Problem problem;
  int64_t file[7] = {0, 0, 0, 0, 0, 0, 0};  // B, S, H, Hkv, D, has dout, documents in cu_seqlens
  std::vector<int64_t> file_doc_lens;
  LayoutSpec layout_spec;
  agree(comm, [&] {
    check_run_options(o);
    kernels::cpu::cpu_isa_cap();  // a bad DRING_MAX_CPU_ISA fails here, as a bad flag does
    // Every later wait for a peer (transport, agreements) has this deadline.
    comm::set_default_comm_timeout(comm::resolve_comm_timeout(o.comm_timeout_s.value_or(0.0)));
    problem.config = config_from(o);
    try {
      layout_spec = LayoutSpec::parse(o.layout);
    } catch (const Error& e) {
      DRING_FAIL(Status::kInvalidArgument, "--layout: " << e.what());
    }
    if (!o.input.empty() && rank == 0) {
      const h5::InputDescription d = [&] {
        const FileFaultGuard guard(o.input);  // HDF5 may crash on a corrupt file (fault_guard.hpp)
        return h5::inspect_input(o.input);
      }();
      DRING_CHECK(!o.backward || d.has_dout, Status::kInvalidArgument,
                  "--backward: " << o.input << " has no dataset 'dout' (shaped like q)");
      const int64_t values[7] = {d.shape.batch,    d.shape.seq, d.shape.heads,
                                 d.shape.kv_heads, d.shape.head_dim, d.has_dout,
                                 static_cast<int64_t>(d.doc_lens.size())};
      std::copy(values, values + 7, file);
      file_doc_lens = d.doc_lens;
    }
  });
  if (o.input.empty()) {
    problem.shape = shape_from(o.shape);
  } else {
    DRING_MPI_CHECK(MPI_Bcast(file, 7, MPI_INT64_T, 0, comm));
    problem.shape = AttentionShape{file[0], file[1], file[2], file[3], file[4]};
    file_doc_lens.resize(static_cast<size_t>(file[6]));
    if (file[6] > 0) DRING_MPI_CHECK(MPI_Bcast(file_doc_lens.data(), static_cast<int>(file[6]), MPI_INT64_T, 0, comm));
  }
  agree(comm, [&] {
    settle_documents(o, file_doc_lens, problem);
    validate(problem);
    ShardLayout(problem.shape.seq, world, layout_spec);
  });
  const ShardLayout layout(problem.shape.seq, world, layout_spec);
  const int threads = o.threads > 0 ? o.threads : default_threads(comm);

  // 2. Backend and transport, then this rank's inputs.
  MemoryTracker tracker;
  const DType dtype = parse_dtype(o.dtype);
  Runtime runtime = select_runtime(comm, o.backend, dtype, threads, tracker);
  Backend* backend = runtime.backend.get();
  comm::Transport& transport = *runtime.transport;
  ShardBuffers shard = allocate_shard(problem.shape, layout, rank, backend->allocator(), dtype);
  if (o.input.empty()) {
    fill_synthetic_shard(o.shape.seed, problem.shape, shard, *backend, tracker, threads);
  } else {
    read_input(comm, o.input, problem, shard, "q", shard.q, *backend, tracker);
    read_input(comm, o.input, problem, shard, "k", shard.k, *backend, tracker);
    read_input(comm, o.input, problem, shard, "v", shard.v, *backend, tracker);
  }

  // 3. Forward passes.
  ProgressPrinter progress(rank == 0);
  ExecutorOptions exec;
  exec.dtype = dtype;
  exec.layout = layout_spec;
  exec.threads = threads;
  exec.exchange_chunk_bytes = o.exchange_chunk_kib * 1024;
  exec.on_progress = [&progress](double fraction) { progress(fraction); };
  RingExecutor executor(problem, transport, *backend, exec);
  const Timed forward = timed_passes("forward pass", o.repeat, transport, progress,
                                     [&] { return executor.forward(shard.inputs(), shard.outputs()); });

  RunReport report;
  report.problem = problem;
  report.world_size = world;
  report.layout = layout_spec;
  report.threads = threads;
  report.repeat = o.repeat;
  report.backend = backend->name();
  if (report.backend == "cpu") {
    kernels::AttendParams tiles;
    tiles.dtype = dtype;
    tiles.head_dim = problem.shape.head_dim;
    report.cpu_gemm = kernels::cpu::sgemm_engine();
    report.cpu_tiles = kernels::cpu::tile_kernels(tiles);
  }
  report.dtype = dtype_name(dtype);
  report.input = o.input.empty() ? "synthetic seed " + std::to_string(o.shape.seed) : o.input;
  report.transport = transport.name();
  report.note = runtime.note;
  if (const std::string bound = binding_note(comm); !bound.empty()) {
    report.note += (report.note.empty() ? "" : "; ") + bound;
  }
  report.pass_ms = forward.pass_ms;
  report.time_ms = median(forward.pass_ms);
  report.tokens_per_s = static_cast<double>(problem.shape.batch * problem.shape.seq) / (report.time_ms * 1e-3);
  report.flops = problem.forward_flops();
  report.steps = static_cast<int64_t>(transport.allreduce_max(static_cast<double>(forward.last.steps)));
  report.ranks = gather_rank_stats(comm, rank_stats(rank, tracker, forward.last));

  // 4. Backward passes, with their own memory peaks.
  if (o.backward) {
    allocate_gradients(problem.shape, backend->allocator(), shard);
    if (o.input.empty()) {
      fill_synthetic_tensor(o.shape.seed, TensorId::kDout, problem.shape, shard, shard.dout, *backend, tracker, threads);
    } else {
      read_input(comm, o.input, problem, shard, "dout", shard.dout, *backend, tracker);
    }
    tracker.reset_peaks();
    const Timed backward = timed_passes("backward pass", o.repeat, transport, progress,
                                        [&] { return executor.backward(shard.grad_inputs(), shard.grad_outputs()); });
    BackwardReport b;
    b.pass_ms = backward.pass_ms;
    b.time_ms = median(backward.pass_ms);
    b.flops = 2.5 * report.flops;
    b.ranks = gather_rank_stats(comm, rank_stats(rank, tracker, backward.last));
    report.backward = b;
  }

  // 5. --check against the float64 reference, which regenerates or reads the rows it needs.
  if (o.check) {
    const std::vector<RowId> rows =
        sample_rows(problem.shape, layout, o.check_rows, o.shape.seed + 1, problem.config.doc_lens);
    const double tolerance = o.check_tolerance > 0 ? o.check_tolerance : default_check_tolerance(dtype);
    std::unique_ptr<reference::RowSource> source;
    agree(comm, [&] {
      if (o.input.empty()) {
        source = std::make_unique<SyntheticSource>(o.shape.seed, problem.shape);
      } else {
        source = std::make_unique<h5::FileRowSource>(o.input);
      }
    });
    const HostView out(shard.out, *backend, tracker), lse(shard.lse, *backend, tracker);
    report.check = check_rows(problem, layout, rank, out.data(), lse.data(), *source, rows, tolerance, comm);
    if (report.backward) {
      const HostView dq(shard.dq, *backend, tracker), dk(shard.dk, *backend, tracker), dv(shard.dv, *backend, tracker);
      report.backward->check = check_gradient_rows(problem, layout, rank, dq.data(), dk.data(), dv.data(), *source,
                                                   rows, tolerance, kGradCheckBudgetElements, comm);
    }
  }

  // 6. --output, written under a temporary name and renamed when complete. The host copies are
  // made (and agreed on) before the first collective write; each write agrees on its own outcome.
  if (!o.output.empty()) {
    const AttentionShape& s = problem.shape;
    const std::vector<int64_t> q_dims{s.batch, s.seq, s.heads, s.head_dim}, kv_dims{s.batch, s.seq, s.kv_heads, s.head_dim};
    struct Dataset {
      const char* name;
      std::vector<int64_t> dims;
      int seq_axis;
      std::optional<HostView> rows;
    };
    std::vector<Dataset> datasets;
    datasets.push_back({"out", q_dims, 1, {}});
    datasets.push_back({"lse", {s.batch, s.heads, s.seq}, 2, {}});
    if (o.backward) {
      datasets.push_back({"dq", q_dims, 1, {}});
      datasets.push_back({"dk", kv_dims, 1, {}});
      datasets.push_back({"dv", kv_dims, 1, {}});
    }
    int64_t bytes = int64_t{64} << 10;  // metadata and attributes
    for (const Dataset& d : datasets) {
      int64_t elements = 1;
      for (int64_t extent : d.dims) elements *= extent;
      bytes += elements * static_cast<int64_t>(sizeof(float));
    }
    agree(comm, [&] {
      datasets[0].rows.emplace(shard.out, *backend, tracker);
      datasets[1].rows.emplace(shard.lse, *backend, tracker);
      if (o.backward) {
        datasets[2].rows.emplace(shard.dq, *backend, tracker);
        datasets[3].rows.emplace(shard.dk, *backend, tracker);
        datasets[4].rows.emplace(shard.dv, *backend, tracker);
      }
    });
    h5::OutputFile out(o.output, comm, bytes);
    // HDF5's collective write is the one wait for peers dring's deadlines cannot reach.
    const WriteWatchdog watchdog(rank, "the collective write of --output " + o.output,
                                 write_limit_s(comm::default_comm_timeout_s(), static_cast<double>(bytes)),
                                 out.temp_path());
    for (const Dataset& d : datasets) out.write_rows(d.name, d.dims, d.seq_axis, shard.runs, d.rows->data());
    h5::RunAttributes attributes;
    attributes.problem = problem;
    attributes.world_size = world;
    attributes.layout = layout_spec;
    attributes.backend = backend->name();
    attributes.dtype = dtype_name(dtype);
    if (o.input.empty()) attributes.seed = o.shape.seed;
    attributes.input = o.input;
    out.write_attributes(attributes);
    out.commit();
  }

  // 7. Table and JSON from rank 0.
  agree(comm, [&] {
    if (rank != 0) return;
    if (!o.quiet) std::fputs(format_table(report).c_str(), stdout);
    if (!o.json.empty()) write_json_file(o.json, to_json(report));
  });
  const bool forward_ok = !report.check || report.check->passed;
  const bool backward_ok = !report.backward || !report.backward->check || report.backward->check->result.passed;
  if (!forward_ok || !backward_ok) {
    throw CollectiveError(Status::kCheckFailed,
                          std::string("--check failed: the ") + (forward_ok ? "gradients differ" : "output differs") +
                              " from the float64 reference beyond the tolerance (see the report)",
                          -1);
  }
  return 0;
}

}  // namespace dring::cli
