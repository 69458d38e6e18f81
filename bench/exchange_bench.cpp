// exchange_bench.cpp — nccl-tests-style table for dring's transports, on the shift-by-s pattern
// the ring executor uses (docs/benchmarks.md, "Exchange").
//
// Two operations, on float32 messages of m bytes (sizes --min-bytes .. --max-bytes, x --factor):
//   shift  one step of the plan: rank t sends m to t+s and receives m from t-s (mod k).
//          algbw = m / time; busbw = algbw (each rank moves m in and m out).
//   ring   a whole exchange: shifts s = 1 .. k-1, one message per step, the next step's receive
//          posted into the other of two buffers before the current step is waited for (the
//          executor's double buffering). nccl-tests all_gather convention: size = k*m,
//          algbw = k*m / time, busbw = algbw * (k-1)/k = (k-1)*m / time (the bytes each rank
//          received per second).
// time = mean over --iters iterations after --warmup, the maximum over ranks (the header says so).
// #wrong: a separate, untimed pass with poisoned receive buffers; the element i sent by rank r is
// (r*7919 + i) mod 65521 (exact in float32), so each receiver knows every value exactly; the
// column is the count of wrong elements over all ranks. Any wrong element makes the exit status 1.
// Ceiling: memcpy of m bytes, all ranks copying at once (max over ranks); ratio = busbw / copy.
// A watchdog ends the job (exit 4, rank and size in the message) when one size takes longer than
// --timeout-s. --json FILE writes the table (to FILE.tmp, renamed when complete).
// Usage: mpirun -np K dring_exchange_bench [--op ring|shift] [--shift S] [--min-bytes 1024]
//        [--max-bytes 16777216] [--factor 4] [--iters 20] [--warmup 5] [--json FILE]
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dring/comm/mpi_transport.hpp"
#include "dring/core/error.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr float kPoison = -1.0f;  // never a sent value (those are 0 .. 65520)

float expected_value(int src, int64_t i) { return static_cast<float>((int64_t{src} * 7919 + i) % 65521); }

struct Options {
  std::string transport = "mpi";
  std::string op = "ring";
  int shift = 1;
  int64_t min_bytes = 1024;
  int64_t max_bytes = 16 << 20;
  int factor = 4;
  int iters = 20;
  int warmup = 5;
  double timeout_s = 300.0;
  std::string json;
};

struct Row {
  int64_t size_bytes = 0;  // m, one message
  int64_t count = 0;       // float32 elements per message
  double time_us = 0.0;
  double algbw_gbps = 0.0;
  double busbw_gbps = 0.0;
  int64_t wrong = 0;
  double copy_gbps = 0.0;
};

// Ends the job when a size makes no progress for --timeout-s: a stuck transport must not hang CI.
class Watchdog {
 public:
  Watchdog(int rank, double timeout_s) : rank_(rank), timeout_(timeout_s) {
    thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void arm(int64_t size_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    size_ = size_bytes;
    deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_));
    cv_.notify_all();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!done_) {
      if (deadline_ != Clock::time_point{} && Clock::now() > deadline_) {
        std::fprintf(stderr, "dring_exchange_bench: rank %d: error: no progress for %.0f s at %lld bytes; aborting\n",
                     rank_, timeout_, static_cast<long long>(size_));
        std::fflush(stderr);
        std::_Exit(4);
      }
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    }
  }
  int rank_;
  double timeout_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  int64_t size_ = 0;
  Clock::time_point deadline_{};
  std::thread thread_;
};

// One exchange of `op` with messages of `count` floats. When `recv_check` is set, every received
// block is compared with the values its sender wrote and the wrong elements are added to *wrong.
void exchange(dring::comm::Transport& t, const Options& o, std::span<const float> send,
              std::vector<std::vector<float>>& recv, int64_t* wrong) {
  const int k = t.world_size(), rank = t.world_rank();
  const int first = o.op == "shift" ? o.shift : 1, last = o.op == "shift" ? o.shift : k - 1;
  auto post = [&](int s, std::unique_ptr<dring::comm::Request>* r, std::unique_ptr<dring::comm::Request>* q) {
    std::vector<float>& buffer = recv[static_cast<size_t>(s % 2)];
    if (wrong) std::fill(buffer.begin(), buffer.end(), kPoison);
    t.begin_step();  // one step of the plan, as the executor posts it
    *r = t.post_recv(std::span<float>(buffer), (rank - s + k) % k, s);
    *q = t.post_send(send, (rank + s) % k, s);
    t.end_step();
  };
  std::unique_ptr<dring::comm::Request> recv_req, send_req, next_recv, next_send;
  post(first, &recv_req, &send_req);
  for (int s = first; s <= last; ++s) {
    if (s < last) post(s + 1, &next_recv, &next_send);  // one step ahead, into the other buffer
    recv_req->wait();
    send_req->wait();
    if (wrong) {
      const int src = (rank - s + k) % k;
      const std::vector<float>& buffer = recv[static_cast<size_t>(s % 2)];
      for (size_t i = 0; i < buffer.size(); ++i) *wrong += buffer[i] != expected_value(src, static_cast<int64_t>(i));
    }
    recv_req = std::move(next_recv);
    send_req = std::move(next_send);
  }
}

