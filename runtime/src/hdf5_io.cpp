// hdf5_io.cpp — HDF5 inputs and outputs (see hdf5_io.hpp and docs/file-format.md).
#include "dring/runtime/hdf5_io.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_check.hpp"
#include "dring/config.h"
#include "dring/core/error.hpp"

static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t in headers");

#define DRING_H5_CHECK(expr, msg)                                 \
  do {                                                            \
    if ((expr) < 0) DRING_FAIL(::dring::Status::kIoError, msg);   \
  } while (0)

namespace dring::h5 {

namespace {

// Reserves `bytes` of disk for the file behind `fd` without changing its size: 0, or an errno.
int posix_reserve(int fd, int64_t bytes) {
  if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes)) == 0) return 0;
  return errno;
}

std::string bytes_text(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

// HDF5 prints its error stack by default; dring reports one line of its own instead.
void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// Move-only owner of an HDF5 identifier.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

Handle open_serial(const std::string& path) {
  quiet();
  DRING_CHECK(access(path.c_str(), F_OK) == 0, Status::kIoError,
              "cannot read " << path << ": " << std::strerror(ENOENT));
  DRING_CHECK(access(path.c_str(), R_OK) == 0, Status::kIoError, "cannot read " << path << ": " << std::strerror(EACCES));
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  DRING_CHECK(is_hdf5 > 0, Status::kIoError, path << " is not an HDF5 file");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DRING_CHECK(file.valid(), Status::kIoError, "cannot open " << path << " as HDF5");
  return file;
}

Handle open_dataset(hid_t file, const std::string& path, const char* name) {
  const htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
  DRING_CHECK(exists > 0, Status::kIoError, path << ": dataset '" << name << "' is missing");
  Handle dataset(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  DRING_CHECK(dataset.valid(), Status::kIoError, path << ": '" << name << "' is not a dataset");
  return dataset;
}

std::vector<int64_t> dataset_dims(hid_t dataset) {
  Handle space(H5Dget_space(dataset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> dims(rank > 0 ? rank : 0);
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

// "float32" / "float64", or an error naming what the dataset holds.
std::string dataset_dtype(hid_t dataset, const std::string& path, const char* name) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  if (cls == H5T_FLOAT && size == 4) return "float32";
  if (cls == H5T_FLOAT && size == 8) return "float64";
  std::string what;
  switch (cls) {
    case H5T_FLOAT: what = size == 2 ? "float16" : "float" + std::to_string(8 * size); break;
    case H5T_INTEGER: what = "integer" + std::to_string(8 * size); break;
    case H5T_STRING: what = "string"; break;
    case H5T_COMPOUND: what = "compound"; break;
    default: what = "non-numeric"; break;
  }
  DRING_FAIL(Status::kUnsupported, path << ": dataset '" << name << "' has unsupported dtype " << what
                                        << " (the cpu backend reads float32 or float64)");
}

// A compact dataset keeps its values in its object header, and HDF5 1.10.8 copies as many bytes
// from there as the shape needs, past the end of a header that holds fewer: a corrupt file (found
// by tests/fuzz: 'k' of 24 float64 with 8 bytes of compact storage) would make it read someone
// else's memory. Such a dataset is refused before any read.
void check_compact_storage(hid_t dataset, const std::string& path, const char* name) {
  Handle dcpl(H5Dget_create_plist(dataset), H5Pclose);
  if (H5Pget_layout(dcpl.get()) != H5D_COMPACT) return;
  Handle space(H5Dget_space(dataset), H5Sclose);
  Handle type(H5Dget_type(dataset), H5Tclose);
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  const size_t element = H5Tget_size(type.get());
  const hsize_t stored = H5Dget_storage_size(dataset);
  DRING_CHECK(points >= 0 && element > 0 && stored / element >= static_cast<hsize_t>(points), Status::kIoError,
              path << ": dataset '" << name << "' is corrupt: its compact storage holds " << stored
                   << " bytes, its shape needs " << points << " values of " << element << " bytes");
}

Handle file_access_mpi(MPI_Comm comm) {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  DRING_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL), "cannot set up parallel HDF5 access");
  return fapl;
}

Handle collective_transfer() {
  Handle dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  DRING_H5_CHECK(H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE), "cannot set up collective HDF5 transfer");
  return dxpl;
}

// Selects the rows of `runs` along `axis` of `dims`, everything else whole, as the union of one
// hyperslab per group of runs (runs of equal stride and count at consecutive first positions are
// one hyperslab of blocks: a striped layout is at most two). The memory space is the shard,
// [.., rows, ..] along `axis`, all selected: HDF5 pairs the two selections element by element in
// ascending order, and local rows are in ascending position order, so every row lands in place.
Handle select_runs(const std::vector<int64_t>& dims, int axis, const std::vector<ShardRun>& runs, Handle* memory) {
  std::vector<hsize_t> full(dims.begin(), dims.end());
  Handle space(H5Screate_simple(static_cast<int>(full.size()), full.data(), nullptr), H5Sclose);
  DRING_H5_CHECK(H5Sselect_none(space.get()), "cannot clear a selection");
  int64_t rows = 0;
  for (size_t n = 0; n < runs.size();) {
    const StridedRange& head = runs[n].pos;
    size_t block = 1;
    while (n + block < runs.size() && runs[n + block].pos.count == head.count &&
           runs[n + block].pos.stride == head.stride && runs[n + block].pos.first == head.first + int64_t(block) &&
           int64_t(block) < head.stride) {
      ++block;
    }
    std::vector<hsize_t> start(dims.size(), 0), stride(dims.size(), 1), count(full), blocks(dims.size(), 1);
    start[axis] = static_cast<hsize_t>(head.first);
    stride[axis] = static_cast<hsize_t>(std::max<int64_t>(head.stride, static_cast<int64_t>(block)));
    count[axis] = static_cast<hsize_t>(head.count);
    blocks[axis] = static_cast<hsize_t>(block);
    DRING_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_OR, start.data(), stride.data(), count.data(),
                                       blocks.data()),
                   "cannot select rows " << head.first << ", " << head.first + head.stride << ", ..");
    rows += head.count * static_cast<int64_t>(block);
    n += block;
  }
  std::vector<hsize_t> local(full);
  local[axis] = static_cast<hsize_t>(rows);
  *memory = Handle(H5Screate_simple(static_cast<int>(local.size()), local.data(), nullptr), H5Sclose);
  return space;
}

