"""Python binding for librlock: distributed locks on Redis (single-instance and Redlock quorum).

A thin ctypes layer over the C API in include/rlock.h; only the standard library is used.

Library lookup, first match wins:
  1. the environment variable RLOCK_LIBRARY (a path to librlock.so),
  2. ctypes.util.find_library("rlock"),
  3. "librlock.so.1" (the SONAME) through the dynamic linker's search path.
At import the library's major version must equal EXPECTED_MAJOR, or ImportError is raised.

Errors: every failing C call raises a subclass of RLockError carrying the status code, its symbolic
name and the thread-local detail string of rlock_last_error() read right after the failing call.
The one exception is Lock.acquire(), which returns False for RLOCK_ERR_BUSY (the lock is held by
another owner), like threading.Lock.acquire(blocking=False) does.

Threads: Client is thread-safe and may be shared by any number of threads and locks. A Lock object
serialises its own calls with an internal mutex, so calls from several threads on one Lock object
cannot overlap (the C API forbids that); use one Lock object per thread for real concurrency, also on
the same key. All blocking C calls run without the GIL.
"""

import ctypes
import ctypes.util
import os
import sys
import threading
import traceback

__all__ = [
    "EXPECTED_MAJOR", "OK", "ERR_BUSY", "ERR_NOT_HELD", "ERR_INVALID", "ERR_TIMEOUT", "ERR_IO",
    "ERR_SERVER", "ERR_NO_QUORUM", "ERR_NOMEM", "ERR_AUTH", "ERR_INTERNAL", "SERVER_PENDING",
    "version", "version_number", "strerror", "err_name", "last_error",
    "RLockError", "LockBusy", "NotHeld", "InvalidArgument", "Timeout", "RLockIOError",
    "ServerError", "NoQuorum", "OutOfMemory", "AuthError", "InternalError", "Canceled",
    "ERR_CANCELED",
    "Client", "Lock",
]

#: The major version of the C ABI this binding was written against (RLOCK_VERSION_MAJOR).
EXPECTED_MAJOR = 1

# Status codes, same fixed values as rlock.h.
OK = 0
ERR_BUSY = -1
ERR_NOT_HELD = -2
ERR_INVALID = -3
ERR_TIMEOUT = -4
ERR_IO = -5
ERR_SERVER = -6
ERR_NO_QUORUM = -7
ERR_NOMEM = -8
ERR_AUTH = -9
ERR_INTERNAL = -10
ERR_CANCELED = -11
#: rlock_server_status(): the server's answer was not needed, or no call was made yet.
SERVER_PENDING = 1

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SERVER_MSG_LEN = 1024


# ---- Loading the library and declaring every function of rlock.h ----------------------------------

class _ClientPtr(ctypes.c_void_p):
    """rlock_client * (opaque)."""


class _LockPtr(ctypes.c_void_p):
    """rlock * (opaque)."""


def _load_library():
    path = os.environ.get("RLOCK_LIBRARY")
    candidates = [path] if path else [ctypes.util.find_library("rlock"), "librlock.so.1"]
    errors = []
    for name in candidates:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    where = "RLOCK_LIBRARY=%s" % path if path else "find_library('rlock') and librlock.so.1"
    raise ImportError("rlock: cannot load librlock (tried %s): %s"
                      % (where, "; ".join(errors) or "not found"))


# void (*)(rlock *l, int status, void *userdata): rlock_done_cb and rlock_lost_cb.
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

# Set while a callback of ours runs on the library's loop thread (where blocking calls are refused).
_in_callback = threading.local()


