#!/usr/bin/env bash
# packaging_install_cmake: configure, build and run tests/packaging/cmake_consumer, which finds the
# installed library with find_package(rlock 1 REQUIRED) via CMAKE_PREFIX_PATH only.
#   consumer_cmake.sh <cmake> <generator> <c compiler> <prefix> <project dir> <work dir>
set -euo pipefail
cmake=$1 generator=$2 cc=$3 prefix=$4 project=$5 work=$6

rm -rf "$work"
"$cmake" -S "$project" -B "$work" -G "$generator" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"

rlock_dir=$(sed -n 's/^rlock_DIR:PATH=//p' "$work/CMakeCache.txt")
case "$rlock_dir" in
  "$prefix/"*) ;;
  *) echo "FAIL: find_package(rlock) found '$rlock_dir', not the package in $prefix"; exit 1 ;;
esac

"$cmake" --build "$work" --config Release
exe="$work/consumer"
[ -x "$exe" ] || exe="$work/Release/consumer"

# No LD_LIBRARY_PATH: CMake gives the consumer's build an RPATH to the imported library.
resolved=$(ldd "$exe" | awk '$1 ~ /^librlock\.so/ { print $3 }')
case "$resolved" in
  "$prefix/"*) echo "librlock resolved to $resolved" ;;
  *) echo "FAIL: librlock resolved to '${resolved:-nothing}', not into $prefix"; exit 1 ;;
esac

"$exe" | tee "$work/output.txt"
grep -qx 'consumer: ok' "$work/output.txt"
