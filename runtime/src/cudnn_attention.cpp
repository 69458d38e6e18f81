// cudnn_attention.cpp — see dring/runtime/cudnn_attention.hpp.
#include "dring/runtime/cudnn_attention.hpp"

namespace dring {

namespace {

// Runs the plan's problems; `rest` gets the leftovers and the blocks of the problems cuDNN turned
// down (in no particular order: the blocks of one call share no output rows).
template <class Block, class Plan, class Run>
void run_plan(std::span<const Block> blocks, const Plan& plan, Run&& run, std::vector<Block>& rest,
              int64_t& problems) {
  std::vector<size_t> declined;
  problems = 0;
  for (size_t n = 0; n < plan.problems.size(); ++n) {
    if (run(plan.problems[n])) {
      ++problems;
    } else {
      declined.insert(declined.end(), plan.sources[n].begin(), plan.sources[n].end());
    }
  }
  rest = plan.leftovers;
  for (size_t i : declined) rest.push_back(blocks[i]);
}

}  // namespace

CudnnAttention::CudnnAttention(cudaStream_t stream, Allocator& device, int compute_major)
    : stream_(stream), device_(device), max_head_dim_(compute_major >= 9 ? 256 : 128) {}

CudnnAttention::~CudnnAttention() = default;

kernels::cudnn::Sdpa& CudnnAttention::sdpa() {
  if (!sdpa_) sdpa_ = std::make_unique<kernels::cudnn::Sdpa>(stream_, device_);
  return *sdpa_;
}

kernels::DenseRule CudnnAttention::rule_for(const kernels::AttendParams& params,
                                            const CudnnRuleOptions& options) const {
  kernels::DenseRule rule;
  rule.dtype = params.dtype;
  rule.head_dim = params.head_dim;
  rule.max_head_dim = max_head_dim_;
  rule.min_rows = options.min_rows;
  rule.min_problem_scores = options.min_problem_scores;
  return rule;
}

std::span<const kernels::AttendBlock> CudnnAttention::attend(std::span<const kernels::AttendBlock> blocks,
                                                             const kernels::AttendParams& params,
                                                             const CudnnRuleOptions& rule) {
  last_problems_ = 0;
  if (params.dtype != DType::kF16 && params.dtype != DType::kBF16) return blocks;
  const kernels::DenseForwardPlan plan = kernels::plan_dense(blocks, rule_for(params, rule));
  run_plan(blocks, plan, [&](const kernels::DenseProblem& p) { return sdpa().forward(p, params); }, rest_,
           last_problems_);
  return rest_;
}

std::span<const kernels::GradBlock> CudnnAttention::attend_backward(std::span<const kernels::GradBlock> blocks,
                                                                    const kernels::AttendParams& params,
                                                                    const CudnnRuleOptions& rule) {
  if (params.dtype != DType::kF16 && params.dtype != DType::kBF16) return blocks;
  const kernels::DenseBackwardPlan plan = kernels::plan_dense(blocks, rule_for(params, rule));
  int64_t problems = 0;
  run_plan(blocks, plan, [&](const kernels::DenseProblem& p) { return sdpa().backward(p, params); }, rest_grad_,
           problems);
  return rest_grad_;
}

std::string CudnnAttention::path(const std::string& kernel_path, bool kernels_ran) const {
  if (last_problems_ == 0) return kernel_path;
  return kernels_ran ? "cudnn+" + kernel_path : "cudnn";
}

}  // namespace dring
