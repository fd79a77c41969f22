#!/usr/bin/env bash
# ABI guard with libabigail: compare the built library with the committed baseline.
#   check_abi.sh check  <abidw> <abidiff> <librlock.so> <include dir> <baseline.abi>
#   check_abi.sh update <abidw> <abidiff> <librlock.so> <include dir> <baseline.abi>
# The library must carry DWARF (RelWithDebInfo or Debug). --exported-interfaces-only with
# --headers-dir and --drop-private-types limits the dump to the exported functions and the types
# they reach through the public header (the opaque handles stay declaration-only), so internal
# changes do not show. Locations are kept, as file names only, so that a report says where a type
# is declared; the build directory that the DWARF records (comp-dir-path) is blanked, so that the
# baseline holds no path of the machine that wrote it.
#
# abidiff's exit status is a bit field: 1 tool error, 2 usage error, 4 ABI changed, 8 incompatible
# change. abidiff sets 8 only for removed symbols; a changed parameter or return type of an existing
# function is only 4, yet by the house rules (functions are added, never changed) it breaks the ABI
# just the same. So: bit 8, or any Removed/Changed function or variable in abidiff's summary, fails;
# a change that only adds functions passes with its report, and the baseline should then be
# regenerated and committed with that change.
set -euo pipefail
mode=$1 abidw=$2 abidiff=$3 lib=$4 incdir=$5 baseline=$6

dump() { # <output>
  "$abidw" --headers-dir "$incdir" --drop-private-types --exported-interfaces-only \
    --no-corpus-path --short-locs --out-file "$1" "$lib"
  sed -i "s|comp-dir-path='[^']*'|comp-dir-path=''|" "$1"
}

case "$mode" in
  update)
    mkdir -p "$(dirname "$baseline")"
    dump "$baseline"
    echo "wrote $baseline from $lib"
    ;;
  check)
    if [ ! -f "$baseline" ]; then
      echo "FAIL: no ABI baseline at $baseline; generate it with"
      echo "  cmake --build <build dir> --target rlock_abi_baseline"
      exit 1
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    dump "$work/current.abi"
    rc=0
    "$abidiff" "$baseline" "$work/current.abi" >"$work/report.txt" || rc=$?
    cat "$work/report.txt"
    # "Functions changes summary: 0 Removed, 1 Changed (2 filtered out), 0 Added function"
    broken=$(sed -nE 's/^(Functions|Variables) changes summary: ([0-9]+) Removed, ([0-9]+) Changed.*/\2 \3/p' \
      "$work/report.txt" | awk '{ n += $1 + $2 } END { print n + 0 }')
    if [ $((rc & 3)) -ne 0 ]; then
      echo "FAIL: abidiff could not compare (exit $rc)"
      exit 1
    elif [ $((rc & 8)) -ne 0 ] || [ "$broken" -ne 0 ]; then
      echo "FAIL: incompatible ABI change against $baseline (abidiff exit $rc): existing functions"
      echo "were removed or changed; add a new function (e.g. a _v2) instead"
      exit 1
    elif [ $((rc & 4)) -ne 0 ]; then
      echo "OK: compatible ABI change (abidiff exit $rc, additions only); regenerate and commit the"
      echo "baseline: cmake --build <build dir> --target rlock_abi_baseline"
    else
      echo "OK: ABI identical to $baseline"
    fi
    ;;
  *)
    echo "usage: $0 check|update <abidw> <abidiff> <lib> <include dir> <baseline>" >&2
    exit 2
    ;;
esac
