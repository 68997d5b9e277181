#!/usr/bin/env bash
# Starts and stops the platform's own processes (user, messaging, media, search, notification, socket, gateway) on the local stack.
#   deploy/services.sh start [rel|asan]   start what is not running, wait until ready
#   deploy/services.sh stop               stop what this script started
#   deploy/services.sh status
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL="$ROOT/.local"
RUN="$LOCAL/run"
LOGS="$LOCAL/logs"
MODE=${2:-rel}
BIN="$ROOT/build/$MODE/bin"

# name:port (its HTTP side, /health/ready), in start order (the gateway last: it fronts the
# others). The socket service takes WebSockets on WS_PORT 8083; the gateway relays /v1/ws there.
SERVICES="user:8081 messaging:8082 media:8084 search:8085 notification:8086 socket:8183 gateway:8080"

mkdir -p "$RUN" "$LOGS" "$LOCAL/keys"

# The platform operator's key, made once per checkout; `make run` prints where it is.
ADMIN_KEY_FILE="$LOCAL/keys/admin-key"
if [ ! -s "$ADMIN_KEY_FILE" ]; then
  umask 077
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$ADMIN_KEY_FILE"
fi

export JWT_PRIVATE_KEY_FILE=${JWT_PRIVATE_KEY_FILE:-$LOCAL/keys/jwt-private.pem}
export JWT_PUBLIC_KEY_FILE=${JWT_PUBLIC_KEY_FILE:-$LOCAL/keys/jwt-public.pem}
export PLATFORM_ADMIN_KEY=${PLATFORM_ADMIN_KEY:-$(cat "$ADMIN_KEY_FILE")}

# The key of the services' /internal routes (libcommon/internal.h), made once per checkout.
INTERNAL_KEY_FILE_DEFAULT="$LOCAL/keys/internal-key"
if [ ! -s "$INTERNAL_KEY_FILE_DEFAULT" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$INTERNAL_KEY_FILE_DEFAULT")
fi
export INTERNAL_KEY_FILE=${INTERNAL_KEY_FILE:-$INTERNAL_KEY_FILE_DEFAULT}

# The media service's signed-URL key (kid:hexsecret), made once per checkout.
MEDIA_KEYS_FILE="$LOCAL/keys/media-url-keys"
if [ ! -s "$MEDIA_KEYS_FILE" ]; then
  (umask 077; printf 'm1:%s' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$MEDIA_KEYS_FILE")
fi
export MEDIA_URL_KEYS=${MEDIA_URL_KEYS:-$(cat "$MEDIA_KEYS_FILE")}

# The search index (one SQLite file per tenant), kept across runs like the consumer group.
export SEARCH_DATA_DIR=${SEARCH_DATA_DIR:-$LOCAL/search-data}

alive() { [ -f "$RUN/svc-$1.pid" ] && kill -0 "$(cat "$RUN/svc-$1.pid")" 2>/dev/null; }

ready() { curl -fsS -m 2 "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1; }

start() {
  for entry in $SERVICES; do
    name=${entry%%:*}; port=${entry##*:}
    if alive "$name"; then echo "services: $name already running (pid $(cat "$RUN/svc-$name.pid"))"; continue; fi
    if ready "$port"; then echo "services: something already serves :$port; not starting $name"; continue; fi
    [ -x "$BIN/$name" ] || { echo "services: $BIN/$name is not built (make MODE=$MODE)" >&2; exit 1; }
    HTTP_PORT=$port nohup "$BIN/$name" >>"$LOGS/$name.log" 2>&1 &
    echo $! > "$RUN/svc-$name.pid"
    for _ in $(seq 1 100); do
      ready "$port" && break
      if ! alive "$name"; then
        echo "services: $name exited at start; last log lines:" >&2; tail -n 20 "$LOGS/$name.log" >&2; exit 1
      fi
      sleep 0.2
    done
    ready "$port" || { echo "services: $name not ready after 20 s" >&2; tail -n 20 "$LOGS/$name.log" >&2; exit 1; }
    echo "services: $name ready on :$port"
  done
  echo
  echo "Gateway: http://127.0.0.1:8080"
  echo "Platform admin key (X-Admin-Key): $ADMIN_KEY_FILE"
}

stop() {
  for entry in gateway:8080 socket:8183 notification:8086 search:8085 media:8084 messaging:8082 user:8081; do
    name=${entry%%:*}
    alive "$name" || { rm -f "$RUN/svc-$name.pid"; continue; }
    pid=$(cat "$RUN/svc-$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/svc-$name.pid"
    echo "services: $name stopped"
  done
}

status() {
  for entry in $SERVICES; do
    name=${entry%%:*}; port=${entry##*:}
    if ready "$port"; then echo "$name: ready on :$port"; else echo "$name: down"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [rel|asan] | stop | status" >&2; exit 2 ;;
esac
