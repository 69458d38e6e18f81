// dring/plan.hpp — the exchange plan: which K/V rows travel between which ranks, and when.
//
// Pure arithmetic on (problem, layout, message cap): every rank evaluates the same function, so
// sender and receiver agree on every message without negotiating. Rank `src` sends rank `dst`
// exactly the K/V rows (per kv head) that dst's queries attend to — in each block (document,
// pair, segment, offset) holding rows of both, the keys of src within the band (causality,
// window) of some query of dst — and nothing else; see docs/architecture.md for the schedule
// and its volume.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "dring/core/problem.hpp"
#include "dring/runtime/layout.hpp"

namespace dring {

// One slab of a message: key rows of one block (batch, pair, document segment, kv head, offset)
// that the sender holds, a progression of positions stored at a progression of the sender's
// local rows, packed in the message. The receiver pairs them with its own rows of the block.
// A block's keys on one sender may come as several slabs (one per piece of the sender's rows of
// the block, ShardLayout::pieces, or per stretch of keys some query's window reaches); slabs never
// share a key row.
struct KvSlab {
  int64_t batch = 0;
  int pair = 0;
  int64_t kv_head = 0;
  int64_t offset = 0;
  StridedRange block;       // every position of the block (both ranks' rows and others')
  StridedRange keys;        // global positions, on the sender
  int64_t key_local = 0;    // the sender's local row of keys.first
  int64_t key_local_stride = 1;
  int64_t message_row = 0;  // first row of this slab in the message's K (and V) block
  bool operator==(const KvSlab&) const = default;
};

// One message. Its payload is K rows then V rows: [2, rows, head_dim] elements.
struct Message {
  int src = -1;
  int dst = -1;
  std::vector<KvSlab> slabs;
  int64_t rows = 0;
  bool empty() const { return rows == 0; }
};

// In each step a rank sends at most one message and receives at most one. Every rank's schedule
// lists the same (shift, chunk) steps; a rank's step is empty where it has nothing to move.
struct PlanStep {
  int shift = 0;      // sends go to rank + shift, receives come from rank - shift (mod world size)
  int64_t chunk = 0;  // index of the message within this shift's transfer
  Message send;       // empty when nothing goes out in this step
  Message recv;       // empty when nothing comes in
};

class ExchangePlan {
 public:
  // `max_message_rows` caps every message (long transfers are split into chunks), so exchange
  // buffers stay a bounded fraction of the shard.
  ExchangePlan(const Problem& problem, ShardLayout layout, int64_t max_message_rows);
  ExchangePlan(const Problem& problem, int world_size, int64_t max_message_rows)  // contiguous
      : ExchangePlan(problem, ShardLayout(problem.shape.seq, world_size), max_message_rows) {}

  const ShardLayout& layout() const { return layout_; }
  int64_t max_message_rows() const { return max_message_rows_; }

  // Everything dst needs from src (src != dst), unsplit, in a fixed order.
  std::vector<KvSlab> needed(int src, int dst) const;
  // The steps of `rank`, in the global order every rank follows: shift 1..k-1 (those that move
  // anything anywhere), then chunk (as many as the longest transfer of that shift needs; every
  // transfer of the shift is spread over all of them, cut where its work reaches c / chunks).
  std::vector<PlanStep> schedule(int rank) const;
  // The work each row of `slabs` (needed by dst, in order) brings to dst: the scores it enters,
  // i.e. dst's query rows of its block within the band of it, times the q heads reading its
  // (kv head, offset). Only where messages are cut depends on it.
  std::vector<int64_t> row_work(int dst, const std::vector<KvSlab>& slabs) const;

  // K/V rows dst receives in total, over all peers (each row is 2*head_dim elements).
  int64_t rows_received(int dst) const;
  int64_t rows_sent(int src) const;

 private:
  // What dst needs from src as `chunks` messages of nearly equal work (each at most
  // max_message_rows rows; empty ones are default messages).
  std::vector<Message> split(int src, int dst, int64_t chunks) const;

  // Rows of every transfer, [src * world_size + dst] (zero on the diagonal), over all batches.
  std::vector<int64_t> transfer_rows() const;
  // Positions [lo, hi) where a segment holding rows of both ranks' spans lies.
  std::pair<int64_t, int64_t> scan_range(int a, int b) const;

  Problem problem_;
  ShardLayout layout_;
  int64_t max_message_rows_;
  Documents documents_;
  Band band_;
  std::vector<std::vector<std::vector<int64_t>>> offsets_;  // [pair][kv head]: offsets_of_kv_head
};

// The distinct offsets h mod r of the q heads that read kv head g, ascending.
std::vector<int64_t> offsets_of_kv_head(const Problem& problem, int64_t dilation, int64_t kv_head);

}  // namespace dring
