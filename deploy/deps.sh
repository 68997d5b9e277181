#!/usr/bin/env bash
# Installs what the local stack and tests need (Debian packages, Kafka jars, FerretDB, test venv, JWT keys) under .local/; idempotent, seconds when cached.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
LOCAL="$ROOT/.local"

KAFKA_VERSION=3.9.1            # must match deploy/kafka/pom.xml
FERRETDB_VERSION=v1.24.0
# Our change to FerretDB's source (step_ferretdb); a cached binary built with another is rebuilt.
FERRETDB_PATCH="$DEPLOY/ferretdb/sqlite-lookups.patch"
VERSITYGW_VERSION=v1.8.0       # S3-compatible server for the media service's S3 tests
PYTHON="${PYTHON:-python3}"

APT_PACKAGES=(
  build-essential pkg-config libmicrohttpd-dev librdkafka-dev libmongoc-dev libbson-dev
  libhiredis-dev libcjson-dev libjwt-dev libssl-dev libcurl4-openssl-dev libsodium-dev
  libcmocka-dev redis-server kcat openssl curl jq
  libvips-dev libmagic-dev libvips-tools libimage-exiftool-perl
  libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libjsmn-dev
)

# The images' build stage (deploy/docker/*.Dockerfile) installs exactly this list, so an image
# and a developer's checkout build with the same packages.
if [ "${1:-}" = "--print-apt-packages" ]; then printf '%s\n' "${APT_PACKAGES[@]}"; exit 0; fi

t0=$(date +%s%N)
log() { echo "deps: $*"; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }
# Time of one step, for the "(built in Ns)" suffix.
since() { echo "$(( ($(date +%s%N) - $1) / 1000000000 ))s"; }

mkdir -p "$LOCAL"/{bin,run,logs,tmp}
# .local must never be committed; an ignore file inside it needs no change to the top-level .gitignore.
[ -f "$LOCAL/.gitignore" ] || printf '*\n' > "$LOCAL/.gitignore"

# Two concurrent runs (say make deps in two terminals) would race on the same stamps and build dirs.
exec 9>"$LOCAL/deps.lock"
flock 9

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Tools only the tests and benchmarks use (not in the images): slowloris for the gateway's
# edge test, nginx and wrk for `make bench`; iso-codes and libc-l10n ship the translated
# gettext catalogs that make the search benchmark's multilingual corpus (bench/search_bench.py).
TEST_APT_PACKAGES=(slowhttptest nginx-light wrk iso-codes libc-l10n)

# --- Debian packages ---------------------------------------------------------
step_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; do
    # dpkg-query exits non-zero for unknown packages; status must say "installed" (not "config-files").
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "apt ok (cached, $(( ${#APT_PACKAGES[@]} + ${#TEST_APT_PACKAGES[@]} )) packages)"
    return
  fi
  local t; t=$(date +%s%N)
  log "apt installing: ${missing[*]}"
  # apt-get update only when something is missing: it is the slow part.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "apt ok (installed ${#missing[@]} in $(since "$t"))"
}

