// fuzz_cli.cpp — libFuzzer target: the command line of `dring` and the checks `dring run` makes
// before it touches a file or a peer.
//
// Input: the arguments after "dring", separated by NUL bytes (corpus/cli/ holds readable
// examples). Each line is parsed by dring's own parser (launch/cli.cpp); a `run` line then goes
// through the same checks as in run_command.cpp: option ranges, the configuration, the synthetic
// shape, validate() and the shard layout for a few world sizes. No MPI is started: these steps
// need none. A bad line must come out as a parse error (exit code 2 and a message) or a
// dring::Error; see fuzz_util.hpp for what counts as a finding.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "cli.hpp"
#include "dring/core/problem.hpp"
#include "dring/runtime/layout.hpp"
#include "fuzz_util.hpp"
#include "run_options.hpp"

namespace {

constexpr size_t kMaxArguments = 64;

std::vector<std::string> split_arguments(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"dring"};
  std::string current;
  for (size_t i = 0; i < size && args.size() < kMaxArguments; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty() && args.size() < kMaxArguments) args.push_back(current);
  return args;
}

void check_run(const dring::cli::RunOptions& run) {
  using namespace dring;
  Problem problem;
  const bool ok = fuzz::run_clean([&] {
    cli::check_run_options(run);
    problem.config = cli::config_from(run);
    // With --input the shape comes from the file (fuzz_hdf5_input.cpp covers that path).
    problem.shape = cli::shape_from(run.shape);
    if (run.input.empty()) validate(problem);
  });
  if (!ok || !run.input.empty()) return;
  LayoutSpec spec;
  if (!fuzz::run_clean([&] { spec = LayoutSpec::parse(run.layout); })) return;
  for (const int world_size : {1, 3, 1024}) {
    fuzz::run_clean([&] {
      const ShardLayout layout(problem.shape.seq, world_size, spec);
      int64_t rows = 0;
      for (int rank = 0; rank < world_size; ++rank) rows += layout.size(rank);
      if (rows != problem.shape.seq) fuzz::finding("the layout's shards do not add up to the sequence");
      if (problem.shape.seq > 4096) return;
      // Small sequences: every position on exactly one rank, at the local row its owner says.
      std::vector<int> seen(static_cast<size_t>(problem.shape.seq), 0);
      for (int rank = 0; rank < world_size; ++rank) {
        const std::vector<int64_t> positions = layout.positions(rank);
        for (size_t i = 0; i < positions.size(); ++i) {
          const int64_t pos = positions[i];
          if (pos < 0 || pos >= problem.shape.seq || seen[pos]++ != 0) fuzz::finding("a position held twice or not at all");
          if (layout.owner(pos) != rank || layout.local_row(pos) != static_cast<int64_t>(i)) {
            fuzz::finding("owner() or local_row() disagrees with the runs");
          }
        }
      }
    });
  }
  // What the report and the output attributes print of a valid problem.
  if (problem.describe().empty() || !std::isfinite(problem.scale())) {
    fuzz::finding("a valid problem without a description or a finite scale");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = split_arguments(data, size);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const dring::cli::Parsed parsed = dring::cli::parse(static_cast<int>(args.size()), argv.data());
  if (parsed.exit_code >= 0) {
    if (parsed.exit_code != 0 && parsed.exit_code != 2) dring::fuzz::finding("parse() returned an unknown exit code");
    if (parsed.exit_code == 2 && parsed.message.empty()) dring::fuzz::finding("a bad command line without a message");
    return 0;
  }
  if (const auto* run = std::get_if<dring::cli::RunOptions>(&parsed.command)) check_run(*run);
  return 0;
}
