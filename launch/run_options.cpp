// run_options.cpp — the checks of `dring run`'s options that need neither a file nor a peer.
#include "run_options.hpp"

#include <cmath>

#include "dring/core/error.hpp"

namespace dring::cli {

void check_run_options(const RunOptions& o) {
  DRING_CHECK(o.repeat >= 1, Status::kInvalidArgument, "--repeat must be at least 1 (got " << o.repeat << ")");
  DRING_CHECK(o.threads >= 0, Status::kInvalidArgument, "--threads must be positive (got " << o.threads << ")");
  DRING_CHECK(o.check_rows >= 1, Status::kInvalidArgument, "--check-rows must be at least 1 (got " << o.check_rows << ")");
  DRING_CHECK(o.check_tolerance >= 0, Status::kInvalidArgument, "--check-tol must not be negative");
  DRING_CHECK(o.exchange_chunk_kib >= 0, Status::kInvalidArgument, "--exchange-chunk-kib must not be negative");
  DRING_CHECK(!o.comm_timeout_s || (*o.comm_timeout_s > 0 && std::isfinite(*o.comm_timeout_s)),
              Status::kInvalidArgument, "--comm-timeout must be a positive number of seconds (got " << *o.comm_timeout_s << ")");
  DRING_CHECK(o.output.empty() || o.output != o.input, Status::kInvalidArgument,
              "--output must not be the --input file");
}

AttentionConfig config_from(const RunOptions& o) {
  DRING_CHECK(!(o.segments.empty() && !o.dilations.empty()), Status::kInvalidArgument,
              "--dilations needs --segments (one segment length per dilation rate)");
  DRING_CHECK(o.dilations.empty() || o.dilations.size() == o.segments.size(), Status::kInvalidArgument,
              "--segments has " << o.segments.size() << " values but --dilations has " << o.dilations.size()
                                << " (give one dilation rate per segment length)");
  AttentionConfig config;
  for (size_t i = 0; i < o.segments.size(); ++i) {
    config.pairs.push_back({o.segments[i], o.dilations.empty() ? 1 : o.dilations[i]});
  }
  config.causal = o.causal;
  config.scale = o.scale;
  for (size_t i = 0; i < o.doc_lens.size(); ++i) {
    DRING_CHECK(o.doc_lens[i] >= 1, Status::kInvalidArgument,
                "--doc-lens: document " << i + 1 << " has length " << o.doc_lens[i]
                                        << "; every document needs at least one row");
  }
  config.doc_lens = o.doc_lens;
  DRING_CHECK(!o.window || *o.window >= 1, Status::kInvalidArgument,
              "--window must be at least 1 (got " << o.window.value_or(0) << "); leave it out for no window");
  config.window = o.window.value_or(0);
  return config;
}

AttentionShape shape_from(const ShapeOptions& s) {
  return AttentionShape{s.batch, s.seq, s.heads, s.kv_heads.value_or(s.heads), s.head_dim};
}

}  // namespace dring::cli
