// A real redis-server process for tests, on a free loopback port, started and stopped by pid.
//
//   rlock_test::RedisServer server;                 // starts it, waits until it answers PING
//   server.command("SET", "k", "v");                // talk to it directly to check its state
//   REQUIRE(server.get("k") == "v");
//   server.kill();  server.restart();               // same port, empty data set
//
// The binary is $RLOCK_REDIS_SERVER if set, else `redis-server` on PATH. Each server gets a fresh
// temporary directory (its --dir, log file and optional unix socket), removed by the destructor.
//
// Thread-safety: one RedisServer may be used by one thread at a time; different RedisServer
// objects may be used from different threads at once. After fork() the child may use the object
// (command() opens its own connection) but its destructor then leaves the server and the
// directory alone: only the process that created the object ever signals the server.
#ifndef RLOCK_TESTS_SUPPORT_REDIS_SERVER_H
#define RLOCK_TESTS_SUPPORT_REDIS_SERVER_H

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

struct redisContext;

namespace rlock_test {

// One reply, simplified. Arrays are flattened into `elements` (nested arrays are spliced in
// order; nil elements become "", integers their decimal form).
struct RedisReply {
  enum class Type { Nil, Integer, String, Status, Error, Array };
  Type type = Type::Nil;
  long long integer = 0;              // Integer
  std::string str;                    // String, Status, Error
  std::vector<std::string> elements;  // Array

  bool is_nil() const { return type == Type::Nil; }
  bool is_error() const { return type == Type::Error; }
  // True for a Status or String reply equal to `s` (e.g. "OK", "PONG").
  bool is(const std::string &s) const {
    return (type == Type::Status || type == Type::String) && str == s;
  }
};

// Thrown by command() and friends when the server cannot be reached or does not answer in time
// (connection refused, reset, timeout). An error *reply* is not an exception: it comes back as a
// RedisReply of type Error.
struct RedisIoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RedisServerOptions {
  // Appended to the fixture's own arguments, e.g. {"--requirepass", "secret"} or
  // {"--user", "alice", "on", ">pw", "~*", "&*", "+@all"}. Do not pass --port, --bind or --dir.
  std::vector<std::string> extra_args;
  // Also listen on <tempdir>/redis.sock (mode 700); see unix_path().
  bool unix_socket = false;
  // Credentials command() uses. If `password` is empty and extra_args contain
  // "--requirepass X", X is used. A non-empty `user` sends AUTH user password (ACL).
  std::string user;
  std::string password;
  // How long start()/restart() wait for the first answer to PING.
  std::chrono::milliseconds start_timeout{5000};
  // Connect and reply timeout of command() (changeable later with set_command_timeout).
  std::chrono::milliseconds command_timeout{2000};
  // Start in the constructor (otherwise call start()).
  bool start_now = true;
};

class RedisServer {
 public:
  RedisServer();
  explicit RedisServer(RedisServerOptions options);
  ~RedisServer();
  RedisServer(const RedisServer &) = delete;
  RedisServer &operator=(const RedisServer &) = delete;

  // Starts the server (no-op if running) and waits until it answers PING. The port is chosen the
  // first time and kept for the object's lifetime: the fixture holds it with a bound,
  // non-listening SO_REUSEADDR socket, so no other process can take it while the server is down.
  // Throws std::runtime_error if the binary is missing or the server does not come up (the
  // message includes the tail of its log).
  void start();
  // SIGTERM, wait up to 5 s, then SIGKILL. No-op if not running.
  void stop();
  // SIGKILL and reap: a crash. No-op if not running.
  void kill();
  // SIGSTOP / SIGCONT: a hung server. The kernel still completes TCP handshakes on the port while
  // it is paused; commands just get no answer. Both return once the state change happened.
  void pause();
  void resume();
  // stop() if running, then start() on the same port with the same arguments. Without
  // persistence (--save "" --appendonly no) the restarted server is empty.
  void restart();
  // True if the process is alive (paused counts as alive). Notices a server that died by itself.
  bool running();
  bool paused() const { return paused_; }

  int port() const { return port_; }
  const std::string &host() const { return host_; }
  std::string uri() const;  // "redis://127.0.0.1:PORT"
  // "<tempdir>/redis.sock" if the unix_socket option is set, else "".
  std::string unix_path() const;
  pid_t pid() const { return pid_; }
  const std::string &dir() const { return dir_; }
  std::string log_path() const { return dir_ + "/redis.log"; }
  // The last `max_bytes` of the server log (for failure messages).
  std::string log_tail(std::size_t max_bytes = 2000) const;

  // Runs one command on a cached connection (opened on demand, authenticated with the configured
  // credentials). Throws RedisIoError on connection failure or timeout; the connection is then
  // dropped so the next call reconnects.
  RedisReply command_argv(const std::vector<std::string> &argv);
  template <typename... Args>
  RedisReply command(Args &&...args) {
    return command_argv(std::vector<std::string>{std::string(std::forward<Args>(args))...});
  }
  void set_command_timeout(std::chrono::milliseconds timeout);
  // Closes the cached connection (the next command opens a new one).
  void disconnect();

  // Helpers over command(); all throw RedisIoError like command(), and std::runtime_error if the
  // server answers with an error.
  bool ping();  // never throws: true if the server answered PING with PONG
  std::optional<std::string> get(const std::string &key);
  void set(const std::string &key, const std::string &value);
  long long pttl(const std::string &key);  // -2 missing, -1 no expiry, else ms left
  bool exists(const std::string &key);
  long long del(const std::string &key);
  std::vector<std::string> keys(const std::string &pattern = "*");
  void flushall();

 private:
  struct ContextDeleter {
    void operator()(redisContext *c) const;
  };
  using Context = std::unique_ptr<redisContext, ContextDeleter>;

  void start_locked();
  void release_locked() noexcept;
  void stop_locked(bool graceful);
  bool reap_locked(bool block);
  void wait_until_up_locked();
  void signal_locked(int sig);
  Context connect(std::chrono::milliseconds timeout) const;
  void authenticate(redisContext *c) const;
  bool owner() const;

  RedisServerOptions options_;
  std::string binary_;
  std::string host_ = "127.0.0.1";
  std::string dir_;
  int port_ = 0;
  int reserve_fd_ = -1;  // keeps port_ bound while the server is down
  pid_t pid_ = -1;       // -1 once reaped
  int pidfd_ = -1;       // signals go through it, so a recycled pid is never hit
  bool paused_ = false;
  pid_t creator_ = -1;
  std::string last_exit_ = "unknown status";  // of the last reaped process, for messages

  mutable std::mutex mu_;
  Context conn_;
  pid_t conn_pid_ = -1;  // process that opened conn_ (a forked child must not share the socket)
};

}  // namespace rlock_test

#endif  // RLOCK_TESTS_SUPPORT_REDIS_SERVER_H
