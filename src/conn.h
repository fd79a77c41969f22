// One connection to one Redis server, on the library's loop: our own libuv adapter for hiredis's
// async API (the one Debian ships hangs on a refused connect), connect and command deadlines
// (hiredis 0.14 has none for async commands), AUTH/SELECT handshake, and reconnection on demand.
// conn.cpp is the only file that includes hiredis.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loop.h"
#include "rlock.h"
#include "scripts.h"
#include "uri.h"

namespace rlk {

// A plain copy of a Redis reply.
struct Reply {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = Type::kNil;
  long long integer = 0;
  std::string str;
  std::vector<Reply> elements;
};

// The result of one command. status RLOCK_OK: `reply` is the server's (non-error) answer. Otherwise
// the command failed: RLOCK_ERR_TIMEOUT, RLOCK_ERR_IO, RLOCK_ERR_AUTH, RLOCK_ERR_SERVER (reply then
// holds the error reply), RLOCK_ERR_NOMEM; `detail` names the server and says what happened.
struct Result {
  int status = RLOCK_OK;
  std::string detail;
  Reply reply;
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  using Callback = std::function<void(Result &&)>;

  // Any thread. No I/O until the first command.
  static std::shared_ptr<Conn> create(Loop &loop, ServerAddress addr);
  ~Conn();

  const ServerAddress &address() const { return addr_; }
  Loop &loop() const { return loop_; }

  // Loop thread only. cb runs exactly once, on the loop thread, within connect_timeout (if a
  // connection has to be made) + command_timeout. A command that misses its deadline fails with
  // RLOCK_ERR_TIMEOUT and the connection is dropped, so no late reply can be matched to a later
  // request; the next command reconnects.
  void command(const std::vector<std::string> &args, Callback cb);
  // EVALSHA of the script; on NOSCRIPT (server restarted, SCRIPT FLUSH) the same call as EVAL.
  void eval(const Script &script, const std::vector<std::string> &keys,
            const std::vector<std::string> &args, Callback cb);

  // Pub/sub, loop thread only. A Conn that listens is in subscribe mode for good (it is a second
  // connection to the same server, see Client::subscriber); command() is not used on it.
  // on_message(payload) runs for every message published on `channel` until unlisten(channel, id). The
  // subscriptions are made again after a reconnect; messages published while disconnected are
  // lost (callers keep polling as a fallback).
  using Listener = std::function<void(const std::string &payload)>;
  uint64_t listen(const std::string &channel, Listener on_message);
  void unlisten(const std::string &channel, uint64_t id);

  // Loop thread only: close once the requests already made have finished (each is bounded by its
  // deadline). The object stays alive until its handles are closed.
  void shutdown();

  struct Session;  // one hiredis context and its requests in flight (conn.cpp)

 private:
  Conn(Loop &loop, ServerAddress addr);

  enum class State { kDown, kResolving, kConnecting, kHandshake, kReady, kClosed };
  struct Pending {
    std::vector<std::string> args;
    Callback cb;
  };

  void connect();
  void start_hiredis(const std::string &ip);
  void on_connected(Session *s, bool ok, const std::string &err);
  void on_session_lost(Session *s, int status, const std::string &detail);
  void send(Session *s, const std::vector<std::string> &args, Callback cb);
  void drop(int status, const std::string &detail, bool fail_waiting);
  void fail_waiting(int status, const std::string &detail);
  void flush_waiting();
  void become_ready();
  void send_pubsub(const char *verb, const std::string &channel);
  void dispatch(const std::string &channel, const std::string &payload);
  void reconnect_listener_later();
  void arm_deadline();
  void maybe_finish_shutdown();
  std::string where() const;

  friend struct ConnAccess;

  Loop &loop_;
  ServerAddress addr_;
  State state_ = State::kDown;
  Session *session_ = nullptr;  // owned by hiredis/libuv; freed in its handle's close callback
  std::deque<Pending> waiting_;  // not yet sent: waiting for the connection
  std::unique_ptr<Timer> timer_;  // connect deadline, then the earliest command deadline
  std::unique_ptr<Timer> kick_;   // starts a reconnect on a fresh stack
  uint64_t generation_ = 0;       // connection attempts; stale resolver answers are ignored
  size_t handshake_left_ = 0;
  bool shutting_down_ = false;
  bool pubsub_ = false;  // subscribe mode
  std::map<std::string, std::map<uint64_t, Listener>> channels_;
  uint64_t next_listener_ = 1;
  uint64_t listen_retry_ms_ = 250;  // pause before the listening connection is made again
  std::shared_ptr<Conn> self_;    // alive while loop handles may call back into us
};

}  // namespace rlk
