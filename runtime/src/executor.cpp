// executor.cpp — the ring executor (see executor.hpp for the shape of a pass).
#include "dring/executor.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <span>

#include "dring/error.hpp"
#include "dring/kernels/cpu.hpp"

namespace dring {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Blocks go to the kernel in batches of this many, so a pair with millions of tiny segments
// never materialises millions of block descriptors at once.
constexpr size_t kBlockBatch = 8192;

double block_scores(const kernels::AttendBlock& b) {
  const double nq = static_cast<double>(b.n_q), nk = static_cast<double>(b.n_k);
  return b.causal ? nq * (nq + 1) / 2 : nq * nk;
}

}  // namespace

int64_t default_message_rows(const Problem& problem, int world_size, int64_t chunk_bytes) {
  const AttentionShape& s = problem.shape;
  const int64_t row_bytes = 2 * s.head_dim * static_cast<int64_t>(sizeof(float));  // one K and one V row
  if (chunk_bytes <= 0) {
    const ShardLayout layout(s.seq, world_size);
    const int64_t shard_kv_bytes = s.batch * layout.max_size() * s.kv_heads * row_bytes;
    chunk_bytes = std::max<int64_t>(shard_kv_bytes / 16, 64 * 1024);
  }
  const int64_t int_limit_rows = std::numeric_limits<int>::max() / (2 * s.head_dim);
  return std::clamp<int64_t>(chunk_bytes / row_bytes, 1, int_limit_rows);
}

struct RingExecutor::Impl {
  ExecutorOptions options;
  int rank = 0;
  int64_t begin = 0;
  int64_t rows = 0;
  std::vector<PlanStep> steps;
  std::vector<PairGeometry> geometry;
  HostBuffer<float> recv_buffer[2];
  HostBuffer<float> send_buffer;
  HostBuffer<float> row_max;
  HostBuffer<float> row_sum;
  HostBuffer<float> workspace;
  kernels::AttendParams params;

  // Progress bookkeeping: scores of the whole pass, scores of finished kernel calls, the weight of
  // the call in progress, and the requests the hook drives.
  double total_scores = 0.0;
  double done_scores = 0.0;
  double call_scores = 0.0;
  Clock::time_point last_report;
  std::unique_ptr<comm::Request> pending_recv;
  std::unique_ptr<comm::Request> pending_send;

  static void hook(void* ctx, double fraction) { static_cast<Impl*>(ctx)->poll(fraction); }
  void poll(double fraction) {
    // Drive MPI progress for the message in flight; a completed request stays completed.
    if (pending_recv) pending_recv->test();
    if (pending_send) pending_send->test();
    if (options.on_progress && ms_since(last_report) > 250.0) {
      last_report = Clock::now();
      options.on_progress(std::min(1.0, (done_scores + fraction * call_scores) / std::max(total_scores, 1.0)));
    }
  }
};

RingExecutor::RingExecutor(const Problem& problem, comm::Transport& transport, MemoryTracker& tracker,
                           ExecutorOptions options)
    : problem_(problem),
      transport_(transport),
      plan_(problem, transport.world_size(),
            default_message_rows(problem, transport.world_size(), options.exchange_chunk_bytes)),
      impl_(std::make_unique<Impl>()) {
  validate(problem);
  DRING_CHECK(options.threads >= 1, Status::kInvalidArgument, "threads must be at least 1");
  Impl& m = *impl_;
  const AttentionShape& s = problem.shape;
  m.options = std::move(options);
  m.rank = transport.world_rank();
  m.begin = plan_.layout().begin(m.rank);
  m.rows = plan_.layout().size(m.rank);
  m.steps = plan_.schedule(m.rank);
  for (const DilatedPair& pair : problem.pairs()) m.geometry.emplace_back(pair, s.seq);

  int64_t largest_recv = 0, largest_send = 0;
  for (const PlanStep& step : m.steps) {
    largest_recv = std::max(largest_recv, step.recv.rows);
    largest_send = std::max(largest_send, step.send.rows);
  }
  for (auto& buffer : m.recv_buffer) buffer = HostBuffer<float>(tracker, 2 * largest_recv * s.head_dim, MemCategory::kExchange);
  m.send_buffer = HostBuffer<float>(tracker, 2 * largest_send * s.head_dim, MemCategory::kExchange);
  const int64_t state_rows = s.batch * m.rows * s.heads;
  m.row_max = HostBuffer<float>(tracker, state_rows, MemCategory::kWorkspace);
  m.row_sum = HostBuffer<float>(tracker, state_rows, MemCategory::kWorkspace);

  m.params.head_dim = s.head_dim;
  m.params.scale = problem.scale();
  m.params.threads = m.options.threads;
  m.params.q_tile = m.options.q_tile;
  m.params.k_tile = m.options.k_tile;
  m.params.small_block_scores = m.options.small_block_scores;
  m.params.progress = kernels::ProgressHook{&Impl::hook, impl_.get()};
  m.workspace = HostBuffer<float>(
      tracker, kernels::cpu::workspace_floats_per_thread(m.params) * m.params.threads, MemCategory::kWorkspace);
}

