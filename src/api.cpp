// The C boundary: the only file that defines extern "C" functions. Every body runs inside
// guarded(), so no C++ exception ever crosses into C: std::bad_alloc becomes RLOCK_ERR_NOMEM,
// rlk::Error its own status, anything else RLOCK_ERR_INTERNAL.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "engine.h"
#include "loop.h"
#include "rlock.h"
#include "status.h"
#include "uri.h"

struct rlock_client {
  std::shared_ptr<rlk::Loop> loop;  // API objects hold the loop; it stops after the last one
  std::shared_ptr<rlk::Client> impl;
};

struct rlock {
  std::shared_ptr<rlk::Loop> loop;
  std::shared_ptr<rlk::LockEngine> engine;
  std::atomic<bool> busy{false};  // a call (blocking or async) is in progress on this handle
};

namespace {

using rlk::Error;

template <class F>
int guarded(F &&f) noexcept {
  try {
    rlk::clear_last_error();
    return f();
  } catch (const Error &e) {
    rlk::set_last_error(e.what());
    return e.status();
  } catch (const std::bad_alloc &) {
    rlk::set_last_error("out of memory");
    return RLOCK_ERR_NOMEM;
  } catch (const std::exception &e) {
    rlk::set_last_error(std::string("internal error: ") + e.what());
    return RLOCK_ERR_INTERNAL;
  } catch (...) {
    rlk::set_last_error("internal error: unknown exception");
    return RLOCK_ERR_INTERNAL;
  }
}

[[noreturn]] void invalid(const std::string &why) { throw Error(RLOCK_ERR_INVALID, why); }

// Claims the handle for one call; calls on one handle must not overlap.
void claim(rlock *l, const char *what) {
  if (l->busy.exchange(true, std::memory_order_acq_rel))
    invalid(std::string(what) + ": another call on this handle is still in progress");
}

// Runs one engine operation on the loop thread and waits for it: one hand-off per API call.
template <class Start>
int run_blocking(rlock *l, const char *what, Start start) {
  if (l->loop->on_loop_thread())
    invalid(std::string(what) + ": blocking calls are not allowed on rlock's own loop thread (in a callback)");
  claim(l, what);
  rlk::Waiter w;
  int status = RLOCK_ERR_INTERNAL;
  std::string detail;
  auto engine = l->engine;
  l->loop->post([&, engine] {
    try {
      start(*engine, [&](int s, const std::string &d) {
        status = s;
        detail = d;
        w.done();
      });
    } catch (const std::bad_alloc &) {
      status = RLOCK_ERR_NOMEM;
      detail = "out of memory";
      w.done();
    } catch (const std::exception &e) {
      status = RLOCK_ERR_INTERNAL;
      detail = std::string("internal error: ") + e.what();
      w.done();
    }
  });
  w.wait();
  l->busy.store(false, std::memory_order_release);
  if (status != RLOCK_OK) rlk::set_last_error(std::string(what) + ": " + detail);
  return status;
}

// Starts one engine operation on the loop thread; cb(l, status, userdata) runs there when it is
// done, with rlock_last_error set to the detail. The handle is free again before cb runs, so cb may
// start the next call.
template <class Start>
int run_async(rlock *l, const char *what, rlock_done_cb cb, void *userdata, Start start) {
  if (cb == nullptr) invalid(std::string(what) + ": callback is NULL");
  claim(l, what);
  auto engine = l->engine;
  std::string name = what;
  auto complete = [l, cb, userdata, name](int status, const std::string &detail) {
    if (status != RLOCK_OK)
      rlk::set_last_error(name + ": " + detail);
    else
      rlk::clear_last_error();
    l->busy.store(false, std::memory_order_release);
    try {
      cb(l, status, userdata);
    } catch (...) {
      // Callbacks must not throw (see rlock.h); nothing can be reported to anyone here.
    }
  };
  try {
    l->loop->post([engine, complete, start]() mutable {
      try {
        start(*engine, complete);
      } catch (const std::bad_alloc &) {
        complete(RLOCK_ERR_NOMEM, "out of memory");
      } catch (const std::exception &e) {
        complete(RLOCK_ERR_INTERNAL, std::string("internal error: ") + e.what());
      }
    });
  } catch (...) {
    l->busy.store(false, std::memory_order_release);
    throw;
  }
  return RLOCK_OK;
}

void check_ttl(int64_t ttl_ms) {
  if (ttl_ms <= 0) invalid("ttl_ms must be > 0 (got " + std::to_string(ttl_ms) + ")");
  if (ttl_ms > int64_t(1) << 40) invalid("ttl_ms is too large");
}

int new_lock(rlock_client *const *clients, size_t n, const char *key, int64_t ttl_ms, rlock **out) {
  if (out == nullptr) invalid("out is NULL");
  *out = nullptr;
  if (clients == nullptr) invalid("clients is NULL");
  if (n == 0) invalid("a lock needs at least one server");
  if (key == nullptr) invalid("key is NULL");
  if (key[0] == '\0') invalid("key is empty");
  check_ttl(ttl_ms);
  std::vector<std::shared_ptr<rlk::Client>> servers;
  std::set<std::string> seen;
  for (size_t i = 0; i < n; ++i) {
    if (clients[i] == nullptr) invalid("clients[" + std::to_string(i) + "] is NULL");
    const std::string addr = clients[i]->impl->address().display();
    if (!seen.insert(addr).second)
      invalid("server " + addr + " is given twice; a quorum needs independent servers");
    servers.push_back(clients[i]->impl);
  }
  auto l = std::make_unique<rlock>();
  l->loop = clients[0]->loop;
  l->engine = std::make_shared<rlk::LockEngine>(std::move(servers), key,
                                                  std::chrono::milliseconds(ttl_ms));
  *out = l.release();
  return RLOCK_OK;
}

}  // namespace