# --- Apache Kafka broker (KRaft) ----------------------------------------------
step_kafka() {
  local kdir="$LOCAL/kafka" lib="$LOCAL/kafka/lib"
  local stamp="$kdir/.jars.sha256"
  local want; want=$(sha256sum "$DEPLOY/kafka/pom.xml" | cut -d' ' -f1)
  mkdir -p "$kdir" "$kdir/data"

  # Jars: re-copied only when the pom changed (stamp holds its hash).
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$lib/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    log "kafka $KAFKA_VERSION jars ok (cached)"
  else
    local t; t=$(date +%s%N)
    command -v mvn >/dev/null || die "mvn not found (Maven is needed to fetch the Kafka jars)"
    rm -rf "$lib" "$kdir/target"
    # The pom's build dir goes under .local so deploy/ stays clean.
    # -q still prints colour escapes on Maven 3.8; the log is shown only on failure.
    mvn -B -q -Dstyle.color=never -f "$DEPLOY/kafka/pom.xml" package \
      -Dkafka.lib.dir="$lib" -Dkafka.build.dir="$kdir/target" >"$LOCAL/logs/kafka-maven.log" 2>&1 \
      || { tail -n 30 "$LOCAL/logs/kafka-maven.log" >&2; die "maven could not fetch the Kafka jars"; }
    [ -f "$lib/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka_2.13-$KAFKA_VERSION.jar missing after maven run"
    echo "$want" > "$stamp"
    log "kafka $KAFKA_VERSION jars ok (fetched $(ls "$lib" | wc -l) jars in $(since "$t"))"
  fi

  # server.properties is rendered on every run (cheap) so template edits take effect.
  local props="$kdir/server.properties" tmp="$kdir/server.properties.tmp"
  sed "s|@ROOT@|$ROOT|g" "$DEPLOY/kafka/server.properties.in" > "$tmp"
  if cmp -s "$tmp" "$props"; then rm -f "$tmp"; else mv "$tmp" "$props"; fi

  # Cluster id is generated once and kept: the formatted log dir is bound to it.
  local cp="$lib/*"
  if [ ! -s "$kdir/cluster-id" ]; then
    java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 > "$kdir/cluster-id.tmp"
    [ -s "$kdir/cluster-id.tmp" ] || die "StorageTool random-uuid printed nothing"
    mv "$kdir/cluster-id.tmp" "$kdir/cluster-id"
  fi
  # Storage is formatted once; meta.properties is what the broker checks at start.
  if [ -f "$kdir/data/meta.properties" ]; then
    log "kafka storage ok (cached, cluster $(cat "$kdir/cluster-id"))"
  else
    java -cp "$cp" -Dlog4j.configuration="file:$DEPLOY/kafka/log4j.properties" \
      kafka.tools.StorageTool format -t "$(cat "$kdir/cluster-id")" -c "$props" >"$LOCAL/logs/kafka-format.log" 2>&1 \
      || { cat "$LOCAL/logs/kafka-format.log" >&2; die "kafka storage format failed"; }
    log "kafka storage ok (formatted, cluster $(cat "$kdir/cluster-id"))"
  fi
}

# --- FerretDB (MongoDB wire protocol on SQLite) -------------------------------
step_ferretdb() {
  local bin="$LOCAL/bin/ferretdb" stamp="$LOCAL/bin/.ferretdb.version"
  local want; want="$FERRETDB_VERSION+$(sha256sum "$FERRETDB_PATCH" | cut -c1-12)"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "ferretdb $want ok (cached)"
    return
  fi
  local t; t=$(date +%s%N)
  command -v go >/dev/null || die "go not found (needed to build FerretDB)"
  # GOTOOLCHAIN=local: never try to fetch another Go toolchain; GOFLAGS cleared so a user's -mod=vendor etc. can't interfere.
  export GOTOOLCHAIN=local GOFLAGS=
  local json dir commit
  local blog="$LOCAL/logs/ferretdb-build.log"
  json=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" 2>"$blog") \
    || { cat "$blog" >&2; die "go mod download FerretDB failed"; }
  dir=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  commit=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)",\{0,1\}$/\1/p')
  [ -d "$dir" ] || die "FerretDB module dir not found in: $json"

  # The module cache is read-only, and build/version/version.txt (required, embedded via
  # go:embed *.txt) is generated by FerretDB's own build from git; without it the binary
  # panics at start-up. So build from a writable copy with the version files written by hand.
  local src="$LOCAL/tmp/ferretdb-src"
  rm -rf "$src"; mkdir -p "$src"
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
  # commit.txt is optional; it is only compared with vcs.revision, which -buildvcs=false leaves out.
  [ -n "$commit" ] && echo "$commit" > "$src/build/version/commit.txt"
  echo "local" > "$src/build/version/package.txt"
  # Our patch (deploy/ferretdb/README.md): _id lookups on the _id index, the equalities that
  # lead an index looked up in it, and the other string and boolean equalities of a filter
  # tried in SQLite before FerretDB decodes a document in Go.
  # GIT_CEILING_DIRECTORIES: $src lies inside our own work tree, where git apply would take
  # the patch's paths as the repository's and skip them.
  ( cd "$src" && GIT_CEILING_DIRECTORIES="$LOCAL/tmp" git apply "$FERRETDB_PATCH" ) 2>>"$blog" \
    && grep -q '^func prefilter' "$src/internal/backends/sqlite/collection.go" \
    || { tail -n 5 "$blog" >&2; die "$FERRETDB_PATCH does not apply to FerretDB $FERRETDB_VERSION"; }

  # Pure-Go SQLite (modernc): no cgo needed; a static binary.
  # Its "go: downloading ..." chatter goes to the log, shown only on failure.
  ( cd "$src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$bin.tmp" ./cmd/ferretdb ) >>"$blog" 2>&1 \
    || { tail -n 30 "$blog" >&2; die "go build FerretDB failed"; }
  # Catch the start-up panic here rather than in stack.sh.
  # Output captured first: `| grep -q` under pipefail fails when grep exits before ferretdb
  # has written its last line (SIGPIPE, exit 141), which made CI fail at random.
  local vout; vout=$("$bin.tmp" --version 2>&1) || true
  case "$vout" in
    *"version: $FERRETDB_VERSION"*) ;;
    *) printf '%s\n' "$vout" >&2; die "built ferretdb does not report $FERRETDB_VERSION" ;;
  esac
  mv "$bin.tmp" "$bin"
  echo "$want" > "$stamp"
  rm -rf "$src"
  log "ferretdb $want ok (built in $(since "$t"))"
}

