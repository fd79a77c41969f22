// Liveness: auto-renewal and its lost-lock callback, prompt wake-up of waiters on release and on
// expiry, and the non-blocking API.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "helpers.h"
#include "support/redis_server.h"

using namespace rlock_test;
using Clock = std::chrono::steady_clock;

namespace {

// Records lost-lock callbacks and lets a test wait for one (an event, not a sleep).
struct LostProbe {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  int status = 0;
  int64_t validity_in_cb = -1;
  std::thread::id thread;
  Clock::time_point when;

  static void cb(rlock *l, int status, void *userdata) {
    auto *p = static_cast<LostProbe *>(userdata);
    std::lock_guard<std::mutex> g(p->mu);
    ++p->calls;
    p->status = status;
    p->validity_in_cb = rlock_validity_ms(l);
    p->thread = std::this_thread::get_id();
    p->when = Clock::now();
    p->cv.notify_all();
  }
  bool wait_for_call(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> g(mu);
    return cv.wait_for(g, limit, [&] { return calls > 0; });
  }
  int count() {
    std::lock_guard<std::mutex> g(mu);
    return calls;
  }
};

// Completion of an async call, waited for as an event.
struct Done {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int status = 1;
  std::string detail;
  std::thread::id thread;
  static void cb(rlock *, int status, void *userdata) {
    auto *d = static_cast<Done *>(userdata);
    std::lock_guard<std::mutex> g(d->mu);
    d->done = true;
    d->status = status;
    d->detail = rlock_last_error();
    d->thread = std::this_thread::get_id();
    d->cv.notify_all();
  }
  int wait(std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
    std::unique_lock<std::mutex> g(mu);
    if (!cv.wait_for(g, limit, [&] { return done; })) return 999;
    return status;
  }
};

long long evalsha_calls(RedisServer &s) {
  auto r = s.command("INFO", "commandstats");
  auto pos = r.str.find("cmdstat_evalsha:calls=");
  if (pos == std::string::npos) return 0;
  return std::stoll(r.str.substr(pos + 22));
}

}  // namespace

TEST_CASE("a 300 ms lock under auto-renewal is kept for 5 s and nobody else gets it") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("renew");
  auto l = make_lock(c.get(), key, 300);
  auto other = make_lock(c.get(), key, 300);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l.get(), 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  const uint64_t fence = rlock_fencing_token(l.get());
  const auto end = Clock::now() + std::chrono::seconds(5);
  int tries = 0;
  while (Clock::now() < end) {
    REQUIRE(rlock_acquire(other.get(), 0) == RLOCK_ERR_BUSY);
    CHECK(rlock_validity_ms(l.get()) > 0);
    ++tries;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));  // pacing of the probe, not sync
  }
  CHECK(tries > 50);
  CHECK(probe.count() == 0);
  CHECK(rlock_fencing_token(l.get()) == fence);  // renewal keeps the same acquisition
  CHECK(srv.pttl(key) > 0);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  CHECK(rlock_acquire(other.get(), 0) == RLOCK_OK);
  CHECK(rlock_release(other.get()) == RLOCK_OK);
}

TEST_CASE("deleting the key behind the lock's back fires the lost callback within one TTL") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("renew-deleted");
  auto l = make_lock(c.get(), key, 600);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l.get(), 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  auto t0 = Clock::now();
  srv.del(key);
  REQUIRE(probe.wait_for_call(std::chrono::milliseconds(2000)));
  CHECK(probe.when - t0 < std::chrono::milliseconds(600 + 100));
  CHECK(probe.status == RLOCK_ERR_NOT_HELD);
  CHECK(probe.validity_in_cb == 0);
  CHECK(probe.thread != std::this_thread::get_id());  // on the library's loop thread
  CHECK(rlock_validity_ms(l.get()) == 0);
  CHECK(rlock_fencing_token(l.get()) == 0);
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NOT_HELD);
  CHECK(probe.count() == 1);
}

TEST_CASE("a killed server fires the lost callback no later than the validity's end") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=100");
  auto l = make_lock(c.get(), unique_key("renew-killed"), 500);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l.get(), 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  srv.kill();
  auto t0 = Clock::now();
  REQUIRE(probe.wait_for_call(std::chrono::milliseconds(3000)));
  CHECK(probe.when - t0 <= std::chrono::milliseconds(500 + 50));
  CHECK(probe.status == RLOCK_ERR_IO);
  CHECK(probe.validity_in_cb == 0);
  CHECK(probe.count() == 1);  // once per loss
}

