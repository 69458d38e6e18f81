// executor.cpp — the ring executor: shared machinery and the forward pass (executor.hpp).
#include "dring/runtime/executor.hpp"

#include <algorithm>
#include <limits>
#include <optional>
#include <span>

#include "dring/core/error.hpp"
#include "executor_impl.hpp"

namespace dring {

namespace {

double scores_of(const kernels::AttendBlock& b) {
  return b.mask.visible_pairs(b.n_q, b.n_k);
}

}  // namespace

std::optional<LocalRows> one_progression(std::span<const Piece> pieces) {
  if (pieces.empty()) return std::nullopt;
  LocalRows rows = LocalRows::of(pieces.front());
  for (const Piece& next : pieces.subspan(1)) {
    if (next.local_stride != rows.stride || next.local != rows.local + rows.count * rows.stride) return std::nullopt;
    rows.count += next.pos.count;
  }
  return rows;
}

int64_t default_message_rows(const Problem& problem, int world_size, int64_t chunk_bytes, DType dtype) {
  const AttentionShape& s = problem.shape;
  const int64_t row_bytes = 2 * s.head_dim * dtype_bytes(dtype);  // one K and one V row
  if (chunk_bytes <= 0) {
    const ShardLayout layout(s.seq, world_size);
    const int64_t shard_kv_bytes = s.batch * layout.max_size() * s.kv_heads * row_bytes;
    chunk_bytes = std::max<int64_t>(shard_kv_bytes / 32, 64 * 1024);
  }
  const int64_t int_limit_rows = std::numeric_limits<int>::max() / (2 * s.head_dim);
  return std::clamp<int64_t>(chunk_bytes / row_bytes, 1, int_limit_rows);
}

HeadRun heads_with_offset(const Problem& problem, int64_t kv_head, int64_t offset, int64_t dilation) {
  const int64_t group = problem.group_size();
  const int64_t lo = kv_head * group, hi = lo + group;
  const int64_t first = lo + ((offset - lo) % dilation + dilation) % dilation;
  return HeadRun{first, first < hi ? (hi - 1 - first) / dilation + 1 : 0, dilation};
}

RingExecutor::Impl::Impl(const Problem& p, comm::Transport& t, Backend& b, ExecutorOptions o)
    : problem(p),
      transport(t),
      backend(b),
      options(std::move(o)),
      plan(p, ShardLayout(p.shape.seq, t.world_size(), options.layout),
           default_message_rows(p, t.world_size(), options.exchange_chunk_bytes, options.dtype)),
      pairs(p.pairs()),
      documents(p),
      band(Band::of(p.config)) {
  rank = t.world_rank();
  world = t.world_size();
  dtype = options.dtype;
  const AttentionShape& s = p.shape;
  const int64_t rows = plan.layout().size(rank);
  index = ShardIndex{rows, s.q_dims(rows), s.kv_dims(rows)};
  steps = plan.schedule(rank);
  for (const PlanStep& step : steps) {
    largest_recv_rows = std::max(largest_recv_rows, step.recv.rows);
    largest_send_rows = std::max(largest_send_rows, step.send.rows);
  }
  params.dtype = dtype;
  params.head_dim = s.head_dim;
  params.scale = p.scale();
  params.threads = options.threads;
  params.q_tile = options.q_tile;
  params.k_tile = options.k_tile;
  params.small_block_scores = options.small_block_scores;
  params.fused_small_block_scores = options.fused_small_block_scores;
  params.progress = kernels::ProgressHook{&Impl::hook, this};
}

void RingExecutor::Impl::hook(void* ctx, double fraction) { static_cast<Impl*>(ctx)->poll(fraction); }

void RingExecutor::Impl::poll(double fraction) {
  // Drive progress of whatever is in flight; a completed request stays completed.
  for (auto* request : {&pending_kv_recv, &pending_kv_send, &pending_grad_recv[0], &pending_grad_recv[1],
                        &pending_grad_send[0], &pending_grad_send[1]}) {
    if (*request) (*request)->test();
  }
  if (options.on_progress && ms_since(last_report) > 250.0) {
    last_report = Clock::now();
    options.on_progress(std::min(1.0, (done_scores + fraction * call_scores) / std::max(total_scores, 1.0)));
  }
}

void RingExecutor::Impl::start_progress(double total) {
  total_scores = total;
  done_scores = call_scores = 0.0;
  done_blocks = 0;
  last_report = Clock::now();
}

void RingExecutor::Impl::allocate_agreed(const std::function<void()>& allocate) {
  std::optional<Error> local;
  try {
    allocate();
  } catch (const Error& e) {
    local = e;
  } catch (const std::bad_alloc&) {
    local = Error(Status::kOutOfMemory, "out of memory allocating the " + std::string(pass_name) + "'s buffers");
  }
  if (world == 1) {
    if (local) throw *local;
    return;
  }
  const double failed = transport.allreduce_max(local ? static_cast<double>(rank) : -1.0);
  if (local) throw *local;
  DRING_CHECK(failed < 0.0, Status::kOutOfMemory,
              "world rank " << static_cast<int>(failed) << " could not allocate its " << pass_name
                            << " buffers, so no rank starts the pass");
}

void RingExecutor::Impl::ensure(Buffer<float>& buffer, int64_t floats, MemCategory category) {
  if (buffer.size() < floats) buffer = Buffer<float>(backend.allocator(), floats, category);
}

void RingExecutor::Impl::ensure(TensorBuffer& buffer, int64_t count, MemCategory category) {
  if (buffer.size() < count) buffer = TensorBuffer(backend.allocator(), count, dtype, category);
}

std::vector<RowRun> RingExecutor::Impl::message_runs(const Message& msg, const void* k, const void* v, void* k_out,
                                                     void* v_out, void* payload, bool into_payload, DType type,
                                                     int pair) const {
  const int64_t d = index.kv.head_dim;
  std::vector<RowRun> runs;
  runs.reserve(2 * msg.slabs.size());
  for (const KvSlab& slab : msg.slabs) {
    if (pair >= 0 && slab.pair != pair) continue;
    const int64_t at = index.kv_at(slab.batch, slab.key_local, slab.kv_head);
    const int64_t stride = slab.key_local_stride * index.kv.row_stride();
    void* k_rows = offset(payload, slab.message_row * d, type);
    void* v_rows = offset(payload, (msg.rows + slab.message_row) * d, type);
    if (into_payload) {
      runs.push_back({offset(k, at, type), stride, k_rows, d, slab.keys.count});
      runs.push_back({offset(v, at, type), stride, v_rows, d, slab.keys.count});
    } else {
      runs.push_back({k_rows, d, offset(k_out, at, type), stride, slab.keys.count});
      runs.push_back({v_rows, d, offset(v_out, at, type), stride, slab.keys.count});
    }
  }
  return runs;
}

void RingExecutor::Impl::post_kv(size_t i, const ShardInputs& in, PassStats& stats) {
  const PlanStep& step = steps[i];
  const int64_t d = index.kv.head_dim;
  transport.begin_step();
  if (!step.recv.empty()) {
    pending_kv_recv = transport.post_recv_raw(kv_recv[i % 2].data(), 2 * step.recv.rows * d, dtype,
                                              (rank - step.shift + world) % world, kv_tag(step.shift));
  }
  if (!step.send.empty()) {
    {
      const ComputeSection packing(stats);
      backend.copy_rows(message_runs(step.send, in.k, in.v, nullptr, nullptr, kv_send.data(), true, dtype), d, dtype);
    }
    pending_kv_send = transport.post_send_raw(kv_send.data(), 2 * step.send.rows * d, dtype,
                                              (rank + step.shift) % world, kv_tag(step.shift));
  }
  transport.end_step();
}

void RingExecutor::Impl::wait(std::unique_ptr<comm::Request>& request, PassStats& stats, const char* what,
                              size_t step) {
  if (!request) return;
  const auto t0 = Clock::now();
  try {
    request->wait();
  } catch (const Error& e) {
    if (e.status() != Status::kCommError || step >= steps.size()) throw;
    DRING_FAIL(Status::kCommError, pass_name << ", step " << step + 1 << " of " << steps.size() << " (" << what
                                             << ", ring shift " << steps[step].shift << "): " << e.what());
  }
  request.reset();
  stats.comm_wait_ms += ms_since(t0);
}

void RingExecutor::Impl::finish(PassStats& stats, Clock::time_point start, const comm::CommCounters& before) {
  {
    const ComputeSection draining(stats);
    backend.synchronize();
  }
  stats.comm_wait_ms += transport.take_device_wait_ms();
  stats.total_ms = ms_since(start);
  stats.sent_bytes = transport.counters().sent_bytes - before.sent_bytes;
  stats.recv_bytes = transport.counters().recv_bytes - before.recv_bytes;
  stats.steps = static_cast<int64_t>(steps.size());
  if (options.on_progress) options.on_progress(1.0);
}

RingExecutor::RingExecutor(const Problem& problem, comm::Transport& transport, Backend& backend,
                           ExecutorOptions options) {
  validate(problem);
  DRING_CHECK(options.threads >= 1, Status::kInvalidArgument, "threads must be at least 1");
  impl_ = std::make_unique<Impl>(problem, transport, backend, std::move(options));
}

RingExecutor::~RingExecutor() = default;

const ShardLayout& RingExecutor::layout() const { return impl_->plan.layout(); }
int RingExecutor::rank() const { return impl_->rank; }
int64_t RingExecutor::shard_rows() const { return impl_->index.rows; }
const ExchangePlan& RingExecutor::plan() const { return impl_->plan; }

PassStats RingExecutor::forward(const ShardInputs& in, const ShardOutputs& out) {
  Impl& m = *impl_;
  const AttentionShape& s = m.problem.shape;
  const int64_t d = s.head_dim;
  const ShardIndex& ix = m.index;
  const DType dt = m.dtype;
  PassStats stats;
  m.pass_name = "forward pass";
  const auto pass_start = Clock::now();
  const comm::CommCounters before = m.transport.counters();

  m.allocate_agreed([&] {
    for (auto& buffer : m.kv_recv) m.ensure(buffer, 2 * m.largest_recv_rows * d, MemCategory::kExchange);
    m.ensure(m.kv_send, 2 * m.largest_send_rows * d, MemCategory::kExchange);
  });

  // One block per query head: its query rows (and their out, lse) against keys given by the caller.
  auto query_block = [&](int64_t b, int64_t h, const LocalRows& rows, const BlockMask& mask) {
    kernels::AttendBlock blk;
    blk.q = offset(in.q, ix.q_at(b, rows.local, h), dt);
    blk.q_stride = rows.stride * s.heads * d;
    blk.out = offset(out.out, ix.q_at(b, rows.local, h), dt);
    blk.out_stride = blk.q_stride;
    blk.lse = out.lse + ix.lse_at(b, h, rows.local);
    blk.lse_stride = rows.stride;
    blk.n_q = rows.count;
    blk.mask = mask;
    return blk;
  };
  auto local_blocks = [&](int p, int round, int& rounds, auto&& visit) {
    const int64_t r = m.pairs[p].dilation;
    m.for_each_local_block(p, round, rounds,
                           [&](int64_t b, int64_t off, const LocalRows& q, const LocalRows& k, const BlockMask& mask) {
      for (int64_t h = off; h < s.heads; h += r) {
        kernels::AttendBlock blk = query_block(b, h, q, mask);
        const int64_t g = m.problem.kv_head_of(h);
        blk.k = offset(in.k, ix.kv_at(b, k.local, g), dt);
        blk.v = offset(in.v, ix.kv_at(b, k.local, g), dt);
        blk.kv_stride = k.stride * s.kv_heads * d;
        blk.n_k = k.count;
        visit(blk);
      }
    });
  };
  auto message_blocks = [&](const Message& msg, const void* payload, int p, int round, int& rounds, auto&& visit) {
    m.for_each_message_block(msg, p, round, rounds, [&](const KvSlab& slab, const LocalRows& q, const BlockMask& mask) {
      const HeadRun heads = heads_with_offset(m.problem, slab.kv_head, slab.offset, m.pairs[p].dilation);
      for (int64_t n = 0; n < heads.count; ++n) {
        kernels::AttendBlock blk = query_block(slab.batch, heads.first + n * heads.step, q, mask);
        blk.k = offset(payload, slab.message_row * d, dt);
        blk.v = offset(payload, (msg.rows + slab.message_row) * d, dt);
        blk.kv_stride = d;
        blk.n_k = slab.keys.count;
        visit(blk);
      }
    });
  };

  // Blocks of different pairs write the same rows, so pairs run one after another, and within a
  // pair the rounds (executor_impl.hpp); within a round every block owns its rows and the kernel
  // runs them in parallel.
  Impl::Batch<kernels::AttendBlock> batch(
      m, [&](std::span<const kernels::AttendBlock> blocks) { m.backend.attend(blocks, m.params); }, scores_of);
  auto collect = [&](const kernels::AttendBlock& blk) { batch.add(blk); };
  auto run_local = [&](auto&& visit, bool flush) {
    m.in_rounds([&](int p, int round, int& rounds) { local_blocks(p, round, rounds, visit); },
                [&] { if (flush) batch.flush(); });
  };
  auto run_message = [&](const Message& msg, const void* payload, auto&& visit, bool flush) {
    if (msg.empty()) return;
    m.in_rounds([&](int p, int round, int& rounds) { message_blocks(msg, payload, p, round, rounds, visit); },
                [&] { if (flush) batch.flush(); });
  };

  if (m.options.on_progress && m.pass_scores < 0.0) {
    m.pass_scores = 0.0;
    auto count = [&](const kernels::AttendBlock& b) { m.pass_scores += scores_of(b); };
    run_local(count, false);
    for (const PlanStep& step : m.steps) run_message(step.recv, nullptr, count, false);
  }
  m.start_progress(std::max(m.pass_scores, 0.0));

  // Every row starts at (out, lse) = (0, -inf); each block merges into it.
  {
    const ComputeSection filling(stats);
    m.backend.fill(out.out, ix.q.elements(), dt, 0.0f);
    m.backend.fill(out.lse, ix.q.state_elements(), DType::kF32, -std::numeric_limits<float>::infinity());
  }
  if (!m.steps.empty()) m.post_kv(0, in, stats);
  {
    const ComputeSection local(stats);
    run_local(collect, true);
  }

  for (size_t i = 0; i < m.steps.size(); ++i) {
    m.wait(m.pending_kv_recv, stats, "K/V rows", i);
    m.wait(m.pending_kv_send, stats, "K/V rows", i);  // the send buffer is refilled by the next step
    if (i + 1 < m.steps.size()) m.post_kv(i + 1, in, stats);
    const ComputeSection received(stats);
    run_message(m.steps[i].recv, m.kv_recv[i % 2].data(), collect, true);
  }
  m.finish(stats, pass_start, before);
  stats.flops = m.done_scores * 4.0 * static_cast<double>(d);
  stats.blocks = m.done_blocks;
  return stats;
}

}  // namespace dring
