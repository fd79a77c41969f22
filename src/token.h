// Owner tokens: 128 bits from the OS CSPRNG, as 32 hex characters.
#pragma once

#include <string>

namespace rlk {

// Throws rlk::Error(RLOCK_ERR_INTERNAL) if the kernel cannot supply randomness.
std::string new_token();

}  // namespace rlk
