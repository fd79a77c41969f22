// The quorum lock (Redlock) over 3 and 5 real redis-servers: behaviour, faults, fencing, detail.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"
#include "support/fault_proxy.h"
#include "support/redis_server.h"

using namespace rlock_test;

namespace {

// N servers and one client for each (optionally with URI query parameters).
struct Cluster {
  std::vector<std::unique_ptr<RedisServer>> servers;
  std::vector<ClientPtr> clients;
  explicit Cluster(size_t n, const std::string &query = "") {
    for (size_t i = 0; i < n; ++i) servers.push_back(std::make_unique<RedisServer>());
    for (auto &s : servers) clients.push_back(make_client(s->uri() + query));
  }
  LockPtr lock(const std::string &key, int64_t ttl_ms) {
    std::vector<rlock_client *> raw;
    for (auto &c : clients) raw.push_back(c.get());
    rlock *l = nullptr;
    int rc = rlock_quorum_new(raw.data(), raw.size(), key.c_str(), ttl_ms, &l);
    if (rc != RLOCK_OK) throw std::runtime_error(std::string("rlock_quorum_new: ") + rlock_last_error());
    return LockPtr(l);
  }
  size_t holding(const std::string &key, const std::string &token) {
    size_t n = 0;
    for (auto &s : servers)
      if (s->running() && !s->paused() && s->get(key).value_or("") == token) ++n;
    return n;
  }
  size_t with_key(const std::string &key) {
    size_t n = 0;
    for (auto &s : servers)
      if (s->running() && !s->paused() && s->exists(key)) ++n;
    return n;
  }
};

std::vector<int> statuses(rlock *l) {
  std::vector<int> v;
  for (size_t i = 0; i < rlock_server_count(l); ++i) v.push_back(rlock_server_status(l, i, nullptr, 0));
  return v;
}

std::string token_of(Cluster &cl, const std::string &key) {
  for (auto &s : cl.servers)
    if (s->running() && !s->paused())
      if (auto t = s->get(key)) return *t;
  return "";
}

}  // namespace

