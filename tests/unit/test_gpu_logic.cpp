// test_gpu_logic.cpp — the parts of the GPU path that are plain arithmetic, proven on the CPU:
// the NCCL decision from a node's device UUID table (node.hpp), the 32-way tile search and the
// tile classification the CUDA kernels run (kernels/tiles.hpp), each against brute force.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/core/geometry.hpp"
#include "dring/kernels/tiles.hpp"
#include "dring/runtime/node.hpp"

namespace dring {
namespace {

constexpr int kUuid = 16;

// A node table: rank r holds the device named gpu[r] (same name, same UUID).
std::vector<std::byte> uuid_table(const std::vector<int>& gpu) {
  std::vector<std::byte> t(gpu.size() * kUuid);
  for (size_t r = 0; r < gpu.size(); ++r) {
    for (int b = 0; b < kUuid; ++b) t[r * kUuid + b] = static_cast<std::byte>((gpu[r] * 37 + b * 11) & 0xff);
  }
  return t;
}

TEST(NcclChoice, RanksBoundToOneGpuEachAreExclusive) {
  // --gpus-per-task=1: each rank sees one device (its "device 0"), all different GPUs.
  const auto t = uuid_table({5, 1, 7, 2});
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(device_is_exclusive(t, kUuid, r, true)) << r;
}

TEST(NcclChoice, RanksSharingAGpuAreNot) {
  // Four ranks, three GPUs: ranks 0 and 3 share one (local_size > devices), the others do not.
  const auto t = uuid_table({0, 1, 2, 0});
  EXPECT_FALSE(device_is_exclusive(t, kUuid, 0, true));
  EXPECT_TRUE(device_is_exclusive(t, kUuid, 1, true));
  EXPECT_TRUE(device_is_exclusive(t, kUuid, 2, true));
  EXPECT_FALSE(device_is_exclusive(t, kUuid, 3, true));
  // Two ranks that each see two GPUs but were both given the same one.
  const auto same = uuid_table({3, 3});
  EXPECT_FALSE(device_is_exclusive(same, kUuid, 0, true));
  EXPECT_FALSE(device_is_exclusive(same, kUuid, 1, true));
}

TEST(NcclChoice, OneRankAndUnknownDevices) {
  const auto one = uuid_table({9});
  EXPECT_TRUE(device_is_exclusive(one, kUuid, 0, true));
  // A rank that could not read its device's UUID never claims a GPU of its own.
  EXPECT_FALSE(device_is_exclusive(one, kUuid, 0, false));
  // Its zero UUID does not make another rank's GPU look shared.
  auto t = uuid_table({4, 6});
  std::fill(t.begin(), t.begin() + kUuid, std::byte{0});
  EXPECT_FALSE(device_is_exclusive(t, kUuid, 0, false));
  EXPECT_TRUE(device_is_exclusive(t, kUuid, 1, true));
}

TEST(NcclChoice, UuidsDifferingInOneByteAreDifferentGpus) {
  auto t = uuid_table({2, 2});
  t[kUuid + kUuid - 1] ^= std::byte{1};  // the last byte of rank 1's
  EXPECT_TRUE(device_is_exclusive(t, kUuid, 0, true));
  EXPECT_TRUE(device_is_exclusive(t, kUuid, 1, true));
}

TEST(NcclChoice, ABadTableIsAnInternalError) {
  const auto t = uuid_table({0, 1});
  EXPECT_THROW(device_is_exclusive(t, kUuid, 2, true), Error);
  EXPECT_THROW(device_is_exclusive(std::span(t).first(kUuid + 3), kUuid, 0, true), Error);
}

// The largest b with prefix[b] <= x, by a linear scan.
int64_t item_by_scan(const std::vector<int64_t>& prefix, int64_t n, int64_t x) {
  int64_t b = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (prefix[static_cast<size_t>(i)] <= x) b = i;
  }
  return b;
}

TEST(TileSearch, MatchesALinearScanWithEmptyItems) {
  std::mt19937_64 gen(13);
  int rounds_max = 0;
  for (int trial = 0; trial < 400; ++trial) {
    // Item counts around the search's powers of 32, tiles per item 0..5 (0: an empty item).
    const int64_t sizes[] = {1, 2, 31, 32, 33, 63, 1023, 1024, 1025, 5000, 40000};
    const int64_t n = sizes[trial % std::size(sizes)];
    std::vector<int64_t> prefix(static_cast<size_t>(n) + 1, 0);
    std::uniform_int_distribution<int> tiles(trial % 3 == 0 ? 0 : 1, 5);
    for (int64_t b = 0; b < n; ++b) prefix[static_cast<size_t>(b) + 1] = prefix[static_cast<size_t>(b)] + tiles(gen);
    const int64_t total = prefix.back();
    if (total == 0) continue;
    std::uniform_int_distribution<int64_t> pick(0, total - 1);
    for (int probe = 0; probe < 50; ++probe) {
      const int64_t x = probe == 0 ? 0 : (probe == 1 ? total - 1 : pick(gen));
      int rounds = 0;
      const int64_t got = kernels::search_item(n, [&](int64_t at) {
        EXPECT_TRUE(at >= 0 && at < n);
        return prefix[static_cast<size_t>(at)] <= x;
      });
      // The device's loop, lane by lane: the same answer in the same number of rounds.
      kernels::SearchRange r{0, n - 1};
      while (!r.settled()) {
        int last = -1;
        for (int lane = 0; lane < kernels::kSearchLanes; ++lane) {
          const int64_t at = kernels::search_probe(r, lane);
          if (at >= 0 && prefix[static_cast<size_t>(at)] <= x) last = lane;
        }
        ASSERT_GE(last, 0) << "lane 0 must always qualify";
        r = kernels::search_narrow(r, last);
        ++rounds;
      }
      const int64_t want = item_by_scan(prefix, n, x);
      ASSERT_EQ(got, want) << "n " << n << " x " << x;
      ASSERT_EQ(r.lo, want) << "n " << n << " x " << x;
      // The item found holds the tile: not an empty one.
      ASSERT_LT(x, prefix[static_cast<size_t>(want) + 1]);
      rounds_max = std::max(rounds_max, rounds);
    }
  }
  // 40000 items: 40000 -> 1250 -> 40 -> 2 -> 1, four rounds (a binary search takes 16).
  EXPECT_LE(rounds_max, 4);
}

TEST(TileSearch, EveryLaneProbesInsideTheRange) {
  for (int64_t width = 1; width <= 3000; ++width) {
    const kernels::SearchRange r{100, 100 + width - 1};
    int64_t covered = 0;
    for (int lane = 0; lane < kernels::kSearchLanes; ++lane) {
      const int64_t at = kernels::search_probe(r, lane);
      if (at < 0) continue;
      ASSERT_GE(at, r.lo);
      ASSERT_LE(at, r.hi);
      const kernels::SearchRange next = kernels::search_narrow(r, lane);
      ASSERT_EQ(next.lo, at);
      ASSERT_LE(next.hi, r.hi);
      ASSERT_LE(next.hi - next.lo + 1, (width + kernels::kSearchLanes - 1) / kernels::kSearchLanes);
      covered += next.hi - next.lo + 1;
    }
    ASSERT_EQ(covered, width) << "the lanes' subranges partition the range";
  }
}

TEST(TileClass, MatchesBruteForce) {
  std::mt19937_64 gen(29);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  int seen[3] = {0, 0, 0};
  for (int trial = 0; trial < 4000; ++trial) {
    BlockMask mask;
    const int kind = trial % 4;
    if (kind == 1) mask = BlockMask::causal();
    if (kind >= 2) {
      mask.band = Band::of(kind == 2, uniform(1, 90));
      mask.q_first = uniform(0, 200);
      mask.q_step = uniform(1, 4);
      mask.k_first = uniform(0, 200);
      mask.k_step = uniform(1, 4);
    }
    const int64_t tile_keys = 16;
    const int64_t i0 = uniform(0, 60), i1 = i0 + uniform(1, 16);
    const int64_t j0 = uniform(0, 60), j1 = j0 + uniform(1, tile_keys);
    int64_t visible = 0;
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) visible += mask.band.visible(mask.q_pos(i), mask.k_pos(j)) ? 1 : 0;
    }
    const int64_t cells = (i1 - i0) * (j1 - j0);
    const kernels::TileKind got = kernels::classify_tile(mask, i0, i1, j0, j1, tile_keys);
    ++seen[static_cast<int>(got)];
    if (visible == 0) {
      EXPECT_EQ(got, kernels::TileKind::kEmpty);
    } else if (visible == cells && j1 - j0 == tile_keys) {
      EXPECT_EQ(got, kernels::TileKind::kFull);
    } else {
      EXPECT_EQ(got, kernels::TileKind::kEdge) << "a partial or short tile must be masked";
    }
  }
  for (int k = 0; k < 3; ++k) EXPECT_GT(seen[k], 50) << "kind " << k << " barely exercised";
}

}  // namespace
}  // namespace dring
