#include "support/redis_server.h"

#include "support/ports.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <utility>

namespace rlock_test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string errno_text(int err) { return std::strerror(err); }

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks extern "C", so its wrappers do not link from C++.
int pidfd_open_raw(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal_raw(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

timeval to_timeval(milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// $RLOCK_REDIS_SERVER, else redis-server on PATH; resolved here because execv (unlike execvp) is
// safe to call between fork and exec in a multithreaded process.
std::string find_redis_server() {
  const char *env = std::getenv("RLOCK_REDIS_SERVER");
  std::string name = (env != nullptr && *env != '\0') ? env : "redis-server";
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
  } else {
    const char *path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
    std::string d;
    while (std::getline(dirs, d, ':')) {
      std::string candidate = (d.empty() ? "." : d) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  throw std::runtime_error("redis-server not found (looked for '" + name +
                           "'; set RLOCK_REDIS_SERVER or install it with "
                           "apt-get install redis-server)");
}

// Keeps the server's port reserved while the server is down (see support/ports.h).
int reserve_port(int *port) { return reserve_loopback_port(0, port, "RedisServer"); }

std::string make_temp_dir() {
  // A unix socket path must fit in 108 bytes; fall back to /tmp if $TMPDIR is long.
  const char *env = std::getenv("TMPDIR");
  std::string base = (env != nullptr && *env != '\0' && std::strlen(env) < 60) ? env : "/tmp";
  std::string templ = base + "/rlock-redis-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + templ + ": " + errno_text(errno));
  }
  return buf.data();
}

std::string file_tail(const std::string &path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::size_t>(in.tellg());
  std::size_t from = size > max_bytes ? size - max_bytes : 0;
  in.seekg(static_cast<std::streamoff>(from));
  std::string s(size - from, '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  return s;
}

struct SpawnSpec {
  std::string binary;
  std::vector<std::string> args;  // without argv[0]
  std::string output_path;        // the child's stdout and stderr
};

// fork + exec. Between the two only async-signal-safe calls. The child asks for SIGKILL when the
// forking thread dies, so a test process that crashes or is killed by ctest's timeout does not
// leave redis-servers behind.
pid_t spawn_now(const SpawnSpec &spec) {
  std::vector<std::string> strings;
  strings.reserve(spec.args.size() + 1);
  strings.push_back(spec.binary);
  strings.insert(strings.end(), spec.args.begin(), spec.args.end());
  std::vector<char *> argv;
  for (auto &s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out_fd = ::open(spec.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int err_pipe[2] = {-1, -1};
  if (null_fd < 0 || out_fd < 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    for (int fd : {null_fd, out_fd, err_pipe[0], err_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    throw std::runtime_error("cannot prepare to start redis-server: " + errno_text(err));
  }
  sigset_t empty;
  sigemptyset(&empty);
  const pid_t parent = ::getpid();
  const long max_fd = ::sysconf(_SC_OPEN_MAX);
  const char *binary = spec.binary.c_str();

  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
      ::signal(sig, SIG_DFL);
    }
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    // No inherited descriptor (other servers' reserved ports, client sockets, the proxy's
    // sockets) may outlive exec: a leaked client socket would keep a connection open in redis.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (long fd = 3; fd < max_fd; ++fd) {
        if (fd != err_pipe[1]) ::close(static_cast<int>(fd));
      }
    }
    ::execv(binary, argv.data());
    int err = errno;
    ssize_t ignored = ::write(err_pipe[1], &err, sizeof err);
    (void)ignored;
    ::_exit(127);
  }
  int fork_errno = errno;
  ::close(null_fd);
  ::close(out_fd);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(err_pipe[0]);
    throw std::runtime_error("fork: " + errno_text(fork_errno));
  }
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n > 0) {  // exec failed; EOF means the pipe closed on a successful exec
    int status = 0;
    ::waitpid(pid, &status, 0);
    throw std::runtime_error("cannot execute " + spec.binary + ": " + errno_text(child_errno));
  }
  return pid;
}

// Forks from one long-lived thread. PR_SET_PDEATHSIG fires when the *thread* that forked exits,
// so forking from a test's worker thread would kill the server when that thread ends.
class Spawner {
 public:
  static Spawner &instance() {
    // Deliberately leaked: the thread runs until the process exits, so the mutex and condition
    // variable it waits on must never be destroyed by static destructors.
    static Spawner &spawner = *new Spawner;
    return spawner;
  }

  pid_t spawn(const SpawnSpec &spec) {
    // In a forked child the spawner thread does not exist; fork from the calling thread.
    if (::getpid() != pid_) return spawn_now(spec);
    std::packaged_task<pid_t()> task([&spec] { return spawn_now(spec); });
    auto result = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  Spawner() : pid_(::getpid()) {
    std::thread([this] { run(); }).detach();
  }

  void run() {
    // Process-directed signals (SIGTERM, SIGINT, SIGCHLD) belong to the test's own threads.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
      std::packaged_task<pid_t()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<pid_t()>> tasks_;
};

void append_flattened(const redisReply *r, std::vector<std::string> *out) {
  switch (r->type) {
    case REDIS_REPLY_ARRAY:
      for (std::size_t i = 0; i < r->elements; ++i) append_flattened(r->element[i], out);
      break;
    case REDIS_REPLY_INTEGER:
      out->push_back(std::to_string(r->integer));
      break;
    case REDIS_REPLY_NIL:
      out->emplace_back();
      break;
    default:
      out->emplace_back(r->str, r->len);
  }
}

RedisReply convert(const redisReply *r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::String;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::Status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::Error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::Integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::Array;
      append_flattened(r, &out.elements);
      break;
    default:
      out.type = RedisReply::Type::Nil;
  }
  return out;
}

struct ReplyDeleter {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// Blocks SIGPIPE in this thread for its scope and discards one raised meanwhile: hiredis writes
// with write(2), which raises SIGPIPE on a connection the server has reset.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero{};
        ::sigtimedwait(&pipe_, nullptr, &zero);
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard &) = delete;
  SigpipeGuard &operator=(const SigpipeGuard &) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

ReplyPtr run_argv(redisContext *c, const std::vector<std::string> &args) {
  SigpipeGuard guard;
  std::vector<const char *> argv;
  std::vector<std::size_t> lens;
  for (const auto &a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return ReplyPtr(static_cast<redisReply *>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
}

RedisReply expect_no_error(RedisReply r, const char *what) {
  if (r.is_error()) throw std::runtime_error(std::string(what) + ": " + r.str);
  return r;
}

}  // namespace

void RedisServer::ContextDeleter::operator()(redisContext *c) const { redisFree(c); }

RedisServer::RedisServer() : RedisServer(RedisServerOptions{}) {}

RedisServer::RedisServer(RedisServerOptions options)
    : options_(std::move(options)), creator_(::getpid()) {
  if (options_.password.empty()) {
    const auto &a = options_.extra_args;
    for (std::size_t i = 0; i + 1 < a.size(); ++i) {
      if (a[i] == "--requirepass") options_.password = a[i + 1];
    }
  }
  if (options_.start_now) {
    try {
      start();
    } catch (...) {
      // No destructor runs for a throwing constructor: clean up the directory and port here.
      std::lock_guard<std::mutex> lock(mu_);
      release_locked();
      throw;
    }
  }
}

RedisServer::~RedisServer() {
  std::lock_guard<std::mutex> lock(mu_);
  release_locked();
}

void RedisServer::release_locked() noexcept {
  conn_.reset();  // in a forked child this only closes the child's copy of the socket
  if (owner()) {
    try {
      stop_locked(true);
    } catch (...) {
      // Must not throw; stop_locked ends with SIGKILL anyway.
    }
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  // A forked child closes its copies only; the parent still holds the port and the process.
  if (pidfd_ >= 0) ::close(pidfd_);
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
  pidfd_ = -1;
  reserve_fd_ = -1;
}

bool RedisServer::owner() const { return ::getpid() == creator_; }

void RedisServer::start() {
  std::lock_guard<std::mutex> lock(mu_);
  start_locked();
}

void RedisServer::start_locked() {
  if (!owner()) throw std::runtime_error("RedisServer: only the creating process may start it");
  if (pid_ > 0 && !reap_locked(false)) return;  // already running
  if (binary_.empty()) binary_ = find_redis_server();
  if (dir_.empty()) dir_ = make_temp_dir();
  if (reserve_fd_ < 0) reserve_fd_ = reserve_port(&port_);

  SpawnSpec spec;
  spec.binary = binary_;
  spec.output_path = dir_ + "/redis.stdout";
  const std::pair<const char *, std::string> settings[] = {{"--port", std::to_string(port_)},
                                                           {"--bind", host_},
                                                           {"--save", ""},
                                                           {"--appendonly", "no"},
                                                           {"--daemonize", "no"},
                                                           {"--protected-mode", "no"},
                                                           {"--dir", dir_},
                                                           {"--logfile", log_path()}};
  for (const auto &[name, value] : settings) {
    spec.args.push_back(name);
    spec.args.push_back(value);
  }
  if (options_.unix_socket) {
    spec.args.insert(spec.args.end(), {"--unixsocket", unix_path(), "--unixsocketperm", "700"});
  }
  spec.args.insert(spec.args.end(), options_.extra_args.begin(), options_.extra_args.end());

  pid_ = Spawner::instance().spawn(spec);
  paused_ = false;
  pidfd_ = pidfd_open_raw(pid_);  // -1 on old kernels: fall back to kill(2) and polling
  wait_until_up_locked();
}

void RedisServer::wait_until_up_locked() {
  const auto deadline = Clock::now() + options_.start_timeout;
  for (;;) {
    if (reap_locked(false)) {
      throw std::runtime_error("redis-server on port " + std::to_string(port_) +
                               " exited during startup (" + last_exit_ + "); log tail:\n" +
                               log_tail());
    }
    try {
      Context c = connect(milliseconds(200));
      redisSetTimeout(c.get(), to_timeval(milliseconds(500)));
      ReplyPtr r = run_argv(c.get(), {"PING"});
      // Any answer, even -NOAUTH, means it is serving; -LOADING means not yet.
      if (r && !(r->type == REDIS_REPLY_ERROR && std::strncmp(r->str, "LOADING", 7) == 0)) {
        return;
      }
    } catch (const RedisIoError &) {
      // not listening yet
    }
    if (Clock::now() >= deadline) {
      stop_locked(false);
      throw std::runtime_error(
          "redis-server on port " + std::to_string(port_) + " did not answer PING within " +
          std::to_string(options_.start_timeout.count()) + " ms; log tail:\n" + log_tail());
    }
    // Poll interval; wakes at once if the process dies.
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, 5);
    } else {
      std::this_thread::sleep_for(milliseconds(5));
    }
  }
}

bool RedisServer::reap_locked(bool block) {
  if (pid_ < 0) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  // r == pid_, or ECHILD if someone set SIGCHLD to SIG_IGN and the kernel reaped it.
  if (r == pid_) {
    last_exit_ = WIFEXITED(status)     ? "exit code " + std::to_string(WEXITSTATUS(status))
                 : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                       : "status " + std::to_string(status);
  }
  pid_ = -1;
  paused_ = false;
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  return true;
}

void RedisServer::signal_locked(int sig) {
  if (pid_ < 0) return;
  if (pidfd_ >= 0) {
    pidfd_send_signal_raw(pidfd_, sig);
  } else {
    ::kill(pid_, sig);  // still our unreaped child, so the pid cannot have been recycled
  }
}

void RedisServer::stop_locked(bool graceful) {
  if (pid_ < 0 || reap_locked(false)) return;
  if (paused_) {  // a stopped process would not act on SIGTERM
    signal_locked(SIGCONT);
    paused_ = false;
  }
  if (graceful) {
    signal_locked(SIGTERM);
    const auto deadline = Clock::now() + milliseconds(5000);
    while (!reap_locked(false)) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      if (pidfd_ >= 0) {
        pollfd p{pidfd_, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
      } else {
        std::this_thread::sleep_for(milliseconds(2));
      }
    }
    if (pid_ < 0) return;
  }
  signal_locked(SIGKILL);
  reap_locked(true);
}

void RedisServer::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!owner()) return;
  conn_.reset();
  stop_locked(true);
}

void RedisServer::kill() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!owner()) return;
  conn_.reset();
  stop_locked(false);
}

