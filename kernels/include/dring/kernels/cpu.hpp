// dring/kernels/cpu.hpp — fp32 CPU backend of the attend family (kernels/cpu).
//
// Tiled online softmax: a work item is a tile of q rows of one block; its scores exist only as a
// q_tile x k_tile scratch tile (OpenBLAS sgemm for q.k^T and p.v, vectorised exp2 between).
// Work items run on an OpenMP team of params.threads threads.
#pragma once

#include <cstdint>
#include <span>

#include "dring/kernels/attend.hpp"

namespace dring::kernels::cpu {

// Floats of scratch each worker thread needs.
int64_t workspace_floats_per_thread(const AttendParams& params);

// Runs every block (fp32 only). Blocks must not share output rows (the caller groups blocks so
// that they do not); `workspace` holds workspace_floats_per_thread(params) * params.threads floats.
void attend(std::span<const AttendBlock> blocks, const AttendParams& params, float* workspace);

// Backward (attend_backward.cpp): work items are key tiles of a block, so each owns its dk/dv rows;
// dq tiles are shared between the key tiles of a block and updated under a per-tile lock.
int64_t backward_workspace_floats_per_thread(const AttendParams& params);
void attend_backward(std::span<const GradBlock> blocks, const AttendParams& params, float* workspace);
void delta(const DeltaParams& params, int threads);

}  // namespace dring::kernels::cpu
