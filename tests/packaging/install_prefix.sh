#!/usr/bin/env bash
# packaging_install (fixture for packaging_install_*): `cmake --install` of the runtime and
# development components into a fresh prefix inside the build tree, then checks the layout.
#   install_prefix.sh <cmake> <build dir> <prefix> <config> <libdir> <includedir> <version> <rlock.h>
#                     <readelf>
# Only rlock's own components are installed, so other install rules of the tree (bindings...) cannot
# write anywhere else from a test.
set -euo pipefail
cmake=$1 build=$2 prefix=$3 config=$4 libdir=$5 includedir=$6 version=$7 header=$8 readelf=$9
major=${version%%.*}

rm -rf "$prefix"
for component in runtime development; do
  "$cmake" --install "$build" --prefix "$prefix" --config "$config" --component "$component"
done

status=0
fail() { echo "FAIL: $*"; status=1; }
L="$prefix/$libdir"

if [ ! -f "$L/librlock.so.$version" ] || [ -L "$L/librlock.so.$version" ]; then
  fail "$L/librlock.so.$version is not a regular file"
fi
[ "$(readlink "$L/librlock.so.$major" || true)" = "librlock.so.$version" ] \
  || fail "$L/librlock.so.$major is not a symlink to librlock.so.$version"
[ "$(readlink "$L/librlock.so" || true)" = "librlock.so.$major" ] \
  || fail "$L/librlock.so is not a symlink to librlock.so.$major"
cmp -s "$header" "$prefix/$includedir/rlock.h" || fail "$prefix/$includedir/rlock.h differs from $header"
for f in rlockConfig.cmake rlockConfigVersion.cmake rlockTargets.cmake; do
  [ -f "$L/cmake/rlock/$f" ] || fail "missing $L/cmake/rlock/$f"
done
pc="$L/pkgconfig/rlock.pc"
if [ -f "$pc" ]; then
  grep -qxF "prefix=$prefix" "$pc" || fail "$pc does not say prefix=$prefix"
  grep -qxF "Version: $version" "$pc" || fail "$pc does not say Version: $version"
else
  fail "missing $pc"
fi

# A consumer needs only find_package(rlock): the private dependencies must not leak into the
# exported target (a shared library's PRIVATE links are not part of its interface).
if grep -n 'PkgConfig::\|hiredis\|libuv\|Threads::' "$L"/cmake/rlock/rlockTargets*.cmake; then
  fail "the exported rlock targets name rlock's private dependencies"
fi
# The installed CMake package locates itself: no absolute path in it at all (not the build tree,
# not the source tree, not even the prefix), so the prefix can be moved.
src_dir=$(cd "$(dirname "$header")/.." && pwd)
if grep -rnF -e "$build" -e "$src_dir" -e "$prefix" "$L/cmake/rlock"; then
  fail "the installed CMake package contains absolute paths"
fi
if LC_ALL=C "$readelf" -d "$L/librlock.so.$version" | grep -E '\((RPATH|RUNPATH)\)'; then
  fail "the installed library keeps an RPATH/RUNPATH"
fi

if [ "$status" -eq 0 ]; then
  echo "OK: installed to $prefix:"
  (cd "$prefix" && find . -mindepth 1 \( -type f -o -type l \) | sort | sed 's|^\./|  |')
fi
exit "$status"
