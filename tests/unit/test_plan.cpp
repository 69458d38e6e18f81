// test_plan.cpp — shard layout and exchange plan invariants over many (S, k, config), by brute
// force from the definition: every remote key is delivered exactly once, nothing else travels,
// senders and receivers agree message by message, and aligned cases meet the closed forms.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>

#include "dring/core/error.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/plan.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

TEST(Layout, ShardsPartitionTheSequenceFirstRanksLonger) {
  for (int64_t seq : {1, 2, 7, 10, 97, 1000}) {
    for (int k = 1; k <= std::min<int64_t>(seq, 9); ++k) {
      const ShardLayout layout(seq, k);
      EXPECT_EQ(layout.begin(0), 0);
      EXPECT_EQ(layout.end(k - 1), seq);
      for (int t = 0; t < k; ++t) {
        EXPECT_EQ(layout.end(t) - layout.begin(t), layout.size(t));
        EXPECT_EQ(layout.size(t), seq / k + (t < seq % k ? 1 : 0));
        EXPECT_LE(layout.size(t), layout.max_size());
        for (int64_t pos = layout.begin(t); pos < layout.end(t); ++pos) ASSERT_EQ(layout.owner(pos), t);
      }
    }
  }
}

TEST(Layout, RefusesFewerTokensThanRanks) {
  try {
    ShardLayout(3, 4);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("shorter than the number of ranks"), std::string::npos);
  }
}

TEST(Layout, SelectedRowsFollowTheDefinition) {
  for (int64_t seq : {1, 5, 12, 13, 40}) {
    for (const DilatedPair pair : {DilatedPair{4, 2}, DilatedPair{6, 3}, DilatedPair{50, 5}, DilatedPair{1, 1}}) {
      const PairGeometry g(pair, seq);
      for (int64_t seg = 0; seg < g.segment_count(); ++seg) {
        for (int64_t off = 0; off < g.r; ++off) {
          for (int64_t lo = 0; lo <= seq; lo += 3) {
            for (int64_t hi = lo; hi <= seq; hi += 2) {
              const StridedRange got = g.selected(seg, off, lo, hi);
              std::vector<int64_t> want;
              for (int64_t pos = lo; pos < hi; ++pos) {
                if (g.segment_of(pos) == seg && g.selects(pos, off)) want.push_back(pos);
              }
              ASSERT_EQ(got.count, static_cast<int64_t>(want.size())) << seq << " " << seg << " " << off;
              for (int64_t n = 0; n < got.count; ++n) ASSERT_EQ(got.first + n * got.stride, want[n]);
            }
          }
        }
      }
    }
  }
}

// (batch, pair, kv head, key position) -> how many times it is delivered to a query (row, head).
using Delivery = std::map<std::tuple<int64_t, int, int64_t, int64_t>, int>;

void check_plan(const Problem& problem, int k, int64_t cap_rows) {
  const ExchangePlan plan(problem, k, cap_rows);
  const ShardLayout& layout = plan.layout();
  const std::vector<DilatedPair> pairs = problem.pairs();
  const AttentionShape& s = problem.shape;
  SCOPED_TRACE(testing::Message() << "seq " << s.seq << " k " << k << " cap " << cap_rows << " " << problem.describe()
                                  << " H " << s.heads << "/" << s.kv_heads);
  for (int dst = 0; dst < k; ++dst) {
    for (int src = 0; src < k; ++src) {
      if (src == dst) continue;
      const std::vector<KvSlab> slabs = plan.needed(src, dst);
      // Every (query row, head, pair) of dst: its keys on src per the definition, and what arrives.
      int64_t minimum_rows = 0;
      for (int p = 0; p < static_cast<int>(pairs.size()); ++p) {
        const PairGeometry geom(pairs[p], s.seq);
        std::set<std::tuple<int64_t, int64_t, int64_t>> needed_rows;  // (batch, kv head, key)
        for (int64_t b = 0; b < s.batch; ++b) {
          for (int64_t i = layout.begin(dst); i < layout.end(dst); ++i) {
            for (int64_t h = 0; h < s.heads; ++h) {
              const int64_t off = geom.offset_of_head(h);
              std::multiset<int64_t> want, got;
              if (geom.selects(i, off)) {
                for (int64_t j = layout.begin(src); j < layout.end(src); ++j) {
                  const bool visible = !problem.config.causal || j <= i;
                  if (geom.segment_of(j) == geom.segment_of(i) && geom.selects(j, off) && visible) {
                    want.insert(j);
                    needed_rows.insert({b, problem.kv_head_of(h), j});
                  }
                }
              }
              for (const KvSlab& slab : slabs) {
                if (slab.batch != b || slab.pair != p || slab.kv_head != problem.kv_head_of(h) || slab.offset != off) continue;
                const bool mine = i >= slab.queries.first && i <= slab.queries.last() &&
                                  (i - slab.queries.first) % slab.queries.stride == 0;
                if (!mine) continue;
                for (int64_t n = 0; n < slab.keys.count; ++n) got.insert(slab.keys.first + n * slab.keys.stride);
              }
              ASSERT_EQ(want, got) << "row " << i << " head " << h << " pair " << p << " from rank " << src
                                   << " to rank " << dst;
            }
          }
        }
        minimum_rows += static_cast<int64_t>(needed_rows.size());
      }
      int64_t sent_rows = 0;
      for (const KvSlab& slab : slabs) sent_rows += slab.keys.count;
      EXPECT_EQ(sent_rows, minimum_rows) << "rank " << src << " -> " << dst << " moves more than its peer reads";
    }
  }
  // Schedules: sender and receiver agree on every message; caps hold; one send and one receive
  // per step; the order is shift-major; every rank lists the same (shift, chunk) steps.
  std::vector<std::vector<PlanStep>> schedules;
  for (int t = 0; t < k; ++t) schedules.push_back(plan.schedule(t));
  for (int t = 0; t < k; ++t) {
    int64_t received = 0;
    for (size_t i = 0; i < schedules[t].size(); ++i) {
      const PlanStep& step = schedules[t][i];
      if (i > 0) {
        const PlanStep& prev = schedules[t][i - 1];
        EXPECT_TRUE(prev.shift < step.shift || (prev.shift == step.shift && prev.chunk + 1 == step.chunk));
      }
      EXPECT_LE(step.send.rows, cap_rows);
      EXPECT_LE(step.recv.rows, cap_rows);
      ASSERT_EQ(schedules[t].size(), schedules[0].size()) << "rank " << t;
      EXPECT_EQ(step.shift, schedules[0][i].shift);
      EXPECT_EQ(step.chunk, schedules[0][i].chunk);
      received += step.recv.rows;
      if (step.send.empty()) continue;
      const int to = (t + step.shift) % k;
      bool matched = false;
      for (const PlanStep& other : schedules[to]) {
        if (other.shift != step.shift || other.chunk != step.chunk) continue;
        matched = true;
        EXPECT_EQ(other.recv.src, t);
        EXPECT_EQ(other.recv.rows, step.send.rows);
        EXPECT_EQ(other.recv.slabs, step.send.slabs);
      }
      EXPECT_TRUE(matched) << "rank " << t << " sends at shift " << step.shift << " chunk " << step.chunk
                           << " and rank " << to << " never receives it";
    }
    EXPECT_EQ(received, plan.rows_received(t));
  }
}

