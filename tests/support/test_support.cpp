// Self-test of the test support: the redis-server fixture, the fault proxy and rlock-proxy.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/fault_proxy.h"
#include "support/redis_server.h"

extern char **environ;

namespace {

using rlock_test::FaultProxy;
using rlock_test::RedisIoError;
using rlock_test::RedisReply;
using rlock_test::RedisServer;
using rlock_test::RedisServerOptions;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Raw hiredis writes with write(2); a reset connection must give EPIPE here, not kill the test.
const bool kSigpipeIgnored = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

timeval tv_ms(long ms) { return timeval{ms / 1000, (ms % 1000) * 1000}; }

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

// A plain hiredis connection, not going through the fixture (no AUTH, any port).
class RawClient {
 public:
  RawClient(int port, long timeout_ms)
      : c_(redisConnectWithTimeout("127.0.0.1", port, tv_ms(timeout_ms))) {
    if (c_ && c_->err == 0) redisSetTimeout(c_.get(), tv_ms(timeout_ms));
  }
  explicit RawClient(const std::string &unix_path)
      : c_(redisConnectUnixWithTimeout(unix_path.c_str(), tv_ms(2000))) {}

  bool connected() const { return c_ && c_->err == 0; }
  // The reply as text ("PONG", "NOAUTH ...", "42"), or "IOERR: ..." if none came.
  std::string run(const char *cmd) {
    if (!connected()) return "IOERR: not connected";
    std::unique_ptr<redisReply, void (*)(void *)> r(
        static_cast<redisReply *>(redisCommand(c_.get(), cmd)), freeReplyObject);
    if (!r) return std::string("IOERR: ") + c_->errstr;
    if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
    if (r->type == REDIS_REPLY_NIL) return "(nil)";
    return r->str != nullptr ? std::string(r->str, r->len) : std::string();
  }
  redisContext *get() { return c_.get(); }

