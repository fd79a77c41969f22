// Parsing of the server URIs accepted by rlock_client_new. Pure: no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rlk {

struct ServerAddress {
  bool is_unix = false;
  std::string host;       // name or numeric address, IPv6 without brackets
  int port = 6379;
  std::string unix_path;  // for unix://
  std::string user;       // empty: default user
  std::string password;   // empty with has_password false: no AUTH
  bool has_password = false;
  int64_t db = 0;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{500};

  // "host:port", "[v6]:port" or "unix:/path": names the server in messages and identifies it for
  // duplicate checks in quorum locks.
  std::string display() const;
};

// Throws rlk::Error(RLOCK_ERR_INVALID, reason) for anything malformed.
ServerAddress parse_uri(const std::string &uri);

}  // namespace rlk