TEST_CASE("a paused server: renewal keeps retrying, then reports the loss as a timeout") {
  RedisServer srv;
  auto c = make_client(srv.uri() + "?command_timeout_ms=80");
  auto l = make_lock(c.get(), unique_key("renew-paused"), 600);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l.get(), 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  srv.pause();
  REQUIRE(probe.wait_for_call(std::chrono::milliseconds(3000)));
  CHECK(probe.status == RLOCK_ERR_TIMEOUT);
  CHECK(rlock_validity_ms(l.get()) == 0);
  srv.resume();
}

TEST_CASE("releasing stops renewal") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("renew-stop");
  auto l = make_lock(c.get(), key, 150);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l.get(), 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  // Renewals happen every 50 ms: wait (polling the server's counters) until some were made.
  long long before = evalsha_calls(srv);
  for (int i = 0; i < 200 && evalsha_calls(srv) < before + 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(evalsha_calls(srv) >= before + 3);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  long long after_release = evalsha_calls(srv);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the absence of renewals over 8 periods
  CHECK(evalsha_calls(srv) == after_release);
  CHECK(probe.count() == 0);
  CHECK_FALSE(srv.exists(key));
}

TEST_CASE("renewal follows the latest TTL and can be switched on while holding and off again") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("renew-toggle");
  auto l = make_lock(c.get(), key, 200);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_set_auto_renew(l.get(), 1, nullptr, nullptr) == RLOCK_OK);  // starts at once
  REQUIRE(rlock_extend(l.get(), 1200) == RLOCK_OK);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // > 1/3 of the TTL: one renewal
  CHECK(srv.pttl(key) > 900);  // renewed with the new TTL, not 200 ms
  REQUIRE(rlock_set_auto_renew(l.get(), 0, nullptr, nullptr) == RLOCK_OK);
  long long calls = evalsha_calls(srv);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(evalsha_calls(srv) == calls);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("freeing a handle under renewal releases it and no callback follows") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("renew-free");
  LostProbe probe;
  rlock *l = nullptr;
  REQUIRE(rlock_new(c.get(), key.c_str(), 200, &l) == RLOCK_OK);
  REQUIRE(rlock_set_auto_renew(l, 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // let a renewal be in flight or done
  rlock_free(l);
  CHECK_FALSE(srv.exists(key));
  srv.kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // two TTLs: a stray callback would come
  CHECK(probe.count() == 0);
}

TEST_CASE("a waiter wakes up promptly on release, without relying on its backoff") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("wake");
  auto holder = make_lock(c.get(), key, 30000);
  auto waiter = make_lock(c.get(), key, 30000);
  // Polling alone would sleep up to a second between attempts.
  REQUIRE(rlock_set_retry_delay_ms(waiter.get(), 1000, 1000) == RLOCK_OK);
  for (int round = 0; round < 5; ++round) {
    REQUIRE(rlock_acquire(holder.get(), 0) == RLOCK_OK);
    std::atomic<int> rc{1};
    Clock::time_point got;
    std::thread t([&] {
      rc = rlock_acquire(waiter.get(), 10000);
      got = Clock::now();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the waiter block
    auto released = Clock::now();
    REQUIRE(rlock_release(holder.get()) == RLOCK_OK);
    t.join();
    CHECK(rc == RLOCK_OK);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(got - released).count();
    CHECK(ms < 100);  // a notification, not the 1000 ms backoff
    REQUIRE(rlock_release(waiter.get()) == RLOCK_OK);
  }
}

TEST_CASE("a waiter retries when the owner's key expires, not after its backoff") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("wake-expiry");
  srv.set(key, "crashed-owner");
  REQUIRE(srv.command("PEXPIRE", key, "300").integer == 1);
  auto waiter = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_set_retry_delay_ms(waiter.get(), 2000, 2000) == RLOCK_OK);
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(waiter.get(), 10000); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms >= 250);
  CHECK(ms < 1000);  // at the owner's expiry (300 ms), not at the 2000 ms backoff
  CHECK(rlock_release(waiter.get()) == RLOCK_OK);
}

