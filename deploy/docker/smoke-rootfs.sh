#!/usr/bin/env bash
# Without a Docker engine, runs each image's runtime stage for real: a debian:12-slim-like root
# filesystem (debootstrap --variant=minbase bookworm, cached in .local/rootfs/), the Dockerfile's
# own runtime-stage RUN lines executed in it by chroot, the release binary copied in as its COPY
# says, then the process started as the Dockerfile's USER with its ENV against the local stack,
# on the root file system mounted read-only, and the Dockerfile's HEALTHCHECK command run inside. Needs root, network to
# the Debian archive and `make MODE=rel build`; about a minute the first time (`make smoke-images`).
#   deploy/docker/smoke-rootfs.sh PROCESS...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
WORK="$LOCAL/rootfs"
BASE_TAR="$WORK/bookworm-minbase.tar"
PORT_BASE="${SMOKE_PORT_BASE:-58280}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { echo "smoke-images: $*"; }
die() { echo "smoke-images: ERROR: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 PROCESS..."
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and chroot)"
command -v debootstrap >/dev/null || {
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
    || die "apt-get install debootstrap failed"
}
mkdir -p "$WORK" "$LOCAL/logs"

if [ ! -s "$BASE_TAR" ]; then
  t=$(date +%s)
  rm -rf "$WORK/base"
  debootstrap --variant=minbase bookworm "$WORK/base" "$MIRROR" >"$LOCAL/logs/debootstrap.log" 2>&1 \
    || { tail -n 20 "$LOCAL/logs/debootstrap.log" >&2; die "debootstrap failed"; }
  echo "deb http://deb.debian.org/debian-security bookworm-security main" >> "$WORK/base/etc/apt/sources.list"
  tar -C "$WORK/base" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$WORK/base"
  log "bookworm minbase root filesystem made in $(( $(date +%s) - t ))s (cached in $BASE_TAR)"
fi

# The runtime stage of a Dockerfile: everything after its last FROM, continuation lines joined.
runtime_stage() {
  awk '/^FROM /{ buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$1" \
    | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -v '^[[:space:]]*#'
}

rootfs=""; pid=""
unmount() {
  local m
  for m in proc dev tmp ""; do
    if mountpoint -q "$rootfs/$m"; then umount "$rootfs/$m" || umount -l "$rootfs/$m"; fi
  done
}
# The root filesystem is removed only once nothing is mounted in it (the host's /dev is bound
# there while a process runs), and rm never crosses into another file system anyway.
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$rootfs" ]; then
    unmount
    if grep -q " $rootfs/" /proc/mounts; then
      echo "smoke-images: $rootfs still has mounts; left in place" >&2
    else
      rm -rf --one-file-system "$rootfs"
    fi
  fi
}
trap cleanup EXIT

