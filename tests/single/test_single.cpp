// The single-instance lock against a real redis-server: behaviour, fencing, auth, bad input.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <thread>

#include "helpers.h"
#include "support/redis_server.h"

using namespace rlock_test;

namespace {

// One server shared by the tests of this file that do not break it (each uses its own keys).
RedisServer &shared_server() {
  static RedisServer server;
  return server;
}

std::string token_on_server(RedisServer &s, const std::string &key) { return s.get(key).value_or(""); }

}  // namespace

TEST_CASE("acquire, extend and release a single-instance lock") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("basic");
  auto l = make_lock(c.get(), key, 5000);

  CHECK(rlock_validity_ms(l.get()) == 0);
  CHECK(rlock_fencing_token(l.get()) == 0);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  int64_t v = rlock_validity_ms(l.get());
  CHECK(v > 4500);  // 5000 - 1% - 2 ms - one loopback round trip
  CHECK(v <= 5000 - 52);
  CHECK(rlock_fencing_token(l.get()) > 0);
  // The key holds a 128-bit token, with the TTL we asked for.
  std::string tok = token_on_server(srv, key);
  CHECK(tok.size() == 32);
  CHECK(srv.pttl(key) > 4000);

  REQUIRE(rlock_extend(l.get(), 20000) == RLOCK_OK);
  CHECK(rlock_validity_ms(l.get()) > 19000);
  CHECK(srv.pttl(key) > 19000);
  CHECK(token_on_server(srv, key) == tok);  // extend keeps the owner

  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  CHECK_FALSE(srv.exists(key));
  CHECK(rlock_validity_ms(l.get()) == 0);
  CHECK(rlock_fencing_token(l.get()) == 0);
  CHECK(rlock_server_count(l.get()) == 1);
}

TEST_CASE("a second handle on the same key gets RLOCK_ERR_BUSY, then the lock after release") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("contend");
  auto a = make_lock(c.get(), key, 5000);
  auto b = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_acquire(a.get(), 0) == RLOCK_OK);
  CHECK(rlock_acquire(b.get(), 0) == RLOCK_ERR_BUSY);
  CHECK(std::string(rlock_last_error()).find("held by another owner") != std::string::npos);
  char msg[200];
  CHECK(rlock_server_status(b.get(), 0, msg, sizeof msg) == RLOCK_ERR_BUSY);
  CHECK(std::string(msg).find(srv.host()) != std::string::npos);
  CHECK(rlock_validity_ms(b.get()) == 0);
  // A short wait that ends before the holder lets go is still BUSY, and takes about the wait.
  int rc = 0;
  auto ms = elapsed_ms([&] { rc = rlock_acquire(b.get(), 100); });
  CHECK(rc == RLOCK_ERR_BUSY);
  CHECK(ms >= 95);
  CHECK(ms < 1000);
  uint64_t fa = rlock_fencing_token(a.get());
  int released = 1;
  std::thread releaser([&] {
    // Let b start waiting; the release wakes it whatever the timing. (Catch2 assertions stay on the
    // test's own thread: they are not thread-safe.)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    released = rlock_release(a.get());
  });
  CHECK(rlock_acquire(b.get(), 5000) == RLOCK_OK);
  releaser.join();
  CHECK(released == RLOCK_OK);
  CHECK(rlock_fencing_token(b.get()) > fa);
  CHECK(rlock_release(b.get()) == RLOCK_OK);
}

