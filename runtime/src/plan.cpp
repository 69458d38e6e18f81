// plan.cpp — computing the exchange plan.
#include "dring/runtime/plan.hpp"

#include <algorithm>
#include <limits>
#include <optional>
#include <span>

#include "dring/core/error.hpp"

namespace dring {

std::vector<int64_t> offsets_of_kv_head(const Problem& problem, int64_t dilation, int64_t kv_head) {
  const int64_t group = problem.group_size();
  std::vector<int64_t> offsets;
  for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) offsets.push_back(h % dilation);
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
  return offsets;
}

std::vector<Piece> pieces_of(const StridedRange& block, const std::vector<ShardRun>& runs) {
  std::vector<Piece> pieces;
  for (const ShardRun& run : runs) {
    const StridedRange pos = intersect(block, run.pos);
    if (pos.count == 0) continue;
    pieces.push_back(Piece{pos, run.local(pos.first), pos.stride / run.pos.stride * run.local_stride});
  }
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.pos.first < b.pos.first; });
  return pieces;
}

ExchangePlan::ExchangePlan(const Problem& problem, ShardLayout layout, int64_t max_message_rows)
    : problem_(problem),
      layout_(std::move(layout)),
      max_message_rows_(max_message_rows),
      documents_(problem),
      band_(Band::of(problem.config)) {
  DRING_CHECK(max_message_rows >= 1, Status::kInvalidArgument,
              "exchange messages must hold at least one row (got " << max_message_rows << ")");
  DRING_CHECK(layout_.seq() == problem.shape.seq, Status::kInternal, "the layout is of another sequence length");
}

std::vector<KvSlab> ExchangePlan::needed(int src, int dst) const {
  std::vector<KvSlab> slabs;
  if (src == dst) return slabs;
  const std::vector<ShardRun>& src_runs = layout_.runs(src);
  const std::vector<ShardRun>& dst_runs = layout_.runs(dst);
  const int64_t src_lo = layout_.lowest(src), src_hi = layout_.highest_end(src);
  const int64_t dst_lo = layout_.lowest(dst), dst_hi = layout_.highest_end(dst);
  // A segment (an interval) holding positions of both spans meets their overlap, or, when the
  // spans are disjoint, holds the last position of the earlier one.
  const int64_t seg_lo = std::max(src_lo, dst_lo), seg_hi = std::min(src_hi, dst_hi);
  const int64_t scan_lo = seg_lo < seg_hi ? seg_lo : seg_hi - 1, scan_hi = seg_lo < seg_hi ? seg_hi : seg_hi;
  // Which keys of a piece some query of dst reads: those within the band of the query pieces'
  // extremes. Stretches of them, merged where they touch.
  std::vector<std::pair<int64_t, int64_t>> stretches;  // [first key index, end key index) in the piece
  int64_t row = 0;
  for (int64_t b = 0; b < problem_.shape.batch; ++b) {
    for_each_segment(problem_, documents_, scan_lo, scan_hi, [&](int p, const PairGeometry& geom, int64_t seg) {
      const int64_t a = geom.segment_begin(seg), z = geom.segment_end(seg);
      if (z <= dst_lo || a >= dst_hi || z <= src_lo || a >= src_hi) return;
      for (int64_t g = 0; g < problem_.shape.kv_heads; ++g) {
        for (int64_t off : offsets_of_kv_head(problem_, geom.r, g)) {
          const StridedRange block = geom.block(seg, off);
          if (block.count == 0) continue;
          const std::vector<Piece> queries = pieces_of(block, dst_runs);
          if (queries.empty()) continue;
          const Piece latest = *std::max_element(queries.begin(), queries.end(), [](const Piece& x, const Piece& y) {
            return x.pos.last() < y.pos.last();
          });
          for (const Piece& keys : pieces_of(block, src_runs)) {
            stretches.clear();
            // Without a window every query piece reaches back to the first key, so the stretches
            // are one, up to the latest query: O(pieces) where the loop is O(pieces^2) (striped:N
            // holds a block as N interleaved pieces).
            for (const Piece& q : band_.hi >= Band::kUnbounded ? std::span(&latest, 1) : std::span(queries)) {
              // Keys k with lo <= qp - k <= hi for some qp in [q.first, q.last].
              const int64_t lo = band_.hi >= Band::kUnbounded ? keys.pos.first : q.pos.first - band_.hi;
              const int64_t hi = band_.lo <= -Band::kUnbounded ? keys.pos.last() : q.pos.last() - band_.lo;
              const StridedRange reach = clip(keys.pos, lo, hi + 1);
              if (reach.count == 0) continue;
              const int64_t first = (reach.first - keys.pos.first) / keys.pos.stride;
              stretches.emplace_back(first, first + reach.count);
            }
            std::sort(stretches.begin(), stretches.end());
            for (size_t i = 0; i < stretches.size();) {
              int64_t first = stretches[i].first, end = stretches[i].second;
              for (++i; i < stretches.size() && stretches[i].first <= end; ++i) end = std::max(end, stretches[i].second);
              KvSlab slab;
              slab.batch = b;
              slab.pair = p;
              slab.kv_head = g;
              slab.offset = off;
              slab.block = block;
              slab.keys = StridedRange{keys.pos.at(first), end - first, keys.pos.stride};
              slab.key_local = keys.local + first * keys.local_stride;
              slab.key_local_stride = keys.local_stride;
              slab.message_row = row;
              row += slab.keys.count;
              slabs.push_back(slab);
            }
          }
        }
      }
    });
  }
  return slabs;
}

