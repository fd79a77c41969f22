#include "engine.h"

#include <algorithm>

#include "scripts.h"
#include "status.h"
#include "token.h"

namespace rlk {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// ---- Client -------------------------------------------------------------------------------------

Client::Client(Loop &loop, ServerAddress addr)
    : loop_(loop), conn_(Conn::create(loop, std::move(addr))) {}

Client::~Client() {
  std::vector<std::shared_ptr<Conn>> conns{conn_};
  if (sub_) conns.push_back(sub_);
  for (auto &c : conns) {
    if (loop_.on_loop_thread())
      c->shutdown();  // the loop may be stopping: do not queue work on it
    else
      loop_.post([c] { c->shutdown(); });
  }
}

Conn &Client::subscriber() {
  if (!sub_) sub_ = Conn::create(loop_, conn_->address());
  return *sub_;
}

// ---- Fan-out: one script sent to several servers at once ---------------------------------------

namespace {

enum class Vote { kYes, kNo, kFailed };

struct Answer {
  Vote vote;
  int status;  // for the per-server report
  std::string detail;
  const char *what = nullptr;  // success text, see ServerReport
};

}  // namespace

// The answers of one fan-out so far.
struct RoundResult {
  algo::Tally tally;
  std::vector<ServerReport> servers;  // RLOCK_SERVER_PENDING where no answer was needed / came
  std::vector<int> statuses() const {
    std::vector<int> v;
    for (auto &s : servers) v.push_back(s.status);
    return v;
  }
};

namespace {

using Classify = std::function<Answer(size_t server, Result &&r)>;
using Finish = std::function<void(const RoundResult &)>;

// Sends one script to `targets` in the same loop iteration and calls done once, as soon as
// algo::decide() says the outcome is known (answers that arrive later are not looked at), or when
// every target answered. `initial` carries votes already known (e.g. from an earlier round).
void fan_out(const std::vector<std::shared_ptr<Conn>> &conns, const std::vector<size_t> &targets,
             const Script &script, const std::vector<std::string> &keys,
             const std::vector<std::string> &args, algo::Tally initial, Classify classify,
             Finish done) {
  struct State {
    RoundResult out;
    size_t left;
    bool finished = false;
    Classify classify;
    Finish done;
  };
  auto st = std::make_shared<State>();
  st->out.tally = initial;
  st->out.servers.resize(conns.size());
  st->left = targets.size();
  st->classify = std::move(classify);
  st->done = std::move(done);
  if (targets.empty()) {
    st->finished = true;
    st->done(st->out);
    return;
  }
  for (size_t i : targets) {
    conns[i]->eval(script, keys, args, [st, i](Result &&r) {
      --st->left;
      if (st->finished) return;
      Answer a = st->classify(i, std::move(r));
      st->out.servers[i] = {a.status, a.what, std::move(a.detail)};
      switch (a.vote) {
        case Vote::kYes: ++st->out.tally.yes; break;
        case Vote::kNo: ++st->out.tally.no; break;
        case Vote::kFailed: ++st->out.tally.failed; break;
      }
      if (algo::decide(st->out.tally) != algo::Decision::kUndecided || st->left == 0) {
        st->finished = true;
        st->done(st->out);
      }
    });
  }
}

// Classifies the answer to the release and extend scripts: 1 = yes, 0 = not ours. `where` names
// the server; it is only called on the (rare) paths that build a message.
template <class Where>
Answer yes_or_not_ours(Where where, Result &&r, const char *yes_text) {
  if (r.status != RLOCK_OK) return {Vote::kFailed, r.status, std::move(r.detail)};
  if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 1)
    return {Vote::kYes, RLOCK_OK, "", yes_text};
  if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 0)
    return {Vote::kNo, RLOCK_ERR_NOT_HELD,
            where() + ": the key no longer held our token (expired or taken over)"};
  return {Vote::kFailed, RLOCK_ERR_SERVER, where() + ": unexpected reply to the script"};
}

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
  std::string token;
  Clock::time_point deadline;
  bool forever = false;
  unsigned attempts = 0;
  Clock::time_point start;  // of the current attempt, read before anything was sent
  bool canceled = false;
  bool in_round = false;     // an attempt's requests are out
  bool notified = false;     // we were woken during the attempt: retry at once
  bool front = false;        // woken by a release: if refused again, rejoin the queue's front
  bool waiting = false;      // may wait: join the key's queue of waiters when refused
  std::string entry;         // our entry in the queues: "token:ttl_ms" ("" when not waiting)
  long long min_pttl = -1;   // shortest remaining TTL among the owners that refused us
};

