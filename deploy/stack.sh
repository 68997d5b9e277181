#!/usr/bin/env bash
# Starts, stops and reports the local dependencies (Redis 6379, Kafka 9092/9093, FerretDB 27017); run deploy/deps.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
LOCAL="$ROOT/.local"
RUN="$LOCAL/run"
LOGS="$LOCAL/logs"
PY="$LOCAL/venv/bin/python"

KAFKA_TOPIC_PREFIX="${KAFKA_TOPIC_PREFIX:-}"
KAFKA_HEAP="${KAFKA_HEAP:--Xmx512m}"
START_TIMEOUT="${STACK_START_TIMEOUT:-90}"   # Kafka's first start on 2 cores takes ~20-30 s
STOP_TIMEOUT=20

# name -> port, and a word that must be in the process's command line (guards against pid reuse).
NAMES=(redis kafka ferretdb)
declare -A PORT=([redis]=6379 [kafka]=9092 [ferretdb]=27017)
declare -A CMDLINE_MARK=([redis]=redis-server [kafka]=kafka.Kafka [ferretdb]=ferretdb)
TOPICS=(messages conversations users media notifications)

log() { echo "stack: $*"; }
die() { echo "stack: ERROR: $*" >&2; exit 1; }

# Plain TCP connect through bash's /dev/tcp; timeout guards against a filtered port hanging.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Pid from our pidfile if that process is alive and still the one we started; empty otherwise.
our_pid() {
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  # Read whole, not piped into grep -q: under pipefail an early grep exit SIGPIPEs tr on a
  # long command line (Kafka's classpath) and the live process would look dead.
  local cmd; cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
  case "$cmd" in *"${CMDLINE_MARK[$1]}"*) echo "$pid" ;; esac
}

healthy() {
  case "$1" in
    redis) [ "$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] ;;
    # -L needs a broker that answers metadata requests, not just an open socket.
    kafka) timeout 8 kcat -b 127.0.0.1:9092 -L -m 5 >/dev/null 2>&1 ;;
    ferretdb)
      port_open 27017 || return 1
      # A real ping: the port opens before the SQLite backend is ready.
      "$PY" -c 'import pymongo,sys
c = pymongo.MongoClient("mongodb://127.0.0.1:27017/", serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
c.admin.command("ping")' >/dev/null 2>&1 ;;
  esac
}

