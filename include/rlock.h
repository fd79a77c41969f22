/*
 * rlock: distributed locks on Redis, single-instance and quorum (Redlock).
 *
 * This is the whole public API of librlock. It is plain C (C99 and later, and C++), it includes no
 * hiredis or libuv header, and every type at the boundary is a C type. Handles are opaque.
 *
 * ABI rules: functions are only ever added (a changed behaviour gets a new name, e.g. `_v2`), the
 * numeric values of status codes never change and retired values are never reused. The SONAME is
 * librlock.so.RLOCK_VERSION_MAJOR.
 *
 * Status codes: every function that can fail returns an int status, RLOCK_OK (0) on success or one of
 * the negative RLOCK_ERR_* codes. rlock_strerror() describes a code; rlock_last_error() gives the
 * detail of the most recent failure *on the calling thread* (which server, what Redis said).
 *
 * Threads: the library runs one internal event-loop thread (started with the first client, stopped
 * with the last) that does all Redis I/O with SIGPIPE blocked; no process-wide signal state is ever
 * changed. Blocking calls hand their work to that thread once per call and wait for it.
 *   - rlock_client: thread-safe. Any number of threads and locks may share one client.
 *   - rlock: one lock handle is used by one thread at a time (calls on one handle must not overlap);
 *     different handles may be used concurrently from different threads, also on the same key.
 *     Exception: rlock_validity_ms and rlock_fencing_token read atomics and may be called from any
 *     thread at any time, also while another thread is inside a call on the same handle.
 *   - fork(): a child process must not use (or free) clients and locks created before the fork; it
 *     may create new ones, which get a loop thread of their own.
 *   - rlock_version, rlock_strerror, rlock_err_name, rlock_last_error: callable from any thread.
 */
#ifndef RLOCK_H
#define RLOCK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(RLOCK_BUILDING_LIBRARY) && defined(__GNUC__)
#define RLOCK_API __attribute__((visibility("default")))
#else
#define RLOCK_API
#endif

/* ---- Version ------------------------------------------------------------------------------------ */

#define RLOCK_VERSION_MAJOR 1
#define RLOCK_VERSION_MINOR 0
#define RLOCK_VERSION_PATCH 0
#define RLOCK_VERSION_STRING "1.0.0"
/* One number for comparisons: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define RLOCK_VERSION_NUMBER \
  (RLOCK_VERSION_MAJOR * 10000 + RLOCK_VERSION_MINOR * 100 + RLOCK_VERSION_PATCH)

/* "MAJOR.MINOR.PATCH" of the library actually loaded; a static string. Compare it with
 * RLOCK_VERSION_STRING to check that the header and the library agree. */
RLOCK_API const char *rlock_version(void);
/* The same as a number (RLOCK_VERSION_NUMBER of the library actually loaded). */
RLOCK_API int rlock_version_number(void);

/* ---- Status codes (fixed values; new codes are only ever appended) -------------------------------- */

#define RLOCK_OK 0
#define RLOCK_ERR_BUSY -1      /* held by another owner: not acquired */
#define RLOCK_ERR_NOT_HELD -2  /* release/extend: this handle does not hold the lock (never acquired,
                                  expired, taken over) */
#define RLOCK_ERR_INVALID -3   /* bad argument or state: NULL, empty key, ttl <= 0, bad URI, acquire on
                                  a handle that already holds */
#define RLOCK_ERR_TIMEOUT -4   /* a server did not answer within its timeout */
#define RLOCK_ERR_IO -5        /* connect refused, connection reset/closed */
#define RLOCK_ERR_SERVER -6    /* Redis answered with an error (NOPERM, READONLY, OOM, WRONGTYPE...) */
#define RLOCK_ERR_NO_QUORUM -7 /* quorum lock: too few servers answered/agreed */
#define RLOCK_ERR_NOMEM -8     /* out of memory */
#define RLOCK_ERR_AUTH -9      /* authentication or ACL failure */
#define RLOCK_ERR_INTERNAL -10 /* a bug in rlock (an unexpected internal exception); please report */
#define RLOCK_ERR_CANCELED -11 /* an asynchronous call was canceled because its handle was freed */

