// oneDNN 2.6: dnnl_sgemm (default) or the matmul primitive (-DUSE_MATMUL), cached per shape.
#include <dnnl.hpp>
#include <omp.h>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>
#include "engine.h"

using namespace dnnl;
static engine& eng() { static engine e(engine::kind::cpu, 0); return e; }

struct MM {
  matmul prim;
  memory a, b, c;
  std::unordered_map<int, memory> args;
};
using Key = std::tuple<bool, bool, int, int, int, int, int, int, float, float, int, long, long, long>;

static MM& get_mm(bool ta, bool tb, int M, int N, int K, int lda, int ldb, int ldc, float alpha, float beta, int n,
                  long sA, long sB, long sC) {
  static thread_local std::map<Key, std::unique_ptr<MM>> cache;
  Key key{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, n, sA, sB, sC};
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  using dt = memory::data_type;
  memory::dims ad, as, bd, bs, cd, cs;
  if (n > 1) {
    ad = {n, M, K}; as = {sA, ta ? 1 : (long)lda, ta ? (long)lda : 1};
    bd = {n, K, N}; bs = {sB, tb ? 1 : (long)ldb, tb ? (long)ldb : 1};
    cd = {n, M, N}; cs = {sC, (long)ldc, 1};
  } else {
    ad = {M, K}; as = {ta ? 1 : (long)lda, ta ? (long)lda : 1};
    bd = {K, N}; bs = {tb ? 1 : (long)ldb, tb ? (long)ldb : 1};
    cd = {M, N}; cs = {(long)ldc, 1};
  }
  memory::desc amd(ad, dt::f32, as), bmd(bd, dt::f32, bs), cmd(cd, dt::f32, cs);
  primitive_attr attr;
  if (alpha != 1.f) attr.set_output_scales(0, {alpha});
  if (beta != 0.f) { post_ops po; po.append_sum(beta); attr.set_post_ops(po); }
  matmul::primitive_desc pd(matmul::desc(amd, bmd, cmd), attr, eng());
  auto mm = std::make_unique<MM>();
  mm->prim = matmul(pd);
  mm->a = memory(amd, eng(), nullptr);
  mm->b = memory(bmd, eng(), nullptr);
  mm->c = memory(cmd, eng(), nullptr);
  mm->args = {{DNNL_ARG_SRC, mm->a}, {DNNL_ARG_WEIGHTS, mm->b}, {DNNL_ARG_DST, mm->c}};
  static bool said = false;
  if (!said) { said = true; fprintf(stderr, "dnnl matmul impl: %s\n", pd.impl_info_str()); }
  auto& r = *mm;
  cache.emplace(key, std::move(mm));
  return r;
}
static void run_mm(MM& mm, const float* A, const float* B, float* C) {
  static thread_local stream s(eng());
  mm.a.set_data_handle(const_cast<float*>(A));
  mm.b.set_data_handle(const_cast<float*>(B));
  mm.c.set_data_handle(C);
  mm.prim.execute(s, mm.args);
}

#ifdef USE_MATMUL
const char* eng_name() { return "onednn_matmul"; }
void eng_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc) {
  run_mm(get_mm(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, 1, 0, 0, 0), A, B, C);
}
#else
const char* eng_name() { return "onednn_sgemm"; }
void eng_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc) {
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif
std::string eng_info() {
  auto isa = get_effective_cpu_isa();
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         " cpu_runtime=" + std::to_string(v->cpu_runtime) + " effective_isa=" + std::to_string((int)isa);
}
void eng_init(int t) { omp_set_num_threads(t); }
void eng_set_threads(int t) { if (!omp_in_parallel()) omp_set_num_threads(t); }
std::vector<BatchFn> eng_batch_variants() {
  return {{"matmul_batched", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                                const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
             run_mm(get_mm(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, n, sA, sB, sC), A, B, C);
           }},
          {"matmul_loop", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                             const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
             MM& mm = get_mm(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, 1, 0, 0, 0);
             for (int i = 0; i < n; ++i) run_mm(mm, A + i * sA, B + i * sB, C + i * sC);
           }}};
}