launch() {
  local name=$1
  case "$name" in
    redis)
      mkdir -p "$LOCAL/redis"
      # Foreground redis (daemonize no) backgrounded here, so $! is its pid; defaults otherwise (RDB in .local/redis).
      nohup redis-server --port 6379 --bind 127.0.0.1 --dir "$LOCAL/redis" --daemonize no --logfile "" \
        >>"$LOGS/redis.log" 2>&1 </dev/null &
      ;;
    kafka)
      [ -f "$LOCAL/kafka/data/meta.properties" ] || die "kafka storage not formatted: run deploy/deps.sh"
      # java directly (not kafka-server-start.sh, which is not shipped in the jars) so $! is the JVM.
      nohup java $KAFKA_HEAP -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$DEPLOY/kafka/log4j.properties" \
        -cp "$LOCAL/kafka/lib/*" kafka.Kafka "$LOCAL/kafka/server.properties" \
        >>"$LOGS/kafka.log" 2>&1 </dev/null &
      ;;
    ferretdb)
      [ -x "$LOCAL/bin/ferretdb" ] || die "$LOCAL/bin/ferretdb missing: run deploy/deps.sh"
      mkdir -p "$LOCAL/ferretdb"
      # --debug-addr=- : no metrics/pprof listener on 8088; --state-dir: keep state.json out of the cwd;
      # --log-level=warn: INFO logs every connection.
      nohup "$LOCAL/bin/ferretdb" --handler=sqlite --sqlite-url="file:$LOCAL/ferretdb/" \
        --listen-addr=127.0.0.1:27017 --telemetry=disable --state-dir="$LOCAL/ferretdb" \
        --debug-addr=- --log-level=warn \
        >>"$LOGS/ferretdb.log" 2>&1 </dev/null &
      ;;
  esac
  echo $! >"$RUN/$name.pid"
}

# All topics with their .dlq twins, created in one AdminClient call (no JVM start per topic).
create_topics() {
  local names=() t
  for t in "${TOPICS[@]}"; do names+=("$KAFKA_TOPIC_PREFIX$t" "$KAFKA_TOPIC_PREFIX$t.dlq"); done
  "$PY" - "${names[@]}" <<'EOF'
import sys
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
existing = set(admin.list_topics(timeout=15).topics)
wanted = [n for n in sys.argv[1:] if n not in existing]
created = 0
if wanted:
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=3, replication_factor=1) for n in wanted], request_timeout=30)
    for name, fut in futures.items():
        try:
            fut.result()
            created += 1
        except KafkaException as e:
            # Another process may have created it meanwhile: that is fine.
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                sys.exit(f"create topic {name}: {e}")
print(f"stack: kafka topics ok ({len(sys.argv) - 1} topics, {created} created)")
EOF
}

cmd_start() {
  local t0 name started=() pid
  t0=$(date +%s)
  [ -x "$PY" ] || die "$PY missing: run deploy/deps.sh"
  mkdir -p "$RUN" "$LOGS"
  # Launch everything first and wait afterwards, so the three start-ups overlap.
  for name in "${NAMES[@]}"; do
    pid=$(our_pid "$name")
    if [ -n "$pid" ]; then
      log "$name already running (pid $pid, started by stack.sh)"
    elif port_open "${PORT[$name]}"; then
      rm -f "$RUN/$name.pid"
      log "$name: port ${PORT[$name]} already answers, reusing that server"
    else
      rm -f "$RUN/$name.pid"
      launch "$name"
      started+=("$name")
      log "$name starting (pid $(cat "$RUN/$name.pid"), log .local/logs/$name.log)"
    fi
  done

  for name in "${NAMES[@]}"; do
    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    until healthy "$name"; do
      pid=$(our_pid "$name")
      if [[ " ${started[*]-} " == *" $name "* ]] && [ -z "$pid" ]; then
        echo "stack: $name exited during start-up; last lines of .local/logs/$name.log:" >&2
        tail -n 40 "$LOGS/$name.log" >&2 || true
        rm -f "$RUN/$name.pid"
        exit 1
      fi
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "stack: $name not healthy after ${START_TIMEOUT}s; last lines of .local/logs/$name.log:" >&2
        tail -n 40 "$LOGS/$name.log" >&2 || true
        exit 1
      fi
      sleep 0.5
    done
    log "$name up (127.0.0.1:${PORT[$name]})"
  done

  create_topics
  log "started in $(( $(date +%s) - t0 ))s"
}

stop_one() {
  local name=$1 pid i
  pid=$(our_pid "$name")
  if [ -z "$pid" ]; then
    [ -f "$RUN/$name.pid" ] && log "$name: stale pidfile removed"
    rm -f "$RUN/$name.pid"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  # Kafka's controlled shutdown takes a few seconds; poll rather than sleep a fixed time.
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    log "$name (pid $pid) killed after ${STOP_TIMEOUT}s"
  else
    log "$name (pid $pid) stopped"
  fi
  rm -f "$RUN/$name.pid"
}

cmd_stop() {
  local name
  # Only what this script started (has a pidfile); stopped in parallel, each waits on its own.
  for name in "${NAMES[@]}"; do stop_one "$name" & done
  wait
}

cmd_status() {
  local name pid all_up=0
  for name in "${NAMES[@]}"; do
    pid=$(our_pid "$name")
    if healthy "$name"; then
      if [ -n "$pid" ]; then log "$name up (127.0.0.1:${PORT[$name]}, pid $pid, started by stack.sh)"
      else log "$name up (127.0.0.1:${PORT[$name]}, not started by stack.sh)"; fi
    else
      all_up=3
      if [ -n "$pid" ]; then log "$name down (pid $pid running but not answering)"
      else log "$name down"; fi
    fi
  done
  return $all_up
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status   (status exits 3 if something is down)" >&2; exit 2 ;;
esac
