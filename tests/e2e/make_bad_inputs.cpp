// make_bad_inputs.cpp — writes the malformed input files the bad-input tests feed to `dring run`.
// Usage: dring_make_bad_inputs DIR. Each file is wrong in exactly one way (its name says how).
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

void write(hid_t file, const char* name, std::vector<hsize_t> dims, hid_t type, double poison_at = -1,
           double poison = 0.0) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  std::vector<double> data(count);
  for (hsize_t i = 0; i < count; ++i) data[i] = std::sin(0.37 * static_cast<double>(i));
  if (poison_at >= 0) data[static_cast<hsize_t>(poison_at)] = poison;
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  H5Dclose(ds);
  H5Sclose(space);
}

hid_t create(const std::string& dir, const char* name) {
  return H5Fcreate((dir + "/" + name).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const hid_t f32 = H5T_IEEE_F32LE;
  // B=1, S=20, H=4, Hkv=2, D=8, with one flaw each.
  const std::vector<hsize_t> q{1, 20, 4, 8}, kv{1, 20, 2, 8};
  hid_t f;

  f = create(dir, "good.h5");
  write(f, "q", q, f32); write(f, "k", kv, f32); write(f, "v", kv, f32);
  H5Fclose(f);

  f = create(dir, "missing_v.h5");
  write(f, "q", q, f32); write(f, "k", kv, f32);
  H5Fclose(f);

  f = create(dir, "rank3_q.h5");
  write(f, "q", {1, 20, 32}, f32); write(f, "k", kv, f32); write(f, "v", kv, f32);
  H5Fclose(f);

  f = create(dir, "k_seq_mismatch.h5");
  write(f, "q", q, f32); write(f, "k", {1, 21, 2, 8}, f32); write(f, "v", {1, 21, 2, 8}, f32);
  H5Fclose(f);

  f = create(dir, "v_shape_mismatch.h5");
  write(f, "q", q, f32); write(f, "k", kv, f32); write(f, "v", {1, 20, 1, 8}, f32);
  H5Fclose(f);

  f = create(dir, "heads_not_multiple.h5");
  write(f, "q", {1, 20, 6, 8}, f32); write(f, "k", {1, 20, 4, 8}, f32); write(f, "v", {1, 20, 4, 8}, f32);
  H5Fclose(f);

  f = create(dir, "int_q.h5");
  write(f, "q", q, H5T_STD_I32LE); write(f, "k", kv, f32); write(f, "v", kv, f32);
  H5Fclose(f);

  f = create(dir, "too_short.h5");  // 3 tokens: fewer than 4 ranks
  write(f, "q", {1, 3, 4, 8}, f32); write(f, "k", {1, 3, 2, 8}, f32); write(f, "v", {1, 3, 2, 8}, f32);
  H5Fclose(f);

  // k[0, 17, 1, 5] is NaN; q[0, 11, 2, 3] is +Inf (both on the last of two ranks' shards).
  f = create(dir, "nan_k.h5");
  write(f, "q", q, f32); write(f, "k", kv, f32, ((17 * 2) + 1) * 8 + 5, NAN); write(f, "v", kv, f32);
  H5Fclose(f);
  f = create(dir, "inf_q.h5");
  write(f, "q", q, f32, ((11 * 4) + 2) * 8 + 3, INFINITY); write(f, "k", kv, f32); write(f, "v", kv, f32);
  H5Fclose(f);

  // Documents as cu_seqlens (S = 20): good ones in int32 (the trainer's usual type) and int64,
  // and one flaw each.
  auto with_cu = [&](const char* name, std::vector<hsize_t> dims, hid_t type, std::vector<double> values) {
    const hid_t file = create(dir, name);
    write(file, "q", q, f32); write(file, "k", kv, f32); write(file, "v", kv, f32);
    const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t ds = H5Dcreate2(file, "cu_seqlens", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(file);
  };
  with_cu("cu_int32.h5", {4}, H5T_STD_I32LE, {0, 7, 8, 20});
  with_cu("cu_int64.h5", {3}, H5T_STD_I64LE, {0, 13, 20});
  with_cu("cu_not_increasing.h5", {4}, H5T_STD_I32LE, {0, 9, 9, 20});
  with_cu("cu_not_from_zero.h5", {3}, H5T_STD_I64LE, {2, 9, 20});
  with_cu("cu_not_to_seq.h5", {3}, H5T_STD_I64LE, {0, 9, 19});
  with_cu("cu_2d.h5", {2, 2}, H5T_STD_I64LE, {0, 9, 9, 20});
  with_cu("cu_float.h5", {3}, H5T_IEEE_F32LE, {0, 9, 20});

  std::FILE* text = std::fopen((dir + "/not_hdf5.h5").c_str(), "w");
  std::fputs("this is not an HDF5 file\n", text);
  std::fclose(text);
  return 0;
}
