#!/usr/bin/env bash
# Gateway benchmark (make bench): the same cheap authenticated GET three ways in one run:
# directly to the user service, through our gateway (token verified, denylist checked, rate
# limits taken in Redis), and through nginx (Debian) proxy_pass with upstream keepalive.
# Gateway and nginx are pinned to core 0 with taskset, the load (wrk, autocannon) and the
# upstream to core 1. Saturation throughput with wrk; latency at a fixed rate with autocannon -R
# (open loop, so queueing shows in the tail). Prints absolute figures and ratios vs nginx, and
# the CPU time each proxy spent per request under wrk (from /proc/<pid>/stat), a figure that
# other load on a shared machine disturbs far less than throughput.
# Needs the local stack (deploy/stack.sh start) and the release build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BENCH_BIN_DIR:-$ROOT/build/rel/bin}
BASE=${BENCH_PORT_BASE:-29080}
DUR=${BENCH_SECONDS:-10}
RATE=${BENCH_RATE:-5000}
CONNS=${BENCH_CONNS:-64}
AC=$ROOT/.local/bench/node_modules/.bin/autocannon
USER_PORT=$((BASE + 1)) GW_PORT=$BASE NGINX_PORT=$((BASE + 2))
# BENCH_RL_REDIS_PORT=6379: the rate limits in the shared Redis with the denylist (one script
# takes both), as a deployment with a single Redis has them.
RL_REDIS_PORT=${BENCH_RL_REDIS_PORT:-$((BASE + 3))}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

for tool in wrk nginx taskset redis-server; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (deploy/deps.sh installs it)"; exit 1; }
done
if [ ! -x "$AC" ]; then
  echo "bench: installing autocannon 9.0.0 (pinned) into .local/bench"
  (mkdir -p "$ROOT/.local/bench" && cd "$ROOT/.local/bench" && npm install --no-audit --no-fund --silent autocannon@9.0.0)
fi

ADMIN=bench-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_PRIVATE_KEY_FILE=$ROOT/.local/keys/jwt-private.pem JWT_PUBLIC_KEY_FILE=$ROOT/.local/keys/jwt-public.pem
export PLATFORM_ADMIN_KEY=$ADMIN LOG_LEVEL=error MONGO_DB=bench_user_$$

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/health/ready" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: nothing ready on port $1"; exit 1
}

# The upstream: the user service on core 1, its JWK Set (in memory) is the cheap GET.
HTTP_PORT=$USER_PORT taskset -c 1 "$BIN/user" 2>"$DIR/user.log" & PIDS+=($!)
USER_PID=$!
wait_ready "$USER_PORT"
TENANT=$(curl -fsS "http://127.0.0.1:$USER_PORT/v1/tenants" -H "X-Admin-Key: $ADMIN" \
  -H 'Content-Type: application/json' -d '{"name":"bench"}')
KEY=$(echo "$TENANT" | jq -r .api_key) SECRET=$(echo "$TENANT" | jq -r .api_secret)
# The tenant's own api_rate_per_min (1200 by default) would bind the user bucket below the
# gateway's RATELIMIT_USER: the highest it takes, so no request is refused.
curl -fsS -o /dev/null -X PATCH "http://127.0.0.1:$USER_PORT/v1/tenants/$(echo "$TENANT" | jq -r .id)" \
  -H "X-Admin-Key: $ADMIN" -H 'Content-Type: application/json' -d '{"settings":{"api_rate_per_min":1000000}}'
TOKEN=$(curl -fsS "http://127.0.0.1:$USER_PORT/v1/auth/token" -u "$KEY:$SECRET" \
  -H 'Content-Type: application/json' -d '{"user_id":"bench"}' | jq -r .access_token)
PATH_=/.well-known/jwks.json

# The rate limits' Redis, of the bench's own: the shared one's rl:ip:127.0.0.1 bucket is taken
# by every other gateway on this machine at their own (low) rates. The denylist stays in the
# shared Redis (REDIS_PORT), so it is not checked in the rate limits' round trip: the
# gateway's copy of it answers (or, when the copy is not loaded, a round trip of its own).
if [ -z "${BENCH_RL_REDIS_PORT:-}" ]; then
  taskset -c 1 redis-server --port "$RL_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$DIR/redis.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$RL_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Our gateway on core 0: the route needs a verified token; limits high enough not to refuse.
