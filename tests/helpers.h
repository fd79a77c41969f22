// Small RAII helpers for tests that use the public C API.
#pragma once

#include <rlock.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

namespace rlock_test {

struct ClientDeleter {
  void operator()(rlock_client *c) const { rlock_client_free(c); }
};
struct LockDeleter {
  void operator()(rlock *l) const { rlock_free(l); }
};
using ClientPtr = std::unique_ptr<rlock_client, ClientDeleter>;
using LockPtr = std::unique_ptr<rlock, LockDeleter>;

inline ClientPtr make_client(const std::string &uri) {
  rlock_client *c = nullptr;
  int rc = rlock_client_new(uri.c_str(), &c);
  if (rc != RLOCK_OK)
    throw std::runtime_error("rlock_client_new(" + uri + "): " + rlock_err_name(rc) + " " + rlock_last_error());
  return ClientPtr(c);
}

inline LockPtr make_lock(rlock_client *c, const std::string &key, int64_t ttl_ms) {
  rlock *l = nullptr;
  int rc = rlock_new(c, key.c_str(), ttl_ms, &l);
  if (rc != RLOCK_OK) throw std::runtime_error(std::string("rlock_new: ") + rlock_last_error());
  return LockPtr(l);
}

// Milliseconds taken by f().
template <class F>
int64_t elapsed_ms(F &&f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// A unique key per test so tests never see each other's state.
inline std::string unique_key(const std::string &base) {
  static int n = 0;
  return "test:" + base + ":" + std::to_string(++n);
}

}  // namespace rlock_test
