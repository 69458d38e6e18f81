// generate_command.cpp — `dring generate`: the synthetic inputs of a seed, written to HDF5.
// `dring run --input` on this file computes exactly what `dring run --seed` computes. With
// --doc-lens the file also holds the documents as cu_seqlens.
#include "commands.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_check.hpp"
#include "dring/runtime/hdf5_io.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/node.hpp"
#include "dring/runtime/shard.hpp"
#include "dring/runtime/synthetic.hpp"

namespace dring::cli {

int generate_command(MPI_Comm comm, const GenerateOptions& o) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));
  Problem problem;
  problem.shape = AttentionShape{o.shape.batch, o.shape.seq, o.shape.heads, o.shape.kv_heads.value_or(o.shape.heads),
                                 o.shape.head_dim};
  problem.config.doc_lens = o.doc_lens;
  agree(comm, [&] {
    try {
      validate(problem);
    } catch (const Error& e) {
      if (o.doc_lens.empty()) throw;
      DRING_FAIL(e.status(), "--doc-lens: " << e.what());
    }
    ShardLayout(problem.shape.seq, world);
  });
  const AttentionShape& s = problem.shape;
  const ShardLayout layout(s.seq, world);
  const int threads = default_threads(comm);
  MemoryTracker tracker;
  std::unique_ptr<Backend> backend = make_cpu_backend(tracker, threads);
  ShardBuffers shard = allocate_shard(s, layout, rank, backend->allocator());
  fill_synthetic_shard(o.shape.seed, s, shard, *backend, tracker, threads);
  const bool fp64 = o.dtype == "fp64";

  // Every write is collective and agrees on its own outcome: dout is made (and agreed on) first.
  Buffer<float> dout;
  if (o.dout) {
    agree(comm, [&] {
      dout = Buffer<float>(tracker, shard.q.size(), MemCategory::kInputs);
      fill_synthetic(o.shape.seed, TensorId::kDout, s, shard.runs, shard.rows, dout.data(), threads);
    });
  }
  const int64_t q_bytes = s.batch * s.seq * s.heads * s.head_dim * (fp64 ? 8 : 4);
  const int64_t kv_bytes = s.batch * s.seq * s.kv_heads * s.head_dim * (fp64 ? 8 : 4);
  h5::OutputFile file(o.output, comm, (int64_t{64} << 10) + q_bytes * (o.dout ? 2 : 1) + 2 * kv_bytes);
  file.write_rows("q", {s.batch, s.seq, s.heads, s.head_dim}, 1, shard.runs, shard.q.f32(), fp64);
  file.write_rows("k", {s.batch, s.seq, s.kv_heads, s.head_dim}, 1, shard.runs, shard.k.f32(), fp64);
  file.write_rows("v", {s.batch, s.seq, s.kv_heads, s.head_dim}, 1, shard.runs, shard.v.f32(), fp64);
  if (o.dout) {
    file.write_rows("dout", {s.batch, s.seq, s.heads, s.head_dim}, 1, shard.runs, dout.data(), fp64);
  }
  if (!o.doc_lens.empty()) file.write_int64("cu_seqlens", h5::to_cu_seqlens(o.doc_lens));
  file.commit();
  return 0;
}

}  // namespace dring::cli
