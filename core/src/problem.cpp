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

std::vector<int64_t> Problem::doc_lens() const {
  if (config.doc_lens.empty()) return {shape.seq};
  return config.doc_lens;
}

namespace {

// Pairs (i, j) in [0, n)^2 with a <= i - j <= b.
double band_pairs(int64_t n, int64_t a, int64_t b) {
  a = std::max(a, 1 - n);
  b = std::min(b, n - 1);
  if (n <= 0 || a > b) return 0.0;
  auto abs_sum = [](double lo, double hi) {  // sum of |d| for d in [lo, hi]
    if (lo >= 0) return (lo + hi) * (hi - lo + 1) / 2;
    if (hi <= 0) return (-lo - hi) * (hi - lo + 1) / 2;
    return hi * (hi + 1) / 2 + (-lo) * (-lo + 1) / 2;
  };
  const double count = static_cast<double>(b - a + 1);
  return static_cast<double>(n) * count - abs_sum(static_cast<double>(a), static_cast<double>(b));
}

}  // namespace

double Problem::forward_flops() const {
  // Per pair, document, head offset o and segment of n selected rows (stride r): the (query, key)
  // pairs the band admits, i - j in [ceil(lo/r), floor(hi/r)] in row units; each costs 2*D for
  // q.k and 2*D for p.v. Summed exactly, in closed form over the full segments of a document
  // plus its short last one.
  const Band band = Band::of(config);
  double scores = 0.0;
  const Documents docs(*this);
  for (const DilatedPair& pair : pairs()) {
    const int64_t r = pair.dilation;
    const int64_t a = band.lo <= -Band::kUnbounded ? -shape.seq : BlockMask::ceil_div(band.lo, r);
    const int64_t b = band.hi >= Band::kUnbounded ? shape.seq : BlockMask::floor_div(band.hi, r);
    for (int64_t d = 0; d < docs.count(); ++d) {
      const PairGeometry geom(pair, docs.begin(d), docs.end(d));
      const int64_t len = geom.end - geom.begin;
      const int64_t full_segments = len / geom.w;
      const int64_t tail = len - full_segments * geom.w;
      for (int64_t off = 0; off < std::min(r, shape.heads); ++off) {
        const double heads = static_cast<double>((shape.heads - 1 - off) / r + 1);  // heads h = off mod r
        auto block = [&](int64_t seg_len) {
          return band_pairs(seg_len > off ? (seg_len - off + r - 1) / r : 0, a, b);
        };
        scores += heads * (static_cast<double>(full_segments) * block(geom.w) + block(tail));
      }
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
  if (config.window > 0) out << " window=" << config.window;
  if (!config.doc_lens.empty()) out << " docs=" << config.doc_lens.size();
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
  DRING_CHECK(p.config.window >= 0, Status::kInvalidArgument,
              "window must be at least 1 (got " << p.config.window << ")");
  if (!p.config.doc_lens.empty()) {
    int64_t total = 0;
    for (size_t i = 0; i < p.config.doc_lens.size(); ++i) {
      const int64_t len = p.config.doc_lens[i];
      DRING_CHECK(len >= 1, Status::kInvalidArgument,
                  "document " << i + 1 << " has length " << len << "; every document length must be at least 1");
      DRING_CHECK(!__builtin_add_overflow(total, len, &total) && total <= s.seq, Status::kInvalidArgument,
                  "document lengths sum to more than the sequence length " << s.seq << " (at document " << i + 1
                                                                           << ")");
    }
    DRING_CHECK(total == s.seq, Status::kInvalidArgument,
                "document lengths sum to " << total << ", not to the sequence length " << s.seq);
  }
}

}  // namespace dring
