// The lock algorithm as plain functions over plain data: quorum counting, validity and drift, retry
// pacing, and how per-server answers add up to one status. No I/O here; engine.cpp drives it.
// "What decides whether we hold the lock" is: decide() reaching kReached, then validity() > 0.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "rlock.h"

namespace rlk {
namespace algo {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Majority of n servers.
constexpr size_t quorum(size_t n) { return n / 2 + 1; }

// Answers collected so far in one fan-out. yes: granted/deleted/extended; no: the server answered
// that someone else holds it (acquire) or that it does not hold our token (release/extend); failed:
// no usable answer (timeout, I/O, server error, auth).
struct Tally {
  size_t n = 0;
  size_t yes = 0;
  size_t no = 0;
  size_t failed = 0;
};

enum class Decision { kUndecided, kReached, kImpossible };

// Stops waiting as soon as the outcome is certain: a quorum said yes, or too many said no or failed
// for a quorum to remain possible.
Decision decide(const Tally &t);

struct Drift {
  int64_t ppm = 10000;  // 1% of the TTL
  int64_t extra_ms = 2;
};

// Clock drift allowance for a lease of ttl.
microseconds drift(milliseconds ttl, const Drift &d);

// Remaining ownership at `now` of a lease of `ttl` granted by requests sent at `start`:
// ttl - (now - start) - drift. May be zero or negative: then the lock is not held.
microseconds validity(Clock::time_point start, Clock::time_point now, milliseconds ttl,
                      const Drift &d);

// Retry pacing with exponential backoff and full jitter: uniform in [0, min(max, base * 2^attempt)].
struct Backoff {
  milliseconds base{2};
  milliseconds max{50};
};
microseconds backoff_delay(const Backoff &b, unsigned attempt, std::mt19937_64 &rng);

// Whether rlock_acquire with a wait keeps trying after a failed attempt with this status.
bool retryable(int status);

// The status of an operation that did not reach a quorum, from the per-server statuses of the
// attempt (RLOCK_OK for a yes, `refused` for a no: RLOCK_ERR_BUSY for acquire, RLOCK_ERR_NOT_HELD
// for release/extend; an error code for a failure; RLOCK_SERVER_PENDING for no answer).
//  - one server: its own status (a single-instance lock never reports RLOCK_ERR_NO_QUORUM);
//  - so many refusals that no quorum was possible: `refused`;
//  - a quorum said yes (but the validity was used up): RLOCK_ERR_TIMEOUT;
//  - every failed server failed with the same non-retryable status (AUTH, INVALID): that status;
//  - otherwise (failures, or failures and refusals together): RLOCK_ERR_NO_QUORUM.
int failure_status(const std::vector<int> &server_status, int refused);

}  // namespace algo
}  // namespace rlk
