// Tokens, SHA-1 names of the scripts, status texts.
#include <catch2/catch.hpp>

#include <set>

#include "rlock.h"
#include "scripts.h"
#include "sha1.h"
#include "status.h"
#include "token.h"

TEST_CASE("sha1 matches the FIPS 180 test vectors") {
  CHECK(rlk::sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(rlk::sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK(rlk::sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  CHECK(rlk::sha1_hex(std::string(1000000, 'a')) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST_CASE("tokens are 128-bit hex and unique") {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string t = rlk::new_token();
    REQUIRE(t.size() == 32);
    REQUIRE(t.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(t);
  }
  CHECK(seen.size() == 10000);
}

TEST_CASE("each script has a distinct name") {
  std::set<std::string> shas{rlk::acquire_script().sha, rlk::release_script().sha,
                             rlk::extend_script().sha, rlk::raise_script().sha};
  CHECK(shas.size() == 4);
  CHECK(rlk::fence_key("orders") == "orders:fence");
}

TEST_CASE("every status has a name and a text, unknown ones too") {
  for (int s = RLOCK_ERR_CANCELED; s <= RLOCK_OK; ++s) {
    CHECK(std::string(rlk::err_name(s)).rfind("RLOCK_", 0) == 0);
    CHECK(std::string(rlk::err_name(s)) != "RLOCK_ERR_UNKNOWN");
    CHECK(std::string(rlk::status_text(s)).size() > 3);
  }
  CHECK(std::string(rlk::err_name(-999)) == "RLOCK_ERR_UNKNOWN");
  CHECK(std::string(rlk::status_text(12345)) == "unknown rlock status code");
}
