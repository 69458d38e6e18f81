// dring/runtime/c_args.hpp — the checks of the C ABI's arguments that need no communicator.
//
// dring_context_create (c_api.cpp) runs them on every rank inside its argument agreement;
// tests/fuzz runs them without MPI. Each throws dring::Error (kInvalidArgument) naming the field.
#pragma once

#include "dring/core/problem.hpp"
#include "dring/dring.h"
#include "dring/runtime/layout.hpp"

namespace dring {

// The Problem a dring_problem describes, validated. `p` may be NULL (an error); its segments and
// dilations must point to num_pairs values each, and doc_lens to num_docs, as dring.h asks.
Problem problem_from_c(const dring_problem* p);

// Checks every field of `o` (backend, threads, exchange_chunk_bytes, dtype, comm_timeout_s). An
// enum field may hold any int (C allows it); only after this check may C++ read it as its enum.
void check_c_options(const dring_options& o);

// The layout `o` asks for (layout, stripe), checked the same way.
LayoutSpec layout_from_c(const dring_options& o);

}  // namespace dring
