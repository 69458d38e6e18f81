// layout.cpp — the runs of each layout (layout.hpp).
#include "dring/runtime/layout.hpp"

#include <algorithm>
#include <numeric>
#include <optional>

#include "dring/core/error.hpp"

namespace dring {

LayoutSpec LayoutSpec::parse(const std::string& text) {
  LayoutSpec spec;
  if (text == "contiguous") return spec;
  if (text == "zigzag") {
    spec.kind = LayoutKind::kZigzag;
    return spec;
  }
  if (text == "striped" || text.rfind("striped:", 0) == 0) {
    spec.kind = LayoutKind::kStriped;
    if (text.size() > 8) {
      const std::string n = text.substr(8);
      size_t used = 0;
      try {
        spec.stripe = std::stoll(n, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      DRING_CHECK(used == n.size() && !n.empty() && spec.stripe >= 1, Status::kInvalidArgument,
                  "layout '" << text << "': the stripe size after 'striped:' must be a whole number >= 1");
    }
    return spec;
  }
  DRING_FAIL(Status::kInvalidArgument,
             "unknown layout '" << text << "' (expected contiguous, zigzag, striped or striped:N)");
}

std::string LayoutSpec::describe() const {
  switch (kind) {
    case LayoutKind::kContiguous: return "contiguous";
    case LayoutKind::kZigzag: return "zigzag";
    case LayoutKind::kStriped: return stripe == 1 ? "striped" : "striped:" + std::to_string(stripe);
  }
  return "?";
}

ShardLayout::ShardLayout(int64_t seq, int world_size, LayoutSpec spec)
    : seq_(seq), world_size_(world_size), spec_(spec) {
  const int64_t k = world_size;
  DRING_CHECK(k >= 1, Status::kInvalidArgument, "world size must be at least 1");
  DRING_CHECK(seq >= k, Status::kInvalidArgument,
              "sequence length " << seq << " is shorter than the number of ranks " << k
                                 << " (every rank needs at least one token)");
  runs_.resize(k);
  switch (spec.kind) {
    case LayoutKind::kContiguous:
      for (int t = 0; t < k; ++t) runs_[t].push_back(ShardRun{{cut(t, k), cut(t + 1, k) - cut(t, k), 1}, 0, 1});
      break;
    case LayoutKind::kZigzag: {
      DRING_CHECK(seq >= 2 * k, Status::kInvalidArgument,
                  "the zigzag layout cuts the sequence into 2 x " << k << " ranks = " << 2 * k
                                                                  << " chunks; sequence length " << seq
                                                                  << " is shorter");
      for (int t = 0; t < k; ++t) {
        const int64_t a0 = cut(t, 2 * k), a1 = cut(t + 1, 2 * k);
        const int64_t b0 = cut(2 * k - 1 - t, 2 * k), b1 = cut(2 * k - t, 2 * k);
        if (a1 == b0) {  // one rank: the two chunks touch
          runs_[t].push_back(ShardRun{{a0, b1 - a0, 1}, 0, 1});
        } else {
          runs_[t].push_back(ShardRun{{a0, a1 - a0, 1}, 0, 1});
          runs_[t].push_back(ShardRun{{b0, b1 - b0, 1}, a1 - a0, 1});
        }
      }
      break;
    }
    case LayoutKind::kStriped: {
      const int64_t s = spec.stripe;
      DRING_CHECK(s >= 1, Status::kInvalidArgument, "the stripe size must be at least 1 (got " << s << ")");
      DRING_CHECK(seq > (k - 1) * s, Status::kInvalidArgument,
                  "the striped layout with stripes of " << s << " rows over " << k << " ranks needs more than "
                                                        << (k - 1) * s << " rows (every rank needs a stripe); "
                                                        << "sequence length is " << seq);
      if (k == 1) {
        runs_[0].push_back(ShardRun{{0, seq, 1}, 0, 1});
        break;
      }
      // Row c of every stripe of rank t: positions t*s + c + m*s*k, local rows m*s + c.
      for (int t = 0; t < k; ++t) {
        for (int64_t c = 0; c < s && t * s + c < seq; ++c) {
          const int64_t first = t * s + c;
          runs_[t].push_back(ShardRun{{first, (seq - 1 - first) / (s * k) + 1, s * k}, c, s});
        }
      }
      break;
    }
  }
  for (int t = 0; t < k; ++t) {
    int64_t rows = 0;
    for (const ShardRun& run : runs_[t]) rows += run.pos.count;
    sizes_.push_back(rows);
    max_size_ = std::max(max_size_, rows);
  }
}

int64_t ShardLayout::highest_end(int rank) const {
  int64_t end = 0;
  for (const ShardRun& run : runs_[rank]) end = std::max(end, run.pos.last() + 1);
  return end;
}

int ShardLayout::owner(int64_t pos) const {
  const int64_t k = world_size_;
  switch (spec_.kind) {
    case LayoutKind::kContiguous: {
      const int64_t base = seq_ / k, big = (seq_ % k) * (base + 1);
      return static_cast<int>(pos < big ? pos / (base + 1) : seq_ % k + (pos - big) / base);
    }
    case LayoutKind::kZigzag: {
      const int64_t n = 2 * k, base = seq_ / n, big = (seq_ % n) * (base + 1);
      const int64_t chunk = pos < big ? pos / (base + 1) : seq_ % n + (pos - big) / base;
      return static_cast<int>(chunk < k ? chunk : n - 1 - chunk);
    }
    case LayoutKind::kStriped: return static_cast<int>((pos / spec_.stripe) % k);
  }
  return 0;
}

int64_t ShardLayout::local_row(int64_t pos) const {
  for (const ShardRun& run : runs_[owner(pos)]) {
    if (pos >= run.pos.first && pos <= run.pos.last() && (pos - run.pos.first) % run.pos.stride == 0) {
      return run.local(pos);
    }
  }
  DRING_FAIL(Status::kInternal, "position " << pos << " is in no run of its owner");
}

namespace {

// The rows of `block` in `run`, or nothing.
std::optional<Piece> piece_of(const StridedRange& block, const ShardRun& run) {
  const StridedRange pos = intersect(block, run.pos);
  if (pos.count == 0) return std::nullopt;
  return Piece{pos, run.local(pos.first), pos.stride / run.pos.stride * run.local_stride};
}

void sort_by_position(std::vector<Piece>& pieces) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.pos.first < b.pos.first; });
}

}  // namespace