keys="$LOCAL/keys"
[ -s "$keys/jwt-private.pem" ] || die "no JWT keys in .local/keys (run make deps)"
i=0
for p in "$@"; do
  t=$(date +%s)
  dockerfile="$ROOT/deploy/docker/$p.Dockerfile"
  bin="$ROOT/build/rel/bin/$p"
  [ -f "$dockerfile" ] || die "$dockerfile missing"
  [ -x "$bin" ] || die "$bin missing (make MODE=rel build)"
  stage=$(runtime_stage "$dockerfile")
  rootfs="$WORK/$p"
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  tar -C "$rootfs" -xf "$BASE_TAR"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # COPY --from=build /runtime-packages.txt ...: what the build stage's script prints.
  "$ROOT/deploy/docker/runtime-packages.sh" "$bin" > "$rootfs/tmp/runtime-packages.txt"
  npkg=$(wc -l < "$rootfs/tmp/runtime-packages.txt")
  # The Dockerfile's RUN lines, under its SHELL (bash -o pipefail -c).
  while IFS= read -r run; do
    chroot "$rootfs" /bin/bash -o pipefail -c "$run" >>"$LOCAL/logs/smoke-$p.log" 2>&1 \
      || { tail -n 20 "$LOCAL/logs/smoke-$p.log" >&2; die "$p: RUN failed: $run"; }
  done < <(sed -n 's/^RUN //p' <<<"$stage")
  [ ! -e "$rootfs/tmp/runtime-packages.txt" ] || die "$p: the RUN did not remove runtime-packages.txt"
  cp "$bin" "$rootfs/usr/local/bin/$p"
  user=$(sed -n 's/^USER //p' <<<"$stage" | tail -n1)
  [ -n "$user" ] || die "$p: no USER in the runtime stage"
  # ENV lines ("ENV A=1 B=2" after joining) as env arguments, with the port moved off the
  # developer's own so the smoke run never collides with `make run` or the e2e instances.
  read -r -a envs <<<"$(sed -n 's/^ENV //p' <<<"$stage" | tr '\n' ' ')"
  port=$(( PORT_BASE + i )); i=$(( i + 1 ))
  mkdir -p "$rootfs/keys"
  cp "$keys/jwt-private.pem" "$keys/jwt-public.pem" "$rootfs/keys/"
  chown -R "$user" "$rootfs/keys"; chmod 400 "$rootfs/keys/jwt-private.pem"
  # As the images run in compose and Kubernetes: the root file system read-only, /tmp a tmpfs.
  mount --bind "$rootfs" "$rootfs"
  mount -o remount,bind,ro "$rootfs"
  mount -t tmpfs -o size=16m tmpfs "$rootfs/tmp"
  mount --bind /dev "$rootfs/dev"
  mount -t proc proc "$rootfs/proc"
  if chroot "$rootfs" /bin/sh -c ': > /.rw-probe' 2>/dev/null; then die "$p: the root file system is writable"; fi
  chroot --userspec="$user" "$rootfs" env -i "${envs[@]}" HTTP_HOST=127.0.0.1 HTTP_PORT="$port" \
    JWT_PUBLIC_KEY_FILE=/keys/jwt-public.pem JWT_PRIVATE_KEY_FILE=/keys/jwt-private.pem \
    MONGO_DB="smoke_$p" PLATFORM_ADMIN_KEY=smoke "/usr/local/bin/$p" >>"$LOCAL/logs/smoke-$p.log" 2>&1 &
  pid=$!
  hc=$(sed -n 's/^HEALTHCHECK .*CMD \["\/bin\/sh", "-c", "\(.*\)"\]$/\1/p' <<<"$stage")
  [ -n "$hc" ] || die "$p: no HEALTHCHECK CMD [\"/bin/sh\", \"-c\", ...] in the runtime stage"
  ok=0
  for _ in $(seq 1 50); do
    if chroot --userspec="$user" "$rootfs" env HTTP_PORT="$port" /bin/sh -c "$hc" 2>/dev/null; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  [ "$ok" = 1 ] || { tail -n 20 "$LOCAL/logs/smoke-$p.log" >&2; die "$p: the HEALTHCHECK never passed"; }
  kill -TERM "$pid"
  wait "$pid" || die "$p: exited non-zero on SIGTERM"
  pid=""
  cleanup; rootfs=""
  log "$p ok: runtime stage installed its $npkg library packages; ran as $user on a read-only root; HEALTHCHECK passed; exit 0 on SIGTERM ($(( $(date +%s) - t ))s)"
done
# The smoke runs' databases on the shared local MongoDB.
if [ -x "$LOCAL/venv/bin/python" ]; then
  "$LOCAL/venv/bin/python" - "$@" <<'EOF' || true
import sys, pymongo
c = pymongo.MongoClient("mongodb://127.0.0.1:27017", serverSelectionTimeoutMS=3000)
for p in sys.argv[1:]:
    c.drop_database(f"smoke_{p}")
EOF
fi