/* A static, human-readable description of a status code. Never NULL, also for unknown codes. */
RLOCK_API const char *rlock_strerror(int status);
/* The symbolic name of a status code ("RLOCK_ERR_BUSY"), or "RLOCK_ERR_UNKNOWN". Static, never NULL. */
RLOCK_API const char *rlock_err_name(int status);
/* Detail of the most recent failed call made by the calling thread, e.g.
 * "acquire: 127.0.0.1:6379: connect: Connection refused". Never NULL. Every function that returns a
 * status (and rlock_client_free / rlock_free) sets it: to the detail on failure, to "" on success.
 * rlock_version*, rlock_strerror, rlock_err_name, rlock_last_error, rlock_validity_ms,
 * rlock_fencing_token and rlock_server_count leave it alone. The string is thread-local and stays
 * valid until the calling thread's next call of a function that sets it. */
RLOCK_API const char *rlock_last_error(void);

/* ---- Clients: one Redis server each ---------------------------------------------------------------- */

typedef struct rlock_client rlock_client; /* one Redis server; thread-safe, shareable */

/*
 * Creates a client for one Redis server. No I/O happens here: the connection is made by the first
 * call that needs it, and made again after it breaks (a server restart is reconnected silently; a
 * request sent in the instant before the old connection's close was noticed fails once with
 * RLOCK_ERR_IO, which rlock_acquire with a wait retries).
 *
 *   uri: redis://[[user]:password@]host[:port][/db][?connect_timeout_ms=N&command_timeout_ms=N]
 *        unix:///path/to/redis.sock[?db=N&password=...&user=...&connect_timeout_ms=N&command_timeout_ms=N]
 *
 *   host is a name, an IPv4 address or a bracketed IPv6 address ([::1]); port defaults to 6379; db to
 *   0. user and password may be percent-encoded. A password alone authenticates as the default user
 *   (AUTH password), user and password use an ACL user (AUTH user password).
 *   connect_timeout_ms (default 1000) bounds making a connection, name resolution included;
 *   command_timeout_ms (default 500) bounds each Redis command. Both are 1..3600000. Query parameters
 *   may appear in any order, each at most once; an unknown one is an error.
 *
 * Returns RLOCK_OK and sets *out, or RLOCK_ERR_INVALID (NULL argument, malformed URI, unknown or bad
 * query parameter, rediss:// which this build does not support) or RLOCK_ERR_NOMEM; *out is then
 * NULL. The uri string is copied; the caller keeps ownership of it.
 */
RLOCK_API int rlock_client_new(const char *uri, rlock_client **out);

/* Releases the caller's reference. NULL is a no-op. Safe while locks still use the client: they keep
 * working and the client (and its connection) goes away with its last lock. */
RLOCK_API void rlock_client_free(rlock_client *c);

/* Sends PING, connecting first if needed. Returns RLOCK_OK, RLOCK_ERR_INVALID (NULL),
 * RLOCK_ERR_TIMEOUT, RLOCK_ERR_IO, RLOCK_ERR_AUTH or RLOCK_ERR_SERVER. Bounded by the timeouts. */
RLOCK_API int rlock_client_ping(rlock_client *c);

/* ---- Locks ---------------------------------------------------------------------------------------- */

typedef struct rlock rlock; /* one lock on one key; one thread at a time */

/*
 * A single-instance lock on `key` of client c. ttl_ms is the lease: a holder that dies without
 * releasing blocks others for at most ttl_ms. The lock takes a reference to the client (so the caller
 * may free the client at once). No I/O happens here.
 *
 * Keys used on the server: `key` itself (holds the owner's random token while held) and
 * `key` + ":fence" (the fencing counter; it has no TTL and is kept forever, one small string per key).
 *
 * Returns RLOCK_OK and sets *out; RLOCK_ERR_INVALID for NULL c/key/out, an empty key, ttl_ms <= 0
 * or ttl_ms > 2^40 (about 35 years); RLOCK_ERR_NOMEM. *out is NULL on failure. key is copied. A single-instance lock never returns
 * RLOCK_ERR_NO_QUORUM.
 */
