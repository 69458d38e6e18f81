// nccl_transport.cpp — NCCL send/recv on a communication stream, ordered with the compute stream by
// events, one group per step; grouping and the watchdog are described in dring/comm/nccl_transport.hpp.
#include "dring/comm/nccl_transport.hpp"

#include <exception>
#include <sstream>
#include <thread>

#include "dring/comm/deadline.hpp"
#include "dring/comm/mpi_transport.hpp"

namespace dring::comm {

void nccl_fail(ncclResult_t code, const char* call) {
  const char* detail = ncclGetLastError(nullptr);
  DRING_FAIL(Status::kCommError, "NCCL call " << call << " failed on " << error_rank_text()
                                              << ": " << ncclGetErrorString(code)
                                              << (detail != nullptr && detail[0] != '\0' ? std::string(" (") + detail + ")"
                                                                                          : std::string()));
}

namespace {

ncclDataType_t nccl_type(DType type) {
  switch (type) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
  }
  return ncclFloat32;
}

class NcclRequest final : public Request {
 public:
  NcclRequest(NcclTransport& transport, std::shared_ptr<NcclTransport::Op> op)
      : transport_(transport), op_(std::move(op)) {}
  bool test() override { return op_->issued && op_->done->done(); }
  void wait() override {
    if (waited_) return;
    transport_.wait_on(*op_);
    waited_ = true;
  }

 private:
  NcclTransport& transport_;
  std::shared_ptr<NcclTransport::Op> op_;
  bool waited_ = false;
};

}  // namespace

NcclTransport::NcclTransport(MPI_Comm comm, cudaStream_t compute)
    : MpiCommTransport(comm), compute_(compute) {
  // Rank 0 makes the unique id; its success travels with it, so a failure there is everyone's
  // failure rather than a hang in the broadcast.
  struct {
    int rc = 0;
    ncclUniqueId id;
  } shared;
  if (world_rank() == 0) shared.rc = static_cast<int>(ncclGetUniqueId(&shared.id));
  DRING_MPI_CHECK(MPI_Bcast(&shared, sizeof shared, MPI_BYTE, 0, this->comm()));
  DRING_CHECK(shared.rc == 0, Status::kCommError,
              "ncclGetUniqueId failed on world rank 0: " << ncclGetErrorString(static_cast<ncclResult_t>(shared.rc)));
  stream_ = cuda::Stream::create_high_priority();
  DRING_NCCL_CHECK(ncclCommInitRank(&nccl_, world_size(), shared.id, world_rank()));
}

NcclTransport::NcclTransport(const ncclUniqueId& id, int rank, int world_size, cudaStream_t compute)
    : MpiCommTransport(rank, world_size), compute_(compute) {
  DRING_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, Status::kInvalidArgument,
              "NCCL rank " << rank << " is not in [0, world size " << world_size << ")");
  stream_ = cuda::Stream::create_high_priority();
  DRING_CUDA_CHECK(cudaMalloc(&scalar_, 8));
  DRING_NCCL_CHECK(ncclCommInitRank(&nccl_, world_size, id, rank));
}

