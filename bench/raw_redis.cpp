#include "raw_redis.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>

namespace bench {

namespace {

// The compare-and-delete every Redis lock releases with.
const char *kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

}  // namespace

TokenGen::TokenGen() {
  std::random_device rd;
  s_[0] = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ 0x9e3779b97f4a7c15ULL;
  s_[1] = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid());
}

std::string TokenGen::next() {
  static const char hex[] = "0123456789abcdef";
  std::string t(32, '0');
  for (int half = 0; half < 2; ++half) {
    // xorshift128+
    uint64_t x = s_[0];
    const uint64_t y = s_[1];
    s_[0] = y;
    x ^= x << 23;
    s_[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    uint64_t v = s_[1] + y;
    for (int i = 0; i < 16; ++i) t[static_cast<size_t>(half * 16 + i)] = hex[(v >> (i * 4)) & 15];
  }
  return t;
}

void RawConn::ReplyDeleter::operator()(redisReply *r) const {
  if (r) freeReplyObject(r);
}

RawConn::RawConn(const std::string &host, int port) : host_(host), port_(port) {
  timeval tv{2, 0};
  c_ = redisConnectWithTimeout(host.c_str(), port, tv);
  if (!c_ || c_->err) {
    std::string e = c_ ? c_->errstr : "out of memory";
    if (c_) redisFree(c_);
    c_ = nullptr;
    throw std::runtime_error(where() + ": connect: " + e);
  }
  timeval cmd{5, 0};
  redisSetTimeout(c_, cmd);
  const char *argv[] = {"SCRIPT", "LOAD", kReleaseScript};
  size_t lens[] = {6, 4, std::strlen(kReleaseScript)};
  redisAppendCommandArgv(c_, 3, argv, lens);
  Reply r = read();
  if (r->type != REDIS_REPLY_STRING) throw std::runtime_error(where() + ": SCRIPT LOAD failed");
  sha_.assign(r->str, r->len);
}

RawConn::~RawConn() {
  if (c_) redisFree(c_);
}

std::string RawConn::where() const { return host_ + ":" + std::to_string(port_); }

void RawConn::send_lock(const std::string &key, const std::string &token, int64_t ttl_ms) {
  std::string ttl = std::to_string(ttl_ms);
  const char *argv[] = {"SET", key.c_str(), token.c_str(), "NX", "PX", ttl.c_str()};
  size_t lens[] = {3, key.size(), token.size(), 2, 2, ttl.size()};
  redisAppendCommandArgv(c_, 6, argv, lens);
  flush();
}

void RawConn::send_unlock(const std::string &key, const std::string &token) {
  const char *argv[] = {"EVALSHA", sha_.c_str(), "1", key.c_str(), token.c_str()};
  size_t lens[] = {7, sha_.size(), 1, key.size(), token.size()};
  redisAppendCommandArgv(c_, 5, argv, lens);
  flush();
}

void RawConn::flush() {
  int done = 0;
  while (!done) {
    if (redisBufferWrite(c_, &done) != REDIS_OK)
      throw std::runtime_error(where() + ": write: " + c_->errstr);
  }
}

RawConn::Reply RawConn::read() {
  void *r = nullptr;
  if (redisGetReply(c_, &r) != REDIS_OK || !r)
    throw std::runtime_error(where() + ": read: " + c_->errstr);
  Reply reply(static_cast<redisReply *>(r));
  if (reply->type == REDIS_REPLY_ERROR)
    throw std::runtime_error(where() + ": error reply: " + std::string(reply->str, reply->len));
  return reply;
}

bool RawConn::read_lock() {
  Reply r = read();
  return r->type == REDIS_REPLY_STATUS && r->len == 2 && std::memcmp(r->str, "OK", 2) == 0;
}

bool RawConn::read_unlock() {
  Reply r = read();
  return r->type == REDIS_REPLY_INTEGER && r->integer == 1;
}

bool RawConn::lock(const std::string &key, const std::string &token, int64_t ttl_ms) {
  send_lock(key, token, ttl_ms);
  return read_lock();
}

bool RawConn::unlock(const std::string &key, const std::string &token) {
  send_unlock(key, token);
  return read_unlock();
}

RawQuorum::RawQuorum(const std::string &host, const std::vector<int> &ports) {
  for (int p : ports) conns_.push_back(std::make_unique<RawConn>(host, p));
}

size_t RawQuorum::lock(const std::string &key, const std::string &token, int64_t ttl_ms) {
  for (auto &c : conns_) c->send_lock(key, token, ttl_ms);
  size_t granted = 0;
  for (auto &c : conns_) granted += c->read_lock() ? 1 : 0;
  return granted;
}

size_t RawQuorum::unlock(const std::string &key, const std::string &token) {
  for (auto &c : conns_) c->send_unlock(key, token);
  size_t deleted = 0;
  for (auto &c : conns_) deleted += c->read_unlock() ? 1 : 0;
  return deleted;
}

}  // namespace bench
