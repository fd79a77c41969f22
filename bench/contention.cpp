// S4: several processes contend for one key with a tiny critical section.
//
// The parent (run_contention) creates a shared-memory block, then starts `processes` copies of this
// very program (/proc/self/exe --s4-worker ...): exec rather than a bare fork, because rlock runs an
// event-loop thread and the parent may have other threads (proxies); a child that only forked would
// inherit none of them. Every worker makes its own clients, reports ready, and all start together at
// a steady_clock instant chosen by the parent (CLOCK_MONOTONIC is system-wide).
//
// Inside the critical section each worker
//   - increments an atomic "inside" counter: if it was not 0, two holders overlap (must never happen),
//   - swaps its index into "last holder": a different previous holder is a hand-off,
//   - increments a plain, non-atomic counter: overlapping holders would lose updates.
// The wait of each acquisition (from calling acquire to holding) goes to a per-worker file of floats.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>

#include "bench.h"
#include "raw_redis.h"

extern char **environ;

namespace bench {

namespace {

struct Shared {
  std::atomic<int> ready;
  std::atomic<int> failed;
  std::atomic<int64_t> start_ns;  // 0 until the parent says go
  std::atomic<int64_t> end_ns;
  std::atomic<int> inside;
  std::atomic<int> last_holder;  // -1: none yet
  std::atomic<long long> overlaps;
  std::atomic<long long> handoffs;
  std::atomic<long long> acquisitions;
  std::atomic<long long> errors;
  std::atomic<long long> timeouts;
  std::atomic<int64_t> last_done_ns;  // max over workers of the end of their last release
  volatile long long plain_counter;
};
static_assert(std::atomic<int64_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
                  std::atomic<long long>::is_always_lock_free,
              "shared-memory atomics must be lock-free to work across processes");

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

Shared *map_shared(const std::string &path, bool create) {
  int fd = ::open(path.c_str(), create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  if (create && ::ftruncate(fd, sizeof(Shared)) != 0) {
    ::close(fd);
    throw std::runtime_error("ftruncate " + path + ": " + std::strerror(errno));
  }
  void *p = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw std::runtime_error("mmap " + path + ": " + std::strerror(errno));
  if (create) {
    Shared *s = new (p) Shared{};
    s->last_holder = -1;
    return s;
  }
  return static_cast<Shared *>(p);
}

std::vector<int> parse_ports(const std::string &s) {
  std::vector<int> v;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    v.push_back(std::stoi(s.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  return v;
}

std::string join_ports(const std::vector<int> &ports) {
  std::string s;
  for (int p : ports) s += (s.empty() ? "" : ",") + std::to_string(p);
  return s;
}

enum class Outcome { kHeld, kTimeout, kError };

// One way of taking and giving back the lock.
class Locker {
 public:
  virtual ~Locker() = default;
  virtual Outcome acquire(std::string &err) = 0;
  virtual bool release(std::string &err) = 0;
};

class RlockLocker : public Locker {
 public:
  RlockLocker(const std::vector<int> &ports, const std::string &key, int64_t ttl_ms,
              const std::string &retry, int64_t wait_ms)
      : wait_ms_(wait_ms) {
    for (int p : ports) clients_.push_back(make_client(p));
    lock_ = make_lock(clients_, key, ttl_ms);
    if (retry != "default") {
      size_t colon = retry.find(':');
      if (colon == std::string::npos) throw std::runtime_error("bad --retry " + retry);
      int rc = rlock_set_retry_delay_ms(lock_.get(), std::stoll(retry.substr(0, colon)),
                                        std::stoll(retry.substr(colon + 1)));
      if (rc != RLOCK_OK) throw std::runtime_error("rlock_set_retry_delay_ms: " + describe(rc));
    }
  }
  Outcome acquire(std::string &err) override {
    int rc = rlock_acquire(lock_.get(), wait_ms_);
    if (rc == RLOCK_OK) return Outcome::kHeld;
    err = describe(rc);
    return rc == RLOCK_ERR_BUSY ? Outcome::kTimeout : Outcome::kError;
  }
  bool release(std::string &err) override {
    int rc = rlock_release(lock_.get());
    if (rc == RLOCK_OK) return true;
    err = describe(rc);
    return false;
  }

 private:
  std::vector<ClientPtr> clients_;
  LockPtr lock_;
  int64_t wait_ms_;
};

// The baseline: raw hiredis retrying at once, without any delay ("spin"). For several servers the
// requests are pipelined to all of them; a failed quorum is undone on all before the next try.
class RawSpinLocker : public Locker {
 public:
  RawSpinLocker(const std::vector<int> &ports, const std::string &key, int64_t ttl_ms,
                int64_t wait_ms)
      : q_(kHost, ports), key_(key), ttl_ms_(ttl_ms), wait_(std::chrono::milliseconds(wait_ms)) {}
  Outcome acquire(std::string &err) override {
    auto deadline = Clock::now() + wait_;
    try {
      for (;;) {
        token_ = gen_.next();
        if (q_.lock(key_, token_, ttl_ms_) >= q_.quorum()) return Outcome::kHeld;
        if (q_.size() > 1) q_.unlock(key_, token_);
        if (Clock::now() > deadline) {
          err = "wait expired";
          return Outcome::kTimeout;
        }
      }
    } catch (const std::exception &e) {
      err = e.what();
      return Outcome::kError;
    }
  }
  bool release(std::string &err) override {
    try {
      if (q_.unlock(key_, token_) >= q_.quorum()) return true;
      err = "release: not held on a quorum";
    } catch (const std::exception &e) {
      err = e.what();
    }
    return false;
  }

 private:
  RawQuorum q_;
  TokenGen gen_;
  std::string key_;
  std::string token_;
  int64_t ttl_ms_;
  std::chrono::milliseconds wait_;
};

}  // namespace

int contention_worker_main(int argc, char **argv) {
  std::map<std::string, std::string> a;
  for (int i = 2; i + 1 < argc; i += 2) a[argv[i]] = argv[i + 1];
  for (const char *need : {"--impl", "--ports", "--index", "--shm", "--retry", "--ttl", "--wait",
                           "--out", "--key"}) {
    if (!a.count(need)) {
      std::cerr << "s4 worker: missing " << need << "\n";
      return 2;
    }
  }
  Shared *sh = map_shared(a["--shm"], false);
  const int index = std::stoi(a["--index"]);
  const std::vector<int> ports = parse_ports(a["--ports"]);
  const int64_t ttl = std::stoll(a["--ttl"]), wait = std::stoll(a["--wait"]);

  std::unique_ptr<Locker> locker;
  try {
    if (a["--impl"] == "rlock")
      locker = std::make_unique<RlockLocker>(ports, a["--key"], ttl, a["--retry"], wait);
    else
      locker = std::make_unique<RawSpinLocker>(ports, a["--key"], ttl, wait);
  } catch (const std::exception &e) {
    std::cerr << "s4 worker " << index << ": setup: " << e.what() << "\n";
    sh->failed++;
    return 2;
  }
  sh->ready++;

  const auto give_up = Clock::now() + std::chrono::seconds(60);
  while (sh->start_ns.load() == 0) {
    if (Clock::now() > give_up) {
      std::cerr << "s4 worker " << index << ": no start signal\n";
      return 2;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const int64_t start = sh->start_ns.load(), end = sh->end_ns.load();
  while (now_ns() < start) std::this_thread::sleep_for(std::chrono::microseconds(100));

  std::vector<float> waits;
  waits.reserve(1 << 16);
  long long acquisitions = 0, handoffs = 0, overlaps = 0, errors = 0, timeouts = 0;
  int64_t last_done = now_ns();
  std::string err, last_err;
  while (now_ns() < end) {
    auto t0 = Clock::now();
    Outcome o = locker->acquire(err);
    auto t1 = Clock::now();
    if (o != Outcome::kHeld) {
      (o == Outcome::kTimeout ? timeouts : errors)++;
      if (err != last_err) std::cerr << "s4 worker " << index << ": acquire: " << err << "\n";
      last_err = err;
      continue;
    }
    // ---- critical section ----
    if (sh->inside.fetch_add(1) != 0) ++overlaps;
    int prev = sh->last_holder.exchange(index);
    if (prev != -1 && prev != index) ++handoffs;
    sh->plain_counter = sh->plain_counter + 1;
    sh->inside.fetch_sub(1);
    // ---- end of critical section ----
    ++acquisitions;
    waits.push_back(static_cast<float>(us_between(t0, t1)));
    if (!locker->release(err)) {
      ++errors;
      if (err != last_err) std::cerr << "s4 worker " << index << ": release: " << err << "\n";
      last_err = err;
    }
    last_done = now_ns();
  }
  sh->acquisitions += acquisitions;
  sh->handoffs += handoffs;
  sh->overlaps += overlaps;
  sh->errors += errors;
  sh->timeouts += timeouts;
  int64_t seen = sh->last_done_ns.load();
  while (last_done > seen && !sh->last_done_ns.compare_exchange_weak(seen, last_done)) {
  }

  FILE *f = std::fopen(a["--out"].c_str(), "wb");
  if (!f || std::fwrite(waits.data(), sizeof(float), waits.size(), f) != waits.size()) {
    std::cerr << "s4 worker " << index << ": cannot write " << a["--out"] << "\n";
    if (f) std::fclose(f);
    return 2;
  }
  std::fclose(f);
  return 0;
}

Result run_contention(const ContentionParams &p, const std::string &id,
                      const std::string &baseline) {
  static int run_no = 0;
  const std::string base =
      "/dev/shm/rlock-bench-" + std::to_string(getpid()) + "-" + std::to_string(++run_no);
  const std::string key = "bench:s4:" + std::to_string(getpid()) + ":" + std::to_string(run_no);
  Shared *sh = map_shared(base, true);
  std::vector<std::string> outs;
  std::vector<pid_t> pids;

  auto cleanup = [&] {
    for (pid_t pid : pids) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
    pids.clear();
    ::munmap(sh, sizeof(Shared));
    ::unlink(base.c_str());
    for (auto &o : outs) ::unlink(o.c_str());
  };

  try {
    for (int i = 0; i < p.processes; ++i) {
      outs.push_back(base + ".w" + std::to_string(i));
      std::vector<std::string> args = {"rlock-bench", "--s4-worker",
                                       "--impl",      p.impl,
                                       "--ports",     join_ports(p.ports),
                                       "--index",     std::to_string(i),
                                       "--shm",       base,
                                       "--retry",     p.retry,
                                       "--ttl",       std::to_string(p.ttl_ms),
                                       "--wait",      std::to_string(p.wait_ms),
                                       "--out",       outs.back(),
                                       "--key",       key};
      std::vector<char *> argv;
      for (auto &s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      pid_t pid = -1;
      int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
      if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
      pids.push_back(pid);
    }

    // Wait until every worker is connected (or one failed or died).
    auto give_up = Clock::now() + std::chrono::seconds(30);
    while (sh->ready.load() < p.processes) {
      if (sh->failed.load() > 0) throw std::runtime_error("an S4 worker failed to start");
      for (pid_t &pid : pids) {
        int st = 0;
        if (pid > 0 && ::waitpid(pid, &st, WNOHANG) == pid) {
          pid = -1;
          throw std::runtime_error("an S4 worker exited before starting");
        }
      }
      if (Clock::now() > give_up) throw std::runtime_error("S4 workers did not get ready");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    const int64_t start = now_ns() + 20'000'000;
    sh->end_ns = start + static_cast<int64_t>(p.seconds * 1e9);
    sh->start_ns = start;

    // Wait for them to finish; a worker stuck well past the end is killed.
    give_up = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(p.seconds * 1000)) +
              std::chrono::milliseconds(p.wait_ms) + std::chrono::seconds(30);
    int bad_exits = 0;
    for (pid_t &pid : pids) {
      for (;;) {
        int st = 0;
        pid_t r = ::waitpid(pid, &st, WNOHANG);
        if (r == pid) {
          if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++bad_exits;
          pid = -1;
          break;
        }
        if (Clock::now() > give_up) throw std::runtime_error("an S4 worker did not finish");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    if (bad_exits) throw std::runtime_error(std::to_string(bad_exits) + " S4 worker(s) failed");

    std::vector<double> waits;
    for (auto &o : outs) {
      FILE *f = std::fopen(o.c_str(), "rb");
      if (!f) throw std::runtime_error("cannot read " + o);
      float buf[4096];
      size_t n;
      while ((n = std::fread(buf, sizeof(float), 4096, f)) > 0) waits.insert(waits.end(), buf, buf + n);
      std::fclose(f);
    }

    Result r;
    r.id = id;
    r.baseline = baseline;
    r.throughput = true;
    r.latency = summarize(waits);
    const long long acq = sh->acquisitions.load();
    const double elapsed = std::max(p.seconds, (sh->last_done_ns.load() - start) / 1e9);
    r.ops_per_s = acq / elapsed;
    r.errors = sh->errors.load() + sh->timeouts.load();
    const long long lost = acq - sh->plain_counter;
    r.overlaps = sh->overlaps.load() + (lost > 0 ? lost : 0);
    const double handoff_share = acq > 1 ? double(sh->handoffs.load()) / double(acq - 1) : 0;
    char note[200];
    std::snprintf(note, sizeof note, "%8.0f acq/s  wait p50 %.0f p99 %.0f max %.0f us  handoffs %.0f%%",
                  r.ops_per_s, r.latency.median, r.latency.p99, r.latency.max, handoff_share * 100);
    r.note = note;
    const std::string impl = p.impl == "rlock" ? "rlock" : "raw-hiredis";
    r.json = record_head(id, "S4", impl, "n" + std::to_string(p.ports.size()),
                         static_cast<int>(p.ports.size()), 0);
    r.json.str("settings", p.impl == "rlock" ? "retry " + p.retry : "spin (no delay)")
        .str("baseline", baseline)
        .str("ratio_of", "throughput")
        .integer("processes", p.processes)
        .num("seconds", elapsed)
        .integer("ttl_ms", p.ttl_ms)
        .integer("wait_ms", p.wait_ms)
        .integer("acquisitions", acq)
        .num("acquisitions_per_s", r.ops_per_s)
        .num("ops_per_s", r.ops_per_s)
        .summary("wait_us", r.latency)
        .num("handoff_share", handoff_share)
        .integer("overlaps", sh->overlaps.load())
        .integer("lost_updates", lost)
        .integer("errors", sh->errors.load())
        .integer("timeouts", sh->timeouts.load());
    cleanup();
    return r;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace bench
