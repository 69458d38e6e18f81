// executor_backward.cpp — the backward pass of the ring executor (see executor.hpp).
//
// Step i moves K/V exactly as the forward pass does. The receiver computes, for the rows it got,
// dq of its own query rows and dk, dv of those key rows into a gradient message laid out like the
// K/V message, and sends it straight back to the rows' owner, which adds it into its dk, dv one
// step later (so the return trip overlaps the next step's compute). The gradient exchange of step
// i is a step of its own for the transport: every rank posts its gradient send (to t - s) and the
// receive of the gradients of what it sent (from t + s) together, after computing step i. Buffers:
// two K/V receives, one K/V send, two gradient sends, two gradient receives, each as large as the
// largest message.
#include <algorithm>
#include <span>

#include "dring/core/error.hpp"
#include "executor_impl.hpp"

namespace dring {

namespace {

double scores_of(const kernels::GradBlock& b) {
  return static_cast<double>(b.n_heads) * b.mask.visible_pairs(b.n_q, b.n_k);
}

}  // namespace

PassStats RingExecutor::backward(const GradInputs& in, const GradOutputs& out) {
  Impl& m = *impl_;
  const AttentionShape& s = m.problem.shape;
  const int64_t d = s.head_dim;
  const ShardIndex& ix = m.index;
  const DType dt = m.dtype;
  PassStats stats;
  m.pass_name = "backward pass";
  const auto pass_start = Clock::now();
  const comm::CommCounters before = m.transport.counters();
  const int64_t q_elems = ix.q.elements(), kv_elems = ix.kv.elements();

  // Gradients accumulate in fp32: in the outputs themselves for fp32, else in workspace.
  float* dq = static_cast<float*>(out.dq);
  float* dk = static_cast<float*>(out.dk);
  float* dv = static_cast<float*>(out.dv);
  m.allocate_agreed([&] {
    m.ensure(m.delta, ix.q.state_elements(), MemCategory::kWorkspace);
    for (auto& buffer : m.kv_recv) m.ensure(buffer, 2 * m.largest_recv_rows * d, MemCategory::kExchange);
    m.ensure(m.kv_send, 2 * m.largest_send_rows * d, MemCategory::kExchange);
    for (auto& buffer : m.grad_send) m.ensure(buffer, 2 * m.largest_recv_rows * d, MemCategory::kExchange);
    for (auto& buffer : m.grad_recv) m.ensure(buffer, 2 * m.largest_send_rows * d, MemCategory::kExchange);
    if (dt != DType::kF32) {
      m.ensure(m.dq_acc, q_elems, MemCategory::kWorkspace);
      m.ensure(m.dk_acc, kv_elems, MemCategory::kWorkspace);
      m.ensure(m.dv_acc, kv_elems, MemCategory::kWorkspace);
    }
  });
  if (dt != DType::kF32) {
    dq = m.dq_acc.data();
    dk = m.dk_acc.data();
    dv = m.dv_acc.data();
  }

  // One block per (kv head, offset) run of query heads, against keys given by the caller.
  auto query_block = [&](int64_t b, const HeadRun& heads, const LocalRows& rows, const BlockMask& mask) {
    kernels::GradBlock blk;
    const int64_t at = ix.q_at(b, rows.local, heads.first);
    blk.q = offset(in.forward.q, at, dt);
    blk.dout = offset(in.dout, at, dt);
    blk.out = offset(in.out, at, dt);
    blk.dq = dq + at;
    blk.q_stride = rows.stride * s.heads * d;
    blk.q_head_step = heads.step * d;
    const int64_t state = ix.lse_at(b, heads.first, rows.local);
    blk.lse = in.lse + state;
    blk.delta = m.delta.data() + state;
    blk.state_stride = rows.stride;
    blk.state_head_step = heads.step * ix.rows;
    blk.n_heads = heads.count;
    blk.n_q = rows.count;
    blk.mask = mask;
    return blk;
  };
  auto local_blocks = [&](int p, int round, int& rounds, auto&& visit) {
    const int64_t r = m.pairs[p].dilation;
    m.for_each_local_block(p, round, rounds,
                           [&](int64_t b, int64_t off, const LocalRows& q, const LocalRows& k, const BlockMask& mask) {
      for (int64_t g = 0; g < s.kv_heads; ++g) {
        const HeadRun heads = heads_with_offset(m.problem, g, off, r);
        if (heads.count == 0) continue;
        kernels::GradBlock blk = query_block(b, heads, q, mask);
        const int64_t at = ix.kv_at(b, k.local, g);
        blk.k = offset(in.forward.k, at, dt);
        blk.v = offset(in.forward.v, at, dt);
        blk.dk = dk + at;
        blk.dv = dv + at;
        blk.kv_stride = blk.dkv_stride = k.stride * s.kv_heads * d;
        blk.n_k = k.count;
        visit(blk);
      }
    });
  };
  auto message_blocks = [&](const Message& msg, const void* payload, float* grads, int p, int round, int& rounds,
                            auto&& visit) {
    m.for_each_message_block(msg, p, round, rounds, [&](const KvSlab& slab, const LocalRows& q, const BlockMask& mask) {
      const HeadRun heads = heads_with_offset(m.problem, slab.kv_head, slab.offset, m.pairs[p].dilation);
      kernels::GradBlock blk = query_block(slab.batch, heads, q, mask);
      blk.k = offset(payload, slab.message_row * d, dt);
      blk.v = offset(payload, (msg.rows + slab.message_row) * d, dt);
      blk.kv_stride = d;
      if (grads != nullptr) {
        blk.dk = grads + slab.message_row * d;
        blk.dv = grads + (msg.rows + slab.message_row) * d;
      }
      blk.dkv_stride = d;
      blk.n_k = slab.keys.count;
      visit(blk);
    });
  };

  Impl::Batch<kernels::GradBlock> batch(
      m, [&](std::span<const kernels::GradBlock> blocks) { m.backend.attend_backward(blocks, m.params); },
      scores_of);
  auto collect = [&](const kernels::GradBlock& blk) { batch.add(blk); };
  auto run_local = [&](auto&& visit, bool flush) {
    m.in_rounds([&](int p, int round, int& rounds) { local_blocks(p, round, rounds, visit); },
                [&] { if (flush) batch.flush(); });
  };
  auto run_message = [&](const Message& msg, const void* payload, float* grads, auto&& visit, bool flush) {
    if (msg.empty()) return;
    m.in_rounds([&](int p, int round, int& rounds) { message_blocks(msg, payload, grads, p, round, rounds, visit); },
                [&] { if (flush) batch.flush(); });
  };
  if (m.options.on_progress && m.pass_scores < 0.0) {
    m.pass_scores = 0.0;
    auto count = [&](const kernels::GradBlock& b) { m.pass_scores += scores_of(b); };
    run_local(count, false);
    for (const PlanStep& step : m.steps) run_message(step.recv, nullptr, nullptr, count, false);
  }
  m.start_progress(std::max(m.pass_scores, 0.0));

  // Posts the gradient exchange of step i: the gradients of the rows this rank received go back to
  // their owner, those of the rows it sent come back.
  auto post_gradients = [&](size_t i, const float* grads) {
    const PlanStep& step = m.steps[i];
    m.transport.begin_step();
    if (!step.send.empty()) {
      std::span<float> into(m.grad_recv[i % 2].data(), 2 * step.send.rows * d);
      m.pending_grad_recv[i % 2] =
          m.transport.post_recv(into, (m.rank + step.shift) % m.world, grad_tag(m.world, step.shift));
    }
    if (!step.recv.empty()) {
      std::span<const float> from(grads, 2 * step.recv.rows * d);
      m.pending_grad_send[i % 2] =
          m.transport.post_send(from, (m.rank - step.shift + m.world) % m.world, grad_tag(m.world, step.shift));
    }
    m.transport.end_step();
  };
  // Adds the returned gradients of step i into this rank's dk, dv.
  auto absorb = [&](size_t i) {
    m.wait(m.pending_grad_recv[i % 2], stats, "gradients", i);
    const Message& sent = m.steps[i].send;
    if (sent.empty()) return;
    const ComputeSection adding(stats);
    // A key row selected by two pairs comes back once per pair: add pair by pair, so the rows of
    // one call are distinct (and the sum's order is fixed).
    for (int p = 0; p < static_cast<int>(m.pairs.size()); ++p) {
      m.backend.add_rows(
          m.message_runs(sent, nullptr, nullptr, dk, dv, m.grad_recv[i % 2].data(), false, DType::kF32, p), d);
    }
  };

  {
    const ComputeSection filling(stats);
    m.backend.delta({dt, s.batch, ix.rows, s.heads, d, in.out, in.dout, m.delta.data()});
    m.backend.fill(dq, q_elems, DType::kF32, 0.0f);
    m.backend.fill(dk, kv_elems, DType::kF32, 0.0f);
    m.backend.fill(dv, kv_elems, DType::kF32, 0.0f);
  }
  if (!m.steps.empty()) m.post_kv(0, in.forward, stats);
  {
    const ComputeSection local(stats);
    run_local(collect, true);
  }

  for (size_t i = 0; i < m.steps.size(); ++i) {
    m.wait(m.pending_kv_recv, stats, "K/V rows", i);
    m.wait(m.pending_kv_send, stats, "K/V rows", i);
    if (i >= 1) absorb(i - 1);  // frees grad_recv[(i+1) % 2] for step i+1
    if (i + 1 < m.steps.size()) m.post_kv(i + 1, in.forward, stats);
    const PlanStep& step = m.steps[i];
    float* grads = m.grad_send[i % 2].data();
    if (!step.recv.empty()) {
      m.wait(m.pending_grad_send[i % 2], stats, "gradients", i - 2);  // step i-2's have left this buffer
      const ComputeSection received(stats);
      m.backend.fill(grads, 2 * step.recv.rows * d, DType::kF32, 0.0f);
      run_message(step.recv, m.kv_recv[i % 2].data(), grads, collect, true);
    }
    post_gradients(i, grads);
  }
  if (!m.steps.empty()) absorb(m.steps.size() - 1);
  for (size_t i = m.steps.size() < 2 ? 0 : m.steps.size() - 2; i < m.steps.size(); ++i) {
    m.wait(m.pending_grad_send[i % 2], stats, "gradients", i);
  }
  if (dt != DType::kF32) {
    const ComputeSection casting(stats);
    m.backend.cast(dq, out.dq, q_elems, dt);
    m.backend.cast(dk, out.dk, kv_elems, dt);
    m.backend.cast(dv, out.dv, kv_elems, dt);
  }
  m.finish(stats, pass_start, before);
  stats.flops = m.done_scores * 10.0 * static_cast<double>(d);
  stats.blocks = m.done_blocks;
  return stats;
}

}  // namespace dring
