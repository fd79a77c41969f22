#!/usr/bin/env bash
# packaging_header_c: include/rlock.h is clean C99 and C++17 on its own.
#   check_header.sh <include dir> <c compiler> <c++ compiler> <nm> <work dir>
# - compiles as C99 and C11 with -pedantic -Wall -Wextra -Werror -Wstrict-prototypes, included
#   first (self-contained) and twice (include guard);
# - compiles as C++17 with -pedantic -Wall -Wextra -Werror, and the API keeps C linkage there
#   (the object file references rlock_version unmangled);
# - includes no hiredis or libuv header (those stay Requires.private in rlock.pc).
# C89 is not required (the house rule is C99); today the header happens to pass it, which this
# script reports without failing.
set -euo pipefail
incdir=$1 cc=$2 cxx=$3 nm=$4 work=$5

rm -rf "$work"
mkdir -p "$work"
status=0

if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](hiredis|uv[./]|uv\.h)' "$incdir/rlock.h"; then
  echo "FAIL: rlock.h includes a hiredis or libuv header"
  status=1
fi

cat >"$work/tu.c" <<'TU'
#include <rlock.h>
#include <rlock.h>
/* Use the declarations, so that a wrong prototype or macro is an error here. */
int rlock_header_check_version = RLOCK_VERSION_NUMBER;
const char *(*rlock_header_check_fn)(int) = rlock_strerror;
int rlock_header_check_call(void) {
  rlock_client *c = 0;
  return rlock_client_new(RLOCK_VERSION_STRING, &c) == RLOCK_ERR_INVALID && rlock_version() != 0;
}
TU
cp "$work/tu.c" "$work/tu.cpp"

compile() { # <label> <compiler> <args...>
  local label=$1
  shift
  if "$@"; then
    echo "OK: $label"
  else
    echo "FAIL: $label: $*"
    status=1
  fi
}
cflags=(-pedantic -Wall -Wextra -Werror -Wstrict-prototypes -I"$incdir" -c)
compile "C99" "$cc" -std=c99 "${cflags[@]}" "$work/tu.c" -o "$work/c99.o"
compile "C11" "$cc" -std=c11 "${cflags[@]}" "$work/tu.c" -o "$work/c11.o"
compile "C++17" "$cxx" -std=c++17 -pedantic -Wall -Wextra -Werror -I"$incdir" -c "$work/tu.cpp" \
  -o "$work/cxx17.o"

if [ -f "$work/cxx17.o" ]; then
  if "$nm" -u "$work/cxx17.o" | grep -qE '[[:space:]]rlock_version$'; then
    echo "OK: C linkage from C++"
  else
    echo "FAIL: from C++, rlock_version is not referenced with C linkage (extern \"C\" missing?)"
    "$nm" -u "$work/cxx17.o"
    status=1
  fi
fi

if "$cc" -std=c89 "${cflags[@]}" "$work/tu.c" -o "$work/c89.o" 2>"$work/c89.log"; then
  echo "note: also compiles as C89 (not required)"
else
  echo "note: does not compile as C89 (not required: the header targets C99)"
fi
exit "$status"
