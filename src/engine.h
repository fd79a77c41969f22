// The lock engine: one implementation of acquire / release / extend / renewal over N servers,
// driven on the library's loop. A single-instance lock is the N = 1 case of the same code. Each
// step fans one Lua script out to all servers at once (fan_out) and lets algo::decide() say when the
// outcome is known.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "algo.h"
#include "conn.h"
#include "loop.h"
#include "uri.h"

namespace rlk {

struct RoundResult;  // engine.cpp

// One Redis server as seen by the API: its connection on the loop, shared by every lock built on
// it, and (made on first use) a second connection subscribed to release notifications.
class Client {
 public:
  Client(Loop &loop, ServerAddress addr);
  ~Client();  // asks the connections to close once their requests are done
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;
  const std::shared_ptr<Conn> &conn() const { return conn_; }
  const ServerAddress &address() const { return conn_->address(); }
  Conn &subscriber();  // loop thread only

 private:
  Loop &loop_;
  std::shared_ptr<Conn> conn_;
  std::shared_ptr<Conn> sub_;  // loop thread only
};

// What one server answered in the last call of a lock.
struct ServerReport {
  int status = RLOCK_SERVER_PENDING;
  const char *what = nullptr;  // static text of a success ("granted"), so the hot path builds none
  std::string detail;          // failures: "<address>: <what happened>"
};

class LockEngine : public std::enable_shared_from_this<LockEngine> {
 public:
  using Done = std::function<void(int status, const std::string &detail)>;
  using Lost = std::function<void(int status, const std::string &detail)>;

  LockEngine(std::vector<std::shared_ptr<Client>> servers, std::string key,
             std::chrono::milliseconds ttl);
  ~LockEngine();  // loop thread (the API hands the last reference to the loop)

  // Loop thread only. done runs exactly once, on the loop thread. One call at a time.
  void acquire(int64_t wait_ms, Done done);
  void release(Done done);
  void extend(std::chrono::milliseconds ttl, Done done);
  // Cancels a pending acquire (its done gets RLOCK_ERR_CANCELED), lets a pending release or extend
  // finish, stops renewal and callbacks for good, then runs `then`.
  void shut_down(std::function<void()> then);
  // Auto-renewal; on_lost may be empty.
  void set_auto_renew(bool on, Lost on_lost);

  // Any thread (they read atomics).
  int64_t validity_ms() const;
  uint64_t fencing_token() const;
  bool held() const { return validity_ms() > 0; }

  // Between calls, from the thread that owns the handle.
  size_t server_count() const { return conns_.size(); }
  const ServerReport &report(size_t i) const { return reports_[i]; }
  std::string server_address(size_t i) const { return conns_[i]->address().display(); }
  std::string report_text(size_t i) const;  // "<address>: <what it answered>"
  void set_backoff(algo::Backoff b) { backoff_ = b; }
  void set_drift(algo::Drift d) { drift_ = d; }

 private:
  struct Acquiring;  // state of one rlock_acquire call across its attempts
  using Clock = algo::Clock;

  void begin(Done done);
  void finish(int status, const std::string &detail);

  void attempt(std::shared_ptr<Acquiring> op);
  void on_acquire_votes(std::shared_ptr<Acquiring> op, const algo::Tally &t,
                        std::shared_ptr<std::vector<int64_t>> fences);
  void finish_acquire(std::shared_ptr<Acquiring> op, uint64_t fence);
  void attempt_failed(std::shared_ptr<Acquiring> op, int status);
  void end_acquire(std::shared_ptr<Acquiring> op, int status, const std::string &detail);
  void on_release_notice(std::shared_ptr<Acquiring> op);
  void listen_for_release();

  void undo(const std::string &token, const std::vector<size_t> &servers);
  void set_held(Clock::time_point valid_until, uint64_t fence);
  void clear_held();
  void reset_reports();
  std::vector<int> report_statuses() const;
  std::string summary(int status) const;

  using ExtendThen = std::function<void(const RoundResult &, Clock::time_point now,
                                        std::chrono::microseconds validity)>;
  void extend_round(std::chrono::milliseconds ttl, ExtendThen then);
  void keep_earlier_expiry(Clock::time_point bound);

  // Renewal.
  void schedule_renewal(std::chrono::milliseconds in);
  void renew();
  void arm_loss_timer();
  void lost(int status, const std::string &detail);
  Timer &timer(std::unique_ptr<Timer> &t);

  std::vector<std::shared_ptr<Client>> clients_;  // keep the connections alive
  std::vector<std::shared_ptr<Conn>> conns_;
  std::string key_, fence_key_, channel_, waiters_key_;
  std::string in_order_;  // "1": waiters are served in order and handed the lock by the release
  std::chrono::milliseconds ttl_;
  algo::Drift drift_;
  algo::Backoff backoff_;
  std::vector<ServerReport> reports_;

  // Loop-thread state.
  std::string token_;         // owner token of the current acquisition, "" when none
  std::string unused_token_;  // token of the last failed acquire call, reused by the next one
  uint64_t epoch_ = 0;        // bumped whenever the held state changes hands: stale renewals stop
  Done done_;                 // completion of the call in progress
  std::shared_ptr<Acquiring> acquiring_;
  std::function<void()> after_call_;  // run once the call in progress has completed
  bool shut_down_ = false;
  bool renew_ = false;
  Lost on_lost_;
  struct RenewError {
    int status = RLOCK_OK;
    std::string detail;
  } last_renew_error_;                // why the latest renewal failed, for the loss callback
  bool listening_ = false;            // subscribed to release notices (kept until shut down)
  std::vector<uint64_t> listeners_;   // one per client, in clients_ order
  std::unique_ptr<Timer> retry_timer_, renew_timer_, loss_timer_;
  std::mt19937_64 rng_;

  // Published state: read by rlock_validity_ms / rlock_fencing_token from any thread.
  std::atomic<int64_t> valid_until_us_{0};  // steady-clock microseconds; 0: not held
  std::atomic<uint64_t> fence_{0};
};

}  // namespace rlk