RingExecutor::~RingExecutor() = default;

int64_t RingExecutor::shard_begin() const { return impl_->begin; }
int64_t RingExecutor::shard_rows() const { return impl_->rows; }

PassStats RingExecutor::forward(const ShardInputs& in, const ShardOutputs& out) {
  Impl& m = *impl_;
  const AttentionShape& s = problem_.shape;
  const int64_t d = s.head_dim;
  const int64_t H = s.heads, Hkv = s.kv_heads;
  const bool causal = problem_.config.causal;
  PassStats stats;
  const auto pass_start = Clock::now();
  const comm::CommCounters counters_before = transport_.counters();

  // Row offsets in this rank's shard tensors.
  auto q_at = [&](int64_t b, int64_t pos, int64_t h) { return ((b * m.rows + pos - m.begin) * H + h) * d; };
  auto kv_at = [&](int64_t b, int64_t pos, int64_t g) { return ((b * m.rows + pos - m.begin) * Hkv + g) * d; };
  auto state_at = [&](int64_t b, int64_t pos, int64_t h) { return (b * m.rows + pos - m.begin) * H + h; };
  auto query_block = [&](int64_t b, int64_t h, const StridedRange& rows) {
    kernels::AttendBlock blk;
    blk.q = in.q + q_at(b, rows.first, h);
    blk.q_stride = rows.stride * H * d;
    blk.acc = out.out + q_at(b, rows.first, h);
    blk.acc_stride = blk.q_stride;
    blk.row_max = m.row_max.data() + state_at(b, rows.first, h);
    blk.row_sum = m.row_sum.data() + state_at(b, rows.first, h);
    blk.state_stride = rows.stride * H;
    blk.n_q = rows.count;
    return blk;
  };

  // Local blocks of one pair: every segment piece this rank holds, every head. `visit` gets each.
  auto for_each_local_block = [&](int p, auto&& visit) {
    const PairGeometry& geom = m.geometry[p];
    const int64_t end = m.begin + m.rows;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t seg = geom.segment_of(m.begin); seg <= geom.segment_of(end - 1); ++seg) {
        for (int64_t h = 0; h < H; ++h) {
          const StridedRange rows = geom.selected(seg, geom.offset_of_head(h), m.begin, end);
          if (rows.count == 0) continue;
          kernels::AttendBlock blk = query_block(b, h, rows);
          const int64_t g = problem_.kv_head_of(h);
          blk.k = in.k + kv_at(b, rows.first, g);
          blk.v = in.v + kv_at(b, rows.first, g);
          blk.k_stride = blk.v_stride = rows.stride * Hkv * d;
          blk.n_k = rows.count;
          blk.causal = causal;
          visit(blk);
        }
      }
    }
  };
  // Blocks of one pair from a received message: each slab against each q head that reads it.
  auto for_each_message_block = [&](const Message& msg, const float* payload, int p, auto&& visit) {
    const int64_t group = problem_.group_size();
    for (const KvSlab& slab : msg.slabs) {
      if (slab.pair != p) continue;
      for (int64_t h = slab.kv_head * group; h < (slab.kv_head + 1) * group; ++h) {
        if (m.geometry[p].offset_of_head(h) != slab.offset) continue;
        kernels::AttendBlock blk = query_block(slab.batch, h, slab.queries);
        blk.k = payload + slab.message_row * d;
        blk.v = payload + (msg.rows + slab.message_row) * d;
        blk.k_stride = blk.v_stride = d;
        blk.n_k = slab.keys.count;
        blk.causal = false;  // keys of another rank are all before (causal) or all visible
        visit(blk);
      }
    }
  };

  // Blocks of different pairs write the same rows, so pairs run one after another; within a pair
  // every block owns its rows and the kernel runs them in parallel.
  std::vector<kernels::AttendBlock> batch;
  auto flush = [&]() {
    if (batch.empty()) return;
    m.call_scores = 0.0;
    for (const auto& blk : batch) m.call_scores += block_scores(blk);
    kernels::cpu::attend(batch, m.params, m.workspace.data());
    m.done_scores += m.call_scores;
    m.call_scores = 0.0;
    batch.clear();
  };
  auto collect = [&](const kernels::AttendBlock& blk) {
    batch.push_back(blk);
    if (batch.size() >= kBlockBatch) flush();
  };
  const int pairs = static_cast<int>(m.geometry.size());

  // Total work, for progress reports only.
  m.total_scores = m.done_scores = 0.0;
  m.last_report = Clock::now();
  if (m.options.on_progress) {
    for (int p = 0; p < pairs; ++p) for_each_local_block(p, [&](const kernels::AttendBlock& b) { m.total_scores += block_scores(b); });
    for (const PlanStep& step : m.steps) {
      for (int p = 0; p < pairs; ++p) {
        for_each_message_block(step.recv, nullptr, p, [&](const kernels::AttendBlock& b) { m.total_scores += block_scores(b); });
      }
    }
  }

  // Posts step i: the receive into buffer i%2 and the packed send.
  auto start_step = [&](size_t i) {
    const PlanStep& step = m.steps[i];
    const int world = transport_.world_size();
    if (!step.recv.empty()) {
      std::span<float> into(m.recv_buffer[i % 2].data(), 2 * step.recv.rows * d);
      m.pending_recv = transport_.post_recv(into, (m.rank - step.shift + world) % world, step.shift);
    }
    if (!step.send.empty()) {
      const auto t0 = Clock::now();
      float* payload = m.send_buffer.data();
      for (const KvSlab& slab : step.send.slabs) {
        for (int64_t n = 0; n < slab.keys.count; ++n) {
          const int64_t at = kv_at(slab.batch, slab.keys.first + n * slab.keys.stride, slab.kv_head);
          std::memcpy(payload + (slab.message_row + n) * d, in.k + at, d * sizeof(float));
          std::memcpy(payload + (step.send.rows + slab.message_row + n) * d, in.v + at, d * sizeof(float));
        }
      }
      stats.compute_ms += ms_since(t0);
      std::span<const float> from(payload, 2 * step.send.rows * d);
      m.pending_send = transport_.post_send(from, (m.rank + step.shift) % world, step.shift);
    }
  };
  auto wait_for = [&](std::unique_ptr<comm::Request>& request) {
    if (!request) return;
    const auto t0 = Clock::now();
    request->wait();
    request.reset();
    stats.comm_wait_ms += ms_since(t0);
  };

  auto t0 = Clock::now();
  kernels::cpu::init_state({out.out, m.row_max.data(), m.row_sum.data()}, s.batch * m.rows, H, d, m.params.threads);
  stats.compute_ms += ms_since(t0);
  if (!m.steps.empty()) start_step(0);
  t0 = Clock::now();
  for (int p = 0; p < pairs; ++p) {
    for_each_local_block(p, collect);
    flush();
  }
  stats.compute_ms += ms_since(t0);

  for (size_t i = 0; i < m.steps.size(); ++i) {
    wait_for(m.pending_recv);
    wait_for(m.pending_send);  // the send buffer is refilled by the next step
    if (i + 1 < m.steps.size()) start_step(i + 1);
    // start_step put step i+1's requests in pending_*; the hook keeps driving them.
    t0 = Clock::now();
    const Message& msg = m.steps[i].recv;
    if (!msg.empty()) {
      for (int p = 0; p < pairs; ++p) {
        for_each_message_block(msg, m.recv_buffer[i % 2].data(), p, collect);
        flush();
      }
    }
    stats.compute_ms += ms_since(t0);
  }
  wait_for(m.pending_recv);
  wait_for(m.pending_send);

  t0 = Clock::now();
  kernels::cpu::finalize({s.batch, m.rows, H, d, out.out, m.row_max.data(), m.row_sum.data(), out.lse}, m.params.threads);
  stats.compute_ms += ms_since(t0);

  stats.total_ms = ms_since(pass_start);
  stats.sent_bytes = transport_.counters().sent_bytes - counters_before.sent_bytes;
  stats.recv_bytes = transport_.counters().recv_bytes - counters_before.recv_bytes;
  stats.steps = static_cast<int64_t>(m.steps.size());
  if (m.options.on_progress) m.options.on_progress(1.0);
  return stats;
}

}  // namespace dring
