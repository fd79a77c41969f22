#include "engine.h"

#include <algorithm>
#include <limits>

#include "scripts.h"
#include "status.h"
#include "token.h"

namespace rlk {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// ---- Client -------------------------------------------------------------------------------------

Client::Client(Loop &loop, ServerAddress addr) : loop_(loop), conn_(Conn::create(loop, std::move(addr))) {}

Client::~Client() {
  auto c = conn_;
  if (loop_.on_loop_thread())
    c->shutdown();  // the loop may be stopping: do not queue work on it
  else
    loop_.post([c] { c->shutdown(); });
}

// ---- Round: one script sent to several servers at once ---------------------------------------------

namespace {

enum class Vote { kYes, kNo, kFailed };

// Sends one script to `targets` at the same time and calls done(tally) once, as soon as
// algo::decide() says the outcome is known (answers that arrive later are not looked at), or when
// every target answered. `initial` carries votes already known (e.g. from an earlier round).
struct Round {
  using Classify = std::function<Vote(size_t server, Result &&r)>;
  using Finish = std::function<void(const algo::Tally &)>;

  static void run(const std::vector<std::shared_ptr<Conn>> &conns, const std::vector<size_t> &targets,
                  const Script &script, const std::vector<std::string> &keys,
                  const std::vector<std::string> &args, algo::Tally initial, Classify classify,
                  Finish done) {
    struct State {
      algo::Tally tally;
      size_t left;
      bool finished = false;
      Classify classify;
      Finish done;
    };
    auto st = std::make_shared<State>();
    st->tally = initial;
    st->left = targets.size();
    st->classify = std::move(classify);
    st->done = std::move(done);
    if (targets.empty()) {
      st->finished = true;
      st->done(st->tally);
      return;
    }
    for (size_t i : targets) {
      conns[i]->eval(script, keys, args, [st, i](Result &&r) {
        --st->left;
        if (st->finished) return;
        switch (st->classify(i, std::move(r))) {
          case Vote::kYes: ++st->tally.yes; break;
          case Vote::kNo: ++st->tally.no; break;
          case Vote::kFailed: ++st->tally.failed; break;
        }
        if (algo::decide(st->tally) != algo::Decision::kUndecided || st->left == 0) {
          st->finished = true;
          st->done(st->tally);
        }
      });
    }
  }
};

std::vector<size_t> all_servers(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

int64_t now_us() {
  return duration_cast<microseconds>(algo::Clock::now().time_since_epoch()).count();
}

}  // namespace

// ---- LockEngine -----------------------------------------------------------------------------------

struct LockEngine::Acquiring {
  Done done;
  Clock::time_point deadline;
  bool forever = false;
  unsigned attempts = 0;
  Clock::time_point start;  // of the current attempt, read before anything was sent
};

LockEngine::LockEngine(std::vector<std::shared_ptr<Client>> servers, std::string key,
                       milliseconds ttl)
    : clients_(std::move(servers)),
      key_(std::move(key)),
      fence_key_(rlk::fence_key(key_)),
      ttl_(ttl),
      reports_(clients_.size()),
      rng_(std::random_device{}()) {
  for (auto &c : clients_) conns_.push_back(c->conn());
}

LockEngine::~LockEngine() = default;

int64_t LockEngine::validity_ms() const {
  int64_t until = valid_until_us_.load(std::memory_order_acquire);
  if (until == 0) return 0;
  int64_t left = until - now_us();
  return left > 0 ? left / 1000 : 0;
}

uint64_t LockEngine::fencing_token() const {
  return validity_ms() > 0 ? fence_.load(std::memory_order_acquire) : 0;
}

void LockEngine::set_held(Clock::time_point valid_until, uint64_t fence) {
  fence_.store(fence, std::memory_order_release);
  int64_t us = duration_cast<microseconds>(valid_until.time_since_epoch()).count();
  valid_until_us_.store(us == 0 ? 1 : us, std::memory_order_release);
}

void LockEngine::clear_held() {
  valid_until_us_.store(0, std::memory_order_release);
  fence_.store(0, std::memory_order_release);
  token_.clear();
}

void LockEngine::reset_reports() {
  for (auto &r : reports_) r = ServerReport{};
}

std::vector<int> LockEngine::report_statuses() const {
  std::vector<int> v;
  for (auto &r : reports_) v.push_back(r.status);
  return v;
}

// The message for a failed call: the server's own detail for a single server, or one line per
// server for a quorum.
std::string LockEngine::summary(int status) const {
  if (reports_.size() == 1) return reports_[0].detail;
  size_t ok = 0;
  for (auto &r : reports_) ok += r.status == RLOCK_OK;
  std::string s = std::string(rlk::status_text(status)) + " (" + std::to_string(ok) + " of " +
                  std::to_string(reports_.size()) + " servers agreed, quorum is " +
                  std::to_string(algo::quorum(reports_.size())) + ")";
  for (size_t i = 0; i < reports_.size(); ++i) {
    s += i == 0 ? ": " : "; ";
    s += reports_[i].status == RLOCK_SERVER_PENDING
             ? conns_[i]->address().display() + ": no answer needed"
             : reports_[i].detail;
  }
  return s;
}

void LockEngine::acquire(int64_t wait_ms, Done done) {
  if (held()) {
    done(RLOCK_ERR_INVALID, "this handle already holds the lock (release it first)");
    return;
  }
  clear_held();
  // A failed earlier call may have left a late SET of its token on a server (a timed-out request
  // that still ran). Reusing that token makes such a key ours instead of blocking us until its TTL.
  // The token changes after every acquisition that succeeded.
  token_ = unused_token_.empty() ? new_token() : unused_token_;
  unused_token_.clear();
  auto op = std::make_shared<Acquiring>();
  op->done = std::move(done);
  op->forever = wait_ms < 0;
  op->deadline = Clock::now() + milliseconds(wait_ms > 0 ? wait_ms : 0);
  attempt(std::move(op));
}

void LockEngine::attempt(std::shared_ptr<Acquiring> op) {
  reset_reports();
  op->start = Clock::now();  // validity counts from before the first request is written
  auto fences = std::make_shared<std::vector<int64_t>>(conns_.size(), -1);
  auto self = shared_from_this();
  algo::Tally t;
  t.n = conns_.size();
  Round::run(
      conns_, all_servers(conns_.size()), acquire_script(), {key_, fence_key_},
      {token_, std::to_string(ttl_.count())}, t,
      [self, fences](size_t i, Result &&r) {
        ServerReport &rep = self->reports_[i];
        const std::string where = self->conns_[i]->address().display();
        if (r.status != RLOCK_OK) {
          rep = {r.status, r.detail};
          return Vote::kFailed;
        }
        const Reply &y = r.reply;
        if (y.type == Reply::Type::kArray && y.elements.size() == 2 &&
            y.elements[0].type == Reply::Type::kInteger &&
            y.elements[1].type == Reply::Type::kInteger) {
          if (y.elements[0].integer == 1 && y.elements[1].integer > 0) {
            (*fences)[i] = y.elements[1].integer;
            rep = {RLOCK_OK, where + ": granted"};
            return Vote::kYes;
          }
          if (y.elements[0].integer == 0) {
            long long pttl = y.elements[1].integer;
            rep = {RLOCK_ERR_BUSY,
                   where + ": held by another owner" +
                       (pttl >= 0 ? " (expires in " + std::to_string(pttl) + " ms)"
                                  : " (the key has no TTL: set by something other than rlock?)")};
            return Vote::kNo;
          }
        }
        rep = {RLOCK_ERR_SERVER, where + ": unexpected reply to the acquire script"};
        return Vote::kFailed;
      },
      [self, op, fences](const algo::Tally &tally) {
        self->on_acquire_votes(op, tally, fences);
      });
}

void LockEngine::on_acquire_votes(std::shared_ptr<Acquiring> op, const algo::Tally &t,
                                  std::shared_ptr<std::vector<int64_t>> fences) {
  if (algo::decide(t) != algo::Decision::kReached) {
    attempt_failed(op, algo::failure_status(report_statuses(), RLOCK_ERR_BUSY));
    return;
  }
  // Fencing: the token is the largest counter among the grants. If some granting servers returned
  // less, lift them to it first, so that a quorum of servers holding our key has counter >= token
  // before we report success; any later owner's quorum overlaps it and gets a larger value.
  const int64_t top = *std::max_element(fences->begin(), fences->end());
  algo::Tally lifted;
  lifted.n = conns_.size();
  std::vector<size_t> behind;
  for (size_t i = 0; i < fences->size(); ++i) {
    if ((*fences)[i] == top) ++lifted.yes;
    else if ((*fences)[i] >= 0) behind.push_back(i);
    else ++lifted.failed;
  }
  if (behind.empty()) {
    finish_acquire(op, static_cast<uint64_t>(top));
    return;
  }
  auto self = shared_from_this();
  Round::run(
      conns_, behind, raise_script(), {key_, fence_key_}, {token_, std::to_string(top)}, lifted,
      [self](size_t i, Result &&r) {
        if (r.status != RLOCK_OK) {
          self->reports_[i] = {r.status, r.detail};
          return Vote::kFailed;
        }
        if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 1) return Vote::kYes;
        self->reports_[i] = {RLOCK_ERR_NOT_HELD,
                             self->conns_[i]->address().display() + ": lost the key before the fencing counter was synced"};
        return Vote::kNo;
      },
      [self, op, top](const algo::Tally &tally) {
        if (algo::decide(tally) == algo::Decision::kReached)
          self->finish_acquire(op, static_cast<uint64_t>(top));
        else
          self->attempt_failed(op, algo::failure_status(self->report_statuses(), RLOCK_ERR_BUSY));
      });
}

void LockEngine::finish_acquire(std::shared_ptr<Acquiring> op, uint64_t fence) {
  auto now = Clock::now();
  auto left = algo::validity(op->start, now, ttl_, drift_);
  if (left <= microseconds(0)) {
    // Granted, but the attempt used up the whole TTL: not held.
    for (auto &r : reports_)
      if (r.status == RLOCK_OK)
        r.detail += " too late: the attempt took " +
                    std::to_string(duration_cast<milliseconds>(now - op->start).count()) +
                    " ms of a " + std::to_string(ttl_.count()) + " ms TTL";
    attempt_failed(op, RLOCK_ERR_TIMEOUT);
    return;
  }
  set_held(now + left, fence);
  op->done(RLOCK_OK, "");
}

void LockEngine::attempt_failed(std::shared_ptr<Acquiring> op, int status) {
  // Undo wherever the attempt may have landed: servers that granted it, and servers whose answer we
  // do not know (a timed-out SET may still have succeeded). A server that said "held by another
  // owner" has nothing of ours.
  std::vector<size_t> maybe_ours;
  for (size_t i = 0; i < reports_.size(); ++i)
    if (reports_[i].status != RLOCK_ERR_BUSY) maybe_ours.push_back(i);
  undo(token_, maybe_ours);

  auto now = Clock::now();
  if (algo::retryable(status) && (op->forever || now < op->deadline)) {
    auto delay = algo::backoff_delay(backoff_, op->attempts++, rng_);
    if (!op->forever) delay = std::min(delay, duration_cast<microseconds>(op->deadline - now));
    if (!retry_timer_) retry_timer_ = std::make_unique<Timer>(conns_[0]->loop().uv());
    auto self = shared_from_this();
    retry_timer_->start(static_cast<uint64_t>((delay.count() + 999) / 1000),
                        [self, op] { self->attempt(op); });
    return;
  }
  std::string detail = summary(status);
  unused_token_ = token_;
  token_.clear();
  op->done(status, detail);
}

void LockEngine::undo(const std::string &token, const std::vector<size_t> &servers) {
  if (servers.empty() || token.empty()) return;
  algo::Tally t;
  t.n = conns_.size();
  // Nobody waits for this round; its answers do not change the outcome already reported.
  Round::run(conns_, servers, release_script(), {key_}, {token}, t,
             [](size_t, Result &&) { return Vote::kFailed; }, [](const algo::Tally &) {});
}

void LockEngine::release(Done done) {
  if (token_.empty()) {
    reset_reports();
    done(RLOCK_ERR_NOT_HELD, "this handle does not hold the lock (never acquired, or already released)");
    return;
  }
  reset_reports();
  const std::string token = token_;
  clear_held();  // not held afterwards, whatever the servers say
  auto self = shared_from_this();
  algo::Tally t;
  t.n = conns_.size();
  Round::run(
      conns_, all_servers(conns_.size()), release_script(), {key_}, {token}, t,
      [self](size_t i, Result &&r) {
        ServerReport &rep = self->reports_[i];
        const std::string where = self->conns_[i]->address().display();
        if (r.status != RLOCK_OK) {
          rep = {r.status, r.detail};
          return Vote::kFailed;
        }
        if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 1) {
          rep = {RLOCK_OK, where + ": released"};
          return Vote::kYes;
        }
        rep = {RLOCK_ERR_NOT_HELD, where + ": the key no longer held our token (expired or taken over)"};
        return Vote::kNo;
      },
      [self, done](const algo::Tally &tally) {
        if (algo::decide(tally) == algo::Decision::kReached) {
          done(RLOCK_OK, "");
          return;
        }
        int st = algo::failure_status(self->report_statuses(), RLOCK_ERR_NOT_HELD);
        done(st, self->summary(st));
      });
}

