// plan.cpp — computing the exchange plan.
#include "dring/runtime/plan.hpp"

#include <algorithm>
#include <limits>
#include <map>
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

namespace {

// Which keys of a sender's piece some query piece of the receiver reaches under `band` — those
// within the band of the query pieces' extremes — as stretches [first, end) of key indices in
// the piece, ascending, merged where they touch. `latest` is the query piece that ends last.
// With a window, what the extremes reach depends on how the queries are cut into pieces; the
// plan passes the receiver's run pieces (ShardLayout::run_pieces), so which rows travel does not
// depend on which cut ShardLayout::pieces chose.
void reached_stretches(const Band& band, const Piece& keys, std::span<const Piece> queries, const Piece& latest,
                       std::vector<std::pair<int64_t, int64_t>>& out) {
  out.clear();
  // Without a window every query piece reaches back to the first key, so the stretches are one,
  // up to the latest query: O(1) where the loop is O(pieces) (striped:N holds a block as up to
  // N interleaved run pieces).
  const bool unwindowed = band.hi >= Band::kUnbounded;
  for (const Piece& q : unwindowed ? std::span(&latest, 1) : queries) {
    // Keys k with lo <= qp - k <= hi for some qp in [q.first, q.last].
    const int64_t lo = unwindowed ? keys.pos.first : q.pos.first - band.hi;
    const int64_t hi = band.lo <= -Band::kUnbounded ? keys.pos.last() : q.pos.last() - band.lo;
    const StridedRange reach = clip(keys.pos, lo, hi + 1);
    if (reach.count == 0) continue;
    const int64_t first = (reach.first - keys.pos.first) / keys.pos.stride;
    out.emplace_back(first, first + reach.count);
  }
  std::sort(out.begin(), out.end());
  size_t merged = 0;
  for (size_t i = 0; i < out.size();) {
    int64_t first = out[i].first, end = out[i].second;
    for (++i; i < out.size() && out[i].first <= end; ++i) end = std::max(end, out[i].second);
    out[merged++] = {first, end};
  }
  out.resize(merged);
}

const Piece& latest_of(const std::vector<Piece>& pieces) {
  return *std::max_element(pieces.begin(), pieces.end(),
                           [](const Piece& x, const Piece& y) { return x.pos.last() < y.pos.last(); });
}

}  // namespace

ExchangePlan::ExchangePlan(const Problem& problem, ShardLayout layout, int64_t max_message_rows)
    : problem_(problem),
      layout_(std::move(layout)),
      max_message_rows_(max_message_rows),
      documents_(problem),
      band_(Band::of(problem.config)) {
  DRING_CHECK(max_message_rows >= 1, Status::kInvalidArgument,
              "exchange messages must hold at least one row (got " << max_message_rows << ")");
  DRING_CHECK(layout_.seq() == problem.shape.seq, Status::kInternal, "the layout is of another sequence length");
  for (const DilatedPair& pair : problem_.pairs()) {
    std::vector<std::vector<int64_t>> of_kv_head;
    for (int64_t g = 0; g < problem_.shape.kv_heads; ++g) of_kv_head.push_back(offsets_of_kv_head(problem_, pair.dilation, g));
    offsets_.push_back(std::move(of_kv_head));
  }
}

std::pair<int64_t, int64_t> ExchangePlan::scan_range(int a, int b) const {
  // A segment (an interval) holding positions of both spans meets their overlap, or, when the
  // spans are disjoint, holds the last position of the earlier one.
  const int64_t lo = std::max(layout_.lowest(a), layout_.lowest(b));
  const int64_t hi = std::min(layout_.highest_end(a), layout_.highest_end(b));
  return lo < hi ? std::pair{lo, hi} : std::pair{hi - 1, hi};
}