TEST_CASE("release notifications work for a quorum lock too") {
  std::vector<std::unique_ptr<RedisServer>> srv;
  std::vector<ClientPtr> cs;
  std::vector<rlock_client *> raw;
  for (int i = 0; i < 3; ++i) {
    srv.push_back(std::make_unique<RedisServer>());
    cs.push_back(make_client(srv.back()->uri()));
    raw.push_back(cs.back().get());
  }
  const std::string key = unique_key("wake-quorum");
  rlock *a = nullptr, *b = nullptr;
  REQUIRE(rlock_quorum_new(raw.data(), 3, key.c_str(), 30000, &a) == RLOCK_OK);
  REQUIRE(rlock_quorum_new(raw.data(), 3, key.c_str(), 30000, &b) == RLOCK_OK);
  LockPtr pa(a), pb(b);
  REQUIRE(rlock_set_retry_delay_ms(b, 1000, 1000) == RLOCK_OK);
  REQUIRE(rlock_acquire(a, 0) == RLOCK_OK);
  std::atomic<int> rc{1};
  Clock::time_point got;
  std::thread t([&] {
    rc = rlock_acquire(b, 10000);
    got = Clock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the waiter block
  auto released = Clock::now();
  REQUIRE(rlock_release(a) == RLOCK_OK);
  t.join();
  CHECK(rc == RLOCK_OK);
  CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(got - released).count() < 100);
  CHECK(rlock_release(b) == RLOCK_OK);
}

TEST_CASE("a quorum lock under renewal loses it when a majority dies, and says so within one TTL") {
  std::vector<std::unique_ptr<RedisServer>> srv;
  std::vector<ClientPtr> cs;
  std::vector<rlock_client *> raw;
  for (int i = 0; i < 3; ++i) {
    srv.push_back(std::make_unique<RedisServer>());
    cs.push_back(make_client(srv.back()->uri() + "?command_timeout_ms=100"));
    raw.push_back(cs.back().get());
  }
  rlock *l = nullptr;
  REQUIRE(rlock_quorum_new(raw.data(), 3, unique_key("renew-quorum").c_str(), 600, &l) == RLOCK_OK);
  LockPtr lp(l);
  LostProbe probe;
  REQUIRE(rlock_set_auto_renew(l, 1, LostProbe::cb, &probe) == RLOCK_OK);
  REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
  srv[2]->kill();  // a minority: renewal goes on
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // more than a TTL under renewal
  CHECK(probe.count() == 0);
  CHECK(rlock_validity_ms(l) > 0);
  srv[1]->kill();  // now a majority is gone
  auto t0 = Clock::now();
  REQUIRE(probe.wait_for_call(std::chrono::milliseconds(3000)));
  CHECK(probe.when - t0 <= std::chrono::milliseconds(600 + 50));
  CHECK(probe.status == RLOCK_ERR_NO_QUORUM);
  CHECK(rlock_validity_ms(l) == 0);
}

TEST_CASE("async acquire, extend and release call back on the loop thread") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("async");
  auto l = make_lock(c.get(), key, 5000);
  Done a;
  REQUIRE(rlock_acquire_async(l.get(), 0, Done::cb, &a) == RLOCK_OK);
  CHECK(a.wait() == RLOCK_OK);
  CHECK(a.thread != std::this_thread::get_id());
  CHECK(rlock_validity_ms(l.get()) > 0);
  Done e;
  REQUIRE(rlock_extend_async(l.get(), 9000, Done::cb, &e) == RLOCK_OK);
  CHECK(e.wait() == RLOCK_OK);
  CHECK(srv.pttl(key) > 8000);
  Done busy;
  auto other = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_acquire_async(other.get(), 0, Done::cb, &busy) == RLOCK_OK);
  CHECK(busy.wait() == RLOCK_ERR_BUSY);
  CHECK(busy.detail.find("held by another owner") != std::string::npos);  // last_error in the cb
  Done r;
  REQUIRE(rlock_release_async(l.get(), Done::cb, &r) == RLOCK_OK);
  CHECK(r.wait() == RLOCK_OK);
  CHECK_FALSE(srv.exists(key));
}

TEST_CASE("overlapping calls on one handle are refused; bad async arguments are RLOCK_ERR_INVALID") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("async-overlap");
  auto holder = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_acquire(holder.get(), 0) == RLOCK_OK);
  auto l = make_lock(c.get(), key, 5000);
  Done first;
  REQUIRE(rlock_acquire_async(l.get(), 10000, Done::cb, &first) == RLOCK_OK);  // waits
  Done second;
  CHECK(rlock_acquire_async(l.get(), 0, Done::cb, &second) == RLOCK_ERR_INVALID);
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_INVALID);
  CHECK(std::string(rlock_last_error()).find("in progress") != std::string::npos);
  REQUIRE(rlock_release(holder.get()) == RLOCK_OK);
  CHECK(first.wait() == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  CHECK(rlock_acquire_async(nullptr, 0, Done::cb, &second) == RLOCK_ERR_INVALID);
  CHECK(rlock_acquire_async(l.get(), 0, nullptr, nullptr) == RLOCK_ERR_INVALID);
  CHECK(rlock_extend_async(l.get(), 0, Done::cb, &second) == RLOCK_ERR_INVALID);
  CHECK(rlock_release_async(nullptr, Done::cb, &second) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_auto_renew(nullptr, 1, nullptr, nullptr) == RLOCK_ERR_INVALID);
}