TEST(Plan, DeliversExactlyTheRemoteKeysOfEveryRow) {
  for (int64_t seq : {1, 2, 3, 7, 13, 31, 64, 97}) {
    for (int k : {1, 2, 3, 4, 5, 7}) {
      if (seq < k) continue;
      for (const auto& c : test::standard_configs()) {
        const int64_t batch = seq < 40 ? 2 : 1;
        check_plan(test::make_problem(batch, seq, c.heads, c.kv_heads, 4, c.pairs, c.causal), k, 1 << 20);
      }
    }
  }
}

TEST(Plan, ChunkingSplitsMessagesButNotTheDelivery) {
  for (int64_t cap : {1, 2, 5, 17}) {
    for (const auto& c : test::standard_configs()) {
      check_plan(test::make_problem(1, 61, c.heads, c.kv_heads, 4, c.pairs, c.causal), 3, cap);
      check_plan(test::make_problem(2, 29, c.heads, c.kv_heads, 4, c.pairs, c.causal), 4, cap);
    }
  }
}

// Closed forms on aligned configurations (S divisible by k, segments by shards).
TEST(Plan, AlignedVolumesMeetTheAnalyticMinimum) {
  const int64_t B = 2, S = 96, H = 4;
  for (int k : {1, 2, 3, 4, 6}) {
    const int64_t shard = S / k;
    const ExchangePlan dense(test::make_problem(B, S, H, H, 8, {}, false), k, 1 << 20);
    const ExchangePlan causal(test::make_problem(B, S, H, H, 8, {}, true), k, 1 << 20);
    const ExchangePlan gqa(test::make_problem(B, S, H, 1, 8, {}, false), k, 1 << 20);
    for (int t = 0; t < k; ++t) {
      EXPECT_EQ(dense.rows_received(t), B * (k - 1) * shard * H) << "k " << k;
      EXPECT_EQ(dense.rows_sent(t), B * (k - 1) * shard * H);
      EXPECT_EQ(causal.rows_received(t), B * t * shard * H);
      EXPECT_EQ(gqa.rows_received(t), B * (k - 1) * shard * 1);
    }
    for (int64_t r : {2, 4}) {
      if (shard % r != 0) continue;
      // One segment over everything, dilation r: each kv head needs 1/r of every peer's rows.
      const ExchangePlan dilated(test::make_problem(B, S, H, H, 8, {{S, r}}, false), k, 1 << 20);
      for (int t = 0; t < k; ++t) EXPECT_EQ(dilated.rows_received(t), B * (k - 1) * (shard / r) * H);
    }
    if (k % 2 == 0) {
      // Segments of two shards: each rank talks to its one partner only.
      const ExchangePlan pairs(test::make_problem(B, S, H, H, 8, {{2 * shard, 1}}, false), k, 1 << 20);
      for (int t = 0; t < k; ++t) {
        EXPECT_EQ(pairs.rows_received(t), B * shard * H);
        for (int src = 0; src < k; ++src) {
          if (src != t && src / 2 != t / 2) {
            EXPECT_TRUE(pairs.needed(src, t).empty());
          }
        }
      }
    }
    // Segments inside one shard: no communication at all.
    const ExchangePlan local(test::make_problem(B, S, H, H, 8, {{shard, 1}, {shard / 2 > 0 ? shard / 2 : 1, 1}}, true), k, 1 << 20);
    for (int t = 0; t < k; ++t) EXPECT_TRUE(local.schedule(t).empty());
  }
}

}  // namespace
}  // namespace dring