void RedisServer::pause() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!owner() || paused_) return;
  if (pid_ < 0 || reap_locked(false)) throw std::runtime_error("pause(): server is not running");
  signal_locked(SIGSTOP);
  // Wait until it has actually stopped, so the caller's next step observes a hung server.
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WUNTRACED);
  } while (r < 0 && errno == EINTR);
  if (r == pid_ && WIFSTOPPED(status)) {
    paused_ = true;
  } else {
    reap_locked(false);
    throw std::runtime_error("pause(): server exited");
  }
}

void RedisServer::resume() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!owner() || !paused_) return;
  // SIGCONT resumes the process when it is sent; there is nothing to wait for.
  signal_locked(SIGCONT);
  paused_ = false;
}

void RedisServer::restart() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!owner()) throw std::runtime_error("RedisServer: only the creating process may restart it");
  conn_.reset();
  stop_locked(true);
  start_locked();
}

bool RedisServer::running() {
  std::lock_guard<std::mutex> lock(mu_);
  return pid_ > 0 && !reap_locked(false);
}

std::string RedisServer::uri() const { return "redis://" + host_ + ":" + std::to_string(port_); }

std::string RedisServer::unix_path() const {
  return options_.unix_socket ? dir_ + "/redis.sock" : std::string();
}

std::string RedisServer::log_tail(std::size_t max_bytes) const {
  std::string out = file_tail(log_path(), max_bytes);
  std::string early = file_tail(dir_ + "/redis.stdout", max_bytes);
  if (!early.empty()) out += "\n[stdout/stderr]\n" + early;
  return out;
}

