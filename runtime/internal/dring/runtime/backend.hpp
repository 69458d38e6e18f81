// dring/runtime/backend.hpp — where a rank's tensors live and how the executor's work is done on them.
//
// The ring executor is written once against this interface: it decides which blocks to compute
// and which rows to move; a backend owns the memory (host or device) and runs the kernels. All
// pointers passed in are in the backend's memory; tensors are in a storage dtype (DType), lse and
// gradient accumulators in fp32. Operations may run asynchronously (in stream order on a GPU);
// `synchronize` waits for all of them, and a backend's transports order their transfers with its
// work (see comm/transport.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "dring/core/dtype.hpp"
#include "dring/kernels/attend.hpp"
#include "dring/core/memory.hpp"

namespace dring {

using kernels::RowRun;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Allocator& allocator() = 0;
  MemSpace space() { return allocator().space(); }
  // Whether the kernels take this storage dtype.
  virtual bool supports(DType dtype) const = 0;

  // Between float32 host memory and a tensor in the backend's memory, converting to and from its
  // dtype (counts in elements).
  virtual void upload(const float* host, void* dst, int64_t count, DType dtype) = 0;
  virtual void download(const void* src, DType dtype, float* host, int64_t count) = 0;
  virtual void fill(void* dst, int64_t count, DType dtype, float value) = 0;
  // fp32 accumulators into a tensor of the storage dtype.
  virtual void cast(const float* src, void* dst, int64_t count, DType dtype) = 0;

  // Row movement: packing messages (any dtype) and adding returned gradients (fp32). The runs of
  // one call must not share destination rows (they may run in parallel).
  virtual void copy_rows(std::span<const RowRun> runs, int64_t head_dim, DType dtype) = 0;
  virtual void add_rows(std::span<const RowRun> runs, int64_t head_dim) = 0;

  // The kernel family (kernels/include/dring/kernels/attend.hpp).
  virtual void attend(std::span<const kernels::AttendBlock> blocks, const kernels::AttendParams& params) = 0;
  virtual void delta(const kernels::DeltaParams& params) = 0;
  virtual void attend_backward(std::span<const kernels::GradBlock> blocks, const kernels::AttendParams& params) = 0;

  virtual void synchronize() = 0;
};

// fp32 on the host: OpenBLAS tiles and OpenMP threads (kernels/cpu).
std::unique_ptr<Backend> make_cpu_backend(MemoryTracker& tracker, int threads);

// A tensor in a backend's memory: `count` elements of `dtype`.
class TensorBuffer {
 public:
  TensorBuffer() = default;
  TensorBuffer(Allocator& allocator, int64_t count, DType dtype, MemCategory category)
      : storage_(allocator, count * dtype_bytes(dtype), category), count_(count), dtype_(dtype) {}
  void* data() { return storage_.data(); }
  const void* data() const { return storage_.data(); }
  int64_t size() const { return count_; }
  DType dtype() const { return dtype_; }
  // The elements as floats: fp32 tensors in host memory only (tests, checks, file output).
  float* f32();
  const float* f32() const;
  float& operator[](int64_t i) { return f32()[i]; }
  float operator[](int64_t i) const { return f32()[i]; }

 private:
  Buffer<std::byte> storage_;
  int64_t count_ = 0;
  DType dtype_ = DType::kF32;
};

}  // namespace dring