Row measure(dring::comm::Transport& t, const Options& o, int64_t count) {
  const int k = t.world_size(), rank = t.world_rank();
  std::vector<float> send(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) send[static_cast<size_t>(i)] = expected_value(rank, i);
  std::vector<std::vector<float>> recv(2, std::vector<float>(static_cast<size_t>(count), 0.0f));
  Row row;
  row.count = count;
  row.size_bytes = count * static_cast<int64_t>(sizeof(float));

  for (int i = 0; i < o.warmup; ++i) exchange(t, o, send, recv, nullptr);
  t.barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < o.iters; ++i) exchange(t, o, send, recv, nullptr);
  const double local_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / o.iters;
  row.time_us = t.allreduce_max(local_us);

  int64_t wrong = 0;
  t.barrier();
  exchange(t, o, send, recv, &wrong);
  row.wrong = t.allreduce_sum(wrong);

  // The ceiling: a plain copy of one message, every rank at once (they share the memory system).
  t.barrier();
  const auto c0 = Clock::now();
  for (int i = 0; i < o.iters; ++i) {
    std::memcpy(recv[0].data(), send.data(), static_cast<size_t>(row.size_bytes));
    asm volatile("" ::"r"(recv[0].data()) : "memory");
  }
  const double copy_us = t.allreduce_max(std::chrono::duration<double, std::micro>(Clock::now() - c0).count() / o.iters);
  row.copy_gbps = row.size_bytes / (copy_us * 1e3);

  const double m = static_cast<double>(row.size_bytes);
  if (o.op == "shift") {
    row.algbw_gbps = m / (row.time_us * 1e3);
    row.busbw_gbps = row.algbw_gbps;
  } else {
    row.algbw_gbps = k * m / (row.time_us * 1e3);
    row.busbw_gbps = row.algbw_gbps * (k - 1) / k;
  }
  return row;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

