// dense_proof_backend.hpp — the CPU proof of the cuDNN path's index arithmetic (docs/cudnn.md).
//
// A Backend that wraps the CPU backend and runs every kernel call the way the CUDA backend does with
// cuDNN: the call's blocks go through kernels::plan_dense (the same function the GPU path uses), each
// DenseProblem runs as a fresh attention into packed temporaries, reading q, k, v only through the
// problem's base pointers and strides, followed by the log-sum-exp merge into the running (out, lse);
// backward, delta is recomputed from the problem's out and dout, the block gradients land in packed
// temporaries (rounded to the storage dtype, as cuDNN writes them) and are added into the fp32
// accumulators through the problem's strides. Leftovers run through the CPU kernels unchanged. The
// arithmetic is dring's CPU kernel's, so a wrong stride, base, head map or mask shows up as a
// mismatch against the float64 reference in the ring suites.
#pragma once

#include <cstdint>
#include <memory>

#include "dring/runtime/backend.hpp"

namespace dring::ring_test {

struct DenseProofStats {
  int64_t problems = 0;         // dense problems run
  int64_t problem_blocks = 0;   // query heads x batch of those problems
  int64_t leftover_blocks = 0;  // blocks left to the CPU kernels
};

// `fault`: a deliberately wrong batch stride of k in every problem with batch > 1, so a test can see
// the proof fail.
std::unique_ptr<Backend> make_dense_proof_backend(std::unique_ptr<Backend> cpu, bool fault = false);
// Counters of a backend made by make_dense_proof_backend (throws for another backend).
DenseProofStats& dense_proof_stats(Backend& backend);

}  // namespace dring::ring_test
