// rlock-proxy: the test FaultProxy as a standalone process, for benchmarks and manual runs.
//
//   rlock-proxy [--listen-port P] [--target HOST:PORT] [--latency-ms N] [--ignore-stdin]
//
// Prints "PORT <n>" on stdout once listening, then runs until SIGTERM/SIGINT or EOF on stdin.
// Lines on stdin change the faults at run time, each answered by one line on stdout:
//   latency <ms> | blackhole on|off | refuse on|off | reset | stats
// --ignore-stdin: run until a signal only (for callers whose stdin is /dev/null).
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>

#include "support/fault_proxy.h"

namespace {

struct Args {
  int listen_port = 0;
  std::string target_host = "127.0.0.1";
  int target_port = 6379;
  int latency_ms = 0;
  bool ignore_stdin = false;
};

[[noreturn]] void usage(const std::string &error) {
  std::cerr << "rlock-proxy: " << error << "\n"
            << "usage: rlock-proxy [--listen-port P (0 = free)] [--target HOST:PORT]"
               " [--latency-ms N] [--ignore-stdin]\n";
  std::exit(2);
}

int parse_int(const std::string &flag, const std::string &value, int min, int max) {
  try {
    std::size_t used = 0;
    int v = std::stoi(value, &used);
    if (used == value.size() && v >= min && v <= max) return v;
  } catch (const std::exception &) {
  }
  usage("bad value for " + flag + ": '" + value + "'");
}

Args parse(int argc, char **argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--ignore-stdin") {
      a.ignore_stdin = true;
      continue;
    }
    if (flag == "-h" || flag == "--help") usage("help");
    if (i + 1 >= argc) usage("missing value for " + flag);
    std::string value = argv[++i];
    if (flag == "--listen-port") {
      a.listen_port = parse_int(flag, value, 0, 65535);
    } else if (flag == "--latency-ms") {
      a.latency_ms = parse_int(flag, value, 0, 3600 * 1000);
    } else if (flag == "--target") {
      auto colon = value.rfind(':');
      if (colon == std::string::npos || colon == 0) usage("--target wants HOST:PORT");
      a.target_host = value.substr(0, colon);
      if (a.target_host.size() > 2 && a.target_host.front() == '[' && a.target_host.back() == ']') {
        a.target_host = a.target_host.substr(1, a.target_host.size() - 2);  // [::1]:6379
      }
      a.target_port = parse_int(flag, value.substr(colon + 1), 1, 65535);
    } else {
      usage("unknown option " + flag);
    }
  }
  return a;
}

std::string stats(const rlock_test::FaultProxy &proxy) {
  std::ostringstream s;
  s << "STATS accepted=" << proxy.connections_accepted() << " active=" << proxy.active_connections()
    << " to_target=" << proxy.bytes_to_target() << " to_client=" << proxy.bytes_to_client()
    << " dropped=" << proxy.bytes_dropped();
  return s.str();
}

std::string handle_line(rlock_test::FaultProxy &proxy, const std::string &line) {
  std::istringstream in(line);
  std::string cmd, arg;
  in >> cmd >> arg;
  if (cmd.empty()) return "";
  if (cmd == "stats") return stats(proxy);
  if (cmd == "reset") {
    proxy.reset_all();
    return "OK";
  }
  if (cmd == "latency") {
    try {
      proxy.set_latency_ms(std::stoi(arg));
      return "OK";
    } catch (const std::exception &) {
      return "ERR latency wants a number of milliseconds";
    }
  }
  if ((cmd == "blackhole" || cmd == "refuse") && (arg == "on" || arg == "off")) {
    if (cmd == "blackhole") {
      proxy.set_blackhole(arg == "on");
    } else {
      proxy.set_refuse(arg == "on");
    }
    return "OK";
  }
  return "ERR unknown command (latency <ms> | blackhole on|off | refuse on|off | reset | stats)";
}

}  // namespace

int main(int argc, char **argv) {
  Args args = parse(argc, argv);

  // Block the signals before the proxy thread exists so it inherits the mask; they are then read
  // from a signalfd next to stdin.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGPIPE);  // a closed stdout must not kill us mid-reply
  ::pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  int sfd = ::signalfd(-1, &sigs, SFD_CLOEXEC);
  if (sfd < 0) {
    std::perror("rlock-proxy: signalfd");
    return 1;
  }

  try {
    rlock_test::FaultProxy proxy(args.target_host, args.target_port, args.listen_port);
    proxy.set_latency_ms(args.latency_ms);
    std::cout << "PORT " << proxy.port() << std::endl;  // endl flushes: the caller waits for it

    std::string pending;
    for (;;) {
      pollfd fds[2] = {{sfd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
      int n = ::poll(fds, args.ignore_stdin ? 1 : 2, -1);
      if (n < 0) continue;  // EINTR
      if (fds[0].revents & POLLIN) break;
      if (args.ignore_stdin) continue;
      if (fds[1].revents & POLLNVAL) {
        args.ignore_stdin = true;  // no stdin at all: wait for a signal
        continue;
      }
      if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[4096];
        ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
        if (got <= 0) break;  // EOF: the parent went away
        pending.append(buf, static_cast<std::size_t>(got));
        std::size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
          std::string reply = handle_line(proxy, pending.substr(0, nl));
          pending.erase(0, nl + 1);
          if (!reply.empty()) std::cout << reply << std::endl;
        }
      }
    }
    std::cerr << "rlock-proxy: exiting, " << stats(proxy) << "\n";
  } catch (const std::exception &e) {
    std::cerr << "rlock-proxy: " << e.what() << "\n";
    return 1;
  }
  ::close(sfd);
  return 0;
}
