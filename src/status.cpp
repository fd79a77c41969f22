#include "status.h"

namespace rlk {

const char *status_text(int status) noexcept {
  switch (status) {
    case RLOCK_OK: return "success";
    case RLOCK_ERR_BUSY: return "the lock is held by another owner";
    case RLOCK_ERR_NOT_HELD: return "this handle does not hold the lock (never acquired, released, expired or taken over)";
    case RLOCK_ERR_INVALID: return "invalid argument or state";
    case RLOCK_ERR_TIMEOUT: return "a Redis server did not answer within its timeout";
    case RLOCK_ERR_IO: return "connection to a Redis server failed or was lost";
    case RLOCK_ERR_SERVER: return "a Redis server answered with an error";
    case RLOCK_ERR_NO_QUORUM: return "too few servers answered or agreed to reach a quorum";
    case RLOCK_ERR_NOMEM: return "out of memory";
    case RLOCK_ERR_AUTH: return "authentication or ACL failure";
    case RLOCK_ERR_INTERNAL: return "internal error in rlock";
    case RLOCK_ERR_CANCELED: return "the call was canceled because its handle was freed";
    case RLOCK_SERVER_PENDING: return "no answer from this server was needed or received yet";
    default: return "unknown rlock status code";
  }
}

const char *err_name(int status) noexcept {
  switch (status) {
    case RLOCK_OK: return "RLOCK_OK";
    case RLOCK_ERR_BUSY: return "RLOCK_ERR_BUSY";
    case RLOCK_ERR_NOT_HELD: return "RLOCK_ERR_NOT_HELD";
    case RLOCK_ERR_INVALID: return "RLOCK_ERR_INVALID";
    case RLOCK_ERR_TIMEOUT: return "RLOCK_ERR_TIMEOUT";
    case RLOCK_ERR_IO: return "RLOCK_ERR_IO";
    case RLOCK_ERR_SERVER: return "RLOCK_ERR_SERVER";
    case RLOCK_ERR_NO_QUORUM: return "RLOCK_ERR_NO_QUORUM";
    case RLOCK_ERR_NOMEM: return "RLOCK_ERR_NOMEM";
    case RLOCK_ERR_AUTH: return "RLOCK_ERR_AUTH";
    case RLOCK_ERR_INTERNAL: return "RLOCK_ERR_INTERNAL";
    case RLOCK_ERR_CANCELED: return "RLOCK_ERR_CANCELED";
    case RLOCK_SERVER_PENDING: return "RLOCK_SERVER_PENDING";
    default: return "RLOCK_ERR_UNKNOWN";
  }
}

namespace {
thread_local std::string t_last_error;
}

void set_last_error(std::string msg) noexcept {
  try {
    t_last_error = std::move(msg);
  } catch (...) {
    t_last_error.clear();  // keep going without the detail rather than fail the call
  }
}

void clear_last_error() noexcept { t_last_error.clear(); }

const char *last_error() noexcept { return t_last_error.c_str(); }

}  // namespace rlk
