// dring/plan.hpp — the exchange plan: which K/V rows travel between which ranks, and when.
//
// Pure arithmetic on (problem, world size, message cap): every rank evaluates the same function,
// so sender and receiver agree on every message without negotiating. Rank `src` sends rank `dst`
// exactly the K/V rows (per kv head) that dst's queries attend to in each pair whose segment
// spans both, and nothing else; see docs/architecture.md for the schedule and its volume.
#pragma once

#include <cstdint>
#include <vector>

#include "dring/core/problem.hpp"
#include "dring/runtime/layout.hpp"

namespace dring {

// One slab of a message: the key rows of one (batch, pair, segment, kv head, offset) that the
// sender owns, strided by the dilation in the sender's shard and packed in the message, together
// with the receiver's query rows (same stride) that attend to them.
struct KvSlab {
  int64_t batch = 0;
  int pair = 0;
  int64_t kv_head = 0;
  int64_t offset = 0;
  StridedRange keys;     // global positions, on the sender
  StridedRange queries;  // global positions, on the receiver
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
  ExchangePlan(const Problem& problem, int world_size, int64_t max_message_rows);

  const ShardLayout& layout() const { return layout_; }
  int64_t max_message_rows() const { return max_message_rows_; }

  // Everything dst needs from src (src != dst), unsplit, in a fixed order.
  std::vector<KvSlab> needed(int src, int dst) const;
  // The steps of `rank`, in the global order every rank follows: shift 1..k-1 (those that move
  // anything anywhere), then chunk (as many as the longest transfer of that shift needs).
  std::vector<PlanStep> schedule(int rank) const;

  // K/V rows dst receives in total, over all peers (each row is 2*head_dim elements).
  int64_t rows_received(int dst) const;
  int64_t rows_sent(int src) const;

 private:
  std::vector<Message> split(int src, int dst) const;
  int64_t chunks_at_shift(int shift) const;

  Problem problem_;
  ShardLayout layout_;
  int64_t max_message_rows_;
  std::vector<PairGeometry> geometry_;
};

// The distinct offsets h mod r of the q heads that read kv head g, ascending.
std::vector<int64_t> offsets_of_kv_head(const Problem& problem, const PairGeometry& geom, int64_t kv_head);

}  // namespace dring
