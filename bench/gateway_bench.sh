#!/usr/bin/env bash
# Gateway benchmark (make bench): the same cheap authenticated GET four ways in one run:
# directly to the user service, through our gateway (token verified, denylist checked, rate
# limits taken in Redis), through nginx (Debian) proxy_pass with upstream keepalive, and through
# the floor (bench/gw_floor.c: the smallest proxy libmicrohttpd + a blocking libcurl handle per
# server thread make, no auth; what the two mandated libraries cost by themselves).
# Gateway, nginx and floor are pinned to core 0 with taskset, the load (wrk, autocannon) and the
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
# BENCH_ROUNDS: the wrk measurements of all targets are repeated, interleaved (direct, gateway,
# nginx, floor, then again), so that the machine's drift falls on every target alike.
ROUNDS=${BENCH_ROUNDS:-1}
# BENCH_FLOOR: the floor's variants, each MODE:THREADS (gw_floor.c's FLOOR_MODE epoll, poll,
# select, tpc, evented or raw, and FLOOR_THREADS), one process each on its own port; the first
# is the one the closing lines compare. Default: the naive blocking floor with 8 server threads
# (its best thread count here), the evented one, and the raw one (no libcurl: an instrument).
FLOORS=${BENCH_FLOOR:-epoll:8 evented:1 raw:8}
# BENCH_GW_VARIANTS: more gateways of the same binary beside the first, each NAME:VAR=V,VAR=V
# (its own environment over the first's; a + in a value stands for a space), for an A/B of
# settings in one run.
GW_VARIANTS=${BENCH_GW_VARIANTS:-}
# BENCH_LATENCY=0 skips the fixed-rate latency runs (autocannon).
LATENCY=${BENCH_LATENCY:-1}
# BENCH_PROFILE="perf strace": after the rounds, one more wrk run per proxy target under
# `perf record -g` (the CPU by library and the top functions) and one under `strace -c -f`
# (system calls per request: the counts divided by the requests wrk made meanwhile).
PROFILE=${BENCH_PROFILE:-}
# BENCH_PROFILE_DIR: where perf's data files are kept (default: removed with the run's files).
# BENCH_PERF_CALLGRAPH: perf record's --call-graph (fp; dwarf,16384 sees through the libraries
# built without frame pointers, at a larger cost while recording).
PERF_CG=${BENCH_PERF_CALLGRAPH:-fp}
PROFILE_DIR=${BENCH_PROFILE_DIR:-}
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
  [ -z "$PROFILE_DIR" ] || { mkdir -p "$PROFILE_DIR" && cp "$DIR"/perf.* "$PROFILE_DIR"/ 2>/dev/null; } || true
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
start_gateway() { # port, log name, extra VAR=V... (its environment over the defaults)
  local port=$1 log=$2
  shift 2
  env HTTP_PORT="$port" USER_URL=http://127.0.0.1:$USER_PORT HTTP_THREADS=${BENCH_GW_THREADS:-2} \
    UPSTREAM_LOOPS=${BENCH_GW_LOOPS:-1} \
    RATELIMIT_REDIS_PORT=$RL_REDIS_PORT \
    GATEWAY_ROUTES="$PATH_ user auth=bearer" RATELIMIT_IP=1000000/1000000 \
    RATELIMIT_USER=1000000/1000000 RATELIMIT_TENANT=1000000/1000000 HTTP_MAX_CONNECTIONS_PER_IP=10000 \
    "$@" taskset -c 0 "$BIN/gateway" 2>"$DIR/$log.log" &
  PIDS+=($!)
}
start_gateway "$GW_PORT" gateway
GW_PID=$!
wait_ready "$GW_PORT"
TARGETS=("direct:$USER_PORT:$USER_PID" "gateway:$GW_PORT:$GW_PID")
NEXT_PORT=$((BASE + 4))
for v in $GW_VARIANTS; do
  name=${v%%:*} envs=${v#*:}
  IFS=, read -r -a kv <<<"${envs//+/ }"
  start_gateway "$NEXT_PORT" "$name" "${kv[@]}"
  TARGETS+=("$name:$NEXT_PORT:$!")
  wait_ready "$NEXT_PORT"
  NEXT_PORT=$((NEXT_PORT + 1))
done

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
TARGETS+=("nginx:$NGINX_PORT:$NGINX_PID")

# The floor (bench/gw_floor.c) on core 0, one process per variant.
FLOOR_BIN=${BENCH_FLOOR_BIN:-$(dirname "$BIN")/bench/gw_floor}
[ -x "$FLOOR_BIN" ] || { echo "bench: $FLOOR_BIN missing (make MODE=rel build/rel/bench/gw_floor)"; exit 1; }
FIRST_FLOOR=
for f in $FLOORS; do
  name=floor-${f%%:*}-${f##*:}
  FLOOR_PORT=$NEXT_PORT FLOOR_UPSTREAM=http://127.0.0.1:$USER_PORT FLOOR_MODE=${f%%:*} \
    FLOOR_THREADS=${f##*:} taskset -c 0 "$FLOOR_BIN" 2>"$DIR/$name.log" & PIDS+=($!)
  TARGETS+=("$name:$NEXT_PORT:$!")
  FIRST_FLOOR=${FIRST_FLOOR:-$name}
  wait_ready "$NEXT_PORT" # gw_floor relays /health/ready to the service
  NEXT_PORT=$((NEXT_PORT + 1))
done

# A process and its children (nginx's worker).
pids() { echo "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); }
# CPU clock ticks (user + system) of a process and its children threads/processes.
ticks() {
  local t=0 p
  for p in $(pids "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
# Context switches (voluntary + involuntary) of every thread of a process and its children
# (threads that ended meanwhile are not counted: the tpc floor's may be missed).
switches() {
  local p
  for p in $(pids "$1"); do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}

declare -A RPS P99 P50 CPU ALL_RPS ALL_CPU
# Every target answers the same status and body as the service itself before it is measured.
want=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$USER_PORT$PATH_")
for target in "${TARGETS[@]}"; do
  name=${target%%:*} rest=${target#*:} port=${rest%%:*}
  url=http://127.0.0.1:$port$PATH_
  code=$(curl -s -o "$DIR/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")
  [ "$code" = 200 ] || { echo "bench: $name answers $code"; exit 1; }
  [ "$(cat "$DIR/body")" = "$want" ] || { echo "bench: $name answers another body"; exit 1; }
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null # warm-up
done
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    name=${target%%:*} rest=${target#*:} port=${rest%%:*} pid=${rest##*:}
    url=http://127.0.0.1:$port$PATH_
    t0=$(ticks "$pid") s0=$(switches "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "$url")
    t1=$(ticks "$pid") s1=$(switches "$pid")
    cs=$(echo "$out" | awk -v d=$((s1 - s0)) '/requests in/ {printf "%.2f", d / $1}')
    RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    CPU[$name]=$(echo "$out" | awk -v d=$((t1 - t0)) -v hz="$HZ" '/requests in/ {printf "%.1f", d / hz * 1e6 / $1}')
    ALL_RPS[$name]="${ALL_RPS[$name]:-} ${RPS[$name]}"
    ALL_CPU[$name]="${ALL_CPU[$name]:-} ${CPU[$name]}"
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    if [ -n "$non2xx" ]; then
      echo "bench: $name: $non2xx answers were not 2xx; its log's last lines:"
      tail -n 3 "$DIR/$name.log" 2>/dev/null | sed 's/^/bench:   /' || true
    fi
    printf 'bench: round %d %-15s wrk %9.0f req/s, CPU %6s us/request, %s context switches/request (load average %s)\n' \
      "$round" "$name" "${RPS[$name]}" "${CPU[$name]}" "$cs" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
if [ "$LATENCY" = 1 ]; then
  for target in "${TARGETS[@]}"; do
    name=${target%%:*} rest=${target#*:} port=${rest%%:*}
    url=http://127.0.0.1:$port$PATH_
    ac=$(taskset -c 1 "$AC" -j -R "$RATE" -c 100 -d "$DUR" -H "Authorization=Bearer $TOKEN" "$url" 2>/dev/null)
    P50[$name]=$(echo "$ac" | jq -r .latency.p50)
    P99[$name]=$(echo "$ac" | jq -r .latency.p99)
    errs=$(echo "$ac" | jq -r '.errors + .non2xx')
    printf 'bench: %-15s at %d req/s: p50 %s ms, p99 %s ms (errors+non-2xx %s)\n' \
      "$name" "$RATE" "${P50[$name]}" "${P99[$name]}" "$errs"
  done
fi
# BENCH_SHORT_AUTH=1: nginx and the floors (which do not check the token) once more with a
# 1-byte bearer token instead of the ~860-byte JWT: what forwarding the header costs each.
if [ "${BENCH_SHORT_AUTH:-0}" = 1 ]; then
  for target in "${TARGETS[@]}"; do
    name=${target%%:*} rest=${target#*:} port=${rest%%:*} pid=${rest##*:}
    case $name in nginx | floor-*) ;; *) continue ;; esac
    for tok in "$TOKEN" x; do
      t0=$(ticks "$pid")
      out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -H "Authorization: Bearer $tok" "http://127.0.0.1:$port$PATH_")
      t1=$(ticks "$pid")
      printf 'bench: %-15s Authorization of %4d bytes: wrk %9.0f req/s, CPU %s us/request (load average %s)\n' \
        "$name" $((${#tok} + 7)) "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
        "$(echo "$out" | awk -v d=$((t1 - t0)) -v hz="$HZ" '/requests in/ {printf "%.1f", d / hz * 1e6 / $1}')" \
        "$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
fi

# Profiles (BENCH_PROFILE), proxies only: the service itself is on core 1 with the load.
wrk_reqs() { awk '/requests in/ {print $1}'; }
for tool in $PROFILE; do
  for target in "${TARGETS[@]}"; do
    name=${target%%:*} rest=${target#*:} port=${rest%%:*} pid=${rest##*:}
    [ "$name" != direct ] || continue
    url=http://127.0.0.1:$port$PATH_
    case $tool in
    perf)
      perf record -q --call-graph "$PERF_CG" -o "$DIR/perf.$name" -p "$(echo $(pids "$pid") | tr ' ' ,)" 2>/dev/null & prof=$!
      sleep 0.5
      n=$(taskset -c 1 wrk -t1 -c"$CONNS" -d5s -H "Authorization: Bearer $TOKEN" "$url" | wrk_reqs)
      kill -INT "$prof"; wait "$prof" 2>/dev/null || true
      echo "bench: perf $name ($n requests): CPU by library"
      perf report -q -i "$DIR/perf.$name" --no-children -g none --sort dso --stdio 2>/dev/null |
        grep '%' | head -8 | sed 's/^/bench:   /' || true
      echo "bench: perf $name: top functions"
      perf report -q -i "$DIR/perf.$name" --no-children -g none --sort dso,sym --stdio 2>/dev/null |
        grep '%' | head -25 | sed 's/^/bench:   /' || true
      ;;
    strace)
      args=()
      for p in $(pids "$pid"); do args+=(-p "$p"); done # every thread of each: strace -p does that
      strace -c -f -qq -o "$DIR/strace.$name" "${args[@]}" & prof=$!
      sleep 1
      n=$(taskset -c 1 wrk -t1 -c"$CONNS" -d5s -H "Authorization: Bearer $TOKEN" "$url" | wrk_reqs)
      kill -INT "$prof"; wait "$prof" 2>/dev/null || true
      awk -v n="$n" -v name="$name" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {c = $4; s = $NF; tot += c; row[s] = c}
        END {printf "bench: strace %s: %.1f system calls per request (%d requests):", name, tot / n, n;
             for (k in row) if (row[k] / n >= 0.05) printf " %s %.2f", k, row[k] / n; printf "\n"}' \
        "$DIR/strace.$name"
      ;;
    esac
  done
done

# Medians over the rounds (the figure a run reports).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for target in "${TARGETS[@]}"; do
  name=${target%%:*}
  RPS[$name]=$(echo "${ALL_RPS[$name]}" | median)
  CPU[$name]=$(echo "${ALL_CPU[$name]}" | median)
done
for target in "${TARGETS[@]}"; do # every median first: the ratios are to nginx's median
  name=${target%%:*}
  printf 'bench: %-15s median of %d rounds: %9.0f req/s, CPU %6.1f us/request; vs nginx: throughput %.2f, CPU nginx/it %.2f\n' \
    "$name" "$ROUNDS" "${RPS[$name]}" "${CPU[$name]}" "$(awk -v a="${RPS[$name]}" -v b="${RPS[nginx]}" 'BEGIN {print a / b}')" \
    "$(awk -v a="${CPU[nginx]}" -v b="${CPU[$name]}" 'BEGIN {print a / b}')"
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

awk -v g="${RPS[gateway]}" -v n="${RPS[nginx]}" -v f="${RPS[$FIRST_FLOOR]}" -v d="${P99[direct]:-}" \
    -v gp="${P99[gateway]:-}" -v np="${P99[nginx]:-}" -v gc="${CPU[gateway]}" -v nc="${CPU[nginx]}" \
    -v fc="${CPU[$FIRST_FLOOR]}" -v fn="$FIRST_FLOOR" 'BEGIN {
  printf "bench: throughput gateway/nginx = %.2f (goal >= 1.00); %s/nginx = %.2f; gateway/%s = %.2f\n", g / n, fn, f / n, fn, g / f;
  if (gc > 0) printf "bench: CPU per request nginx/gateway = %.2f (gateway %.1f us, nginx %.1f us, %s %.1f us)\n", nc / gc, gc, nc, fn, fc;
  if (d != "") {
    ga = gp - d; na = np - d; if (na < 0.001) na = 0.001; if (ga < 0) ga = 0;
    printf "bench: added p99 at the fixed rate: gateway %.2f ms, nginx %.2f ms, ratio %.2f (goal <= 1.50)\n", ga, na, ga / na;
  }
}'
