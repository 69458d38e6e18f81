// fuzz_c_abi.cpp — libFuzzer target: the arguments of dring_context_create (dring/dring.h).
//
// Input: the fields of a dring_problem and a dring_options, taken from the bytes the way a C
// caller may fill them: any int64 in a shape field, any int in an enum field (C allows it), any
// double bit pattern in scale and comm_timeout_s, num_pairs segment lengths and dilation rates.
// They go through the checks dring_context_create runs before it talks to a peer
// (runtime/src/c_args.cpp) and the shard layout for a few world sizes. No MPI is started.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dring/dring.h"
#include "dring/runtime/c_args.hpp"
#include "dring/runtime/layout.hpp"
#include "fuzz_util.hpp"

namespace {

// Mostly small numbers (where the interesting boundaries are), sometimes any int64.
int64_t shape_value(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return in.ConsumeIntegral<int64_t>();
    case 1: return int64_t{1} << in.ConsumeIntegralInRange<int>(0, 63);
    default: return in.ConsumeIntegralInRange<int64_t>(-2, 300);
  }
}

template <class T>
T raw(FuzzedDataProvider& in) {
  const std::vector<uint8_t> bytes = in.ConsumeBytes<uint8_t>(sizeof(T));
  T value{};
  if (!bytes.empty()) std::memcpy(&value, bytes.data(), bytes.size());
  return value;
}

// Stores an arbitrary int in an enum field, byte for byte, as C code may.
template <class Enum>
void store_int(Enum* field, int value) {
  static_assert(sizeof(Enum) == sizeof(int));
  std::memcpy(field, &value, sizeof value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  dring_problem p{};
  p.batch = shape_value(in);
  p.seq = shape_value(in);
  p.heads = shape_value(in);
  p.kv_heads = shape_value(in);
  p.head_dim = shape_value(in);
  const int64_t pairs = in.ConsumeIntegralInRange<int64_t>(-1, 16);
  std::vector<int64_t> segments, dilations;
  for (int64_t i = 0; i < pairs; ++i) {
    segments.push_back(shape_value(in));
    dilations.push_back(shape_value(in));
  }
  p.num_pairs = pairs;
  p.segments = in.ConsumeBool() ? nullptr : segments.data();
  p.dilations = in.ConsumeBool() ? nullptr : dilations.data();
  p.causal = in.ConsumeIntegral<int>();
  p.scale = in.ConsumeBool() ? 0.0 : raw<double>(in);

  dring_options o;
  dring_options_init(&o);
  if (in.ConsumeBool()) {
    store_int(&o.backend, in.ConsumeIntegralInRange<int>(-1, 2));
    o.threads = in.ConsumeIntegral<int>();
    o.exchange_chunk_bytes = in.ConsumeIntegral<int64_t>();
    store_int(&o.dtype, in.ConsumeIntegralInRange<int>(-1, 3));
    o.comm_timeout_s = raw<double>(in);
  }

  using namespace dring;
  Problem problem;
  const bool ok = fuzz::run_clean([&] {
    problem = problem_from_c(in.ConsumeBool() ? &p : nullptr);
    check_c_options(o);
  });
  if (!ok) return 0;
  for (const int world_size : {1, 2, 7}) {
    fuzz::run_clean([&] { (void)ShardLayout(problem.shape.seq, world_size); });
  }
  if (!std::isfinite(problem.scale())) fuzz::finding("a valid problem with a scale that is not finite");
  return 0;
}
