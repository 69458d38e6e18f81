// dring/memory.hpp — per-rank memory accounting.
//
// Every large allocation of a rank goes through one MemoryTracker, tagged with a category, so a
// report can say where the bytes went and tests can hold per-rank memory to O(S/k). Host memory
// is allocated here; device memory is allocated by the backend and recorded here.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
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

// Thread-safe: allocations may come from kernel worker threads.
class MemoryTracker {
 public:
  MemoryTracker() = default;
  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  // 64-byte aligned host memory; throws Error(kOutOfMemory) naming the category and size.
  void* allocate_host(int64_t bytes, MemCategory category);
  void free_host(void* ptr, int64_t bytes, MemCategory category) noexcept;

  // For memory a backend allocated itself (device buffers).
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
  void add(MemSpace space, MemCategory category, int64_t bytes);
  std::array<Counter, kMemSpaceCount> total_;
  std::array<std::array<Counter, kMemCategoryCount>, kMemSpaceCount> by_category_;
};

// Peak resident set size of this process (VmHWM), in bytes; 0 where the OS does not say.
int64_t process_peak_rss_bytes();

// Owning, move-only, tracked host array of trivially copyable T. Contents are uninitialised.
template <class T>
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(MemoryTracker& tracker, int64_t count, MemCategory category)
      : tracker_(&tracker), count_(count), category_(category) {
    if (count_ > 0) {
      data_ = static_cast<T*>(tracker.allocate_host(count_ * static_cast<int64_t>(sizeof(T)), category));
    }
  }
  HostBuffer(HostBuffer&& other) noexcept { swap(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept {
    HostBuffer moved(std::move(other));
    swap(moved);
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() {
    if (data_ != nullptr) tracker_->free_host(data_, bytes(), category_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }
  int64_t bytes() const { return count_ * static_cast<int64_t>(sizeof(T)); }
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }

 private:
  void swap(HostBuffer& other) noexcept {
    std::swap(tracker_, other.tracker_);
    std::swap(data_, other.data_);
    std::swap(count_, other.count_);
    std::swap(category_, other.category_);
  }
  MemoryTracker* tracker_ = nullptr;
  T* data_ = nullptr;
  int64_t count_ = 0;
  MemCategory category_ = MemCategory::kWorkspace;
};

}  // namespace dring