std::vector<KvSlab> ExchangePlan::needed(int src, int dst) const {
  std::vector<KvSlab> slabs;
  if (src == dst) return slabs;
  const bool windowed = band_.hi < Band::kUnbounded;
  const int64_t src_lo = layout_.lowest(src), src_hi = layout_.highest_end(src);
  const int64_t dst_lo = layout_.lowest(dst), dst_hi = layout_.highest_end(dst);
  const auto [scan_lo, scan_hi] = scan_range(src, dst);
  // A block's pieces depend on its offset, not on the kv head: computed once per (segment,
  // offset) and shared by the kv heads reading that offset.
  struct OffsetPieces {
    int64_t visit = -1;  // the segment visit they were computed for
    StridedRange block;
    std::vector<Piece> queries, keys;
    std::vector<Piece> reach;  // the query pieces whose band decides what travels (reached_stretches)
  };
  std::vector<OffsetPieces> by_offset;
  int64_t visit = 0;
  std::vector<std::pair<int64_t, int64_t>> stretches;
  // The slabs of batch 0; every batch needs the same rows.
  for_each_segment(problem_, documents_, scan_lo, scan_hi, [&](int p, const PairGeometry& geom, int64_t seg) {
    const int64_t a = geom.segment_begin(seg), z = geom.segment_end(seg);
    if (z <= dst_lo || a >= dst_hi || z <= src_lo || a >= src_hi) return;
    ++visit;
    if (static_cast<int64_t>(by_offset.size()) < geom.r) by_offset.resize(static_cast<size_t>(geom.r));
    for (int64_t g = 0; g < problem_.shape.kv_heads; ++g) {
      for (int64_t off : offsets_[static_cast<size_t>(p)][static_cast<size_t>(g)]) {
        OffsetPieces& at = by_offset[static_cast<size_t>(off)];
        if (at.visit != visit) {
          at.visit = visit;
          at.block = geom.block(seg, off);
          at.queries = layout_.pieces(at.block, dst);
          at.keys = at.queries.empty() ? std::vector<Piece>{} : layout_.pieces(at.block, src);
          at.reach = windowed && !at.queries.empty() ? layout_.run_pieces(at.block, dst) : at.queries;
        }
        if (at.queries.empty()) continue;
        const Piece& latest = latest_of(at.queries);
        for (const Piece& keys : at.keys) {
          reached_stretches(band_, keys, at.reach, latest, stretches);
          for (const auto& [first, end] : stretches) {
            KvSlab slab;
            slab.pair = p;
            slab.kv_head = g;
            slab.offset = off;
            slab.block = at.block;
            slab.keys = StridedRange{keys.pos.at(first), end - first, keys.pos.stride};
            slab.key_local = keys.local + first * keys.local_stride;
            slab.key_local_stride = keys.local_stride;
            slabs.push_back(slab);
          }
        }
      }
    }
  });
  const size_t per_batch = slabs.size();
  slabs.reserve(per_batch * static_cast<size_t>(problem_.shape.batch));
  for (int64_t b = 1; b < problem_.shape.batch; ++b) {
    for (size_t i = 0; i < per_batch; ++i) {
      slabs.push_back(slabs[i]);
      slabs.back().batch = b;
    }
  }
  int64_t row = 0;
  for (KvSlab& slab : slabs) {
    slab.message_row = row;
    row += slab.keys.count;
  }
  return slabs;
}

std::vector<int64_t> ExchangePlan::transfer_rows() const {
  // One walk over the blocks two ranks may share, each rank's pieces of a block computed once,
  // instead of a needed() per pair of ranks: counting the rows of all k(k-1) transfers costs
  // about what listing the slabs of k/2 of them does.
  const int k = layout_.world_size();
  std::vector<std::pair<int64_t, int64_t>> spans;  // [rank]: lowest and one past the highest position
  for (int t = 0; t < k; ++t) spans.emplace_back(layout_.lowest(t), layout_.highest_end(t));
  std::vector<int64_t> rows(static_cast<size_t>(k) * k, 0);
  const bool windowed = band_.hi < Band::kUnbounded;
  std::vector<std::vector<Piece>> pieces(static_cast<size_t>(k));
  std::vector<std::vector<Piece>> reach(static_cast<size_t>(k));  // as in needed()
  std::vector<std::pair<int64_t, int64_t>> stretches;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> readers(offsets_.size());  // [pair]: (offset, kv heads)
  for (size_t p = 0; p < offsets_.size(); ++p) {
    std::map<int64_t, int64_t> count;
    for (const std::vector<int64_t>& offsets : offsets_[p]) {
      for (int64_t off : offsets) ++count[off];
    }
    readers[p].assign(count.begin(), count.end());
  }
  // Only segments that can hold rows of two ranks: the union of needed()'s scan ranges (for
  // contiguous shards, the segments across a boundary; not every segment of the sequence).
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int a = 0; a < k; ++a) {
    for (int b = a + 1; b < k; ++b) ranges.push_back(scan_range(a, b));
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<int64_t, int64_t>> seen(offsets_.size(), {-1, -1});  // [pair]: last (document start, segment)
  auto visit = [&](int p, const PairGeometry& geom, int64_t seg) {
    // Ranges are walked in order, so a segment reaching into two of them comes twice in a row.
    const std::pair<int64_t, int64_t> at{geom.begin, seg};
    if (!(seen[static_cast<size_t>(p)] < at)) return;
    seen[static_cast<size_t>(p)] = at;
    const int64_t a = geom.segment_begin(seg), z = geom.segment_end(seg);
    for (const auto& [off, heads] : readers[static_cast<size_t>(p)]) {
      const StridedRange block = geom.block(seg, off);
      if (block.count == 0) continue;
      for (int t = 0; t < k; ++t) {
        const bool meets = z > spans[static_cast<size_t>(t)].first && a < spans[static_cast<size_t>(t)].second;
        pieces[static_cast<size_t>(t)] = meets ? layout_.pieces(block, t) : std::vector<Piece>{};
        if (windowed) reach[static_cast<size_t>(t)] = meets ? layout_.run_pieces(block, t) : std::vector<Piece>{};
      }
      for (int dst = 0; dst < k; ++dst) {
        const std::vector<Piece>& queries = pieces[static_cast<size_t>(dst)];
        if (queries.empty()) continue;
        const Piece& latest = latest_of(queries);
        for (int src = 0; src < k; ++src) {
          if (src == dst) continue;
          int64_t count = 0;
          for (const Piece& keys : pieces[static_cast<size_t>(src)]) {
            reached_stretches(band_, keys, windowed ? reach[static_cast<size_t>(dst)] : queries, latest, stretches);
            for (const auto& [first, end] : stretches) count += end - first;
          }
          rows[static_cast<size_t>(src) * k + dst] += heads * count;
        }
      }
    }
  };
  for (size_t i = 0; i < ranges.size();) {
    int64_t lo = ranges[i].first, hi = ranges[i].second;
    for (++i; i < ranges.size() && ranges[i].first <= hi; ++i) hi = std::max(hi, ranges[i].second);
    for_each_segment(problem_, documents_, lo, hi, visit);
  }
  for (int64_t& r : rows) r *= problem_.shape.batch;
  return rows;
}

