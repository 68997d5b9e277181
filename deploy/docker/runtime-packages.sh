#!/usr/bin/env bash
# Prints "package=version", one a line, for each Debian package that holds a shared library the
# given binaries link directly (their DT_NEEDED entries). The images' build stage runs it so the
# runtime stage installs exactly these packages, at the versions the binary was built against;
# apt brings their own dependencies. `make check-deploy` runs it on the local build too.
#   deploy/docker/runtime-packages.sh BINARY...
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }

# dpkg records a library under the path its package shipped (/lib/... or /usr/lib/...);
# with merged /usr the loader may name the other one, so both are tried.
owner() {
  local path=$1 alt
  case "$path" in
    /usr/*) alt=${path#/usr} ;;
    *) alt=/usr$path ;;
  esac
  { dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "$alt" 2>/dev/null \
      || dpkg-query -S "$(readlink -f "$path")" 2>/dev/null; } | head -n1 | cut -d: -f1
}

out=()
for bin in "$@"; do
  [ -f "$bin" ] || { echo "runtime-packages: $bin: no such file" >&2; exit 1; }
  needed=$(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
  [ -n "$needed" ] || { echo "runtime-packages: $bin links no shared library (static?)" >&2; exit 1; }
  # ldd prints "name => path (address)" for each library the loader found.
  resolved=$(ldd "$bin")
  for lib in $needed; do
    path=$(awk -v n="$lib" '$1 == n && $2 == "=>" { print $3 }' <<<"$resolved")
    [ -n "$path" ] && [ "$path" != "not" ] || { echo "runtime-packages: $bin: $lib not found by the loader" >&2; exit 1; }
    pkg=$(owner "$path")
    [ -n "$pkg" ] || { echo "runtime-packages: $bin: no Debian package owns $path ($lib)" >&2; exit 1; }
    out+=("$pkg=$(dpkg-query -W -f='${Version}' "$pkg")")
  done
done
printf '%s\n' "${out[@]}" | sort -u