RLOCK_API int rlock_new(rlock_client *c, const char *key, int64_t ttl_ms, rlock **out);

/*
 * A quorum lock (Redlock) on `key` over n independent Redis servers: held only while a majority
 * (n/2 + 1) granted it within its validity. n >= 1; n == 1 behaves exactly like rlock_new.
 * RLOCK_ERR_INVALID for NULL arguments or entries, n == 0, the same client twice, or two clients for
 * the same server address. The lock takes a reference to each client.
 */
RLOCK_API int rlock_quorum_new(rlock_client *const *clients, size_t n, const char *key,
                               int64_t ttl_ms, rlock **out);

/* Releases the lock first if it is held (bounded by the command timeout), then frees the handle.
 * NULL is a no-op. */
RLOCK_API void rlock_free(rlock *l);

/*
 * Takes the lock.
 *   wait_ms == 0: one attempt; RLOCK_ERR_BUSY at once if another owner holds it.
 *   wait_ms  > 0: retries (exponential backoff with full jitter, see rlock_set_retry_delay_ms) until
 *                 acquired or wait_ms have passed; failures on the way (busy, timeouts, I/O, server
 *                 errors, no quorum) are retried, RLOCK_ERR_INVALID and RLOCK_ERR_AUTH are not.
 *   wait_ms  < 0: retries until acquired (or a non-retryable error).
 * Each acquisition uses a fresh 128-bit random owner token and takes a new fencing token. On failure
 * nothing is left behind: the attempt is undone on every server that may have granted it.
 * Waiting callers queue on the server and a release wakes the first of them at once (pub/sub; the
 * backoff is only the fallback). For a single-instance lock the release hands the lock straight to
 * the first waiter (which confirms it with one attempt), so waiting callers are served first come,
 * first served; a single attempt (wait_ms == 0) ignores the queue. Notifications use a second connection per client, opened by
 * the first wait of any handle on it; a handle that waited once stays subscribed until it is freed.
 *
 * Returns RLOCK_OK (held), RLOCK_ERR_BUSY, RLOCK_ERR_INVALID (NULL, or the handle already holds the
 * lock), RLOCK_ERR_TIMEOUT, RLOCK_ERR_IO, RLOCK_ERR_SERVER, RLOCK_ERR_AUTH, RLOCK_ERR_NO_QUORUM (quorum
 * locks only), RLOCK_ERR_NOMEM. When a wait runs out, the status of the last attempt is returned.
 * A single attempt on a single server costs at most connect_timeout_ms + command_timeout_ms; the
 * last attempt may start just before the deadline, so a wait can overrun by that much.
 *
 * Quorum locks: RLOCK_ERR_BUSY when so many servers answered "held by another owner" that no
 * quorum was possible; RLOCK_ERR_NO_QUORUM when failures (or failures and refusals together) left
 * too few grants; RLOCK_ERR_TIMEOUT when a quorum granted but the attempt took longer than the
 * validity allows; RLOCK_ERR_AUTH when every failing server failed authentication. The call
 * returns as soon as the outcome is certain: the request still went to every server, and the
 * servers whose answer was not needed show RLOCK_SERVER_PENDING in rlock_server_status.
 */
RLOCK_API int rlock_acquire(rlock *l, int64_t wait_ms);

