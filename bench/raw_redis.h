// The baselines of rlock-bench: raw synchronous hiredis doing the minimum work of a lock.
//
//   acquire: SET key token NX PX ttl
//   release: EVALSHA <compare-and-delete> 1 key token
//
// on one connection (RawConn::lock/unlock), or on N connections at once (RawQuorum: the N requests
// are all written before any reply is read, so the N servers work in parallel). No fencing counter,
// no retries, no timeouts beyond the socket's: this is the floor a lock library is measured against.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct redisContext;
struct redisReply;

namespace bench {

// A cheap per-thread token source (xorshift): 32 hex digits, like a 128-bit random token.
class TokenGen {
 public:
  TokenGen();
  std::string next();

 private:
  uint64_t s_[2];
};

class RawConn {
 public:
  // Connects (timeout 2 s, command timeout 5 s) and loads the release script. Throws
  // std::runtime_error on failure.
  RawConn(const std::string &host, int port);
  ~RawConn();
  RawConn(const RawConn &) = delete;
  RawConn &operator=(const RawConn &) = delete;

  // One synchronous round trip each. lock: true if SET NX answered OK; unlock: true if the key held
  // `token` and was deleted. Throw std::runtime_error on an I/O error or an error reply.
  bool lock(const std::string &key, const std::string &token, int64_t ttl_ms);
  bool unlock(const std::string &key, const std::string &token);

  // Split halves for pipelining over several connections: queue and flush the request, then read
  // its reply.
  void send_lock(const std::string &key, const std::string &token, int64_t ttl_ms);
  void send_unlock(const std::string &key, const std::string &token);
  bool read_lock();
  bool read_unlock();

 private:
  void flush();
  struct ReplyDeleter {
    void operator()(redisReply *r) const;
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
  Reply read();
  std::string where() const;

  redisContext *c_ = nullptr;
  std::string host_;
  int port_;
  std::string sha_;
};

// N connections used together: each request goes to all of them in parallel.
class RawQuorum {
 public:
  explicit RawQuorum(const std::string &host, const std::vector<int> &ports);
  // Number of servers that granted / deleted.
  size_t lock(const std::string &key, const std::string &token, int64_t ttl_ms);
  size_t unlock(const std::string &key, const std::string &token);
  size_t size() const { return conns_.size(); }
  size_t quorum() const { return conns_.size() / 2 + 1; }

 private:
  std::vector<std::unique_ptr<RawConn>> conns_;
};

}  // namespace bench
