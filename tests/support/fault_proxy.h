// A fault-injecting TCP proxy for tests: listens on a free 127.0.0.1 port and forwards every
// connection to a target, with faults switchable at run time.
//
//   rlock_test::RedisServer server;
//   rlock_test::FaultProxy proxy(server.host(), server.port());
//   // point the client at proxy.uri() instead of server.uri(), then:
//   proxy.set_latency_ms(50);   // +50 ms each way, order kept
//   proxy.set_blackhole(true);  // a hung server / partition: nothing comes back
//   proxy.reset_all();          // every open connection gets a TCP RST
//   proxy.set_refuse(true);     // new connections are refused (ECONNREFUSED)
//
// The proxy runs a libuv loop on its own thread, started by the constructor and joined by the
// destructor. All member functions are thread-safe. Every setter returns only after the proxy
// thread has applied it, so what the test does next already sees the new behaviour.
// After fork() the proxy keeps running in the parent only: in the child the setters throw
// std::logic_error, the counters are a stale copy, and the destructor does nothing.
// Data is forwarded without backpressure (a slow reader makes the proxy buffer), which is fine
// for tests and benchmarks, not for bulk transfers.
#ifndef RLOCK_TESTS_SUPPORT_FAULT_PROXY_H
#define RLOCK_TESTS_SUPPORT_FAULT_PROXY_H

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rlock_test {

class FaultProxy {
 public:
  // Listens on 127.0.0.1:listen_port (0 = a free port, kept reserved for the proxy's lifetime) and
  // forwards to target_host:target_port (a numeric address or a resolvable name). Throws
  // std::runtime_error if it cannot listen or resolve the target.
  FaultProxy(const std::string &target_host, int target_port, int listen_port = 0);
  ~FaultProxy();
  FaultProxy(const FaultProxy &) = delete;
  FaultProxy &operator=(const FaultProxy &) = delete;

  int port() const;
  std::string host() const;  // "127.0.0.1"
  std::string uri() const;   // "redis://127.0.0.1:PORT"

  // Delays every chunk of data by `ms_each_way` in each direction (a timer queue per direction;
  // order is kept, so lowering the latency never lets new data overtake queued data). Applies to
  // data read from now on, on existing and new connections. 0 turns it off.
  void set_latency_ms(int ms_each_way);
  // While on, connections are still accepted and read, but data in both directions (including
  // data already queued by the latency mode, and EOFs) is dropped. A connection that lost data is
  // poisoned: its byte stream can never be resynchronised, so when the blackhole is turned off
  // it is reset (RST to the client) rather than resumed. Connections that stayed idle resume.
  void set_blackhole(bool on);
  // While on, the listening socket is closed, so new connects fail with ECONNREFUSED like a
  // server that is down; the port stays reserved (a bound, non-listening socket) so it can be
  // listened on again. Existing connections are untouched (combine with reset_all()).
  void set_refuse(bool on);
  // Aborts every open connection: RST to the client, normal close towards the target.
  void reset_all();

  int latency_ms() const;
  bool blackhole() const;
  bool refusing() const;

  // Counters over all connections. Bytes are counted before they are written on, so once a
  // client has received a reply the reply is already counted. active_connections() drops at once
  // for reset_all(), and a moment after the peers close for ordinary closes.
  std::uint64_t connections_accepted() const;
  std::size_t active_connections() const;
  std::uint64_t bytes_to_target() const;  // client -> target, handed to the target socket
  std::uint64_t bytes_to_client() const;  // target -> client
  std::uint64_t bytes_forwarded() const;  // both directions
  std::uint64_t bytes_dropped() const;    // swallowed by the blackhole

 private:
  class Impl;
  void check_owner() const;
  std::unique_ptr<Impl> impl_;
  pid_t creator_;
};

}  // namespace rlock_test

#endif  // RLOCK_TESTS_SUPPORT_FAULT_PROXY_H
