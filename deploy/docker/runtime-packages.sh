#!/usr/bin/env bash
# Prints, one a line, the Debian packages that hold the shared libraries the given binaries link
# directly (their DT_NEEDED entries). The images' build stage runs it so that the runtime stage
# installs exactly these packages (apt brings their own dependencies); `make check-deploy` runs
# it on the local build too. Names only, no versions: Debian 12 keeps each library's ABI within
# the release, and a pinned version disappears from the mirrors at the next security update.
#   deploy/docker/runtime-packages.sh BINARY...
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }

# Every library as "binary lib path": ldd resolves each NEEDED name to the loader's path.
libs=()
for bin in "$@"; do
  [ -f "$bin" ] || { echo "runtime-packages: $bin: no such file" >&2; exit 1; }
  needed=$(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
  [ -n "$needed" ] || { echo "runtime-packages: $bin links no shared library (static?)" >&2; exit 1; }
  resolved=$(ldd "$bin")
  for lib in $needed; do
    path=$(awk -v n="$lib" '$1 == n && $2 == "=>" { print $3 }' <<<"$resolved")
    if [ -z "$path" ] || [ "$path" = "not" ]; then
      echo "runtime-packages: $bin: $lib not found by the loader" >&2; exit 1
    fi
    libs+=("$bin $lib $path")
  done
done

# dpkg records a library under the path its package shipped (/lib/... or /usr/lib/...); with
# merged /usr the loader may name the other one, so both (and the symlink's target) are asked,
# all in one dpkg-query call: each call reads every package's file list.
candidates() {
  local path=$1
  echo "$path"
  case "$path" in /usr/*) echo "${path#/usr}" ;; *) echo "/usr$path" ;; esac
  readlink -f "$path"
}
mapfile -t paths < <(for l in "${libs[@]}"; do candidates "${l##* }"; done | sort -u)
# "package[:arch]: /path" per match; paths no package owns are simply absent.
owners=$(dpkg-query -S "${paths[@]}" 2>/dev/null | grep -v '^diversion by' || true)

out=()
for l in "${libs[@]}"; do
  read -r bin lib path <<<"$l"
  pkg=""
  while read -r cand; do
    pkg=$(awk -v p="$cand" '{ f = $NF } f == p { sub(/:.*/, "", $1); print $1; exit }' <<<"$owners")
    [ -n "$pkg" ] && break
  done < <(candidates "$path")
  [ -n "$pkg" ] || { echo "runtime-packages: $bin: no Debian package owns $path ($lib)" >&2; exit 1; }
  out+=("$pkg")
done
printf '%s\n' "${out[@]}" | sort -u
