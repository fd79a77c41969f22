#!/usr/bin/env bash
# packaging_soname: the SONAME is librlock.so.<RLOCK_VERSION_MAJOR>, the ABI major from the header.
#   check_soname.sh <librlock.so> <rlock.h> <readelf>
set -euo pipefail
lib=$1 header=$2 readelf=$3

major=$(sed -nE 's/^#define RLOCK_VERSION_MAJOR[[:space:]]+([0-9]+).*/\1/p' "$header")
if [ -z "$major" ]; then
  echo "FAIL: no '#define RLOCK_VERSION_MAJOR <n>' in $header"
  exit 1
fi
expected="librlock.so.$major"

soname=$(LC_ALL=C "$readelf" -d "$lib" | sed -nE 's/.*\(SONAME\).*\[(.*)\].*/\1/p')
if [ "$soname" != "$expected" ]; then
  echo "FAIL: SONAME of $lib is '${soname:-<none>}', expected '$expected'"
  exit 1
fi
echo "OK: SONAME $soname"
