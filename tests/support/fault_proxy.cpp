#include "support/fault_proxy.h"

#include "support/ports.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace rlock_test {
namespace {

constexpr const char *kListenHost = "127.0.0.1";

std::string uv_text(int rc) { return std::string(uv_err_name(rc)) + " (" + uv_strerror(rc) + ")"; }

// uv_close is asynchronous: the memory must live until the close callback, which frees it.
template <typename Handle>
void close_and_free(std::unique_ptr<Handle> handle) {
  uv_close(reinterpret_cast<uv_handle_t *>(handle.release()),
           [](uv_handle_t *h) { std::unique_ptr<Handle>(reinterpret_cast<Handle *>(h)); });
}

// A bound, non-listening SO_REUSEADDR socket holds the port for the proxy's lifetime, so the
// listener can come and go (refuse mode) without anyone else taking the port.
int reserve_port(int port, int *bound_port) {
  return reserve_loopback_port(port, bound_port, "FaultProxy");
}

sockaddr_storage resolve(const std::string &host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    throw std::runtime_error("FaultProxy: cannot resolve " + host + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo *)> guard(res, ::freeaddrinfo);
  sockaddr_storage out{};
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  return out;
}

}  // namespace

class FaultProxy::Impl {
 public:
  Impl(const std::string &target_host, int target_port, int listen_port);
  ~Impl();

  // Runs fn on the loop thread and waits for it; exceptions propagate to the caller.
  void run_on_loop(std::function<void()> fn);

  void set_latency(int ms);
  void set_blackhole(bool on);
  void set_refuse(bool on);
  void reset_all();

  int port_ = 0;
  std::atomic<int> latency_ms_{0};
  std::atomic<bool> blackhole_{false};
  std::atomic<bool> refusing_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::size_t> active_{0};
  std::atomic<std::uint64_t> to_target_{0};
  std::atomic<std::uint64_t> to_client_{0};
  std::atomic<std::uint64_t> dropped_{0};

 private:
  struct Conn;

  struct Chunk {
    std::uint64_t due_ns = 0;  // uv_hrtime() at which it may be delivered
    std::vector<char> data;
    bool eof = false;
  };

  // One direction of a connection.
  struct Pipe {
    Conn *conn = nullptr;
    uv_tcp_t *dst = nullptr;  // written to; the source is whichever stream on_read was called for
    std::atomic<std::uint64_t> *counter = nullptr;
    uv_timer_t timer{};
    std::deque<Chunk> queue;
    std::uint64_t last_due_ns = 0;
    bool shut = false;  // EOF delivered as a shutdown of dst
  };

  struct Conn {
    Impl *proxy = nullptr;
    uv_tcp_t client{};
    uv_tcp_t upstream{};
    uv_connect_t connect_req{};
    Pipe up;    // client -> target
    Pipe down;  // target -> client
    bool upstream_connected = false;
    bool closing = false;
    bool poisoned = false;  // lost data to the blackhole
    int open_handles = 0;
    std::list<std::unique_ptr<Conn>>::iterator self;
  };

  struct WriteReq {
    uv_write_t req{};
    std::vector<char> data;
    Conn *conn = nullptr;
  };

  void thread_main();
  void start_listening();
  void close_everything();
  void on_connection();
  void on_async();
  void enqueue(Pipe &p, Chunk chunk);
  void pump(Pipe &p);
  void abort_conn(Conn *c, bool reset_client, bool reset_upstream);
  void maybe_finish(Conn *c);

  static void init_pipe(Conn *c, Pipe &p, uv_tcp_t *dst, std::atomic<std::uint64_t> *counter);
  static void on_upstream_connect(uv_connect_t *req, int status);
  static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
  static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
  static void on_handle_closed(uv_handle_t *h);

  uv_loop_t loop_{};
  uv_async_t async_{};
  std::unique_ptr<uv_tcp_t> listener_;
  int reserve_fd_ = -1;
  sockaddr_storage target_{};
  std::list<std::unique_ptr<Conn>> conns_;
  std::vector<char> read_buf_ = std::vector<char>(64 * 1024);

  std::mutex tasks_mu_;
  std::deque<std::packaged_task<void()>> tasks_;
  std::thread thread_;
  std::thread::id loop_thread_id_;
};

