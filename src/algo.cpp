#include "algo.h"

#include <algorithm>

namespace rlk {
namespace algo {

Decision decide(const Tally &t) {
  const size_t q = quorum(t.n);
  if (t.yes >= q) return Decision::kReached;
  if (t.no + t.failed > t.n - q) return Decision::kImpossible;
  return Decision::kUndecided;
}

microseconds drift(milliseconds ttl, const Drift &d) {
  // ttl * ppm / 1e6 in microseconds = ttl_ms * ppm / 1000.
  return microseconds(ttl.count() * d.ppm / 1000) + milliseconds(d.extra_ms);
}

microseconds validity(Clock::time_point start, Clock::time_point now, milliseconds ttl,
                      const Drift &d) {
  auto elapsed = std::chrono::duration_cast<microseconds>(now - start);
  return microseconds(ttl) - elapsed - drift(ttl, d);
}

microseconds backoff_delay(const Backoff &b, unsigned attempt, std::mt19937_64 &rng) {
  const int64_t base_us = std::chrono::duration_cast<microseconds>(b.base).count();
  const int64_t max_us = std::chrono::duration_cast<microseconds>(b.max).count();
  int64_t cap = base_us;
  for (unsigned i = 0; i < attempt && cap < max_us; ++i) cap *= 2;
  cap = std::min(cap, max_us);
  std::uniform_int_distribution<int64_t> dist(0, cap);
  return microseconds(dist(rng));
}

bool retryable(int status) {
  switch (status) {
    case RLOCK_ERR_BUSY:
    case RLOCK_ERR_TIMEOUT:
    case RLOCK_ERR_IO:
    case RLOCK_ERR_SERVER:
    case RLOCK_ERR_NO_QUORUM:
    case RLOCK_ERR_NOT_HELD:
      return true;
    default:
      return false;
  }
}

int failure_status(const std::vector<int> &server_status, int refused) {
  const size_t n = server_status.size();
  if (n == 1) {
    int s = server_status[0];
    return (s == RLOCK_OK || s == RLOCK_SERVER_PENDING) ? RLOCK_ERR_TIMEOUT : s;
  }
  size_t yes = 0, no = 0;
  int common_failure = 0;
  bool mixed = false;
  for (int s : server_status) {
    if (s == RLOCK_OK) {
      ++yes;
    } else if (s == refused) {
      ++no;
    } else if (s != RLOCK_SERVER_PENDING) {
      if (common_failure == 0) common_failure = s;
      else if (common_failure != s) mixed = true;
    }
  }
  // Enough refusals that no quorum was possible whatever the others said: contention (acquire) or
  // lost (release, extend).
  if (no > n - quorum(n)) return refused;
  // A quorum granted, but the attempt used up the validity.
  if (yes >= quorum(n)) return RLOCK_ERR_TIMEOUT;
  if (!mixed && (common_failure == RLOCK_ERR_AUTH || common_failure == RLOCK_ERR_INVALID))
    return common_failure;
  return RLOCK_ERR_NO_QUORUM;
}

}  // namespace algo
}  // namespace rlk