def _declare(lib):
    c_int, c_char_p, c_size_t = ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t
    c_int64, c_uint64 = ctypes.c_int64, ctypes.c_uint64
    table = {
        "rlock_version": (c_char_p, []),
        "rlock_version_number": (c_int, []),
        "rlock_strerror": (c_char_p, [c_int]),
        "rlock_err_name": (c_char_p, [c_int]),
        "rlock_last_error": (c_char_p, []),
        "rlock_client_new": (c_int, [c_char_p, ctypes.POINTER(_ClientPtr)]),
        "rlock_client_free": (None, [_ClientPtr]),
        "rlock_client_ping": (c_int, [_ClientPtr]),
        "rlock_new": (c_int, [_ClientPtr, c_char_p, c_int64, ctypes.POINTER(_LockPtr)]),
        "rlock_quorum_new": (c_int, [ctypes.POINTER(_ClientPtr), c_size_t, c_char_p, c_int64,
                                     ctypes.POINTER(_LockPtr)]),
        "rlock_free": (None, [_LockPtr]),
        "rlock_acquire": (c_int, [_LockPtr, c_int64]),
        "rlock_release": (c_int, [_LockPtr]),
        "rlock_extend": (c_int, [_LockPtr, c_int64]),
        "rlock_validity_ms": (c_int64, [_LockPtr]),
        "rlock_fencing_token": (c_uint64, [_LockPtr]),
        "rlock_set_retry_delay_ms": (c_int, [_LockPtr, c_int64, c_int64]),
        "rlock_set_drift": (c_int, [_LockPtr, c_int64, c_int64]),
        "rlock_server_count": (c_size_t, [_LockPtr]),
        "rlock_server_status": (c_int, [_LockPtr, c_size_t, c_char_p, c_size_t]),
        "rlock_acquire_async": (c_int, [_LockPtr, c_int64, _CALLBACK, ctypes.c_void_p]),
        "rlock_release_async": (c_int, [_LockPtr, _CALLBACK, ctypes.c_void_p]),
        "rlock_extend_async": (c_int, [_LockPtr, c_int64, _CALLBACK, ctypes.c_void_p]),
        "rlock_set_auto_renew": (c_int, [_LockPtr, c_int, _CALLBACK, ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in table.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise ImportError("rlock: the loaded library %s has no symbol %s" % (lib._name, name))
        fn.restype = restype
        fn.argtypes = argtypes


_lib = _load_library()
# The version first: a library of another major may lack some of the symbols below, and the version
# mismatch is the message that explains it.
try:
    _lib.rlock_version.restype = ctypes.c_char_p
    _lib.rlock_version.argtypes = []
except AttributeError:
    raise ImportError("rlock: %s is not librlock (no rlock_version)" % _lib._name)


def _text(b):
    return b.decode("utf-8", "replace") if b is not None else ""


def version():
    """The version string ("MAJOR.MINOR.PATCH") of the library actually loaded."""
    return _text(_lib.rlock_version())


def version_number():
    """The library's version as MAJOR * 10000 + MINOR * 100 + PATCH."""
    return _lib.rlock_version_number()


def strerror(status):
    """A static description of a status code (never fails, also for unknown codes)."""
    return _text(_lib.rlock_strerror(status))


def err_name(status):
    """The symbolic name of a status code, e.g. "RLOCK_ERR_BUSY", or "RLOCK_ERR_UNKNOWN"."""
    return _text(_lib.rlock_err_name(status))


def last_error():
    """rlock_last_error() of the calling thread. Exceptions already carry it as .detail; this is
    only useful right after a call that does not raise."""
    return _text(_lib.rlock_last_error())


def _check_version():
    v = version()
    try:
        major = int(v.split(".", 1)[0])
    except ValueError:
        raise ImportError("rlock: the library reports a malformed version %r" % v)
    if major != EXPECTED_MAJOR:
        raise ImportError("rlock: library %s has ABI major %d, this binding needs major %d"
                          % (v, major, EXPECTED_MAJOR))


_check_version()
_declare(_lib)


# ---- Exceptions -------------------------------------------------------------------------------------

class RLockError(Exception):
    """A failed rlock call.

    Attributes:
      status: the negative RLOCK_ERR_* code (int).
      name:   its symbolic name, e.g. "RLOCK_ERR_IO".
      detail: rlock_last_error() of the failing call, e.g. "127.0.0.1:6379: connect: Connection
              refused" (may be "" when the library gives no detail, or a binding-side reason when
              the binding rejected the argument before calling the library).
    """

    def __init__(self, status, detail=""):
        self.status = status
        self.name = err_name(status)
        self.detail = detail
        super().__init__(status, detail)

    def __str__(self):
        s = "%s: %s" % (self.name, strerror(self.status))
        return "%s (%s)" % (s, self.detail) if self.detail else s

    def __repr__(self):
        return "%s(%r, %r)" % (type(self).__name__, self.status, self.detail)


class LockBusy(RLockError):
    """RLOCK_ERR_BUSY: held by another owner. Raised by `with lock:` when the wait ran out;
    Lock.acquire() returns False instead."""


class NotHeld(RLockError):
    """RLOCK_ERR_NOT_HELD: release/extend on a handle that does not hold the lock (never acquired,
    expired, or taken over)."""


class InvalidArgument(RLockError, ValueError):
    """RLOCK_ERR_INVALID: bad argument or state (bad URI, empty key, ttl <= 0, acquire while held,
    a closed object). Also a ValueError."""


class Timeout(RLockError):
    """RLOCK_ERR_TIMEOUT: a server did not answer within its timeout."""


class RLockIOError(RLockError):
    """RLOCK_ERR_IO: connection refused, reset or closed."""


class ServerError(RLockError):
    """RLOCK_ERR_SERVER: Redis answered with an error (READONLY, OOM, WRONGTYPE, ...)."""


class NoQuorum(RLockError):
    """RLOCK_ERR_NO_QUORUM: quorum lock, too few servers answered or agreed."""


class OutOfMemory(RLockError):
    """RLOCK_ERR_NOMEM."""


class AuthError(RLockError):
    """RLOCK_ERR_AUTH: authentication or ACL failure."""


class Canceled(RLockError):
    """RLOCK_ERR_CANCELED: an asynchronous call was canceled because its Lock was closed."""


class InternalError(RLockError):
    """RLOCK_ERR_INTERNAL: a bug in rlock; please report it with .detail."""


_ERRORS = {
    ERR_BUSY: LockBusy, ERR_NOT_HELD: NotHeld, ERR_INVALID: InvalidArgument, ERR_TIMEOUT: Timeout,
    ERR_IO: RLockIOError, ERR_SERVER: ServerError, ERR_NO_QUORUM: NoQuorum, ERR_NOMEM: OutOfMemory,
    ERR_AUTH: AuthError, ERR_INTERNAL: InternalError, ERR_CANCELED: Canceled,
}


def _error(status, detail):
    return _ERRORS.get(status, RLockError)(status, detail)


def _call(fn, *args):
    """Calls a status-returning C function; raises on failure with the detail read at once (the
    thread-local string is only valid until this thread's next rlock call)."""
    status = fn(*args)
    if status < 0:
        detail = _lib.rlock_last_error()
        raise _error(status, _text(detail))
    return status


def _invalid(detail):
    return InvalidArgument(ERR_INVALID, detail)


def _cstr(what, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, (bytes, bytearray)):
        raise TypeError("%s must be str or bytes, not %s" % (what, type(value).__name__))
    value = bytes(value)
    if b"\0" in value:
        # A C string would silently end at the NUL; refuse rather than use a different value.
        raise _invalid("%s contains a NUL character" % what)
    return value


def _i64(what, value):
    if not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (what, type(value).__name__))
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _invalid("%s=%d is out of the int64 range" % (what, value))
    return value


# ---- Client -----------------------------------------------------------------------------------------

class Client:
    """A client for one Redis server (rlock_client). Thread-safe.

    Client("redis://[[user]:password@]host[:port][/db][?connect_timeout_ms=N&command_timeout_ms=N]")
    or Client("unix:///path/to/redis.sock[?db=N&password=...]"). No I/O happens here; the connection
    is made by the first call that needs it. Raises InvalidArgument for a malformed URI.

    close() (or leaving a `with` block, or garbage collection) releases the client. Locks made from
    it keep working: the library keeps its own reference until the last of them is closed.
    """

    def __init__(self, uri):
        self._ptr = None
        self._uri = uri if isinstance(uri, str) else bytes(uri).decode("utf-8", "replace")
        raw = _cstr("uri", uri)
        ptr = _ClientPtr()
        _call(_lib.rlock_client_new, raw, ctypes.byref(ptr))
        self._ptr = ptr
        # close() must not free the handle while another thread is inside a call that uses it.
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0

    def _enter(self):
        with self._cond:
            if self._ptr is None:
                raise _invalid("client is closed")
            self._busy += 1
            return self._ptr

    def _leave(self):
        with self._cond:
            self._busy -= 1
            if self._busy == 0:
                self._cond.notify_all()

    @property
    def uri(self):
        """The URI this client was created with."""
        return self._uri

    @property
    def closed(self):
        return self._ptr is None

    def ping(self):
        """Sends PING (connecting first if needed). Returns None; raises Timeout, RLockIOError,
        AuthError, ServerError, or InvalidArgument if the client is closed."""
        ptr = self._enter()
        try:
            _call(_lib.rlock_client_ping, ptr)
        finally:
            self._leave()

    def close(self):
        """Releases this client. Idempotent. Waits for calls in progress on other threads."""
        cond = getattr(self, "_cond", None)
        if cond is None:  # __init__ failed before the handle existed
            return
        with cond:
            ptr, self._ptr = self._ptr, None
            while self._busy:
                cond.wait()
        if ptr is not None:
            _lib.rlock_client_free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "<rlock.Client %r%s>" % (self._uri, " closed" if self.closed else "")


# ---- Lock -------------------------------------------------------------------------------------------

class Lock:
    """A lock on one key (rlock): single-instance with Lock(client, key, ttl_ms), or a quorum
    (Redlock) over several servers with Lock.quorum(clients, key, ttl_ms).

    ttl_ms is the lease: a holder that dies without releasing blocks others for at most ttl_ms.
    wait_ms is only what `with lock:` passes to acquire() (default -1: wait until acquired).

    As a context manager, `with Lock(client, "k", 10000) as lock:` acquires (raising LockBusy if the
    wait ran out, or another RLockError), and releases on exit. If the block raised, a failing
    release is ignored so that the block's exception propagates; otherwise a failing release
    raises (NotHeld on exit means the lock expired or was taken over inside the block: your
    critical section was not exclusive to the end).

    The Lock does not keep its Client objects alive; the library holds its own references, so a
    Client may be closed while Locks made from it are still in use.
    """

    def __init__(self, client, key, ttl_ms, wait_ms=-1):
        self._ptr = None
        self._guard = threading.Lock()
        self._pending = []     # ctypes callback objects of async calls, kept alive
        self._lost_cb = None   # ctypes callback of auto_renew
        self.key = key
        self.wait_ms = _i64("wait_ms", wait_ms)
        rawkey = _cstr("key", key)
        ttl = _i64("ttl_ms", ttl_ms)
        if isinstance(client, Client):
            ptr = _LockPtr()
            cptr = client._enter()
            try:
                _call(_lib.rlock_new, cptr, rawkey, ttl, ctypes.byref(ptr))
            finally:
                client._leave()
            self._ptr = ptr
        elif isinstance(client, _LockPtr):  # from Lock.quorum()
            self._ptr = client
        else:
            raise TypeError("client must be an rlock.Client, not %s" % type(client).__name__)

    @classmethod
    def quorum(cls, clients, key, ttl_ms, wait_ms=-1):
        """A Redlock over the given Clients (one per independent server): held only while a
        majority (n // 2 + 1) granted it within its validity. Raises InvalidArgument for an empty
        list, the same client twice, or two clients for the same server address."""
        clients = list(clients)
        for c in clients:
            if not isinstance(c, Client):
                raise TypeError("clients must be rlock.Client objects, not %s" % type(c).__name__)
        rawkey = _cstr("key", key)
        ttl = _i64("ttl_ms", ttl_ms)
        _i64("wait_ms", wait_ms)
        entered = []
        try:
            for c in clients:
                c._enter()
                entered.append(c)
            arr = (_ClientPtr * len(clients))(*[c._ptr for c in clients])
            ptr = _LockPtr()
            _call(_lib.rlock_quorum_new, arr, len(clients), rawkey, ttl, ctypes.byref(ptr))
        finally:
            for c in entered:
                c._leave()
        return cls(ptr, key, ttl, wait_ms)

    # -- internals --

    def _handle(self):
        if self._ptr is None:
            raise _invalid("lock is closed")
        return self._ptr

    # -- operations --

    def acquire(self, wait_ms=0):
        """Takes the lock.

        wait_ms == 0: a single attempt. wait_ms > 0: retries (with jittered backoff) for up to
        wait_ms milliseconds. wait_ms < 0 or None: retries until acquired.

        Returns True when the lock is now held by this handle, False when it is held by another
        owner (RLOCK_ERR_BUSY, also after waiting wait_ms in vain). Raises RLockError for anything
        else: InvalidArgument (this handle already holds it), Timeout, RLockIOError, ServerError,
        AuthError, NoQuorum (quorum locks: e.g. servers down or a split vote), OutOfMemory. With
        wait_ms != 0 the outcome is that of the last attempt.
        """
        wait = -1 if wait_ms is None else _i64("wait_ms", wait_ms)
        self._check_not_in_callback("acquire")
        with self._guard:
            status = _lib.rlock_acquire(self._handle(), wait)
            if status == OK:
                return True
            detail = _text(_lib.rlock_last_error())
        if status == ERR_BUSY:
            return False
        raise _error(status, detail)

    def release(self):
        """Gives the lock up (compare-and-delete on every server). Afterwards the handle does not
        hold the lock, whatever the outcome. Raises NotHeld if it was not held (never acquired,
        expired, taken over: another owner's lock is never touched), or Timeout / RLockIOError /
        ServerError / AuthError / NoQuorum when the outcome is unknown (the key then expires by
        its TTL)."""
        self._check_not_in_callback("release")
        with self._guard:
            _call(_lib.rlock_release, self._handle())

    def extend(self, ttl_ms):
        """Resets the lease to ttl_ms where this handle still holds the lock; later acquisitions use
        ttl_ms too. Raises NotHeld if the lock was lost (the handle is then no longer held), or a
        transport error if the outcome is unknown (the previous validity still stands)."""
        ttl = _i64("ttl_ms", ttl_ms)
        self._check_not_in_callback("extend")
        with self._guard:
            _call(_lib.rlock_extend, self._handle(), ttl)

    @property
    def validity_ms(self):
        """Milliseconds of ownership left (monotonic clock, drift subtracted); 0 when not held,
        released, expired, or closed."""
        ptr = self._ptr  # no guard: the C getter is safe alongside any call (also from callbacks)
        return _lib.rlock_validity_ms(ptr) if ptr is not None else 0

    @property
    def held(self):
        """True while validity_ms > 0 (a local estimate; no I/O)."""
        return self.validity_ms > 0

    @property
    def fencing_token(self):
        """The fencing token of the current acquisition (strictly increasing per key across all
        owners), or 0 when not held."""
        ptr = self._ptr  # no guard, as validity_ms
        return _lib.rlock_fencing_token(ptr) if ptr is not None else 0

    @property
    def server_count(self):
        """Number of servers of this lock (1 for a single-instance lock); 0 when closed."""
        with self._guard:
            return _lib.rlock_server_count(self._ptr) if self._ptr is not None else 0

    def server_status(self, i):
        """(status, message) of server i (0-based, in the order given to quorum()) in this handle's
        most recent acquire/release/extend: status is OK, ERR_BUSY, ERR_NOT_HELD, ERR_TIMEOUT,
        ERR_IO, ERR_SERVER, ERR_AUTH or SERVER_PENDING (1: no answer was needed, or no call made
        yet); message holds the server's address and error text. IndexError if i is out of
        range."""
        if not isinstance(i, int):
            raise TypeError("server index must be an int")
        buf = ctypes.create_string_buffer(_SERVER_MSG_LEN)
        with self._guard:
            ptr = self._handle()
            n = _lib.rlock_server_count(ptr)
            if not 0 <= i < n:
                raise IndexError("server index %d out of range (the lock has %d)" % (i, n))
            status = _lib.rlock_server_status(ptr, i, buf, len(buf))
            if status == ERR_INVALID:
                raise _error(status, _text(_lib.rlock_last_error()))
        return status, _text(buf.value)

    def server_statuses(self):
        """[server_status(i) for every server]."""
        return [self.server_status(i) for i in range(self.server_count)]

    def set_retry_delay_ms(self, base_ms, max_ms):
        """Retry pacing for acquire(wait_ms != 0): the n-th wait is uniform in
        [0, min(max_ms, base_ms * 2**n)]. Defaults 2 and 50. InvalidArgument unless
        1 <= base_ms <= max_ms <= 3600000."""
        b, m = _i64("base_ms", base_ms), _i64("max_ms", max_ms)
        with self._guard:
            _call(_lib.rlock_set_retry_delay_ms, self._handle(), b, m)

    def set_drift(self, drift_ppm, extra_ms):
        """Clock drift allowance subtracted from the validity: ttl * drift_ppm / 1e6 + extra_ms.
        Defaults 10000 ppm (1%) and 2 ms. InvalidArgument outside 0..1000000 / 0..3600000."""
        p, e = _i64("drift_ppm", drift_ppm), _i64("extra_ms", extra_ms)
        with self._guard:
            _call(_lib.rlock_set_drift, self._handle(), p, e)

    # -- auto-renewal and asynchronous calls (callbacks run on the library's loop thread) --

    def auto_renew(self, enabled=True, on_lost=None):
        """Keeps the lock alive while held: the library extends it every ttl/3 from its own thread.
        on_lost(lock, status) is called (on the library's thread, at most once per acquisition, no
        later than the end of the validity) if it is lost anyway; it must return quickly and must
        not call blocking methods of this Lock. Renewal stops on release(), on loss, on close() and
        with auto_renew(False)."""
        cb = None
        if enabled and on_lost is not None:
            def trampoline(_ptr, status, _userdata, on_lost=on_lost):
                self._run_callback(on_lost, self, status)
            cb = _CALLBACK(trampoline)
        self._check_not_in_callback("auto_renew")
        with self._guard:
            _call(_lib.rlock_set_auto_renew, self._handle(), 1 if enabled else 0, cb, None)
            self._lost_cb = cb  # the library calls it until renewal is switched off or freed

    def acquire_async(self, callback, wait_ms=0):
        """Starts acquire(wait_ms) and returns at once; callback(status, detail) runs on the
        library's loop thread when it completes (status OK, ERR_BUSY, ...; ERR_CANCELED if the Lock
        is closed first). Raises InvalidArgument if another call on this Lock is in progress."""
        wait = -1 if wait_ms is None else _i64("wait_ms", wait_ms)
        self._start_async(_lib.rlock_acquire_async, (wait,), callback)

    def release_async(self, callback):
        """Starts release(); callback(status, detail) runs on the library's loop thread."""
        self._start_async(_lib.rlock_release_async, (), callback)

    def extend_async(self, ttl_ms, callback):
        """Starts extend(ttl_ms); callback(status, detail) runs on the library's loop thread."""
        self._start_async(_lib.rlock_extend_async, (_i64("ttl_ms", ttl_ms),), callback)

    async def acquire_aio(self, wait_ms=-1):
        """asyncio form of acquire(): True when acquired, False when busy, else raises."""
        status, detail = await self._aio(self.acquire_async, wait_ms=wait_ms)
        if status == OK:
            return True
        if status == ERR_BUSY:
            return False
        raise _error(status, detail)

    async def release_aio(self):
        """asyncio form of release()."""
        status, detail = await self._aio(self.release_async)
        if status != OK:
            raise _error(status, detail)

    async def extend_aio(self, ttl_ms):
        """asyncio form of extend()."""
        status, detail = await self._aio(lambda cb: self.extend_async(ttl_ms, cb))
        if status != OK:
            raise _error(status, detail)

    def _aio(self, start, **kwargs):
        import asyncio
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(status, detail):
            if not fut.done():
                fut.set_result((status, detail))

        start(lambda status, detail: loop.call_soon_threadsafe(settle, status, detail), **kwargs)
        return fut

    def _start_async(self, fn, args, callback):
        if not callable(callback):
            raise TypeError("callback must be callable")
        # A ctypes callback object must stay alive until the library has called it, and must not be
        # freed while it runs: finished ones are dropped on a later call.
        self._pending = [p for p in self._pending if not p[1]]
        entry = [None, False]

        def trampoline(_ptr, status, _userdata):
            try:
                detail = _text(_lib.rlock_last_error()) if status != OK else ""
                self._run_callback(callback, status, detail)
            finally:
                entry[1] = True

        entry[0] = _CALLBACK(trampoline)
        self._pending.append(entry)
        status = fn(self._handle(), *args, entry[0], None)
        if status != OK:
            self._pending.remove(entry)
            raise _error(status, _text(_lib.rlock_last_error()))

    @staticmethod
    def _run_callback(fn, *args):
        _in_callback.active = True
        try:
            fn(*args)
        except BaseException:  # nothing can propagate into C: report like an unraisable exception
            traceback.print_exc(file=sys.stderr)
        finally:
            _in_callback.active = False

    @staticmethod
    def _check_not_in_callback(what):
        if getattr(_in_callback, "active", False):
            raise _invalid("%s: not allowed in a callback (it runs on rlock's loop thread)" % what)

    def close(self):
        """Frees the handle, releasing the lock first if it is held, and canceling a pending
        acquire_async (its callback gets ERR_CANCELED). Idempotent. Not allowed in a callback."""
        guard = getattr(self, "_guard", None)
        if guard is None:
            return
        self._check_not_in_callback("close")
        with guard:
            ptr = self._ptr
            if ptr is not None:
                _lib.rlock_free(ptr)  # callbacks may still run (and read the handle) until it returns
                self._ptr = None

    @property
    def closed(self):
        return self._ptr is None

    def __enter__(self):
        if not self.acquire(self.wait_ms):
            raise LockBusy(ERR_BUSY, "%r: still held by another owner after wait_ms=%d"
                           % (self.key, self.wait_ms))
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.release()
        except RLockError:
            if exc_type is None:
                raise
        return False

    def __del__(self):
        try:
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                _lib.rlock_free(ptr)
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self.closed else ("held" if self.held else "not held")
        return "<rlock.Lock %r %s>" % (self.key, state)
