#!/usr/bin/env bash
# packaging_install_pkgconfig: build consumer.c against the installed prefix with nothing but
# `pkg-config --cflags --libs rlock`, then run it.
#   consumer_pkgconfig.sh <prefix> <libdir> <consumer.c> <c compiler> <work dir>
set -euo pipefail
prefix=$1 libdir=$2 src=$3 cc=$4 work=$5

rm -rf "$work"
mkdir -p "$work"
# Our prefix first, so that an rlock.pc installed elsewhere on the machine cannot be picked up.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

flags=$(pkg-config --cflags --libs rlock)
echo "pkg-config --cflags --libs rlock: $flags"
echo "pkg-config --modversion rlock: $(pkg-config --modversion rlock)"
# shellcheck disable=SC2086 # the flags are meant to be split into words
"$cc" -std=c99 -Wall -Wextra -Werror "$src" -o "$work/consumer" $flags

export LD_LIBRARY_PATH="$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
resolved=$(ldd "$work/consumer" | awk '$1 ~ /^librlock\.so/ { print $3 }')
case "$resolved" in
  "$prefix/$libdir/"*) echo "librlock resolved to $resolved" ;;
  *) echo "FAIL: librlock resolved to '${resolved:-nothing}', not into $prefix/$libdir"; exit 1 ;;
esac

"$work/consumer" | tee "$work/output.txt"
grep -qx 'consumer: ok' "$work/output.txt"
