// executor_impl.hpp — internals shared by the forward (executor.cpp) and backward
// (executor_backward.cpp) passes of the ring executor: indexing into the shard, enumerating
// blocks, posting steps, progress.
#pragma once

#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "dring/core/tensor.hpp"
#include "dring/runtime/executor.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/plan.hpp"

namespace dring {

using Clock = std::chrono::steady_clock;
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// CPU time this process has used, in ms (all its threads).
inline double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
}

// A stretch of a pass that computes (kernels, packing, fills): its wall time goes to
// PassStats::compute_ms and the process's CPU time over it to compute_cpu_ms when it ends.
class ComputeSection {
 public:
  explicit ComputeSection(PassStats& stats) : stats_(stats), wall_(Clock::now()), cpu_(process_cpu_ms()) {}
  ~ComputeSection() {
    stats_.compute_ms += ms_since(wall_);
    stats_.compute_cpu_ms += process_cpu_ms() - cpu_;
  }
  ComputeSection(const ComputeSection&) = delete;
  ComputeSection& operator=(const ComputeSection&) = delete;

 private:
  PassStats& stats_;
  Clock::time_point wall_;
  double cpu_;
};

// The query heads of kv head g that use offset o in a pair of dilation r: first, first + r, ...
struct HeadRun {
  int64_t first = 0;
  int64_t count = 0;
  int64_t step = 1;
};
HeadRun heads_with_offset(const Problem& problem, int64_t kv_head, int64_t offset, int64_t dilation);

// Element offsets into this rank's shard tensors, by local row (the layout's runs map positions
// to local rows).
struct ShardIndex {
  int64_t rows = 0;
  TensorDims q;   // q, out, dout, dq: [batch, rows, heads, head_dim]; lse, delta: [batch, heads, rows]
  TensorDims kv;  // k, v, dk, dv: [batch, rows, kv_heads, head_dim]
  int64_t q_at(int64_t b, int64_t local, int64_t h) const { return q.at(b, local, h); }
  int64_t kv_at(int64_t b, int64_t local, int64_t g) const { return kv.at(b, local, g); }
  int64_t lse_at(int64_t b, int64_t h, int64_t local) const { return q.state_at(b, h, local); }
};

// The rows of this rank one side of a kernel block reads: `count` local rows from `local`, `stride`
// apart.
struct LocalRows {
  int64_t local = 0;
  int64_t stride = 1;
  int64_t count = 0;
  static LocalRows of(const Piece& piece) { return {piece.local, piece.local_stride, piece.pos.count}; }
};

// The pieces' local rows as one progression, when they are one: every piece after the first starts
// one stride after the last row of the piece before, all with the same stride. (Zigzag's two
// chunks of a rank are adjacent in its local rows, so a block that spans both is usually one; so
// are a striped rank's stripes of a block whose dilation divides the stripe.)
std::optional<LocalRows> one_progression(std::span<const Piece> pieces);

// Kernel calls and shared rows. Blocks of one kernel call must not share query rows (forward:
// their out and lse; backward: dq) nor key rows (backward: dk, dv). When a rank holds a block's
// rows as several pieces (zigzag, striped layouts) or receives a block's keys as several slabs,
// the (query piece i, key piece j) products go out in rounds, round (i + j) mod n for n the larger
// count: within a round every query piece and every key piece appears at most once.
inline int round_of(int64_t i, int64_t j, int64_t n) { return static_cast<int>((i + j) % n); }

// Blocks go to a kernel in batches of at most this many, so a pair with millions of tiny
// segments never materialises millions of block descriptors at once.
inline constexpr size_t kBlockBatch = 8192;

// Message tags: K/V rows travel with tag `shift`, their gradients back with `world + shift`.
inline int kv_tag(int shift) { return shift; }
inline int grad_tag(int world, int shift) { return world + shift; }

struct RingExecutor::Impl {
  Impl(const Problem& p, comm::Transport& t, Backend& b, ExecutorOptions o);

  Problem problem;
  comm::Transport& transport;
  Backend& backend;
  ExecutorOptions options;
  ExchangePlan plan;
  int rank = 0;
  int world = 1;
  ShardIndex index;
  std::vector<PlanStep> steps;
  std::vector<DilatedPair> pairs;
  Documents documents;
  Band band;
  kernels::AttendParams params;
  int64_t largest_recv_rows = 0;
  int64_t largest_send_rows = 0;

  DType dtype = DType::kF32;
  const char* pass_name = "forward pass";  // of the pass in progress, for error messages
  // Exchange buffers (allocated for the pass that needs them, then kept): K/V messages in the
  // storage dtype, gradient messages in fp32.
  TensorBuffer kv_recv[2];
  TensorBuffer kv_send;
  Buffer<float> grad_send[2];
  Buffer<float> grad_recv[2];
  // Backward: delta per (row, head), and fp32 accumulators of dq, dk, dv when the storage dtype
  // is not fp32 (for fp32 the outputs accumulate in place).
  Buffer<float> delta;
  Buffer<float> dq_acc, dk_acc, dv_acc;