LockEngine::LockEngine(std::vector<std::shared_ptr<Client>> servers, std::string key,
                       milliseconds ttl)
    : clients_(std::move(servers)),
      key_(std::move(key)),
      fence_key_(rlk::fence_key(key_)),
      channel_(rlk::release_channel(key_)),
      waiters_key_(rlk::waiters_key(key_)),
      // Only a single-instance lock hands off in order, the release giving the lock to the first
      // waiter: a quorum's per-server queues can disagree on who is first, and grants to different
      // waiters on different servers would block everyone for a TTL. Quorum waiters are still woken
      // one per release, and retry.
      in_order_(clients_.size() == 1 ? "1" : "0"),
      ttl_(ttl),
      reports_(clients_.size()),
      rng_(std::random_device{}()) {
  for (auto &c : clients_) conns_.push_back(c->conn());
}

LockEngine::~LockEngine() = default;

Timer &LockEngine::timer(std::unique_ptr<Timer> &t) {
  if (!t) t = std::make_unique<Timer>(conns_[0]->loop().uv());
  return *t;
}

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
  ++epoch_;
  if (renew_timer_) renew_timer_->stop();
  if (loss_timer_) loss_timer_->stop();
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
std::string LockEngine::report_text(size_t i) const {
  const ServerReport &r = reports_[i];
  if (!r.detail.empty()) return r.detail;
  if (r.what != nullptr) return server_address(i) + ": " + r.what;
  return server_address(i) + ": no answer (none needed, or no call yet)";
}

std::string LockEngine::summary(int status) const {
  if (reports_.size() == 1) return report_text(0);
  size_t ok = 0;
  for (auto &r : reports_) ok += r.status == RLOCK_OK;
  std::string s = std::string(status_text(status)) + " (" + std::to_string(ok) + " of " +
                  std::to_string(reports_.size()) + " servers agreed, quorum is " +
                  std::to_string(algo::quorum(reports_.size())) + ")";
  for (size_t i = 0; i < reports_.size(); ++i) {
    s += i == 0 ? ": " : "; ";
    s += report_text(i);
  }
  return s;
}

void LockEngine::begin(Done done) { done_ = std::move(done); }

void LockEngine::finish(int status, const std::string &detail) {
  Done d = std::move(done_);
  done_ = nullptr;
  if (d) d(status, detail);
  if (after_call_ && !done_) {
    auto a = std::move(after_call_);
    after_call_ = nullptr;
    a();
  }
}

// ---- acquire --------------------------------------------------------------------------------------

void LockEngine::acquire(int64_t wait_ms, Done done) {
  begin(std::move(done));
  if (shut_down_) return finish(RLOCK_ERR_CANCELED, "the handle is being freed");
  if (held()) return finish(RLOCK_ERR_INVALID, "this handle already holds the lock (release it first)");
  // An earlier acquisition that expired or was lost may have left its key behind: clear it.
  if (!token_.empty()) undo(token_, all_servers(conns_.size()));
  clear_held();
  auto op = std::make_shared<Acquiring>();
  // A failed earlier call may have left a late SET of its token on a server (a timed-out request
  // that still ran). Reusing that token makes such a key ours instead of blocking us until its TTL.
  // The token changes after every acquisition that succeeded.
  op->token = unused_token_.empty() ? new_token() : unused_token_;
  unused_token_.clear();
  op->forever = wait_ms < 0;
  op->deadline = Clock::now() + milliseconds(wait_ms > 0 ? wait_ms : 0);
  op->waiting = wait_ms != 0;
  if (op->waiting) op->entry = op->token + ":" + std::to_string(ttl_.count());
  acquiring_ = op;
  if (op->waiting) listen_for_release();
  attempt(std::move(op));
}

