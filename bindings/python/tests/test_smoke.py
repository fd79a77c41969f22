"""Smoke tests of the Python binding against real redis-server processes.

Run: RLOCK_LIBRARY=/path/to/librlock.so PYTHONPATH=bindings/python \
     python3 -m unittest discover -s bindings/python/tests -v
"""

import os
import re
import threading
import time
import unittest
import uuid

import rlock
from redis_fixture import RedisServer, free_port

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "include",
                      "rlock.h")


def unique_key(test):
    return "pytest:%s:%s" % (test.id().rsplit(".", 1)[-1], uuid.uuid4().hex)


class TestWithoutServer(unittest.TestCase):
    def test_library_major_version_agrees_with_the_header(self):
        with open(HEADER) as f:
            m = re.search(r"^#define RLOCK_VERSION_MAJOR (\d+)", f.read(), re.M)
        self.assertIsNotNone(m, "RLOCK_VERSION_MAJOR not found in " + HEADER)
        header_major = int(m.group(1))
        self.assertEqual(rlock.EXPECTED_MAJOR, header_major)
        self.assertRegex(rlock.version(), r"^\d+\.\d+\.\d+$")
        major, minor, patch = map(int, rlock.version().split("."))
        self.assertEqual(major, header_major)
        self.assertEqual(rlock.version_number(), major * 10000 + minor * 100 + patch)

    def test_strerror_and_err_name_describe_every_code(self):
        names = {rlock.OK: "RLOCK_OK", rlock.ERR_BUSY: "RLOCK_ERR_BUSY",
                 rlock.ERR_NOT_HELD: "RLOCK_ERR_NOT_HELD", rlock.ERR_INVALID: "RLOCK_ERR_INVALID",
                 rlock.ERR_TIMEOUT: "RLOCK_ERR_TIMEOUT", rlock.ERR_IO: "RLOCK_ERR_IO",
                 rlock.ERR_SERVER: "RLOCK_ERR_SERVER", rlock.ERR_NO_QUORUM: "RLOCK_ERR_NO_QUORUM",
                 rlock.ERR_NOMEM: "RLOCK_ERR_NOMEM", rlock.ERR_AUTH: "RLOCK_ERR_AUTH",
                 rlock.ERR_INTERNAL: "RLOCK_ERR_INTERNAL"}
        for status, name in names.items():
            if status != rlock.OK:  # the header does not promise a name for 0
                self.assertEqual(rlock.err_name(status), name)
            self.assertTrue(rlock.strerror(status), "empty strerror for %d" % status)
        self.assertEqual(rlock.err_name(-12345), "RLOCK_ERR_UNKNOWN")
        self.assertTrue(rlock.strerror(-12345))

    def test_bad_uri_raises_invalid_argument_with_a_detail(self):
        for uri in ("http://127.0.0.1:6379", "redis://127.0.0.1:6379?bogus=1", ""):
            with self.subTest(uri=uri):
                with self.assertRaises(rlock.InvalidArgument) as cm:
                    rlock.Client(uri)
                e = cm.exception
                self.assertEqual(e.status, rlock.ERR_INVALID)
                self.assertEqual(e.name, "RLOCK_ERR_INVALID")
                self.assertTrue(e.detail, "no rlock_last_error() detail for %r" % uri)
                self.assertIsInstance(e, ValueError)
                self.assertIn("RLOCK_ERR_INVALID", str(e))

    def test_uri_with_a_nul_character_is_refused_before_the_library(self):
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Client("redis://127.0.0.1:6379\0junk")

    def test_unreachable_server_raises_io_error(self):
        port = free_port()  # nothing listens there: connect is refused
        with rlock.Client("redis://127.0.0.1:%d?connect_timeout_ms=2000" % port) as c:
            with self.assertRaises(rlock.RLockIOError) as cm:
                c.ping()
            self.assertEqual(cm.exception.status, rlock.ERR_IO)
            self.assertIn(str(port), cm.exception.detail)
            with _closing(rlock.Lock(c, unique_key(self), 5000)) as lock:
                with self.assertRaises(rlock.RLockIOError):
                    lock.acquire(0)
                status, msg = lock.server_status(0)
                self.assertEqual(status, rlock.ERR_IO)
                self.assertIn(str(port), msg)

    def test_closed_client_is_refused_and_close_is_idempotent(self):
        c = rlock.Client("redis://127.0.0.1:1")
        c.close()
        c.close()
        self.assertTrue(c.closed)
        with self.assertRaises(rlock.InvalidArgument):
            c.ping()
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Lock(c, "k", 1000)


