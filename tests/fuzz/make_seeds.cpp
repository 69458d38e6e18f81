// make_seeds.cpp — writes the HDF5 seeds of corpus/hdf5_input/: tiny valid inputs of
// `dring run --input` in the layouts and file formats HDF5 offers, and near-valid ones that are
// wrong in one way each (the file name says which). Usage: dring_fuzz_make_seeds DIR
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

enum class Layout { kContiguous, kChunked, kCompact };

void write(hid_t file, const char* name, const std::vector<hsize_t>& dims, hid_t type, Layout layout = Layout::kContiguous,
           double poison = 0.0) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  std::vector<double> data(count);
  for (hsize_t i = 0; i < count; ++i) data[i] = std::sin(0.37 * static_cast<double>(i));
  if (poison != 0.0) data[count / 2] = poison;
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (layout == Layout::kChunked) {
    std::vector<hsize_t> chunk(dims);
    if (chunk.size() > 1) chunk[1] = (chunk[1] + 1) / 2;
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  } else if (layout == Layout::kCompact) {
    H5Pset_layout(dcpl, H5D_COMPACT);
  }
  const hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  H5Dclose(ds);
  H5Pclose(dcpl);
  H5Sclose(space);
}

hid_t create(const std::string& dir, const char* name, bool latest_format = false) {
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (latest_format) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  const hid_t file = H5Fcreate((dir + "/" + name).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  return file;
}

void qkv(hid_t file, hid_t type, Layout layout, std::vector<hsize_t> q, std::vector<hsize_t> kv) {
  write(file, "q", q, type, layout);
  write(file, "k", kv, type, layout);
  write(file, "v", kv, type, layout);
  H5Fclose(file);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const hid_t f32 = H5T_IEEE_F32LE, f64 = H5T_IEEE_F64LE;
  const std::vector<hsize_t> q{1, 6, 2, 4}, kv{1, 6, 1, 4};
  // Valid: every storage layout, both dtypes, both superblock generations, with and without dout.
  qkv(create(dir, "valid_f32.h5"), f32, Layout::kContiguous, q, kv);
  qkv(create(dir, "valid_f32_chunked.h5"), f32, Layout::kChunked, q, kv);
  qkv(create(dir, "valid_f32_compact_latest.h5", true), f32, Layout::kCompact, q, kv);
  qkv(create(dir, "valid_f64_big_endian.h5"), H5T_IEEE_F64BE, Layout::kContiguous, {2, 3, 2, 2}, {2, 3, 2, 2});
  hid_t f = create(dir, "valid_f64_dout_chunked_latest.h5", true);
  write(f, "dout", {1, 5, 2, 3}, f64, Layout::kChunked);
  qkv(f, f64, Layout::kChunked, {1, 5, 2, 3}, {1, 5, 1, 3});
  // Near-valid: one flaw each.
  f = create(dir, "nan_in_k.h5");
  write(f, "k", kv, f32, Layout::kContiguous, NAN);
  write(f, "q", q, f32);
  write(f, "v", kv, f32);
  H5Fclose(f);
  qkv(create(dir, "int_q.h5"), H5T_STD_I32LE, Layout::kContiguous, q, kv);
  qkv(create(dir, "kv_heads_not_dividing.h5"), f32, Layout::kContiguous, {1, 4, 3, 2}, {1, 4, 2, 2});
  qkv(create(dir, "rank3.h5"), f32, Layout::kContiguous, {1, 6, 8}, {1, 6, 4});
  f = create(dir, "dout_wrong_shape.h5");
  write(f, "dout", {1, 6, 1, 4}, f32);
  qkv(f, f32, Layout::kContiguous, q, kv);
  f = create(dir, "q_is_a_group.h5");
  H5Gclose(H5Gcreate2(f, "q", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  write(f, "k", kv, f32);
  write(f, "v", kv, f32);
  H5Fclose(f);
  return 0;
}