# Two server threads (admission only: the upstream calls are the one upstream loop's), as
# nginx has one worker on that core; more threads only add switches (gateway/README.md).
HTTP_PORT=$GW_PORT USER_URL=http://127.0.0.1:$USER_PORT HTTP_THREADS=${BENCH_GW_THREADS:-2} \
  UPSTREAM_LOOPS=${BENCH_GW_LOOPS:-1} \
  RATELIMIT_REDIS_PORT=$RL_REDIS_PORT \
  GATEWAY_ROUTES="$PATH_ user auth=bearer" RATELIMIT_IP=1000000/1000000 \
  RATELIMIT_USER=1000000/1000000 RATELIMIT_TENANT=1000000/1000000 HTTP_MAX_CONNECTIONS_PER_IP=10000 \
  taskset -c 0 "$BIN/gateway" 2>"$DIR/gateway.log" & PIDS+=($!)
GW_PID=$!
wait_ready "$GW_PORT"

# nginx on core 0: one worker, proxy_pass with upstream keepalive.
cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream user { server 127.0.0.1:$USER_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://user;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
taskset -c 0 nginx -c "$DIR/nginx.conf" -p "$DIR" -e "$DIR/nginx-error.log" & PIDS+=($!)
NGINX_PID=$!
for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$PATH_" 2>/dev/null && break; sleep 0.1; done

# CPU clock ticks (user + system) of a process and its children threads/processes.
ticks() {
  local t=0 p
  for p in "$@" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

declare -A RPS P99 P50 CPU
for target in direct:$USER_PORT:$USER_PID gateway:$GW_PORT:$GW_PID nginx:$NGINX_PORT:$NGINX_PID; do
  name=${target%%:*} rest=${target#*:} port=${rest%%:*} pid=${rest##*:}
  url=http://127.0.0.1:$port$PATH_
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")
  [ "$code" = 200 ] || { echo "bench: $name answers $code"; exit 1; }
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null # warm-up
  t0=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "$url")
  t1=$(ticks "$pid")
  RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  CPU[$name]=$(echo "$out" | awk -v d=$((t1 - t0)) -v hz="$HZ" '/requests in/ {printf "%.1f", d / hz * 1e6 / $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  [ -z "$non2xx" ] || echo "bench: $name: $non2xx answers were not 2xx"
  ac=$(taskset -c 1 "$AC" -j -R "$RATE" -c 100 -d "$DUR" -H "Authorization=Bearer $TOKEN" "$url" 2>/dev/null)
  P50[$name]=$(echo "$ac" | jq -r .latency.p50)
  P99[$name]=$(echo "$ac" | jq -r .latency.p99)
  errs=$(echo "$ac" | jq -r '.errors + .non2xx')
  printf 'bench: %-8s wrk %9.0f req/s, CPU %6s us/request   at %d req/s: p50 %s ms, p99 %s ms (errors+non-2xx %s)\n' \
    "$name" "${RPS[$name]}" "${CPU[$name]}" "$RATE" "${P50[$name]}" "${P99[$name]}" "$errs"
done

# How many Redis round trips the gateway made per request (rate-limit leases, denylist).
curl -fsS "http://127.0.0.1:$GW_PORT/metrics" | awk '
  /^gateway_ratelimit_redis_round_trips_total / {rt = $2}
  /^gateway_ratelimit_leased_decisions_total / {ld = $2}
  /^gateway_denylist_copy_unknown_total / {du = $2}
  /^gateway_denylist_copy_valid / {dv = $2}
  /^gateway_upstream_transfers_total / {tr = $2}
  /^gateway_upstream_loop_wakeups_total / {wk = $2}
  END {printf "bench: gateway Redis: %d rate-limit round trips for %d leased decisions; denylist copy valid %d, %d checks it could not answer\n", rt, ld, dv, du;
       if (tr > 0) printf "bench: gateway upstream loop: %d transfers, %.2f wake-ups per transfer\n", tr, wk / tr}'

awk -v g="${RPS[gateway]}" -v n="${RPS[nginx]}" -v d="${P99[direct]}" -v gp="${P99[gateway]}" \
    -v np="${P99[nginx]}" -v gc="${CPU[gateway]}" -v nc="${CPU[nginx]}" 'BEGIN {
  ga = gp - d; na = np - d; if (na < 0.001) na = 0.001; if (ga < 0) ga = 0;
  printf "bench: throughput gateway/nginx = %.2f (goal >= 1.00)\n", g / n;
  if (gc > 0) printf "bench: CPU per request nginx/gateway = %.2f (gateway %.1f us, nginx %.1f us)\n", nc / gc, gc, nc;
  printf "bench: added p99 at the fixed rate: gateway %.2f ms, nginx %.2f ms, ratio %.2f (goal <= 1.50)\n", ga, na, ga / na;
}'
