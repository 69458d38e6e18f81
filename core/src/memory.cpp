// memory.cpp — the tracking allocator and the process peak-RSS probe.
#include "dring/core/memory.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "dring/core/error.hpp"

namespace dring {

namespace {
constexpr int64_t kAlignment = 64;

void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
  int64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}
}  // namespace

const char* mem_category_name(MemCategory category) {
  switch (category) {
    case MemCategory::kInputs: return "inputs";
    case MemCategory::kOutputs: return "outputs";
    case MemCategory::kExchange: return "exchange";
    case MemCategory::kWorkspace: return "workspace";
  }
  return "unknown";
}

namespace {

class HostAllocator final : public Allocator {
 public:
  explicit HostAllocator(MemoryTracker& tracker) : tracker_(tracker) {}
  MemSpace space() const override { return MemSpace::kHost; }
  void* allocate(int64_t bytes, MemCategory category) override {
    DRING_ASSERT(bytes >= 0);
    const int64_t rounded = std::max<int64_t>((bytes + kAlignment - 1) / kAlignment * kAlignment, kAlignment);
    void* ptr = std::aligned_alloc(kAlignment, static_cast<size_t>(rounded));
    DRING_CHECK(ptr != nullptr, Status::kOutOfMemory,
                "out of host memory allocating " << bytes << " bytes for " << mem_category_name(category));
    tracker_.record_alloc(MemSpace::kHost, category, bytes);
    return ptr;
  }
  void deallocate(void* ptr, int64_t bytes, MemCategory category) noexcept override {
    std::free(ptr);
    tracker_.record_free(MemSpace::kHost, category, bytes);
  }

 private:
  MemoryTracker& tracker_;
};

}  // namespace

MemoryTracker::MemoryTracker() : host_(std::make_unique<HostAllocator>(*this)) {}
MemoryTracker::~MemoryTracker() = default;

void MemoryTracker::record_alloc(MemSpace space, MemCategory category, int64_t bytes) {
  const int s = static_cast<int>(space);
  const int c = static_cast<int>(category);
  raise_peak(total_[s].peak, total_[s].current.fetch_add(bytes) + bytes);
  raise_peak(by_category_[s][c].peak, by_category_[s][c].current.fetch_add(bytes) + bytes);
}

void MemoryTracker::record_free(MemSpace space, MemCategory category, int64_t bytes) noexcept {
  total_[static_cast<int>(space)].current.fetch_sub(bytes);
  by_category_[static_cast<int>(space)][static_cast<int>(category)].current.fetch_sub(bytes);
}

MemoryStats MemoryTracker::stats() const {
  MemoryStats out;
  for (int s = 0; s < kMemSpaceCount; ++s) {
    out.space[s].current_bytes = total_[s].current.load();
    out.space[s].peak_bytes = total_[s].peak.load();
    for (int c = 0; c < kMemCategoryCount; ++c) {
      out.space[s].current_by_category[c] = by_category_[s][c].current.load();
      out.space[s].peak_by_category[c] = by_category_[s][c].peak.load();
    }
  }
  return out;
}

void MemoryTracker::reset_peaks() {
  for (int s = 0; s < kMemSpaceCount; ++s) {
    total_[s].peak.store(total_[s].current.load());
    for (int c = 0; c < kMemCategoryCount; ++c) {
      by_category_[s][c].peak.store(by_category_[s][c].current.load());
    }
  }
}

int64_t process_peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  int64_t kib = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) {
      kib = std::strtoll(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kib * 1024;
}

}  // namespace dring