FaultProxy::Impl::Impl(const std::string &target_host, int target_port, int listen_port) {
  target_ = resolve(target_host, target_port);
  reserve_fd_ = reserve_port(listen_port, &port_);
  int rc = uv_loop_init(&loop_);
  if (rc != 0) {
    ::close(reserve_fd_);
    throw std::runtime_error("FaultProxy: uv_loop_init: " + uv_text(rc));
  }
  async_.data = this;
  uv_async_init(&loop_, &async_, [](uv_async_t *a) { static_cast<Impl *>(a->data)->on_async(); });
  try {
    start_listening();
  } catch (...) {
    close_everything();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    ::close(reserve_fd_);
    throw;
  }
  // The proxy thread takes no signals: SIGPIPE from a write to a reset peer must turn into EPIPE,
  // and process-directed signals (SIGTERM, SIGINT) belong to the program's own threads. Blocking
  // them before creating the thread leaves no window in which it could receive one.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { thread_main(); });
  loop_thread_id_ = thread_.get_id();
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

FaultProxy::Impl::~Impl() {
  run_on_loop([this] { close_everything(); });
  thread_.join();
  uv_loop_close(&loop_);
  ::close(reserve_fd_);
}

void FaultProxy::Impl::thread_main() {
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, nullptr);  // inherited already; stated for the reader
  uv_run(&loop_, UV_RUN_DEFAULT);  // returns once close_everything() closed the last handle
}

void FaultProxy::Impl::run_on_loop(std::function<void()> fn) {
  if (std::this_thread::get_id() == loop_thread_id_) {
    fn();
    return;
  }
  std::packaged_task<void()> task(std::move(fn));
  std::future<void> done = task.get_future();
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks_.push_back(std::move(task));
  }
  uv_async_send(&async_);
  done.get();
}

void FaultProxy::Impl::on_async() {
  std::deque<std::packaged_task<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  for (auto &t : tasks) t();
}

void FaultProxy::Impl::start_listening() {
  auto listener = std::make_unique<uv_tcp_t>();
  uv_tcp_init(&loop_, listener.get());
  listener->data = this;
  sockaddr_in addr{};
  uv_ip4_addr(kListenHost, port_, &addr);
  int rc = uv_tcp_bind(listener.get(), reinterpret_cast<const sockaddr *>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t *>(listener.get()), 128,
                   [](uv_stream_t *l, int status) {
                     if (status == 0) static_cast<Impl *>(l->data)->on_connection();
                   });
  }
  if (rc != 0) {
    close_and_free(std::move(listener));
    throw std::runtime_error("FaultProxy: cannot listen on 127.0.0.1:" + std::to_string(port_) +
                             ": " + uv_text(rc));
  }
  listener_ = std::move(listener);
}

void FaultProxy::Impl::close_everything() {
  for (auto &c : conns_) abort_conn(c.get(), false, false);
  if (listener_) close_and_free(std::move(listener_));
  if (!uv_is_closing(reinterpret_cast<uv_handle_t *>(&async_))) {
    uv_close(reinterpret_cast<uv_handle_t *>(&async_), nullptr);
  }
}

void FaultProxy::Impl::init_pipe(Conn *c, Pipe &p, uv_tcp_t *dst,
                                 std::atomic<std::uint64_t> *counter) {
  p.conn = c;
  p.dst = dst;
  p.counter = counter;
  uv_timer_init(&c->proxy->loop_, &p.timer);
  p.timer.data = &p;
  ++c->open_handles;
}

void FaultProxy::Impl::on_connection() {
  auto owned = std::make_unique<Conn>();
  Conn *c = owned.get();
  c->proxy = this;
  conns_.push_back(std::move(owned));
  c->self = std::prev(conns_.end());

  uv_tcp_init(&loop_, &c->client);
  uv_tcp_init(&loop_, &c->upstream);
  c->client.data = c;
  c->upstream.data = c;
  c->open_handles = 2;
  init_pipe(c, c->up, &c->upstream, &to_target_);
  init_pipe(c, c->down, &c->client, &to_client_);
  ++active_;

  if (uv_accept(reinterpret_cast<uv_stream_t *>(listener_.get()),
                reinterpret_cast<uv_stream_t *>(&c->client)) != 0) {
    abort_conn(c, false, false);
    return;
  }
  ++accepted_;
  uv_tcp_nodelay(&c->client, 1);

  c->connect_req.data = c;
  int rc = uv_tcp_connect(&c->connect_req, &c->upstream,
                          reinterpret_cast<const sockaddr *>(&target_), on_upstream_connect);
  if (rc != 0) {
    abort_conn(c, true, false);
    return;
  }
  uv_read_start(reinterpret_cast<uv_stream_t *>(&c->client), on_alloc, on_read);
}

