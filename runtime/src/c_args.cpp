// c_args.cpp — the checks of the C ABI's arguments that need no communicator (c_args.hpp).
#include "dring/runtime/c_args.hpp"

#include <cmath>

#include "dring/core/error.hpp"

namespace dring {

Problem problem_from_c(const dring_problem* p) {
  DRING_CHECK(p != nullptr, Status::kInvalidArgument, "problem is NULL");
  DRING_CHECK(p->num_pairs >= 0, Status::kInvalidArgument, "num_pairs must not be negative");
  DRING_CHECK(p->num_pairs == 0 || (p->segments != nullptr && p->dilations != nullptr), Status::kInvalidArgument,
              "segments and dilations must point to num_pairs values");
  Problem problem;
  problem.shape = AttentionShape{p->batch, p->seq, p->heads, p->kv_heads, p->head_dim};
  for (int64_t i = 0; i < p->num_pairs; ++i) problem.config.pairs.push_back({p->segments[i], p->dilations[i]});
  problem.config.causal = p->causal != 0;
  problem.config.scale = p->scale;
  validate(problem);
  return problem;
}

void check_c_options(const dring_options& o) {
  DRING_CHECK(o.backend == DRING_BACKEND_CPU || o.backend == DRING_BACKEND_CUDA, Status::kInvalidArgument,
              "unknown backend " << static_cast<int>(o.backend));
  DRING_CHECK(o.threads >= 0 && o.exchange_chunk_bytes >= 0, Status::kInvalidArgument,
              "threads and exchange_chunk_bytes must not be negative");
  DRING_CHECK(o.dtype == DRING_DTYPE_F32 || o.dtype == DRING_DTYPE_F16 || o.dtype == DRING_DTYPE_BF16,
              Status::kInvalidArgument, "unknown dtype " << static_cast<int>(o.dtype));
  DRING_CHECK(o.comm_timeout_s >= 0.0 && std::isfinite(o.comm_timeout_s), Status::kInvalidArgument,
              "comm_timeout_s must be a positive number of seconds, or 0 for the default (got " << o.comm_timeout_s
                                                                                               << ")");
}

}  // namespace dring