RedisServer::Context RedisServer::connect(milliseconds timeout) const {
  Context c(redisConnectWithTimeout(host_.c_str(), port_, to_timeval(timeout)));
  if (!c) throw RedisIoError("cannot allocate a redis context");
  if (c->err != 0) {
    throw RedisIoError("cannot connect to " + uri() + ": " + c->errstr);
  }
  return c;
}

void RedisServer::authenticate(redisContext *c) const {
  if (options_.password.empty()) return;
  std::vector<std::string> args{"AUTH"};
  if (!options_.user.empty()) args.push_back(options_.user);
  args.push_back(options_.password);
  ReplyPtr r = run_argv(c, args);
  if (!r) throw RedisIoError(std::string("AUTH failed: ") + c->errstr);
  if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("AUTH: ") + r->str);
}

RedisReply RedisServer::command_argv(const std::vector<std::string> &argv) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_ && conn_pid_ != ::getpid()) conn_.reset();  // never share the parent's socket
  if (!conn_) {
    Context c = connect(options_.command_timeout);
    redisSetTimeout(c.get(), to_timeval(options_.command_timeout));
    authenticate(c.get());
    conn_ = std::move(c);
    conn_pid_ = ::getpid();
  }
  ReplyPtr r = run_argv(conn_.get(), argv);
  if (!r) {
    // A late reply would be read by the next command: drop the connection.
    std::string err = conn_->errstr;
    // hiredis reports a receive timeout as an I/O error with strerror(EAGAIN).
    if (conn_->err == REDIS_ERR_IO && err == std::strerror(EAGAIN)) {
      err = "timed out after " + std::to_string(options_.command_timeout.count()) + " ms";
    }
    conn_.reset();
    throw RedisIoError((argv.empty() ? std::string("command") : argv[0]) + " on " + uri() + ": " +
                       err);
  }
  return convert(r.get());
}