int run(const Options& o) {
  dring::comm::MpiTransport transport(MPI_COMM_WORLD);
  const int k = transport.world_size(), rank = transport.world_rank();
  DRING_CHECK(k >= 2, dring::Status::kInvalidArgument, "needs at least 2 ranks (mpirun -np 2 or more)");
  DRING_CHECK(o.op == "ring" || (o.shift >= 1 && o.shift < k), dring::Status::kInvalidArgument,
              "--shift " << o.shift << " must be in 1 .. " << k - 1 << " on " << k << " ranks");
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int host_length = 0;
  MPI_Get_processor_name(host, &host_length);
  const std::string date = utc_now();
  if (rank == 0) {
    std::printf("# dring_exchange_bench  %s  host %s  transport %s  ranks %d  op %s", date.c_str(), host,
                transport.name(), k, o.op.c_str());
    if (o.op == "shift") std::printf("  shift %d", o.shift);
    std::printf("\n# time: mean of %d iterations after %d warm-up, max over ranks; float32 messages\n", o.iters,
                o.warmup);
    if (o.op == "shift") {
      std::printf("# algbw = size / time; busbw = algbw; ratio = busbw / copy (memcpy of size, all ranks at once)\n");
    } else {
      std::printf("# one op = shifts 1..%d (double-buffered); algbw = %d*size / time; busbw = algbw * %d/%d; "
                  "ratio = busbw / copy\n", k - 1, k, k - 1, k);
    }
    std::printf("%12s %12s %8s %12s %12s %12s %8s %12s %7s\n", "size(B)", "count", "type", "time(us)",
                "algbw(GB/s)", "busbw(GB/s)", "#wrong", "copy(GB/s)", "ratio");
  }
  Watchdog watchdog(rank, o.timeout_s);
  std::vector<Row> rows;
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.factor) {
    const int64_t count = std::max<int64_t>(1, bytes / static_cast<int64_t>(sizeof(float)));
    watchdog.arm(count * 4);
    rows.push_back(measure(transport, o, count));
    const Row& r = rows.back();
    if (rank == 0) {
      std::printf("%12lld %12lld %8s %12.2f %12.3f %12.3f %8lld %12.3f %7.3f\n", static_cast<long long>(r.size_bytes),
                  static_cast<long long>(r.count), "float", r.time_us, r.algbw_gbps, r.busbw_gbps,
                  static_cast<long long>(r.wrong), r.copy_gbps, r.busbw_gbps / r.copy_gbps);
      std::fflush(stdout);
    }
  }
  int64_t wrong = 0;
  double busbw_sum = 0.0;
  for (const Row& r : rows) {
    wrong += r.wrong;
    busbw_sum += r.busbw_gbps;
  }
  if (rank == 0) {
    std::printf("# out of bounds values : %lld %s\n", static_cast<long long>(wrong), wrong ? "ERROR" : "OK");
    std::printf("# avg bus bandwidth    : %.3f GB/s\n", rows.empty() ? 0.0 : busbw_sum / rows.size());
    if (!o.json.empty()) {
      nlohmann::json j = {{"benchmark", "dring_exchange_bench"}, {"date_utc", date}, {"host", host},
                          {"transport", transport.name()}, {"op", o.op}, {"world_size", k},
                          {"shift", o.op == "shift" ? o.shift : 0}, {"iters", o.iters}, {"warmup", o.warmup},
                          {"time", "mean over iters, max over ranks"}, {"wrong", wrong}, {"rows", nlohmann::json::array()}};
      for (const Row& r : rows) {
        j["rows"].push_back({{"size_bytes", r.size_bytes}, {"count", r.count}, {"type", "float32"},
                             {"time_us", r.time_us}, {"algbw_gbps", r.algbw_gbps}, {"busbw_gbps", r.busbw_gbps},
                             {"wrong", r.wrong}, {"copy_gbps", r.copy_gbps}, {"ratio", r.busbw_gbps / r.copy_gbps}});
      }
      const std::string tmp = o.json + ".tmp";
      std::ofstream out(tmp);
      out << j.dump(2) << "\n";
      out.close();
      DRING_CHECK(out.good() && std::rename(tmp.c_str(), o.json.c_str()) == 0, dring::Status::kIoError,
                  "--json: cannot write " << o.json);
    }
  }
  return wrong ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Options o;
  CLI::App app{"nccl-tests-style table of dring's transports on the shift-by-s ring pattern", "dring_exchange_bench"};
  app.add_option("--transport", o.transport, "transport to measure (this build: mpi)")
      ->check(CLI::IsMember({"mpi"}))->capture_default_str();
  app.add_option("--op", o.op, "ring (shifts 1..k-1, double-buffered) or shift (one step)")
      ->check(CLI::IsMember({"ring", "shift"}))->capture_default_str();
  app.add_option("--shift", o.shift, "the shift s of --op shift")->capture_default_str();
  app.add_option("--min-bytes", o.min_bytes, "smallest message")->check(CLI::Range(int64_t{4}, int64_t{1} << 33))
      ->capture_default_str();
  app.add_option("--max-bytes", o.max_bytes, "largest message")->check(CLI::Range(int64_t{4}, int64_t{1} << 33))
      ->capture_default_str();
  app.add_option("--factor", o.factor, "size multiplier between rows")->check(CLI::Range(2, 1024))->capture_default_str();
  app.add_option("--iters", o.iters, "timed iterations per size")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed iterations first")->check(CLI::Range(0, 1000000))->capture_default_str();
  app.add_option("--timeout-s", o.timeout_s, "abort when one size takes longer")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--json", o.json, "also write the table to this JSON file");
  int code = 0;
  try {
    app.parse(argc, argv);
    if (o.min_bytes > o.max_bytes) throw CLI::ValidationError("--min-bytes", "must not exceed --max-bytes");
  } catch (const CLI::ParseError& e) {
    code = e.get_exit_code() == 0 ? -1 : 2;  // -1: --help, printed below
    if (rank == 0) app.exit(e);
  }
  if (code == 0) {
    try {
      code = run(o);
    } catch (const dring::Error& e) {
      // Argument errors are seen by every rank alike (rank 0 says so once); any other may be one
      // rank's alone: it takes the job down with its rank in the message.
      if (e.status() != dring::Status::kInvalidArgument) {
        std::fprintf(stderr, "dring_exchange_bench: rank %d: error: %s\n", rank, e.what());
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      if (rank == 0) std::fprintf(stderr, "dring_exchange_bench: error: %s\n", e.what());
      code = 2;
    }
  }
  MPI_Finalize();
  return code < 0 ? 0 : code;
}