 private:
  struct Free {
    void operator()(redisContext *c) const { redisFree(c); }
  };
  std::unique_ptr<redisContext, Free> c_;
};

bool starts_with(const std::string &s, const std::string &prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

TEST_CASE("A started server answers PING on its loopback port", "[redis_server]") {
  REQUIRE(kSigpipeIgnored);
  RedisServer server;
  REQUIRE(server.running());
  REQUIRE(server.port() > 0);
  REQUIRE(server.host() == "127.0.0.1");
  REQUIRE(server.uri() == "redis://127.0.0.1:" + std::to_string(server.port()));
  REQUIRE(server.pid() > 0);
  REQUIRE(server.ping());
  RawClient raw(server.port(), 2000);
  REQUIRE(raw.run("PING") == "PONG");
}

TEST_CASE("The server helpers read back what commands wrote", "[redis_server]") {
  RedisServer server;
  REQUIRE(server.command("SET", "k", "v", "PX", "60000").is("OK"));
  REQUIRE(server.get("k") == std::optional<std::string>("v"));
  REQUIRE(server.get("missing") == std::nullopt);
  REQUIRE(server.exists("k"));
  REQUIRE_FALSE(server.exists("missing"));
  long long ttl = server.pttl("k");
  // Generous: only the time between SET and PTTL has passed.
  REQUIRE(ttl > 50000);
  REQUIRE(ttl <= 60000);
  REQUIRE(server.pttl("missing") == -2);
  server.set("other", "x");
  REQUIRE(server.pttl("other") == -1);
  auto keys = server.keys("*");
  std::sort(keys.begin(), keys.end());
  REQUIRE(keys == std::vector<std::string>{"k", "other"});
  RedisReply err = server.command("INCR", "k");
  REQUIRE(err.is_error());
  server.command("HSET", "h", "f", "v");
  REQUIRE_THROWS_WITH(server.get("h"), Catch::Contains("WRONGTYPE"));
  REQUIRE(server.del("k") == 1);
  server.flushall();
  REQUIRE(server.keys().empty());
}

TEST_CASE("A stopped server refuses connections", "[redis_server]") {
  RedisServer server;
  REQUIRE(server.ping());
  server.stop();
  REQUIRE_FALSE(server.running());
  REQUIRE(server.pid() == -1);
  REQUIRE_THROWS_AS(server.command("PING"), RedisIoError);
  REQUIRE_FALSE(server.ping());
  RawClient raw(server.port(), 1000);
  REQUIRE_FALSE(raw.connected());
}

TEST_CASE("A paused server times out commands until it is resumed", "[redis_server]") {
  RedisServer server;
  server.set_command_timeout(milliseconds(300));
  REQUIRE(server.ping());
  server.pause();
  REQUIRE(server.paused());
  REQUIRE(server.running());
  auto t0 = Clock::now();
  REQUIRE_THROWS_AS(server.command("PING"), RedisIoError);
  // The timeout is a socket receive timeout: allow a little slack below, much above.
  REQUIRE(elapsed_ms(t0) >= 250);
  REQUIRE(elapsed_ms(t0) < 5000);
  server.resume();
  REQUIRE_FALSE(server.paused());
  REQUIRE(server.ping());
}

TEST_CASE("A restarted server keeps its port and loses its data", "[redis_server]") {
  RedisServer server;
  const int port = server.port();
  const pid_t first_pid = server.pid();
  server.set("k", "v");
  server.restart();
  REQUIRE(server.port() == port);
  REQUIRE(server.pid() != first_pid);
  REQUIRE(server.ping());
  REQUIRE_FALSE(server.exists("k"));

  SECTION("also after a crash") {
    server.set("k", "v");
    server.kill();
    REQUIRE_FALSE(server.running());
    REQUIRE_THROWS_AS(server.command("PING"), RedisIoError);
    server.restart();
    REQUIRE(server.port() == port);
    REQUIRE(server.get("k") == std::nullopt);
  }
  SECTION("also while paused") {
    server.pause();
    server.restart();
    REQUIRE_FALSE(server.paused());
    REQUIRE(server.ping());
  }
}

TEST_CASE("A server with requirepass rejects unauthenticated commands", "[redis_server]") {
  RedisServerOptions options;
  options.extra_args = {"--requirepass", "secret"};
  RedisServer server(options);
  RawClient raw(server.port(), 2000);
  REQUIRE(starts_with(raw.run("PING"), "NOAUTH"));
  REQUIRE(raw.run("AUTH secret") == "OK");
  REQUIRE(raw.run("PING") == "PONG");
  // The fixture picked the password up from --requirepass.
  REQUIRE(server.ping());
}

TEST_CASE("A server with an ACL user authenticates the fixture as that user", "[redis_server]") {
  RedisServerOptions options;
  options.extra_args = {"--user", "alice", "on",     ">pw",     "~*",
                        "&*",     "+@all", "--user", "default", "off"};
  options.user = "alice";
  options.password = "pw";
  RedisServer server(options);
  REQUIRE(server.command("ACL", "WHOAMI").str == "alice");
  RawClient raw(server.port(), 2000);
  REQUIRE(starts_with(raw.run("PING"), "NOAUTH"));
}

TEST_CASE("The unix socket option serves on a socket in the server's directory", "[redis_server]") {
  RedisServerOptions options;
  options.unix_socket = true;
  RedisServer server(options);
  REQUIRE(server.unix_path() == server.dir() + "/redis.sock");
  RawClient raw(server.unix_path());
  REQUIRE(raw.run("PING") == "PONG");
  RedisServer tcp_only;
  REQUIRE(tcp_only.unix_path().empty());
}

TEST_CASE("A forked child's copy of the fixture leaves the server alone", "[redis_server]") {
  auto server = std::make_unique<RedisServer>();
  server->set("k", "parent");
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The child talks over its own connection, then destroys its copy of the object. It must
    // never return into Catch2, hence the catch-all.
    int code = 1;
    try {
      bool ok = server->get("k") == std::optional<std::string>("parent");
      server->set("k", "child");
      server->stop();  // a no-op outside the creating process
      server.reset();
      code = ok ? 0 : 1;
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(server->running());
  REQUIRE(server->get("k") == std::optional<std::string>("child"));
}

TEST_CASE("Servers started from several threads at once all come up", "[redis_server]") {
  constexpr int kThreads = 4;
  std::vector<std::unique_ptr<RedisServer>> servers(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&servers, i] { servers[i] = std::make_unique<RedisServer>(); });
  }
  for (auto &t : threads) t.join();
  // The starting threads are gone; the servers must outlive them.
  for (auto &s : servers) {
    REQUIRE(s);
    REQUIRE(s->ping());
  }
  REQUIRE(servers[0]->port() != servers[1]->port());
}

TEST_CASE("A missing redis-server binary gives a clear error", "[redis_server]") {
  const char *old = std::getenv("RLOCK_REDIS_SERVER");
  std::string saved = old != nullptr ? old : "";
  ::setenv("RLOCK_REDIS_SERVER", "/nonexistent/redis-server", 1);
  REQUIRE_THROWS_WITH(RedisServer(), Catch::Contains("redis-server not found") &&
                                         Catch::Contains("apt-get install redis-server"));
  if (old != nullptr) {
    ::setenv("RLOCK_REDIS_SERVER", saved.c_str(), 1);
  } else {
    ::unsetenv("RLOCK_REDIS_SERVER");
  }
}

TEST_CASE("A server that cannot start reports its own error", "[redis_server]") {
  RedisServerOptions options;
  options.extra_args = {"--no-such-directive", "1"};
  REQUIRE_THROWS_WITH(RedisServer(options), Catch::Contains("exited during startup") &&
                                                Catch::Contains("no-such-directive"));
}

TEST_CASE("The proxy forwards commands and counts connections and bytes", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  REQUIRE(proxy.port() > 0);
  REQUIRE(proxy.port() != server.port());
  REQUIRE(proxy.uri() == "redis://127.0.0.1:" + std::to_string(proxy.port()));
  RawClient raw(proxy.port(), 2000);
  REQUIRE(raw.run("PING") == "PONG");
  REQUIRE(raw.run("SET k v") == "OK");
  REQUIRE(server.get("k") == std::optional<std::string>("v"));
  REQUIRE(proxy.connections_accepted() == 1);
  REQUIRE(proxy.active_connections() == 1);
  REQUIRE(proxy.bytes_to_target() >= 14);  // "*1\r\n$4\r\nPING\r\n"
  REQUIRE(proxy.bytes_to_client() >= 7);   // "+PONG\r\n"
  REQUIRE(proxy.bytes_forwarded() == proxy.bytes_to_target() + proxy.bytes_to_client());
  REQUIRE(proxy.bytes_dropped() == 0);
}

TEST_CASE("Latency mode delays each round trip by at least twice the latency", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  RawClient raw(proxy.port(), 5000);
  REQUIRE(raw.run("PING") == "PONG");
  proxy.set_latency_ms(50);
  REQUIRE(proxy.latency_ms() == 50);
  auto t0 = Clock::now();
  REQUIRE(raw.run("PING") == "PONG");
  long long rtt = elapsed_ms(t0);
  // Each chunk is held until its due time (never early), so >= 2 * 50 - 1 for the clock's
  // rounding; the upper bound only catches "never delivered" on a loaded 2-core machine.
  REQUIRE(rtt >= 99);
  REQUIRE(rtt < 3000);
  proxy.set_latency_ms(0);
  t0 = Clock::now();
  REQUIRE(raw.run("PING") == "PONG");
  REQUIRE(elapsed_ms(t0) < 1000);
}

TEST_CASE("Latency changes never reorder data", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  RawClient raw(proxy.port(), 5000);
  proxy.set_latency_ms(100);
  constexpr int kCommands = 20;
  for (int i = 0; i < kCommands; ++i) {
    REQUIRE(redisAppendCommand(raw.get(), "INCR n") == REDIS_OK);
    // Flush one command per chunk, and lower the latency half way: later chunks must still wait
    // for the earlier ones.
    int done = 0;
    while (!done) REQUIRE(redisBufferWrite(raw.get(), &done) == REDIS_OK);
    if (i == kCommands / 2) proxy.set_latency_ms(0);
  }
  for (long long i = 1; i <= kCommands; ++i) {
    void *reply = nullptr;
    REQUIRE(redisGetReply(raw.get(), &reply) == REDIS_OK);
    std::unique_ptr<redisReply, void (*)(void *)> r(static_cast<redisReply *>(reply),
                                                    freeReplyObject);
    REQUIRE(r->type == REDIS_REPLY_INTEGER);
    REQUIRE(r->integer == i);
  }
}

TEST_CASE("Blackhole mode makes commands time out", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  RawClient idle(proxy.port(), 2000);
  REQUIRE(idle.run("PING") == "PONG");
  RawClient raw(proxy.port(), 300);
  REQUIRE(raw.run("PING") == "PONG");

  proxy.set_blackhole(true);
  REQUIRE(proxy.blackhole());
  auto t0 = Clock::now();
  REQUIRE(starts_with(raw.run("SET k v"), "IOERR"));
  REQUIRE(elapsed_ms(t0) >= 250);  // a 300 ms socket timeout, with slack for rounding
  REQUIRE(proxy.bytes_dropped() > 0);
  REQUIRE_FALSE(server.exists("k"));  // the command never reached the server
  // New connections are accepted but hang too.
  RawClient fresh(proxy.port(), 300);
  REQUIRE(fresh.connected());
  REQUIRE(starts_with(fresh.run("PING"), "IOERR"));

  proxy.set_blackhole(false);
  // A connection that stayed idle resumes; one that lost data was reset.
  REQUIRE(idle.run("PING") == "PONG");
  REQUIRE(starts_with(RawClient(proxy.port(), 2000).run("PING"), "PONG"));
}

TEST_CASE("reset_all breaks every open connection", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  RawClient a(proxy.port(), 2000);
  RawClient b(proxy.port(), 2000);
  REQUIRE(a.run("PING") == "PONG");
  REQUIRE(b.run("PING") == "PONG");
  REQUIRE(proxy.active_connections() == 2);
  proxy.reset_all();
  REQUIRE(proxy.active_connections() == 0);
  // The RST is already there: the next command fails at once instead of timing out.
  auto t0 = Clock::now();
  REQUIRE(starts_with(a.run("PING"), "IOERR"));
  REQUIRE(starts_with(b.run("PING"), "IOERR"));
  REQUIRE(elapsed_ms(t0) < 1000);
  RawClient c(proxy.port(), 2000);
  REQUIRE(c.run("PING") == "PONG");
}

TEST_CASE("Refuse mode refuses new connections until it is turned off", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  RawClient before(proxy.port(), 2000);
  REQUIRE(before.run("PING") == "PONG");
  proxy.set_refuse(true);
  REQUIRE(proxy.refusing());
  RawClient refused(proxy.port(), 1000);
  REQUIRE_FALSE(refused.connected());
  REQUIRE(std::string(refused.get()->errstr).find("refused") != std::string::npos);
  REQUIRE(before.run("PING") == "PONG");  // existing connections are untouched
  proxy.set_refuse(false);
  RawClient after(proxy.port(), 2000);
  REQUIRE(after.run("PING") == "PONG");
}

TEST_CASE("A proxy whose target is down resets its clients", "[fault_proxy]") {
  RedisServer server;
  FaultProxy proxy(server.host(), server.port());
  server.stop();
  auto t0 = Clock::now();
  RawClient raw(proxy.port(), 2000);
  // The proxy accepts, then resets as soon as its own connect is refused; on loopback the RST can
  // arrive before hiredis finishes its connect check, so either step may report it.
  REQUIRE(starts_with(raw.run("PING"), "IOERR"));
  REQUIRE(elapsed_ms(t0) < 1000);  // a reset, not a timeout
  REQUIRE(proxy.connections_accepted() == 1);
  server.restart();
  RawClient again(proxy.port(), 2000);
  REQUIRE(again.run("PING") == "PONG");
}

TEST_CASE("A forked child's copy of the proxy leaves the proxy running", "[fault_proxy]") {
  RedisServer server;
  auto proxy = std::make_unique<FaultProxy>(server.host(), server.port());
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 0;
    try {
      RawClient raw(proxy->port(), 2000);  // served by the parent's proxy thread
      if (raw.run("PING") != "PONG") code = 1;
      try {
        proxy->set_latency_ms(10);
        code = 3;  // must not reach a loop thread that does not exist here
      } catch (const std::logic_error &) {
      }
      proxy.reset();  // must return at once
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(proxy->latency_ms() == 0);
  RawClient raw(proxy->port(), 2000);
  REQUIRE(raw.run("PING") == "PONG");
}

TEST_CASE("rlock-proxy prints its port, forwards, and exits on stdin EOF", "[rlock_proxy]") {
  RedisServer server;
  int in[2], out[2];
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::string target = "127.0.0.1:" + std::to_string(server.port());
  std::vector<std::string> args = {RLOCK_PROXY_BIN, "--listen-port", "0", "--target",
                                   target,          "--latency-ms",  "1"};
  std::vector<char *> argv;
  for (auto &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, RLOCK_PROXY_BIN, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  REQUIRE(rc == 0);

  std::unique_ptr<FILE, int (*)(FILE *)> proxy_out(::fdopen(out[0], "r"), ::fclose);
  char line[64] = {};
  REQUIRE(std::fgets(line, sizeof line, proxy_out.get()) != nullptr);
  int port = 0;
  REQUIRE(std::sscanf(line, "PORT %d", &port) == 1);
  REQUIRE(port > 0);
  RawClient raw(port, 2000);
  REQUIRE(raw.run("PING") == "PONG");

  const char cmd[] = "stats\n";
  REQUIRE(::write(in[1], cmd, sizeof cmd - 1) == static_cast<ssize_t>(sizeof cmd - 1));
  REQUIRE(std::fgets(line, sizeof line, proxy_out.get()) != nullptr);
  REQUIRE(starts_with(line, "STATS accepted=1"));

  ::close(in[1]);  // EOF: the proxy exits on its own
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}
