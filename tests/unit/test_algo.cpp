// The lock algorithm's pure parts: quorum decisions, validity and drift, backoff, failure statuses.
#include <catch2/catch.hpp>

#include "algo.h"

using namespace rlk::algo;
using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST_CASE("quorum is a strict majority") {
  CHECK(quorum(1) == 1);
  CHECK(quorum(2) == 2);
  CHECK(quorum(3) == 2);
  CHECK(quorum(4) == 3);
  CHECK(quorum(5) == 3);
}

TEST_CASE("decide waits until the outcome is certain and no longer") {
  Tally t{5, 0, 0, 0};
  CHECK(decide(t) == Decision::kUndecided);
  t.yes = 2;
  CHECK(decide(t) == Decision::kUndecided);
  t.yes = 3;
  CHECK(decide(t) == Decision::kReached);
  Tally f{5, 2, 2, 0};
  CHECK(decide(f) == Decision::kUndecided);  // the fifth could still make it 3
  f.failed = 1;
  CHECK(decide(f) == Decision::kImpossible);
  Tally single{1, 0, 0, 1};
  CHECK(decide(single) == Decision::kImpossible);
}

TEST_CASE("validity is ttl minus elapsed minus drift") {
  auto t0 = Clock::now();
  Drift d{10000, 2};  // 1% + 2 ms
  CHECK(drift(milliseconds(1000), d) == microseconds(12000));
  CHECK(validity(t0, t0 + milliseconds(100), milliseconds(1000), d) == microseconds(888000));
  CHECK(validity(t0, t0 + milliseconds(990), milliseconds(1000), d) < microseconds(0));
  Drift none{0, 0};
  CHECK(validity(t0, t0, milliseconds(5), none) == microseconds(5000));
}

TEST_CASE("backoff stays within its exponential cap and the configured maximum") {
  std::mt19937_64 rng(42);
  Backoff b{milliseconds(2), milliseconds(50)};
  for (unsigned attempt = 0; attempt < 12; ++attempt) {
    int64_t cap_us = std::min<int64_t>(2000LL << attempt, 50000);
    int64_t seen_max = 0;
    for (int i = 0; i < 2000; ++i) {
      auto d = backoff_delay(b, attempt, rng).count();
      REQUIRE(d >= 0);
      REQUIRE(d <= cap_us);
      seen_max = std::max(seen_max, d);
    }
    CHECK(seen_max > cap_us / 2);  // full jitter actually spreads over the range
  }
}

TEST_CASE("full jitter de-synchronises contenders") {
  std::mt19937_64 a(1), b(2);
  Backoff bo{milliseconds(2), milliseconds(50)};
  int same = 0;
  for (int i = 0; i < 100; ++i) same += backoff_delay(bo, 3, a) == backoff_delay(bo, 3, b);
  CHECK(same < 5);
}

TEST_CASE("only transient failures are retried") {
  CHECK(retryable(RLOCK_ERR_BUSY));
  CHECK(retryable(RLOCK_ERR_TIMEOUT));
  CHECK(retryable(RLOCK_ERR_IO));
  CHECK(retryable(RLOCK_ERR_SERVER));
  CHECK(retryable(RLOCK_ERR_NO_QUORUM));
  CHECK_FALSE(retryable(RLOCK_ERR_INVALID));
  CHECK_FALSE(retryable(RLOCK_ERR_AUTH));
  CHECK_FALSE(retryable(RLOCK_ERR_NOMEM));
}

TEST_CASE("a single server's failure is reported as itself, never as no quorum") {
  CHECK(failure_status({RLOCK_ERR_BUSY}, RLOCK_ERR_BUSY) == RLOCK_ERR_BUSY);
  CHECK(failure_status({RLOCK_ERR_IO}, RLOCK_ERR_BUSY) == RLOCK_ERR_IO);
  CHECK(failure_status({RLOCK_ERR_TIMEOUT}, RLOCK_ERR_BUSY) == RLOCK_ERR_TIMEOUT);
  CHECK(failure_status({RLOCK_ERR_AUTH}, RLOCK_ERR_BUSY) == RLOCK_ERR_AUTH);
  CHECK(failure_status({RLOCK_ERR_SERVER}, RLOCK_ERR_NOT_HELD) == RLOCK_ERR_SERVER);
  CHECK(failure_status({RLOCK_OK}, RLOCK_ERR_BUSY) == RLOCK_ERR_TIMEOUT);  // granted too late
}

TEST_CASE("quorum failures say busy, not-held, auth or no quorum as appropriate") {
  const int P = RLOCK_SERVER_PENDING;
  CHECK(failure_status({RLOCK_OK, RLOCK_ERR_BUSY, RLOCK_ERR_BUSY}, RLOCK_ERR_BUSY) == RLOCK_ERR_BUSY);
  CHECK(failure_status({RLOCK_ERR_IO, RLOCK_ERR_IO, P}, RLOCK_ERR_BUSY) == RLOCK_ERR_NO_QUORUM);
  CHECK(failure_status({RLOCK_ERR_IO, RLOCK_ERR_TIMEOUT, RLOCK_OK}, RLOCK_ERR_BUSY) == RLOCK_ERR_NO_QUORUM);
  CHECK(failure_status({RLOCK_ERR_AUTH, RLOCK_ERR_AUTH, RLOCK_ERR_AUTH}, RLOCK_ERR_BUSY) == RLOCK_ERR_AUTH);
  CHECK(failure_status({RLOCK_ERR_NOT_HELD, RLOCK_ERR_NOT_HELD, RLOCK_OK}, RLOCK_ERR_NOT_HELD) == RLOCK_ERR_NOT_HELD);
  CHECK(failure_status({RLOCK_OK, RLOCK_OK, RLOCK_OK}, RLOCK_ERR_BUSY) == RLOCK_ERR_TIMEOUT);
  // Refusals and failures together: neither alone explains it.
  CHECK(failure_status({RLOCK_OK, RLOCK_ERR_IO, RLOCK_ERR_BUSY}, RLOCK_ERR_BUSY) == RLOCK_ERR_NO_QUORUM);
  CHECK(failure_status({P, RLOCK_ERR_IO, RLOCK_ERR_BUSY}, RLOCK_ERR_BUSY) == RLOCK_ERR_NO_QUORUM);
  CHECK(failure_status({P, RLOCK_ERR_BUSY, RLOCK_ERR_BUSY, P, P}, RLOCK_ERR_BUSY) == RLOCK_ERR_NO_QUORUM);
  CHECK(failure_status({P, RLOCK_ERR_BUSY, RLOCK_ERR_BUSY, RLOCK_ERR_BUSY, P}, RLOCK_ERR_BUSY) == RLOCK_ERR_BUSY);
}
