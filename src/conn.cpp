#include "conn.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "status.h"

namespace rlk {

using Clock = std::chrono::steady_clock;

// One hiredis async context with its poll handle and its requests in flight (Redis answers in order,
// so the front of `inflight` owns the next reply). Allocated per connection attempt; freed by the
// poll handle's close callback, which libuv runs after hiredis's cleanup hook, so every hiredis
// callback (including onDisconnect, which comes after cleanup) still finds it valid.
struct Conn::Session {
  struct InFlight {
    Callback cb;
    Clock::time_point deadline;
  };
  Conn *owner = nullptr;  // null once the Conn gave up on this session
  redisAsyncContext *ac = nullptr;
  uv_poll_t poll{};
  int events = 0;
  bool want_write = false;     // hiredis has output buffered
  bool flush_queued = false;   // a write is scheduled for the end of this loop iteration
  std::deque<InFlight> inflight;
};

// Static trampolines for C callbacks; they reach the private members through this friend.
struct ConnAccess {
  using Session = Conn::Session;

  // ---- Our libuv adapter for hiredis (the shipped one returns early on poll errors and so never
  // reports a refused connection). ----
  static void on_poll(uv_poll_t *h, int status, int events) {
    auto *s = static_cast<Session *>(h->data);
    if (s->ac == nullptr) return;
    if (status < 0) {
      // libuv saw POLLERR and stopped the watcher. Let hiredis find the error itself: a pending
      // connect is checked on the write path (SO_ERROR), an established one fails on read.
      if (!(s->ac->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(s->ac);
      else
        redisAsyncHandleRead(s->ac);
      if (s->ac != nullptr && s->events != 0) uv_poll_start(&s->poll, s->events, on_poll);
      return;
    }
    if (events & UV_READABLE) redisAsyncHandleRead(s->ac);
    if (s->ac != nullptr && (events & UV_WRITABLE)) redisAsyncHandleWrite(s->ac);
  }
  static void update(Session *s, int add, int del) {
    int ev = (s->events | add) & ~del;
    if (ev == s->events) return;  // no epoll_ctl when nothing changes
    s->events = ev;
    if (ev)
      uv_poll_start(&s->poll, ev, on_poll);
    else
      uv_poll_stop(&s->poll);
  }
  static void add_read(void *p) { update(static_cast<Session *>(p), UV_READABLE, 0); }
  static void del_read(void *p) { update(static_cast<Session *>(p), 0, UV_READABLE); }
  // Output on an established connection is written at the end of the loop iteration (Loop's
  // before_poll), batching what the iteration's callbacks queued and saving a poll round and two
  // epoll_ctl calls per command; we only poll for writability when the socket buffer is full.
  // A connect in progress is detected by writability, so it always polls.
  static void add_write(void *p) {
    auto *s = static_cast<Session *>(p);
    s->want_write = true;
    Conn *owner = s->owner;
    if (owner == nullptr || !(s->ac->c.flags & REDIS_CONNECTED)) {
      update(s, UV_WRITABLE, 0);
      return;
    }
    if (s->flush_queued || (s->events & UV_WRITABLE)) return;
    s->flush_queued = true;
    std::shared_ptr<Conn> keep = owner->self_;
    owner->loop_.before_poll([keep, s] {
      if (keep->session_ != s) return;  // the session was dropped meanwhile (and maybe freed)
      s->flush_queued = false;
      if (s->want_write && s->ac) redisAsyncHandleWrite(s->ac);
      if (keep->session_ == s && s->ac && s->want_write) update(s, UV_WRITABLE, 0);
    });
  }
  static void del_write(void *p) {
    auto *s = static_cast<Session *>(p);
    s->want_write = false;
    update(s, 0, UV_WRITABLE);
  }
  static void cleanup(void *p) {
    auto *s = static_cast<Session *>(p);
    s->ac = nullptr;
    uv_poll_stop(&s->poll);
    uv_close(reinterpret_cast<uv_handle_t *>(&s->poll),
             [](uv_handle_t *h) { delete static_cast<Session *>(h->data); });
  }

  // ---- hiredis callbacks ----
  static void on_connect(const redisAsyncContext *ac, int status) {
    auto *s = static_cast<Session *>(ac->data);
    if (s->owner) s->owner->on_connected(s, status == REDIS_OK, status == REDIS_OK ? "" : ac->errstr);
  }
  static void on_disconnect(const redisAsyncContext *ac, int status) {
    auto *s = static_cast<Session *>(ac->data);
    if (s->owner)
      s->owner->on_session_lost(s, RLOCK_ERR_IO,
                                status == REDIS_OK ? "connection closed" : std::string(ac->errstr));
  }
  static void on_reply(redisAsyncContext *ac, void *r, void *privdata) {
    auto *s = static_cast<Session *>(privdata);
    if (r == nullptr) {
      // The context is going away (closed by the server, or freed): fail everything on it at once.
      if (s->owner)
        s->owner->on_session_lost(s, RLOCK_ERR_IO,
                                  ac->err ? std::string(ac->errstr) : "connection closed");
      return;
    }
    if (s->inflight.empty()) return;  // a session the Conn already gave up on
    auto req = std::move(s->inflight.front());
    s->inflight.pop_front();
    Result res;
    convert(static_cast<redisReply *>(r), res.reply);
    // After a protocol error Redis closes the connection. Drop it now, before anything else is
    // written to it, rather than let the next command meet the close as an I/O error.
    bool server_closes = false;
    if (res.reply.type == Reply::Type::kError) {
      res.status = classify_error(res.reply.str);
      if (s->owner) res.detail = s->owner->where() + ": " + res.reply.str;
      server_closes = res.reply.str.compare(0, 18, "ERR Protocol error") == 0;
    }
    Conn *owner = s->owner;
    if (owner) {
      std::shared_ptr<Conn> keep = owner->self_;  // the callback may lead to shutdown
      if (server_closes && owner->session_ == s)
        owner->drop(RLOCK_ERR_IO, "the server closed the connection after: " + res.reply.str, false);
      else
        owner->arm_deadline();
      req.cb(std::move(res));
      owner->maybe_finish_shutdown();
    } else {
      req.cb(std::move(res));
    }
  }

  // Replies on a subscribed connection: confirmations and messages, which hiredis routes by
  // channel rather than in order.
  static void on_pubsub(redisAsyncContext *ac, void *r, void *privdata) {
    auto *s = static_cast<Session *>(privdata);
    if (s->owner == nullptr) return;
    if (r == nullptr) {
      s->owner->on_session_lost(s, RLOCK_ERR_IO, ac->err ? std::string(ac->errstr) : "connection closed");
      return;
    }
    auto *reply = static_cast<redisReply *>(r);
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        std::strcmp(reply->element[0]->str, "message") == 0 &&
        reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[2]->type == REDIS_REPLY_STRING) {
      std::shared_ptr<Conn> keep = s->owner->self_;
      keep->dispatch(std::string(reply->element[1]->str, reply->element[1]->len),
                     std::string(reply->element[2]->str, reply->element[2]->len));
    }
  }

  static void convert(const redisReply *r, Reply &out) {
    switch (r->type) {
      case REDIS_REPLY_INTEGER:
        out.type = Reply::Type::kInteger;
        out.integer = r->integer;
        break;
      case REDIS_REPLY_STRING:
        out.type = Reply::Type::kString;
        out.str.assign(r->str, r->len);
        break;
      case REDIS_REPLY_STATUS:
        out.type = Reply::Type::kStatus;
        out.str.assign(r->str, r->len);
        break;
      case REDIS_REPLY_ERROR:
        out.type = Reply::Type::kError;
        out.str.assign(r->str, r->len);
        break;
      case REDIS_REPLY_ARRAY:
        out.type = Reply::Type::kArray;
        out.elements.resize(r->elements);
        for (size_t i = 0; i < r->elements; ++i) convert(r->element[i], out.elements[i]);
        break;
      default:
        out.type = Reply::Type::kNil;
    }
  }

  // Authentication problems are RLOCK_ERR_AUTH; everything else Redis refuses (NOPERM, READONLY,
  // OOM, WRONGTYPE, script errors...) is RLOCK_ERR_SERVER.
  static int classify_error(const std::string &e) {
    auto starts = [&](const char *p) { return e.compare(0, std::strlen(p), p) == 0; };
    if (starts("NOAUTH") || starts("WRONGPASS") || starts("ERR invalid password") ||
        starts("ERR invalid username-password") || starts("ERR AUTH") ||
        starts("ERR Client sent AUTH") ||
        // Redis >= 6.2 refuses long requests from a client that has not authenticated yet.
        starts("ERR Protocol error: unauthenticated"))
      return RLOCK_ERR_AUTH;
    return RLOCK_ERR_SERVER;
  }
};

std::shared_ptr<Conn> Conn::create(Loop &loop, ServerAddress addr) {
  std::shared_ptr<Conn> c(new Conn(loop, std::move(addr)));
  c->self_ = c;
  return c;
}

Conn::Conn(Loop &loop, ServerAddress addr) : loop_(loop), addr_(std::move(addr)) {}

Conn::~Conn() = default;

std::string Conn::where() const { return addr_.display(); }

void Conn::command(const std::vector<std::string> &args, Callback cb) {
  if (state_ == State::kClosed) {
    Result r;
    r.status = RLOCK_ERR_IO;
    r.detail = where() + ": client is closed";
    cb(std::move(r));
    return;
  }
  if (!timer_) {
    timer_ = std::make_unique<Timer>(loop_.uv());
    kick_ = std::make_unique<Timer>(loop_.uv());
  }
  if (state_ == State::kReady) {
    send(session_, args, std::move(cb));
    return;
  }
  waiting_.push_back(Pending{args, std::move(cb)});  // hiredis copies on send; we only when waiting
  if (state_ == State::kDown) {
    // Connect on a fresh stack: we may be inside a callback of the session that just died.
    state_ = State::kResolving;
    kick_->start(0, [this] { connect(); });
  }
}

void Conn::eval(const Script &script, const std::vector<std::string> &keys,
                const std::vector<std::string> &args, Callback cb) {
  auto argv = std::make_shared<std::vector<std::string>>();
  argv->reserve(3 + keys.size() + args.size());
  argv->push_back("EVALSHA");
  argv->push_back(script.sha);
  argv->push_back(std::to_string(keys.size()));
  argv->insert(argv->end(), keys.begin(), keys.end());
  argv->insert(argv->end(), args.begin(), args.end());
  const std::vector<std::string> &first = *argv;
  command(first, [this, &script, argv, cb = std::move(cb)](Result &&r) mutable {
    if (r.status == RLOCK_ERR_SERVER && r.reply.str.compare(0, 8, "NOSCRIPT") == 0) {
      // NOSCRIPT means nothing ran: send the same call with the script body.
      (*argv)[0] = "EVAL";
      (*argv)[1] = script.body;
      command(*argv, std::move(cb));
      return;
    }
    cb(std::move(r));
  });
}

void Conn::connect() {
  ++generation_;
  state_ = State::kResolving;
  timer_->start(static_cast<uint64_t>(addr_.connect_timeout.count()), [this] {
    drop(RLOCK_ERR_TIMEOUT,
         "connect: no connection within " + std::to_string(addr_.connect_timeout.count()) + " ms",
         true);
  });
  if (addr_.is_unix) {
    start_hiredis("");
    return;
  }
  unsigned char buf[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, addr_.host.c_str(), buf) == 1 ||
      inet_pton(AF_INET6, addr_.host.c_str(), buf) == 1) {
    start_hiredis(addr_.host);
    return;
  }
  // A name: resolve on libuv's thread pool (hiredis would block the loop in getaddrinfo).
  struct Req {
    uv_getaddrinfo_t req;
    std::weak_ptr<Conn> conn;
    uint64_t generation;
  };
  auto req = std::make_unique<Req>();
  req->conn = self_;
  req->generation = generation_;
  req->req.data = req.get();
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop_.uv(), &req->req,
      [](uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
        std::unique_ptr<Req> owned(static_cast<Req *>(r->data));
        auto c = owned->conn.lock();
        if (c && c->generation_ == owned->generation && c->state_ == State::kResolving) {
          char ip[INET6_ADDRSTRLEN] = "";
          if (status == 0 && res != nullptr) {
            const void *a = res->ai_family == AF_INET
                                ? static_cast<const void *>(&reinterpret_cast<sockaddr_in *>(res->ai_addr)->sin_addr)
                                : static_cast<const void *>(&reinterpret_cast<sockaddr_in6 *>(res->ai_addr)->sin6_addr);
            inet_ntop(res->ai_family, a, ip, sizeof ip);
          }
          if (ip[0] != '\0')
            c->start_hiredis(ip);
          else
            c->drop(RLOCK_ERR_IO,
                    "resolve '" + c->addr_.host + "': " + (status ? uv_strerror(status) : "no address"),
                    true);
        }
        uv_freeaddrinfo(res);
      },
      addr_.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    drop(RLOCK_ERR_IO, std::string("resolve: ") + uv_strerror(rc), true);
    return;
  }
  req.release();  // owned by the callback now
}