class _closing:
    """with _closing(lock) as l: ... closes the Lock at the end without acquiring it."""

    def __init__(self, obj):
        self.obj = obj

    def __enter__(self):
        return self.obj

    def __exit__(self, *exc):
        self.obj.close()


class _OneServer(unittest.TestCase):
    """One redis-server and one Client shared by the tests of a class; new_lock() is closed after
    each test."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer().start()
        cls.client = rlock.Client(cls.redis.uri)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.redis.stop()

    def new_lock(self, key=None, ttl_ms=10000, client=None):
        lock = rlock.Lock(client or self.client, key or unique_key(self), ttl_ms)
        self.addCleanup(lock.close)
        return lock


class TestSingleServer(_OneServer):
    def test_ping_answers(self):
        self.client.ping()

    def test_acquire_then_release(self):
        lock = self.new_lock()
        self.assertFalse(lock.held)
        self.assertTrue(lock.acquire())
        self.assertTrue(lock.held)
        self.assertGreater(lock.fencing_token, 0)
        self.assertEqual(lock.server_count, 1)
        status, msg = lock.server_status(0)
        self.assertEqual(status, rlock.OK)
        self.assertIn(str(self.redis.port), msg)
        lock.release()
        self.assertFalse(lock.held)
        self.assertEqual(lock.fencing_token, 0)

    def test_second_handle_on_a_held_key_gets_false(self):
        key = unique_key(self)
        first, second = self.new_lock(key), self.new_lock(key)
        self.assertTrue(first.acquire(0))
        self.assertFalse(second.acquire(0))
        self.assertFalse(second.held)
        self.assertEqual(second.server_status(0)[0], rlock.ERR_BUSY)
        # A bounded wait on a lock nobody releases also ends in False, not an exception.
        second.set_retry_delay_ms(1, 5)
        t0 = time.monotonic()
        self.assertFalse(second.acquire(100))
        self.assertGreaterEqual(time.monotonic() - t0, 0.09)  # it did wait ~wait_ms
        first.release()
        self.assertTrue(second.acquire(0))
        second.release()

    def test_fencing_token_increases_across_acquisitions(self):
        key = unique_key(self)
        a, b = self.new_lock(key), self.new_lock(key)
        self.assertTrue(a.acquire())
        t1 = a.fencing_token
        a.release()
        self.assertTrue(b.acquire())
        t2 = b.fencing_token
        b.release()
        self.assertTrue(a.acquire())
        t3 = a.fencing_token
        a.release()
        self.assertLess(t1, t2)
        self.assertLess(t2, t3)

    def test_extend_renews_the_lease(self):
        lock = self.new_lock(ttl_ms=1000)
        self.assertTrue(lock.acquire())
        self.assertLessEqual(lock.validity_ms, 1000)
        lock.extend(60000)
        self.assertGreater(lock.validity_ms, 1000)  # > the old ttl: the new lease counts
        self.assertLessEqual(lock.validity_ms, 60000)
        lock.release()
        with self.assertRaises(rlock.NotHeld):
            lock.extend(1000)

    def test_validity_is_positive_when_held_and_zero_after_release(self):
        lock = self.new_lock(ttl_ms=30000)
        self.assertEqual(lock.validity_ms, 0)
        self.assertTrue(lock.acquire())
        v = lock.validity_ms
        self.assertGreater(v, 0)
        self.assertLessEqual(v, 30000)
        lock.release()
        self.assertEqual(lock.validity_ms, 0)

    def test_release_twice_raises_not_held(self):
        lock = self.new_lock()
        self.assertTrue(lock.acquire())
        lock.release()
        with self.assertRaises(rlock.NotHeld) as cm:
            lock.release()
        self.assertEqual(cm.exception.status, rlock.ERR_NOT_HELD)
        self.assertEqual(cm.exception.name, "RLOCK_ERR_NOT_HELD")

    def test_release_without_acquire_raises_not_held(self):
        with self.assertRaises(rlock.NotHeld):
            self.new_lock().release()

    def test_acquire_while_held_raises_invalid_argument(self):
        lock = self.new_lock()
        self.assertTrue(lock.acquire())
        with self.assertRaises(rlock.InvalidArgument):
            lock.acquire()
        lock.release()

    def test_bad_lock_arguments_raise_invalid_argument(self):
        with self.assertRaises(rlock.InvalidArgument) as cm:
            rlock.Lock(self.client, "", 1000)
        self.assertTrue(cm.exception.detail)
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Lock(self.client, "k", 0)
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Lock(self.client, "k", 1 << 64)
        with self.assertRaises(TypeError):
            rlock.Lock(self.client, 42, 1000)
        lock = self.new_lock()
        with self.assertRaises(rlock.InvalidArgument):
            lock.set_retry_delay_ms(10, 5)
        with self.assertRaises(rlock.InvalidArgument):
            lock.set_drift(-1, 0)
        lock.set_retry_delay_ms(1, 10)
        lock.set_drift(0, 0)
        with self.assertRaises(IndexError):
            lock.server_status(1)

    def test_context_manager_acquires_and_releases(self):
        key = unique_key(self)
        other = self.new_lock(key)
        with rlock.Lock(self.client, key, 10000) as lock:
            self.assertTrue(lock.held)
            self.assertFalse(other.acquire(0))
        self.assertFalse(lock.held)
        lock.close()
        self.assertTrue(other.acquire(0))
        other.release()

    def test_context_manager_raises_lock_busy_when_the_wait_runs_out(self):
        key = unique_key(self)
        holder = self.new_lock(key)
        self.assertTrue(holder.acquire())
        waiter = rlock.Lock(self.client, key, 10000, wait_ms=50)
        self.addCleanup(waiter.close)
        with self.assertRaises(rlock.LockBusy):
            with waiter:
                self.fail("entered a lock held by another owner")
        holder.release()

    def test_context_manager_does_not_hide_the_body_exception(self):
        lock = self.new_lock()
        with self.assertRaises(KeyError):
            with lock:
                lock.release()  # the exit's release will fail with NotHeld ...
                raise KeyError("body")  # ... but the body's exception is what propagates
        self.assertFalse(lock.held)

    def test_lock_keeps_working_after_its_client_is_closed(self):
        c = rlock.Client(self.redis.uri)
        lock = rlock.Lock(c, unique_key(self), 10000)
        c.close()
        del c
        self.assertTrue(lock.acquire())
        lock.release()
        lock.close()
        lock.close()
        with self.assertRaises(rlock.InvalidArgument):
            lock.acquire()
        self.assertEqual(lock.validity_ms, 0)

    def test_close_releases_a_held_lock(self):
        key = unique_key(self)
        a = rlock.Lock(self.client, key, 60000)
        self.assertTrue(a.acquire())
        a.close()
        b = self.new_lock(key)
        self.assertTrue(b.acquire(0))
        b.release()

    def test_quorum_of_one_behaves_like_a_single_lock(self):
        lock = rlock.Lock.quorum([self.client], unique_key(self), 10000)
        self.addCleanup(lock.close)
        self.assertEqual(lock.server_count, 1)
        self.assertTrue(lock.acquire())
        self.assertGreater(lock.fencing_token, 0)
        lock.release()
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Lock.quorum([], "k", 1000)

    def test_threads_contending_on_one_key_never_overlap(self):
        key = unique_key(self)
        threads_n, rounds = 4, 50
        state = {"inside": 0, "overlaps": 0, "count": 0, "last_token": 0, "stale": 0}
        errors = []

        def worker():
            try:
                lock = rlock.Lock(self.client, key, 10000)
                lock.set_retry_delay_ms(1, 5)
                try:
                    for _ in range(rounds):
                        if not lock.acquire(30000):  # generous: 200 short holds on 2 cores
                            errors.append("acquire timed out")
                            return
                        state["inside"] += 1
                        if state["inside"] != 1:
                            state["overlaps"] += 1
                        token = lock.fencing_token
                        if token <= state["last_token"]:
                            state["stale"] += 1
                        state["last_token"] = token
                        n = state["count"]
                        time.sleep(0)  # let another thread run inside the critical section
                        state["count"] = n + 1
                        state["inside"] -= 1
                        lock.release()
                finally:
                    lock.close()
            except Exception as e:  # reported below; a thread cannot fail the test itself
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            self.assertFalse(t.is_alive(), "a worker thread hung")
        self.assertEqual(errors, [])
        self.assertEqual(state["overlaps"], 0)
        self.assertEqual(state["stale"], 0)
        self.assertEqual(state["count"], threads_n * rounds)


class TestQuorum(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = []
        try:
            for _ in range(3):
                cls.servers.append(RedisServer().start())
        except BaseException:
            for s in cls.servers:
                s.stop()
            raise
        cls.clients = [rlock.Client(s.uri) for s in cls.servers]

    @classmethod
    def tearDownClass(cls):
        for c in cls.clients:
            c.close()
        for s in cls.servers:
            s.stop()

    def quorum(self, key, clients=None):
        try:
            lock = rlock.Lock.quorum(clients or self.clients, key, 10000)
        except rlock.InvalidArgument as e:
            self.skipTest("quorum locks over several servers are not available in this build: %s"
                          % e)
        self.addCleanup(lock.close)
        return lock

    def test_quorum_lock_acquires_and_releases_on_every_server(self):
        lock = self.quorum(unique_key(self))
        self.assertEqual(lock.server_count, 3)
        self.assertTrue(lock.acquire(2000))
        self.assertGreater(lock.validity_ms, 0)
        self.assertGreater(lock.fencing_token, 0)
        for i, (status, msg) in enumerate(lock.server_statuses()):
            self.assertIn(status, (rlock.OK, rlock.SERVER_PENDING), msg)
            self.assertIn(str(self.servers[i].port), msg)
        lock.release()
        self.assertEqual(lock.validity_ms, 0)

    def test_quorum_lock_excludes_a_second_quorum_lock(self):
        key = unique_key(self)
        a, b = self.quorum(key), self.quorum(key)
        self.assertTrue(a.acquire())
        try:
            got = b.acquire(0)
        except rlock.NoQuorum:  # also acceptable: no majority agreed
            got = False
        self.assertFalse(got, "two quorum locks held the same key")
        a.release()
        self.assertTrue(b.acquire(2000))
        b.release()

    def test_same_client_twice_is_invalid(self):
        with self.assertRaises(rlock.InvalidArgument):
            rlock.Lock.quorum([self.clients[0], self.clients[0]], "k", 1000)


class TestLiveness(_OneServer):
    """Auto-renewal, the lost-lock callback and the asynchronous calls (threading and asyncio)."""

    def test_auto_renew_keeps_a_short_lock_and_reports_its_loss(self):
        key = unique_key(self)
        lock, other = self.new_lock(key, 300), self.new_lock(key, 300)
        lost = []
        event = threading.Event()

        def on_lost(l, status):
            lost.append((status, l.validity_ms, threading.get_ident()))
            event.set()

        lock.auto_renew(True, on_lost)
        self.assertTrue(lock.acquire())
        deadline = time.monotonic() + 1.5  # five TTLs
        while time.monotonic() < deadline:
            self.assertFalse(other.acquire(0))
            time.sleep(0.05)  # pacing of the probe, not synchronisation
        self.assertEqual(lost, [])
        self.redis.command("DEL", key)  # taken away behind its back
        self.assertTrue(event.wait(2.0), "lost callback did not come")
        status, validity, thread = lost[0]
        self.assertEqual(status, rlock.ERR_NOT_HELD)
        self.assertEqual(validity, 0)
        self.assertNotEqual(thread, threading.get_ident())
        self.assertEqual(lock.validity_ms, 0)

    def test_async_acquire_and_release_call_back(self):
        lock = self.new_lock()
        results = []
        done = threading.Event()

        def acquired(status, detail):
            results.append(("acquire", status))
            lock.release_async(released)  # chaining from the callback is allowed

        def released(status, detail):
            results.append(("release", status))
            done.set()

        lock.acquire_async(acquired, wait_ms=1000)
        self.assertTrue(done.wait(5.0))
        self.assertEqual(results, [("acquire", rlock.OK), ("release", rlock.OK)])

    def test_blocking_calls_in_a_callback_raise_instead_of_deadlocking(self):
        lock = self.new_lock()
        seen = []
        done = threading.Event()

        def acquired(status, detail):
            try:
                lock.release()
            except rlock.InvalidArgument as e:
                seen.append(e)
            done.set()

        lock.acquire_async(acquired)
        self.assertTrue(done.wait(5.0))
        self.assertEqual(len(seen), 1)
        lock.release()

    def test_asyncio_forms(self):
        import asyncio
        key = unique_key(self)
        a, b = self.new_lock(key=key), self.new_lock(key=key)

        async def scenario():
            self.assertTrue(await a.acquire_aio(0))
            self.assertFalse(await b.acquire_aio(0))
            waiter = asyncio.ensure_future(b.acquire_aio(5000))
            await asyncio.sleep(0.05)
            await a.release_aio()
            self.assertTrue(await waiter)
            await b.extend_aio(20000)
            await b.release_aio()

        asyncio.run(scenario())

    def test_close_cancels_a_pending_async_acquire(self):
        key = unique_key(self)
        holder, waiter = self.new_lock(key=key), self.new_lock(key=key)
        self.assertTrue(holder.acquire())
        results = []
        waiter.acquire_async(lambda status, detail: results.append(status), wait_ms=-1)
        waiter.close()
        self.assertEqual(results, [rlock.ERR_CANCELED])
        holder.release()


if __name__ == "__main__":
    unittest.main()
