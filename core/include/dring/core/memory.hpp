// dring/memory.hpp — per-rank memory accounting.
//
// Every large allocation of a rank goes through one MemoryTracker, tagged with a category, so a
// report can say where the bytes went and tests can hold per-rank memory to O(S/k). Buffers take
// their memory from an Allocator: the tracker's own for host memory, a backend's for device
// memory; both record every byte in the tracker.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace dring {

enum class MemCategory : int { kInputs = 0, kOutputs = 1, kExchange = 2, kWorkspace = 3 };
inline constexpr int kMemCategoryCount = 4;
const char* mem_category_name(MemCategory category);

enum class MemSpace : int { kHost = 0, kDevice = 1 };
inline constexpr int kMemSpaceCount = 2;

struct MemorySpaceStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  std::array<int64_t, kMemCategoryCount> current_by_category{};
  std::array<int64_t, kMemCategoryCount> peak_by_category{};
};

struct MemoryStats {
  std::array<MemorySpaceStats, kMemSpaceCount> space;
  const MemorySpaceStats& host() const { return space[0]; }
  const MemorySpaceStats& device() const { return space[1]; }
};

// Where a buffer's memory comes from: tracked host memory, or a backend's device memory.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual MemSpace space() const = 0;
  // Throws Error(kOutOfMemory) naming the category and size.
  virtual void* allocate(int64_t bytes, MemCategory category) = 0;
  virtual void deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept = 0;
};

// Per-rank accounting. Thread-safe: allocations may come from kernel worker threads.
class MemoryTracker {
 public:
  MemoryTracker();
  ~MemoryTracker();
  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  // Tracked, 64-byte aligned host memory.
  Allocator& host() { return *host_; }

  // For memory an allocator obtained itself.
  void record_alloc(MemSpace space, MemCategory category, int64_t bytes);
  void record_free(MemSpace space, MemCategory category, int64_t bytes) noexcept;

  MemoryStats stats() const;
  // Peaks restart from the current usage (to measure one phase, e.g. the backward pass).
  void reset_peaks();

 private:
  struct Counter {
    std::atomic<int64_t> current{0};
    std::atomic<int64_t> peak{0};
  };
  std::array<Counter, kMemSpaceCount> total_;
  std::array<std::array<Counter, kMemCategoryCount>, kMemSpaceCount> by_category_;
  std::unique_ptr<Allocator> host_;
};

// Peak resident set size of this process (VmHWM), in bytes; 0 where the OS does not say.
int64_t process_peak_rss_bytes();

// Owning, move-only, tracked array of trivially copyable T in an allocator's memory (host or
// device). Contents are uninitialised.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Allocator& allocator, int64_t count, MemCategory category)
      : allocator_(&allocator), count_(count), category_(category) {
    if (count_ > 0) data_ = static_cast<T*>(allocator.allocate(bytes(), category));
  }
  Buffer(MemoryTracker& tracker, int64_t count, MemCategory category) : Buffer(tracker.host(), count, category) {}
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    Buffer moved(std::move(other));
    swap(moved);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (data_ != nullptr) allocator_->deallocate(data_, bytes(), category_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }
  int64_t bytes() const { return count_ * static_cast<int64_t>(sizeof(T)); }
  MemSpace space() const { return allocator_ != nullptr ? allocator_->space() : MemSpace::kHost; }
  // Element access: host buffers only.
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }

 private:
  void swap(Buffer& other) noexcept {
    std::swap(allocator_, other.allocator_);
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    std::swap(category_, other.category_);
  }
  Allocator* allocator_ = nullptr;
  T* data_ = nullptr;
  int64_t count_ = 0;
  MemCategory category_ = MemCategory::kWorkspace;
};

}  // namespace dring
