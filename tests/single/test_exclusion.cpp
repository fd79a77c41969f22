// Mutual exclusion under contention: threads and processes hammer one key; each holder checks that
// nobody else is inside its critical section and that fencing tokens only grow.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"
#include "support/redis_server.h"

using namespace rlock_test;

namespace {

// Lives in MAP_SHARED memory so forked processes and threads see the same counters.
struct Shared {
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> fence_regressions{0};
  std::atomic<int> acquisitions{0};
  std::atomic<int> errors{0};
  std::atomic<uint64_t> last_fence{0};
  char last_error[256];
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared-memory atomics must be lock-free");

Shared *map_shared() {
  void *p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  return new (p) Shared();
}

// One contender: `rounds` acquisitions with its own client and handle.
void contend(Shared *sh, const std::string &uri, const std::string &key, int rounds) {
  auto c = make_client(uri);
  auto l = make_lock(c.get(), key, 10000);
  rlock_set_retry_delay_ms(l.get(), 1, 8);
  for (int i = 0; i < rounds; ++i) {
    int rc = rlock_acquire(l.get(), 20000);
    if (rc != RLOCK_OK) {
      sh->errors++;
      snprintf(sh->last_error, sizeof sh->last_error, "%s: %s", rlock_err_name(rc), rlock_last_error());
      continue;
    }
    if (sh->inside.fetch_add(1) != 0) sh->overlaps++;
    uint64_t f = rlock_fencing_token(l.get());
    if (f <= sh->last_fence.load()) sh->fence_regressions++;
    sh->last_fence.store(f);
    sh->acquisitions++;
    for (volatile int spin = 0; spin < 2000; ++spin) {
    }
    if (sh->inside.load() != 1) sh->overlaps++;
    sh->inside.fetch_sub(1);
    if (rlock_release(l.get()) != RLOCK_OK) sh->errors++;
  }
}

}  // namespace

TEST_CASE("threads and processes contending on one key never overlap and fencing tokens only grow") {
  RedisServer srv;
  Shared *sh = map_shared();
  const std::string key = unique_key("exclusion");
  const int kProcs = 3, kThreads = 3, kRounds = 400;

  // Fork before this process uses rlock in this test: the children make their own clients.
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        contend(sh, srv.uri(), key, kRounds);
      } catch (...) {
        sh->errors++;
      }
      _exit(0);
    }
    kids.push_back(pid);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([&] { contend(sh, srv.uri(), key, kRounds); });
  for (auto &t : threads) t.join();
  for (pid_t pid : kids) {
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }
  INFO("last error: " << sh->last_error);
  CHECK(sh->errors.load() == 0);
  CHECK(sh->overlaps.load() == 0);
  CHECK(sh->fence_regressions.load() == 0);
  CHECK(sh->acquisitions.load() == (kProcs + kThreads) * kRounds);
  CHECK_FALSE(srv.exists(key));
  munmap(sh, sizeof(Shared));
}