std::vector<ShardRun> one_run(int64_t begin, int64_t rows) { return {ShardRun{{begin, rows, 1}, 0, 1}}; }

template <class T>
void write_attribute(hid_t file, const char* name, hid_t type, const std::vector<T>& values) {
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle attr(H5Acreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DRING_H5_CHECK(attr.get(), "cannot create attribute " << name);
  DRING_H5_CHECK(H5Awrite(attr.get(), type, values.data()), "cannot write attribute " << name);
}

void write_string_attribute(hid_t file, const char* name, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  DRING_H5_CHECK(attr.get(), "cannot create attribute " << name);
  const std::string stored = value.empty() ? std::string(1, '\0') : value;
  DRING_H5_CHECK(H5Awrite(attr.get(), type.get(), stored.data()), "cannot write attribute " << name);
}

template <class T>
std::vector<T> read_attribute(hid_t file, const std::string& path, const char* name, hid_t type) {
  DRING_CHECK(H5Aexists(file, name) > 0, Status::kIoError, path << ": attribute '" << name << "' is missing");
  Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  std::vector<T> values(static_cast<size_t>(H5Sget_simple_extent_npoints(space.get())));
  DRING_H5_CHECK(H5Aread(attr.get(), type, values.data()), path << ": cannot read attribute " << name);
  return values;
}

std::string read_string_attribute(hid_t file, const char* name) {
  if (H5Aexists(file, name) <= 0) return "";
  Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  std::string value(H5Tget_size(type.get()), '\0');
  H5Aread(attr.get(), type.get(), value.data());
  return std::string(value.c_str());
}

}  // namespace

