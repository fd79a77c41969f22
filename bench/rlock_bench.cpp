// rlock-bench: rlock's latency and throughput against raw hiredis, measured in one run on the same
// redis-server processes (started here on free loopback ports) and, optionally, against peer
// libraries run by their own scripts (bench/peers/) on the same servers.
//
//   S1  single server, uncontended acquire+release, one thread   vs raw sync SET NX PX + EVALSHA
//   S2  quorum of 3 and of 5, uncontended                          vs raw, pipelined to all N
//   S3  S1 and quorum-of-5 through latency proxies (1 ms each way) vs raw through the same proxies
//   S4  4 processes on one key, N = 1 and N = 3 (contention.cpp)   vs raw spinning
//   S5  16 threads on distinct keys through one shared client      vs 16 raw connections
//
// Usage: rlock-bench [--smoke] [--json FILE] [--scenarios S1,S2,...] [--peer 'CMD' ...] ...
// (--help lists every flag). --smoke runs every scenario briefly and exits non-zero on any error
// or overlap: the ctest bench_smoke. Results: one JSON record per line in {"meta":..,"records":[..]}.
#include <hiredis/hiredis.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "bench.h"
#include "raw_redis.h"
#include "support/fault_proxy.h"
#include "support/redis_server.h"

#ifndef RLOCK_BENCH_BUILD_TYPE
#define RLOCK_BENCH_BUILD_TYPE "unknown"
#endif

namespace bench {
namespace {

struct Options {
  bool smoke = false;
  std::string json_path;
  std::set<std::string> scenarios = {"S1", "S2", "S3", "S4", "S5"};
  int iters = 20000;         // S1, S2 per variant
  int proxy_iters = 500;     // S3 per variant
  int proxy_latency_ms = 1;  // S3, each way
  double s4_seconds = 10;
  std::vector<std::string> s4_retry = {"default", "1:2", "1:4", "1:8"};
  double s5_seconds = 5;
  int s5_iters = 0;  // per thread; > 0 replaces s5_seconds (smoke)
  int s5_threads = 16;
  int64_t ttl_ms = 10000;
  std::vector<std::string> peers;
  int peer_iters = 5000;
  int peer_proxy_iters = 300;
  double peer_s4_seconds = -1;  // -1: same as s4_seconds
};

[[noreturn]] void usage(const std::string &error) {
  std::cerr << "rlock-bench: " << error << "\n"
            << "usage: rlock-bench [options]\n"
               "  --smoke                 every scenario briefly (300 iterations, S4 1 s); exit 1 on\n"
               "                          any error or overlap\n"
               "  --json FILE             write the results (meta + one record per line)\n"
               "  --scenarios LIST        subset of S1,S2,S3,S4,S5 (default all)\n"
               "  --iters N               S1/S2 iterations per variant (20000)\n"
               "  --proxy-iters N         S3 iterations per variant (500)\n"
               "  --proxy-latency-ms N    S3 proxy latency each way (1)\n"
               "  --s4-seconds X          S4 duration per variant (10)\n"
               "  --s4-retry LIST         S4 rlock retry settings, 'default' or BASE:MAX ms\n"
               "                          (default,1:2,1:4,1:8)\n"
               "  --s5-seconds X          S5 duration per variant (5)\n"
               "  --s5-threads N          S5 threads (16)\n"
               "  --peer 'CMD'            run a peer script on the same servers (repeatable); it gets\n"
               "                          --ports --proxy-ports --iters --proxy-iters --s4-seconds\n"
               "  --peer-iters N          S1/S2 iterations for peers (5000)\n"
               "  --peer-proxy-iters N    S3 iterations for peers (300)\n"
               "  --peer-s4-seconds X     S4 duration for peers (as --s4-seconds)\n";
  std::exit(error == "help" ? 0 : 2);
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, sep))
    if (!item.empty()) v.push_back(item);
  return v;
}