void Conn::start_hiredis(const std::string &ip) {
  state_ = State::kConnecting;
  redisAsyncContext *ac = addr_.is_unix ? redisAsyncConnectUnix(addr_.unix_path.c_str())
                                        : redisAsyncConnect(ip.c_str(), addr_.port);
  if (ac == nullptr) {
    drop(RLOCK_ERR_NOMEM, "connect: out of memory", true);
    return;
  }
  if (ac->err) {
    std::string e = ac->errstr;
    redisAsyncFree(ac);
    drop(RLOCK_ERR_IO, "connect: " + e, true);
    return;
  }
  auto s = std::make_unique<Session>();
  if (uv_poll_init(loop_.uv(), &s->poll, ac->c.fd) != 0) {
    redisAsyncFree(ac);
    drop(RLOCK_ERR_IO, "connect: cannot watch the socket", true);
    return;
  }
  s->poll.data = s.get();
  s->owner = this;
  s->ac = ac;
  ac->data = s.get();
  ac->ev.data = s.get();
  ac->ev.addRead = ConnAccess::add_read;
  ac->ev.delRead = ConnAccess::del_read;
  ac->ev.addWrite = ConnAccess::add_write;
  ac->ev.delWrite = ConnAccess::del_write;
  ac->ev.cleanup = ConnAccess::cleanup;
  session_ = s.release();  // from now on freed by cleanup -> uv_close
  redisAsyncSetDisconnectCallback(ac, ConnAccess::on_disconnect);
  redisAsyncSetConnectCallback(ac, ConnAccess::on_connect);  // arms the first write event
}

