// plan.cpp — computing the exchange plan.
#include "dring/runtime/plan.hpp"

#include <algorithm>

#include "dring/core/error.hpp"

namespace dring {

std::vector<int64_t> offsets_of_kv_head(const Problem& problem, const PairGeometry& geom, int64_t kv_head) {
  const int64_t group = problem.group_size();
  std::vector<int64_t> offsets;
  for (int64_t h = kv_head * group; h < (kv_head + 1) * group; ++h) offsets.push_back(geom.offset_of_head(h));
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
  return offsets;
}

ExchangePlan::ExchangePlan(const Problem& problem, int world_size, int64_t max_message_rows)
    : problem_(problem), layout_(problem.shape.seq, world_size), max_message_rows_(max_message_rows) {
  DRING_CHECK(max_message_rows >= 1, Status::kInvalidArgument,
              "exchange messages must hold at least one row (got " << max_message_rows << ")");
  for (const DilatedPair& pair : problem.pairs()) geometry_.emplace_back(pair, problem.shape.seq);
}

std::vector<KvSlab> ExchangePlan::needed(int src, int dst) const {
  std::vector<KvSlab> slabs;
  if (src == dst) return slabs;
  // Causal: every key of a lower rank precedes every query of a higher one, and the reverse
  // direction contributes nothing.
  if (problem_.config.causal && src > dst) return slabs;
  const int64_t src_lo = layout_.begin(src), src_hi = layout_.end(src);
  const int64_t dst_lo = layout_.begin(dst), dst_hi = layout_.end(dst);
  int64_t row = 0;
  for (int64_t b = 0; b < problem_.shape.batch; ++b) {
    for (int p = 0; p < static_cast<int>(geometry_.size()); ++p) {
      const PairGeometry& geom = geometry_[p];
      // Segments that hold rows of both ranks.
      const int64_t seg_first = std::max(geom.segment_of(src_lo), geom.segment_of(dst_lo));
      const int64_t seg_last = std::min(geom.segment_of(src_hi - 1), geom.segment_of(dst_hi - 1));
      for (int64_t seg = seg_first; seg <= seg_last; ++seg) {
        for (int64_t g = 0; g < problem_.shape.kv_heads; ++g) {
          for (int64_t off : offsets_of_kv_head(problem_, geom, g)) {
            KvSlab slab;
            slab.batch = b;
            slab.pair = p;
            slab.kv_head = g;
            slab.offset = off;
            slab.keys = geom.selected(seg, off, src_lo, src_hi);
            slab.queries = geom.selected(seg, off, dst_lo, dst_hi);
            if (slab.keys.count == 0 || slab.queries.count == 0) continue;
            slab.message_row = row;
            row += slab.keys.count;
            slabs.push_back(slab);
          }
        }
      }
    }
  }
  return slabs;
}

std::vector<Message> ExchangePlan::split(int src, int dst) const {
  std::vector<Message> messages;
  Message current{src, dst, {}, 0};
  for (KvSlab slab : needed(src, dst)) {
    while (slab.keys.count > 0) {
      const int64_t take = std::min(slab.keys.count, max_message_rows_ - current.rows);
      KvSlab part = slab;
      part.keys.count = take;
      part.message_row = current.rows;
      current.slabs.push_back(part);
      current.rows += take;
      slab.keys.first += take * slab.keys.stride;
      slab.keys.count -= take;
      if (current.rows == max_message_rows_) {
        messages.push_back(std::move(current));
        current = Message{src, dst, {}, 0};
      }
    }
  }
  if (!current.empty()) messages.push_back(std::move(current));
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
    std::vector<Message> sends = split(rank, (rank + shift) % k);
    std::vector<Message> recvs = split((rank - shift + k) % k, rank);
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
