// test_plan.cpp — shard layout and exchange plan invariants over many (S, k, config), by brute
// force from the definition: every remote key is delivered exactly once, nothing else travels,
// senders and receivers agree message by message, and aligned cases meet the closed forms.
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>
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

// ShardLayout::pieces: a rank's rows of a block, each once, at the right local rows, ascending;
// one piece per run, except that striped:N takes no more pieces than the runs the block can
// meet (ceil(N / gcd(stride, N k))) nor than the stripes holding its rows.
TEST(Layout, PiecesHoldEachRowOfABlockOnce) {
  std::mt19937 rng(20261203);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int trial = 0; trial < 3000; ++trial) {
    const int k = static_cast<int>(pick(1, 5));
    const int64_t seq = pick(2 * k, 300);
    std::string name = std::vector<std::string>{"contiguous", "zigzag", "striped"}[pick(0, 2)];
    if (name == "striped") name.append(":").append(std::to_string(pick(1, (seq - 1) / std::max(k - 1, 1))));
    const ShardLayout layout(seq, k, LayoutSpec::parse(name));
    const int64_t stride = pick(1, 20), first = pick(0, seq - 1);
    const StridedRange block{first, pick(1, (seq - 1 - first) / stride + 1), stride};
    for (int t = 0; t < k; ++t) {
      SCOPED_TRACE(testing::Message() << "seq " << seq << " k " << k << " " << name << " block " << block.first
                                      << "+" << block.stride << "x" << block.count << " rank " << t);
      const std::vector<Piece> pieces = layout.pieces(block, t);
      std::vector<int64_t> got;
      for (size_t i = 0; i < pieces.size(); ++i) {
        const Piece& piece = pieces[i];
        ASSERT_GT(piece.pos.count, 0);
        if (i > 0) {
          ASSERT_LT(pieces[i - 1].pos.first, piece.pos.first);
        }
        for (int64_t n = 0; n < piece.pos.count; ++n) {
          ASSERT_EQ(layout.owner(piece.pos.at(n)), t);
          ASSERT_EQ(layout.local_row(piece.pos.at(n)), piece.local + n * piece.local_stride);
          got.push_back(piece.pos.at(n));
        }
      }
      std::vector<int64_t> want;
      std::set<int64_t> stripes;
      for (int64_t n = 0; n < block.count; ++n) {
        if (layout.owner(block.at(n)) != t) continue;
        want.push_back(block.at(n));
        stripes.insert(block.at(n) / layout.spec().stripe);
      }
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, want);
      if (layout.spec().kind != LayoutKind::kStriped || k == 1) {
        EXPECT_EQ(pieces, layout.run_pieces(block, t));
      } else {  // no more than the runs the block can meet, nor than the stripes holding its rows
        const int64_t n = layout.spec().stripe, g = std::gcd(block.stride, n * k);
        EXPECT_LE(static_cast<int64_t>(pieces.size()), (n + g - 1) / g);
        EXPECT_LE(pieces.size(), stripes.size());
      }
    }
  }
}

// The keys of query row i (head h, pair p) held by rank `src`, straight from the definition:
// same document, same segment, same offset, within the band.
std::multiset<int64_t> keys_of(const Problem& problem, const ShardLayout& layout, int src, int p, int64_t i,
                               int64_t h) {
  const Documents docs(problem);
  const int64_t d = docs.document_of(i);
  const PairGeometry geom(problem.pairs()[p], docs.begin(d), docs.end(d));
  const int64_t off = geom.offset_of_head(h);
  const Band band = Band::of(problem.config);
  std::multiset<int64_t> keys;
  if (!geom.selects(i, off)) return keys;
  for (int64_t j : layout.positions(src)) {
    if (j >= geom.begin && j < geom.end && geom.segment_of(j) == geom.segment_of(i) && geom.selects(j, off) &&
        band.visible(i, j)) {
      keys.insert(j);
    }
  }
  return keys;
}

bool in_range(const StridedRange& r, int64_t pos) {
  return r.count > 0 && pos >= r.first && pos <= r.last() && (pos - r.first) % r.stride == 0;
}