TEST_CASE("quorum of 3 and of 5: acquire, extend and release reach every server") {
  for (size_t n : {3u, 5u}) {
    INFO("servers: " << n);
    Cluster cl(n);
    const std::string key = unique_key("q-basic");
    auto l = cl.lock(key, 5000);
    CHECK(rlock_server_count(l.get()) == n);
    REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
    CHECK(rlock_validity_ms(l.get()) > 4500);
    CHECK(rlock_fencing_token(l.get()) > 0);
    std::string tok = token_of(cl, key);
    REQUIRE(tok.size() == 32);
    // Early decision: the call returns once a quorum granted; the rest land right after.
    for (int i = 0; i < 100 && cl.holding(key, tok) < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(cl.holding(key, tok) == n);
    REQUIRE(rlock_extend(l.get(), 30000) == RLOCK_OK);
    CHECK(rlock_validity_ms(l.get()) > 29000);
    REQUIRE(rlock_release(l.get()) == RLOCK_OK);
    for (int i = 0; i < 100 && cl.with_key(key) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(cl.with_key(key) == 0);
    CHECK(rlock_validity_ms(l.get()) == 0);
  }
}

TEST_CASE("a quorum of one behaves as a single-instance lock and never says no quorum") {
  Cluster cl(1);
  auto l = cl.lock(unique_key("q-one"), 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  cl.servers[0]->kill();
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_IO);
}

TEST_CASE("a killed minority does not stop the quorum lock") {
  Cluster cl(5);
  const std::string key = unique_key("q-minority-down");
  auto l = cl.lock(key, 5000);
  cl.servers[1]->kill();
  cl.servers[3]->kill();
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  CHECK(cl.with_key(key) == 3);
  REQUIRE(rlock_extend(l.get(), 5000) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  // The detail says which servers failed and why. (The call returns once three servers agreed, so
  // a dead server's refusal may not have been needed yet: then it reads PENDING.)
  auto st = statuses(l.get());
  for (int dead : {1, 3}) {
    CHECK((st[dead] == RLOCK_ERR_IO || st[dead] == RLOCK_SERVER_PENDING));
    char msg[256];
    rlock_server_status(l.get(), dead, msg, sizeof msg);
    CHECK(std::string(msg).find(std::to_string(cl.servers[dead]->port())) != std::string::npos);
    if (st[dead] == RLOCK_ERR_IO) CHECK(std::string(msg).find("refused") != std::string::npos);
  }
  for (int live : {0, 2, 4}) CHECK((st[live] == RLOCK_OK || st[live] == RLOCK_SERVER_PENDING));
  // A call that fails needs every answer, so there the dead servers are always named.
  cl.servers[0]->kill();
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_NO_QUORUM);
  st = statuses(l.get());
  CHECK(st[0] == RLOCK_ERR_IO);
  CHECK(st[1] == RLOCK_ERR_IO);
  CHECK(st[3] == RLOCK_ERR_IO);
}

TEST_CASE("a paused minority costs at most one command timeout") {
  Cluster cl(5, "?command_timeout_ms=1500");
  const std::string key = unique_key("q-minority-paused");
  auto l = cl.lock(key, 10000);
  for (auto &c : cl.clients) REQUIRE(rlock_client_ping(c.get()) == RLOCK_OK);
  cl.servers[0]->pause();
  cl.servers[4]->pause();
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 0); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms < 700);  // decided by the three live servers, without waiting 1500 ms for the paused
  ms = elapsed_ms([&] { rc = rlock_release(l.get()); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms < 700);
  // Once the paused servers time out they are reconnected, and everything works again.
  cl.servers[0]->resume();
  cl.servers[4]->resume();
  REQUIRE(rlock_acquire(l.get(), 4000) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a majority down gives RLOCK_ERR_NO_QUORUM within a bounded time, and leaves nothing") {
  Cluster cl(5, "?command_timeout_ms=200&connect_timeout_ms=200");
  const std::string key = unique_key("q-majority-down");
  auto l = cl.lock(key, 5000);
  for (auto &c : cl.clients) REQUIRE(rlock_client_ping(c.get()) == RLOCK_OK);
  cl.servers[0]->kill();
  cl.servers[1]->pause();
  cl.servers[2]->kill();
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 0); });
  CHECK(rc == RLOCK_ERR_NO_QUORUM);
  CHECK(ms < 1000);
  CHECK(std::string(rlock_last_error()).find("quorum is 3") != std::string::npos);
  auto st = statuses(l.get());
  CHECK(st[0] == RLOCK_ERR_IO);
  CHECK(st[2] == RLOCK_ERR_IO);
  // The two live servers granted or were not needed; either way no key with our token stays.
  for (int i = 0; i < 100 && cl.with_key(key) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(cl.with_key(key) == 0);
  // With a wait, the attempts are retried until the deadline; the status stays NO_QUORUM.
  ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 400); });
  CHECK(rc == RLOCK_ERR_NO_QUORUM);
  CHECK(ms >= 390);
  CHECK(ms < 2500);
  cl.servers[1]->resume();
}

TEST_CASE("a failed quorum attempt leaves no key with our token on any server") {
  Cluster cl(3);
  const std::string key = unique_key("q-undo");
  // Someone else holds it on server 2; server 1 is down: we can get only server 0.
  cl.servers[2]->set(key, "foreign");
  REQUIRE(cl.servers[2]->command("PEXPIRE", key, "10000").integer == 1);
  cl.servers[1]->kill();
  auto l = cl.lock(key, 10000);
  int rc = rlock_acquire(l.get(), 0);
  CHECK(rc == RLOCK_ERR_NO_QUORUM);  // one refusal and one failure: neither alone explains it
  auto st = statuses(l.get());
  CHECK(st[1] == RLOCK_ERR_IO);
  CHECK(st[2] == RLOCK_ERR_BUSY);
  // Server 0 granted and was undone.
  for (int i = 0; i < 100 && cl.servers[0]->exists(key); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK_FALSE(cl.servers[0]->exists(key));
  CHECK(cl.servers[2]->get(key).value_or("") == "foreign");
}

TEST_CASE("release: OK with a quorum, NOT_HELD when fewer than a quorum still held it, NO_QUORUM when too few answered") {
  Cluster cl(3);
  const std::string key = unique_key("q-release");
  auto l = cl.lock(key, 10000);
  // Lost on two of three servers (deleted behind our back): not held.
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  for (int i = 0; i < 100 && cl.with_key(key) < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  cl.servers[0]->del(key);
  cl.servers[1]->del(key);
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NOT_HELD);
  CHECK(rlock_validity_ms(l.get()) == 0);
  // Two of three unreachable: cannot tell.
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  cl.servers[0]->kill();
  cl.servers[1]->kill();
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NO_QUORUM);
  CHECK(rlock_validity_ms(l.get()) == 0);  // not held afterwards, in every case
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NOT_HELD);
}