TEST_CASE("freeing a handle cancels its pending async acquire and leaves nothing held") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("async-cancel");
  auto holder = make_lock(c.get(), key, 30000);
  REQUIRE(rlock_acquire(holder.get(), 0) == RLOCK_OK);
  rlock *l = nullptr;
  REQUIRE(rlock_new(c.get(), key.c_str(), 30000, &l) == RLOCK_OK);
  Done d;
  REQUIRE(rlock_acquire_async(l, -1, Done::cb, &d) == RLOCK_OK);  // would wait forever
  rlock_free(l);
  CHECK(d.wait(std::chrono::milliseconds(0)) == RLOCK_ERR_CANCELED);  // called before free returned
  REQUIRE(rlock_release(holder.get()) == RLOCK_OK);
  CHECK_FALSE(srv.exists(key));
}

namespace {
struct Chain {
  rlock *l;
  int steps = 0;
  int blocking_rc = 0;
  Done finished;
  static void on_acquired(rlock *l, int status, void *userdata) {
    auto *ch = static_cast<Chain *>(userdata);
    ch->blocking_rc = rlock_release(l);  // blocking call in a callback: refused, not a deadlock
    if (status != RLOCK_OK || rlock_release_async(l, on_released, ch) != RLOCK_OK)
      Done::cb(l, status == RLOCK_OK ? -100 : status, &ch->finished);
  }
  static void on_released(rlock *l, int status, void *userdata) {
    auto *ch = static_cast<Chain *>(userdata);
    if (status == RLOCK_OK && ++ch->steps < 20 && rlock_acquire_async(l, 0, on_acquired, ch) == RLOCK_OK)
      return;
    Done::cb(l, status, &ch->finished);
  }
};
}  // namespace

TEST_CASE("async calls can be chained from their callbacks; blocking calls there are refused") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  auto l = make_lock(c.get(), unique_key("async-chain"), 5000);
  Chain ch{l.get()};
  REQUIRE(rlock_acquire_async(l.get(), 0, Chain::on_acquired, &ch) == RLOCK_OK);
  CHECK(ch.finished.wait() == RLOCK_OK);
  CHECK(ch.steps == 20);
  CHECK(ch.blocking_rc == RLOCK_ERR_INVALID);
}

namespace {
struct FreeInCallback {
  rlock_client *client;
  std::string client_free_error, lock_free_error;
  Done done;
  static void cb(rlock *l, int status, void *userdata) {
    auto *f = static_cast<FreeInCallback *>(userdata);
    rlock_client_free(f->client);  // refused on the loop thread: would make the loop join itself
    f->client_free_error = rlock_last_error();
    rlock_free(l);  // refused too
    f->lock_free_error = rlock_last_error();
    Done::cb(l, status, &f->done);
  }
};
}  // namespace

