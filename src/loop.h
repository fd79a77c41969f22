// The library's event-loop thread: one uv_loop for all Redis I/O of the process, started with the
// first client and stopped when the last user of it goes away. SIGPIPE is blocked on it, so a write
// to a closed socket becomes EPIPE instead of killing the host process.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace rlk {

class Loop {
 public:
  // The shared loop, started if no one holds it. Throws on failure to start.
  static std::shared_ptr<Loop> get();
  ~Loop();  // stops and joins; must not run on the loop thread
  Loop(const Loop &) = delete;
  Loop &operator=(const Loop &) = delete;

  // Runs fn on the loop thread, in submission order. Thread-safe; callable from the loop thread too
  // (then fn runs on a later iteration, never re-entrantly).
  void post(std::function<void()> fn);

  // Loop thread only: runs fn once, after the callbacks of this loop iteration and before the loop
  // polls for I/O again. Used to write what those callbacks queued in one go, without another poll
  // round.
  void before_poll(std::function<void()> fn) { before_poll_.push_back(std::move(fn)); }

  uv_loop_t *uv() { return &loop_; }
  bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  Loop();
  void run();
  static void on_async(uv_async_t *h);
  static void on_prepare(uv_prepare_t *h);

  uv_loop_t loop_{};
  uv_async_t wake_{};
  uv_prepare_t prepare_{};
  std::vector<std::function<void()>> before_poll_;  // loop thread only
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
  pid_t pid_;  // process that started the thread: a forked child gets a loop of its own
  bool stopping_ = false;
  bool closed_ = false;  // wake_ is closed: the loop is finishing its last handles
  std::thread thread_;
};

// Blocks the calling thread until the operation it started on the loop calls done(). When recent
// operations were quick (a loopback round trip is tens of microseconds, less than two thread
// wake-ups cost), the caller first spins briefly, then sleeps on a futex. At most one caller per
// spare CPU (of the process's affinity mask) spins at a time.
class Waiter {
 public:
  void done() noexcept;  // loop thread; touches nothing of *this after waking the caller
  void wait() noexcept;

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::atomic<int> state_{0};  // 0 running, 1 caller asleep, 2 done
};

// A libuv timer owned by loop-thread code. Start/stop on the loop thread only; close() (also on the
// loop thread) hands the handle to libuv, which frees it after its close callback.
class Timer {
 public:
  explicit Timer(uv_loop_t *loop);
  ~Timer();  // closes if still open; loop thread only
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;
  void start(uint64_t ms, std::function<void()> fn);
  void stop();

 private:
  struct Handle {
    uv_timer_t timer;
    std::function<void()> fn;
  };
  Handle *h_;
};

}  // namespace rlk
