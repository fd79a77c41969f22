// Faults on a single server: down, paused, restarted, black-holed, reset. Every call stays bounded
// by its timeouts and reports the specific status.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "helpers.h"
#include "support/fault_proxy.h"
#include "support/redis_server.h"

using namespace rlock_test;

TEST_CASE("a server that is down gives RLOCK_ERR_IO at once") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  auto l = make_lock(c.get(), unique_key("down"), 5000);
  srv.kill();
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 0); });
  CHECK(rc == RLOCK_ERR_IO);
  CHECK(ms < 500);  // a refused connect is immediate; bound far below the 1 s connect timeout
  CHECK(std::string(rlock_last_error()).find(std::to_string(srv.port())) != std::string::npos);
  // With a wait, I/O failures are retried until the wait is over, then reported.
  ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 300); });
  CHECK(rc == RLOCK_ERR_IO);
  CHECK(ms >= 290);
  CHECK(ms < 2000);
  // And the lock works again once the server is back.
  srv.start();
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a paused server gives RLOCK_ERR_TIMEOUT within the command timeout") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=200");
  auto l = make_lock(c.get(), unique_key("paused"), 5000);
  REQUIRE(rlock_client_ping(c.get()) == RLOCK_OK);  // connected before the pause
  srv.pause();
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 0); });
  CHECK(rc == RLOCK_ERR_TIMEOUT);
  CHECK(ms >= 190);
  CHECK(ms < 1200);  // 200 ms timeout, generous margin for a loaded 2-core machine
  CHECK(std::string(rlock_last_error()).find("no reply within 200 ms") != std::string::npos);
  srv.resume();
  // The timed-out connection was dropped; a new one is made and the server's late work (our SET
  // may have landed after the timeout) does not block us: the undo removed it.
  CHECK(rlock_acquire(l.get(), 2000) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a SET that lands after its timeout does not block its own handle") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=100");
  const std::string key = unique_key("late-set");
  auto l = make_lock(c.get(), key, 30000);
  REQUIRE(rlock_client_ping(c.get()) == RLOCK_OK);
  srv.pause();
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_TIMEOUT);
  srv.resume();  // the server now runs the SET it had already received, and our undo, in some order
  // Whatever the order, the same handle gets the lock (the late key carries its token) well before
  // the 30 s TTL, and its release leaves nothing behind.
  CHECK(rlock_acquire(l.get(), 3000) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  CHECK_FALSE(srv.exists(key));
}

TEST_CASE("a black-holed server (accepts, never answers) gives RLOCK_ERR_TIMEOUT") {
  RedisServer srv;
  FaultProxy proxy("127.0.0.1", srv.port());
  auto c = make_client(proxy.uri() + "?command_timeout_ms=150");
  auto l = make_lock(c.get(), unique_key("blackhole"), 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  proxy.set_blackhole(true);
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 0); });
  CHECK(rc == RLOCK_ERR_TIMEOUT);
  CHECK(ms < 1000);
  // A release of a lock we do not hold makes no call at all; a ping does, and times out too.
  CHECK(rlock_client_ping(c.get()) == RLOCK_ERR_TIMEOUT);
  proxy.set_blackhole(false);
  CHECK(rlock_acquire(l.get(), 2000) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a connection reset mid-way is RLOCK_ERR_IO or recovered, never a hang") {
  RedisServer srv;
  FaultProxy proxy("127.0.0.1", srv.port());
  auto c = make_client(proxy.uri());
  auto l = make_lock(c.get(), unique_key("reset"), 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  proxy.reset_all();
  // The reset may or may not have been seen before the next call; either way the result is one of
  // these and a retry works.
  int rc = rlock_release(l.get());
  CHECK((rc == RLOCK_OK || rc == RLOCK_ERR_IO));
  CHECK(rlock_acquire(l.get(), 3000) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a name that does not resolve fails within the connect timeout") {
  auto c = make_client("redis://no-such-host.invalid:6379?connect_timeout_ms=300");
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_client_ping(c.get()); });
  CHECK((rc == RLOCK_ERR_IO || rc == RLOCK_ERR_TIMEOUT));
  CHECK(ms < 1500);
}

TEST_CASE("extend on a server that stopped answering keeps a safe validity and reports the error") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=100");
  auto l = make_lock(c.get(), unique_key("extend-fault"), 10000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  int64_t before = rlock_validity_ms(l.get());
  srv.pause();
  CHECK(rlock_extend(l.get(), 60000) == RLOCK_ERR_TIMEOUT);
  int64_t after = rlock_validity_ms(l.get());
  CHECK(after > 0);
  CHECK(after <= before);  // never more than what we knew before the failed extend
  srv.resume();
  CHECK(rlock_extend(l.get(), 60000) == RLOCK_OK);
  CHECK(rlock_validity_ms(l.get()) > 50000);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("freeing a held lock whose server is down returns within the timeouts") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=100&connect_timeout_ms=100");
  rlock *l = nullptr;
  REQUIRE(rlock_new(c.get(), unique_key("free-down").c_str(), 5000, &l) == RLOCK_OK);
  REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
  srv.pause();
  auto ms = elapsed_ms([&] { rlock_free(l); });
  CHECK(ms < 1000);
  srv.resume();
}

TEST_CASE("a connect that never completes is RLOCK_ERR_TIMEOUT within the connect timeout") {
  // A listener that never accepts, with its accept queue filled: the kernel then drops further
  // SYNs, so a connect hangs, as it would towards a host that silently drops packets.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(lfd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
  REQUIRE(listen(lfd, 0) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(lfd, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {  // fill the queue (backlog 0 still admits one or two)
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
    fillers.push_back(fd);
  }
  const std::string uri = "redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) +
                          "?connect_timeout_ms=200&command_timeout_ms=5000";
  auto c = make_client(uri);
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_client_ping(c.get()); });
  // The connect hangs, so the 200 ms connect timeout fires (the 5 s command timeout must not be
  // what ends the call).
  CHECK(rc == RLOCK_ERR_TIMEOUT);
  CHECK(ms >= 190);
  CHECK(ms < 2000);
  CHECK(std::string(rlock_last_error()).find("connect") != std::string::npos);
  for (int fd : fillers) close(fd);
  close(lfd);
}