std::vector<Piece> ShardLayout::run_pieces(const StridedRange& block, int rank) const {
  std::vector<Piece> pieces;
  for (const ShardRun& run : runs_[rank]) {
    if (const std::optional<Piece> piece = piece_of(block, run)) pieces.push_back(*piece);
  }
  sort_by_position(pieces);
  return pieces;
}

std::vector<Piece> ShardLayout::pieces(const StridedRange& block, int rank) const {
  const int64_t n = spec_.stripe, k = world_size_;
  if (spec_.kind != LayoutKind::kStriped || n == 1 || k == 1 || block.count == 0) return run_pieces(block, rank);
  // Run c of the rank holds positions rank*n + c (mod n*k), so the block meets it only if
  // c = first - rank*n (mod g), g = gcd(block stride, n*k): at most ceil(n / g) runs, and at most
  // one per row of the block.
  const int64_t g = std::gcd(block.stride, n * k);
  const int64_t runs_met = std::min(block.count, (n + g - 1) / g);
  // The rank's stripes q = rank (mod k) in [first / n, last / n].
  const int64_t q_lo = block.first / n, q_hi = block.last() / n;
  const int64_t q_first = q_lo + ((rank - q_lo) % k + k) % k;
  const int64_t stripes_met = q_first > q_hi ? 0 : (q_hi - q_first) / k + 1;
  std::vector<Piece> pieces;
  if (stripes_met <= runs_met) {
    // A stripe's rows are consecutive local rows; stripe q is the rank's (q / k)-th.
    for (int64_t q = q_first; q <= q_hi; q += k) {
      const StridedRange pos = clip(block, q * n, q * n + n);
      if (pos.count > 0) pieces.push_back(Piece{pos, q / k * n + (pos.first - q * n), pos.stride});
    }
    return pieces;
  }
  const std::vector<ShardRun>& runs = runs_[rank];  // runs[c]: row c of each of the rank's stripes
  for (int64_t c = ((block.first - rank * n) % g + g) % g; c < static_cast<int64_t>(runs.size()); c += g) {
    if (const std::optional<Piece> piece = piece_of(block, runs[static_cast<size_t>(c)])) pieces.push_back(*piece);
  }
  sort_by_position(pieces);
  return pieces;
}

std::vector<int64_t> ShardLayout::positions(int rank) const {
  std::vector<int64_t> out(static_cast<size_t>(size(rank)));
  for (const ShardRun& run : runs_[rank]) {
    for (int64_t m = 0; m < run.pos.count; ++m) out[run.local_first + m * run.local_stride] = run.pos.at(m);
  }
  return out;
}

}  // namespace dring