void Conn::on_connected(Session *s, bool ok, const std::string &err) {
  if (s != session_) return;
  if (!ok) {
    // hiredis frees the context right after this callback; forget it without freeing it again.
    s->owner = nullptr;
    session_ = nullptr;
    drop(RLOCK_ERR_IO, "connect: " + err, true);
    return;
  }
  timer_->stop();
  std::vector<std::vector<std::string>> hello;
  if (addr_.has_password) {
    if (addr_.user.empty())
      hello.push_back({"AUTH", addr_.password});
    else
      hello.push_back({"AUTH", addr_.user, addr_.password});
  }
  if (addr_.db != 0) hello.push_back({"SELECT", std::to_string(addr_.db)});
  if (hello.empty()) {
    become_ready();
    return;
  }
  // Our commands wait for the handshake: pipelined behind a failed AUTH they would run as the
  // default user.
  state_ = State::kHandshake;
  handshake_left_ = hello.size();
  for (auto &cmd : hello) {
    send(s, std::move(cmd), [this, s](Result &&r) {
      if (s != session_ || state_ != State::kHandshake) return;
      if (r.status != RLOCK_OK) {
        // AUTH refusals are classified RLOCK_ERR_AUTH; a bad SELECT stays RLOCK_ERR_SERVER.
        drop(r.status, "handshake: " + (r.reply.str.empty() ? r.detail : r.reply.str), true);
        return;
      }
      if (--handshake_left_ == 0) become_ready();
    });
  }
}

