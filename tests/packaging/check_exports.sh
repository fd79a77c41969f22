#!/usr/bin/env bash
# packaging_exports: librlock exports exactly the functions that include/rlock.h declares RLOCK_API.
#   check_exports.sh <librlock.so> <rlock.h> <nm> <c compiler>
# Fails listing every exported symbol that is not rlock_* (a leak past the version script), every
# exported rlock_* symbol the header does not declare, and every declared function not exported.
set -euo pipefail
lib=$1 header=$2 nm=$3 cc=$4
export LC_ALL=C # one collation for sort and comm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Dynamic symbols defined by the library: "<value> <type> <name>[@@VERSION]". A version script adds
# one absolute (type A) symbol per version node, e.g. "RLOCK_1": that is not an export.
"$nm" -D --defined-only "$lib" >"$work/nm.txt"
awk '!($2 == "A" && $3 ~ /^RLOCK_[0-9]+$/) { sub(/@.*/, "", $3); print $2, $3 }' "$work/nm.txt" \
  | sort -u -k2 >"$work/exported.txt"
cut -d' ' -f2 "$work/exported.txt" | sort -u >"$work/exported_names.txt"

# The declared API, read through the compiler's own preprocessor (comments gone, #if honoured):
# with RLOCK_BUILDING_LIBRARY, RLOCK_API expands to visibility("default"), which marks every
# declaration of the API. One declaration per line, then the first identifier followed by "(" after
# the attribute is the function's name.
"$cc" -E -P -DRLOCK_BUILDING_LIBRARY -x c "$header" \
  | tr '\n' ' ' | tr ';' '\n' \
  | grep -F 'visibility("default")' \
  | sed -E 's/.*visibility\("default"\)\)\)//' \
  | sed -E 's/^([^(]*[^A-Za-z0-9_(])?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\(.*$/\2/' \
  | sort -u >"$work/declared.txt"

status=0
if [ ! -s "$work/declared.txt" ]; then
  echo "FAIL: found no RLOCK_API declaration in $header (is the parser out of date?)"
  exit 1
fi

leaked=$(awk '$2 !~ /^rlock_/ { print "  " $1 " " $2 }' "$work/exported.txt")
if [ -n "$leaked" ]; then
  echo "FAIL: $lib exports symbols that do not start with rlock_ (check src/rlock.map):"
  echo "$leaked"
  status=1
fi

not_functions=$(awk '$2 ~ /^rlock_/ && $1 != "T" { print "  " $1 " " $2 }' "$work/exported.txt")
if [ -n "$not_functions" ]; then
  echo "FAIL: exported rlock_* symbols that are not functions (nm type != T):"
  echo "$not_functions"
  status=1
fi

grep '^rlock_' "$work/exported_names.txt" >"$work/exported_rlock.txt" || true
comm -23 "$work/exported_rlock.txt" "$work/declared.txt" >"$work/undeclared.txt"
if [ -s "$work/undeclared.txt" ]; then
  echo "FAIL: exported but not declared RLOCK_API in $header:"
  sed 's/^/  /' "$work/undeclared.txt"
  status=1
fi

comm -13 "$work/exported_names.txt" "$work/declared.txt" >"$work/missing.txt"
if [ -s "$work/missing.txt" ]; then
  echo "FAIL: declared RLOCK_API in $header but not exported by $lib:"
  sed 's/^/  /' "$work/missing.txt"
  status=1
fi

if [ "$status" -eq 0 ]; then
  echo "OK: $(wc -l <"$work/declared.txt") functions declared, the same exported, nothing else:"
  sed 's/^/  /' "$work/declared.txt"
fi
exit "$status"
