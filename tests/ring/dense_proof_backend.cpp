// dense_proof_backend.cpp — see dense_proof_backend.hpp.
#include "dense_proof_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"
#include "dring/kernels/dense_batches.hpp"

namespace dring::ring_test {

namespace {

using kernels::DenseProblem;
using kernels::DenseTensor;
using kernels::dense_offset;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One element of a storage-dtype tensor (fp32 or bf16 on the CPU) as a float, and back.
float load(const void* base, int64_t at, DType dtype) {
  if (dtype == DType::kF32) return static_cast<const float*>(base)[at];
  float x = 0.0f;
  kernels::cpu::bf16_to_f32(static_cast<const uint16_t*>(base) + at, &x, 1);
  return x;
}
void store(void* base, int64_t at, DType dtype, float x) {
  if (dtype == DType::kF32) {
    static_cast<float*>(base)[at] = x;
  } else {
    kernels::cpu::f32_to_bf16(&x, static_cast<uint16_t*>(base) + at, 1);
  }
}
// x rounded to the storage dtype (what a fused kernel's fp16/bf16 output holds).
float rounded(float x, DType dtype) {
  float y = x;
  if (dtype != DType::kF32) {
    uint16_t h = 0;
    kernels::cpu::f32_to_bf16(&x, &h, 1);
    kernels::cpu::bf16_to_f32(&h, &y, 1);
  }
  return y;
}

// Element (b, h, i, c) of a problem tensor, in elements from its base.
int64_t at(const DenseTensor& t, int64_t b, int64_t h, int64_t i, int64_t c = 0) {
  return dense_offset(t, b, h) + i * t.row_stride + c;
}

class DenseProofBackend final : public Backend {
 public:
  DenseProofBackend(std::unique_ptr<Backend> cpu, bool fault) : cpu_(std::move(cpu)), fault_(fault) {}

  std::string name() const override { return "dense-proof"; }
  Allocator& allocator() override { return cpu_->allocator(); }
  bool supports(DType dtype) const override { return cpu_->supports(dtype); }
  void upload(const float* host, void* dst, int64_t count, DType dtype) override {
    cpu_->upload(host, dst, count, dtype);
  }
  void download(const void* src, DType dtype, float* host, int64_t count) override {
    cpu_->download(src, dtype, host, count);
  }
  void fill(void* dst, int64_t count, DType dtype, float value) override { cpu_->fill(dst, count, dtype, value); }
  void cast(const float* src, void* dst, int64_t count, DType dtype) override { cpu_->cast(src, dst, count, dtype); }
  void copy_rows(std::span<const RowRun> runs, int64_t head_dim, DType dtype) override {
    cpu_->copy_rows(runs, head_dim, dtype);
  }
  void add_rows(std::span<const RowRun> runs, int64_t head_dim) override { cpu_->add_rows(runs, head_dim); }
  void delta(const kernels::DeltaParams& params) override { cpu_->delta(params); }
  void synchronize() override { cpu_->synchronize(); }

  void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) override {
    const kernels::DenseForwardPlan plan =
        kernels::plan_dense(blocks, kernels::DenseRule::everything(params.dtype, params.head_dim));
    for (const DenseProblem& p : plan.problems) forward(faulty(p), params);
    stats_.leftover_blocks += static_cast<int64_t>(plan.leftovers.size());
    if (!plan.leftovers.empty()) cpu_->attend(plan.leftovers, params);
  }
  void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) override {
    const kernels::DenseBackwardPlan plan =
        kernels::plan_dense(blocks, kernels::DenseRule::everything(params.dtype, params.head_dim));
    for (const DenseProblem& p : plan.problems) backward(faulty(p), params);
    stats_.leftover_blocks += static_cast<int64_t>(plan.leftovers.size());
    if (!plan.leftovers.empty()) cpu_->attend_backward(plan.leftovers, params);
  }

  DenseProofStats& stats() { return stats_; }