namespace {

// How many positions of `pieces` lie below x, in O(log pieces) when the pieces' spans are apart
// (contiguous runs, zigzag chunks); when they interleave (striped:N holds a stripe as N
// progressions) the positions are listed and sorted once, and it is O(log positions).
class PositionsBelow {
 public:
  explicit PositionsBelow(std::vector<Piece> pieces) : pieces_(std::move(pieces)), before_(pieces_.size()) {
    int64_t n = 0;
    bool apart = true;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      before_[i] = n;
      n += pieces_[i].pos.count;
      apart = apart && (i == 0 || pieces_[i - 1].pos.last() < pieces_[i].pos.first);
    }
    if (apart) return;
    for (const Piece& p : pieces_) {
      for (int64_t i = 0; i < p.pos.count; ++i) sorted_.push_back(p.pos.at(i));
    }
    std::sort(sorted_.begin(), sorted_.end());
  }
  int64_t operator()(int64_t x) const {
    if (!sorted_.empty()) return std::lower_bound(sorted_.begin(), sorted_.end(), x) - sorted_.begin();
    const auto after = std::partition_point(pieces_.begin(), pieces_.end(), [x](const Piece& p) { return p.pos.first < x; });
    if (after == pieces_.begin()) return 0;
    const size_t i = static_cast<size_t>(after - pieces_.begin()) - 1;
    return before_[i] + clip(pieces_[i].pos, pieces_[i].pos.first, x).count;
  }

 private:
  std::vector<Piece> pieces_;  // ascending by first position
  std::vector<int64_t> before_;
  std::vector<int64_t> sorted_;  // every position, when the pieces interleave
};

}  // namespace

std::vector<int64_t> ExchangePlan::row_work(int dst, const std::vector<KvSlab>& slabs) const {
  const std::vector<DilatedPair> pairs = problem_.pairs();
  const int64_t group = problem_.group_size();
  constexpr int64_t kBelowAll = std::numeric_limits<int64_t>::min(), kAboveAll = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> work;
  std::optional<PositionsBelow> below;  // of dst's query rows in `block`
  StridedRange block;
  for (const KvSlab& slab : slabs) {
    const int64_t r = pairs[static_cast<size_t>(slab.pair)].dilation;
    int64_t heads = 0;  // q heads of the kv head that read this offset
    for (int64_t h = slab.kv_head * group; h < (slab.kv_head + 1) * group; ++h) heads += h % r == slab.offset;
    if (!below || !(block == slab.block)) {  // a block's slabs come one after another
      block = slab.block;
      below.emplace(pieces_of(slab.block, layout_.runs(dst)));
    }
    for (int64_t n = 0; n < slab.keys.count; ++n) {
      const int64_t kp = slab.keys.at(n);  // seen by queries at kp + lo .. kp + hi
      const int64_t from = band_.lo <= -Band::kUnbounded ? kBelowAll : kp + band_.lo;
      const int64_t to = band_.hi >= Band::kUnbounded ? kAboveAll : kp + band_.hi + 1;
      work.push_back(heads * ((*below)(to) - (*below)(from)));
    }
  }
  return work;
}