# --- versitygw (a real S3-compatible server for the media S3 backend tests) -----
step_versitygw() {
  local bin="$LOCAL/bin/versitygw" stamp="$LOCAL/bin/.versitygw.version"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSITYGW_VERSION" ]; then
    log "versitygw $VERSITYGW_VERSION ok (cached)"
    return
  fi
  local t; t=$(date +%s%N)
  command -v go >/dev/null || die "go not found (needed to build versitygw)"
  ( cd "$LOCAL/tmp" && GOTOOLCHAIN=local GOFLAGS= GOBIN="$LOCAL/bin" \
      go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" ) \
    >"$LOCAL/logs/versitygw-build.log" 2>&1 \
    || { tail -n 30 "$LOCAL/logs/versitygw-build.log" >&2; die "go install versitygw failed"; }
  echo "$VERSITYGW_VERSION" > "$stamp"
  log "versitygw $VERSITYGW_VERSION ok (built in $(since "$t"))"
}

# --- Python venv for the tests ------------------------------------------------
step_venv() {
  local venv="$LOCAL/venv" req="$DEPLOY/requirements-test.txt"
  local stamp="$venv/.requirements.sha256"
  [ -f "$req" ] || die "missing $req"
  # The stamp covers the requirements and the interpreter, so a Python upgrade rebuilds too.
  local pyver want
  pyver=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') || die "$PYTHON not runnable"
  want="$(sha256sum "$req" | cut -d' ' -f1) $pyver"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "venv ok (cached, python $pyver)"
    return
  fi
  local t; t=$(date +%s%N)
  if [ ! -x "$venv/bin/python" ] || [ "$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" != "$pyver" ]; then
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
  log "venv ok (installed in $(since "$t"), python $pyver)"
}

# --- JWT signing keys -----------------------------------------------------------
step_keys() {
  local kd="$LOCAL/keys" priv="$LOCAL/keys/jwt-private.pem" pub="$LOCAL/keys/jwt-public.pem"
  if [ -s "$priv" ] && [ -s "$pub" ]; then
    log "jwt keys ok (cached)"
    return
  fi
  mkdir -p "$kd"; chmod 700 "$kd"
  # genpkey writes PKCS#8 ("BEGIN PRIVATE KEY"); written to .tmp first so a failed run leaves no half pair.
  (umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$priv.tmp" 2>/dev/null)
  openssl pkey -in "$priv.tmp" -pubout -out "$pub.tmp"
  mv "$priv.tmp" "$priv"; mv "$pub.tmp" "$pub"
  log "jwt keys ok (generated RSA 2048 in .local/keys)"
}

# --- Node and tus-js-client (the resumable-upload tests) -------------------------
step_node() {
  local dir="$ROOT/tests/tus" stamp="$LOCAL/node/.package-lock.sha256" want
  if ! command -v npm >/dev/null; then
    log "node: installing nodejs and npm"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -d "$LOCAL/node/node_modules/tus-js-client" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "node modules ok (cached)"
    return
  fi
  mkdir -p "$LOCAL/node"
  cp "$dir/package.json" "$dir/package-lock.json" "$LOCAL/node/"
  ( cd "$LOCAL/node" && npm ci --no-audit --no-fund --silent ) >"$LOCAL/logs/npm.log" 2>&1 \
    || { tail -n 20 "$LOCAL/logs/npm.log" >&2; die "npm ci failed"; }
  echo "$want" > "$stamp"
  log "node modules ok (tus-js-client installed)"
}

step_apt
step_node
step_kafka
step_ferretdb
step_versitygw
step_venv
step_keys
log "done in $(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f s", ns / 1e9 }')"
