// test_util.hpp — shared helpers of the test suites: random tensors and problem builders.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "dring/core/problem.hpp"

namespace dring::test {

inline std::vector<float> random_tensor(int64_t count, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(count));
  for (float& value : x) value = normal(gen);
  return x;
}

inline Problem make_problem(int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim,
                            std::vector<DilatedPair> pairs, bool causal, double scale = 0.0) {
  Problem p;
  p.shape = AttentionShape{batch, seq, heads, kv_heads, head_dim};
  p.config.pairs = std::move(pairs);
  p.config.causal = causal;
  p.config.scale = scale;
  return p;
}

// The configurations every distributed test walks through: dense, local blocks, multi-pair
// dilated (LongNet-style, with a segment longer than the sequence), causal and GQA variants.
struct NamedConfig {
  const char* name;
  std::vector<DilatedPair> pairs;
  bool causal;
  int64_t heads;
  int64_t kv_heads;
};

inline std::vector<NamedConfig> standard_configs() {
  return {
      {"dense", {}, false, 2, 2},
      {"dense_causal", {}, true, 2, 2},
      {"local_blocks", {{16, 1}}, false, 2, 1},
      {"dilated_multi", {{8, 1}, {24, 2}, {64, 4}}, false, 4, 4},
      {"dilated_multi_causal", {{8, 1}, {24, 2}, {64, 4}}, true, 4, 4},
      {"dilated_gqa", {{12, 3}, {1000, 4}}, false, 6, 2},
      {"dilated_gqa_causal", {{12, 3}, {1000, 4}}, true, 6, 3},
      {"repeated_pair", {{20, 2}, {20, 2}}, false, 3, 1},
  };
}

}  // namespace dring::test
