#include "token.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "status.h"

namespace rlk {

std::string new_token() {
  uint8_t raw[16];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(RLOCK_ERR_INTERNAL, std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  static const char hex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < sizeof raw; ++i) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  return out;
}

}  // namespace rlk