void FaultProxy::Impl::on_upstream_connect(uv_connect_t *req, int status) {
  auto *c = static_cast<Conn *>(req->data);
  if (status == UV_ECANCELED || c->closing) return;
  if (status != 0) {
    // Target down: the client sees a reset, as it would connecting directly.
    c->proxy->abort_conn(c, true, false);
    return;
  }
  c->upstream_connected = true;
  uv_tcp_nodelay(&c->upstream, 1);
  uv_read_start(reinterpret_cast<uv_stream_t *>(&c->upstream), on_alloc, on_read);
  c->proxy->pump(c->up);  // what the client sent while connecting
}

// Reads are copied into a Chunk at once, so one buffer serves every connection.
void FaultProxy::Impl::on_alloc(uv_handle_t *h, size_t, uv_buf_t *buf) {
  auto &read_buf = static_cast<Conn *>(h->data)->proxy->read_buf_;
  *buf = uv_buf_init(read_buf.data(), static_cast<unsigned>(read_buf.size()));
}

void FaultProxy::Impl::on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  auto *c = static_cast<Conn *>(s->data);
  Impl *self = c->proxy;
  if (c->closing || nread == 0) return;
  Pipe &p = (s == reinterpret_cast<uv_stream_t *>(&c->client)) ? c->up : c->down;
  if (nread > 0) {
    if (self->blackhole_ || c->poisoned) {
      c->poisoned = true;
      self->dropped_ += static_cast<std::uint64_t>(nread);
      return;
    }
    Chunk chunk;
    chunk.data.assign(buf->base, buf->base + nread);
    self->enqueue(p, std::move(chunk));
  } else if (nread == UV_EOF) {
    uv_read_stop(s);
    if (self->blackhole_ || c->poisoned) {
      c->poisoned = true;  // the FIN is lost too
      return;
    }
    Chunk chunk;
    chunk.eof = true;
    self->enqueue(p, std::move(chunk));
  } else {
    // ECONNRESET and friends: pass the reset on to the other side.
    bool from_client = &p == &c->up;
    self->abort_conn(c, !from_client, from_client);
  }
}

void FaultProxy::Impl::enqueue(Pipe &p, Chunk chunk) {
  std::uint64_t delay_ns = static_cast<std::uint64_t>(latency_ms_.load()) * 1000000u;
  chunk.due_ns = std::max(uv_hrtime() + delay_ns, p.last_due_ns);
  p.last_due_ns = chunk.due_ns;
  p.queue.push_back(std::move(chunk));
  pump(p);
}

void FaultProxy::Impl::pump(Pipe &p) {
  Conn *c = p.conn;
  if (c->closing || !c->upstream_connected) return;  // delivered once connected
  const std::uint64_t now = uv_hrtime();
  while (!p.queue.empty() && p.queue.front().due_ns <= now) {
    Chunk chunk = std::move(p.queue.front());
    p.queue.pop_front();
    if (blackhole_ || c->poisoned) {
      c->poisoned = true;
      dropped_ += chunk.data.size();
      continue;
    }
    if (chunk.eof) {
      auto req = std::make_unique<uv_shutdown_t>();
      req->data = &p;
      int rc = uv_shutdown(req.get(), reinterpret_cast<uv_stream_t *>(p.dst),
                           [](uv_shutdown_t *r, int status) {
                             std::unique_ptr<uv_shutdown_t> owned(r);
                             if (status == UV_ECANCELED) return;
                             auto *pipe = static_cast<Pipe *>(r->data);
                             pipe->shut = true;
                             pipe->conn->proxy->maybe_finish(pipe->conn);
                           });
      if (rc == 0) {
        req.release();
      } else {
        p.shut = true;
        maybe_finish(c);
        if (c->closing) return;
      }
      continue;
    }
    auto w = std::make_unique<WriteReq>();
    w->data = std::move(chunk.data);
    w->conn = c;
    w->req.data = w.get();
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    // Counted before the write: once the peer has the bytes, a reader on another thread must see
    // them counted (counting after uv_write raced with a client that was faster than the loop).
    *p.counter += w->data.size();
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t *>(p.dst), &b, 1,
                      [](uv_write_t *req, int status) {
                        std::unique_ptr<WriteReq> owned(static_cast<WriteReq *>(req->data));
                        if (status != 0 && status != UV_ECANCELED && !owned->conn->closing) {
                          owned->conn->proxy->abort_conn(owned->conn, true, true);
                        }
                      });
    if (rc != 0) {
      abort_conn(c, true, true);
      return;
    }
    w.release();
  }
  if (!p.queue.empty()) {
    // Round up, so nothing is ever delivered early; an early wake-up just re-arms.
    std::uint64_t wait_ms = (p.queue.front().due_ns - now + 999999u) / 1000000u;
    uv_timer_start(
        &p.timer,
        [](uv_timer_t *t) {
          auto *pipe = static_cast<Pipe *>(t->data);
          pipe->conn->proxy->pump(*pipe);
        },
        std::max<std::uint64_t>(wait_ms, 1), 0);
  }
}