void RedisServer::set_command_timeout(milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.command_timeout = timeout;
  if (conn_) redisSetTimeout(conn_.get(), to_timeval(timeout));
}

void RedisServer::disconnect() {
  std::lock_guard<std::mutex> lock(mu_);
  conn_.reset();
}

bool RedisServer::ping() {
  try {
    return command("PING").is("PONG");
  } catch (const std::exception &) {
    return false;
  }
}

std::optional<std::string> RedisServer::get(const std::string &key) {
  RedisReply r = expect_no_error(command("GET", key), "GET");
  if (r.is_nil()) return std::nullopt;
  return r.str;
}

void RedisServer::set(const std::string &key, const std::string &value) {
  expect_no_error(command("SET", key, value), "SET");
}

long long RedisServer::pttl(const std::string &key) {
  return expect_no_error(command("PTTL", key), "PTTL").integer;
}

bool RedisServer::exists(const std::string &key) {
  return expect_no_error(command("EXISTS", key), "EXISTS").integer > 0;
}

long long RedisServer::del(const std::string &key) {
  return expect_no_error(command("DEL", key), "DEL").integer;
}

std::vector<std::string> RedisServer::keys(const std::string &pattern) {
  return expect_no_error(command("KEYS", pattern), "KEYS").elements;
}

void RedisServer::flushall() { expect_no_error(command("FLUSHALL"), "FLUSHALL"); }

}  // namespace rlock_test