void Conn::send(Session *s, const std::vector<std::string> &args, Callback cb) {
  std::vector<const char *> argv(args.size());
  std::vector<size_t> lens(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    argv[i] = args[i].data();
    lens[i] = args[i].size();
  }
  if (redisAsyncCommandArgv(s->ac, ConnAccess::on_reply, s, static_cast<int>(args.size()),
                            argv.data(), lens.data()) != REDIS_OK) {
    Result r;
    r.status = RLOCK_ERR_IO;
    r.detail = where() + ": connection is closing";
    cb(std::move(r));
    return;
  }
  bool was_empty = s->inflight.empty();
  s->inflight.push_back(Session::InFlight{std::move(cb), Clock::now() + addr_.command_timeout});
  if (was_empty) arm_deadline();
}

void Conn::arm_deadline() {
  if (session_ == nullptr || state_ == State::kResolving || state_ == State::kConnecting) return;
  if (session_->inflight.empty()) {
    timer_->stop();
    return;
  }
  auto left = session_->inflight.front().deadline - Clock::now();
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  timer_->start(ms > 0 ? static_cast<uint64_t>(ms) : 0, [this] {
    if (session_ == nullptr || session_->inflight.empty()) return;
    if (session_->inflight.front().deadline > Clock::now()) {
      arm_deadline();
      return;
    }
    drop(RLOCK_ERR_TIMEOUT,
         "no reply within " + std::to_string(addr_.command_timeout.count()) + " ms", true);
  });
}