extern "C" {

const char *rlock_version(void) { return RLOCK_VERSION_STRING; }

int rlock_version_number(void) { return RLOCK_VERSION_NUMBER; }

const char *rlock_strerror(int status) { return rlk::status_text(status); }

const char *rlock_err_name(int status) { return rlk::err_name(status); }

const char *rlock_last_error(void) { return rlk::last_error(); }

int rlock_client_new(const char *uri, rlock_client **out) {
  return guarded([&] {
    if (out == nullptr) invalid("out is NULL");
    *out = nullptr;
    if (uri == nullptr) invalid("uri is NULL");
    rlk::ServerAddress addr = rlk::parse_uri(uri);
    auto c = std::make_unique<rlock_client>();
    c->loop = rlk::Loop::get();
    c->impl = std::make_shared<rlk::Client>(*c->loop, std::move(addr));
    *out = c.release();
    return RLOCK_OK;
  });
}

void rlock_client_free(rlock_client *c) {
  guarded([&] {
    if (c == nullptr) return RLOCK_OK;
    // The last reference to the loop must not be dropped on the loop's own thread (it would have to
    // join itself): from a callback, keep the client and say so.
    if (c->loop->on_loop_thread())
      invalid("client_free: not allowed on rlock's own loop thread (in a callback); the client is kept");
    delete c;  // locks built on it keep their own reference to the connection
    return RLOCK_OK;
  });
}

int rlock_client_ping(rlock_client *c) {
  return guarded([&] {
    if (c == nullptr) invalid("client is NULL");
    if (c->loop->on_loop_thread()) invalid("ping: blocking calls are not allowed on rlock's loop thread");
    rlk::Waiter w;
    rlk::Result res;
    auto conn = c->impl->conn();
    c->loop->post([&, conn] {
      conn->command({"PING"}, [&](rlk::Result &&r) {
        res = std::move(r);
        w.done();
      });
    });
    w.wait();
    if (res.status != RLOCK_OK) rlk::set_last_error("ping: " + res.detail);
    return res.status;
  });
}

int rlock_new(rlock_client *c, const char *key, int64_t ttl_ms, rlock **out) {
  return guarded([&] {
    if (c == nullptr) {
      if (out) *out = nullptr;
      invalid("client is NULL");
    }
    return new_lock(&c, 1, key, ttl_ms, out);
  });
}

int rlock_quorum_new(rlock_client *const *clients, size_t n, const char *key, int64_t ttl_ms,
                     rlock **out) {
  return guarded([&] { return new_lock(clients, n, key, ttl_ms, out); });
}

void rlock_free(rlock *l) {
  guarded([&] {
    if (l == nullptr) return RLOCK_OK;
    if (l->loop->on_loop_thread())
      invalid("free: not allowed on rlock's own loop thread (in a callback); the handle is kept");
    // On the loop: cancel a pending async acquire, let a pending release/extend finish, stop
    // renewal and callbacks, release the lock if held. After this no callback of l runs.
    rlk::Waiter w;
    auto engine = l->engine;
    l->loop->post([&w, engine] {
      try {
        engine->shut_down([&w] { w.done(); });
      } catch (...) {
        w.done();
      }
    });
    w.wait();
    // The engine's loop resources must die on the loop thread: hand the last reference over.
    auto last = std::move(l->engine);
    engine.reset();
    l->loop->post([last = std::move(last)]() mutable { last.reset(); });
    delete l;
    return RLOCK_OK;
  });
}

int rlock_acquire(rlock *l, int64_t wait_ms) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    return run_blocking(l, "acquire", [wait_ms](rlk::LockEngine &e, rlk::LockEngine::Done d) {
      e.acquire(wait_ms, d);
    });
  });
}

