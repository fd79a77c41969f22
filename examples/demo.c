/*
 * rlock-demo: a tour of the rlock C API against real Redis servers.
 *
 *   rlock-demo redis://127.0.0.1:6379 [redis://host:port ...]
 *
 * 1. a single-instance lock on the first server: acquire, validity, fencing token, extend, release;
 * 2. contention: two handles on one key, then a second thread that waits for the first to release;
 * 3. error handling: a malformed URI and an unreachable server;
 * 4. with 3 or more URIs: a quorum (Redlock) lock over all of them, with per-server status;
 * 5. liveness: auto-renewal keeping a 300 ms lock for a second (with a lost-lock callback that
 *    must not fire), and the non-blocking API.
 *
 * Exits 0 when everything that must work did, 1 otherwise, 2 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rlock.h"

static int failures = 0;

/* Prints a failed expectation and counts it; the demo goes on so that every section is shown. */
#define EXPECT(cond, ...)                   \
  do {                                      \
    if (!(cond)) {                          \
      printf("  !! FAILED: ");              \
      printf(__VA_ARGS__);                  \
      printf("  [%s:%d]\n", __FILE__, __LINE__); \
      failures++;                           \
    }                                       \
  } while (0)

/* "RLOCK_ERR_BUSY (held by another owner) -- detail"; reads rlock_last_error() first, since the
 * detail is only valid until this thread's next rlock call. */
