// report.cpp — gathering per-rank statistics and rendering the run report.
#include "dring/runtime/report.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <type_traits>

#include "dring/comm/mpi_check.hpp"

namespace dring {

std::vector<RankStats> gather_rank_stats(MPI_Comm comm, const RankStats& mine) {
  static_assert(std::is_trivially_copyable_v<RankStats>);
  int rank = 0, size = 0;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &size));
  std::vector<RankStats> all(rank == 0 ? size : 0);
  DRING_MPI_CHECK(MPI_Gather(&mine, sizeof(RankStats), MPI_BYTE, all.data(), sizeof(RankStats), MPI_BYTE, 0, comm));
  return all;
}

std::string format_bytes(int64_t bytes) {
  char text[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(text, sizeof text, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  } else if (b >= 1024.0 * 1024) {
    std::snprintf(text, sizeof text, "%.1f MiB", b / (1024.0 * 1024));
  } else if (b >= 1024.0) {
    std::snprintf(text, sizeof text, "%.1f KiB", b / 1024.0);
  } else {
    std::snprintf(text, sizeof text, "%lld B", static_cast<long long>(bytes));
  }
  return text;
}

double work_balance(const std::vector<RankStats>& ranks) {
  if (ranks.empty()) return 0.0;
  double lo = ranks.front().flops, hi = lo;
  for (const RankStats& k : ranks) {
    lo = std::min(lo, k.flops);
    hi = std::max(hi, k.flops);
  }
  return lo > 0 ? hi / lo : 0.0;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

namespace {

nlohmann::json ranks_json(const std::vector<RankStats>& ranks) {
  nlohmann::json out = nlohmann::json::array();
  for (const RankStats& k : ranks) {
    nlohmann::json by_category;
    for (int c = 0; c < kMemCategoryCount; ++c) {
      by_category[mem_category_name(static_cast<MemCategory>(c))] = k.peak_tracked_by_category[c];
    }
    out.push_back({{"rank", k.rank},
                   {"peak_tracked_bytes", k.peak_tracked_bytes},
                   {"peak_tracked_by_category", by_category},
                   {"peak_rss_bytes", k.peak_rss_bytes},
                   {"comm_sent_bytes", k.comm_sent_bytes},
                   {"comm_recv_bytes", k.comm_recv_bytes},
                   {"compute_ms", k.compute_ms},
                   {"compute_cpu_ms", k.compute_cpu_ms},
                   {"flops", k.flops},
                   {"comm_wait_ms", k.comm_wait_ms}});
  }
  return out;
}

nlohmann::json check_json(const CheckResult& c) {
  return {{"rows", c.rows},
          {"max_abs_err", c.max_abs_err},
          {"max_rel_err", c.max_rel_err},
          {"tolerance", c.tolerance},
          {"passed", c.passed}};
}

void print_rank_rows(std::ostringstream& out, const std::vector<RankStats>& ranks) {
  char line[256];
  out << "rank  peak tracked  peak RSS     sent         received     compute ms  GFLOP      wait ms\n";
  for (const RankStats& k : ranks) {
    std::snprintf(line, sizeof line, "%-5d %-13s %-12s %-12s %-12s %-11.2f %-10.4g %.2f\n", k.rank,
                  format_bytes(k.peak_tracked_bytes).c_str(), format_bytes(k.peak_rss_bytes).c_str(),
                  format_bytes(k.comm_sent_bytes).c_str(), format_bytes(k.comm_recv_bytes).c_str(), k.compute_ms,
                  k.flops * 1e-9, k.comm_wait_ms);
    out << line;
  }
}

}  // namespace

nlohmann::json to_json(const RunReport& r) {
  const AttentionShape& s = r.problem.shape;
  nlohmann::json j;
  j["world_size"] = r.world_size;
  j["seq_len"] = s.seq;
  j["batch"] = s.batch;
  j["heads"] = s.heads;
  j["kv_heads"] = s.kv_heads;
  j["head_dim"] = s.head_dim;
  std::vector<int64_t> segments, dilations;
  for (const DilatedPair& p : r.problem.pairs()) {
    segments.push_back(p.segment);
    dilations.push_back(p.dilation);
  }
  j["segments"] = segments;
  j["dilations"] = dilations;
  j["causal"] = r.problem.config.causal;
  j["scale"] = r.problem.scale();
  j["layout"] = r.layout.describe();
  j["window"] = r.problem.config.window;  // 0: none
  j["num_docs"] = static_cast<int64_t>(r.problem.doc_lens().size());
  j["backend"] = r.backend;
  if (!r.cpu_gemm.empty()) j["cpu_gemm"] = r.cpu_gemm;
  if (!r.cpu_tiles.empty()) j["cpu_tiles"] = r.cpu_tiles;
  j["dtype"] = r.dtype;
  j["transport"] = r.transport;
  if (!r.note.empty()) j["note"] = r.note;
  j["input"] = r.input;
  j["threads"] = r.threads;
  j["repeat"] = r.repeat;
  j["time_ms"] = r.time_ms;
  j["pass_ms"] = r.pass_ms;
  j["tokens_per_s"] = r.tokens_per_s;
  j["flops"] = r.flops;
  j["gflops_per_s"] = r.time_ms > 0 ? r.flops / (r.time_ms * 1e6) : 0.0;
  j["steps"] = r.steps;
  j["work_balance"] = work_balance(r.ranks);
  j["ranks"] = ranks_json(r.ranks);
  if (r.check) j["check"] = check_json(*r.check);
  if (r.backward) {
    const BackwardReport& b = *r.backward;
    nlohmann::json back = {{"time_ms", b.time_ms},
                           {"pass_ms", b.pass_ms},
                           {"flops", b.flops},
                           {"gflops_per_s", b.time_ms > 0 ? b.flops / (b.time_ms * 1e6) : 0.0},
                           {"backward_over_forward", r.time_ms > 0 ? b.time_ms / r.time_ms : 0.0},
                           {"work_balance", work_balance(b.ranks)},
                           {"ranks", ranks_json(b.ranks)}};
    if (b.check) {
      back["check"] = check_json(b.check->result);
      back["check"]["kv_rows"] = b.check->kv_rows;
    }
    j["backward"] = back;
  }
  return j;
}

std::string format_table(const RunReport& r) {
  const AttentionShape& s = r.problem.shape;
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "dring run: %d rank%s x %d thread%s, layout %s, %s %s, transport %s, input %s\n",
                r.world_size, r.world_size == 1 ? "" : "s", r.threads, r.threads == 1 ? "" : "s",
                r.layout.describe().c_str(), r.backend.c_str(), r.dtype.c_str(), r.transport.c_str(), r.input.c_str());
  out << line;
  if (!r.cpu_gemm.empty()) {
    out << "kernels:   " << (r.cpu_tiles.empty() ? "" : "tiles " + r.cpu_tiles + "; ") << "sgemm " << r.cpu_gemm << "\n";
  }
  if (!r.note.empty()) out << "note:      " << r.note << "\n";
  std::snprintf(line, sizeof line, "problem:   batch %lld, seq %lld, heads %lld (kv %lld), head_dim %lld, pairs %s\n",
                static_cast<long long>(s.batch), static_cast<long long>(s.seq), static_cast<long long>(s.heads),
                static_cast<long long>(s.kv_heads), static_cast<long long>(s.head_dim), r.problem.describe().c_str());
  out << line;
  std::snprintf(line, sizeof line, "time:      %.2f ms (max over ranks, median of %d)  %.4g tokens/s  %.2f GFLOP/s  %lld exchange steps\n",
                r.time_ms, r.repeat, r.tokens_per_s, r.time_ms > 0 ? r.flops / (r.time_ms * 1e6) : 0.0,
                static_cast<long long>(r.steps));
  out << line;
  print_rank_rows(out, r.ranks);
  if (r.ranks.size() > 1) {
    std::snprintf(line, sizeof line, "balance:   max/min of the ranks' attention work %.3f\n", work_balance(r.ranks));
    out << line;
  }
  if (r.check) {
    std::snprintf(line, sizeof line, "check:     %lld rows vs float64, max abs err %.3g, max rel err %.3g (tolerance %.1g): %s\n",
                  static_cast<long long>(r.check->rows), r.check->max_abs_err, r.check->max_rel_err, r.check->tolerance,
                  r.check->passed ? "passed" : "FAILED");
    out << line;
  }
  if (r.backward) {
    const BackwardReport& b = *r.backward;
    std::snprintf(line, sizeof line, "backward:  %.2f ms (max over ranks, median of %d)  %.2f GFLOP/s  %.2fx the forward time\n",
                  b.time_ms, r.repeat, b.time_ms > 0 ? b.flops / (b.time_ms * 1e6) : 0.0,
                  r.time_ms > 0 ? b.time_ms / r.time_ms : 0.0);
    out << line;
    print_rank_rows(out, b.ranks);
    if (b.check) {
      std::snprintf(line, sizeof line,
                    "check:     dq of %lld rows, dk/dv of %lld rows vs float64, max abs err %.3g, max rel err %.3g (tolerance %.1g): %s\n",
                    static_cast<long long>(b.check->result.rows), static_cast<long long>(b.check->kv_rows),
                    b.check->result.max_abs_err, b.check->result.max_rel_err, b.check->result.tolerance,
                    b.check->result.passed ? "passed" : "FAILED");
      out << line;
    }
  }
  return out.str();
}

}  // namespace dring