// Checks everything the plan promises; adds to *balanced how many multi-message transfers the
// work-balance check covered (a test of the cuts must see some).
void check_plan(const Problem& problem, const ShardLayout& layout, int64_t cap_rows, int64_t* balanced = nullptr) {
  const int k = layout.world_size();
  const ExchangePlan plan(problem, layout, cap_rows);
  const std::vector<DilatedPair> pairs = problem.pairs();
  const AttentionShape& s = problem.shape;
  const Band band = Band::of(problem.config);
  // Striped layouts hold a block's rows every lcm(r, stripes) positions; a window narrower than
  // that may leave keys between two queries that neither reaches, and the plan sends the stretch.
  const bool exact = layout.spec().kind != LayoutKind::kStriped || problem.config.window == 0;
  SCOPED_TRACE(testing::Message() << "seq " << s.seq << " k " << k << " " << layout.spec().describe() << " cap "
                                  << cap_rows << " " << problem.describe() << " H " << s.heads << "/" << s.kv_heads);
  for (int dst = 0; dst < k; ++dst) {
    for (int src = 0; src < k; ++src) {
      if (src == dst) continue;
      const std::vector<KvSlab> slabs = plan.needed(src, dst);
      // Every (query row, head, pair) of dst: its keys on src per the definition, and what arrives.
      int64_t minimum_rows = 0;
      for (int p = 0; p < static_cast<int>(pairs.size()); ++p) {
        std::set<std::tuple<int64_t, int64_t, int64_t>> needed_rows;  // (batch, kv head, key)
        for (int64_t b = 0; b < s.batch; ++b) {
          for (int64_t i : layout.positions(dst)) {
            for (int64_t h = 0; h < s.heads; ++h) {
              const std::multiset<int64_t> want = keys_of(problem, layout, src, p, i, h);
              for (int64_t j : want) needed_rows.insert({b, problem.kv_head_of(h), j});
              std::multiset<int64_t> got;
              for (const KvSlab& slab : slabs) {
                if (slab.batch != b || slab.pair != p || slab.kv_head != problem.kv_head_of(h) ||
                    slab.offset != h % pairs[p].dilation || !in_range(slab.block, i)) {
                  continue;
                }
                for (int64_t n = 0; n < slab.keys.count; ++n) {
                  if (band.visible(i, slab.keys.at(n))) got.insert(slab.keys.at(n));
                }
              }
              ASSERT_EQ(want, got) << "row " << i << " head " << h << " pair " << p << " from rank " << src
                                   << " to rank " << dst;
            }
          }
        }
        minimum_rows += static_cast<int64_t>(needed_rows.size());
      }
      int64_t sent_rows = 0;
      std::set<std::tuple<int64_t, int, int64_t, int64_t>> distinct;  // (batch, pair, kv head, key)
      for (const KvSlab& slab : slabs) {
        sent_rows += slab.keys.count;
        for (int64_t n = 0; n < slab.keys.count; ++n) {
          const int64_t key = slab.keys.at(n);
          ASSERT_EQ(layout.owner(key), src);
          ASSERT_EQ(layout.local_row(key), slab.key_local + n * slab.key_local_stride);
          ASSERT_TRUE(distinct.insert({slab.batch, slab.pair, slab.kv_head, key}).second) << "key " << key << " twice";
        }
      }
      if (exact) {
        EXPECT_EQ(sent_rows, minimum_rows) << "rank " << src << " -> " << dst << " moves more than its peer reads";
      } else {
        EXPECT_GE(sent_rows, minimum_rows);
      }
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
  // Where transfers are cut. A row's work, counted here from the definition: dst's query rows
  // of its block that see it, times the q heads reading its offset; the plan's row_work must
  // agree. Each message of a transfer holds about 1/chunks of the transfer's work (at most one
  // row's work more), unless the cap forced the cuts (then some message is at the cap).
  for (int dst = 0; dst < k; ++dst) {
    std::map<int, std::vector<const Message*>> by_shift;
    for (const PlanStep& step : schedules[dst]) by_shift[step.shift].push_back(&step.recv);
    for (const auto& [shift, messages] : by_shift) {
      std::vector<double> work;  // per message
      double total = 0.0, heaviest_row = 0.0;
      int64_t fullest = 0;
      for (const Message* m : messages) {
        std::vector<int64_t> counted;
        for (const KvSlab& slab : m->slabs) {
          int64_t heads = 0;
          for (int64_t h = 0; h < s.heads; ++h) {
            heads += problem.kv_head_of(h) == slab.kv_head && h % pairs[slab.pair].dilation == slab.offset;
          }
          for (int64_t n = 0; n < slab.keys.count; ++n) {
            int64_t queries = 0;
            for (int64_t at = 0; at < slab.block.count; ++at) {
              const int64_t qp = slab.block.at(at);
              queries += layout.owner(qp) == dst && band.visible(qp, slab.keys.at(n));
            }
            counted.push_back(heads * queries);
          }
        }
        EXPECT_EQ(plan.row_work(dst, m->slabs), counted) << "rank " << dst << ", shift " << shift;
        double w = 0.0;
        for (int64_t c : counted) {
          w += static_cast<double>(c);
          heaviest_row = std::max(heaviest_row, static_cast<double>(c));
        }
        work.push_back(w);
        total += w;
        fullest = std::max(fullest, m->rows);
      }
      if (fullest == cap_rows) continue;
      if (balanced && work.size() > 1 && total > 0.0) ++*balanced;
      for (size_t c = 0; c < work.size(); ++c) {
        EXPECT_LE(work[c], total / static_cast<double>(work.size()) + heaviest_row + 1e-9)
            << "rank " << dst << ", shift " << shift << ", chunk " << c << " of " << work.size();
      }
    }
  }
}

void check_plan(const Problem& problem, int k, int64_t cap_rows) {
  check_plan(problem, ShardLayout(problem.shape.seq, k), cap_rows);
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

// Every layout x documents x window x causal x config: the same exact delivery.
TEST(Plan, LayoutsDocumentsAndWindowsDeliverExactlyTheNeededKeys) {
  const std::vector<std::string> layouts = {"contiguous", "zigzag", "striped", "striped:3"};
  const int64_t seq = 37;
  const std::vector<std::vector<int64_t>> documents = {{}, {1, 20, 3, 13}, {30, 1, 6}};
  for (int k : {2, 3, 4}) {
    for (const std::string& name : layouts) {
      const ShardLayout layout(seq, k, LayoutSpec::parse(name));
      for (const auto& docs : documents) {
        for (int64_t window : {0, 1, 3, 50}) {
          for (const auto& c : test::standard_configs()) {
            Problem p = test::make_problem(1, seq, c.heads, c.kv_heads, 4, c.pairs, c.causal);
            p.config.doc_lens = docs;
            p.config.window = window;
            check_plan(p, layout, 1 << 20);
          }
        }
      }
    }
  }
}

TEST(Plan, ChunkingSplitsMessagesButNotTheDelivery) {
  for (int64_t cap : {1, 2, 5, 17}) {
    for (const auto& c : test::standard_configs()) {
      check_plan(test::make_problem(1, 61, c.heads, c.kv_heads, 4, c.pairs, c.causal), 3, cap);
      check_plan(test::make_problem(2, 29, c.heads, c.kv_heads, 4, c.pairs, c.causal), 4, cap);
      Problem p = test::make_problem(1, 40, c.heads, c.kv_heads, 4, c.pairs, c.causal);
      p.config.doc_lens = {7, 25, 8};
      p.config.window = 6;
      check_plan(p, ShardLayout(40, 3, LayoutSpec::parse("zigzag")), cap);
    }
  }
}

// Ranks run a shift's chunks in lockstep, so each transfer is cut by work, not rows: a causal
// LongNet transfer whose rows are read by very different numbers of queries, and transfers of
// different lengths in one shift (zigzag), each spread over all of the shift's chunks.
TEST(Plan, TransfersAreCutIntoEqualWork) {
  int64_t checked = 0;
  for (const char* name : {"contiguous", "zigzag", "striped"}) {
    for (int k : {2, 3, 4}) {
      Problem p = test::make_problem(1, 97, 4, 2, 4, {{8, 1}, {24, 2}, {97, 4}}, true);
      for (int64_t cap : {97 / 8, 97 / 5, 97 / 3}) check_plan(p, ShardLayout(97, k, LayoutSpec::parse(name)), cap, &checked);
    }
  }
  EXPECT_GT(checked, 20) << "the balance check must cover multi-message transfers";
}

// A straightforward schedule, from positions rather than progression arithmetic, in the plan's
// documented order: batch, pair, document, segment, kv head, offset, the sender's pieces of the
// block (ShardLayout::pieces, checked on its own by Layout.PiecesHoldEachRowOfABlockOnce) by
// first position, and in each piece the stretches of keys some run piece of dst reaches (merged
// where they touch); cut where a transfer's work reaches c / chunks.
namespace straightforward {

// A rank's rows of `block`, one piece per run that holds some, by first position.
std::vector<Piece> run_pieces(const ShardLayout& layout, int rank, const StridedRange& block) {
  std::vector<Piece> out;
  for (const ShardRun& run : layout.runs(rank)) {
    std::vector<int64_t> held;
    for (int64_t n = 0; n < block.count; ++n) {
      const int64_t pos = block.at(n);
      if (in_range(run.pos, pos)) held.push_back(pos);
    }
    if (held.empty()) continue;
    const int64_t stride = std::lcm(block.stride, run.pos.stride);
    out.push_back(Piece{StridedRange{held.front(), static_cast<int64_t>(held.size()), stride}, run.local(held.front()),
                        stride / run.pos.stride * run.local_stride});
  }
  std::sort(out.begin(), out.end(), [](const Piece& a, const Piece& b) { return a.pos.first < b.pos.first; });
  return out;
}

std::vector<KvSlab> needed(const Problem& problem, const ShardLayout& layout, int src, int dst) {
  std::vector<KvSlab> slabs;
  if (src == dst) return slabs;
  const Band band = Band::of(problem.config);
  const Documents docs(problem);
  const std::vector<DilatedPair> pairs = problem.pairs();
  int64_t row = 0;
  for (int64_t b = 0; b < problem.shape.batch; ++b) {
    for (int p = 0; p < static_cast<int>(pairs.size()); ++p) {
      for (int64_t d = 0; d < docs.count(); ++d) {
        const PairGeometry geom(pairs[p], docs.begin(d), docs.end(d));
        for (int64_t seg = 0; seg < geom.segment_count(); ++seg) {
          for (int64_t g = 0; g < problem.shape.kv_heads; ++g) {
            std::set<int64_t> offsets;
            for (int64_t h = 0; h < problem.shape.heads; ++h) {
              if (problem.kv_head_of(h) == g) offsets.insert(h % geom.r);
            }
            for (int64_t off : offsets) {
              const StridedRange block = geom.block(seg, off);
              const std::vector<Piece> queries = run_pieces(layout, dst, block);
              for (const Piece& keys : layout.pieces(block, src)) {
                std::vector<bool> reached(static_cast<size_t>(keys.pos.count), false);
                for (int64_t n = 0; n < keys.pos.count; ++n) {
                  for (const Piece& q : queries) {
                    const int64_t kp = keys.pos.at(n);
                    reached[n] = reached[n] || (q.pos.first - kp <= band.hi && q.pos.last() - kp >= band.lo);
                  }
                }
                for (int64_t n = 0; n < keys.pos.count;) {
                  if (!reached[n]) {
                    ++n;
                    continue;
                  }
                  int64_t end = n;
                  while (end < keys.pos.count && reached[end]) ++end;
                  KvSlab slab;
                  slab.batch = b;
                  slab.pair = p;
                  slab.kv_head = g;
                  slab.offset = off;
                  slab.block = block;
                  slab.keys = StridedRange{keys.pos.at(n), end - n, keys.pos.stride};
                  slab.key_local = keys.local + n * keys.local_stride;
                  slab.key_local_stride = keys.local_stride;
                  slab.message_row = row;
                  row += end - n;
                  slabs.push_back(slab);
                  n = end;
                }
              }
            }
          }
        }
      }
    }
  }
  return slabs;
}

// Work of one key row on dst: dst's query rows of its block that see it, times the q heads
// reading its (kv head, offset).
int64_t work(const Problem& problem, const ShardLayout& layout, int dst, const KvSlab& slab, int64_t key) {
  const Band band = Band::of(problem.config);
  int64_t heads = 0, queries = 0;
  for (int64_t h = 0; h < problem.shape.heads; ++h) {
    heads += problem.kv_head_of(h) == slab.kv_head && h % problem.pairs()[slab.pair].dilation == slab.offset;
  }
  for (int64_t n = 0; n < slab.block.count; ++n) {
    queries += layout.owner(slab.block.at(n)) == dst && band.visible(slab.block.at(n), key);
  }
  return heads * queries;
}

std::vector<Message> split(const Problem& problem, const ShardLayout& layout, int64_t cap, int src, int dst,
                           int64_t chunks) {
  const std::vector<KvSlab> slabs = needed(problem, layout, src, dst);
  std::vector<int64_t> done = {0};  // work of the first n rows
  for (const KvSlab& slab : slabs) {
    for (int64_t n = 0; n < slab.keys.count; ++n) done.push_back(done.back() + work(problem, layout, dst, slab, slab.keys.at(n)));
  }
  const int64_t total = static_cast<int64_t>(done.size()) - 1;
  if (done.back() == 0) {
    for (int64_t n = 0; n <= total; ++n) done[n] = n;
  }
  std::vector<int64_t> cut(static_cast<size_t>(chunks) + 1, 0);
  for (int64_t c = 0; c + 1 < chunks; ++c) {
    int64_t at = 0;  // the fewest rows whose work reaches (c + 1) / chunks of the whole
    while (at < total && done[at] * chunks < done.back() * (c + 1)) ++at;
    at = std::max(at, total - (chunks - 1 - c) * cap);
    cut[c + 1] = std::clamp(at, cut[c], std::min(total, cut[c] + cap));
  }
  cut[chunks] = total;
  std::vector<Message> messages(static_cast<size_t>(chunks));
  int64_t row = 0;
  for (const KvSlab& slab : slabs) {
    int64_t previous = -1;  // the message of the slab's previous row
    for (int64_t n = 0; n < slab.keys.count; ++n, ++row) {
      int64_t c = 0;
      while (cut[c + 1] <= row) ++c;
      Message& m = messages[c];
      if (c == previous) {
        ++m.slabs.back().keys.count;
      } else {
        KvSlab part = slab;
        part.keys = StridedRange{slab.keys.at(n), 1, slab.keys.stride};
        part.key_local = slab.key_local + n * slab.key_local_stride;
        part.message_row = m.rows;
        m.slabs.push_back(part);
      }
      previous = c;
      m.src = src;
      m.dst = dst;
      ++m.rows;
    }
  }
  return messages;
}

std::vector<PlanStep> schedule(const Problem& problem, const ShardLayout& layout, int64_t cap, int rank) {
  const int k = layout.world_size();
  std::vector<PlanStep> steps;
  for (int shift = 1; shift < k; ++shift) {
    int64_t chunks = 0;
    for (int src = 0; src < k; ++src) {
      int64_t rows = 0;
      for (const KvSlab& slab : needed(problem, layout, src, (src + shift) % k)) rows += slab.keys.count;
      chunks = std::max(chunks, (rows + cap - 1) / cap);
    }
    if (chunks == 0) continue;
    const std::vector<Message> sends = split(problem, layout, cap, rank, (rank + shift) % k, chunks);
    const std::vector<Message> recvs = split(problem, layout, cap, (rank - shift + k) % k, rank, chunks);
    for (int64_t c = 0; c < chunks; ++c) steps.push_back(PlanStep{shift, c, sends[c], recvs[c]});
  }
  return steps;
}

}  // namespace straightforward

void expect_same_message(const Message& got, const Message& want, const char* what) {
  EXPECT_EQ(got.src, want.src) << what;
  EXPECT_EQ(got.dst, want.dst) << what;
  EXPECT_EQ(got.rows, want.rows) << what;
  EXPECT_EQ(got.slabs, want.slabs) << what;
}

// The plan's slabs and schedules, field by field, against the straightforward ones on random
// small problems: whatever makes the plan fast must not change what it says.
TEST(Plan, ScheduleMatchesAStraightforwardOne) {
  std::mt19937 rng(20261202);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const std::vector<std::vector<DilatedPair>> configs = {
      {}, {{16, 1}}, {{8, 1}, {24, 2}, {64, 4}}, {{12, 3}, {1000, 4}}, {{6, 2}, {6, 2}}, {{4, 4}, {20, 2}}};
  const std::vector<std::pair<int64_t, int64_t>> heads = {{2, 2}, {4, 4}, {4, 2}, {6, 3}, {4, 1}};
  for (int trial = 0; trial < 300; ++trial) {
    const int k = static_cast<int>(pick(1, 5));
    const int64_t seq = pick(2 * k, 70);
    const auto [h, hkv] = heads[pick(0, heads.size() - 1)];
    Problem p = test::make_problem(pick(1, 2), seq, h, hkv, 4, configs[pick(0, configs.size() - 1)], pick(0, 1) == 1);
    if (pick(0, 2) == 0) {  // packed documents
      for (int64_t left = seq; left > 0; left -= p.config.doc_lens.back()) p.config.doc_lens.push_back(pick(1, left));
    }
    const int64_t windows[] = {0, 0, 1, pick(2, 12), seq + 5};
    p.config.window = windows[pick(0, 4)];
    std::string name = std::vector<std::string>{"contiguous", "zigzag", "striped"}[pick(0, 2)];
    if (name == "striped") name.append(":").append(std::to_string(pick(1, (seq - 1) / std::max(k - 1, 1))));
    const ShardLayout layout(seq, k, LayoutSpec::parse(name));
    const int64_t cap = pick(1, seq);
    const ExchangePlan plan(p, layout, cap);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": seq " << seq << " k " << k << " " << name << " cap " << cap
                                    << " " << p.describe() << " H " << h << "/" << hkv << " B " << p.shape.batch);
    for (int src = 0; src < k; ++src) {
      for (int dst = 0; dst < k; ++dst) ASSERT_EQ(plan.needed(src, dst), straightforward::needed(p, layout, src, dst));
    }
    for (int rank = 0; rank < k; ++rank) {
      const std::vector<PlanStep> got = plan.schedule(rank);
      const std::vector<PlanStep> want = straightforward::schedule(p, layout, cap, rank);
      ASSERT_EQ(got.size(), want.size()) << "rank " << rank;
      for (size_t i = 0; i < got.size(); ++i) {
        SCOPED_TRACE(testing::Message() << "rank " << rank << " step " << i);
        EXPECT_EQ(got[i].shift, want[i].shift);
        EXPECT_EQ(got[i].chunk, want[i].chunk);
        expect_same_message(got[i].send, want[i].send, "send");
        expect_same_message(got[i].recv, want[i].recv, "receive");
        if (HasFailure()) return;  // the first difference says enough
      }
    }
  }
}

// striped:N holds a rank's rows as N runs (row c of each of its stripes), so a block a few stripe
// periods long meets all N runs but only a few stripes. The plan's slabs must follow the stripes
// there: a few per block that both ranks hold rows of (each meets at most 3 of a rank's stripes
// below, or 2 runs in the long dilated pair), not one per run (16 per block, 1.4 M slabs per rank
// at S = 1M, k = 8, 32/8 heads with striped:64 and 1024-row segments before).
TEST(Plan, StripedSlabsGrowWithBlocksNotWithTheStripe) {
  const int64_t seq = 8192, stripe = 16;
  const int k = 4;
  const Problem p = test::make_problem(1, seq, 8, 2, 4, {{128, 1}, {96, 2}, {8192, 8}}, true);
  const ShardLayout layout(seq, k, LayoutSpec::parse("striped:" + std::to_string(stripe)));
  const ExchangePlan plan(p, layout, 1 << 20);
  const Documents docs(p);
  for (int src = 0; src < k; ++src) {
    for (int dst = 0; dst < k; ++dst) {
      if (src == dst) continue;
      int64_t shared = 0;  // blocks (pair, segment, kv head, offset) holding rows of both
      for (const DilatedPair& pair : p.pairs()) {
        const PairGeometry geom(pair, docs.begin(0), docs.end(0));
        for (int64_t seg = 0; seg < geom.segment_count(); ++seg) {
          for (int64_t g = 0; g < p.shape.kv_heads; ++g) {
            for (int64_t off : offsets_of_kv_head(p, geom.r, g)) {
              const StridedRange block = geom.block(seg, off);
              bool in_src = false, in_dst = false;
              for (int64_t n = 0; n < block.count; ++n) {
                in_src = in_src || layout.owner(block.at(n)) == src;
                in_dst = in_dst || layout.owner(block.at(n)) == dst;
              }
              shared += in_src && in_dst;
            }
          }
        }
      }
      const size_t slabs = plan.needed(src, dst).size();
      EXPECT_GT(slabs, 0u);
      EXPECT_LE(slabs, static_cast<size_t>(3 * shared)) << "rank " << src << " -> " << dst;
    }
  }
}

// A window much smaller than a shard: each rank receives W-1 rows per kv head from its left
// neighbour (causal) or from both neighbours, and nothing from anyone else.
TEST(Plan, SlidingWindowMovesOnlyTheBoundaryRows) {
  const int64_t S = 400, H = 2, W = 9;
  for (bool causal : {false, true}) {
    const Problem p = [&] {
      Problem q = test::make_problem(1, S, H, 1, 8, {}, causal);
      q.config.window = W;
      return q;
    }();
    const ExchangePlan plan(p, 4, 1 << 20);
    for (int t = 0; t < 4; ++t) {
      for (int src = 0; src < 4; ++src) {
        int64_t rows = 0;
        for (const KvSlab& slab : plan.needed(src, t)) rows += slab.keys.count;
        const bool left = src == t - 1, right = src == t + 1 && !causal;
        EXPECT_EQ(rows, left || right ? W - 1 : 0) << "rank " << src << " -> " << t << " causal " << causal;
      }
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