static void print_status(const char *what, int st) {
  const char *detail = rlock_last_error();
  char buf[512];
  snprintf(buf, sizeof buf, "%s", detail);
  if (st == RLOCK_OK) {
    printf("  %-34s -> RLOCK_OK\n", what);
  } else {
    printf("  %-34s -> %s (%s)%s%s\n", what, rlock_err_name(st), rlock_strerror(st),
           buf[0] ? ": " : "", buf);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void print_servers(const rlock *l) {
  size_t i, n = rlock_server_count(l);
  for (i = 0; i < n; i++) {
    char msg[256];
    int st = rlock_server_status(l, i, msg, sizeof msg);
    printf("    server %zu: %-22s %s\n", i,
           st == RLOCK_SERVER_PENDING ? "PENDING (not needed)" : rlock_err_name(st), msg);
  }
}

/* ---- 1. single instance ------------------------------------------------------------------------ */

static void demo_single(rlock_client *c, const char *key) {
  rlock *l = NULL;
  int st;
  printf("\n== 1. Single-instance lock on key \"%s\" ==\n", key);

  st = rlock_client_ping(c);
  print_status("rlock_client_ping", st);
  EXPECT(st == RLOCK_OK, "the first server must answer PING");
  if (st != RLOCK_OK) return;

  st = rlock_new(c, key, 10000, &l);
  print_status("rlock_new(ttl 10000 ms)", st);
  EXPECT(st == RLOCK_OK, "rlock_new");
  if (st != RLOCK_OK) return;

  st = rlock_acquire(l, 0);
  print_status("rlock_acquire(wait 0)", st);
  EXPECT(st == RLOCK_OK, "acquire of a free key");
  printf("  validity %lld ms, fencing token %llu\n", (long long)rlock_validity_ms(l),
         (unsigned long long)rlock_fencing_token(l));
  EXPECT(rlock_validity_ms(l) > 0 && rlock_validity_ms(l) <= 10000, "validity in (0, 10000]");
  EXPECT(rlock_fencing_token(l) > 0, "a fencing token while held");
  print_servers(l);

  st = rlock_extend(l, 30000);
  print_status("rlock_extend(30000 ms)", st);
  EXPECT(st == RLOCK_OK, "extend of a held lock");
  printf("  validity now %lld ms\n", (long long)rlock_validity_ms(l));
  EXPECT(rlock_validity_ms(l) > 10000, "validity after extend reflects the new ttl");

  st = rlock_release(l);
  print_status("rlock_release", st);
  EXPECT(st == RLOCK_OK, "release of a held lock");
  printf("  validity after release %lld ms, fencing token %llu\n", (long long)rlock_validity_ms(l),
         (unsigned long long)rlock_fencing_token(l));
  EXPECT(rlock_validity_ms(l) == 0, "validity 0 after release");

  st = rlock_release(l);
  print_status("rlock_release again", st);
  EXPECT(st == RLOCK_ERR_NOT_HELD, "a second release says NOT_HELD");
  rlock_free(l);
}

/* ---- 2. contention ----------------------------------------------------------------------------- */

struct waiter {
  rlock *lock;
  int64_t wait_ms;
  int status;
  char detail[512];
  double waited_ms;
};

static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  double t0 = now_ms();
  w->status = rlock_acquire(w->lock, w->wait_ms);
  snprintf(w->detail, sizeof w->detail, "%s", rlock_last_error());
  w->waited_ms = now_ms() - t0;
  return NULL;
}

static void demo_contention(rlock_client *c, const char *key) {
  rlock *a = NULL, *b = NULL;
  struct waiter w;
  pthread_t th;
  uint64_t token_a;
  int st;
  printf("\n== 2. Contention: two handles on key \"%s\" ==\n", key);

  st = rlock_new(c, key, 10000, &a);
  if (st == RLOCK_OK) st = rlock_new(c, key, 10000, &b);
  if (st != RLOCK_OK) {
    print_status("rlock_new", st);
    EXPECT(0, "rlock_new for two handles");
    rlock_free(a);
    return;
  }
  st = rlock_acquire(a, 0);
  print_status("A: rlock_acquire(wait 0)", st);
  EXPECT(st == RLOCK_OK, "A acquires the free key");
  token_a = rlock_fencing_token(a);
  printf("  A holds it, fencing token %llu\n", (unsigned long long)token_a);

  st = rlock_acquire(b, 0);
  print_status("B: rlock_acquire(wait 0)", st);
  EXPECT(st == RLOCK_ERR_BUSY, "B gets RLOCK_ERR_BUSY while A holds the key");
  print_servers(b);

  memset(&w, 0, sizeof w);
  w.lock = b;
  w.wait_ms = 5000;
  if (pthread_create(&th, NULL, waiter_main, &w) != 0) {
    EXPECT(0, "pthread_create");
    rlock_free(a);
    rlock_free(b);
    return;
  }
  printf("  thread B: rlock_acquire(wait 5000 ms) started; A releases in 300 ms\n");
  sleep_ms(300);
  st = rlock_release(a);
  print_status("A: rlock_release", st);
  EXPECT(st == RLOCK_OK, "A releases");
  pthread_join(th, NULL);

  printf("  thread B: rlock_acquire returned %s after %.0f ms%s%s\n", rlock_err_name(w.status),
         w.waited_ms, w.detail[0] ? ": " : "", w.detail);
  EXPECT(w.status == RLOCK_OK, "B acquires once A released");
  EXPECT(w.waited_ms >= 250, "B really waited for A (%.0f ms)", w.waited_ms);
  printf("  B holds it, fencing token %llu (A had %llu)\n",
         (unsigned long long)rlock_fencing_token(b), (unsigned long long)token_a);
  EXPECT(rlock_fencing_token(b) > token_a, "B's fencing token is higher than A's");

  st = rlock_release(b);
  print_status("B: rlock_release", st);
  EXPECT(st == RLOCK_OK, "B releases");
  rlock_free(a);
  rlock_free(b);
}

/* ---- 3. errors --------------------------------------------------------------------------------- */

/* A loopback port nothing listens on (bound, then closed again). 0 on failure. */
static int closed_port(void) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int port = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

static void demo_errors(void) {
  rlock_client *c = NULL;
  rlock *l = NULL;
  char uri[128];
  int st, port;
  printf("\n== 3. Error handling ==\n");

  st = rlock_client_new("http://127.0.0.1:6379", &c);
  print_status("rlock_client_new(\"http://...\")", st);
  EXPECT(st == RLOCK_ERR_INVALID && c == NULL, "a bad URI is RLOCK_ERR_INVALID");
  rlock_client_free(c);
  c = NULL;

  st = rlock_client_new("redis://127.0.0.1:6379?timeout=5", &c);
  print_status("rlock_client_new(\"...?timeout=5\")", st);
  EXPECT(st == RLOCK_ERR_INVALID, "an unknown query parameter is RLOCK_ERR_INVALID");
  rlock_client_free(c);
  c = NULL;

  port = closed_port();
  snprintf(uri, sizeof uri, "redis://127.0.0.1:%d?connect_timeout_ms=1000", port);
  printf("  unreachable server: %s\n", uri);
  st = rlock_client_new(uri, &c);
  EXPECT(st == RLOCK_OK, "a well-formed URI is accepted without I/O");
  if (st != RLOCK_OK) return;
  st = rlock_client_ping(c);
  print_status("rlock_client_ping", st);
  EXPECT(st == RLOCK_ERR_IO || st == RLOCK_ERR_TIMEOUT, "PING of a closed port fails with IO");

  st = rlock_new(c, "rlock-demo:unreachable", 5000, &l);
  EXPECT(st == RLOCK_OK, "rlock_new");
  if (st == RLOCK_OK) {
    st = rlock_acquire(l, 0);
    print_status("rlock_acquire(wait 0)", st);
    EXPECT(st == RLOCK_ERR_IO || st == RLOCK_ERR_TIMEOUT, "acquire on a closed port fails");
    print_servers(l);
  }
  rlock_free(l);
  rlock_client_free(c);
}

/* ---- 4. quorum --------------------------------------------------------------------------------- */

static void demo_quorum(char **uris, int n, const char *key) {
  rlock_client **clients = calloc((size_t)n, sizeof *clients);
  rlock *l = NULL, *single = NULL;
  int i, st, made = 0;
  printf("\n== 4. Quorum (Redlock) lock on key \"%s\" over %d servers ==\n", key, n);
  if (!clients) {
    EXPECT(0, "out of memory");
    return;
  }
  for (i = 0; i < n; i++) {
    st = rlock_client_new(uris[i], &clients[i]);
    if (st != RLOCK_OK) {
      print_status(uris[i], st);
      EXPECT(0, "client for %s", uris[i]);
      goto out;
    }
    made++;
  }
  st = rlock_quorum_new((rlock_client *const *)clients, (size_t)n, key, 10000, &l);
  print_status("rlock_quorum_new", st);
  if (st == RLOCK_ERR_INVALID) {
    printf("  quorum locks over several servers are not available in this build; skipping\n");
    goto out;
  }
  EXPECT(st == RLOCK_OK, "rlock_quorum_new over distinct servers");
  if (st != RLOCK_OK) goto out;

  st = rlock_acquire(l, 2000);
  print_status("rlock_acquire(wait 2000)", st);
  EXPECT(st == RLOCK_OK, "quorum acquire with every server up");
  printf("  validity %lld ms, fencing token %llu, per server:\n", (long long)rlock_validity_ms(l),
         (unsigned long long)rlock_fencing_token(l));
  print_servers(l);
  st = rlock_release(l);
  print_status("rlock_release", st);
  EXPECT(st == RLOCK_OK, "quorum release");
  print_servers(l);

  /* A single-instance holder of the same key on server 0 takes one vote away; a majority of the
   * others still grants the quorum lock. */
  printf("  another owner now holds \"%s\" on server 0 alone:\n", key);
  st = rlock_new(clients[0], key, 10000, &single);
  if (st == RLOCK_OK) st = rlock_acquire(single, 0);
  print_status("server 0: single-instance acquire", st);
  EXPECT(st == RLOCK_OK, "single-instance acquire on server 0");
  if (st == RLOCK_OK) {
    st = rlock_acquire(l, 2000);
    print_status("quorum rlock_acquire(wait 2000)", st);
    if (n == 3) EXPECT(st == RLOCK_OK, "2 of 3 servers are a majority");
    print_servers(l);
    if (st == RLOCK_OK) {
      st = rlock_release(l);
      print_status("quorum rlock_release", st);
      EXPECT(st == RLOCK_OK, "quorum release");
    }
    st = rlock_release(single);
    print_status("server 0: single-instance release", st);
    EXPECT(st == RLOCK_OK, "single-instance release");
  }

out:
  rlock_free(single);
  rlock_free(l);
  for (i = 0; i < made; i++) rlock_client_free(clients[i]);
  free(clients);
}

/* ---- 5. liveness: auto-renewal, lost-lock callback, async ------------------------------------- */

/* Callbacks run on rlock's own thread: they only record what happened, under a mutex. */
static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cv = PTHREAD_COND_INITIALIZER;
static int lost_status = 1, async_status = 1;

static void on_lost(rlock *l, int status, void *ud) {
  (void)l;
  (void)ud;
  pthread_mutex_lock(&cb_mu);
  lost_status = status;
  pthread_cond_broadcast(&cb_cv);
  pthread_mutex_unlock(&cb_mu);
}

static void on_acquired(rlock *l, int status, void *ud) {
  (void)l;
  (void)ud;
  pthread_mutex_lock(&cb_mu);
  async_status = status;
  pthread_cond_broadcast(&cb_cv);
  pthread_mutex_unlock(&cb_mu);
}

/* Waits up to ms for *value to leave 1 (the "not yet" marker). */
static int wait_for(int *value, long ms) {
  struct timespec until;
  int v;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&cb_mu);
  while (*value == 1 && pthread_cond_timedwait(&cb_cv, &cb_mu, &until) == 0) {
  }
  v = *value;
  pthread_mutex_unlock(&cb_mu);
  return v;
}

