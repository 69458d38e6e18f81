// baseline.cu — standard attention with the scores materialised: cuBLAS strided-batched GEMMs and
// a row softmax kernel. The benchmarks' baseline and a second oracle for small sizes.
//
// Thread mapping of the softmax kernel: one CTA of 256 threads per score row; threads stride over
// the row's keys, and block reductions (warp shuffles, then one value per warp in shared memory)
// give the row's max and sum.

#include "common.cuh"
#include "dring/kernels/cuda.hpp"

namespace dring::kernels::cuda {

namespace {

constexpr int kSoftmaxThreads = 256;

template <bool kMax>
__device__ float block_reduce(float x, float* scratch) {
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  x = kMax ? warp_max(x) : warp_sum(x);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const float neutral = kMax ? kNegInf : 0.0f;
  x = lane < kSoftmaxThreads / 32 ? scratch[lane] : neutral;
  return kMax ? warp_max(x) : warp_sum(x);
}

// Row r = (head n, query i) of `scores` [heads][seq][seq] (fp32, already scaled): P = softmax(row)
// in T into `probs` (may alias `scores` when T is float), lse[n * lse_head_step + i].
template <class T>
__global__ void __launch_bounds__(kSoftmaxThreads) softmax_kernel(const float* scores, T* probs, int64_t seq,
                                                                  bool causal, float* lse, int64_t lse_head_step) {
  __shared__ float scratch[kSoftmaxThreads / 32];
  const int64_t r = blockIdx.x;
  const int64_t n = r / seq, i = r % seq;
  const float* row = scores + r * seq;
  T* prow = probs + r * seq;
  const int64_t visible = causal ? i + 1 : seq;
  float m = kNegInf;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce<true>(m, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < visible; j += blockDim.x) sum += expf(row[j] - m);
  sum = block_reduce<false>(sum, scratch);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    prow[j] = from_float<T>(j < visible ? expf(row[j] - m) * inv : 0.0f);
  }
  if (threadIdx.x == 0) lse[n * lse_head_step + i] = m + logf(sum);
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return CUDA_R_32F;
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF64: return CUDA_R_64F;
  }
  return CUDA_R_32F;
}

}  // namespace

void cublas_fail(cublasStatus_t status, const char* call) {
  DRING_FAIL(Status::kDeviceError, "cuBLAS call " << call << " failed on " << error_rank_text()
                                                  << ": " << cublasGetStatusString(status));
}

int64_t standard_attention_workspace_bytes(const StandardAttention& p) {
  const int64_t group = p.heads / p.kv_heads;
  const int64_t probs = p.dtype == DType::kF32 ? 0 : dtype_bytes(p.dtype);  // fp32 P overwrites the scores
  return group * p.seq * p.seq * (4 + probs);
}

void standard_attention(const StandardAttention& p, void* workspace, cublasHandle_t handle, cudaStream_t stream) {
  DRING_CHECK(p.kv_heads >= 1 && p.heads % p.kv_heads == 0, Status::kInvalidArgument,
              "standard_attention: heads " << p.heads << " is not a multiple of kv_heads " << p.kv_heads);
  if (p.seq == 0) return;
  DRING_CHECK(p.seq <= 0x7fffffff && p.head_dim * p.heads <= 0x7fffffff, Status::kUnsupported,
              "standard_attention: sizes exceed cuBLAS's int arguments");
  DRING_CUBLAS_CHECK(cublasSetStream(handle, stream));
  const int64_t group = p.heads / p.kv_heads, s = p.seq, d = p.head_dim;
  const int64_t elem = dtype_bytes(p.dtype);
  float* scores = static_cast<float*>(workspace);
  void* probs = p.dtype == DType::kF32 ? workspace : static_cast<void*>(scores + group * s * s);
  const cudaDataType_t type = cuda_type(p.dtype);
  const float alpha = p.scale, one = 1.0f, zero = 0.0f;
  const int n = static_cast<int>(s), k = static_cast<int>(d);
  const int ldq = static_cast<int>(p.heads * d), ldkv = static_cast<int>(p.kv_heads * d);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t g = 0; g < p.kv_heads; ++g) {
      const int64_t h0 = g * group;
      const char* q = static_cast<const char*>(p.q) + ((b * s) * p.heads + h0) * d * elem;
      const char* kk = static_cast<const char*>(p.k) + ((b * s) * p.kv_heads + g) * d * elem;
      const char* v = static_cast<const char*>(p.v) + ((b * s) * p.kv_heads + g) * d * elem;
      char* out = static_cast<char*>(p.out) + ((b * s) * p.heads + h0) * d * elem;
      // Column-major view: scores^T [keys x queries] = K Q^T, one batch entry per query head.
      DRING_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, k, &alpha, kk, type, ldkv,
                                                    0, q, type, ldq, d, &zero, scores, CUDA_R_32F, n, s * s,
                                                    static_cast<int>(group), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      float* lse = p.lse + (b * p.heads + h0) * s;
      dispatch_dtype(p.dtype, [&](auto tag) {
        using T = decltype(tag);
        softmax_kernel<T><<<grid_of(group * s), kSoftmaxThreads, 0, stream>>>(scores, static_cast<T*>(probs), s,
                                                                              p.causal, lse, s);
        DRING_CUDA_CHECK_LAUNCH("softmax_kernel");
      });
      // out^T [D x queries] = V^T P^T.
      DRING_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, k, n, n, &one, v, type, ldkv, 0,
                                                    probs, type, n, s * s, &zero, out, type, ldq, d,
                                                    static_cast<int>(group), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }
}

}  // namespace dring::kernels::cuda
