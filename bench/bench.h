// rlock-bench: shared pieces of the benchmark program (see rlock_bench.cpp for the scenarios and
// contention.cpp for S4).
#pragma once

#include <rlock.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "helpers.h"
#include "stats.h"

namespace bench {

inline const char *kHost = "127.0.0.1";

// ---- rlock handles ------------------------------------------------------------------------------

// The same RAII handles as the tests use (tests/helpers.h).
using rlock_test::ClientPtr;
using rlock_test::LockPtr;

inline std::string uri_for(int port) { return "redis://127.0.0.1:" + std::to_string(port); }

inline ClientPtr make_client(int port) {
  rlock_client *c = nullptr;
  int rc = rlock_client_new(uri_for(port).c_str(), &c);
  if (rc != RLOCK_OK)
    throw std::runtime_error("rlock_client_new: " + std::string(rlock_err_name(rc)) + " " +
                             rlock_last_error());
  rc = rlock_client_ping(c);
  if (rc != RLOCK_OK) {
    rlock_client_free(c);
    throw std::runtime_error("rlock_client_ping port " + std::to_string(port) + ": " +
                             rlock_err_name(rc) + " " + rlock_last_error());
  }
  return ClientPtr(c);
}

// A lock over the given clients: rlock_new for one, rlock_quorum_new for several.
inline LockPtr make_lock(const std::vector<ClientPtr> &clients, const std::string &key,
                         int64_t ttl_ms) {
  std::vector<rlock_client *> raw;
  for (auto &c : clients) raw.push_back(c.get());
  rlock *l = nullptr;
  int rc = raw.size() == 1 ? rlock_new(raw[0], key.c_str(), ttl_ms, &l)
                           : rlock_quorum_new(raw.data(), raw.size(), key.c_str(), ttl_ms, &l);
  if (rc != RLOCK_OK)
    throw std::runtime_error("rlock_new: " + std::string(rlock_err_name(rc)) + " " +
                             rlock_last_error());
  return LockPtr(l);
}

// "RLOCK_ERR_BUSY (detail)" for an error message.
inline std::string describe(int rc) {
  std::string d = rlock_last_error();
  return std::string(rlock_err_name(rc)) + (d.empty() ? "" : " (" + d + ")");
}

// ---- results ------------------------------------------------------------------------------------

// What the console summary needs of a result; the JSON record carries everything.
struct Result {
  std::string id;
  std::string baseline;  // id of the record it is compared with, "" for a baseline itself
  bool throughput = false;  // ratio of ops_per_s (higher is better) rather than of median latency
  Summary latency;          // acquire+release (S1-S3, S5) or waiter wait (S4), microseconds
  double ops_per_s = 0;
  long long errors = 0;
  long long overlaps = 0;
  std::string note;  // extra text for the console line
  JsonObject json;   // the full record
};

// Common fields of every record.
inline JsonObject record_head(const std::string &id, const std::string &scenario,
                              const std::string &impl, const std::string &variant, int servers,
                              int proxy_latency_ms) {
  JsonObject o;
  o.str("kind", "result")
      .str("id", id)
      .str("scenario", scenario)
      .str("impl", impl)
      .str("variant", variant)
      .integer("servers", servers)
      .integer("proxy_latency_ms", proxy_latency_ms);
  return o;
}

// ---- S4 (contention.cpp) ---------------------------------------------------------------------------

struct ContentionParams {
  std::string impl;         // "rlock" or "raw"
  std::vector<int> ports;   // 1 or 3 servers
  std::string retry;        // rlock: "default" or "BASE:MAX" (ms); raw: ignored (spins)
  double seconds = 10;
  int processes = 4;
  int64_t ttl_ms = 5000;
  int64_t wait_ms = 10000;  // rlock_acquire's wait
};

// Runs one S4 variant: spawns `processes` copies of this program in worker mode on one key.
Result run_contention(const ContentionParams &p, const std::string &id, const std::string &baseline);

// The worker side; argv as built by run_contention. Returns the process exit status.
int contention_worker_main(int argc, char **argv);

}  // namespace bench