Options parse(int argc, char **argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  // --smoke first sets the brief defaults; explicit flags still override them.
  for (auto &a : args) {
    if (a == "--smoke") {
      o.smoke = true;
      o.iters = 300;
      o.proxy_iters = 50;
      o.s4_seconds = 1;
      o.s4_retry = {"default", "1:4"};
      o.s5_iters = 200;
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string &f = args[i];
    if (f == "--smoke") continue;
    if (f == "-h" || f == "--help") usage("help");
    if (i + 1 >= args.size()) usage("missing value for " + f);
    const std::string v = args[++i];
    try {
      if (f == "--json") o.json_path = v;
      else if (f == "--scenarios") {
        o.scenarios.clear();
        for (auto &s : split(v, ',')) o.scenarios.insert(s);
      } else if (f == "--iters") o.iters = std::stoi(v);
      else if (f == "--proxy-iters") o.proxy_iters = std::stoi(v);
      else if (f == "--proxy-latency-ms") o.proxy_latency_ms = std::stoi(v);
      else if (f == "--s4-seconds") o.s4_seconds = std::stod(v);
      else if (f == "--s4-retry") o.s4_retry = split(v, ',');
      else if (f == "--s5-seconds") {
        o.s5_seconds = std::stod(v);
        o.s5_iters = 0;
      } else if (f == "--s5-threads") o.s5_threads = std::stoi(v);
      else if (f == "--peer") o.peers.push_back(v);
      else if (f == "--peer-iters") o.peer_iters = std::stoi(v);
      else if (f == "--peer-proxy-iters") o.peer_proxy_iters = std::stoi(v);
      else if (f == "--peer-s4-seconds") o.peer_s4_seconds = std::stod(v);
      else usage("unknown flag " + f);
    } catch (const std::invalid_argument &) {
      usage("bad value for " + f + ": " + v);
    }
  }
  if (o.peer_s4_seconds < 0) o.peer_s4_seconds = o.s4_seconds;
  return o;
}

// ---- machine and versions ---------------------------------------------------------------------------

std::string first_line_of(const std::string &cmd) {
  std::string out;
  if (FILE *p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    if (std::fgets(buf, sizeof buf, p)) out = buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string file_field(const std::string &path, const std::string &prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) {
      std::string v = line.substr(prefix.size());
      size_t s = v.find_first_not_of(" \t:=\"");
      v = s == std::string::npos ? "" : v.substr(s);
      while (!v.empty() && (v.back() == '"' || v.back() == ' ')) v.pop_back();
      return v;
    }
  }
  return "";
}

std::string redis_server_binary() {
  const char *env = std::getenv("RLOCK_REDIS_SERVER");
  return env && *env ? env : "redis-server";
}

JsonObject machine_and_versions(const Options &o) {
  char date[64];
  std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  utsname u{};
  ::uname(&u);
  JsonObject machine;
  machine.integer("nproc", ::sysconf(_SC_NPROCESSORS_ONLN))
      .str("cpu", file_field("/proc/cpuinfo", "model name"))
      .str("kernel", std::string(u.sysname) + " " + u.release + " " + u.machine)
      .str("os", file_field("/etc/os-release", "PRETTY_NAME"))
      .num("mem_gib", ::sysconf(_SC_PHYS_PAGES) * double(::sysconf(_SC_PAGESIZE)) / (1 << 30))
      .str("loadavg_at_start", first_line_of("cat /proc/loadavg"));
  std::string redis = first_line_of("'" + redis_server_binary() + "' --version 2>/dev/null");
  size_t v = redis.find("v=");
  JsonObject versions;
  versions
      .str("rlock", rlock_version())
      .str("redis-server", v == std::string::npos ? redis : redis.substr(v + 2, redis.find(' ', v) - v - 2))
      .str("hiredis", std::to_string(HIREDIS_MAJOR) + "." + std::to_string(HIREDIS_MINOR) + "." +
                          std::to_string(HIREDIS_PATCH))
      .str("libuv", uv_version_string())
      .str("compiler", "gcc " __VERSION__)
      .str("build_type", RLOCK_BENCH_BUILD_TYPE);
  JsonObject params;
  params.boolean("smoke", o.smoke)
      .integer("iters", o.iters)
      .integer("proxy_iters", o.proxy_iters)
      .integer("proxy_latency_ms", o.proxy_latency_ms)
      .num("s4_seconds", o.s4_seconds)
      .num("s5_seconds", o.s5_iters > 0 ? 0 : o.s5_seconds)
      .integer("s5_iters", o.s5_iters)
      .integer("s5_threads", o.s5_threads)
      .integer("peer_iters", o.peer_iters)
      .integer("peer_proxy_iters", o.peer_proxy_iters)
      .num("peer_s4_seconds", o.peer_s4_seconds);
  JsonObject meta;
  meta.str("date", date).obj("machine", machine).obj("versions", versions).obj("params", params);
  return meta;
}

// ---- measuring ----------------------------------------------------------------------------------------

// Times `iters` iterations of each op (true = success), after `warmup` untimed ones. The ops are
// interleaved in blocks (A B, B A, A B, ...) so that a baseline and what is compared with it see the
// same conditions even when the machine's load drifts during the run. Errors are counted and the
// first one's message kept.
struct Timed {
  std::vector<double> us;
  double seconds = 0;
  long long errors = 0;
  std::string first_error;
};

using Op = std::function<bool(std::string &)>;

std::vector<Timed> timed_interleaved(int warmup, int iters, const std::vector<Op> &ops) {
  const int kBlocks = 10;
  std::vector<Timed> t(ops.size());
  std::string err;
  for (size_t k = 0; k < ops.size(); ++k) {
    t[k].us.reserve(static_cast<size_t>(iters));
    for (int i = 0; i < warmup; ++i) {
      if (!ops[k](err)) {
        ++t[k].errors;
        if (t[k].first_error.empty()) t[k].first_error = "warm-up: " + err;
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    const int n = iters / kBlocks + (b < iters % kBlocks ? 1 : 0);
    for (size_t j = 0; j < ops.size(); ++j) {
      const size_t k = b % 2 ? ops.size() - 1 - j : j;
      auto begin = Clock::now();
      for (int i = 0; i < n; ++i) {
        auto t0 = Clock::now();
        bool ok = ops[k](err);
        auto t1 = Clock::now();
        t[k].us.push_back(us_between(t0, t1));
        if (!ok) {
          ++t[k].errors;
          if (t[k].first_error.empty()) t[k].first_error = err;
        }
      }
      t[k].seconds += std::chrono::duration<double>(Clock::now() - begin).count();
    }
  }
  return t;
}

Result latency_result(const std::string &id, const std::string &scenario, const std::string &impl,
                      const std::string &variant, int servers, int proxy_ms,
                      const std::string &baseline, const Timed &t,
                      const std::vector<std::string> &also_vs = {}, bool throughput = false) {
  Result r;
  r.id = id;
  r.baseline = baseline;
  r.throughput = throughput;
  r.latency = summarize(t.us);
  r.ops_per_s = t.seconds > 0 ? double(t.us.size()) / t.seconds : 0;
  r.errors = t.errors;
  r.json = record_head(id, scenario, impl, variant, servers, proxy_ms);
  std::string also = "[";
  for (auto &a : also_vs) also += (also.size() > 1 ? "," : "") + JsonObject::quote(a);
  r.json.str("baseline", baseline)
      .raw("also_vs", also + "]")
      .str("ratio_of", throughput ? "throughput" : "latency")
      .integer("iterations", static_cast<long long>(t.us.size()))
      .integer("errors", t.errors)
      .str("first_error", t.first_error)
      .summary("latency_us", r.latency)
      .num("ops_per_s", r.ops_per_s);
  if (!t.first_error.empty()) r.note = "first error: " + t.first_error;
  return r;
}

// One uncontended rlock acquire(0)+release on a lock.
Op rlock_op(rlock *l) {
  return [l](std::string &err) {
    int rc = rlock_acquire(l, 0);
    if (rc != RLOCK_OK) {
      err = "acquire: " + describe(rc);
      return false;
    }
    rc = rlock_release(l);
    if (rc != RLOCK_OK) {
      err = "release: " + describe(rc);
      return false;
    }
    return true;
  };
}

// One raw SET NX PX + EVALSHA delete, on one connection or pipelined over several.
Op raw_op(RawQuorum &q, const std::string &key, int64_t ttl_ms) {
  auto gen = std::make_shared<TokenGen>();
  return [&q, key, ttl_ms, gen](std::string &err) {
    try {
      std::string token = gen->next();
      if (q.lock(key, token, ttl_ms) != q.size()) {
        err = "SET NX not granted by every server";
        return false;
      }
      if (q.unlock(key, token) != q.size()) {
        err = "EVALSHA delete did not delete on every server";
        return false;
      }
      return true;
    } catch (const std::exception &e) {
      err = e.what();
      return false;
    }
  };
}

// ---- the run --------------------------------------------------------------------------------------------

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}

  int run() {
    JsonObject meta = machine_and_versions(o_);
    std::cout << "rlock-bench " << (o_.smoke ? "(smoke) " : "") << meta.text() << "\n";
    std::cout << "starting 5 redis-server processes (" << redis_server_binary() << ")\n";
    for (int i = 0; i < 5; ++i) {
      servers_.push_back(std::make_unique<rlock_test::RedisServer>());
      ports_.push_back(servers_.back()->port());
    }

    if (o_.scenarios.count("S1")) guarded("S1", [&] { s1(); });
    if (o_.scenarios.count("S2")) guarded("S2", [&] { s2(); });
    if (o_.scenarios.count("S3")) guarded("S3", [&] { s3(); });
    if (o_.scenarios.count("S4")) guarded("S4", [&] { s4(); });
    if (o_.scenarios.count("S5")) guarded("S5", [&] { s5(); });
    for (auto &p : o_.peers) run_peer(p);

    if (!o_.json_path.empty()) write_json(meta);
    proxies_.clear();
    servers_.clear();

    std::cout << "\n" << results_.size() << " results";
    if (!peer_lines_.empty()) std::cout << " + " << peer_lines_.size() << " peer records";
    std::cout << "; " << failures_ << " failure(s)\n";
    return failures_ ? 1 : 0;
  }

 private:
  void guarded(const char *name, const std::function<void()> &f) {
    try {
      f();
    } catch (const std::exception &e) {
      std::cout << name << ": FAILED: " << e.what() << "\n";
      ++failures_;
    }
  }

  void add(Result r) {
    const Result *base = nullptr;
    for (auto &x : results_)
      if (x.id == r.baseline) base = &x;
    char line[400];
    std::snprintf(line, sizeof line, "%-26s median %9.1f us  p99 %9.1f us  mean %9.1f  %9.0f ops/s",
                  r.id.c_str(), r.latency.median, r.latency.p99, r.latency.mean, r.ops_per_s);
    std::string ratio;
    if (base && base->latency.median > 0 && base->ops_per_s > 0) {
      char b[120];
      if (r.throughput)
        std::snprintf(b, sizeof b, "  x%.2f throughput of %s", r.ops_per_s / base->ops_per_s,
                      base->id.c_str());
      else
        std::snprintf(b, sizeof b, "  x%.2f median (x%.2f p99) of %s",
                      r.latency.median / base->latency.median, r.latency.p99 / base->latency.p99,
                      base->id.c_str());
      ratio = b;
    }
    std::cout << line << ratio << (r.note.empty() ? "" : "\n    " + r.note) << "\n" << std::flush;
    if (r.errors > 0) {
      std::cout << "    ERROR: " << r.errors << " failed operations\n";
      ++failures_;
    }
    if (r.overlaps > 0) {
      std::cout << "    ERROR: " << r.overlaps << " overlapping holders / lost updates\n";
      ++failures_;
    }
    results_.push_back(std::move(r));
  }

  std::vector<int> first(size_t n, const std::vector<int> &ports) const {
    return std::vector<int>(ports.begin(), ports.begin() + static_cast<long>(n));
  }

  // Raw baseline and rlock over the first n of `ports`, interleaved.
  void pair(const std::string &scenario, const std::string &prefix, const std::string &variant,
            size_t n, const std::vector<int> &ports, int proxy_ms, int iters, int warmup,
            const std::string &rlock_baseline = "", const std::vector<std::string> &also = {}) {
    const std::string key = "bench:" + prefix;
    RawQuorum q(kHost, first(n, ports));
    std::vector<ClientPtr> clients;
    for (int p : first(n, ports)) clients.push_back(make_client(p));
    LockPtr l = make_lock(clients, key + ":rlock", o_.ttl_ms);
    std::vector<Timed> t =
        timed_interleaved(warmup, iters, {raw_op(q, key + ":raw", o_.ttl_ms), rlock_op(l.get())});
    add(latency_result(prefix + "/raw", scenario, n == 1 ? "raw-hiredis" : "raw-hiredis-pipelined",
                       variant, static_cast<int>(n), proxy_ms, "", t[0]));
    add(latency_result(prefix + "/rlock", scenario, "rlock", variant, static_cast<int>(n), proxy_ms,
                       rlock_baseline.empty() ? prefix + "/raw" : rlock_baseline, t[1], also));
  }

  int warmup(int iters) const { return std::max(10, std::min(1000, iters / 10)); }

  void s1() { pair("S1", "S1", "single", 1, ports_, 0, o_.iters, warmup(o_.iters)); }

  void s2() {
    pair("S2", "S2/q3", "quorum-3", 3, ports_, 0, o_.iters, warmup(o_.iters));
    pair("S2", "S2/q5", "quorum-5", 5, ports_, 0, o_.iters, warmup(o_.iters));
  }

  // The latency proxies (one per server, each a thread of this process) are started only when a
  // scenario needs them, so that S1/S2 run without them.
  void start_proxies() {
    if (!proxies_.empty()) return;
    for (int i = 0; i < 5; ++i) {
      proxies_.push_back(std::make_unique<rlock_test::FaultProxy>(kHost, ports_[i]));
      proxies_.back()->set_latency_ms(o_.proxy_latency_ms);
      proxy_ports_.push_back(proxies_.back()->port());
    }
  }

  void s3() {
    start_proxies();
    const int w = std::max(10, o_.proxy_iters / 20), ms = o_.proxy_latency_ms;
    pair("S3", "S3/single", "single via proxy", 1, proxy_ports_, ms, o_.proxy_iters, w);
    // The quorum target compares with rlock's own single-server time through the same proxies.
    pair("S3", "S3/q5", "quorum-5 via proxies", 5, proxy_ports_, ms, o_.proxy_iters, w,
         "S3/single/rlock", {"S3/q5/raw"});
  }

  void s4() {
    for (size_t n : {size_t(1), size_t(3)}) {
      const std::string prefix = "S4/n" + std::to_string(n);
      ContentionParams p;
      p.ports = first(n, ports_);
      p.seconds = o_.s4_seconds;
      p.impl = "raw";
      p.retry = "spin";
      guarded(prefix.c_str(), [&] { add(run_contention(p, prefix + "/raw-spin", "")); });
      p.impl = "rlock";
      for (auto &retry : o_.s4_retry) {
        p.retry = retry;
        std::string tag = retry;
        for (auto &c : tag)
          if (c == ':') c = '-';
        guarded(prefix.c_str(),
                [&] { add(run_contention(p, prefix + "/rlock/" + tag, prefix + "/raw-spin")); });
      }
    }
  }

  // S5: `threads` threads, each with its own key, all on one shared rlock_client, against the same
  // number of threads each with its own raw connection. The two alternate in rounds (raw, rlock,
  // rlock, raw) so that both see the same machine load.
  void s5() {
    const size_t nt = static_cast<size_t>(o_.s5_threads);
    std::vector<std::unique_ptr<RawQuorum>> conns;
    std::vector<Op> raw_ops, rlock_ops;
    for (size_t i = 0; i < nt; ++i) {
      conns.push_back(std::make_unique<RawQuorum>(kHost, std::vector<int>{ports_[0]}));
      raw_ops.push_back(raw_op(*conns.back(), "bench:S5:raw:" + std::to_string(i), o_.ttl_ms));
    }
    ClientPtr shared = make_client(ports_[0]);
    std::vector<LockPtr> locks;
    for (size_t i = 0; i < nt; ++i) {
      rlock *l = nullptr;
      std::string key = "bench:S5:rlock:" + std::to_string(i);
      int rc = rlock_new(shared.get(), key.c_str(), o_.ttl_ms, &l);
      if (rc != RLOCK_OK) throw std::runtime_error("rlock_new: " + describe(rc));
      locks.emplace_back(l);
      rlock_ops.push_back(rlock_op(l));
    }
    const int rounds = 4;
    Timed raw, rl;
    for (int r = 0; r < rounds; ++r) {
      bool rlock_turn = r == 1 || r == 2;
      merge(rlock_turn ? rl : raw, run_threads(rlock_turn ? rlock_ops : raw_ops, rounds / 2));
    }
    const std::string variant = std::to_string(nt) + " threads";
    Result r = latency_result("S5/raw", "S5", "raw-hiredis", variant, 1, 0, "", raw, {}, true);
    r.json.integer("threads", o_.s5_threads).str("settings", "one connection per thread");
    add(std::move(r));
    r = latency_result("S5/rlock", "S5", "rlock", variant, 1, 0, "S5/raw", rl, {}, true);
    r.json.integer("threads", o_.s5_threads).str("settings", "one shared rlock_client");
    add(std::move(r));
  }

  static void merge(Timed &into, const Timed &t) {
    into.us.insert(into.us.end(), t.us.begin(), t.us.end());
    into.seconds += t.seconds;
    into.errors += t.errors;
    if (into.first_error.empty()) into.first_error = t.first_error;
  }

  // One round of S5: a thread per op, started together, each running its op for the round's share
  // of the duration (or of the iterations), after a short warm-up.
  Timed run_threads(const std::vector<Op> &ops, int rounds_per_kind) {
    const size_t nt = ops.size();
    std::vector<Timed> per(nt);
    std::atomic<size_t> ready{0};
    std::atomic<bool> go{false};
    Clock::time_point begin, deadline;
    std::vector<Clock::time_point> finish(nt);
    const long iters = o_.s5_iters > 0 ? std::max(1, o_.s5_iters / rounds_per_kind) : 0;
    std::vector<std::thread> threads;
    for (size_t k = 0; k < nt; ++k) {
      threads.emplace_back([&, k] {
        std::string err;
        for (int w = 0; w < 20; ++w) ops[k](err);
        per[k].us.reserve(iters > 0 ? static_cast<size_t>(iters) : size_t(1) << 15);
        ready++;
        while (!go.load()) std::this_thread::yield();
        for (long it = 0;; ++it) {
          if (iters > 0 ? it >= iters : Clock::now() >= deadline) break;
          auto t0 = Clock::now();
          bool ok = ops[k](err);
          per[k].us.push_back(us_between(t0, Clock::now()));
          if (!ok && per[k].errors++ == 0) per[k].first_error = err;
        }
        finish[k] = Clock::now();
      });
    }
    while (ready.load() < nt) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    begin = Clock::now();
    deadline = begin + std::chrono::microseconds(
                           static_cast<int64_t>(o_.s5_seconds * 1e6 / rounds_per_kind));
    go = true;
    for (auto &t : threads) t.join();
    Timed all;
    Clock::time_point end = begin;
    for (size_t k = 0; k < nt; ++k) {
      merge(all, per[k]);
      end = std::max(end, finish[k]);
    }
    all.seconds = std::chrono::duration<double>(end - begin).count();
    return all;
  }

  // Runs one peer script on the same servers and keeps the JSON lines it prints.
  void run_peer(const std::string &cmd) {
    start_proxies();
    auto csv = [](const std::vector<int> &v) {
      std::string s;
      for (int p : v) s += (s.empty() ? "" : ",") + std::to_string(p);
      return s;
    };
    std::string scen;
    for (auto &s : o_.scenarios) scen += (scen.empty() ? "" : ",") + s;
    char extra[200];
    std::snprintf(extra, sizeof extra, " --iters %d --proxy-iters %d --s4-seconds %g --proxy-latency-ms %d",
                  o_.peer_iters, o_.peer_proxy_iters, o_.peer_s4_seconds, o_.proxy_latency_ms);
    std::string full = cmd + " --ports " + csv(ports_) + " --proxy-ports " + csv(proxy_ports_) +
                       " --scenarios " + scen + extra;
    std::cout << "\npeer: " << full << "\n" << std::flush;
    FILE *p = ::popen(full.c_str(), "r");
    if (!p) {
      std::cout << "peer: cannot run\n";
      return;
    }
    char *line = nullptr;
    size_t cap = 0;
    ssize_t n;
    while ((n = ::getline(&line, &cap, p)) > 0) {
      std::string s(line, static_cast<size_t>(n));
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      if (!s.empty() && s.front() == '{' && s.back() == '}') {
        peer_lines_.push_back(s);
        std::cout << "  " << s.substr(0, 160) << (s.size() > 160 ? "..." : "") << "\n" << std::flush;
      } else {
        std::cout << "  " << s << "\n" << std::flush;
      }
    }
    std::free(line);
    int st = ::pclose(p);
    if (st != 0) {
      std::cout << "peer: exited with status " << st << " (its records so far are kept)\n";
      JsonObject o;
      o.str("kind", "peer_error").str("command", cmd).integer("status", st);
      peer_lines_.push_back(o.text());
    }
  }

  void write_json(const JsonObject &meta) {
    std::ofstream out(o_.json_path);
    out << "{\"meta\": " << meta.text() << ",\n\"records\": [\n";
    bool first_rec = true;
    for (auto &r : results_) {
      out << (first_rec ? "" : ",\n") << r.json.text();
      first_rec = false;
    }
    for (auto &l : peer_lines_) {
      out << (first_rec ? "" : ",\n") << l;
      first_rec = false;
    }
    out << "\n]}\n";
    if (!out) throw std::runtime_error("cannot write " + o_.json_path);
    std::cout << "results written to " << o_.json_path << "\n";
  }

  Options o_;
  std::vector<std::unique_ptr<rlock_test::RedisServer>> servers_;
  std::vector<std::unique_ptr<rlock_test::FaultProxy>> proxies_;
  std::vector<int> ports_, proxy_ports_;
  std::vector<Result> results_;
  std::vector<std::string> peer_lines_;
  int failures_ = 0;
};

}  // namespace
}  // namespace bench

int main(int argc, char **argv) {
  if (argc > 1 && std::string(argv[1]) == "--s4-worker") return bench::contention_worker_main(argc, argv);
  try {
    return bench::Bench(bench::parse(argc, argv)).run();
  } catch (const std::exception &e) {
    std::cerr << "rlock-bench: " << e.what() << "\n";
    return 1;
  }
}
