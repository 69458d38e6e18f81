// dring/hdf5_io.hpp — the file format (docs/file-format.md): inputs q, k, v (and dout) shaped
// [B, S, H or Hkv, D] in float32 or float64, optionally cu_seqlens [N+1] (packed documents);
// outputs out [B, S, H, D] and lse [B, H, S] in float32, written by all ranks into one file with
// parallel HDF5, configuration as attributes. Files hold rows in natural order whatever the
// layout: a rank reads and writes the union of its runs (layout.hpp).
//
// Inspection is serial (one rank looks, the caller agrees on the outcome); shard reads and writes
// are collective. An output is written under a temporary name and renamed only when complete, so
// an existing file is never left half written.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dring/core/error.hpp"
#include "dring/core/problem.hpp"
#include "dring/kernels/reference.hpp"
#include "dring/runtime/layout.hpp"

namespace dring::h5 {

struct InputDescription {
  AttentionShape shape;
  std::string q_dtype, k_dtype, v_dtype;  // "float32" or "float64"
  bool has_dout = false;
  // Document lengths from the optional dataset cu_seqlens ([0, l1, l1+l2, ..., S], int32 or
  // int64); empty when the file has none.
  std::vector<int64_t> doc_lens;
};

// Serial. Throws Error naming the file, the dataset and the problem: missing or unreadable file,
// not HDF5, missing dataset, wrong rank, k/v inconsistent with q, unsupported dtype, a cu_seqlens
// that is not 1-D integers, does not start at 0, is not increasing or does not end at S.
InputDescription inspect_input(const std::string& path);

// Document lengths as cu_seqlens ([0, l1, l1+l2, ..., S]) and back. from_cu_seqlens throws
// Error(kInvalidArgument) naming `what` unless the offsets start at 0, increase strictly and end
// at `seq`.
std::vector<int64_t> to_cu_seqlens(const std::vector<int64_t>& doc_lens);
std::vector<int64_t> from_cu_seqlens(const std::vector<int64_t>& cu_seqlens, int64_t seq, const std::string& what);

// Collective. Reads rows [begin, begin+rows) of every batch of dataset `name` (seq is axis 1)
// into `out` as float32: [B, rows, heads, D].
void read_rows(const std::string& path, MPI_Comm comm, const char* name, int64_t begin, int64_t rows, float* out);
// Collective. Reads the rows of `runs` (`rows` in all) into `out` in local order: [B, rows, heads, D].
void read_rows(const std::string& path, MPI_Comm comm, const char* name, const std::vector<ShardRun>& runs,
               int64_t rows, float* out);

// Attributes stored with an output: enough to rerun or verify it.
struct RunAttributes {
  Problem problem;  // with its documents (attribute cu_seqlens) and window
  int world_size = 1;
  LayoutSpec layout;
  std::string backend = "cpu";
  std::string dtype = "fp32";
  std::optional<uint64_t> seed;  // synthetic inputs
  std::string input;             // input file, when not synthetic
};

// Collective writer of one file, atomic on success. Every method is collective and agrees on its
// outcome: a failure on any rank (a full disk, a quota, an I/O error, an unwritable directory)
// throws the same CollectiveError on every rank, after which the file is closed and the
// temporary removed. Do not wrap the methods in agree(): prepare their inputs in an agree() of
// their own first.
class OutputFile {
 public:
  // `expected_bytes` (when > 0) is reserved on disk at once, where the filesystem can, so a file
  // that cannot fit fails here with the reason (No space left on device, Disk quota exceeded).
  OutputFile(const std::string& path, MPI_Comm comm, int64_t expected_bytes = 0);
  ~OutputFile();  // without commit(): the temporary file is removed, the target untouched
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Creates dataset `name` of shape `dims` (float32) and writes this rank's rows [begin,
  // begin+rows) along axis `seq_axis`; `data` is the shard, contiguous.
  void write_rows(const char* name, const std::vector<int64_t>& dims, int seq_axis, int64_t begin, int64_t rows,
                  const float* data, bool store_float64 = false);
  // The same for a shard of any layout: the rows of `runs` along `seq_axis`, `data` in local order.
  void write_rows(const char* name, const std::vector<int64_t>& dims, int seq_axis, const std::vector<ShardRun>& runs,
                  const float* data, bool store_float64 = false);
  // Creates the 1-D int64 dataset `name` holding `values` (the same on every rank; rank 0 writes).
  void write_int64(const char* name, const std::vector<int64_t>& values);
  void write_attributes(const RunAttributes& attributes);
  // Closes the file and renames it into place (collective).
  void commit();
  // The temporary file the output is written to until commit().
  const std::string& temp_path() const { return temp_path_; }

 private:
  // Agrees on `local` (and clears it); on an agreed failure closes the file and removes the
  // temporary before the CollectiveError goes on.
  void settle(std::optional<Error>& local);
  std::string write_failure(const std::string& what) const;

  std::string path_;
  std::string temp_path_;
  MPI_Comm comm_;
  int rank_ = 0;
  int64_t file_ = -1;  // hid_t
  bool created_ = false;  // rank 0: the temporary exists
  bool committed_ = false;
};

// Serial: whether the file has a dataset of this name.
bool has_dataset(const std::string& path, const char* name);

// Reads the configuration attributes of an output written by `dring run`.
RunAttributes read_attributes(const std::string& path);

// Serial reads of boxes of one dataset, as double, keeping the file open between reads.
class DatasetReader {
 public:
  DatasetReader(const std::string& path, const char* name);
  ~DatasetReader();
  DatasetReader(const DatasetReader&) = delete;
  DatasetReader& operator=(const DatasetReader&) = delete;
  const std::vector<int64_t>& dims() const { return dims_; }
  // The box start + n*stride (n < count) along each axis, row-major into `out`.
  void read(const std::vector<int64_t>& start, const std::vector<int64_t>& stride, const std::vector<int64_t>& count,
            double* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<int64_t> dims_;
};

// A RowSource reading key and value rows from an input file on demand (serial, any rank).
class FileRowSource final : public reference::RowSource {
 public:
  explicit FileRowSource(const std::string& path);
  ~FileRowSource() override = default;
  FileRowSource(const FileRowSource&) = delete;
  FileRowSource& operator=(const FileRowSource&) = delete;
  void q_row(int64_t batch, int64_t pos, int64_t head, double* out) const override;
  void kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const override;
  bool has_dout() const override { return dout_ != nullptr; }
  void dout_row(int64_t batch, int64_t pos, int64_t head, double* out) const override;

 private:
  DatasetReader q_, k_, v_;
  std::unique_ptr<DatasetReader> dout_;  // when the file has one
};

}  // namespace dring::h5