void Conn::become_ready() {
  state_ = State::kReady;
  if (pubsub_) {
    listen_retry_ms_ = 250;
    for (auto &ch : channels_) send_pubsub("SUBSCRIBE", ch.first);
    maybe_finish_shutdown();
    return;
  }
  // Load our scripts on every new connection, pipelined ahead of the first command, so EVALSHA
  // normally never meets NOSCRIPT (which would cost a second round trip). Errors (an ACL user
  // without SCRIPT, say) are ignored: EVALSHA's NOSCRIPT fallback still covers them.
  for (const Script *sc : all_scripts()) send(session_, {"SCRIPT", "LOAD", sc->body}, [](Result &&) {});
  flush_waiting();
}

uint64_t Conn::listen(const std::string &channel, Listener on_message) {
  pubsub_ = true;
  if (state_ == State::kClosed) return 0;
  if (!timer_) {
    timer_ = std::make_unique<Timer>(loop_.uv());
    kick_ = std::make_unique<Timer>(loop_.uv());
  }
  auto &listeners = channels_[channel];
  const bool first = listeners.empty();
  const uint64_t id = next_listener_++;
  listeners.emplace(id, std::move(on_message));
  if (state_ == State::kReady) {
    if (first) send_pubsub("SUBSCRIBE", channel);
  } else if (state_ == State::kDown && !shutting_down_) {
    state_ = State::kResolving;
    kick_->start(0, [this] { connect(); });
  }
  return id;
}

void Conn::unlisten(const std::string &channel, uint64_t id) {
  auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  it->second.erase(id);
  if (!it->second.empty()) return;
  channels_.erase(it);
  if (state_ == State::kReady) send_pubsub("UNSUBSCRIBE", channel);
}

void Conn::send_pubsub(const char *verb, const std::string &channel) {
  const char *argv[2] = {verb, channel.data()};
  size_t lens[2] = {std::strlen(verb), channel.size()};
  redisAsyncCommandArgv(session_->ac, ConnAccess::on_pubsub, session_, 2, argv, lens);
}