static void demo_liveness(rlock_client *c, const char *key) {
  rlock *l = NULL, *other = NULL;
  int st;
  double t0;
  printf("\n== 5. Liveness on key \"%s\" ==\n", key);
  if (rlock_new(c, key, 300, &l) != RLOCK_OK || rlock_new(c, key, 300, &other) != RLOCK_OK) {
    print_status("rlock_new", RLOCK_ERR_INVALID);
    failures++;
    goto out;
  }
  st = rlock_set_auto_renew(l, 1, on_lost, NULL);
  print_status("rlock_set_auto_renew(on)", st);
  st = rlock_acquire(l, 0);
  print_status("rlock_acquire(ttl 300 ms)", st);
  EXPECT(st == RLOCK_OK, "acquire under auto-renewal");
  t0 = now_ms();
  while (now_ms() - t0 < 1000) {
    EXPECT(rlock_acquire(other, 0) == RLOCK_ERR_BUSY, "nobody else gets a renewed lock");
    sleep_ms(100);
  }
  printf("  after 1000 ms (> 3 TTLs): validity %lld ms, lost callback %s\n",
         (long long)rlock_validity_ms(l), lost_status == 1 ? "not called" : "CALLED");
  EXPECT(rlock_validity_ms(l) > 0 && lost_status == 1, "renewal kept the lock");
  /* Had the lock been lost (taken over, or the server gone until the validity ran out), on_lost
   * would have been called by now; tests/single/test_liveness.cpp shows those cases. */
  st = rlock_release(l);
  print_status("rlock_release (stops renewal)", st);
  EXPECT(st == RLOCK_OK, "release");

  /* The non-blocking API: the callback comes from rlock's thread. */
  st = rlock_acquire_async(other, 1000, on_acquired, NULL);
  print_status("rlock_acquire_async(wait 1000)", st);
  st = wait_for(&async_status, 2000);
  printf("  callback: %s, fencing token %llu\n", rlock_err_name(st),
         (unsigned long long)rlock_fencing_token(other));
  EXPECT(st == RLOCK_OK, "async acquire");
  if (st == RLOCK_OK) EXPECT(rlock_release(other) == RLOCK_OK, "release after async acquire");
out:
  rlock_free(other);
  rlock_free(l);
}

