// plan.cpp — computing the exchange plan.
#include "dring/runtime/plan.hpp"

#include <algorithm>

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
          for (const Piece& keys : pieces_of(block, src_runs)) {
            stretches.clear();
            for (const Piece& q : queries) {
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

std::vector<Message> ExchangePlan::split(int src, int dst, int64_t chunks) const {
  // The transfer is cut into `chunks` messages whose rows differ by at most one (message c holds
  // rows [total c / chunks, total (c+1) / chunks)), not into full messages and a remainder: every
  // rank runs a shift's chunks in lockstep (a step's buffers are reused two steps on), so a rank
  // whose transfer is half as long as its neighbour's would otherwise compute all of it in the
  // first half of the steps and make the neighbour wait in the second.
  const std::vector<KvSlab> slabs = needed(src, dst);
  int64_t total = 0;
  for (const KvSlab& slab : slabs) total += slab.keys.count;
  std::vector<Message> messages(static_cast<size_t>(chunks), Message{src, dst, {}, 0});
  const auto size_of = [&](int64_t c) { return total * (c + 1) / chunks - total * c / chunks; };
  int64_t c = 0;
  for (KvSlab slab : slabs) {
    while (slab.keys.count > 0) {
      while (messages[c].rows == size_of(c)) ++c;
      Message& current = messages[c];
      const int64_t take = std::min(slab.keys.count, size_of(c) - current.rows);
      KvSlab part = slab;
      part.keys.count = take;
      part.message_row = current.rows;
      current.slabs.push_back(part);
      current.rows += take;
      slab.keys.first += take * slab.keys.stride;
      slab.keys.count -= take;
      slab.key_local += take * slab.key_local_stride;
    }
  }
  for (Message& m : messages) {
    if (m.empty()) m = Message{};  // a step with nothing to move looks the same on every path
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
