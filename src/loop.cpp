#include "loop.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include <stdexcept>
#include <string>

namespace rlk {

std::shared_ptr<Loop> Loop::get() {
  static std::mutex mu;
  static std::weak_ptr<Loop> current;
  std::lock_guard<std::mutex> g(mu);
  // After fork() the child has no loop thread: objects from the parent must not be used there, and
  // new clients get a fresh loop (the parent's is abandoned in the child, not touched).
  if (auto p = current.lock()) {
    if (p->pid_ == getpid()) return p;
    new std::shared_ptr<Loop>(std::move(p));  // leak on purpose: its thread does not exist here
  }
  std::shared_ptr<Loop> p(new Loop());
  current = p;
  return p;
}

Loop::Loop() : pid_(getpid()) {
  int rc = uv_loop_init(&loop_);
  if (rc != 0) throw std::runtime_error(std::string("uv_loop_init: ") + uv_strerror(rc));
  rc = uv_async_init(&loop_, &wake_, on_async);
  if (rc != 0) {
    uv_loop_close(&loop_);
    throw std::runtime_error(std::string("uv_async_init: ") + uv_strerror(rc));
  }
  wake_.data = this;
  uv_prepare_init(&loop_, &prepare_);
  prepare_.data = this;
  uv_prepare_start(&prepare_, on_prepare);
  // Block SIGPIPE (and every other signal) on the loop thread only: it inherits the mask current at
  // creation, which we set around std::thread's constructor and restore at once.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    uv_close(reinterpret_cast<uv_handle_t *>(&wake_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t *>(&prepare_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

Loop::~Loop() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stopping_ = true;
  }
  uv_async_send(&wake_);
  thread_.join();
  uv_loop_close(&loop_);
}

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!closed_) {
      queue_.push_back(std::move(fn));
      uv_async_send(&wake_);
      return;
    }
  }
  // Only loop-thread code can still be running once the wake-up handle is closed (every API
  // object is gone); run the work now rather than lose it.
  fn();
}

void Loop::on_async(uv_async_t *h) {
  Loop *self = static_cast<Loop *>(h->data);
  std::vector<std::function<void()>> batch;
  bool stopping;
  {
    std::lock_guard<std::mutex> g(self->mu_);
    batch.swap(self->queue_);
    stopping = self->stopping_;
  }
  for (auto &fn : batch) fn();
  if (stopping) {
    std::lock_guard<std::mutex> g(self->mu_);
    if (self->queue_.empty()) {
      // Everything posted before the stop has run; close our handle. uv_run returns once the other
      // handles (connections finishing their last replies) are closed as well.
      uv_close(reinterpret_cast<uv_handle_t *>(&self->wake_), nullptr);
      uv_close(reinterpret_cast<uv_handle_t *>(&self->prepare_), nullptr);
      self->closed_ = true;
    } else {
      uv_async_send(&self->wake_);
    }
  }
}

void Loop::on_prepare(uv_prepare_t *h) {
  Loop *self = static_cast<Loop *>(h->data);
  while (!self->before_poll_.empty()) {
    auto batch = std::move(self->before_poll_);
    self->before_poll_.clear();
    for (auto &fn : batch) fn();
  }
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

namespace {
std::atomic<int> g_spinners{0};
// How long recent operations took, from being handed over to completing on the loop thread (not
// counting the caller's own wake-up), smoothed (exponential moving average, in ns).
std::atomic<int64_t> g_wait_ewma_ns{50000};
constexpr int64_t kMaxSpinNs = 100000;

// CPUs this process may run on (its affinity mask, which a container or taskset may narrow), less
// one for the loop thread: spinning where there is no spare CPU only delays the work we wait for.
int max_spinners() {
  static const int n = [] {
    cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                            : sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 1 ? static_cast<int>(cpus - 1) : 0;
  }();
  return n;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
long futex(std::atomic<int> *addr, int op, int val) {
  return syscall(SYS_futex, reinterpret_cast<int *>(addr), op, val, nullptr, nullptr, 0);
}
}  // namespace

void Waiter::done() noexcept {
  const int64_t took = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start_).count();
  const int64_t ewma = g_wait_ewma_ns.load(std::memory_order_relaxed);
  // Racy read-modify-write on purpose: it is a heuristic, and a lost update costs nothing.
  g_wait_ewma_ns.store(ewma + (std::min(took, 10 * kMaxSpinNs) - ewma) / 8, std::memory_order_relaxed);
  // After the exchange the caller may return and free *this; FUTEX_WAKE on a stale address is
  // harmless (at worst a spurious wake-up somewhere, which futex users must tolerate anyway).
  std::atomic<int> *addr = &state_;
  if (state_.exchange(2, std::memory_order_acq_rel) == 1) futex(addr, FUTEX_WAKE_PRIVATE, 1);
}

// Spins only when operations have recently been quick (a loopback round trip): the budget is twice
// their recent average, at most 100 us, and nothing when they take longer than that (a real network,
// or waiting for a contended lock), where spinning would only burn a CPU.
void Waiter::wait() noexcept {
  const auto t0 = start_;
  const int64_t ewma = g_wait_ewma_ns.load(std::memory_order_relaxed);
  const int64_t budget = ewma <= kMaxSpinNs ? std::min(2 * ewma, kMaxSpinNs) : 0;
  if (budget > 0 && g_spinners.fetch_add(1, std::memory_order_relaxed) < max_spinners()) {
    auto until = t0 + std::chrono::nanoseconds(budget);
    unsigned n = 0;
    while (state_.load(std::memory_order_acquire) != 2) {
      cpu_relax();
      if ((++n & 63) == 0 && std::chrono::steady_clock::now() > until) break;
    }
    g_spinners.fetch_sub(1, std::memory_order_relaxed);
  } else if (budget > 0) {
    g_spinners.fetch_sub(1, std::memory_order_relaxed);
  }
  int expected = 0;
  if (state_.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    while (state_.load(std::memory_order_acquire) != 2) futex(&state_, FUTEX_WAIT_PRIVATE, 1);
  }
}

Timer::Timer(uv_loop_t *loop) : h_(new Handle{}) {
  uv_timer_init(loop, &h_->timer);
  h_->timer.data = h_;
}

Timer::~Timer() {
  uv_timer_stop(&h_->timer);
  h_->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(&h_->timer),
           [](uv_handle_t *h) { delete static_cast<Handle *>(h->data); });
}

void Timer::start(uint64_t ms, std::function<void()> fn) {
  h_->fn = std::move(fn);
  uv_timer_start(
      &h_->timer,
      [](uv_timer_t *t) {
        auto *h = static_cast<Handle *>(t->data);
        auto run = std::move(h->fn);
        h->fn = nullptr;
        if (run) run();
      },
      ms, 0);
}

void Timer::stop() {
  uv_timer_stop(&h_->timer);
  h_->fn = nullptr;
}

}  // namespace rlk
