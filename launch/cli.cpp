// cli.cpp — the command line of `dring` (run, generate, verify, summarize), with CLI11.
#include "cli.hpp"

#include <CLI/CLI.hpp>

#include <sstream>
#include <string>

#include "dring/config.h"

namespace dring::cli {

namespace {

void add_shape(CLI::App* app, ShapeOptions& s, std::vector<CLI::Option*>* shape_flags) {
  shape_flags->push_back(app->add_option("--seq", s.seq, "sequence length (tokens)")->capture_default_str());
  shape_flags->push_back(app->add_option("--batch", s.batch, "batch size")->capture_default_str());
  shape_flags->push_back(app->add_option("--heads", s.heads, "query heads")->capture_default_str());
  shape_flags->push_back(app->add_option("--kv-heads", s.kv_heads, "key/value heads (default: --heads; must divide it)"));
  shape_flags->push_back(app->add_option("--head-dim", s.head_dim, "head dimension")->capture_default_str());
  shape_flags->push_back(app->add_option("--seed", s.seed, "seed of the synthetic inputs")->capture_default_str());
}

}  // namespace

Parsed parse(int argc, char** argv) {
  CLI::App app{"dring: sequence-parallel dilated (LongNet) ring attention over MPI", "dring"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("dring ") + DRING_VERSION);

  RunOptions run;
  CLI::App* run_app = app.add_subcommand("run", "a forward pass (and with --backward the backward pass) on synthetic inputs or an HDF5 file");
  std::vector<CLI::Option*> shape_flags;
  add_shape(run_app, run.shape, &shape_flags);
  CLI::Option* input = run_app->add_option("--input", run.input, "HDF5 file with datasets q, k, v [B, S, H, D]");
  for (CLI::Option* flag : shape_flags) input->excludes(flag);
  run_app->add_option("--segments", run.segments, "segment lengths w1,w2,... (default: dense)")->delimiter(',');
  run_app->add_option("--dilations", run.dilations, "dilation rates r1,r2,... (default: 1 each)")->delimiter(',');
  run_app->add_flag("--causal", run.causal, "causal masking");
  run_app->add_option("--layout", run.layout,
                      "which rows each rank holds: contiguous, zigzag (2k chunks, rank t holds t and 2k-1-t), "
                      "striped (row i on rank i mod k) or striped:N (stripes of N rows)")
      ->capture_default_str();
  run_app->add_option("--doc-lens", run.doc_lens,
                      "packed documents: lengths l1,l2,... summing to the sequence length (default: one document, "
                      "or the input's cu_seqlens)")
      ->delimiter(',');
  run_app->add_option("--window", run.window, "sliding window W >= 1: keys with |i - j| < W only (default: none)");
  run_app->add_option("--scale", run.scale, "softmax scale (default 1/sqrt(head_dim))");
  run_app->add_flag("--backward", run.backward,
                    "also run the backward pass: dq, dk, dv for dout from the seed or the input's dout dataset");
  run_app->add_option("--backend", run.backend, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  run_app->add_option("--dtype", run.dtype, "compute dtype: fp32, fp16 or bf16")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}))
      ->capture_default_str();
  run_app->add_option("--threads", run.threads, "threads per rank (default: cores of the node / ranks on it)");
  run_app->add_option("--repeat", run.repeat, "timed passes after one warm-up; the median is reported")
      ->capture_default_str();
  run_app->add_option("--output", run.output, "write out and lse to this HDF5 file");
  run_app->add_flag("--check", run.check, "compare sampled rows with the float64 reference; exit 3 on mismatch");
  run_app->add_option("--check-rows", run.check_rows, "rows sampled by --check")->capture_default_str();
  run_app->add_option("--check-tol", run.check_tolerance, "tolerance of --check (default by dtype: 2e-5 fp32, 2e-3 fp16, 1e-2 bf16)");
  run_app->add_option("--json", run.json, "write the machine-readable report to this file");
  run_app->add_option("--exchange-chunk-kib", run.exchange_chunk_kib,
                      "cap on one exchange message in KiB (default: 1/32 of a shard's K and V, at least 64 KiB)");
  run_app->add_flag("--quiet", run.quiet, "no report table on stdout");
  run_app->add_option("--comm-timeout", run.comm_timeout_s,
                      "seconds a rank waits for a peer before it ends the job naming the peer and the step "
                      "(default: DRING_COMM_TIMEOUT_S, else 600)");

  GenerateOptions generate;
  CLI::App* gen_app = app.add_subcommand("generate", "write the synthetic inputs of a seed to an HDF5 file");
  std::vector<CLI::Option*> unused;
  add_shape(gen_app, generate.shape, &unused);
  gen_app->add_option("--output", generate.output, "HDF5 file to write")->required();
  gen_app->add_option("--dtype", generate.dtype, "stored dtype: fp32 or fp64")
      ->check(CLI::IsMember({"fp32", "fp64"}))
      ->capture_default_str();
  gen_app->add_flag("--dout", generate.dout, "also write a dout dataset (for the backward pass)");
  gen_app->add_option("--doc-lens", generate.doc_lens,
                      "packed documents l1,l2,... (summing to --seq), written as the dataset cu_seqlens")
      ->delimiter(',');

  VerifyOptions verify;
  CLI::App* verify_app = app.add_subcommand("verify", "compare an output of `dring run` with the float64 reference");
  verify_app->add_option("--input", verify.input, "the HDF5 input the output was computed from")->required();
  verify_app->add_option("--output", verify.output, "the HDF5 output of dring run")->required();
  verify_app->add_option("--rows", verify.rows, "rows to check, sampled; 0 checks every row")->capture_default_str();
  verify_app->add_option("--tol", verify.tolerance, "tolerance (default: that of --check for the dtype the run used)");

  SummarizeOptions summarize;
  CLI::App* sum_app = app.add_subcommand("summarize", "compare JSON reports of one problem at several world sizes");
  sum_app->add_option("reports", summarize.reports, "JSON files written by dring run --json")->required();

  Parsed parsed;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    parsed.exit_code = app.exit(e, out, err) == 0 ? 0 : 2;
    if (parsed.exit_code == 0) {
      parsed.message = out.str();
    } else {
      parsed.message = e.what();
      parsed.message += " (see dring --help)";
    }
    return parsed;
  }
  if (run_app->parsed()) {
    parsed.command = run;
  } else if (gen_app->parsed()) {
    parsed.command = generate;
  } else if (verify_app->parsed()) {
    parsed.command = verify;
  } else {
    parsed.command = summarize;
  }
  return parsed;
}

}  // namespace dring::cli
