// dring/report.hpp — what a run reports: a table for people (stdout) and JSON for programs.
// Times are the max over ranks; memory and traffic are per rank.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dring/runtime/check.hpp"
#include "dring/core/problem.hpp"
#include "dring/core/memory.hpp"
#include "dring/runtime/layout.hpp"

namespace dring {

struct RankStats {
  int rank = 0;
  int64_t peak_tracked_bytes = 0;
  int64_t peak_rss_bytes = 0;
  int64_t comm_sent_bytes = 0;
  int64_t comm_recv_bytes = 0;
  double compute_ms = 0.0;
  double compute_cpu_ms = 0.0;  // PassStats::compute_cpu_ms
  double comm_wait_ms = 0.0;
  double flops = 0.0;  // attention work this rank computed (PassStats::flops)
  std::array<int64_t, kMemCategoryCount> peak_tracked_by_category{};
};

// The backward pass of a run (dring run --backward), measured after the forward passes.
struct BackwardReport {
  double time_ms = 0.0;         // median over passes of the max over ranks
  std::vector<double> pass_ms;
  double flops = 0.0;           // 2.5x the forward FLOPs: five products per score instead of two
  std::vector<RankStats> ranks;  // peaks measured over the backward passes only; rank 0 only
  std::optional<GradCheckResult> check;
};

struct RunReport {
  Problem problem;
  int world_size = 1;
  LayoutSpec layout;               // which rows each rank held
  int threads = 1;
  int repeat = 1;
  std::string backend = "cpu";
  std::string cpu_gemm;            // the CPU kernels' sgemm engine (cpu backend), e.g. "onednn 2.6.3 (avx2)"
  std::string cpu_tiles;           // their tile kernels, e.g. "forward fused avx512, backward fused avx512"
  std::string dtype = "fp32";
  std::string transport = "mpi";
  std::string input = "synthetic";
  std::string note;                // how backend and transport were chosen, when worth saying
  double time_ms = 0.0;            // median over passes of the max over ranks
  std::vector<double> pass_ms;     // every timed pass, max over ranks
  double tokens_per_s = 0.0;
  double flops = 0.0;              // forward FLOPs the configuration keeps
  int64_t steps = 0;               // exchange steps of the busiest rank
  std::vector<RankStats> ranks;    // complete on rank 0 only
  std::optional<CheckResult> check;
  std::optional<BackwardReport> backward;
};

// Max over min of the ranks' flops (1 when balanced; 0 when there are none).
double work_balance(const std::vector<RankStats>& ranks);

// Median of a non-empty list.
double median(std::vector<double> values);

// Collective: every rank's stats, on rank 0 (empty elsewhere).
std::vector<RankStats> gather_rank_stats(MPI_Comm comm, const RankStats& mine);

nlohmann::json to_json(const RunReport& report);
std::string format_table(const RunReport& report);
std::string format_bytes(int64_t bytes);

}  // namespace dring