TEST_CASE("acquire on a handle that already holds the lock is RLOCK_ERR_INVALID and keeps it") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("twice");
  auto l = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  std::string tok = token_on_server(srv, key);
  uint64_t f = rlock_fencing_token(l.get());
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_INVALID);
  CHECK(token_on_server(srv, key) == tok);
  CHECK(rlock_fencing_token(l.get()) == f);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("after expiry another owner takes over and the old owner cannot release or extend it") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("expiry");
  auto old_owner = make_lock(c.get(), key, 100);
  auto new_owner = make_lock(c.get(), key, 10000);
  REQUIRE(rlock_acquire(old_owner.get(), 0) == RLOCK_OK);
  uint64_t f1 = rlock_fencing_token(old_owner.get());
  // Wait (polling the server with a deadline) until Redis expired the key.
  REQUIRE(rlock_acquire(new_owner.get(), 3000) == RLOCK_OK);
  CHECK(rlock_validity_ms(old_owner.get()) == 0);
  CHECK(rlock_fencing_token(old_owner.get()) == 0);
  CHECK(rlock_fencing_token(new_owner.get()) > f1);
  std::string tok = token_on_server(srv, key);

  CHECK(rlock_extend(old_owner.get(), 10000) == RLOCK_ERR_NOT_HELD);
  CHECK(rlock_release(old_owner.get()) == RLOCK_ERR_NOT_HELD);
  CHECK(token_on_server(srv, key) == tok);  // the new owner's lock is untouched
  CHECK(rlock_validity_ms(new_owner.get()) > 0);
  CHECK(rlock_release(new_owner.get()) == RLOCK_OK);
}

TEST_CASE("release and extend of a handle that never acquired are RLOCK_ERR_NOT_HELD") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  auto l = make_lock(c.get(), unique_key("never"), 1000);
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NOT_HELD);
  CHECK(rlock_extend(l.get(), 1000) == RLOCK_ERR_NOT_HELD);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_ERR_NOT_HELD);
  CHECK(rlock_extend(l.get(), 1000) == RLOCK_ERR_NOT_HELD);
}

TEST_CASE("fencing tokens strictly increase across owners and clients") {
  auto &srv = shared_server();
  const std::string key = unique_key("fence");
  auto c1 = make_client(srv.uri());
  auto c2 = make_client(srv.uri());
  auto a = make_lock(c1.get(), key, 5000);
  auto b = make_lock(c2.get(), key, 5000);
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    rlock *l = (i % 2 ? a : b).get();
    REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
    uint64_t f = rlock_fencing_token(l);
    REQUIRE(f > last);
    last = f;
    REQUIRE(rlock_release(l) == RLOCK_OK);
  }
  // The counter lives next to the key, without a TTL.
  CHECK(srv.get(key + ":fence").value_or("") == std::to_string(last));
  CHECK(srv.pttl(key + ":fence") == -1);
}

TEST_CASE("fencing tokens keep increasing after a restart that lost the counter") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  const std::string key = unique_key("fence-restart");
  auto l = make_lock(c.get(), key, 5000);
  uint64_t before = 0;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
    before = rlock_fencing_token(l.get());
    REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  }
  srv.restart();  // no persistence: the counter is gone
  REQUIRE_FALSE(srv.exists(key + ":fence"));
  // The first call after the restart reconnects by itself; it may fail once on the dead connection.
  int rc = rlock_acquire(l.get(), 2000);
  REQUIRE(rc == RLOCK_OK);
  CHECK(rlock_fencing_token(l.get()) > before);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("SCRIPT FLUSH on the server breaks nothing") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  auto l = make_lock(c.get(), unique_key("flush"), 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(srv.command("SCRIPT", "FLUSH").is("OK"));
  CHECK(rlock_extend(l.get(), 5000) == RLOCK_OK);
  REQUIRE(srv.command("SCRIPT", "FLUSH").is("OK"));
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  REQUIRE(srv.command("SCRIPT", "FLUSH").is("OK"));
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
}

TEST_CASE("a failed acquire leaves nothing behind") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("clean");
  srv.set(key, "someone-else");
  REQUIRE(srv.command("PEXPIRE", key, "5000").integer == 1);
  auto l = make_lock(c.get(), key, 5000);
  CHECK(rlock_acquire(l.get(), 30) == RLOCK_ERR_BUSY);
  CHECK(srv.get(key).value_or("") == "someone-else");
  srv.del(key);
}

TEST_CASE("a key of another type is a server error with Redis's message") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("wrongtype");
  REQUIRE(srv.command("HSET", key, "f", "v").integer == 1);
  auto l = make_lock(c.get(), key, 5000);
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_SERVER);
  CHECK(std::string(rlock_last_error()).find("WRONGTYPE") != std::string::npos);
  CHECK(srv.command("HGET", key, "f").str == "v");  // untouched
  srv.del(key);
}

