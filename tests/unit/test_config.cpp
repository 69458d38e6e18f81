// test_config.cpp — validation of shapes and (segment, dilation) pairs, derived quantities.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "dring/core/problem.hpp"
#include "dring/core/error.hpp"
#include "test_util.hpp"

namespace dring {
namespace {

std::string validation_error(const Problem& p) {
  try {
    validate(p);
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(Config, AcceptsValidProblems) {
  for (const auto& c : test::standard_configs()) {
    EXPECT_EQ(validation_error(test::make_problem(2, 37, c.heads, c.kv_heads, 8, c.pairs, c.causal)), "") << c.name;
  }
}

TEST(Config, RejectsEachBadFieldWithItsName) {
  EXPECT_NE(validation_error(test::make_problem(0, 10, 2, 2, 8, {}, false)).find("batch"), std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 0, 2, 2, 8, {}, false)).find("sequence length"), std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 0, 1, 8, {}, false)).find("heads"), std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 4, 3, 8, {}, false)).find("multiple of kv heads"),
            std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 2, 2, 0, {}, false)).find("head dim"), std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 2, 2, 8, {{6, 4}}, false)).find("not a multiple of its dilation"),
            std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 2, 2, 8, {{8, 2}, {0, 1}}, false)).find("pair 2"),
            std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 2, 2, 8, {{8, -2}}, false)).find("dilation rate -2"),
            std::string::npos);
  EXPECT_NE(validation_error(test::make_problem(1, 10, 2, 2, 8, {}, false, NAN)).find("scale"), std::string::npos);
}

TEST(Config, DenseIsTheSinglePairOfTheWholeSequence) {
  const Problem p = test::make_problem(1, 37, 2, 2, 16, {}, false);
  ASSERT_EQ(p.pairs().size(), 1u);
  EXPECT_EQ(p.pairs()[0], (DilatedPair{37, 1}));
  EXPECT_DOUBLE_EQ(p.scale(), 0.25);
  EXPECT_DOUBLE_EQ(p.forward_flops(), 4.0 * 16 * 37 * 37 * 2);
}

TEST(Config, FlopsCountSelectedRowsOfEverySegment) {
  // seq 10, pair (4, 2): segments [0,4) [4,8) [8,10); head 0 takes offsets 0 -> 2,2,1 rows,
  // head 1 takes offset 1 -> 2,2,1 rows. Scores: (4+4+1) per head.
  const Problem p = test::make_problem(1, 10, 2, 2, 8, {{4, 2}}, false);
  EXPECT_DOUBLE_EQ(p.forward_flops(), 4.0 * 8 * (9 + 9));
  const Problem causal = test::make_problem(1, 10, 2, 2, 8, {{4, 2}}, true);
  EXPECT_DOUBLE_EQ(causal.forward_flops(), 4.0 * 8 * (7 + 7));
}

}  // namespace
}  // namespace dring
