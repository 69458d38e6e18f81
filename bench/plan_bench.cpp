// plan_bench.cpp — the exchange plan's own cost on one rank: the time of
// ExchangePlan::schedule(rank) (as the executor calls it, with its default message cap) and the
// size of what it returns (slabs, and their bytes), next to the rows the rank receives.
// No MPI: the plan is pure arithmetic, so one process evaluates any rank of any world size
// (docs/benchmarks.md, "The plan's own cost").
// Usage: dring_plan_bench --seq 1048576 --world 8 --rank 7 --heads 32 --kv-heads 8
//        --segments 1024,4096,16384,65536 --dilations 1,2,4,8 --causal
//        --layout striped:64 [--window W] [--repeats 3] [--head-dim 128] [--dtype bf16]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/plan.hpp"

int main(int argc, char** argv) {
  CLI::App app{"dring_plan_bench: time and size of one rank's exchange schedule"};
  dring::Problem problem;
  int world = 8, rank = -1, repeats = 3;
  std::string layout_name = "contiguous", dtype_name = "bf16";
  std::vector<int64_t> segments, dilations;
  problem.shape.seq = 1 << 20;
  problem.shape.heads = 32;
  problem.shape.kv_heads = 8;
  problem.shape.head_dim = 128;
  app.add_option("--seq", problem.shape.seq);
  app.add_option("--batch", problem.shape.batch);
  app.add_option("--heads", problem.shape.heads);
  app.add_option("--kv-heads", problem.shape.kv_heads);
  app.add_option("--head-dim", problem.shape.head_dim);
  app.add_option("--segments", segments)->delimiter(',');
  app.add_option("--dilations", dilations)->delimiter(',');
  app.add_flag("--causal", problem.config.causal);
  app.add_option("--window", problem.config.window);
  app.add_option("--world", world);
  app.add_option("--rank", rank, "default: the last");
  app.add_option("--layout", layout_name);
  app.add_option("--dtype", dtype_name, "sets the default message cap");
  app.add_option("--repeats", repeats);
  CLI11_PARSE(app, argc, argv);
  try {
    DRING_CHECK(segments.size() == dilations.size(), dring::Status::kInvalidArgument,
                "--segments and --dilations need the same number of entries");
    for (size_t i = 0; i < segments.size(); ++i) problem.config.pairs.push_back({segments[i], dilations[i]});
    dring::validate(problem);
    if (rank < 0) rank = world - 1;
    const dring::DType dtype = dtype_name == "f32" ? dring::DType::kF32 : dring::DType::kBF16;
    const dring::ShardLayout layout(problem.shape.seq, world, dring::LayoutSpec::parse(layout_name));
    const int64_t cap = dring::default_message_rows(problem, world, 0, dtype);
    const dring::ExchangePlan plan(problem, layout, cap);
    std::vector<double> seconds;
    int64_t slabs = 0, steps = 0, received = 0;
    for (int i = 0; i < std::max(repeats, 1); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<dring::PlanStep> schedule = plan.schedule(rank);
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      slabs = steps = received = 0;
      for (const dring::PlanStep& step : schedule) {
        slabs += static_cast<int64_t>(step.send.slabs.size() + step.recv.slabs.size());
        received += step.recv.rows;
        ++steps;
      }
    }
    std::sort(seconds.begin(), seconds.end());
    std::printf("%-14s k %d rank %d S %lld H %lld/%lld %s cap %lld: schedule() %.3f s (min of %d, max %.3f), "
                "%d steps, %lld slabs (%.1f MB), %lld rows received\n",
                layout.spec().describe().c_str(), world, rank, static_cast<long long>(problem.shape.seq),
                static_cast<long long>(problem.shape.heads), static_cast<long long>(problem.shape.kv_heads),
                problem.describe().c_str(), static_cast<long long>(cap), seconds.front(), repeats, seconds.back(),
                static_cast<int>(steps), static_cast<long long>(slabs),
                static_cast<double>(slabs) * sizeof(dring::KvSlab) / 1e6, static_cast<long long>(received));
  } catch (const dring::Error& e) {
    std::fprintf(stderr, "dring_plan_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