InputDescription inspect_input(const std::string& path) {
  Handle file = open_serial(path);
  InputDescription d;
  std::array<std::vector<int64_t>, 3> dims;
  const char* names[3] = {"q", "k", "v"};
  std::string* dtypes[3] = {&d.q_dtype, &d.k_dtype, &d.v_dtype};
  for (int t = 0; t < 3; ++t) {
    Handle ds = open_dataset(file.get(), path, names[t]);
    dims[t] = dataset_dims(ds.get());
    DRING_CHECK(dims[t].size() == 4, Status::kInvalidArgument,
                path << ": dataset '" << names[t] << "' has shape " << dims_text(dims[t])
                     << ", expected 4 dimensions [batch, seq, heads, head_dim]");
    for (int64_t extent : dims[t]) {
      DRING_CHECK(extent >= 1, Status::kInvalidArgument,
                  path << ": dataset '" << names[t] << "' has an empty dimension " << dims_text(dims[t]));
    }
    *dtypes[t] = dataset_dtype(ds.get(), path, names[t]);
    check_compact_storage(ds.get(), path, names[t]);
  }
  const auto& q = dims[0];
  const auto& k = dims[1];
  DRING_CHECK(k[0] == q[0] && k[1] == q[1] && k[3] == q[3], Status::kInvalidArgument,
              path << ": dataset 'k' has shape " << dims_text(k) << ", inconsistent with q " << dims_text(q)
                   << " (batch, seq and head_dim must match)");
  DRING_CHECK(dims[2] == k, Status::kInvalidArgument,
              path << ": dataset 'v' has shape " << dims_text(dims[2]) << ", expected the shape of k " << dims_text(k));
  DRING_CHECK(q[2] % k[2] == 0, Status::kInvalidArgument,
              path << ": q has " << q[2] << " heads, not a multiple of the " << k[2] << " kv heads of k and v");
  d.shape = AttentionShape{q[0], q[1], q[2], k[2], q[3]};
  if (H5Lexists(file.get(), "dout", H5P_DEFAULT) > 0) {
    Handle ds = open_dataset(file.get(), path, "dout");
    DRING_CHECK(dataset_dims(ds.get()) == q, Status::kInvalidArgument,
                path << ": dataset 'dout' has shape " << dims_text(dataset_dims(ds.get())) << ", expected the shape of q "
                     << dims_text(q));
    dataset_dtype(ds.get(), path, "dout");
    check_compact_storage(ds.get(), path, "dout");
    d.has_dout = true;
  }
  if (H5Lexists(file.get(), "cu_seqlens", H5P_DEFAULT) > 0) {
    const std::string what = path + ": dataset 'cu_seqlens'";
    Handle ds = open_dataset(file.get(), path, "cu_seqlens");
    const std::vector<int64_t> cu_dims = dataset_dims(ds.get());
    DRING_CHECK(cu_dims.size() == 1, Status::kInvalidArgument,
                what << " has shape " << dims_text(cu_dims) << ", expected 1 dimension [documents + 1]");
    Handle type(H5Dget_type(ds.get()), H5Tclose);
    DRING_CHECK(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) <= 8, Status::kInvalidArgument,
                what << " must hold integers (int32 or int64)");
    check_compact_storage(ds.get(), path, "cu_seqlens");
    std::vector<int64_t> offsets(static_cast<size_t>(cu_dims[0]));
    DRING_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data()),
                   what << ": cannot read it");
    d.doc_lens = from_cu_seqlens(offsets, d.shape.seq, what);
  }
  return d;
}

std::vector<int64_t> to_cu_seqlens(const std::vector<int64_t>& doc_lens) {
  std::vector<int64_t> offsets{0};
  for (int64_t len : doc_lens) offsets.push_back(offsets.back() + len);
  return offsets;
}

