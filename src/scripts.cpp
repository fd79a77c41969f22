#include "scripts.h"

#include "sha1.h"

namespace rlk {
namespace {

Script make(const char *name, const char *body) { return Script{name, body, sha1_hex(body)}; }

// The fencing counter is INCRed atomically with the SET (here, or in the release script when it
// hands the lock to a waiter). A counter that does not exist (new key, or a server restarted
// without persistence lost it) is seeded from the server clock in microseconds, so a restart does
// not send tokens backwards as long as the server clock did not step back and the key was never
// acquired more than once per microsecond on average. string.format('%.0f') keeps the seed an
// exact integer string (Lua 5.1's tostring would write 1.7e+15).
#define RLOCK_LUA_NEXT_FENCE                                 \
  "local function next_fence(k)\n"                           \
  "  local f = redis.call('INCR', k)\n"                      \
  "  if f == 1 then\n"                                       \
  "    local t = redis.call('TIME')\n"                       \
  "    f = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"      \
  "    redis.call('SET', k, string.format('%.0f', f))\n"     \
  "  end\n"                                                  \
  "  return f\n"                                             \
  "end\n"

// Waiting (ARGV[3] = the waiter's queue entry "token:ttl_ms", "" for a single attempt): a refused
// waiter joins the key's queue KEYS[3], a sorted set ordered by the server clock (ARGV[4] == "1":
// a woken waiter that still lost goes back to the front). The queue expires when nobody has joined
// it for a while, so waiters that died do not stay in it for long. A granted waiter leaves it.
// In order (ARGV[5] == "1", single-instance locks): a waiting caller that is not queued yet does not
// take a free lock while others are queued; releases hand the lock to the first of them (below).
// A single attempt (wait 0) ignores the queue.
const char *kAcquire = RLOCK_LUA_NEXT_FENCE R"LUA(
local waiting = ARGV[3] ~= ''
local function granted(f)
  if waiting then redis.call('ZREM', KEYS[3], ARGV[3]) end
  return {1, f}
end
local behind = waiting and ARGV[5] == '1' and redis.call('ZCARD', KEYS[3]) > 0 and
               not redis.call('ZSCORE', KEYS[3], ARGV[3])
if not behind and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return granted(next_fence(KEYS[2]))
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return granted(tonumber(redis.call('GET', KEYS[2]) or '0'))
end
local pttl = redis.call('PTTL', KEYS[1])
if waiting then
  local score = 0
  if ARGV[4] ~= '1' then
    local t = redis.call('TIME')
    score = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  redis.call('ZADD', KEYS[3], 'NX', string.format('%.0f', score), ARGV[3])
  redis.call('PEXPIRE', KEYS[3], math.max(tonumber(ARGV[2]), pttl) * 2 + 1000)
end
return {0, pttl}
)LUA";

// Deleting wakes exactly one waiter, the first in the key's queue (KEYS[2]), by publishing its
// entry on the channel ARGV[2]; the others keep waiting, instead of all retrying at once. With
// ARGV[3] == "1" (single-instance locks) the lock is handed to that waiter right here: the key gets
// its token and TTL and the fencing counter moves on (this is an acquisition), so nobody can barge
// in before the waiter's confirming attempt finds the key its own. pcall: a user without pub/sub rights (ACL) still releases; its
// waiters then find the lock theirs, or free, by polling.
const char *kRelease = RLOCK_LUA_NEXT_FENCE R"LUA(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local w = redis.call('ZPOPMIN', KEYS[2])
  if w[1] then
    if ARGV[3] == '1' then
      local token, ttl = string.match(w[1], '^(.*):(%d+)$')
      if token then
        redis.call('SET', KEYS[1], token, 'PX', ttl)
        next_fence(KEYS[3])
      end
    end
    redis.pcall('PUBLISH', ARGV[2], w[1])
  end
  return 1
end
return 0
)LUA";

const char *kExtend = R"LUA(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
)LUA";

// Used by quorum locks whose granting servers returned different counter values: lifts the
// counters of a quorum to the token handed out, so the next owner's quorum sees a larger value.
const char *kRaise = R"LUA(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
if c < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
)LUA";

}  // namespace

const Script &acquire_script() {
  static const Script s = make("acquire", kAcquire);
  return s;
}
const Script &release_script() {
  static const Script s = make("release", kRelease);
  return s;
}
const Script &extend_script() {
  static const Script s = make("extend", kExtend);
  return s;
}
const Script &raise_script() {
  static const Script s = make("raise", kRaise);
  return s;
}

const std::vector<const Script *> &all_scripts() {
  static const std::vector<const Script *> all{&acquire_script(), &release_script(), &extend_script(),
                                               &raise_script()};
  return all;
}

std::string fence_key(const std::string &key) { return key + ":fence"; }

std::string release_channel(const std::string &key) { return "rlock:released:" + key; }

std::string waiters_key(const std::string &key) { return key + ":waiters"; }

}  // namespace rlk
