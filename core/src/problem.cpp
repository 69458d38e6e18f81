// problem.cpp — validation and derived quantities of a Problem.
#include "dring/core/problem.hpp"

#include <cmath>
#include <sstream>

#include "dring/core/error.hpp"
#include "dring/core/geometry.hpp"

namespace dring {

std::vector<DilatedPair> Problem::pairs() const {
  if (config.pairs.empty()) return {DilatedPair{shape.seq, 1}};
  return config.pairs;
}

double Problem::scale() const {
  return config.scale != 0.0 ? config.scale : 1.0 / std::sqrt(static_cast<double>(shape.head_dim));
}

double Problem::forward_flops() const {
  // Per pair, head offset o and segment of n selected rows: n*n scores (n*(n+1)/2 when causal),
  // each costing 2*D for q.k and 2*D for p.v. Summed exactly, segment by segment, in closed form
  // over the full segments plus the short last one.
  double scores = 0.0;
  for (const DilatedPair& pair : pairs()) {
    const PairGeometry geom(pair, shape.seq);
    const int64_t full_segments = shape.seq / geom.w;
    const int64_t tail = shape.seq - full_segments * geom.w;
    for (int64_t h = 0; h < shape.heads; ++h) {
      const int64_t off = geom.offset_of_head(h);
      auto block = [&](int64_t len) {
        const double n = static_cast<double>(len > off ? (len - off + geom.r - 1) / geom.r : 0);
        return config.causal ? n * (n + 1) / 2 : n * n;
      };
      scores += static_cast<double>(full_segments) * block(geom.w) + block(tail);
    }
  }
  return scores * 4.0 * static_cast<double>(shape.head_dim) * static_cast<double>(shape.batch);
}

std::string Problem::describe() const {
  std::ostringstream out;
  const std::vector<DilatedPair> ps = pairs();
  for (size_t i = 0; i < ps.size(); ++i) out << (i ? "," : "") << ps[i].segment;
  out << ":";
  for (size_t i = 0; i < ps.size(); ++i) out << (i ? "," : "") << ps[i].dilation;
  if (config.causal) out << " causal";
  return out.str();
}

namespace {
constexpr int64_t kMaxTensorBytes = int64_t{1} << 60;
}  // namespace

void validate(const Problem& p) {
  const AttentionShape& s = p.shape;
  DRING_CHECK(s.batch >= 1, Status::kInvalidArgument, "batch must be at least 1 (got " << s.batch << ")");
  DRING_CHECK(s.seq >= 1, Status::kInvalidArgument, "sequence length must be at least 1 (got " << s.seq << ")");
  DRING_CHECK(s.heads >= 1, Status::kInvalidArgument, "heads must be at least 1 (got " << s.heads << ")");
  DRING_CHECK(s.kv_heads >= 1, Status::kInvalidArgument, "kv heads must be at least 1 (got " << s.kv_heads << ")");
  DRING_CHECK(s.head_dim >= 1, Status::kInvalidArgument, "head dim must be at least 1 (got " << s.head_dim << ")");
  DRING_CHECK(s.heads % s.kv_heads == 0, Status::kInvalidArgument,
              "heads (" << s.heads << ") must be a multiple of kv heads (" << s.kv_heads << ")");
  // Sizes: every element and byte offset of a full-sequence tensor (and every row stride, r*H*D)
  // must fit dring's 64-bit arithmetic, checked before anything multiplies them.
  int64_t elements = 1;
  for (const int64_t factor : {s.batch, s.seq, s.heads, s.head_dim, int64_t{8}}) {
    DRING_CHECK(!__builtin_mul_overflow(elements, factor, &elements) && elements <= kMaxTensorBytes,
                Status::kInvalidArgument,
                "the problem is too large: --batch " << s.batch << " x --seq " << s.seq << " x --heads " << s.heads
                                                     << " x --head-dim " << s.head_dim << " elements of 8 bytes exceed "
                                                     << kMaxTensorBytes << " bytes (2^60), dring's limit");
  }
  DRING_CHECK(std::isfinite(p.config.scale), Status::kInvalidArgument,
              "scale must be finite (got " << p.config.scale << ")");
  for (size_t i = 0; i < p.config.pairs.size(); ++i) {
    const DilatedPair& pair = p.config.pairs[i];
    DRING_CHECK(pair.segment >= 1, Status::kInvalidArgument,
                "segment length " << pair.segment << " (pair " << i + 1 << ") must be at least 1");
    DRING_CHECK(pair.dilation >= 1, Status::kInvalidArgument,
                "dilation rate " << pair.dilation << " (pair " << i + 1 << ") must be at least 1");
    int64_t stride = 0;
    DRING_CHECK(!__builtin_mul_overflow(pair.dilation, s.heads * s.head_dim, &stride) && stride <= kMaxTensorBytes,
                Status::kInvalidArgument,
                "dilation rate " << pair.dilation << " (pair " << i + 1 << ") is too large: its row stride, rate x "
                                 << "--heads x --head-dim, exceeds 2^60 elements");
    DRING_CHECK(pair.segment % pair.dilation == 0, Status::kInvalidArgument,
                "segment length " << pair.segment << " (pair " << i + 1
                                  << ") is not a multiple of its dilation rate " << pair.dilation);
  }
}

}  // namespace dring