TEST_CASE("the client reconnects by itself after a server restart") {
  RedisServer srv;
  auto c = make_client(srv.uri());
  auto l = make_lock(c.get(), unique_key("reconnect"), 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  REQUIRE(rlock_release(l.get()) == RLOCK_OK);
  srv.restart();
  // The next call connects again and succeeds. (If the loop had not yet read the old connection's
  // close when the call went out, that one attempt fails with RLOCK_ERR_IO; the wait retries it.)
  CHECK(rlock_acquire(l.get(), 1000) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  CHECK(rlock_client_ping(c.get()) == RLOCK_OK);
}

TEST_CASE("a password-protected server: right password works, none or a wrong one is RLOCK_ERR_AUTH") {
  RedisServerOptions o;
  o.extra_args = {"--requirepass", "s3cret"};
  RedisServer srv(o);
  const std::string port = std::to_string(srv.port());
  {
    auto c = make_client("redis://:s3cret@127.0.0.1:" + port);
    auto l = make_lock(c.get(), unique_key("auth"), 5000);
    CHECK(rlock_acquire(l.get(), 0) == RLOCK_OK);
    CHECK(rlock_release(l.get()) == RLOCK_OK);
  }
  for (std::string uri : {"redis://127.0.0.1:" + port, "redis://:wrong@127.0.0.1:" + port}) {
    INFO(uri);
    auto c = make_client(uri);
    auto l = make_lock(c.get(), unique_key("auth"), 5000);
    int rc = 0;
    // Not retried even with a wait: a bad password does not get better.
    auto ms = elapsed_ms([&] { rc = rlock_acquire(l.get(), 5000); });
    CHECK(rc == RLOCK_ERR_AUTH);
    CHECK(ms < 2000);
    CHECK(std::string(rlock_last_error()).size() > 0);
    CHECK(rlock_client_ping(c.get()) == RLOCK_ERR_AUTH);
  }
}

TEST_CASE("an ACL user with its password works; a wrong password is RLOCK_ERR_AUTH, a missing permission RLOCK_ERR_SERVER") {
  RedisServerOptions o;
  o.extra_args = {"--user", "alice", "on", ">pw1", "~*", "&*", "+@all",
                  "--user", "bob", "on", ">pw2", "~*", "+ping", "+get"};
  RedisServer srv(o);
  const std::string port = std::to_string(srv.port());
  {
    auto c = make_client("redis://alice:pw1@127.0.0.1:" + port);
    auto l = make_lock(c.get(), unique_key("acl"), 5000);
    CHECK(rlock_acquire(l.get(), 0) == RLOCK_OK);
    CHECK(rlock_release(l.get()) == RLOCK_OK);
  }
  {
    auto c = make_client("redis://alice:nope@127.0.0.1:" + port);
    auto l = make_lock(c.get(), unique_key("acl"), 5000);
    CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_AUTH);
    CHECK(std::string(rlock_last_error()).find("WRONGPASS") != std::string::npos);
  }
  {
    auto c = make_client("redis://bob:pw2@127.0.0.1:" + port);
    CHECK(rlock_client_ping(c.get()) == RLOCK_OK);
    auto l = make_lock(c.get(), unique_key("acl"), 5000);
    CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_SERVER);
    CHECK(std::string(rlock_last_error()).find("NOPERM") != std::string::npos);
  }
}

TEST_CASE("a read-only replica is RLOCK_ERR_SERVER with READONLY in the message") {
  auto &primary = shared_server();
  RedisServerOptions o;
  o.extra_args = {"--replicaof", "127.0.0.1", std::to_string(primary.port())};
  RedisServer replica(o);
  auto c = make_client(replica.uri());
  auto l = make_lock(c.get(), unique_key("readonly"), 5000);
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_ERR_SERVER);
  CHECK(std::string(rlock_last_error()).find("READONLY") != std::string::npos);
}