void Conn::dispatch(const std::string &channel, const std::string &payload) {
  auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  std::vector<Listener> fns;  // listeners may unlisten while we call them
  for (auto &l : it->second) fns.push_back(l.second);
  for (auto &fn : fns) fn(payload);
}

// A listening connection that broke is made again after a pause, as long as someone listens; the
// pause doubles while attempts keep failing (a server that is down, or refuses our password).
void Conn::reconnect_listener_later() {
  if (!pubsub_ || channels_.empty() || shutting_down_ || state_ != State::kDown || !kick_) return;
  state_ = State::kResolving;
  const uint64_t pause = listen_retry_ms_;
  listen_retry_ms_ = std::min<uint64_t>(listen_retry_ms_ * 2, 5000);
  kick_->start(pause, [this] {
    if (channels_.empty() || shutting_down_) {
      state_ = State::kDown;
      maybe_finish_shutdown();
      return;
    }
    connect();
  });
}

void Conn::flush_waiting() {
  auto batch = std::move(waiting_);
  waiting_.clear();
  for (auto &p : batch) send(session_, p.args, std::move(p.cb));
}

void Conn::fail_waiting(int status, const std::string &detail) {
  auto batch = std::move(waiting_);
  waiting_.clear();
  for (auto &p : batch) {
    Result r;
    r.status = status;
    r.detail = detail;
    p.cb(std::move(r));
  }
}

// Gives up on the current session (if any): its requests fail with `status`, the context is freed
// (hiredis then calls each of its callbacks with NULL, which find nothing left to do), and the next
// command starts a new connection.
void Conn::drop(int status, const std::string &what, bool also_waiting) {
  std::shared_ptr<Conn> keep = self_;
  const std::string detail = where() + ": " + what;
  std::deque<Session::InFlight> victims;
  if (Session *s = session_) {
    session_ = nullptr;
    victims = std::move(s->inflight);
    s->inflight.clear();
    s->owner = nullptr;
    if (s->ac) redisAsyncFree(s->ac);  // deferred by hiredis if we are inside one of its callbacks
  }
  if (timer_) timer_->stop();
  if (kick_) kick_->stop();
  if (state_ != State::kClosed) state_ = State::kDown;
  for (auto &v : victims) {
    Result r;
    r.status = status;
    r.detail = detail;
    v.cb(std::move(r));
  }
  if (also_waiting) fail_waiting(status, detail);
  reconnect_listener_later();
  maybe_finish_shutdown();
}

void Conn::on_session_lost(Session *s, int status, const std::string &detail) {
  if (s != session_) return;
  // hiredis is freeing the context itself: detach without freeing it a second time.
  session_ = nullptr;
  auto victims = std::move(s->inflight);
  s->inflight.clear();
  s->owner = nullptr;
  std::shared_ptr<Conn> keep = self_;
  if (timer_) timer_->stop();
  if (state_ != State::kClosed) state_ = State::kDown;
  const std::string d = where() + ": " + detail;
  for (auto &v : victims) {
    Result r;
    r.status = status;
    r.detail = d;
    v.cb(std::move(r));
  }
  // Requests still waiting for a handshake that will not come fail too; later ones reconnect.
  fail_waiting(status, d);
  reconnect_listener_later();
  maybe_finish_shutdown();
}

void Conn::shutdown() {
  shutting_down_ = true;
  maybe_finish_shutdown();
}

void Conn::maybe_finish_shutdown() {
  if (!shutting_down_ || state_ == State::kClosed) return;
  if (!waiting_.empty() || (session_ != nullptr && !session_->inflight.empty())) return;
  if (state_ == State::kResolving && session_ == nullptr && timer_) return;  // resolver in flight
  state_ = State::kClosed;
  if (Session *s = session_) {
    session_ = nullptr;
    s->owner = nullptr;
    if (s->ac) redisAsyncFree(s->ac);
  }
  timer_.reset();
  kick_.reset();
  self_.reset();  // may destroy *this: nothing after this line
}

}  // namespace rlk
