// dring/backend.hpp — where a rank's tensors live and how the executor's work is done on them.
//
// The ring executor is written once against this interface: it decides which blocks to compute
// and which rows to move; a backend owns the memory (host or device) and runs the kernels. All
// pointers passed in are in the backend's memory. Operations may run asynchronously (in stream
// order on a GPU); `synchronize` waits for all of them, and transports of the same backend order
// their transfers with its work (see comm/transport.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "dring/kernels/attend.hpp"
#include "dring/memory.hpp"

namespace dring {

// `rows` rows of head_dim floats from src (row stride src_stride) to dst (row stride dst_stride).
struct RowRun {
  const float* src = nullptr;
  int64_t src_stride = 0;
  float* dst = nullptr;
  int64_t dst_stride = 0;
  int64_t rows = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Allocator& allocator() = 0;
  MemSpace space() { return allocator().space(); }

  // Between host memory and the backend's memory (counts in floats).
  virtual void upload(const float* host, float* dst, int64_t count) = 0;
  virtual void download(const float* src, float* host, int64_t count) = 0;
  virtual void fill_zero(float* dst, int64_t count) = 0;

  // Row movement for packing messages and accumulating returned gradients.
  virtual void copy_rows(std::span<const RowRun> runs, int64_t head_dim) = 0;  // dst = src
  virtual void add_rows(std::span<const RowRun> runs, int64_t head_dim) = 0;   // dst += src

  // Forward family (kernels/include/dring/kernels/attend.hpp).
  virtual void init_state(const kernels::AttendState& state, int64_t rows, int64_t heads, int64_t head_dim) = 0;
  virtual void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) = 0;
  virtual void finalize(const kernels::FinalizeParams& params) = 0;

  // Backward family.
  virtual void delta(const kernels::DeltaParams& params) = 0;
  virtual void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) = 0;

  virtual void synchronize() = 0;
};

// fp32 on the host: OpenBLAS tiles and OpenMP threads (kernels/cpu).
std::unique_ptr<Backend> make_cpu_backend(MemoryTracker& tracker, int threads);

}  // namespace dring