std::vector<Message> ExchangePlan::split(int src, int dst, int64_t chunks) const {
  // The ranks run a shift's chunks in lockstep (a step's buffers are reused two steps on), so
  // a transfer is cut where its work, not its rows, reaches c / chunks of the whole: with full
  // messages and a remainder a short transfer filled only the first steps (its rank computed
  // all of it there and left its neighbour waiting in the rest), and with equal rows the rows
  // of a long segment, read by many more queries than those of a short one, bunch the work
  // into a few steps. Cuts only move where messages end; every message stays within the cap.
  const std::vector<KvSlab> slabs = needed(src, dst);
  const std::vector<int64_t> work = row_work(dst, slabs);
  const int64_t total = static_cast<int64_t>(work.size());
  std::vector<int64_t> done(work.size() + 1, 0);  // work of rows [0, n); integers, so both ends cut alike
  for (int64_t n = 0; n < total; ++n) done[n + 1] = done[n] + work[n];
  if (done[total] == 0) {
    for (int64_t n = 0; n < total; ++n) done[n + 1] = n + 1;  // no work counted: even rows
  }
  std::vector<int64_t> cut(static_cast<size_t>(chunks) + 1, 0);  // message c holds rows [cut[c], cut[c+1])
  for (int64_t c = 0; c + 1 < chunks; ++c) {
    // The first row count whose work reaches (c + 1) / chunks of the whole.
    const __int128 target = static_cast<__int128>(done[total]) * (c + 1);
    int64_t at = std::partition_point(done.begin(), done.end(), [&](int64_t w) {
                   return static_cast<__int128>(w) * chunks < target;
                 }) - done.begin();
    at = std::max(at, total - (chunks - 1 - c) * max_message_rows_);  // the rest must fit in the rest
    cut[c + 1] = std::clamp(at, cut[c], std::min(total, cut[c] + max_message_rows_));
  }
  cut[chunks] = total;
  std::vector<Message> messages(static_cast<size_t>(chunks));
  int64_t c = 0, row = 0;
  for (KvSlab slab : slabs) {
    while (slab.keys.count > 0) {
      while (row == cut[c + 1]) ++c;
      Message& current = messages[c];
      const int64_t take = std::min(slab.keys.count, cut[c + 1] - row);
      KvSlab part = slab;
      part.keys.count = take;
      part.message_row = current.rows;
      current.src = src;
      current.dst = dst;
      current.slabs.push_back(part);
      current.rows += take;
      row += take;
      slab.keys.first += take * slab.keys.stride;
      slab.keys.count -= take;
      slab.key_local += take * slab.key_local_stride;
    }
  }
  return messages;
}

int64_t ExchangePlan::chunks_at_shift(int shift) const {
  const int k = layout_.world_size();
  int64_t chunks = 0;
  for (int src = 0; src < k; ++src) {
    int64_t rows = 0;
    for (const KvSlab& slab : needed(src, (src + shift) % k)) rows += slab.keys.count;
    chunks = std::max(chunks, (rows + max_message_rows_ - 1) / max_message_rows_);
  }
  return chunks;
}

std::vector<PlanStep> ExchangePlan::schedule(int rank) const {
  const int k = layout_.world_size();
  std::vector<PlanStep> steps;
  for (int shift = 1; shift < k; ++shift) {
    // Every rank lists the same (shift, chunk) steps, empty where it has nothing to move, so that
    // ranks interleaving two kinds of messages (K/V and returning gradients) do it identically.
    const int64_t chunks = chunks_at_shift(shift);
    if (chunks == 0) continue;
    std::vector<Message> sends = split(rank, (rank + shift) % k, chunks);
    std::vector<Message> recvs = split((rank - shift + k) % k, rank, chunks);
    for (int64_t c = 0; c < chunks; ++c) {
      PlanStep step;
      step.shift = shift;
      step.chunk = c;
      if (c < static_cast<int64_t>(sends.size())) step.send = std::move(sends[c]);
      if (c < static_cast<int64_t>(recvs.size())) step.recv = std::move(recvs[c]);
      steps.push_back(std::move(step));
    }
  }
  return steps;
}

int64_t ExchangePlan::rows_received(int dst) const {
  int64_t rows = 0;
  for (int src = 0; src < layout_.world_size(); ++src) {
    for (const KvSlab& slab : needed(src, dst)) rows += slab.keys.count;
  }
  return rows;
}

int64_t ExchangePlan::rows_sent(int src) const {
  int64_t rows = 0;
  for (int dst = 0; dst < layout_.world_size(); ++dst) {
    for (const KvSlab& slab : needed(src, dst)) rows += slab.keys.count;
  }
  return rows;
}

}  // namespace dring
