// commands.hpp — the subcommands of the `dring` program and their options.
//
// main.cpp parses the command line (cli.cpp) into one of these option sets and calls the
// command. Commands run on every rank; they throw dring::Error on failure and main decides how
// the process ends.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dring::cli {

// Shape of synthetic inputs (run, generate).
struct ShapeOptions {
  int64_t seq = 8192;
  int64_t batch = 1;
  int64_t heads = 8;
  std::optional<int64_t> kv_heads;  // default: heads
  int64_t head_dim = 64;
  uint64_t seed = 0;
};

struct RunOptions {
  ShapeOptions shape;
  std::string input;  // HDF5 file; empty means synthetic
  std::vector<int64_t> segments;
  std::vector<int64_t> dilations;
  bool causal = false;
  double scale = 0.0;
  std::string layout = "contiguous";  // contiguous, zigzag, striped or striped:N
  std::vector<int64_t> doc_lens;      // packed documents; empty: one (or the input's cu_seqlens)
  std::optional<int64_t> window;      // unset: no window
  bool backward = false;  // also the backward pass (dout from the seed, or the input's dout)
  std::string backend = "auto";
  std::string dtype = "fp32";
  int threads = 0;  // 0: cores / ranks per node
  int repeat = 1;
  std::string output;
  bool check = false;
  int64_t check_rows = 32;
  double check_tolerance = 0.0;  // 0: the default
  std::string json;
  int64_t exchange_chunk_kib = 0;  // 0: automatic
  bool quiet = false;              // no table on stdout
  std::optional<double> comm_timeout_s;  // unset: DRING_COMM_TIMEOUT_S, else 600 s (dring/comm/deadline.hpp)
};

struct GenerateOptions {
  ShapeOptions shape;
  std::string output;
  std::string dtype = "fp32";  // stored dtype: fp32 or fp64
  bool dout = false;
  std::vector<int64_t> doc_lens;  // written as the dataset cu_seqlens when given
};

struct VerifyOptions {
  std::string input;
  std::string output;
  int64_t rows = 64;  // sampled rows; 0 means every row
  double tolerance = 0.0;
};

struct SummarizeOptions {
  std::vector<std::string> reports;
};

int run_command(MPI_Comm comm, const RunOptions& options);
int generate_command(MPI_Comm comm, const GenerateOptions& options);
int verify_command(MPI_Comm comm, const VerifyOptions& options);
int summarize_command(MPI_Comm comm, const SummarizeOptions& options);

}  // namespace dring::cli
