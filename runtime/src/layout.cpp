// layout.cpp — construction checks of the shard layout.
#include "dring/runtime/layout.hpp"

#include "dring/core/error.hpp"

namespace dring {

ShardLayout::ShardLayout(int64_t seq, int world_size)
    : seq_(seq), world_size_(world_size), base_(0), remainder_(0) {
  DRING_CHECK(world_size >= 1, Status::kInvalidArgument, "world size must be at least 1");
  DRING_CHECK(seq >= world_size, Status::kInvalidArgument,
              "sequence length " << seq << " is shorter than the number of ranks " << world_size
                                 << " (every rank needs at least one token)");
  base_ = seq / world_size;
  remainder_ = seq % world_size;
}

}  // namespace dring