std::vector<int64_t> from_cu_seqlens(const std::vector<int64_t>& offsets, int64_t seq, const std::string& what) {
  DRING_CHECK(offsets.size() >= 2, Status::kInvalidArgument,
              what << " holds " << offsets.size() << " value" << (offsets.size() == 1 ? "" : "s")
                   << "; it needs at least 2: [0, l1, l1+l2, ..., " << seq << "]");
  DRING_CHECK(offsets.front() == 0, Status::kInvalidArgument,
              what << " must start at 0 (it starts at " << offsets.front() << ")");
  std::vector<int64_t> lens;
  for (size_t i = 1; i < offsets.size(); ++i) {
    DRING_CHECK(offsets[i] > offsets[i - 1], Status::kInvalidArgument,
                what << " is not increasing: cu_seqlens[" << i - 1 << "] = " << offsets[i - 1] << ", cu_seqlens[" << i
                     << "] = " << offsets[i] << " (every document needs at least one row)");
    lens.push_back(offsets[i] - offsets[i - 1]);
  }
  DRING_CHECK(offsets.back() == seq, Status::kInvalidArgument,
              what << " ends at " << offsets.back() << ", not at the sequence length " << seq);
  return lens;
}

void read_rows(const std::string& path, MPI_Comm comm, const char* name, int64_t begin, int64_t rows, float* out) {
  read_rows(path, comm, name, one_run(begin, rows), rows, out);
}

void read_rows(const std::string& path, MPI_Comm comm, const char* name, const std::vector<ShardRun>& runs,
               int64_t rows, float* out) {
  quiet();
  Handle fapl = file_access_mpi(comm);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  DRING_CHECK(file.valid(), Status::kIoError, "cannot open " << path << " with parallel HDF5");
  Handle ds(H5Dopen2(file.get(), name, H5P_DEFAULT), H5Dclose);
  DRING_CHECK(ds.valid(), Status::kIoError, path << ": cannot open dataset '" << name << "'");
  Handle memory;
  Handle selection = select_runs(dataset_dims(ds.get()), 1, runs, &memory);
  Handle dxpl = collective_transfer();
  DRING_H5_CHECK(H5Dread(ds.get(), H5T_NATIVE_FLOAT, memory.get(), selection.get(), dxpl.get(), out),
                 path << ": cannot read this rank's " << rows << " rows of '" << name << "'");
}

// Writing an output. Every collective HDF5 call (create the file, create a dataset, write it, close
// the file) runs on every rank with its failure captured, not thrown; the ranks agree on the
// outcome after each one (settle). So a rank whose write failed never sits in the agreement while
// its peers sit in the next collective call, and after a failure every rank closes the file
// together and rank 0 removes the temporary; the target is never touched.

OutputFile::OutputFile(const std::string& path, MPI_Comm comm, int64_t expected_bytes) : path_(path), comm_(comm) {
  quiet();
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  // Same directory as the target, so the final rename is atomic; the pid of rank 0 makes it unique.
  temp_path_ = broadcast_string(comm, path + ".tmp-" + std::to_string(getpid()), 0);
  // Rank 0 creates the temporary by hand first, for the reason of a failure (HDF5 does not say).
  std::optional<Error> local;
  if (rank_ == 0) {
    const int fd = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      local = Error(Status::kIoError, "cannot create --output " + path + " (temporary " + temp_path_ +
                                          "): " + std::strerror(errno));
    } else {
      close(fd);
      created_ = true;
    }
  }
  settle(local);
  Handle fapl = file_access_mpi(comm);
  // The HDF5 1.8 object format at least: attributes larger than 64 KiB (the cu_seqlens of many
  // documents) then go to dense attribute storage instead of failing. Readable by HDF5 >= 1.8.
  DRING_H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST),
                 "cannot set the HDF5 format version");
  file_ = H5Fcreate(temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file_ < 0) {
    local = Error(Status::kIoError,
                  "cannot create --output " + path + " (temporary " + temp_path_ + ") with parallel HDF5");
  }
  settle(local);
  // Reserve the space the datasets need, so a full disk or an exhausted quota is one clear error
  // now rather than a failed collective write later. Filesystems without fallocate skip this.
  if (rank_ == 0 && expected_bytes > 0) {
    const int fd = open(temp_path_.c_str(), O_WRONLY);
    const int rc = fd < 0 ? errno : posix_reserve(fd, expected_bytes);
    if (fd >= 0) close(fd);
    if (rc != 0 && rc != EOPNOTSUPP && rc != ENOSYS && rc != EINVAL) {
      local = Error(Status::kIoError, "cannot write --output " + path + ": " + std::strerror(rc) + " (it needs " +
                                          bytes_text(expected_bytes) + ")");
    }
  }
  settle(local);
}