void LockEngine::extend(milliseconds ttl, Done done) {
  if (token_.empty()) {
    reset_reports();
    done(RLOCK_ERR_NOT_HELD, "this handle does not hold the lock (never acquired, or already released)");
    return;
  }
  reset_reports();
  auto self = shared_from_this();
  auto start = Clock::now();
  algo::Tally t;
  t.n = conns_.size();
  Round::run(
      conns_, all_servers(conns_.size()), extend_script(), {key_}, {token_, std::to_string(ttl.count())},
      t,
      [self](size_t i, Result &&r) {
        ServerReport &rep = self->reports_[i];
        const std::string where = self->conns_[i]->address().display();
        if (r.status != RLOCK_OK) {
          rep = {r.status, r.detail};
          return Vote::kFailed;
        }
        if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 1) {
          rep = {RLOCK_OK, where + ": extended"};
          return Vote::kYes;
        }
        rep = {RLOCK_ERR_NOT_HELD, where + ": the key no longer held our token (expired or taken over)"};
        return Vote::kNo;
      },
      [self, done, start, ttl](const algo::Tally &tally) {
        auto now = Clock::now();
        auto left = algo::validity(start, now, ttl, self->drift_);
        if (algo::decide(tally) == algo::Decision::kReached) {
          if (left > microseconds(0)) {
            self->ttl_ = ttl;
            self->set_held(now + left, self->fence_.load());
            done(RLOCK_OK, "");
          } else {
            self->clear_held();
            done(RLOCK_ERR_TIMEOUT, "the call took longer than the new TTL; the lock is lost");
          }
          return;
        }
        int st = algo::failure_status(self->report_statuses(), RLOCK_ERR_NOT_HELD);
        if (st == RLOCK_ERR_NOT_HELD) {
          self->clear_held();
        } else if (self->valid_until_us_.load() != 0) {
          // Unknown outcome: some servers may now carry the new, possibly shorter, TTL. Keep the
          // earlier of the two expiries, which is safe either way.
          int64_t bound = duration_cast<microseconds>((now + left).time_since_epoch()).count();
          int64_t cur = self->valid_until_us_.load();
          if (bound < cur) self->valid_until_us_.store(bound > 0 ? bound : 1);
        }
        done(st, self->summary(st));
      });
}

}  // namespace rlk
