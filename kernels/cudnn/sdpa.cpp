// sdpa.cpp — cuDNN's fused attention on DenseProblems (dring/kernels/cudnn.hpp).
//
// Host code only, compiled by the C++ compiler: the cudnn-frontend is header-only C++17 and its
// bundled nlohmann json is heavy, so it is included by this one translation unit and nowhere else.
// A problem becomes a graph of one SDPA node (forward) or one SDPA-backward node, with q, k, v
// (and out, dout) described by the problem's own strides, so cuDNN reads the shard and message
// rows in place; results go to packed workspace and are folded in by kernels/cuda/dense_merge.cu.
#include "dring/kernels/cudnn.hpp"

#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/kernels/cuda_dense.hpp"

namespace dring::kernels::cudnn {

namespace {

namespace fe = cudnn_frontend;

#define DRING_CUDNN_CHECK(call)                                                                   \
  do {                                                                                            \
    const cudnnStatus_t dring_cudnn_rc_ = (call);                                                 \
    DRING_CHECK(dring_cudnn_rc_ == CUDNN_STATUS_SUCCESS, Status::kDeviceError,                    \
                "cuDNN: " #call " failed: " << cudnnGetErrorString(dring_cudnn_rc_));             \
  } while (0)

// Tensor uids of the variant pack.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDout, kDq, kDk, kDv };

fe::DataType_t io_type(DType dtype) {
  switch (dtype) {
    case DType::kF16: return fe::DataType_t::HALF;
    case DType::kBF16: return fe::DataType_t::BFLOAT16;
    default: break;
  }
  DRING_FAIL(Status::kUnsupported, "cuDNN's fused attention takes fp16 or bf16, not " << dtype_name(dtype));
}

// [batch, heads, rows, head_dim] dims and strides of a problem tensor. The mapping leaves the
// stride of a dimension of extent 1 at 0; it never matters for addressing, but cuDNN orders
// dimensions by stride, so such a dimension gets one past everything inside it.
struct Layout {
  std::vector<int64_t> dim, stride;
};
Layout layout_of(const DenseTensor& t, int64_t batch, int64_t heads, int64_t rows, int64_t d) {
  const int64_t row = t.row_stride != 0 ? t.row_stride : d;
  const int64_t head = heads > 1 ? t.head_stride : std::max(row * rows, d);
  const int64_t batch_stride = batch > 1 ? t.batch_stride : std::max({head * heads, row * rows, d});
  return {{batch, heads, rows, d}, {batch_stride, head, row, 1}};
}
Layout packed(int64_t batch, int64_t heads, int64_t rows, int64_t d) {
  return {{batch, heads, rows, d}, {heads * rows * d, rows * d, d, 1}};
}

// TOP_LEFT diagonal band (dense_batches.hpp DenseMask). A left bound alone gets the no-op right
// bound s_kv: cuDNN before 9.10.2 takes a left bound only together with a right one.
template <class Attributes>
void apply_mask(Attributes& attributes, const DenseMask& mask, int64_t s_kv) {
  if (mask.none()) return;
  attributes.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT);
  attributes.set_diagonal_band_right_bound(static_cast<int>(mask.has_right ? mask.right : s_kv));
  if (mask.has_left) attributes.set_diagonal_band_left_bound(static_cast<int>(mask.left));
}

struct Built {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN has no engine for it
  int64_t workspace_bytes = 0;
};

struct KeyHash {
  size_t operator()(const std::vector<int64_t>& key) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : key) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};

std::vector<int64_t> shape_key(bool backward, const DenseProblem& p, const AttendParams& params) {
  float scale = static_cast<float>(params.scale);
  int32_t scale_bits = 0;
  std::memcpy(&scale_bits, &scale, sizeof(scale_bits));
  std::vector<int64_t> key = {backward, static_cast<int64_t>(params.dtype), params.head_dim, p.batch, p.heads_q,
                              p.heads_kv, p.s_q, p.s_kv, p.mask.has_right, p.mask.right, p.mask.has_left,
                              p.mask.left, scale_bits};
  std::vector<const DenseTensor*> tensors = {&p.q, &p.k, &p.v};
  if (backward) {
    tensors.push_back(&p.out);
    tensors.push_back(&p.dout);
  }
  for (const DenseTensor* t : tensors) key.insert(key.end(), {t->batch_stride, t->head_stride, t->row_stride});
  return key;
}

// Bytes rounded up so the next piece of workspace starts 256-byte aligned.
int64_t aligned(int64_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

int64_t library_version() { return static_cast<int64_t>(cudnnGetVersion()); }

struct Sdpa::Impl {
  cudaStream_t stream = nullptr;
  Allocator& device;
  cudnnHandle_t handle = nullptr;
  std::unordered_map<std::vector<int64_t>, Built, KeyHash> graphs;
  Buffer<std::byte> results;    // packed O and Stats, or dQ, dK, dV and Stats
  Buffer<std::byte> workspace;  // cuDNN's own

  Impl(cudaStream_t s, Allocator& d) : stream(s), device(d) {
    DRING_CUDNN_CHECK(cudnnCreate(&handle));
    DRING_CUDNN_CHECK(cudnnSetStream(handle, stream));
  }
  ~Impl() {
    if (handle != nullptr) cudnnDestroy(handle);
  }

  // Room for `bytes` in a buffer; the old one is freed in stream order (after the work queued on it).
  void ensure(Buffer<std::byte>& buffer, int64_t bytes) {
    if (buffer.size() < bytes) buffer = Buffer<std::byte>(device, bytes, MemCategory::kWorkspace);
  }

  const Built& build(bool backward, const DenseProblem& p, const AttendParams& params) {
    std::vector<int64_t> key = shape_key(backward, p, params);
    const auto found = graphs.find(key);
    if (found != graphs.end()) return found->second;
    Built built;
    auto graph = std::make_shared<fe::graph::Graph>();
    graph->set_io_data_type(io_type(params.dtype))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const int64_t d = params.head_dim;
    auto tensor = [&](const char* name, Uid uid, const Layout& l) {
      return graph->tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(l.dim).set_stride(l.stride));
    };
    auto q = tensor("q", kQ, layout_of(p.q, p.batch, p.heads_q, p.s_q, d));
    auto k = tensor("k", kK, layout_of(p.k, p.batch, p.heads_kv, p.s_kv, d));
    auto v = tensor("v", kV, layout_of(p.v, p.batch, p.heads_kv, p.s_kv, d));
    const Layout stats = packed(p.batch, p.heads_q, p.s_q, 1);
    const float scale = static_cast<float>(params.scale);
    if (!backward) {
      fe::graph::SDPA_attributes attributes;
      attributes.set_name("dring_sdpa").set_generate_stats(true).set_attn_scale(scale);
      apply_mask(attributes, p.mask, p.s_kv);
      auto [o, lse] = graph->sdpa(q, k, v, attributes);
      const Layout ol = packed(p.batch, p.heads_q, p.s_q, d);
      o->set_output(true).set_uid(kO).set_dim(ol.dim).set_stride(ol.stride);
      lse->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim(stats.dim).set_stride(stats.stride);
    } else {
      auto o = tensor("o", kO, layout_of(p.out, p.batch, p.heads_q, p.s_q, d));
      auto dout = tensor("dout", kDout, layout_of(p.dout, p.batch, p.heads_q, p.s_q, d));
      auto lse = graph->tensor(fe::graph::Tensor_attributes()
                                   .set_name("stats")
                                   .set_uid(kStats)
                                   .set_dim(stats.dim)
                                   .set_stride(stats.stride)
                                   .set_data_type(fe::DataType_t::FLOAT));
      fe::graph::SDPA_backward_attributes attributes;
      attributes.set_name("dring_sdpa_backward").set_attn_scale(scale);
      apply_mask(attributes, p.mask, p.s_kv);
      auto [dq, dk, dv] = graph->sdpa_backward(q, k, v, o, dout, lse, attributes);
      const Layout ql = packed(p.batch, p.heads_q, p.s_q, d), kl = packed(p.batch, p.heads_kv, p.s_kv, d);
      dq->set_output(true).set_uid(kDq).set_dim(ql.dim).set_stride(ql.stride);
      dk->set_output(true).set_uid(kDk).set_dim(kl.dim).set_stride(kl.stride);
      dv->set_output(true).set_uid(kDv).set_dim(kl.dim).set_stride(kl.stride);
    }
    // Any step may say "not supported" (an engine's limits on head_dim, sizes, masks, strides):
    // then the shape stays with dring's kernels, decided once.
    const bool ok = graph->validate().is_good() && graph->build_operation_graph(handle).is_good() &&
                    graph->create_execution_plans({fe::HeurMode_t::A}).is_good() &&
                    graph->check_support(handle).is_good() && graph->build_plans(handle).is_good() &&
                    graph->get_workspace_size(built.workspace_bytes).is_good();
    if (ok) built.graph = std::move(graph);
    return graphs.emplace(std::move(key), std::move(built)).first->second;
  }

  void execute(const Built& built, std::unordered_map<int64_t, void*>& pack, const char* what) {
    ensure(workspace, std::max<int64_t>(built.workspace_bytes, 1));
    fe::error_t rc = built.graph->execute(handle, pack, workspace.data());  // get_message() is not const
    DRING_CHECK(rc.is_good(), Status::kDeviceError, "cuDNN " << what << " failed: " << rc.get_message());
  }
};

Sdpa::Sdpa(cudaStream_t stream, Allocator& device) : impl_(std::make_unique<Impl>(stream, device)) {}
Sdpa::~Sdpa() = default;

int64_t Sdpa::cached_graphs() const { return static_cast<int64_t>(impl_->graphs.size()); }

bool Sdpa::forward(const DenseProblem& p, const AttendParams& params) {
  Impl& m = *impl_;
  const Built& built = m.build(false, p, params);
  if (!built.graph) return false;
  const int64_t rows = p.batch * p.heads_q * p.s_q;
  const int64_t o_bytes = aligned(rows * params.head_dim * dtype_bytes(params.dtype));
  m.ensure(m.results, o_bytes + rows * 4);
  void* o = m.results.data();
  float* lse = reinterpret_cast<float*>(m.results.data() + o_bytes);
  std::unordered_map<int64_t, void*> pack = {{kQ, p.q.base}, {kK, p.k.base}, {kV, p.v.base}, {kO, o}, {kStats, lse}};
  m.execute(built, pack, "SDPA forward");
  cuda::launch_dense_merge(p, params.head_dim, params.dtype, o, lse, m.stream);
  return true;
}

bool Sdpa::backward(const DenseProblem& p, const AttendParams& params) {
  Impl& m = *impl_;
  const Built& built = m.build(true, p, params);
  if (!built.graph) return false;
  const int64_t e = dtype_bytes(params.dtype), d = params.head_dim;
  const int64_t q_rows = p.batch * p.heads_q * p.s_q, k_rows = p.batch * p.heads_kv * p.s_kv;
  const int64_t dq_bytes = aligned(q_rows * d * e), dk_bytes = aligned(k_rows * d * e);
  m.ensure(m.results, dq_bytes + 2 * dk_bytes + q_rows * 4);
  std::byte* base = m.results.data();
  void* dq = base;
  void* dk = base + dq_bytes;
  void* dv = base + dq_bytes + dk_bytes;
  float* lse = reinterpret_cast<float*>(base + dq_bytes + 2 * dk_bytes);
  cuda::launch_dense_gather_lse(p, lse, m.stream);
  std::unordered_map<int64_t, void*> pack = {{kQ, p.q.base},  {kK, p.k.base},   {kV, p.v.base},
                                             {kO, p.out.base}, {kDout, p.dout.base}, {kStats, lse},
                                             {kDq, dq},        {kDk, dk},       {kDv, dv}};
  m.execute(built, pack, "SDPA backward");
  cuda::launch_dense_add(p.dq, p.batch, p.heads_q, p.s_q, d, params.dtype, dq, m.stream);
  cuda::launch_dense_add(p.dk, p.batch, p.heads_kv, p.s_kv, d, params.dtype, dk, m.stream);
  cuda::launch_dense_add(p.dv, p.batch, p.heads_kv, p.s_kv, d, params.dtype, dv, m.stream);
  return true;
}

}  // namespace dring::kernels::cudnn
