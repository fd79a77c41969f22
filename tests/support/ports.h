// Loopback port reservation shared by the test fixtures.
#ifndef RLOCK_TESTS_SUPPORT_PORTS_H
#define RLOCK_TESTS_SUPPORT_PORTS_H

namespace rlock_test {

// Binds 127.0.0.1:port (0: a free port) with SO_REUSEADDR and returns the socket without listening
// on it; *bound_port receives the port. While the socket is open the kernel hands the port to
// nobody else (neither bind(0) nor outgoing connects pick a bound port), yet a server that also
// sets SO_REUSEADDR (redis-server, libuv listeners) can still bind and listen on it. Throws
// std::runtime_error naming `who` on failure.
int reserve_loopback_port(int port, int *bound_port, const char *who);

}  // namespace rlock_test

#endif  // RLOCK_TESTS_SUPPORT_PORTS_H
