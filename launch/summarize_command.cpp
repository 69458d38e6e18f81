// summarize_command.cpp — `dring summarize`: JSON reports of one problem at several world sizes,
// side by side: per-rank memory, its reduction against the smallest world size (and the share of
// the ideal k-fold reduction), time, throughput and check error. Rank 0 does the work.
#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/runtime/report.hpp"

namespace dring::cli {

namespace {

struct Row {
  int world_size = 0;
  int64_t peak_tracked = 0;
  int64_t peak_rss = 0;
  double time_ms = 0.0;
  double tokens_per_s = 0.0;
  std::string check = "-";
};

Row row_of(const std::string& path, const nlohmann::json& j) {
  Row row;
  try {
    row.world_size = j.at("world_size").get<int>();
    row.time_ms = j.at("time_ms").get<double>();
    row.tokens_per_s = j.at("tokens_per_s").get<double>();
    for (const auto& rank : j.at("ranks")) {
      row.peak_tracked = std::max(row.peak_tracked, rank.at("peak_tracked_bytes").get<int64_t>());
      row.peak_rss = std::max(row.peak_rss, rank.at("peak_rss_bytes").get<int64_t>());
    }
    if (j.contains("check")) {
      char text[64];
      std::snprintf(text, sizeof text, "%.2g%s", j["check"].at("max_rel_err").get<double>(),
                    j["check"].at("passed").get<bool>() ? "" : " FAILED");
      row.check = text;
    }
  } catch (const nlohmann::json::exception& e) {
    DRING_FAIL(Status::kIoError, path << " is not a report of dring run --json: " << e.what());
  }
  return row;
}

}  // namespace

int summarize_command(MPI_Comm comm, const SummarizeOptions& o) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  agree(comm, [&] {
    if (rank != 0) return;
    std::vector<Row> rows;
    std::string problem;
    for (const std::string& path : o.reports) {
      std::ifstream in(path);
      DRING_CHECK(in.good(), Status::kIoError, "cannot read report " << path);
      nlohmann::json j;
      try {
        in >> j;
      } catch (const nlohmann::json::exception&) {
        DRING_FAIL(Status::kIoError, path << " is not JSON");
      }
      // Reports compared must describe the same problem.
      nlohmann::json key = j;
      for (const char* field : {"world_size", "time_ms", "pass_ms", "tokens_per_s", "ranks", "check", "steps",
                                "threads", "gflops_per_s", "repeat"}) {
        key.erase(field);
      }
      DRING_CHECK(problem.empty() || problem == key.dump(), Status::kInvalidArgument,
                  path << " describes another problem than " << o.reports.front());
      problem = key.dump();
      rows.push_back(row_of(path, j));
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.world_size < b.world_size; });
    const Row& base = rows.front();
    std::printf("ranks  peak tracked/rank  peak RSS/rank  reduction  of ideal  time ms     tokens/s    check err\n");
    for (const Row& r : rows) {
      const double reduction = static_cast<double>(base.peak_tracked) / static_cast<double>(r.peak_tracked);
      const double ideal = static_cast<double>(r.world_size) / base.world_size;
      std::printf("%-6d %-18s %-14s %-10s %-9s %-11.1f %-11.4g %s\n", r.world_size,
                  format_bytes(r.peak_tracked).c_str(), format_bytes(r.peak_rss).c_str(),
                  (std::to_string(reduction).substr(0, 4) + "x").c_str(),
                  (std::to_string(static_cast<int>(100.0 * reduction / ideal + 0.5)) + "%").c_str(), r.time_ms,
                  r.tokens_per_s, r.check.c_str());
    }
  });
  return 0;
}

}  // namespace dring::cli