int rlock_release(rlock *l) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    return run_blocking(l, "release", [](rlk::LockEngine &e, rlk::LockEngine::Done d) { e.release(d); });
  });
}

int rlock_extend(rlock *l, int64_t ttl_ms) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    check_ttl(ttl_ms);
    return run_blocking(l, "extend", [ttl_ms](rlk::LockEngine &e, rlk::LockEngine::Done d) {
      e.extend(std::chrono::milliseconds(ttl_ms), d);
    });
  });
}

int64_t rlock_validity_ms(const rlock *l) { return l ? l->engine->validity_ms() : 0; }

uint64_t rlock_fencing_token(const rlock *l) { return l ? l->engine->fencing_token() : 0; }

int rlock_set_retry_delay_ms(rlock *l, int64_t base_ms, int64_t max_ms) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    if (base_ms < 1 || max_ms < base_ms || max_ms > 3600000)
      invalid("retry delays must satisfy 1 <= base_ms <= max_ms <= 3600000");
    l->engine->set_backoff({std::chrono::milliseconds(base_ms), std::chrono::milliseconds(max_ms)});
    return RLOCK_OK;
  });
}

int rlock_set_drift(rlock *l, int64_t drift_ppm, int64_t extra_ms) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    if (drift_ppm < 0 || drift_ppm > 1000000) invalid("drift_ppm must be in 0..1000000");
    if (extra_ms < 0 || extra_ms > 3600000) invalid("extra_ms must be in 0..3600000");
    l->engine->set_drift({drift_ppm, extra_ms});
    return RLOCK_OK;
  });
}

int rlock_acquire_async(rlock *l, int64_t wait_ms, rlock_done_cb cb, void *userdata) {
  return guarded([&] {
    if (l == nullptr) invalid("acquire_async: lock is NULL");
    return run_async(l, "acquire", cb, userdata, [wait_ms](rlk::LockEngine &e, rlk::LockEngine::Done d) {
      e.acquire(wait_ms, std::move(d));
    });
  });
}

int rlock_release_async(rlock *l, rlock_done_cb cb, void *userdata) {
  return guarded([&] {
    if (l == nullptr) invalid("release_async: lock is NULL");
    return run_async(l, "release", cb, userdata,
                     [](rlk::LockEngine &e, rlk::LockEngine::Done d) { e.release(std::move(d)); });
  });
}

int rlock_extend_async(rlock *l, int64_t ttl_ms, rlock_done_cb cb, void *userdata) {
  return guarded([&] {
    if (l == nullptr) invalid("extend_async: lock is NULL");
    check_ttl(ttl_ms);
    return run_async(l, "extend", cb, userdata, [ttl_ms](rlk::LockEngine &e, rlk::LockEngine::Done d) {
      e.extend(std::chrono::milliseconds(ttl_ms), std::move(d));
    });
  });
}

int rlock_set_auto_renew(rlock *l, int enabled, rlock_lost_cb on_lost, void *userdata) {
  return guarded([&] {
    if (l == nullptr) invalid("set_auto_renew: lock is NULL");
    rlk::LockEngine::Lost lost;
    if (on_lost != nullptr) {
      lost = [l, on_lost, userdata](int status, const std::string &detail) {
        rlk::set_last_error(detail);
        try {
          on_lost(l, status, userdata);
        } catch (...) {
          // Callbacks must not throw (see rlock.h).
        }
      };
    }
    auto engine = l->engine;
    if (l->loop->on_loop_thread()) {
      engine->set_auto_renew(enabled != 0, std::move(lost));
      return RLOCK_OK;
    }
    rlk::Waiter w;
    l->loop->post([&] {
      engine->set_auto_renew(enabled != 0, std::move(lost));
      w.done();
    });
    w.wait();
    return RLOCK_OK;
  });
}

size_t rlock_server_count(const rlock *l) { return l ? l->engine->server_count() : 0; }

int rlock_server_status(const rlock *l, size_t i, char *msg, size_t msg_len) {
  return guarded([&] {
    if (l == nullptr) invalid("lock is NULL");
    if (i >= l->engine->server_count())
      invalid("server index " + std::to_string(i) + " is out of range");
    const rlk::ServerReport &r = l->engine->report(i);
    if (msg != nullptr && msg_len > 0) {
      std::string text = l->engine->report_text(i);
      size_t k = std::min(text.size(), msg_len - 1);
      std::memcpy(msg, text.data(), k);
      msg[k] = '\0';
    }
    return r.status;
  });
}

}  // extern "C"