void LockEngine::attempt(std::shared_ptr<Acquiring> op) {
  op->start = Clock::now();  // validity counts from before the first request is written
  op->in_round = true;
  op->notified = false;
  op->min_pttl = -1;
  const bool front = op->front;
  op->front = false;
  auto fences = std::make_shared<std::vector<int64_t>>(conns_.size(), -1);
  auto self = shared_from_this();
  algo::Tally t;
  t.n = conns_.size();
  fan_out(
      conns_, all_servers(conns_.size()), acquire_script(), {key_, fence_key_, waiters_key_},
      {op->token, std::to_string(ttl_.count()), op->entry, front ? "1" : "0", in_order_}, t,
      [self, op, fences](size_t i, Result &&r) -> Answer {
        auto where = [&] { return self->server_address(i); };
        if (r.status != RLOCK_OK) return {Vote::kFailed, r.status, std::move(r.detail)};
        const Reply &y = r.reply;
        if (y.type == Reply::Type::kArray && y.elements.size() == 2 &&
            y.elements[0].type == Reply::Type::kInteger &&
            y.elements[1].type == Reply::Type::kInteger) {
          if (y.elements[0].integer == 1 && y.elements[1].integer > 0) {
            (*fences)[i] = y.elements[1].integer;
            return {Vote::kYes, RLOCK_OK, "", "granted"};
          }
          if (y.elements[0].integer == 0) {
            long long pttl = y.elements[1].integer;
            if (pttl >= 0 && (op->min_pttl < 0 || pttl < op->min_pttl)) op->min_pttl = pttl;
            return {Vote::kNo, RLOCK_ERR_BUSY,
                    where() + (pttl >= 0 ? ": held by another owner (expires in " + std::to_string(pttl) + " ms)"
                               : pttl == -2 ? ": free, but reserved for or queued by earlier waiters"
                                            : ": held by another owner (the key has no TTL: set by something other than rlock?)")};
          }
        }
        return {Vote::kFailed, RLOCK_ERR_SERVER, where() + ": unexpected reply to the acquire script"};
      },
      [self, op, fences](const RoundResult &out) {
        op->in_round = false;
        if (op->canceled) {
          self->undo(op->token, all_servers(self->conns_.size()));
          return;
        }
        self->reports_ = out.servers;
        self->on_acquire_votes(op, out.tally, fences);
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
  if (behind.empty()) return finish_acquire(op, static_cast<uint64_t>(top));
  auto self = shared_from_this();
  op->in_round = true;
  fan_out(
      conns_, behind, raise_script(), {key_, fence_key_}, {op->token, std::to_string(top)}, lifted,
      [self](size_t i, Result &&r) -> Answer {
        if (r.status != RLOCK_OK) return {Vote::kFailed, r.status, std::move(r.detail)};
        if (r.reply.type == Reply::Type::kInteger && r.reply.integer == 1)
          return {Vote::kYes, RLOCK_OK, "", "granted"};
        return {Vote::kNo, RLOCK_ERR_NOT_HELD,
                self->server_address(i) + ": lost the key before the fencing counter was synced"};
      },
      [self, op, top](const RoundResult &out) {
        op->in_round = false;
        if (op->canceled) {
          self->undo(op->token, all_servers(self->conns_.size()));
          return;
        }
        for (size_t i = 0; i < out.servers.size(); ++i)
          if (out.servers[i].status != RLOCK_SERVER_PENDING) self->reports_[i] = out.servers[i];
        if (algo::decide(out.tally) == algo::Decision::kReached)
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
    for (size_t i = 0; i < reports_.size(); ++i)
      if (reports_[i].status == RLOCK_OK)
        reports_[i].detail = report_text(i) + " too late: the attempt took " +
                             std::to_string(duration_cast<milliseconds>(now - op->start).count()) +
                             " ms of a " + std::to_string(ttl_.count()) + " ms TTL";
    attempt_failed(op, RLOCK_ERR_TIMEOUT);
    return;
  }
  token_ = op->token;
  ++epoch_;
  set_held(now + left, fence);
  if (renew_) {
    schedule_renewal(ttl_ / 3);
    arm_loss_timer();
  }
  end_acquire(op, RLOCK_OK, "");
}

void LockEngine::attempt_failed(std::shared_ptr<Acquiring> op, int status) {
  // Undo wherever the attempt may have landed: servers that granted it, and servers whose answer we
  // do not know (a timed-out SET may still have succeeded). A server that said "held by another
  // owner" has nothing of ours.
  std::vector<size_t> maybe_ours;
  for (size_t i = 0; i < reports_.size(); ++i)
    if (reports_[i].status != RLOCK_ERR_BUSY) maybe_ours.push_back(i);
  undo(op->token, maybe_ours);

  auto now = Clock::now();
  if (!algo::retryable(status) || (!op->forever && now >= op->deadline)) {
    end_acquire(op, status, summary(status));
    return;
  }
  microseconds delay = op->notified ? microseconds(0) : algo::backoff_delay(backoff_, op->attempts++, rng_);
  // The owner's key expires by itself after its remaining TTL: no point sleeping past that.
  if (op->min_pttl >= 0) delay = std::min(delay, duration_cast<microseconds>(milliseconds(op->min_pttl + 1)));
  if (!op->forever) delay = std::min(delay, duration_cast<microseconds>(op->deadline - now));
  auto self = shared_from_this();
  timer(retry_timer_).start(static_cast<uint64_t>((delay.count() + 999) / 1000), [self, op] {
    if (!op->canceled) self->attempt(op);
  });
}

void LockEngine::end_acquire(std::shared_ptr<Acquiring> op, int status, const std::string &detail) {
  acquiring_ = nullptr;
  if (status != RLOCK_OK && op->waiting) {
    // Gave up while queued: leave the queues, so a release does not wake a waiter that is gone,
    // and give back a lock a release may have handed us meanwhile (to the next waiter).
    for (auto &c : conns_) c->command({"ZREM", waiters_key_, op->entry}, [](Result &&) {});
    undo(op->token, all_servers(conns_.size()));
  }
  if (status != RLOCK_OK && status != RLOCK_ERR_CANCELED) unused_token_ = op->token;
  finish(status, detail);
}

// A waiter learns of a release at once: the release script pops the first waiter of the key's
// queue and publishes its id on the key's channel, so exactly one waiter retries (no herd). The
// backoff timer stays as the fallback, so a lost message costs at most one backoff step.
// A handle subscribes on its first wait and keeps the subscription until it is freed.
void LockEngine::listen_for_release() {
  if (listening_ || shut_down_) return;
  listening_ = true;
  std::weak_ptr<LockEngine> weak = shared_from_this();
  for (auto &c : clients_) {
    uint64_t id = c->subscriber().listen(channel_, [weak](const std::string &message) {
      // The message is the woken waiter's queue entry.
      auto self = weak.lock();
      if (self && self->acquiring_ && !self->acquiring_->entry.empty() &&
          message == self->acquiring_->entry)
        self->on_release_notice(self->acquiring_);
    });
    listeners_.push_back(id);
  }
}

void LockEngine::on_release_notice(std::shared_ptr<Acquiring> op) {
  if (!op || op->canceled) return;
  op->front = true;  // if we lose the race to a barging owner, we stay first in line
  if (op->in_round) {
    // The release may have come after our request was refused; if it handed us the lock, the
    // retry finds the key holding our token.
    op->notified = true;
    return;
  }
  // Waiting in backoff: try again now. If the release handed us the lock, the attempt finds the key
  // holding our token and confirms it. The message itself is not trusted to mean "held": it may be
  // late, or from a grant that our own undo or the TTL has ended since, and only an attempt gives a
  // clock reading that is certainly from before the key was last set for us.
  auto self = shared_from_this();
  timer(retry_timer_).start(0, [self, op] {
    if (!op->canceled && !op->in_round && self->acquiring_ == op) self->attempt(op);
  });
}

void LockEngine::undo(const std::string &token, const std::vector<size_t> &servers) {
  if (servers.empty() || token.empty()) return;
  algo::Tally t;
  t.n = conns_.size();
  // Nobody waits for this round; its answers do not change the outcome already reported.
  fan_out(conns_, servers, release_script(), {key_, waiters_key_, fence_key_}, {token, channel_, in_order_}, t,
          [](size_t, Result &&) { return Answer{Vote::kFailed, RLOCK_SERVER_PENDING, ""}; },
          [](const RoundResult &) {});
}

// ---- release and extend -----------------------------------------------------------------------------

void LockEngine::release(Done done) {
  begin(std::move(done));
  if (shut_down_) return finish(RLOCK_ERR_CANCELED, "the handle is being freed");
  reset_reports();
  if (token_.empty())
    return finish(RLOCK_ERR_NOT_HELD, "this handle does not hold the lock (never acquired, or already released)");
  const std::string token = token_;
  clear_held();  // not held afterwards, whatever the servers say; stops renewal
  auto self = shared_from_this();
  algo::Tally t;
  t.n = conns_.size();
  fan_out(
      conns_, all_servers(conns_.size()), release_script(), {key_, waiters_key_, fence_key_}, {token, channel_, in_order_}, t,
      [self](size_t i, Result &&r) { return yes_or_not_ours([&] { return self->server_address(i); }, std::move(r), "released"); },
      [self](const RoundResult &out) {
        self->reports_ = out.servers;
        if (algo::decide(out.tally) == algo::Decision::kReached) return self->finish(RLOCK_OK, "");
        int st = algo::failure_status(out.statuses(), RLOCK_ERR_NOT_HELD);
        self->finish(st, self->summary(st));
      });
}

// Sends the extend script for `ttl` with the current token to every server; then() gets the
// answers, the time they were decided and the validity the lock has if a quorum extended it.
void LockEngine::extend_round(milliseconds ttl, ExtendThen then) {
  auto self = shared_from_this();
  auto start = Clock::now();
  algo::Tally t;
  t.n = conns_.size();
  fan_out(
      conns_, all_servers(conns_.size()), extend_script(), {key_},
      {token_, std::to_string(ttl.count())}, t,
      [self](size_t i, Result &&r) { return yes_or_not_ours([&] { return self->server_address(i); }, std::move(r), "extended"); },
      [self, start, ttl, then](const RoundResult &out) {
        auto now = Clock::now();
        then(out, now, algo::validity(start, now, ttl, self->drift_));
      });
}

// After an extension whose outcome is unknown, some servers may carry the new, possibly shorter,
// TTL: keep the earlier of the two expiries, which is safe either way.
void LockEngine::keep_earlier_expiry(Clock::time_point bound) {
  if (valid_until_us_.load() == 0) return;
  int64_t us = duration_cast<microseconds>(bound.time_since_epoch()).count();
  if (us < valid_until_us_.load()) valid_until_us_.store(us > 0 ? us : 1);
}

void LockEngine::extend(milliseconds ttl, Done done) {
  begin(std::move(done));
  if (shut_down_) return finish(RLOCK_ERR_CANCELED, "the handle is being freed");
  reset_reports();
  if (token_.empty())
    return finish(RLOCK_ERR_NOT_HELD, "this handle does not hold the lock (never acquired, or already released)");
  auto self = shared_from_this();
  const uint64_t epoch = epoch_;
  extend_round(ttl, [self, ttl, epoch](const RoundResult &out, Clock::time_point now, microseconds left) {
    self->reports_ = out.servers;
    if (epoch != self->epoch_) {
      // Renewal declared the lock lost while we were asking: keep that verdict.
      return self->finish(RLOCK_ERR_NOT_HELD, "the lock was lost while extending");
    }
    if (algo::decide(out.tally) == algo::Decision::kReached) {
      if (left <= microseconds(0)) {
        self->clear_held();
        return self->finish(RLOCK_ERR_TIMEOUT, "the call took longer than the new TTL; the lock is lost");
      }
      self->ttl_ = ttl;
      self->set_held(now + left, self->fence_.load());
      if (self->renew_) {
        self->schedule_renewal(ttl / 3);
        self->arm_loss_timer();
      }
      return self->finish(RLOCK_OK, "");
    }
    int st = algo::failure_status(out.statuses(), RLOCK_ERR_NOT_HELD);
    if (st == RLOCK_ERR_NOT_HELD) {
      self->clear_held();
    } else {
      self->keep_earlier_expiry(now + left);
      if (self->renew_) self->arm_loss_timer();
    }
    self->finish(st, self->summary(st));
  });
}

// ---- auto-renewal ---------------------------------------------------------------------------------

void LockEngine::set_auto_renew(bool on, Lost on_lost) {
  renew_ = on && !shut_down_;
  on_lost_ = renew_ ? std::move(on_lost) : nullptr;
  if (renew_timer_) renew_timer_->stop();
  if (loss_timer_) loss_timer_->stop();
  if (renew_ && held()) {
    schedule_renewal(milliseconds(0));
    arm_loss_timer();
  }
}

void LockEngine::schedule_renewal(milliseconds in) {
  auto self = shared_from_this();
  const uint64_t epoch = epoch_;
  timer(renew_timer_).start(static_cast<uint64_t>(std::max<int64_t>(in.count(), 0)), [self, epoch] {
    if (epoch == self->epoch_ && self->renew_) self->renew();
  });
}

void LockEngine::renew() {
  auto self = shared_from_this();
  const uint64_t epoch = epoch_;
  const milliseconds ttl = ttl_;
  extend_round(ttl, [self, epoch, ttl](const RoundResult &out, Clock::time_point now, microseconds left) {
    if (epoch != self->epoch_ || !self->renew_) return;  // released, lost or re-acquired since
    if (algo::decide(out.tally) == algo::Decision::kReached && left > microseconds(0)) {
      self->set_held(now + left, self->fence_.load());
      self->schedule_renewal(ttl / 3);
      self->arm_loss_timer();
      return;
    }
    int st = algo::failure_status(out.statuses(), RLOCK_ERR_NOT_HELD);
    std::string detail = "renewal: ";
    for (auto &s : out.servers)
      if (s.status != RLOCK_OK && s.status != RLOCK_SERVER_PENDING) detail += s.detail + "; ";  // failures carry their text
    if (st == RLOCK_ERR_NOT_HELD) return self->lost(st, detail);
    // Could not tell: keep the safe (earlier) expiry and try again soon, until it runs out.
    self->keep_earlier_expiry(now + left);
    self->last_renew_error_ = {st, detail};
    if (self->validity_ms() <= 0) return self->lost(st, detail);
    self->schedule_renewal(std::max(milliseconds(1), ttl / 10));
    self->arm_loss_timer();
  });
}

// Fires when the validity ends without a successful renewal; rounded down to the millisecond so
// the callback comes no later than the moment rlock_validity_ms reaches 0.
void LockEngine::arm_loss_timer() {
  auto self = shared_from_this();
  const uint64_t epoch = epoch_;
  int64_t left = validity_ms();
  timer(loss_timer_).start(static_cast<uint64_t>(left > 1 ? left - 1 : 0), [self, epoch] {
    if (epoch != self->epoch_ || !self->renew_) return;
    if (self->validity_ms() > 1) return self->arm_loss_timer();  // renewed meanwhile
    auto e = self->last_renew_error_;
    self->lost(e.status != RLOCK_OK ? e.status : RLOCK_ERR_TIMEOUT,
               e.status != RLOCK_OK ? e.detail : "renewal: no answer before the validity ran out");
  });
}

void LockEngine::lost(int status, const std::string &detail) {
  if (shut_down_) return;
  // Not held from now on; the token stays so that a later release can still clean up.
  valid_until_us_.store(0, std::memory_order_release);
  fence_.store(0, std::memory_order_release);
  ++epoch_;
  if (renew_timer_) renew_timer_->stop();
  if (loss_timer_) loss_timer_->stop();
  last_renew_error_ = {};
  if (on_lost_) {
    Lost cb = on_lost_;
    cb(status, detail);
  }
}

// ---- shutting down ---------------------------------------------------------------------------------

void LockEngine::shut_down(std::function<void()> then) {
  shut_down_ = true;
  renew_ = false;
  on_lost_ = nullptr;
  if (renew_timer_) renew_timer_->stop();
  if (loss_timer_) loss_timer_->stop();
  for (size_t i = 0; i < clients_.size() && i < listeners_.size(); ++i)
    clients_[i]->subscriber().unlisten(channel_, listeners_[i]);
  listeners_.clear();
  auto self = shared_from_this();
  auto last_steps = [self, then] {
    // Give the lock up if held (bounded by the command timeout), then report back.
    if (self->token_.empty()) return then();
    const std::string token = self->token_;
    self->clear_held();
    algo::Tally t;
    t.n = self->conns_.size();
    fan_out(self->conns_, all_servers(self->conns_.size()), release_script(),
            {self->key_, self->waiters_key_, self->fence_key_}, {token, self->channel_, self->in_order_}, t,
            [](size_t, Result &&r) {
              return Answer{r.status == RLOCK_OK ? Vote::kYes : Vote::kFailed, r.status, ""};
            },
            [then](const RoundResult &) { then(); });
  };
  if (auto op = acquiring_) {
    op->canceled = true;
    if (retry_timer_) retry_timer_->stop();
    // An attempt in flight undoes itself when its answers arrive (see attempt()).
    end_acquire(op, RLOCK_ERR_CANCELED, "the handle was freed while acquiring");
    last_steps();
  } else if (done_) {
    after_call_ = last_steps;  // a release or extend in flight finishes first
  } else {
    last_steps();
  }
}

}  // namespace rlk
