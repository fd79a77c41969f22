"""Starts and stops a throwaway redis-server for the Python tests.

redis-server comes from the environment variable RLOCK_REDIS_SERVER or from PATH. Each server runs
on a free 127.0.0.1 port with persistence off, in its own temporary directory, and is stopped by its
pid (SIGTERM, then SIGKILL if it does not exit in time).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


class RedisMissing(RuntimeError):
    pass


def free_port():
    """A loopback TCP port that nothing listens on right now (may be taken again later: callers
    that start a server on it retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    env = os.environ.get("RLOCK_REDIS_SERVER")
    path = shutil.which(env) if env else shutil.which("redis-server")
    if not path:
        where = ("RLOCK_REDIS_SERVER=%r is not an executable" % env if env
                 else "redis-server is not on PATH")
        raise RedisMissing("%s: install it (apt-get install redis-server) or point "
                           "RLOCK_REDIS_SERVER at it" % where)
    return path


def ping(port, timeout=0.5):
    """True if a Redis server on 127.0.0.1:port answers PING with +PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    return False
                data += chunk
            return data == b"+PONG\r\n"
    except OSError:
        return False


class RedisServer:
    """One redis-server process. Use as a context manager or call start()/stop()."""

    def __init__(self, start_timeout=10.0):
        self.binary = redis_server_binary()
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self.dir = None

    @property
    def uri(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="rlock-py-redis-")
        last = ""
        for _attempt in range(5):  # the port may be taken between free_port() and the bind
            self.port = free_port()
            log_path = os.path.join(self.dir, "redis-%d.log" % self.port)
            with open(log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--dir", self.dir, "--logfile", ""],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if ping(self.port):
                    return self
                time.sleep(0.01)  # poll interval, bounded by the deadline
            self._kill()
            with open(log_path, "rb") as f:
                last = f.read()[-2000:].decode("utf-8", "replace")
        self._cleanup_dir()
        raise RuntimeError("redis-server (%s) did not answer PING on 127.0.0.1:%s within %.0fs:\n%s"
                           % (self.binary, self.port, self.start_timeout, last))

    def _kill(self, grace=5.0):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def _cleanup_dir(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def command(self, *args, timeout=2.0):
        """Sends one command (RESP) and returns the first line of the reply, e.g. ":1"; enough for
        tests that change the server's state behind the library's back."""
        payload = "*%d\r\n" % len(args) + "".join(
            "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in map(str, args))
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(payload.encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n", 1)[0].decode()

    def stop(self):
        self._kill()
        self._cleanup_dir()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