/*
 * Gives the lock up: deletes the key on each server only where it still holds this handle's token
 * (an atomic compare-and-delete), and wakes the first queued waiter (a single-instance lock is
 * handed to it in the same step). The handle does not hold the lock afterwards, whatever the result.
 * Returns RLOCK_OK (it was ours and is now deleted on a quorum / the server), RLOCK_ERR_NOT_HELD (the
 * handle did not hold it, or it expired or was taken over: another owner's lock is never touched),
 * RLOCK_ERR_INVALID (NULL), RLOCK_ERR_TIMEOUT / RLOCK_ERR_IO / RLOCK_ERR_SERVER / RLOCK_ERR_AUTH
 * (single-instance: could not tell; the key then expires by its TTL), RLOCK_ERR_NO_QUORUM (quorum: too
 * few servers answered to tell).
 */
RLOCK_API int rlock_release(rlock *l);

/*
 * Resets the lock's TTL to ttl_ms on each server where it still holds this handle's token (atomic
 * compare-and-pexpire) and recomputes the validity from a clock read before the request was sent.
 * Returns RLOCK_OK, RLOCK_ERR_INVALID (NULL, ttl_ms <= 0), RLOCK_ERR_NOT_HELD (not held, or lost:
 * the handle is then no longer held), RLOCK_ERR_TIMEOUT / IO / SERVER / AUTH / NO_QUORUM (could not
 * tell: the handle keeps its previous validity, which is still a safe lower bound).
 * Later acquisitions of this handle use ttl_ms as well.
 */
RLOCK_API int rlock_extend(rlock *l, int64_t ttl_ms);  /* ttl_ms: 1 .. 2^40 */

/* Milliseconds of ownership left by the caller's monotonic clock (ttl - time since the acquire was
 * sent - clock drift). Never negative: 0 if not held, released, or expired. NULL gives 0. */
RLOCK_API int64_t rlock_validity_ms(const rlock *l);

/*
 * The fencing token of the current acquisition: strictly greater than the token of every earlier
 * acquisition of the same key (by any handle or process), so a storage service can reject writes
 * from a stale owner. 0 if not held. See docs/fencing.md for the guarantee and its limits (it
 * survives a server restart that lost the counter by re-seeding from the server clock in
 * microseconds).
 */
RLOCK_API uint64_t rlock_fencing_token(const rlock *l);

/* ---- Lock options (typed setters; call them while the lock is not in use by another thread) -------- */

/* Retry pacing for rlock_acquire with wait_ms != 0: the n-th wait is uniform in [0, min(max_ms,
 * base_ms * 2^n)] ("full jitter"), never past the deadline. Defaults: base 2 ms, max 50 ms.
 * RLOCK_ERR_INVALID unless 1 <= base_ms <= max_ms <= 3600000. */
RLOCK_API int rlock_set_retry_delay_ms(rlock *l, int64_t base_ms, int64_t max_ms);

/* Clock drift allowance subtracted from the validity: ttl * drift_ppm / 1e6 + extra_ms. Defaults:
 * 10000 ppm (1%) + 2 ms, as the Redlock description suggests. RLOCK_ERR_INVALID for NULL, drift_ppm
 * outside 0..1000000 or extra_ms outside 0..3600000. */
RLOCK_API int rlock_set_drift(rlock *l, int64_t drift_ppm, int64_t extra_ms);

/* ---- Per-server detail of the last call ----------------------------------------------------------- */

/* Number of servers of the lock (1 for a single-instance lock); 0 for NULL. */
RLOCK_API size_t rlock_server_count(const rlock *l);

/*
 * What server i (0-based, in the order given to rlock_quorum_new) answered in the handle's most recent
 * acquire/release/extend attempt: RLOCK_OK (granted / deleted / extended), RLOCK_ERR_BUSY (held by
 * another owner), RLOCK_ERR_NOT_HELD (did not hold our token), RLOCK_ERR_TIMEOUT, RLOCK_ERR_IO,
 * RLOCK_ERR_SERVER, RLOCK_ERR_AUTH, or 1 (RLOCK_SERVER_PENDING: no answer was needed for the outcome,
 * or no call was made yet). Writes up to msg_len bytes (NUL-terminated) of the server's address and
 * error text to msg, if msg is not NULL. Returns RLOCK_ERR_INVALID for NULL l or i out of range.
 */
