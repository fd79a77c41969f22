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

// ACQUIRE  KEYS[1]=key KEYS[2]=fence key KEYS[3]=waiters key KEYS[4]=hand-off key
//          ARGV[1]=token ARGV[2]=ttl_ms ARGV[3]=waiter id ("": not waiting) ARGV[4]="1": front
//          ARGV[5]="1": hand off in order (respect the queue and reservations)
//   -> {1, fence}: granted (SET NX PX, or the key already holds our token from an earlier request of
//                  this same acquisition whose reply we lost), fence = the new fencing counter value
//      {0, pttl}:  held by another owner; pttl = its remaining ms (-1: the key has no TTL; -2:
//                  the key is free but reserved for, or queued by, earlier waiters); a waiter is
//                  now queued
// RELEASE  KEYS[1]=key KEYS[2]=waiters key KEYS[3]=hand-off key
//          ARGV[1]=token ARGV[2]=channel ARGV[3]=grace ms (0: no reservation)
//   -> 1 deleted (the first queued waiter gets the lock reserved for the grace period and its id
//      published on the channel), 0 not ours
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

// The id of the waiter a release just woke, holding the free lock for it for a short while.
std::string handoff_key(const std::string &key);

// How long a release reserves the free lock for the waiter it woke.
constexpr int kHandoffGraceMs = 250;

}  // namespace rlk