int main(int argc, char **argv) {
  rlock_client *c = NULL;
  char key[96];
  int st;

  if (argc < 2) {
    fprintf(stderr, "usage: %s redis://host:port [redis://host:port ...]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("rlock-demo: header %s, library %s\n", RLOCK_VERSION_STRING, rlock_version());
  EXPECT(atoi(rlock_version()) == RLOCK_VERSION_MAJOR, "library and header major versions agree");

  st = rlock_client_new(argv[1], &c);
  print_status("rlock_client_new(argv[1])", st);
  if (st != RLOCK_OK) {
    fprintf(stderr, "rlock-demo: cannot use %s\n", argv[1]);
    return 1;
  }
  snprintf(key, sizeof key, "rlock-demo:%ld:single", (long)getpid());
  demo_single(c, key);
  snprintf(key, sizeof key, "rlock-demo:%ld:contended", (long)getpid());
  demo_contention(c, key);
  snprintf(key, sizeof key, "rlock-demo:%ld:liveness", (long)getpid());
  demo_liveness(c, key);
  rlock_client_free(c);

  demo_errors();

  if (argc - 1 >= 3) {
    snprintf(key, sizeof key, "rlock-demo:%ld:quorum", (long)getpid());
    demo_quorum(argv + 1, argc - 1, key);
  } else {
    printf("\n== 4. Quorum lock: skipped (give 3 or more URIs) ==\n");
  }

  if (failures) {
    printf("\nrlock-demo: %d check(s) FAILED\n", failures);
    return 1;
  }
  printf("\nrlock-demo: all checks passed\n");
  return 0;
}