void FaultProxy::Impl::maybe_finish(Conn *c) {
  if (c->up.shut && c->down.shut) abort_conn(c, false, false);
}

void FaultProxy::Impl::abort_conn(Conn *c, bool reset_client, bool reset_upstream) {
  if (c->closing) return;
  c->closing = true;
  --active_;
  auto close_tcp = [](uv_tcp_t *h, bool reset) {
    if (uv_is_closing(reinterpret_cast<uv_handle_t *>(h))) return;
    if (reset && uv_tcp_close_reset(h, on_handle_closed) == 0) return;
    if (reset) {
      // uv_tcp_close_reset refuses a stream with a pending shutdown (UV_EINVAL); zero linger and
      // close is what it does anyway.
      uv_os_fd_t fd;
      if (uv_fileno(reinterpret_cast<uv_handle_t *>(h), &fd) == 0) {
        linger l{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      }
    }
    uv_close(reinterpret_cast<uv_handle_t *>(h), on_handle_closed);
  };
  close_tcp(&c->client, reset_client);
  close_tcp(&c->upstream, reset_upstream);
  uv_close(reinterpret_cast<uv_handle_t *>(&c->up.timer), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&c->down.timer), on_handle_closed);
}

void FaultProxy::Impl::on_handle_closed(uv_handle_t *h) {
  Conn *c = h->type == UV_TIMER ? static_cast<Pipe *>(h->data)->conn : static_cast<Conn *>(h->data);
  if (--c->open_handles == 0) c->proxy->conns_.erase(c->self);
}

void FaultProxy::Impl::set_latency(int ms) {
  run_on_loop([this, ms] { latency_ms_ = std::max(ms, 0); });
}

void FaultProxy::Impl::set_blackhole(bool on) {
  run_on_loop([this, on] {
    blackhole_ = on;
    if (on) return;
    for (auto &c : conns_) {
      if (c->poisoned) abort_conn(c.get(), true, false);
    }
  });
}

void FaultProxy::Impl::set_refuse(bool on) {
  run_on_loop([this, on] {
    if (on == refusing_) return;
    if (on) {
      close_and_free(std::move(listener_));  // closes the fd now: connects are refused at once
    } else {
      start_listening();
    }
    refusing_ = on;
  });
}

void FaultProxy::Impl::reset_all() {
  run_on_loop([this] {
    for (auto &c : conns_) abort_conn(c.get(), true, false);
  });
}

FaultProxy::FaultProxy(const std::string &target_host, int target_port, int listen_port)
    : impl_(std::make_unique<Impl>(target_host, target_port, listen_port)), creator_(::getpid()) {}

FaultProxy::~FaultProxy() {
  // A forked child has a copy of the object but no proxy thread: tearing it down would wait for
  // that thread forever (and std::thread's destructor would terminate). The child's copy is left
  // to the process exit on purpose; the parent's proxy is unaffected.
  if (::getpid() != creator_) (void)impl_.release();
}

void FaultProxy::check_owner() const {
  if (::getpid() != creator_) {
    throw std::logic_error("FaultProxy: faults can only be set from the process that created it");
  }
}

int FaultProxy::port() const { return impl_->port_; }
std::string FaultProxy::host() const { return kListenHost; }
std::string FaultProxy::uri() const { return "redis://" + host() + ":" + std::to_string(port()); }

void FaultProxy::set_latency_ms(int ms_each_way) {
  check_owner();
  impl_->set_latency(ms_each_way);
}
void FaultProxy::set_blackhole(bool on) {
  check_owner();
  impl_->set_blackhole(on);
}
void FaultProxy::set_refuse(bool on) {
  check_owner();
  impl_->set_refuse(on);
}
void FaultProxy::reset_all() {
  check_owner();
  impl_->reset_all();
}

int FaultProxy::latency_ms() const { return impl_->latency_ms_; }
bool FaultProxy::blackhole() const { return impl_->blackhole_; }
bool FaultProxy::refusing() const { return impl_->refusing_; }

std::uint64_t FaultProxy::connections_accepted() const { return impl_->accepted_; }
std::size_t FaultProxy::active_connections() const { return impl_->active_; }
std::uint64_t FaultProxy::bytes_to_target() const { return impl_->to_target_; }
std::uint64_t FaultProxy::bytes_to_client() const { return impl_->to_client_; }
std::uint64_t FaultProxy::bytes_forwarded() const { return impl_->to_target_ + impl_->to_client_; }
std::uint64_t FaultProxy::bytes_dropped() const { return impl_->dropped_; }

}  // namespace rlock_test