#define RLOCK_SERVER_PENDING 1
RLOCK_API int rlock_server_status(const rlock *l, size_t i, char *msg, size_t msg_len);

/* ---- Callbacks: threading rules ------------------------------------------------------------------
 *
 * Callbacks (completion of the *_async calls, rlock_on_lost) run on the library's loop thread, the
 * thread that does all Redis I/O for the process. A callback must:
 *   - return quickly (every lock of the process waits while it runs) and never throw;
 *   - not call blocking functions (rlock_acquire, rlock_release, rlock_extend, rlock_client_ping):
 *     on the loop thread they return RLOCK_ERR_INVALID at once instead of deadlocking;
 *   - not call rlock_free or rlock_client_free (they do nothing there and report RLOCK_ERR_INVALID
 *     through rlock_last_error): free handles from your own threads.
 * It may call the *_async functions (to chain calls), rlock_validity_ms, rlock_fencing_token,
 * rlock_server_status, rlock_last_error (which holds the failed call's detail inside the
 * callback) and rlock_strerror. An event-loop program (libuv, Node addon, asyncio) hands the result
 * over to its own loop from the callback, e.g. with uv_async_send or loop.call_soon_threadsafe.
 * No callback of a handle runs after rlock_free of that handle has returned.
 */

/* Completion of an asynchronous call: status is what the blocking call would have returned. */
typedef void (*rlock_done_cb)(rlock *l, int status, void *userdata);

/*
 * Non-blocking forms of rlock_acquire, rlock_release and rlock_extend: they return at once and call
 * cb(l, status, userdata) exactly once, from the loop thread, when the call completes. They return
 * RLOCK_OK when the call was started, or an error (RLOCK_ERR_INVALID: NULL l or cb, bad ttl, or
 * another call on this handle still in progress; RLOCK_ERR_NOMEM), and then cb is never called.
 * Only one call (blocking or not) may be in progress on a handle at a time. rlock_free on a handle
 * with a pending rlock_acquire_async cancels it: cb gets RLOCK_ERR_CANCELED (and nothing is left
 * held); a pending release or extend is allowed to finish (bounded by the timeouts) first.
 */
RLOCK_API int rlock_acquire_async(rlock *l, int64_t wait_ms, rlock_done_cb cb, void *userdata);
RLOCK_API int rlock_release_async(rlock *l, rlock_done_cb cb, void *userdata);
RLOCK_API int rlock_extend_async(rlock *l, int64_t ttl_ms, rlock_done_cb cb, void *userdata);

/* ---- Auto-renewal ("watchdog") ------------------------------------------------------------------- */

/*
 * Called when a lock under auto-renewal is lost: renewal found it taken over or expired
 * (RLOCK_ERR_NOT_HELD), or could not renew it before its validity ran out (the last renewal's
 * error: RLOCK_ERR_TIMEOUT, RLOCK_ERR_IO, RLOCK_ERR_NO_QUORUM...). It is called at most once per
 * acquisition, from the loop thread, no later than the moment the validity ends; from then on
 * rlock_validity_ms returns 0 and rlock_fencing_token 0. See "Callbacks: threading rules".
 */
typedef void (*rlock_lost_cb)(rlock *l, int status, void *userdata);

/*
 * While enabled and the lock is held, the library extends it from its own loop thread, without
 * the caller's thread, every ttl/3 (ttl: the latest one given to rlock_new/rlock_extend), and
 * retries a failed renewal every ttl/10 until the validity runs out. Renewal starts with the next
 * acquisition (or at once if the lock is held now) and stops on release, on loss, on
 * rlock_set_auto_renew(l, 0, ...) and on rlock_free. on_lost may be NULL. Returns RLOCK_OK, or
 * RLOCK_ERR_INVALID for NULL l. Call it while no other call on the handle is in progress.
 */
RLOCK_API int rlock_set_auto_renew(rlock *l, int enabled, rlock_lost_cb on_lost, void *userdata);

#ifdef __cplusplus
}
#endif

#endif /* RLOCK_H */
