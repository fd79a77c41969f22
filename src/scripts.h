// The Lua scripts that make each per-server step atomic, with their SHA-1 names for EVALSHA.
#pragma once

#include <string>
#include <vector>

namespace rlk {

struct Script {
  const char *name;
  std::string body;
  std::string sha;  // sha1_hex(body), computed once
};

// ACQUIRE  KEYS[1]=key KEYS[2]=fence key KEYS[3]=waiters key
//          ARGV[1]=token ARGV[2]=ttl_ms ARGV[3]=queue entry "token:ttl_ms" ("": not waiting)
//          ARGV[4]="1": rejoin at the front  ARGV[5]="1": in order (respect the queue)
//   -> {1, fence}: granted (SET NX PX, or the key already holds our token: from an earlier request
//                  of this acquisition whose reply we lost, or handed to us by a release)
//      {0, pttl}:  held by another owner; pttl = its remaining ms (-1: the key has no TTL; -2:
//                  the key is free but earlier waiters are queued); a waiter is now queued
// RELEASE  KEYS[1]=key KEYS[2]=waiters key KEYS[3]=fence key
//          ARGV[1]=token ARGV[2]=channel ARGV[3]="1": hand the lock to the first waiter
//   -> 1 deleted (the first queued waiter's entry is published on the channel, and with ARGV[3]
//      the lock is handed to it), 0 not ours
// EXTEND   KEYS[1]=key  ARGV[1]=token ARGV[2]=ttl_ms   -> 1 extended, 0 not ours
// RAISE    KEYS[1]=key KEYS[2]=fence key  ARGV[1]=token ARGV[2]=fence
//   -> 1: the key holds our token and the counter is now >= fence; 0: not ours (counter untouched)
const Script &acquire_script();
const Script &release_script();
const Script &extend_script();
const Script &raise_script();

// All of the above, e.g. to SCRIPT LOAD them on a new connection.
const std::vector<const Script *> &all_scripts();

// The name of the fencing counter kept next to a lock key.
std::string fence_key(const std::string &key);

// The pub/sub channel on which releases of a key are announced to waiters.
std::string release_channel(const std::string &key);

// The sorted set of the waiters of a key, first in line first.
std::string waiters_key(const std::string &key);

}  // namespace rlk
