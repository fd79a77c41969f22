// URI parsing: every accepted form, and a clear RLOCK_ERR_INVALID for everything else.
#include <catch2/catch.hpp>

#include "status.h"
#include "uri.h"

using rlk::parse_uri;

static int status_of(const std::string &uri) {
  try {
    parse_uri(uri);
    return RLOCK_OK;
  } catch (const rlk::Error &e) {
    return e.status();
  }
}

TEST_CASE("a plain redis URI gives host, default port, db 0 and default timeouts") {
  auto a = parse_uri("redis://127.0.0.1");
  CHECK_FALSE(a.is_unix);
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 6379);
  CHECK(a.db == 0);
  CHECK_FALSE(a.has_password);
  CHECK(a.connect_timeout.count() == 1000);
  CHECK(a.command_timeout.count() == 500);
  CHECK(a.display() == "127.0.0.1:6379");
}

TEST_CASE("port, db, credentials and timeouts are all read") {
  auto a = parse_uri("redis://alice:s%40cret@redis.example:6380/3?connect_timeout_ms=250&command_timeout_ms=75");
  CHECK(a.host == "redis.example");
  CHECK(a.port == 6380);
  CHECK(a.db == 3);
  CHECK(a.user == "alice");
  CHECK(a.password == "s@cret");
  CHECK(a.has_password);
  CHECK(a.connect_timeout.count() == 250);
  CHECK(a.command_timeout.count() == 75);
}

TEST_CASE("a password without a user authenticates as the default user") {
  auto a = parse_uri("redis://:pw@localhost:1234");
  CHECK(a.user.empty());
  CHECK(a.password == "pw");
  CHECK(a.has_password);
}

TEST_CASE("bracketed IPv6 addresses are accepted") {
  auto a = parse_uri("redis://[::1]:7000");
  CHECK(a.host == "::1");
  CHECK(a.port == 7000);
  CHECK(a.display() == "[::1]:7000");
}

TEST_CASE("unix socket URIs take db, user and password as query parameters") {
  auto a = parse_uri("unix:///run/redis/redis.sock?db=2&user=bob&password=x%26y&command_timeout_ms=9");
  CHECK(a.is_unix);
  CHECK(a.unix_path == "/run/redis/redis.sock");
  CHECK(a.db == 2);
  CHECK(a.user == "bob");
  CHECK(a.password == "x&y");
  CHECK(a.command_timeout.count() == 9);
  CHECK(a.display() == "unix:/run/redis/redis.sock");
}

TEST_CASE("malformed URIs are RLOCK_ERR_INVALID") {
  const char *bad[] = {
      "",
      "127.0.0.1:6379",
      "http://127.0.0.1",
      "rediss://127.0.0.1",
      "redis://",
      "redis://:6379",
      "redis://host:",
      "redis://host:0",
      "redis://host:65536",
      "redis://host:12ab",
      "redis://host/abc",
      "redis://host/-1",
      "redis://host?comand_timeout_ms=5",  // typo: unknown parameters are errors
      "redis://host?command_timeout_ms=0",
      "redis://host?command_timeout_ms=-5",
      "redis://host?command_timeout_ms=99999999999",
      "redis://host?command_timeout_ms=5&command_timeout_ms=6",
      "redis://host?db=1",  // db goes in the path for redis://
      "redis://host?",
      "redis://host?connect_timeout_ms",
      "redis://secret@host",  // must be :secret@
      "redis://[::1",
      "redis://[]:5",
      "redis://ho st",
      "redis://host#frag",
      "redis://a:%zz@host",
      "redis://a:%4@host",
      "unix://relative.sock",
      "unix:///tmp/s.sock?db=x",
      "unix:///tmp/s.sock?user=bob",  // a user without a password
      "unix:///tmp/s.sock?port=1",
  };
  for (const char *u : bad) {
    INFO("uri: " << u);
    CHECK(status_of(u) == RLOCK_ERR_INVALID);
  }
}

TEST_CASE("an unknown query parameter names itself in the message") {
  try {
    parse_uri("redis://h?comand_timeout_ms=5");
    FAIL("accepted");
  } catch (const rlk::Error &e) {
    CHECK(std::string(e.what()).find("comand_timeout_ms") != std::string::npos);
  }
}
