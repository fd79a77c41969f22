#include "uri.h"

#include <cctype>

#include "status.h"

namespace rlk {
namespace {

[[noreturn]] void bad(const std::string &uri, const std::string &why) {
  throw Error(RLOCK_ERR_INVALID, "bad URI '" + uri + "': " + why);
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string pct_decode(const std::string &uri, const std::string &s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) bad(uri, "truncated percent-escape");
    int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
    if (hi < 0 || lo < 0) bad(uri, "bad percent-escape");
    char c = static_cast<char>(hi * 16 + lo);
    if (c == '\0') bad(uri, "percent-escape decodes to NUL");
    out += c;
    i += 2;
  }
  return out;
}

int64_t parse_int(const std::string &uri, const std::string &what, const std::string &s, int64_t lo,
                  int64_t hi) {
  if (s.empty() || s.size() > 18) bad(uri, what + " must be a number in " + std::to_string(lo) + ".." + std::to_string(hi));
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') bad(uri, what + " must be a number in " + std::to_string(lo) + ".." + std::to_string(hi));
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) bad(uri, what + " must be in " + std::to_string(lo) + ".." + std::to_string(hi));
  return v;
}

constexpr int64_t kMaxTimeoutMs = 3600000;

// Applies the query string; unix:// also takes db, user and password there.
void apply_query(const std::string &uri, const std::string &query, bool is_unix, ServerAddress &a) {
  if (query.empty()) return;
  bool seen_ct = false, seen_cmd = false, seen_db = false, seen_user = false, seen_pw = false;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    std::string kv = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (kv.empty()) bad(uri, "empty query parameter");
    size_t eq = kv.find('=');
    if (eq == std::string::npos) bad(uri, "query parameter '" + kv + "' has no value");
    std::string k = kv.substr(0, eq), v = pct_decode(uri, kv.substr(eq + 1));
    auto once = [&](bool &seen) {
      if (seen) bad(uri, "query parameter '" + k + "' given twice");
      seen = true;
    };
    if (k == "connect_timeout_ms") {
      once(seen_ct);
      a.connect_timeout = std::chrono::milliseconds(parse_int(uri, k, v, 1, kMaxTimeoutMs));
    } else if (k == "command_timeout_ms") {
      once(seen_cmd);
      a.command_timeout = std::chrono::milliseconds(parse_int(uri, k, v, 1, kMaxTimeoutMs));
    } else if (is_unix && k == "db") {
      once(seen_db);
      a.db = parse_int(uri, k, v, 0, 1000000);
    } else if (is_unix && k == "user") {
      once(seen_user);
      if (v.empty()) bad(uri, "empty user");
      a.user = v;
    } else if (is_unix && k == "password") {
      once(seen_pw);
      a.password = v;
      a.has_password = true;
    } else {
      bad(uri, "unknown query parameter '" + k + "' (known: connect_timeout_ms, command_timeout_ms" +
                   std::string(is_unix ? ", db, user, password)" : ")"));
    }
    if (amp == query.size()) break;
  }
  if (!a.user.empty() && !a.has_password) bad(uri, "a user needs a password");
}

}  // namespace

std::string ServerAddress::display() const {
  if (is_unix) return "unix:" + unix_path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

ServerAddress parse_uri(const std::string &uri) {
  ServerAddress a;
  for (char c : uri)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) bad(uri, "contains a space or control character");
  std::string rest;
  if (uri.rfind("redis://", 0) == 0) {
    rest = uri.substr(8);
  } else if (uri.rfind("unix://", 0) == 0) {
    a.is_unix = true;
    rest = uri.substr(7);
  } else if (uri.rfind("rediss://", 0) == 0) {
    bad(uri, "TLS (rediss://) is not supported by this build (Debian's hiredis 0.14 has no TLS)");
  } else {
    bad(uri, "expected redis://host[:port][/db] or unix:///path");
  }
  std::string query;
  size_t q = rest.find('?');
  if (q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.resize(q);
    if (query.empty()) bad(uri, "empty query string");
  }
  if (rest.find('#') != std::string::npos) bad(uri, "fragments (#) are not allowed");

  if (a.is_unix) {
    if (rest.empty() || rest[0] != '/') bad(uri, "unix:// needs an absolute path, e.g. unix:///run/redis.sock");
    a.unix_path = pct_decode(uri, rest);
    if (a.unix_path.size() >= 108) bad(uri, "unix socket path is too long");
    apply_query(uri, query, true, a);
    return a;
  }

  // redis://[[user]:password@]host[:port][/db]
  std::string authority = rest, path;
  size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }
  size_t at = authority.rfind('@');
  if (at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = userinfo.find(':');
    if (colon == std::string::npos) {
      // redis://secret@host is a common mistake for redis://:secret@host; reject it clearly.
      bad(uri, "credentials must be written user:password@ or :password@");
    }
    a.user = pct_decode(uri, userinfo.substr(0, colon));
    a.password = pct_decode(uri, userinfo.substr(colon + 1));
    a.has_password = true;
  }
  if (authority.empty()) bad(uri, "missing host");
  std::string port;
  if (authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) bad(uri, "unterminated [IPv6] address");
    a.host = authority.substr(1, close - 1);
    if (a.host.empty()) bad(uri, "empty [IPv6] address");
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') bad(uri, "garbage after ]");
      port = after.substr(1);
      if (port.empty()) bad(uri, "empty port");
    }
  } else {
    size_t colon = authority.find(':');
    a.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) bad(uri, "empty port");
    }
    if (a.host.empty()) bad(uri, "missing host");
    for (char c : a.host)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
        bad(uri, "bad character in host name");
  }
  if (!port.empty()) a.port = static_cast<int>(parse_int(uri, "port", port, 1, 65535));
  if (!path.empty()) a.db = parse_int(uri, "database number", path, 0, 1000000);
  apply_query(uri, query, false, a);
  return a;
}

}  // namespace rlk
