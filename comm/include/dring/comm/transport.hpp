// dring/comm/transport.hpp — the interface the ring executor moves K/V rows through.
//
// A transport knows ranks and buffers, nothing of attention. Sends and receives are non-blocking
// and return a Request; `test` lets the caller drive progress while it computes, `wait` blocks.
// Buffers are typed spans (element counts); a transport counts the bytes it moved so reports can
// hold them to the plan. Implementations: MpiTransport (host memory), NcclTransport (device).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

#include "dring/core/dtype.hpp"

namespace dring::comm {

// A posted send or receive. Move-only through unique_ptr; destroying an unfinished request
// cancels it (only error paths do that). wait() gives up after the transport's timeout_s() and
// throws Error(kCommError) naming the peer, the tag and the time waited (dring/comm/deadline.hpp).
class Request {
 public:
  virtual ~Request() = default;
  virtual bool test() = 0;  // true once complete; drives progress
  virtual void wait() = 0;
};

struct CommCounters {
  int64_t sent_bytes = 0;
  int64_t recv_bytes = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  virtual int world_rank() const = 0;
  virtual int world_size() const = 0;

  template <class T>
  std::unique_ptr<Request> post_send(std::span<const T> data, int peer, int tag) {
    return post_send_raw(data.data(), static_cast<int64_t>(data.size()), dtype_of<std::remove_const_t<T>>(), peer, tag);
  }
  template <class T>
  std::unique_ptr<Request> post_recv(std::span<T> data, int peer, int tag) {
    return post_recv_raw(data.data(), static_cast<int64_t>(data.size()), dtype_of<std::remove_const_t<T>>(), peer, tag);
  }

  // The same, for buffers whose element type is decided at run time (bf16 K/V rows, say).
  virtual std::unique_ptr<Request> post_send_raw(const void* data, int64_t count, DType type, int peer,
                                                 int tag) = 0;
  virtual std::unique_ptr<Request> post_recv_raw(void* data, int64_t count, DType type, int peer,
                                                 int tag) = 0;

  // Operations posted between begin_step() and end_step() form one step of the exchange plan. A
  // transport may start them together: NCCL issues a step as one group, which keeps it free of
  // deadlock as long as every rank brackets its matching steps in the same global order (the ring
  // executor does). MPI starts every operation at once and ignores the brackets.
  virtual void begin_step() {}
  virtual void end_step() {}
  // Milliseconds the device spent waiting for transfers since the last call, for transports whose
  // wait() does not block the host (NCCL makes the compute stream wait instead). Call once the
  // backend has synchronised. Host-blocking transports return 0: their waits are timed by the caller.
  virtual double take_device_wait_ms() { return 0.0; }

  // Collectives over every rank; like wait(), they give up after timeout_s().
  virtual void barrier() = 0;
  virtual double allreduce_max(double value) = 0;
  virtual int64_t allreduce_sum(int64_t value) = 0;

  const CommCounters& counters() const { return counters_; }

  // The limit on every wait for a peer, in seconds (dring/comm/deadline.hpp): requests posted
  // after a change get the new limit.
  double timeout_s() const { return timeout_s_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

 protected:
  CommCounters counters_;
  double timeout_s_ = 600.0;  // MPI transports start from default_comm_timeout_s() (deadline.hpp)
};

}  // namespace dring::comm