void NcclTransport::allreduce_scalar(void* value, ncclDataType_t type, ncclRedOp_t op, const char* what) {
  DRING_CHECK(!aborted_, Status::kCommError, "NCCL transport of world rank " << world_rank() << " was aborted earlier");
  DRING_CUDA_CHECK(cudaMemcpyAsync(scalar_, value, 8, cudaMemcpyHostToDevice, stream_.get()));
  DRING_NCCL_CHECK(ncclAllReduce(scalar_, scalar_, 1, type, op, nccl_, stream_.get()));
  DRING_CUDA_CHECK(cudaMemcpyAsync(value, scalar_, 8, cudaMemcpyDeviceToHost, stream_.get()));
  auto done = std::make_shared<cuda::Event>(cuda::Event::create());
  done->record(stream_.get());
  in_flight_.push_back({done, std::chrono::steady_clock::now(), what});
  // Poll rather than block, so that a peer that never joins ends in the watchdog's error.
  while (!done->done()) {
    check_health();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void NcclTransport::barrier() {
  if (comm() != MPI_COMM_NULL) return MpiCommTransport::barrier();
  int64_t zero = 0;
  allreduce_scalar(&zero, ncclInt64, ncclSum, "barrier (allreduce)");
}

double NcclTransport::allreduce_max(double value) {
  if (comm() != MPI_COMM_NULL) return MpiCommTransport::allreduce_max(value);
  allreduce_scalar(&value, ncclFloat64, ncclMax, "allreduce (max)");
  return value;
}

int64_t NcclTransport::allreduce_sum(int64_t value) {
  if (comm() != MPI_COMM_NULL) return MpiCommTransport::allreduce_sum(value);
  allreduce_scalar(&value, ncclInt64, ncclSum, "allreduce (sum)");
  return value;
}

NcclTransport::~NcclTransport() {
  bool idle = true;
  for (const InFlight& f : in_flight_) {
    if (cudaEventQuery(f.done->get()) != cudaSuccess) idle = false;
  }
  if (!idle || std::uncaught_exceptions() > 0) {
    abort_all();  // an error path: never wait on a peer that may be gone
  } else if (nccl_ != nullptr) {
    ncclCommDestroy(nccl_);
    nccl_ = nullptr;
  }
  if (scalar_ != nullptr) cudaFree(scalar_);
}

void NcclTransport::abort_all() noexcept {
  if (nccl_ != nullptr) ncclCommAbort(nccl_);
  nccl_ = nullptr;
  aborted_ = true;
}

std::shared_ptr<NcclTransport::Op> NcclTransport::make_op(bool send, const void* data, int64_t count, DType type,
                                                          int peer, int tag) {
  DRING_CHECK(!aborted_, Status::kCommError, "NCCL transport of world rank " << world_rank() << " was aborted earlier");
  auto op = std::make_shared<Op>();
  op->send = send;
  op->data = const_cast<void*>(data);
  op->count = count;
  op->type = type;
  op->peer = peer;
  op->tag = tag;
  op->ready = cuda::Event::create();
  op->ready.record(compute_);  // the kernels enqueued so far (the packing of a send, the readers of a receive buffer)
  return op;
}

void NcclTransport::post(const std::shared_ptr<Op>& op) {
  if (in_step_) {
    step_.push_back(op);
  } else {
    issue({op});
  }
}

std::unique_ptr<Request> NcclTransport::post_send_raw(const void* data, int64_t count, DType type, int peer,
                                                      int tag) {
  auto op = make_op(true, data, count, type, peer, tag);
  post(op);
  counters_.sent_bytes += count * dtype_bytes(type);
  return std::make_unique<NcclRequest>(*this, op);
}

std::unique_ptr<Request> NcclTransport::post_recv_raw(void* data, int64_t count, DType type, int peer, int tag) {
  auto op = make_op(false, data, count, type, peer, tag);
  post(op);
  counters_.recv_bytes += count * dtype_bytes(type);
  return std::make_unique<NcclRequest>(*this, op);
}

void NcclTransport::begin_step() {
  DRING_ASSERT(!in_step_);
  in_step_ = true;
}

void NcclTransport::end_step() {
  DRING_ASSERT(in_step_);
  in_step_ = false;
  if (!step_.empty()) issue(step_);
  step_.clear();
}

void NcclTransport::issue(const std::vector<std::shared_ptr<Op>>& ops) {
  for (const auto& op : ops) DRING_CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), op->ready.get(), 0));
  DRING_NCCL_CHECK(ncclGroupStart());
  for (const auto& op : ops) {
    const size_t count = static_cast<size_t>(op->count);
    if (op->send) {
      DRING_NCCL_CHECK(ncclSend(op->data, count, nccl_type(op->type), op->peer, nccl_, stream_.get()));
    } else {
      DRING_NCCL_CHECK(ncclRecv(op->data, count, nccl_type(op->type), op->peer, nccl_, stream_.get()));
    }
  }
  DRING_NCCL_CHECK(ncclGroupEnd());
  auto done = std::make_shared<cuda::Event>(cuda::Event::create());
  done->record(stream_.get());
  std::ostringstream what;
  for (const auto& op : ops) {
    what << (what.tellp() > 0 ? " + " : "") << (op->send ? "send to" : "receive from") << " rank " << op->peer
         << " (tag " << op->tag << ", " << op->count * dtype_bytes(op->type) << " bytes)";
    op->done = done;
    op->issued = true;
  }
  // Forget completed groups, keep the rest for the watchdog.
  std::erase_if(in_flight_, [](const InFlight& f) { return cudaEventQuery(f.done->get()) == cudaSuccess; });
  in_flight_.push_back({done, std::chrono::steady_clock::now(), what.str()});
}

void NcclTransport::wait_on(Op& op) {
  DRING_CHECK(!aborted_, Status::kCommError, "NCCL transport of world rank " << world_rank() << " was aborted earlier");
  DRING_CHECK(op.issued, Status::kInternal, "an NCCL operation was waited on before its step ended");
  std::pair<cuda::Event, cuda::Event> timing{cuda::Event::create(true), cuda::Event::create(true)};
  timing.first.record(compute_);
  DRING_CUDA_CHECK(cudaStreamWaitEvent(compute_, op.done->get(), 0));
  timing.second.record(compute_);
  waits_.push_back(std::move(timing));
}

void NcclTransport::check_health() {
  DRING_CHECK(!aborted_, Status::kCommError, "NCCL transport of world rank " << world_rank() << " was aborted earlier");
  ncclResult_t async = ncclSuccess;
  DRING_NCCL_CHECK(ncclCommGetAsyncError(nccl_, &async));
  if (async != ncclSuccess && async != ncclInProgress) {
    abort_all();
    DRING_FAIL(Status::kCommError, "NCCL reported an asynchronous error on world rank "
                                       << world_rank() << ": " << ncclGetErrorString(async) << "; its communicator was aborted");
  }
  std::erase_if(in_flight_, [](const InFlight& f) { return cudaEventQuery(f.done->get()) == cudaSuccess; });
  const auto now = std::chrono::steady_clock::now();
  for (const InFlight& f : in_flight_) {
    const double age_s = std::chrono::duration<double>(now - f.issued_at).count();
    if (age_s > timeout_s_) {
      const std::string what = f.what;
      abort_all();
      DRING_FAIL(Status::kCommError, "NCCL " << what << " did not complete within " << seconds_text(timeout_s_)
                                             << " on world rank " << world_rank()
                                             << " (a peer failed, or ranks posted mismatched messages); "
                                                "its communicator was aborted (--comm-timeout or "
                                             << kCommTimeoutVariable << " sets the limit)");
    }
  }
}

double NcclTransport::take_device_wait_ms() {
  double total = 0.0;
  for (const auto& [before, after] : waits_) {
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, before.get(), after.get()) == cudaSuccess) total += ms;
  }
  waits_.clear();
  return total;
}

}  // namespace dring::comm
