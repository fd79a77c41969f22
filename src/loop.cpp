#include "loop.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

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
      self->closed_ = true;
    } else {
      uv_async_send(&self->wake_);
    }
  }
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

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
