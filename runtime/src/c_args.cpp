// c_args.cpp — the checks of the C ABI's arguments that need no communicator (c_args.hpp).
#include "dring/runtime/c_args.hpp"

#include <cmath>
#include <cstring>

#include "dring/core/error.hpp"

namespace dring {

namespace {

// The int a C caller stored in an enum field. C lets an enum object hold any int; in C++, loading
// a value outside the enumerators' range is undefined behaviour, so the field is read as bytes.
template <class Enum>
int enum_value(const Enum& field) {
  static_assert(sizeof(Enum) == sizeof(int));
  int value = 0;
  std::memcpy(&value, &field, sizeof value);
  return value;
}

}  // namespace

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
  DRING_CHECK(p->num_docs >= 0, Status::kInvalidArgument, "num_docs must not be negative (got " << p->num_docs << ")");
  DRING_CHECK(p->num_docs == 0 || p->doc_lens != nullptr, Status::kInvalidArgument,
              "doc_lens must point to num_docs (" << p->num_docs << ") document lengths");
  DRING_CHECK(p->num_docs <= p->seq, Status::kInvalidArgument,
              "num_docs (" << p->num_docs << ") exceeds seq (" << p->seq << "): every document needs a row");
  problem.config.doc_lens.assign(p->doc_lens, p->doc_lens + p->num_docs);
  DRING_CHECK(p->window >= 0, Status::kInvalidArgument, "window must be at least 1, or 0 for none (got " << p->window << ")");
  problem.config.window = p->window;
  validate(problem);
  return problem;
}

LayoutSpec layout_from_c(const dring_options& o) {
  LayoutSpec spec;
  const int layout = enum_value(o.layout);
  switch (layout) {
    case DRING_LAYOUT_CONTIGUOUS: spec.kind = LayoutKind::kContiguous; break;
    case DRING_LAYOUT_ZIGZAG: spec.kind = LayoutKind::kZigzag; break;
    case DRING_LAYOUT_STRIPED: spec.kind = LayoutKind::kStriped; break;
    default: DRING_FAIL(Status::kInvalidArgument, "unknown layout " << layout);
  }
  DRING_CHECK(o.stripe >= 0, Status::kInvalidArgument, "stripe must not be negative (got " << o.stripe << ")");
  DRING_CHECK(o.stripe <= 1 || layout == DRING_LAYOUT_STRIPED, Status::kInvalidArgument,
              "stripe " << o.stripe << " is given but the layout is not DRING_LAYOUT_STRIPED");
  spec.stripe = o.stripe == 0 ? 1 : o.stripe;
  return spec;
}

void check_c_options(const dring_options& o) {
  const int backend = enum_value(o.backend), dtype = enum_value(o.dtype);
  DRING_CHECK(backend == DRING_BACKEND_CPU || backend == DRING_BACKEND_CUDA, Status::kInvalidArgument,
              "unknown backend " << backend);
  DRING_CHECK(o.threads >= 0 && o.exchange_chunk_bytes >= 0, Status::kInvalidArgument,
              "threads and exchange_chunk_bytes must not be negative");
  DRING_CHECK(dtype == DRING_DTYPE_F32 || dtype == DRING_DTYPE_F16 || dtype == DRING_DTYPE_BF16,
              Status::kInvalidArgument, "unknown dtype " << dtype);
  DRING_CHECK(o.comm_timeout_s >= 0.0 && std::isfinite(o.comm_timeout_s), Status::kInvalidArgument,
              "comm_timeout_s must be a positive number of seconds, or 0 for the default (got " << o.comm_timeout_s
                                                                                               << ")");
}

}  // namespace dring
