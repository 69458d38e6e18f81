// fuzz_hdf5_input.cpp — libFuzzer target: an input file of `dring run --input`, as arbitrary bytes.
//
// The bytes are written to a temporary file and read the way `dring run --input` reads it, in
// one process: inspect_input (rank 0's look at the file), validate() of the shape it found, then
// with parallel HDF5 on MPI_COMM_SELF every row of q, k, v (and dout when present) as float32,
// and the non-finite check; then the serial row reader of --check (FileRowSource). Files whose
// datasets would not fit a small buffer stop after validation (a real run would allocate them).
//
// Findings: every sanitizer report, any exception other than a clean dring::Error
// (fuzz_util.hpp), and any HDF5 file or object dring leaves open (counted around each input).
// HDF5 1.10 itself loses memory on some corrupt files (an object header it began to decode, in
// its metadata cache); tests/fuzz/lsan.supp suppresses leaks allocated inside libhdf5 for that
// reason, and the count of open objects replaces it for dring: an HDF5 resource dring leaked
// would hang off an open identifier, still reachable (so LeakSanitizer would not see it anyway).
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dring/core/problem.hpp"
#include "dring/runtime/hdf5_io.hpp"
#include "dring/runtime/layout.hpp"
#include "dring/runtime/shard.hpp"
#include "fuzz_util.hpp"

namespace {

// Elements read per dataset at most (1 MiB of float32).
constexpr int64_t kMaxElements = int64_t{1} << 18;

std::string g_path;

// Open files, groups, datasets, named datatypes and attributes, of every file. (HDF5 1.10 does not
// count dataspaces and property lists for a caller; dring holds each of those in a Handle too.)
ssize_t open_objects() { return H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_ALL); }

void remove_file() { std::remove(g_path.c_str()); }

void write_file(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(g_path.c_str(), "wb");
  if (f == nullptr) dring::fuzz::finding("cannot write the temporary input file");
  if (size > 0 && std::fwrite(data, 1, size, f) != size) dring::fuzz::finding("cannot write the temporary input file");
  std::fclose(f);
}

void read_dataset(const dring::Problem& problem, const char* name, int64_t heads) {
  const dring::AttentionShape& s = problem.shape;
  // As run_command.cpp with one rank: that rank's shard is the whole sequence.
  const dring::ShardLayout layout(s.seq, 1);
  std::vector<float> rows(static_cast<size_t>(s.batch * layout.size(0) * heads * s.head_dim));
  dring::h5::read_rows(g_path, MPI_COMM_SELF, name, layout.begin(0), layout.size(0), rows.data());
  dring::check_finite(MPI_COMM_SELF, s, layout.runs(0), layout.size(0), name, rows.data(), heads);
}

void read_like_check(const dring::Problem& problem) {
  const dring::AttentionShape& s = problem.shape;
  const dring::h5::FileRowSource source(g_path);
  // The last query row, and every other key row, as --check reads them.
  const dring::StridedRange keys{0, (s.seq + 1) / 2, 2};
  std::vector<double> q(static_cast<size_t>(s.head_dim)), k(static_cast<size_t>(keys.count * s.head_dim)), v(k.size());
  source.q_row(s.batch - 1, s.seq - 1, s.heads - 1, q.data());
  source.kv_rows(0, s.kv_heads - 1, keys, k.data(), v.data());
  if (source.has_dout()) source.dout_row(0, 0, 0, q.data());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  const char* dir = std::getenv("TMPDIR");
  g_path = std::string(dir != nullptr ? dir : "/tmp") + "/dring-fuzz-input-" + std::to_string(getpid()) + ".h5";
  std::atexit(remove_file);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dring;
  write_file(data, size);
  const ssize_t before = open_objects();
  Problem problem;
  bool has_dout = false;
  const bool valid = fuzz::run_clean([&] {
    const h5::InputDescription d = h5::inspect_input(g_path);
    problem.shape = d.shape;
    has_dout = d.has_dout;
    validate(problem);
  });
  const AttentionShape& s = problem.shape;
  if (valid && s.batch * s.seq * s.heads * s.head_dim <= kMaxElements) {
    fuzz::run_clean([&] {
      read_dataset(problem, "q", s.heads);
      read_dataset(problem, "k", s.kv_heads);
      read_dataset(problem, "v", s.kv_heads);
      if (has_dout) read_dataset(problem, "dout", s.heads);
    });
    fuzz::run_clean([&] { read_like_check(problem); });
  }
  if (open_objects() != before) fuzz::finding("dring left an HDF5 file or object open");
  return 0;
}