 private:
  // One row short, not one row long: a longer stride would read the last batch's keys past the
  // end of k (AddressSanitizer reported it); a shorter one reads wrong rows inside it.
  DenseProblem faulty(DenseProblem p) const {
    if (fault_ && p.batch > 1) p.k.batch_stride -= p.k.row_stride;
    return p;
  }
  void count(const DenseProblem& p) {
    ++stats_.problems;
    stats_.problem_blocks += p.batch * p.heads_q;
  }

  // cuDNN's forward: a fresh (o, lse) per (b, h) into packed temporaries, then the merge.
  void forward(const DenseProblem& p, const kernels::AttendParams& params) {
    count(p);
    const DType dt = params.dtype;
    const int64_t d = params.head_dim, group = p.heads_q / p.heads_kv, rows = p.batch * p.heads_q * p.s_q;
    std::vector<std::byte> o(static_cast<size_t>(rows * d * dtype_bytes(dt)));  // zero bits: 0.0
    std::vector<float> lse(static_cast<size_t>(rows), kNegInf);
    std::vector<kernels::AttendBlock> blocks;
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads_q; ++h) {
        const int64_t packed = (b * p.heads_q + h) * p.s_q;
        kernels::AttendBlock blk;
        blk.q = offset(p.q.base, dense_offset(p.q, b, h), dt);
        blk.q_stride = p.q.row_stride;
        blk.k = offset(p.k.base, dense_offset(p.k, b, h / group), dt);
        blk.v = offset(p.v.base, dense_offset(p.v, b, h / group), dt);
        DRING_ASSERT(p.k.row_stride == p.v.row_stride);
        blk.kv_stride = p.k.row_stride;
        blk.out = offset(o.data(), packed * d, dt);
        blk.out_stride = d;
        blk.lse = lse.data() + packed;
        blk.lse_stride = 1;
        blk.n_q = p.s_q;
        blk.n_k = p.s_kv;
        blk.mask = p.mask.block_mask();
        blocks.push_back(blk);
      }
    }
    cpu_->attend(blocks, params);
    // The merge kernel: out' = (e^lse out + e^lse_blk o) / e^lse', in fp32, stored in the dtype.
    float* run_lse = static_cast<float*>(p.lse.base);
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads_q; ++h) {
        for (int64_t i = 0; i < p.s_q; ++i) {
          const int64_t packed = (b * p.heads_q + h) * p.s_q + i;
          const float l_blk = lse[packed];
          if (l_blk == kNegInf) continue;
          float& l_run = run_lse[at(p.lse, b, h, i)];
          const float top = std::max(l_run, l_blk);
          const float l_new = top + std::log(std::exp(l_run - top) + std::exp(l_blk - top));
          const float w_run = std::exp(l_run - l_new), w_blk = std::exp(l_blk - l_new);
          for (int64_t c = 0; c < d; ++c) {
            const int64_t to = at(p.out, b, h, i, c);
            store(p.out.base, to, dt, w_run * load(p.out.base, to, dt) + w_blk * load(o.data(), packed * d + c, dt));
          }
          l_run = l_new;
        }
      }
    }
  }

  // cuDNN's backward: q, dout and lse of the problem (cuDNN takes them strided; the CPU kernel's
  // block has one stride for q, dout and dq, so they are copied bit for bit into packed rows),
  // delta = rowsum(dout * out) from the problem's out, block gradients into packed temporaries,
  // rounded to the storage dtype, then added into dq, dk, dv.
  void backward(const DenseProblem& p, const kernels::AttendParams& params) {
    count(p);
    const DType dt = params.dtype;
    const int64_t e = dtype_bytes(dt), d = params.head_dim, group = p.heads_q / p.heads_kv;
    const int64_t q_rows = p.batch * p.heads_q * p.s_q, k_rows = p.batch * p.heads_kv * p.s_kv;
    std::vector<std::byte> q(static_cast<size_t>(q_rows * d * e)), dout(q.size());
    std::vector<float> lse(static_cast<size_t>(q_rows)), delta(lse.size());
    std::vector<float> dq(static_cast<size_t>(q_rows * d)), dk(static_cast<size_t>(k_rows * d)), dv(dk.size());
    const float* saved_lse = static_cast<const float*>(p.lse.base);
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads_q; ++h) {
        for (int64_t i = 0; i < p.s_q; ++i) {
          const int64_t packed = (b * p.heads_q + h) * p.s_q + i;
          std::memcpy(q.data() + packed * d * e, offset(p.q.base, at(p.q, b, h, i), dt), static_cast<size_t>(d * e));
          std::memcpy(dout.data() + packed * d * e, offset(p.dout.base, at(p.dout, b, h, i), dt),
                      static_cast<size_t>(d * e));
          lse[packed] = saved_lse[at(p.lse, b, h, i)];
          float sum = 0.0f;
          for (int64_t c = 0; c < d; ++c) sum += load(p.out.base, at(p.out, b, h, i, c), dt) * load(dout.data(), packed * d + c, dt);
          delta[packed] = sum;
        }
      }
    }
    // Query heads n, n + group, ... share no kv head: one kernel call per n.
    for (int64_t n = 0; n < group; ++n) {
      std::vector<kernels::GradBlock> blocks;
      for (int64_t b = 0; b < p.batch; ++b) {
        for (int64_t g = 0; g < p.heads_kv; ++g) {
          const int64_t packed = (b * p.heads_q + g * group + n) * p.s_q, packed_k = (b * p.heads_kv + g) * p.s_kv;
          kernels::GradBlock blk;
          blk.q = q.data() + packed * d * e;
          blk.dout = dout.data() + packed * d * e;
          blk.dq = dq.data() + packed * d;
          blk.q_stride = d;
          blk.lse = lse.data() + packed;
          blk.delta = delta.data() + packed;
          blk.state_stride = 1;
          blk.n_q = p.s_q;
          blk.k = offset(p.k.base, dense_offset(p.k, b, g), dt);
          blk.v = offset(p.v.base, dense_offset(p.v, b, g), dt);
          DRING_ASSERT(p.k.row_stride == p.v.row_stride);
          blk.kv_stride = p.k.row_stride;
          blk.dk = dk.data() + packed_k * d;
          blk.dv = dv.data() + packed_k * d;
          blk.dkv_stride = d;
          blk.n_k = p.s_kv;
          blk.mask = p.mask.block_mask();
          blocks.push_back(blk);
        }
      }
      cpu_->attend_backward(blocks, params);
    }
    auto add = [&](const DenseTensor& t, const std::vector<float>& grads, int64_t heads, int64_t rows) {
      float* acc = static_cast<float*>(t.base);
      for (int64_t b = 0; b < p.batch; ++b) {
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < rows; ++i) {
            const int64_t packed = ((b * heads + h) * rows + i) * d;
            for (int64_t c = 0; c < d; ++c) acc[at(t, b, h, i, c)] += rounded(grads[packed + c], dt);
          }
        }
      }
    };
    add(p.dq, dq, p.heads_q, p.s_q);
    add(p.dk, dk, p.heads_kv, p.s_kv);
    add(p.dv, dv, p.heads_kv, p.s_kv);
  }

  std::unique_ptr<Backend> cpu_;
  bool fault_;
  DenseProofStats stats_;
};

}  // namespace

std::unique_ptr<Backend> make_dense_proof_backend(std::unique_ptr<Backend> cpu, bool fault) {
  return std::make_unique<DenseProofBackend>(std::move(cpu), fault);
}

DenseProofStats& dense_proof_stats(Backend& backend) {
  auto* proof = dynamic_cast<DenseProofBackend*>(&backend);
  DRING_CHECK(proof != nullptr, Status::kInvalidArgument, "backend '" << backend.name() << "' is not the dense proof");
  return proof->stats();
}

}  // namespace dring::ring_test