OutputFile::~OutputFile() {
  // Closing a parallel file is collective. While an exception unwinds on this rank only (on its
  // way to MPI_Abort) the handle is left for HDF5 to close at MPI_Finalize; after an agreed
  // failure settle() has closed it already. Removing the temporary file is local and always safe.
  if (file_ >= 0 && std::uncaught_exceptions() == 0) H5Fclose(file_);
  if (!committed_ && rank_ == 0 && created_) std::remove(temp_path_.c_str());
}

void OutputFile::settle(std::optional<Error>& local) {
  std::optional<Error> mine;
  mine.swap(local);
  try {
    agree_on(comm_, mine);
  } catch (const CollectiveError&) {
    // Every rank is here: close together, then drop the temporary.
    if (file_ >= 0) H5Fclose(file_);
    file_ = -1;
    if (rank_ == 0 && created_) std::remove(temp_path_.c_str());
    created_ = false;
    throw;
  }
}

void OutputFile::write_rows(const char* name, const std::vector<int64_t>& dims, int seq_axis, int64_t begin,
                            int64_t rows, const float* data, bool store_float64) {
  write_rows(name, dims, seq_axis, one_run(begin, rows), data, store_float64);
}

void OutputFile::write_rows(const char* name, const std::vector<int64_t>& dims, int seq_axis,
                            const std::vector<ShardRun>& runs, const float* data, bool store_float64) {
  std::optional<Error> local;
  std::vector<hsize_t> full(dims.begin(), dims.end());
  Handle file_space(H5Screate_simple(static_cast<int>(full.size()), full.data(), nullptr), H5Sclose);
  Handle ds(H5Dcreate2(file_, name, store_float64 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE, file_space.get(), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT),
            H5Dclose);
  if (!ds.valid()) local = Error(Status::kIoError, path_ + ": cannot create dataset '" + name + "'");
  settle(local);
  Handle memory, selection, dxpl;
  try {
    selection = select_runs(dims, seq_axis, runs, &memory);
    dxpl = collective_transfer();
  } catch (const Error& e) {
    local = e;
  }
  settle(local);
  if (H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, memory.get(), selection.get(), dxpl.get(), data) < 0) {
    local = Error(Status::kIoError, write_failure(std::string("cannot write dataset '") + name + "'"));
  }
  settle(local);
}

