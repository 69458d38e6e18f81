// mpi_transport.cpp — MPI point-to-point transport and the MPI error path.
#include "dring/comm/mpi_transport.hpp"

#include <exception>
#include <limits>
#include <sstream>

#include "dring/comm/deadline.hpp"

namespace dring::comm {

void mpi_fail(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  (void)file;
  (void)line;
  DRING_FAIL(Status::kCommError, "MPI call " << call << " failed on " << error_rank_text() << ": " << text);
}

MPI_Datatype mpi_datatype(DType type) {
  switch (type) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kF16:
    case DType::kBF16: return MPI_UINT16_T;  // moved as opaque 16-bit words
  }
  return MPI_DATATYPE_NULL;
}

int mpi_count(int64_t count) {
  DRING_CHECK(count >= 0 && count <= std::numeric_limits<int>::max(), Status::kInternal,
              "MPI message of " << count << " elements exceeds the int count MPI takes");
  return static_cast<int>(count);
}

namespace {

class MpiRequest final : public Request {
 public:
  MpiRequest(bool send, int peer, int tag, int64_t bytes, double timeout_s)
      : send_(send), peer_(peer), tag_(tag), bytes_(bytes), timeout_s_(timeout_s) {}
  ~MpiRequest() override {
    if (request_ != MPI_REQUEST_NULL) {  // abandoned on an error path: best effort, never throws
      MPI_Cancel(&request_);
      MPI_Request_free(&request_);
    }
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    DRING_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    wait_until_deadline_lazy(&request_, timeout_s_, [&] { return describe_point_to_point(send_, peer_, tag_, bytes_); });
  }
  MPI_Request* handle() { return &request_; }

 private:
  bool send_;
  int peer_;
  int tag_;
  int64_t bytes_;
  double timeout_s_;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

}  // namespace

std::string describe_point_to_point(bool send, int peer, int tag, int64_t bytes) {
  std::ostringstream what;
  what << (send ? "send to world rank " : "receive from world rank ") << peer << " (tag " << tag << ", " << bytes
       << " bytes)";
  return what.str();
}

MpiCommTransport::MpiCommTransport(MPI_Comm comm) {
  timeout_s_ = default_comm_timeout_s();
  DRING_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  DRING_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DRING_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DRING_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommTransport::MpiCommTransport(int rank, int size) : rank_(rank), size_(size) {
  timeout_s_ = default_comm_timeout_s();
}

MpiCommTransport::~MpiCommTransport() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // Freeing a communicator is collective: while an exception unwinds (perhaps on this rank only,
  // on its way to MPI_Abort) it is left to the end of the job instead.
  if (comm_ != MPI_COMM_NULL && !finalized && std::uncaught_exceptions() == 0) MPI_Comm_free(&comm_);
}

std::unique_ptr<Request> MpiTransport::post_send_raw(const void* data, int64_t count, DType type, int peer,
                                                     int tag) {
  auto request = std::make_unique<MpiRequest>(true, peer, tag, count * dtype_bytes(type), timeout_s_);
  DRING_MPI_CHECK(MPI_Isend(data, mpi_count(count), mpi_datatype(type), peer, tag, comm(), request->handle()));
  counters_.sent_bytes += count * dtype_bytes(type);
  return request;
}

std::unique_ptr<Request> MpiTransport::post_recv_raw(void* data, int64_t count, DType type, int peer,
                                                     int tag) {
  auto request = std::make_unique<MpiRequest>(false, peer, tag, count * dtype_bytes(type), timeout_s_);
  DRING_MPI_CHECK(MPI_Irecv(data, mpi_count(count), mpi_datatype(type), peer, tag, comm(), request->handle()));
  counters_.recv_bytes += count * dtype_bytes(type);
  return request;
}

void MpiCommTransport::barrier() { barrier_until_deadline(comm_, timeout_s_, "barrier"); }

double MpiCommTransport::allreduce_max(double value) {
  double result = 0.0;
  allreduce_until_deadline(comm_, &value, &result, 1, MPI_DOUBLE, MPI_MAX, timeout_s_, "allreduce (max)");
  return result;
}

int64_t MpiCommTransport::allreduce_sum(int64_t value) {
  int64_t result = 0;
  allreduce_until_deadline(comm_, &value, &result, 1, MPI_INT64_T, MPI_SUM, timeout_s_, "allreduce (sum)");
  return result;
}

}  // namespace dring::comm
