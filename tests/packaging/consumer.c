/* A minimal consumer of an *installed* librlock, built by the packaging tests once through
 * pkg-config and once through find_package(rlock). It needs no Redis server. */
#include <rlock.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "consumer: FAILED: %s\n", what);
    failures++;
  }
}

int main(void) {
  const char *version = rlock_version();
  const char *busy = rlock_strerror(RLOCK_ERR_BUSY);
  rlock_client *c = NULL;
  int rc;

  printf("consumer: header %s, library %s\n", RLOCK_VERSION_STRING, version ? version : "(null)");
  check(version != NULL && strcmp(version, RLOCK_VERSION_STRING) == 0,
        "rlock_version() equals RLOCK_VERSION_STRING");
  check(rlock_version_number() == RLOCK_VERSION_NUMBER,
        "rlock_version_number() equals RLOCK_VERSION_NUMBER");
  check(busy != NULL && busy[0] != '\0', "rlock_strerror(RLOCK_ERR_BUSY) is a non-empty string");

  rc = rlock_client_new("not a uri", &c);
  check(rc == RLOCK_ERR_INVALID, "rlock_client_new(\"not a uri\") returns RLOCK_ERR_INVALID");
  check(c == NULL, "rlock_client_new leaves *out NULL on failure");
  rlock_client_free(c); /* NULL: a no-op */

  if (failures != 0) {
    return 1;
  }
  printf("consumer: ok\n");
  return 0;
}