void OutputFile::write_int64(const char* name, const std::vector<int64_t>& values) {
  std::optional<Error> local;
  const hsize_t n = values.size();
  Handle file_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle ds(H5Dcreate2(file_, name, H5T_STD_I64LE, file_space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) local = Error(Status::kIoError, path_ + ": cannot create dataset '" + name + "'");
  settle(local);
  // Every rank takes part in the collective write; rank 0 alone selects the values.
  Handle memory(H5Screate_simple(1, &n, nullptr), H5Sclose);
  if (rank_ != 0) {
    H5Sselect_none(file_space.get());
    H5Sselect_none(memory.get());
  }
  Handle dxpl = collective_transfer();
  if (H5Dwrite(ds.get(), H5T_NATIVE_INT64, memory.get(), file_space.get(), dxpl.get(), values.data()) < 0) {
    local = Error(Status::kIoError, write_failure(std::string("cannot write dataset '") + name + "'"));
  }
  settle(local);
}

void OutputFile::write_attributes(const RunAttributes& a) {
  // Attributes live in the metadata cache until the file is closed: no rank waits on another
  // here, so every rank makes every call and the first failure is agreed on at the end.
  std::optional<Error> local;
  try {
    const Problem& p = a.problem;
    std::vector<int64_t> segments, dilations;
    for (const DilatedPair& pair : p.pairs()) {
      segments.push_back(pair.segment);
      dilations.push_back(pair.dilation);
    }
    write_attribute(file_, "segments", H5T_NATIVE_INT64, segments);
    write_attribute(file_, "dilations", H5T_NATIVE_INT64, dilations);
    write_attribute(file_, "causal", H5T_NATIVE_INT, std::vector<int>{p.config.causal ? 1 : 0});
    write_attribute(file_, "scale", H5T_NATIVE_DOUBLE, std::vector<double>{p.scale()});
    write_attribute(file_, "shape", H5T_NATIVE_INT64,
                    std::vector<int64_t>{p.shape.batch, p.shape.seq, p.shape.heads, p.shape.kv_heads, p.shape.head_dim});
    write_attribute(file_, "world_size", H5T_NATIVE_INT, std::vector<int>{a.world_size});
    write_string_attribute(file_, "layout", a.layout.describe());
    write_attribute(file_, "window", H5T_NATIVE_INT64, std::vector<int64_t>{p.config.window});
    write_attribute(file_, "cu_seqlens", H5T_NATIVE_INT64, to_cu_seqlens(p.doc_lens()));
    if (a.seed) write_attribute(file_, "seed", H5T_NATIVE_UINT64, std::vector<uint64_t>{*a.seed});
    write_string_attribute(file_, "input", a.input);
    write_string_attribute(file_, "backend", a.backend);
    write_string_attribute(file_, "dtype", a.dtype);
    write_string_attribute(file_, "dring_version", DRING_VERSION);
  } catch (const Error& e) {
    local = Error(e.status(), path_ + ": " + e.what());
  }
  settle(local);
}

void OutputFile::commit() {
  std::optional<Error> local;
  const herr_t closed = H5Fclose(file_);
  file_ = -1;
  if (closed < 0) local = Error(Status::kIoError, write_failure("cannot finish writing " + temp_path_));
  settle(local);
  // Only rank 0 renames; everyone learns whether it worked.
  if (rank_ == 0 && std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    local = Error(Status::kIoError,
                  "cannot move " + temp_path_ + " to --output " + path_ + ": " + std::strerror(errno));
  }
  settle(local);
  committed_ = true;
}

std::string OutputFile::write_failure(const std::string& what) const {
  // HDF5 and MPI-IO do not pass errno on; the state of the filesystem usually tells.
  std::string reason;
  struct statvfs fs{};
  if (statvfs(temp_path_.c_str(), &fs) == 0 && fs.f_bavail * fs.f_frsize < (uint64_t{1} << 20)) {
    reason = ": " + std::string(std::strerror(ENOSPC));
  } else {
    reason = " (an I/O error, a quota or a full disk)";
  }
  return path_ + ": " + what + reason;
}

bool has_dataset(const std::string& path, const char* name) {
  Handle file = open_serial(path);
  return H5Lexists(file.get(), name, H5P_DEFAULT) > 0;
}

RunAttributes read_attributes(const std::string& path) {
  Handle file = open_serial(path);
  RunAttributes a;
  const auto segments = read_attribute<int64_t>(file.get(), path, "segments", H5T_NATIVE_INT64);
  const auto dilations = read_attribute<int64_t>(file.get(), path, "dilations", H5T_NATIVE_INT64);
  DRING_CHECK(segments.size() == dilations.size(), Status::kIoError, path << ": segments and dilations differ in length");
  for (size_t i = 0; i < segments.size(); ++i) a.problem.config.pairs.push_back({segments[i], dilations[i]});
  a.problem.config.causal = read_attribute<int>(file.get(), path, "causal", H5T_NATIVE_INT).at(0) != 0;
  a.problem.config.scale = read_attribute<double>(file.get(), path, "scale", H5T_NATIVE_DOUBLE).at(0);
  const auto shape = read_attribute<int64_t>(file.get(), path, "shape", H5T_NATIVE_INT64);
  DRING_CHECK(shape.size() == 5, Status::kIoError, path << ": attribute 'shape' must hold 5 values");
  a.problem.shape = AttentionShape{shape[0], shape[1], shape[2], shape[3], shape[4]};
  a.world_size = read_attribute<int>(file.get(), path, "world_size", H5T_NATIVE_INT).at(0);
  // Files written before documents, windows and layouts lack these: one document, no window,
  // contiguous.
  if (H5Aexists(file.get(), "layout") > 0) a.layout = LayoutSpec::parse(read_string_attribute(file.get(), "layout"));
  if (H5Aexists(file.get(), "window") > 0) {
    a.problem.config.window = read_attribute<int64_t>(file.get(), path, "window", H5T_NATIVE_INT64).at(0);
  }
  if (H5Aexists(file.get(), "cu_seqlens") > 0) {
    const auto offsets = read_attribute<int64_t>(file.get(), path, "cu_seqlens", H5T_NATIVE_INT64);
    const std::vector<int64_t> lens = from_cu_seqlens(offsets, a.problem.shape.seq, path + ": attribute 'cu_seqlens'");
    if (lens.size() > 1) a.problem.config.doc_lens = lens;
  }
  if (H5Aexists(file.get(), "seed") > 0) a.seed = read_attribute<uint64_t>(file.get(), path, "seed", H5T_NATIVE_UINT64).at(0);
  a.input = read_string_attribute(file.get(), "input");
  a.backend = read_string_attribute(file.get(), "backend");
  a.dtype = read_string_attribute(file.get(), "dtype");
  return a;
}

struct DatasetReader::Impl {
  Handle file, dataset;
};

DatasetReader::DatasetReader(const std::string& path, const char* name) : impl_(std::make_unique<Impl>()) {
  impl_->file = open_serial(path);
  impl_->dataset = open_dataset(impl_->file.get(), path, name);
  dims_ = dataset_dims(impl_->dataset.get());
}

DatasetReader::~DatasetReader() = default;

void DatasetReader::read(const std::vector<int64_t>& start, const std::vector<int64_t>& stride,
                         const std::vector<int64_t>& count, double* out) const {
  DRING_ASSERT(start.size() == dims_.size() && stride.size() == dims_.size() && count.size() == dims_.size());
  const std::vector<hsize_t> h_start(start.begin(), start.end()), h_stride(stride.begin(), stride.end()),
      h_count(count.begin(), count.end());
  Handle space(H5Dget_space(impl_->dataset.get()), H5Sclose);
  DRING_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, h_start.data(), h_stride.data(), h_count.data(), nullptr),
                 "cannot select a box of a dataset");
  Handle memory(H5Screate_simple(static_cast<int>(h_count.size()), h_count.data(), nullptr), H5Sclose);
  DRING_H5_CHECK(H5Dread(impl_->dataset.get(), H5T_NATIVE_DOUBLE, memory.get(), space.get(), H5P_DEFAULT, out),
                 "cannot read a box of a dataset");
}

FileRowSource::FileRowSource(const std::string& path) : q_(path, "q"), k_(path, "k"), v_(path, "v") {
  if (inspect_input(path).has_dout) dout_ = std::make_unique<DatasetReader>(path, "dout");
}

void FileRowSource::q_row(int64_t batch, int64_t pos, int64_t head, double* out) const {
  q_.read({batch, pos, head, 0}, {1, 1, 1, 1}, {1, 1, 1, q_.dims()[3]}, out);
}

void FileRowSource::dout_row(int64_t batch, int64_t pos, int64_t head, double* out) const {
  if (!dout_) reference::RowSource::dout_row(batch, pos, head, out);  // throws: no dout
  dout_->read({batch, pos, head, 0}, {1, 1, 1, 1}, {1, 1, 1, q_.dims()[3]}, out);
}

void FileRowSource::kv_rows(int64_t batch, int64_t kv_head, StridedRange rows, double* k, double* v) const {
  const std::vector<int64_t> start{batch, rows.first, kv_head, 0}, stride{1, rows.stride, 1, 1},
      count{1, rows.count, 1, k_.dims()[3]};
  k_.read(start, stride, count, k);
  v_.read(start, stride, count, v);
}

}  // namespace dring::h5