TEST_CASE("freeing a client or a lock from a callback is refused, not a deadlock or a crash") {
  RedisServer srv;
  rlock_client *c = nullptr;
  REQUIRE(rlock_client_new(srv.uri().c_str(), &c) == RLOCK_OK);
  ClientPtr owned(c);
  auto l = make_lock(c, unique_key("free-in-cb"), 5000);
  FreeInCallback f{c};
  REQUIRE(rlock_acquire_async(l.get(), 0, FreeInCallback::cb, &f) == RLOCK_OK);
  CHECK(f.done.wait() == RLOCK_OK);
  CHECK(f.client_free_error.find("not allowed") != std::string::npos);
  CHECK(f.lock_free_error.find("not allowed") != std::string::npos);
  // Both are still alive and usable.
  CHECK(rlock_client_ping(c) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a release hands the lock to the first waiter; a dead one in the queue blocks others only briefly") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("queue");
  const std::string queue = key + ":waiters";
  auto l = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_set_retry_delay_ms(l.get(), 20, 20) == RLOCK_OK);
  // A waiter that died while queued left its entry ("token:ttl_ms") behind.
  REQUIRE(srv.command("ZADD", queue, "1", "dead-token:150").integer == 1);
  // A single attempt ignores the queue.
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  const uint64_t fence = rlock_fencing_token(l.get());
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  // The release handed the lock to the first waiter: the key holds its token, with its TTL, and the
  // fencing counter moved on for it.
  CHECK(srv.get(key).value_or("") == "dead-token");
  CHECK(srv.pttl(key) > 0);
  CHECK(srv.pttl(key) <= 150);
  CHECK(std::stoull(srv.get(key + ":fence").value_or("0")) == fence + 1);
  // Being dead, it never uses it: a waiting caller gets the lock when that TTL runs out.
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 2000); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms < 700);
  CHECK(rlock_fencing_token(l.get()) > fence + 1);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  // An entry that names no TTL is only woken, not handed the lock; a newcomer that waits queues
  // behind it once, then takes the free lock.
  REQUIRE(srv.command("ZADD", queue, "1", "garbage").integer == 1);
  ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 2000); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms < 300);
  CHECK(srv.pttl(queue) > 0);  // the queue expires by itself
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("hand-off is first come, first served among waiters") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("fifo");
  auto holder = make_lock(c.get(), key, 30000);
  REQUIRE(rlock_acquire(holder.get(), 0) == RLOCK_OK);
  constexpr int kWaiters = 4;
  std::vector<LockPtr> waiters;
  for (int i = 0; i < kWaiters; ++i) waiters.push_back(make_lock(c.get(), key, 30000));
  std::mutex mu;
  std::vector<int> order;
  std::vector<Done> done(kWaiters);
  struct Ctx {
    int index;
    std::mutex *mu;
    std::vector<int> *order;
    Done *done;
  };
  std::vector<Ctx> ctx;
  for (int i = 0; i < kWaiters; ++i) ctx.push_back({i, &mu, &order, &done[i]});
  auto cb = [](rlock *l, int status, void *ud) {
    auto *x = static_cast<Ctx *>(ud);
    {
      std::lock_guard<std::mutex> g(*x->mu);
      x->order->push_back(x->index);
    }
    if (status == RLOCK_OK) rlock_release_async(l, [](rlock *, int, void *) {}, nullptr);
    Done::cb(l, status, x->done);
  };
  for (int i = 0; i < kWaiters; ++i) {
    REQUIRE(rlock_acquire_async(waiters[i].get(), 10000, cb, &ctx[i]) == RLOCK_OK);
    // Wait until this waiter is queued before starting the next (an event: the queue's size).
    for (int k = 0; k < 500 && srv.command("ZCARD", key + ":waiters").integer < i + 1; ++k)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE(rlock_release(holder.get()) == RLOCK_OK);
  for (auto &d : done) CHECK(d.wait() == RLOCK_OK);
  CHECK(order == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("a release message alone is never taken as ownership") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("forged-notice");
  auto holder = make_lock(c.get(), key, 30000);
  REQUIRE(rlock_acquire(holder.get(), 0) == RLOCK_OK);
  const uint64_t holder_fence = rlock_fencing_token(holder.get());
  auto waiter = make_lock(c.get(), key, 30000);
  Done d;
  REQUIRE(rlock_acquire_async(waiter.get(), 5000, Done::cb, &d) == RLOCK_OK);
  // Wait until the waiter is queued, then send it the message a release would send it (a late or
  // forged one): the key is still the holder's.
  std::string entry;
  for (int i = 0; i < 500 && entry.empty(); ++i) {
    auto r = srv.command("ZRANGE", key + ":waiters", "0", "0");
    if (!r.elements.empty()) entry = r.elements[0];
    else std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE_FALSE(entry.empty());
  srv.command("PUBLISH", "rlock:released:" + key, entry);
  // The waiter checks with the server instead of believing the message: still waiting.
  CHECK(d.wait(std::chrono::milliseconds(200)) == 999);  // 999: no completion yet
  CHECK(rlock_validity_ms(waiter.get()) == 0);
  REQUIRE(rlock_release(holder.get()) == RLOCK_OK);
  CHECK(d.wait() == RLOCK_OK);
  CHECK(rlock_fencing_token(waiter.get()) > holder_fence);
  CHECK(srv.get(key).value_or("").size() == 32);
  CHECK(rlock_release(waiter.get()) == RLOCK_OK);
}