TEST_CASE("a database number in the URI selects that database") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri() + "/5");
  const std::string key = unique_key("db");
  auto l = make_lock(c.get(), key, 5000);
  REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
  CHECK_FALSE(srv.exists(key));  // the fixture talks to db 0
  CHECK(srv.command("SELECT", "5").is("OK"));
  CHECK(srv.exists(key));
  CHECK(srv.command("SELECT", "0").is("OK"));
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  auto bad = make_client(srv.uri() + "/99999");
  CHECK(rlock_client_ping(bad.get()) == RLOCK_ERR_SERVER);
}

TEST_CASE("a unix socket URI works") {
  RedisServerOptions o;
  o.unix_socket = true;
  RedisServer srv(o);
  auto c = make_client("unix://" + srv.unix_path());
  auto l = make_lock(c.get(), unique_key("unix"), 5000);
  CHECK(rlock_acquire(l.get(), 0) == RLOCK_OK);
  CHECK(rlock_release(l.get()) == RLOCK_OK);
  auto missing = make_client("unix://" + srv.dir() + "/nope.sock");
  CHECK(rlock_client_ping(missing.get()) == RLOCK_ERR_IO);
}

TEST_CASE("a host name is resolved without blocking and works") {
  auto &srv = shared_server();
  auto c = make_client("redis://localhost:" + std::to_string(srv.port()));
  // localhost may resolve to ::1 first where Redis only listens on 127.0.0.1; either it works or
  // it is a clean I/O error, never a hang.
  int rc = rlock_client_ping(c.get());
  CHECK((rc == RLOCK_OK || rc == RLOCK_ERR_IO));
}

TEST_CASE("the client may be freed while locks still use it") {
  auto &srv = shared_server();
  rlock_client *c = nullptr;
  REQUIRE(rlock_client_new(srv.uri().c_str(), &c) == RLOCK_OK);
  rlock *l = nullptr;
  const std::string key = unique_key("orphan");
  REQUIRE(rlock_new(c, key.c_str(), 5000, &l) == RLOCK_OK);
  rlock_client_free(c);
  CHECK(rlock_acquire(l, 0) == RLOCK_OK);
  CHECK(srv.exists(key));
  CHECK(rlock_extend(l, 3000) == RLOCK_OK);
  CHECK(rlock_release(l) == RLOCK_OK);
  rlock_free(l);
}

TEST_CASE("freeing a held lock releases it") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  const std::string key = unique_key("free-held");
  rlock *l = nullptr;
  REQUIRE(rlock_new(c.get(), key.c_str(), 60000, &l) == RLOCK_OK);
  REQUIRE(rlock_acquire(l, 0) == RLOCK_OK);
  REQUIRE(srv.exists(key));
  rlock_free(l);
  CHECK_FALSE(srv.exists(key));
}

