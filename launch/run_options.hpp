// run_options.hpp — the checks of `dring run`'s options that need neither a file nor a peer.
//
// run_command.cpp calls them on every rank inside its first agreement; tests/fuzz calls them
// without MPI. Each throws dring::Error (kInvalidArgument) naming the flag.
#pragma once

#include "commands.hpp"
#include "dring/core/problem.hpp"

namespace dring::cli {

// Ranges of the flags that are not part of the problem (--repeat, --threads, --check-rows, ...).
void check_run_options(const RunOptions& options);

// The attention configuration of --segments, --dilations, --causal and --scale (not yet
// validated against a shape: validate() does that).
AttentionConfig config_from(const RunOptions& options);

// The shape of synthetic inputs (--seq, --batch, --heads, --kv-heads, --head-dim).
AttentionShape shape_from(const ShapeOptions& shape);

}  // namespace dring::cli