namespace {

// How many positions of `pieces` lie below x, in O(log pieces) when the pieces' spans are apart
// (contiguous runs, zigzag chunks, stripes); when they interleave (striped:N holds a long dilated
// block as run pieces) the positions are listed and sorted once, and it is O(log positions).
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
  // dst's query rows of the blocks seen last. A block's slabs come one after another, and a
  // segment's blocks (one per offset) come again for every kv head.
  constexpr size_t kRecentBlocks = 64;
  std::vector<std::pair<StridedRange, PositionsBelow>> recent;
  for (const KvSlab& slab : slabs) {
    const int64_t r = pairs[static_cast<size_t>(slab.pair)].dilation;
    int64_t heads = 0;  // q heads of the kv head that read this offset
    for (int64_t h = slab.kv_head * group; h < (slab.kv_head + 1) * group; ++h) heads += h % r == slab.offset;
    auto at = std::find_if(recent.rbegin(), recent.rend(), [&](const auto& seen) { return seen.first == slab.block; });
    if (at == recent.rend()) {
      if (recent.size() == kRecentBlocks) recent.clear();
      recent.emplace_back(slab.block, PositionsBelow(layout_.pieces(slab.block, dst)));
      at = recent.rbegin();
    }
    const PositionsBelow& below = at->second;
    for (int64_t n = 0; n < slab.keys.count; ++n) {
      const int64_t kp = slab.keys.at(n);  // seen by queries at kp + lo .. kp + hi
      const int64_t from = band_.lo <= -Band::kUnbounded ? kBelowAll : kp + band_.lo;
      const int64_t to = band_.hi >= Band::kUnbounded ? kAboveAll : kp + band_.hi + 1;
      work.push_back(heads * (below(to) - below(from)));
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
  // Each message's slabs counted first and reserved: a transfer may hold many slabs (striped:N
  // cuts a block into up to min(stripes, N) pieces), and growing the lists costs more than
  // filling them.
  std::vector<size_t> parts(static_cast<size_t>(chunks), 0);
  for (int64_t m = 0; const KvSlab& slab : slabs) {  // slab.message_row: its first row in the transfer
    while (cut[m + 1] <= slab.message_row) ++m;
    for (int64_t n = m; n < chunks && cut[n] < slab.message_row + slab.keys.count; ++n) parts[n] += cut[n] < cut[n + 1];
  }
  for (int64_t m = 0; m < chunks; ++m) messages[m].slabs.reserve(parts[m]);
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

std::vector<PlanStep> ExchangePlan::schedule(int rank) const {
  const int k = layout_.world_size();
  const std::vector<int64_t> rows = transfer_rows();
  std::vector<PlanStep> steps;
  for (int shift = 1; shift < k; ++shift) {
    // Every rank lists the same (shift, chunk) steps, empty where it has nothing to move, so that
    // ranks interleaving two kinds of messages (K/V and returning gradients) do it identically:
    // as many chunks as the longest transfer of the shift needs.
    int64_t chunks = 0;
    for (int src = 0; src < k; ++src) {
      const int64_t transfer = rows[static_cast<size_t>(src) * k + (src + shift) % k];
      chunks = std::max(chunks, (transfer + max_message_rows_ - 1) / max_message_rows_);
    }
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
  const int k = layout_.world_size();
  const std::vector<int64_t> rows = transfer_rows();
  int64_t total = 0;
  for (int src = 0; src < k; ++src) total += rows[static_cast<size_t>(src) * k + dst];
  return total;
}

int64_t ExchangePlan::rows_sent(int src) const {
  const int k = layout_.world_size();
  const std::vector<int64_t> rows = transfer_rows();
  int64_t total = 0;
  for (int dst = 0; dst < k; ++dst) total += rows[static_cast<size_t>(src) * k + dst];
  return total;
}

}  // namespace dring
