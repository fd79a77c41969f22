// SHA-1 (FIPS 180-4), only to name our Lua scripts for EVALSHA; not used for security.
#pragma once

#include <string>

namespace rlk {

// Lower-case hex digest of data.
std::string sha1_hex(const std::string &data);

}  // namespace rlk