  std::unique_ptr<comm::Request> pending_kv_recv, pending_kv_send;
  std::unique_ptr<comm::Request> pending_grad_recv[2], pending_grad_send[2];

  // Progress: work (scores) of the pass, of finished kernel calls, of the call in flight.
  double total_scores = 0.0, done_scores = 0.0, call_scores = 0.0;
  int64_t done_blocks = 0;
  // Scores of one whole pass on this rank (forward and backward visit the same ones): counted by
  // the first pass that reports progress, then kept.
  double pass_scores = -1.0;
  Clock::time_point last_report;

  static void hook(void* ctx, double fraction);
  void poll(double fraction);
  void start_progress(double total);
  void finish_call(double scores);

  // Runs `allocate` (a pass's buffers) on every rank and agrees on the outcome before any rank
  // posts a message: a rank that cannot allocate throws its error, its peers an error naming it,
  // instead of waiting for messages that never come.
  void allocate_agreed(const std::function<void()>& allocate);
  void ensure(Buffer<float>& buffer, int64_t floats, MemCategory category);
  void ensure(TensorBuffer& buffer, int64_t count, MemCategory category);
  // Visits the local blocks of pair p in round `round`: visit(batch, offset, query rows, key rows,
  // mask) for every product of this rank's pieces of a block that the band leaves non-empty.
  // Raises `rounds` to the number of rounds the pair needs.
  template <class Visit>
  void for_each_local_block(int p, int round, int& rounds, Visit&& visit) const {
    const ShardLayout& layout = plan.layout();
    const int64_t lo = layout.lowest(rank), hi = layout.highest_end(rank);
    for (int64_t b = 0; b < problem.shape.batch; ++b) {
      for_each_segment(problem, documents, lo, hi, [&](int pair, const PairGeometry& geom, int64_t seg) {
        if (pair != p) return;
        const int64_t offsets = std::min<int64_t>(geom.r, problem.shape.heads);  // offsets some head uses
        for (int64_t off = 0; off < offsets; ++off) {
          const std::vector<Piece> pieces = layout.pieces(geom.block(seg, off), rank);
          const int64_t n = static_cast<int64_t>(pieces.size());
          // Without a window, what a row sees depends only on the order of positions, and local
          // order is position order: pieces that are one progression of local rows run as one
          // block (causal in local rows, or unmasked), as a contiguous shard's block does.
          if (n > 1 && band.hi >= Band::kUnbounded && (band.lo == 0 || band.lo <= -Band::kUnbounded)) {
            if (const std::optional<LocalRows> rows = one_progression(pieces)) {
              if (round == 0) visit(b, off, *rows, *rows, band.lo == 0 ? BlockMask::causal() : BlockMask::none());
              continue;
            }
          }
          rounds = std::max<int>(rounds, static_cast<int>(n));
          for (int64_t i = 0; i < n && round < n; ++i) {
            const Piece& q = pieces[i];
            const Piece& k = pieces[(round - i + n) % n];
            const BlockMask mask = mask_of(q.pos, k.pos);
            if (!mask.empty(0, q.pos.count, 0, k.pos.count)) visit(b, off, LocalRows::of(q), LocalRows::of(k), mask);
          }
        }
      });
    }
  }
  // Visits the blocks of a received message for pair p in round `round`: visit(slab, query rows,
  // mask) for every (slab, this rank's piece of the slab's block) the band leaves non-empty.
  template <class Visit>
  void for_each_message_block(const Message& msg, int p, int round, int& rounds, Visit&& visit) const {
    std::vector<Piece> queries;
    for (size_t a = 0; a < msg.slabs.size();) {
      // The slabs of one block are adjacent in a message.
      const KvSlab& head = msg.slabs[a];
      size_t z = a + 1;
      while (z < msg.slabs.size() && same_block(msg.slabs[z], head)) ++z;
      if (head.pair == p) {
        queries = plan.layout().pieces(head.block, rank);
        if (!visit_merged(std::span(msg.slabs).subspan(a, z - a), queries, round, rounds, visit)) {
          const int64_t n = std::max<int64_t>(static_cast<int64_t>(z - a), static_cast<int64_t>(queries.size()));
          rounds = std::max<int>(rounds, static_cast<int>(n));
          for (size_t s = a; s < z; ++s) {
            for (size_t i = 0; i < queries.size(); ++i) {
              if (round_of(static_cast<int64_t>(s - a), static_cast<int64_t>(i), n) != round) continue;
              const BlockMask mask = mask_of(queries[i].pos, msg.slabs[s].keys);
              if (!mask.empty(0, queries[i].pos.count, 0, msg.slabs[s].keys.count)) {
                visit(msg.slabs[s], LocalRows::of(queries[i]), mask);
              }
            }
          }
        }
      }
      a = z;
    }
  }
  // The slabs of one block against this rank's query pieces as one call per slab (slab s in round
  // s), when for every slab the pieces that see any of its keys see all of them and are one
  // progression of local rows (a zigzag rank's two chunks against an earlier rank's keys, say).
  // Returns false, visiting nothing, when some slab does not merge so.
  template <class Visit>
  bool visit_merged(std::span<const KvSlab> slabs, const std::vector<Piece>& queries, int round, int& rounds,
                    Visit&& visit) const {
    if (queries.size() < 2) return false;
    std::vector<std::optional<LocalRows>> calls(slabs.size());
    for (size_t s = 0; s < slabs.size(); ++s) {
      size_t first = queries.size(), last = 0;
      for (size_t i = 0; i < queries.size(); ++i) {
        const BlockMask mask = mask_of(queries[i].pos, slabs[s].keys);
        if (mask.empty(0, queries[i].pos.count, 0, slabs[s].keys.count)) continue;
        if (!mask.trivial()) return false;
        if (first < queries.size() && i != last + 1) return false;  // pieces that see it are not adjacent
        first = std::min(first, i);
        last = i;
      }
      if (first == queries.size()) continue;  // no piece sees this slab
      calls[s] = one_progression(std::span(queries).subspan(first, last - first + 1));
      if (!calls[s]) return false;
    }
    rounds = std::max<int>(rounds, static_cast<int>(slabs.size()));
    if (round < static_cast<int>(slabs.size()) && calls[round]) visit(slabs[round], *calls[round], BlockMask::none());
    return true;
  }
  // The mask of queries q against keys k, in its simplest form: none when every key is visible
  // to every query, causal when they are the same rows under plain causality.
  BlockMask mask_of(const StridedRange& q, const StridedRange& k) const {
    const BlockMask mask = BlockMask::of(band, q, k);
    if (mask.full(0, q.count, 0, k.count)) return BlockMask::none();
    if (q == k && band.lo == 0 && band.hi >= Band::kUnbounded) return BlockMask::causal();
    return mask;
  }
  // Calls enumerate(p, round, rounds) for every pair p and every round it needs (enumerate raises
  // `rounds`), and after each call end_round(): pairs one after another, rounds in order.
  template <class Enumerate, class EndRound>
  void in_rounds(Enumerate&& enumerate, EndRound&& end_round) const {
    for (int p = 0; p < static_cast<int>(pairs.size()); ++p) {
      int rounds = 1;
      for (int round = 0; round < rounds; ++round) {
        enumerate(p, round, rounds);
        end_round();
      }
    }
  }
  static bool same_block(const KvSlab& a, const KvSlab& b) {
    return a.batch == b.batch && a.pair == b.pair && a.kv_head == b.kv_head && a.offset == b.offset &&
           a.block == b.block;
  }
  // Row runs between a message payload and the shard rows of its slabs: from shard tensors k, v
  // into the payload (packing K/V), or from the payload into k_out, v_out (returned gradients).
  // Offsets are in elements of `type`. With `pair` >= 0, only that pair's slabs (the slabs of one
  // pair hold distinct rows; a row selected by two pairs appears once per pair).
  std::vector<RowRun> message_runs(const Message& msg, const void* k, const void* v, void* k_out, void* v_out,
                                   void* payload, bool into_payload, DType type, int pair = -1) const;
  // Posts step i's K/V receive and packed send.
  void post_kv(size_t i, const ShardInputs& in, PassStats& stats);
  // Completes a request of step i (`what`: "K/V rows", "gradients"). A wait that passes the
  // transport's deadline throws Error(kCommError) naming the pass, the step and the ring shift
  // before the transport's own words (peer, tag, time waited).
  void wait(std::unique_ptr<comm::Request>& request, PassStats& stats, const char* what, size_t step);
  void finish(PassStats& stats, Clock::time_point start, const comm::CommCounters& before);

  // Collects blocks of one kind and hands them to `run` (a backend call) kBlockBatch at a time,
  // keeping the progress accounting; `scores` is the work of one block.
  template <class Block>
  class Batch {
   public:
    Batch(Impl& impl, std::function<void(std::span<const Block>)> run, double (*scores)(const Block&))
        : impl_(impl), run_(std::move(run)), scores_(scores) {}
    void add(const Block& block) {
      blocks_.push_back(block);
      if (blocks_.size() >= kBlockBatch) flush();
    }
    void flush() {
      if (blocks_.empty()) return;
      impl_.call_scores = 0.0;
      for (const Block& b : blocks_) impl_.call_scores += scores_(b);
      run_(blocks_);
      impl_.done_scores += impl_.call_scores;
      impl_.done_blocks += static_cast<int64_t>(blocks_.size());
      impl_.call_scores = 0.0;
      blocks_.clear();
    }

   private:
    Impl& impl_;
    std::function<void(std::span<const Block>)> run_;
    double (*scores_)(const Block&);
    std::vector<Block> blocks_;
  };
};

}  // namespace dring
