// Status codes, their texts, and the thread-local detail message of the last failure.
#pragma once

#include <stdexcept>
#include <string>

#include "rlock.h"

namespace rlk {

// A failure inside the core, carrying its public status code. Thrown only on the caller's side of
// the API (argument checks, URI parsing); the event loop reports statuses as values instead.
class Error : public std::runtime_error {
 public:
  Error(int status, const std::string &what) : std::runtime_error(what), status_(status) {}
  int status() const noexcept { return status_; }

 private:
  int status_;
};

const char *status_text(int status) noexcept;
const char *err_name(int status) noexcept;

// The calling thread's detail message for the last failed call ("" after a success).
void set_last_error(std::string msg) noexcept;
void clear_last_error() noexcept;
const char *last_error() noexcept;


}  // namespace rlk
