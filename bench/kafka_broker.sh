#!/usr/bin/env bash
# A Kafka broker of the benchmark's own (KRaft, one node), apart from the shared stack's 9092:
# pinned to a core (taskset), its heap and GC flags and server settings chosen here, its log
# under build/. Usage: bench/kafka_broker.sh start|stop|status. Knobs: BENCH_KAFKA_PORT (23290;
# the controller listens on the next port), BENCH_KAFKA_CORE (all: not pinned, as the shared
# stack's broker; or a taskset list such as 1, the load generator's core: see bench/README.md,
# socket section), BENCH_KAFKA_HEAP ("-Xmx1g -Xms1g"), BENCH_KAFKA_GC (G1 with a 5 ms pause
# target), BENCH_KAFKA_PROPS (extra server.properties lines, space-separated), BENCH_KAFKA_DIR
# (build/bench-kafka-PORT). The JVM's GC log is DIR/gc.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
PORT="${BENCH_KAFKA_PORT:-23290}"
CPORT=$((PORT + 1))
CORE="${BENCH_KAFKA_CORE:-all}"
HEAP="${BENCH_KAFKA_HEAP:--Xmx1g -Xms1g}"
GC="${BENCH_KAFKA_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=5}"
DIR="${BENCH_KAFKA_DIR:-$ROOT/build/bench-kafka-$PORT}"
CP="$LOCAL/kafka/lib/*"

log() { echo "bench-kafka: $*"; }

pid_alive() {
  [ -f "$DIR/pid" ] || return 1
  local pid; pid=$(cat "$DIR/pid")
  kill -0 "$pid" 2>/dev/null || return 1
  case "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in *"$DIR/server.properties"*) return 0 ;; esac
  return 1
}

healthy() { timeout 8 kcat -b "127.0.0.1:$PORT" -L -m 5 >/dev/null 2>&1; }

start() {
  if pid_alive; then log "already running (pid $(cat "$DIR/pid"), 127.0.0.1:$PORT)"; return; fi
  mkdir -p "$DIR"
  # The shared broker's settings (deploy/kafka/server.properties.in) with this broker's ports
  # and log directory; a fresh log each start (the bench creates and drops its own topics).
  sed -e "s|9092|$PORT|g" -e "s|9093|$CPORT|g" -e "s|^log.dirs=.*|log.dirs=$DIR/data|" \
    "$ROOT/deploy/kafka/server.properties.in" >"$DIR/server.properties"
  [ -z "${BENCH_KAFKA_PROPS:-}" ] || printf '%s\n' ${BENCH_KAFKA_PROPS} >>"$DIR/server.properties"
  rm -rf "$DIR/data"
  java -cp "$CP" -Dlog4j.configuration="file:$ROOT/deploy/kafka/log4j.properties" \
    kafka.tools.StorageTool format -t "$(java -cp "$CP" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
    -c "$DIR/server.properties" >"$DIR/format.log" 2>&1
  # shellcheck disable=SC2086  # HEAP and GC are lists of JVM flags
  local pin=(taskset -c "$CORE")
  [ "$CORE" != all ] || pin=()
  nohup "${pin[@]}" java $HEAP $GC -Xlog:gc:file="$DIR/gc.log" -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$ROOT/deploy/kafka/log4j.properties" \
    -cp "$CP" kafka.Kafka "$DIR/server.properties" >"$DIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$DIR/pid"
  local deadline=$(( $(date +%s) + 120 ))
  until healthy; do
    pid_alive || { tail -n 30 "$DIR/kafka.log" >&2; log "exited during start-up"; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "not healthy after 120 s"; exit 1; }
    sleep 0.5
  done
  log "up (127.0.0.1:$PORT, pid $(cat "$DIR/pid"), core $CORE, $HEAP $GC)"
}

stop() {
  pid_alive || { log "not running"; return; }
  local pid; pid=$(cat "$DIR/pid")
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$DIR/pid"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if pid_alive && healthy; then log "up (127.0.0.1:$PORT, pid $(cat "$DIR/pid"))"; else log "down"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