TEST_CASE("extend needs a quorum that still holds our token") {
  Cluster cl(3);
  const std::string key = unique_key("q-extend");
  auto l = cl.lock(key, 10000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  for (int i = 0; i < 100 && cl.with_key(key) < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  cl.servers[2]->del(key);
  CHECK(rlock_extend(l.get(), 20000) == RLOCK_OK);  // two of three is a quorum
  cl.servers[1]->del(key);
  CHECK(rlock_extend(l.get(), 20000) == RLOCK_ERR_NOT_HELD);
  CHECK(rlock_validity_ms(l.get()) == 0);
}

TEST_CASE("quorum fencing tokens grow across owners, also when a server's counter ran ahead or was lost") {
  Cluster cl(3);
  const std::string key = unique_key("q-fence");
  auto a = cl.lock(key, 5000);
  auto b = cl.lock(key, 5000);
  uint64_t last = 0;
  auto take = [&](rlock *l) {
    REQUIRE(rlock_acquire(l, 2000) == RLOCK_OK);
    uint64_t f = rlock_fencing_token(l);
    CHECK(f > last);
    last = f;
    REQUIRE(rlock_release(l) == RLOCK_OK);
  };
  for (int i = 0; i < 10; ++i) take(i % 2 ? a.get() : b.get());
  // Server 0's counter jumps far ahead: the next token follows it, and the others are lifted.
  cl.servers[0]->set(key + ":fence", std::to_string(last + 1000000));
  take(a.get());
  CHECK(last >= 1000001);
  for (int i = 0; i < 100; ++i) {
    bool synced = true;
    for (auto &s : cl.servers) synced &= std::stoull(s->get(key + ":fence").value_or("0")) >= last;
    if (synced) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Now the server with the highest counter dies; the other two still give larger tokens.
  cl.servers[0]->kill();
  take(b.get());
  take(a.get());
  // And a restarted server with an empty data set does not send tokens backwards.
  cl.servers[0]->start();
  cl.servers[1]->kill();
  take(b.get());
  take(a.get());
}

TEST_CASE("servers are reconnected automatically after a restart") {
  Cluster cl(3);
  const std::string key = unique_key("q-restart");
  auto l = cl.lock(key, 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  for (auto &s : cl.servers) s->restart();
  // A wait covers an attempt sent before the loop read an old connection's close (RLOCK_ERR_IO).
  REQUIRE(rlock_acquire(l.get(), 1000) == RLOCK_OK);
  // Every server, not just a quorum, got the key: all three connections were re-made.
  const std::string tok = token_of(cl, key);
  for (int i = 0; i < 200 && cl.holding(key, tok) < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(cl.holding(key, tok) == 3);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("two contenders that split the servers both fail cleanly, and one wins later") {
  // Server 2 is held by a third party. A reaches server 0 first and server 1 late, B the other way
  // round (through latency proxies), so each gets exactly one grant: neither has a quorum.
  std::vector<std::unique_ptr<RedisServer>> srv;
  for (int i = 0; i < 3; ++i) srv.push_back(std::make_unique<RedisServer>());
  FaultProxy slow0("127.0.0.1", srv[0]->port()), slow1("127.0.0.1", srv[1]->port());
  slow0.set_latency_ms(40);
  slow1.set_latency_ms(40);
  auto a0 = make_client(srv[0]->uri()), a1 = make_client(slow1.uri()), a2 = make_client(srv[2]->uri());
  auto b0 = make_client(slow0.uri()), b1 = make_client(srv[1]->uri()), b2 = make_client(srv[2]->uri());
  const std::string key = unique_key("q-split");
  srv[2]->set(key, "third-party");
  REQUIRE(srv[2]->command("PEXPIRE", key, "60000").integer == 1);
  rlock_client *ca[3] = {a0.get(), a1.get(), a2.get()};
  rlock_client *cb[3] = {b0.get(), b1.get(), b2.get()};
  rlock *la = nullptr, *lb = nullptr;
  REQUIRE(rlock_quorum_new(ca, 3, key.c_str(), 10000, &la) == RLOCK_OK);
  REQUIRE(rlock_quorum_new(cb, 3, key.c_str(), 10000, &lb) == RLOCK_OK);
  LockPtr pa(la), pb(lb);
  for (rlock_client *c : {a0.get(), a1.get(), a2.get(), b0.get(), b1.get(), b2.get()})
    REQUIRE(rlock_client_ping(c) == RLOCK_OK);
  int ra = 0, rb = 0;
  std::thread ta([&] { ra = rlock_acquire(la, 0); });
  std::thread tb([&] { rb = rlock_acquire(lb, 0); });
  ta.join();
  tb.join();
  CHECK(ra == RLOCK_ERR_BUSY);
  CHECK(rb == RLOCK_ERR_BUSY);
  // Both undid their single grant.
  for (int i = 0; i < 200 && (srv[0]->exists(key) || srv[1]->exists(key)); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK_FALSE(srv[0]->exists(key));
  CHECK_FALSE(srv[1]->exists(key));
  // The third party goes away; both retry, exactly one holds at a time, and both get it in turn.
  srv[2]->del(key);
  std::atomic<int> inside{0}, overlaps{0};
  auto worker = [&](rlock *l, int *rc) {
    *rc = rlock_acquire(l, 10000);
    if (*rc != RLOCK_OK) return;
    if (inside.fetch_add(1) != 0) overlaps++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    inside.fetch_sub(1);
    rlock_release(l);
  };
  std::thread wa(worker, la, &ra), wb(worker, lb, &rb);
  wa.join();
  wb.join();
  CHECK(ra == RLOCK_OK);
  CHECK(rb == RLOCK_OK);
  CHECK(overlaps.load() == 0);
}

TEST_CASE("a partitioned minority (black-holed through a proxy) does not slow the quorum down") {
  std::vector<std::unique_ptr<RedisServer>> srv;
  for (int i = 0; i < 3; ++i) srv.push_back(std::make_unique<RedisServer>());
  FaultProxy p2("127.0.0.1", srv[2]->port());
  auto c0 = make_client(srv[0]->uri() + "?command_timeout_ms=1500");
  auto c1 = make_client(srv[1]->uri() + "?command_timeout_ms=1500");
  auto c2 = make_client(p2.uri() + "?command_timeout_ms=1500");
  rlock_client *cs[3] = {c0.get(), c1.get(), c2.get()};
  rlock *l = nullptr;
  REQUIRE(rlock_quorum_new(cs, 3, unique_key("q-partition").c_str(), 5000, &l) == RLOCK_OK);
  LockPtr lp(l);
  p2.set_blackhole(true);
  for (int i = 0; i < 5; ++i) {
    int rc = 0;
    auto ms = elapsed_ms([&] { rc = rlock_acquire(l, 0); });
    CHECK(rc == RLOCK_OK);
    CHECK(ms < 700);  // not waiting 1500 ms for the partitioned server
    ms = elapsed_ms([&] { rc = rlock_release(l); });
    CHECK(rc == RLOCK_OK);
    CHECK(ms < 700);
  }
  // The partitioned server's requests time out in the background and are reported as such.
  REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
  REQUIRE(rlock_release(l) == RLOCK_OK);
  p2.set_blackhole(false);
}

TEST_CASE("added latency on every server costs about one round trip, not one per server") {
  std::vector<std::unique_ptr<RedisServer>> srv;
  std::vector<std::unique_ptr<FaultProxy>> px;
  std::vector<ClientPtr> cs;
  std::vector<rlock_client *> raw;
  for (int i = 0; i < 5; ++i) {
    srv.push_back(std::make_unique<RedisServer>());
    px.push_back(std::make_unique<FaultProxy>("127.0.0.1", srv.back()->port()));
    px.back()->set_latency_ms(50);
    cs.push_back(make_client(px.back()->uri()));
    raw.push_back(cs.back().get());
  }
  rlock *l = nullptr;
  REQUIRE(rlock_quorum_new(raw.data(), 5, unique_key("q-latency").c_str(), 5000, &l) == RLOCK_OK);
  LockPtr lp(l);
  for (auto c : raw) REQUIRE(rlock_client_ping(c) == RLOCK_OK);
  int rc = 0;
  // The very first acquisition also aligns the five fencing counters (one more round trip).
  auto ms = elapsed_ms([&] { rc = rlock_acquire(l, 0); });
  CHECK(rc == RLOCK_OK);
  CHECK(ms < 450);
  REQUIRE(rlock_release(l) == RLOCK_OK);
  for (int i = 0; i < 3; ++i) {
    ms = elapsed_ms([&] { rc = rlock_acquire(l, 0); });
    CHECK(rc == RLOCK_OK);
    CHECK(ms >= 99);   // one round trip through the proxies: 2 x 50 ms
    CHECK(ms < 300);   // a sequential design needs 5 x 100 ms = 500 ms; the margin is for load
    ms = elapsed_ms([&] { rc = rlock_release(l); });
    CHECK(rc == RLOCK_OK);
    CHECK(ms < 300);
  }
}
