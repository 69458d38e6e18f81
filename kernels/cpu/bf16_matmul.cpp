// bf16_matmul.cpp — bf16_gemm on cached oneDNN matmul primitives (bf16_matmul.hpp).
//
// Each thread keeps its own primitives, keyed by (m, n, k, transposes, alpha, beta), with their
// memory objects: a call looks its key up, points the memory objects at this call's buffers and
// executes. Creating a primitive costs 0.1-2 ms, executing a 128x256x64 one about 10 us, so a
// tile product must never create one; the cache holds kCacheEntries shapes a thread (the tile
// shapes and their tails), dropping the oldest past that. Primitives are created on the
// kernels' worker threads after sgemm_single_thread(), so each runs on its one thread.
#include "bf16_matmul.hpp"

#include "dring/config.h"
#include "dring/core/error.hpp"

#if DRING_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>

#include <cstring>
#include <deque>
#endif

namespace dring::kernels::cpu {

#if DRING_HAVE_DNNL

namespace {

constexpr size_t kCacheEntries = 64;

struct Key {
  int64_t m, n, k;
  bool trans_a, trans_b;
  float alpha, beta;
  bool operator==(const Key& o) const {
    return m == o.m && n == o.n && k == o.k && trans_a == o.trans_a && trans_b == o.trans_b &&
           std::memcmp(&alpha, &o.alpha, sizeof alpha) == 0 && std::memcmp(&beta, &o.beta, sizeof beta) == 0;
  }
};

struct Entry {
  Key key;
  dnnl::matmul primitive;
  dnnl::memory a, b, c;
};

// One CPU engine for the process. Never destroyed: worker threads' caches refer to it and may
// outlive static destruction.
const dnnl::engine& cpu_engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

Entry make_entry(const Key& key) {
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  const dnnl::memory::desc a_md({key.m, key.k}, dt::bf16, key.trans_a ? dims{1, key.m} : dims{key.k, 1});
  const dnnl::memory::desc b_md({key.k, key.n}, dt::bf16, key.trans_b ? dims{1, key.k} : dims{key.n, 1});
  const dnnl::memory::desc c_md({key.m, key.n}, dt::f32, dims{key.n, 1});
  dnnl::primitive_attr attr;
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(key.beta);
    attr.set_post_ops(ops);
  }
  const dnnl::engine& engine = cpu_engine();
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine);
  return Entry{key, dnnl::matmul(pd), dnnl::memory(a_md, engine, nullptr), dnnl::memory(b_md, engine, nullptr),
               dnnl::memory(c_md, engine, nullptr)};
}

struct ThreadState {
  dnnl::stream stream{cpu_engine()};
  std::deque<Entry> entries;  // newest first
};

Entry& lookup(ThreadState& state, const Key& key) {
  for (Entry& e : state.entries) {
    if (e.key == key) return e;
  }
  if (state.entries.size() >= kCacheEntries) state.entries.pop_back();
  state.entries.push_front(make_entry(key));
  return state.entries.front();
}

}  // namespace

bool bf16_matmul_available() {
  static const bool available = [] {
    const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
    const unsigned bf16 = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
    return (isa & bf16) == bf16;  // the ISA values nest: each includes the bits of those below it
  }();
  return available;
}

void bf16_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
               const uint16_t* b, float beta, float* c) {
  DRING_CHECK(bf16_matmul_available(), Status::kUnsupported, "bf16_gemm: this CPU has no native bf16 matmul");
  DRING_ASSERT(beta == 0.0f || beta == 1.0f);
  thread_local ThreadState state;
  try {
    Entry& e = lookup(state, Key{m, n, k, trans_a, trans_b, alpha, beta});
    e.a.set_data_handle(const_cast<uint16_t*>(a));
    e.b.set_data_handle(const_cast<uint16_t*>(b));
    e.c.set_data_handle(c);
    const dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, e.a.get()}, {DNNL_ARG_WEIGHTS, e.b.get()}, {DNNL_ARG_DST, e.c.get()}};
    const dnnl_status_t rc = dnnl_primitive_execute(e.primitive.get(), state.stream.get(), 3, args);
    DRING_CHECK(rc == dnnl_success, Status::kInternal,
                "oneDNN bf16 matmul failed (status " << static_cast<int>(rc) << ") for m=" << m << " n=" << n
                                                     << " k=" << k);
  } catch (const dnnl::error& err) {
    DRING_FAIL(Status::kInternal, "oneDNN bf16 matmul m=" << m << " n=" << n << " k=" << k << ": " << err.what());
  }
}

#else

bool bf16_matmul_available() { return false; }

void bf16_gemm(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t*, const uint16_t*, float, float*) {
  DRING_FAIL(Status::kUnsupported, "bf16_gemm: this build has no oneDNN");
}

#endif

}  // namespace dring::kernels::cpu