TEST_CASE("bad input gets RLOCK_ERR_INVALID and a message, never a crash") {
  auto &srv = shared_server();
  rlock_client *c = reinterpret_cast<rlock_client *>(0x1);
  CHECK(rlock_client_new(nullptr, &c) == RLOCK_ERR_INVALID);
  CHECK(c == nullptr);
  CHECK(rlock_client_new(srv.uri().c_str(), nullptr) == RLOCK_ERR_INVALID);
  CHECK(rlock_client_new("redis://host?comand_timeout_ms=5", &c) == RLOCK_ERR_INVALID);
  CHECK(std::string(rlock_last_error()).find("comand_timeout_ms") != std::string::npos);
  CHECK(rlock_client_new("mysql://x", &c) == RLOCK_ERR_INVALID);
  CHECK(rlock_client_ping(nullptr) == RLOCK_ERR_INVALID);

  auto client = make_client(srv.uri());
  rlock *l = reinterpret_cast<rlock *>(0x1);
  CHECK(rlock_new(nullptr, "k", 1000, &l) == RLOCK_ERR_INVALID);
  CHECK(l == nullptr);
  CHECK(rlock_new(client.get(), nullptr, 1000, &l) == RLOCK_ERR_INVALID);
  CHECK(rlock_new(client.get(), "", 1000, &l) == RLOCK_ERR_INVALID);
  CHECK(std::string(rlock_last_error()).find("empty") != std::string::npos);
  CHECK(rlock_new(client.get(), "k", 0, &l) == RLOCK_ERR_INVALID);
  CHECK(rlock_new(client.get(), "k", -5, &l) == RLOCK_ERR_INVALID);
  CHECK(rlock_new(client.get(), "k", 1000, nullptr) == RLOCK_ERR_INVALID);
  CHECK(rlock_quorum_new(nullptr, 1, "k", 1000, &l) == RLOCK_ERR_INVALID);
  rlock_client *none[1] = {nullptr};
  CHECK(rlock_quorum_new(none, 1, "k", 1000, &l) == RLOCK_ERR_INVALID);
  rlock_client *one[1] = {client.get()};
  CHECK(rlock_quorum_new(one, 0, "k", 1000, &l) == RLOCK_ERR_INVALID);
  rlock_client *twice[2] = {client.get(), client.get()};
  CHECK(rlock_quorum_new(twice, 2, "k", 1000, &l) == RLOCK_ERR_INVALID);
  auto other = make_client(srv.uri());
  rlock_client *same_addr[2] = {client.get(), other.get()};
  CHECK(rlock_quorum_new(same_addr, 2, "k", 1000, &l) == RLOCK_ERR_INVALID);

  CHECK(rlock_acquire(nullptr, 0) == RLOCK_ERR_INVALID);
  CHECK(rlock_release(nullptr) == RLOCK_ERR_INVALID);
  CHECK(rlock_extend(nullptr, 10) == RLOCK_ERR_INVALID);
  CHECK(rlock_validity_ms(nullptr) == 0);
  CHECK(rlock_fencing_token(nullptr) == 0);
  CHECK(rlock_server_count(nullptr) == 0);
  CHECK(rlock_server_status(nullptr, 0, nullptr, 0) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_retry_delay_ms(nullptr, 1, 2) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_drift(nullptr, 1, 2) == RLOCK_ERR_INVALID);
  rlock_free(nullptr);
  rlock_client_free(nullptr);

  auto lk = make_lock(client.get(), unique_key("bad"), 1000);
  CHECK(rlock_extend(lk.get(), 0) == RLOCK_ERR_INVALID);
  CHECK(rlock_extend(lk.get(), -1) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_retry_delay_ms(lk.get(), 0, 5) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_retry_delay_ms(lk.get(), 10, 5) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_retry_delay_ms(lk.get(), 1, 5) == RLOCK_OK);
  CHECK(rlock_set_drift(lk.get(), -1, 0) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_drift(lk.get(), 0, -1) == RLOCK_ERR_INVALID);
  CHECK(rlock_set_drift(lk.get(), 0, 0) == RLOCK_OK);
  CHECK(rlock_server_status(lk.get(), 1, nullptr, 0) == RLOCK_ERR_INVALID);
  char small[4];
  CHECK(rlock_server_status(lk.get(), 0, small, sizeof small) == RLOCK_SERVER_PENDING);
  CHECK(std::strlen(small) == 3);  // truncated, NUL-terminated
}

TEST_CASE("status texts and names are static and never NULL") {
  for (int s = -20; s <= 5; ++s) {
    REQUIRE(rlock_strerror(s) != nullptr);
    REQUIRE(rlock_err_name(s) != nullptr);
  }
  CHECK(std::string(rlock_err_name(RLOCK_ERR_NO_QUORUM)) == "RLOCK_ERR_NO_QUORUM");
  CHECK(std::string(rlock_version()) == RLOCK_VERSION_STRING);
  CHECK(rlock_version_number() == RLOCK_VERSION_NUMBER);
}

TEST_CASE("keys with any bytes-safe characters work") {
  auto &srv = shared_server();
  auto c = make_client(srv.uri());
  for (std::string key : {std::string("spaces in key"), std::string("{tag}:x"), std::string("ünïcødé"),
                          std::string(2000, 'k')}) {
    auto l = make_lock(c.get(), key, 5000);
    REQUIRE(rlock_acquire(l.get(), 0) == RLOCK_OK);
    CHECK(srv.exists(key));
    REQUIRE(rlock_release(l.get()) == RLOCK_OK);
    CHECK_FALSE(srv.exists(key));
  }
}
