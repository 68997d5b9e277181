#!/usr/bin/env bash
# Upload throughput (make bench): MiB/s of POST /v1/media on a media instance of its own
# (release build), side by side in the same run with peers that receive the same file from
# the same client (curl) on this machine, printed as ratios:
#   - S3 store: media with MEDIA_STORE=s3 on a local versitygw, vs curl PUTting the file to the
#     same versitygw itself (SigV4, one request): what the media service adds on top of its store;
#   - disk: nginx's WebDAV PUT (client body to a temp file, renamed into place), the plain
#     "receive a body and write it to disk" floor, vs media on versitygw and on GridFS (the
#     default store, on the shared FerretDB).
# Rounds alternate ours and the peers so background load falls on both; the best round counts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build/rel}
MIB=${BENCH_UPLOAD_MIB:-64}
ROUNDS=${BENCH_ROUNDS:-3}
BASE=${BENCH_PORT_BASE:-24380}   # four ports from here, all below 32768
P_GRIDFS=$BASE P_S3=$((BASE + 1)) P_GW=$((BASE + 2)) P_NGINX=$((BASE + 3))
DB=bench_media_$$
AK=AKIDBENCHMEDIA SK=bench-secret-key-media BUCKET=bench-media
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/.local/venv/bin/python" -c "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:27017').drop_database('$DB')" || true
  rm -rf "$DIR"
}
trap cleanup EXIT

for b in "$BUILD/bin/media" "$ROOT/.local/bin/versitygw"; do
  [ -x "$b" ] || { echo "upload bench: $b missing (make MODE=rel build; make deps)"; exit 1; }
done

wait_http() { # url [any]: until it answers 2xx (or anything at all with "any")
  local f=-f
  [ "${2:-}" = any ] && f=
  for _ in $(seq 1 150); do curl $f -sS -o /dev/null -m 1 "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "upload bench: $1 did not come up"; tail -5 "$DIR"/*.log "$DIR"/nginx/error.log 2>/dev/null; exit 1
}

# The file: a PDF by its bytes (an allowed type), random so nothing compresses it.
{ printf '%%PDF-1.4\n'; head -c $((MIB << 20)) /dev/urandom; } > "$DIR/up.pdf"
SIZE=$(stat -c %s "$DIR/up.pdf")
SHA=$(sha256sum "$DIR/up.pdf" | cut -d' ' -f1)

# versitygw over a posix directory, as the S3 e2e test runs it.
# (versitygw compares paths as strings: the sidecar's must not start with the root's)
mkdir -p "$DIR/data/$BUCKET" "$DIR/meta"
"$ROOT/.local/bin/versitygw" --port "127.0.0.1:$P_GW" --access "$AK" --secret "$SK" \
  posix --sidecar "$DIR/meta" "$DIR/data" >"$DIR/versitygw.log" 2>&1 &
PIDS+=($!)

# nginx, unprivileged, WebDAV PUT into $DIR/www.
mkdir -p "$DIR/www" "$DIR/body" "$DIR/nginx"
cat >"$DIR/nginx/nginx.conf" <<CONF
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_max_body_size 0;
  client_body_temp_path $DIR/body;
  server {
    listen 127.0.0.1:$P_NGINX;
    root $DIR/www;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
CONF
nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" >/dev/null 2>&1 &
PIDS+=($!)

# Two media instances of our own (GridFS and S3), release build, no per-user rate or quota.
common_env=(
  HTTP_THREADS=4 MONGO_DB="$DB" JWT_PUBLIC_KEY_FILE="k1=$ROOT/.local/keys/jwt-public.pem"
  MEDIA_UPLOADS_PER_MIN=0 MEDIA_QUOTA_BYTES=0 MEDIA_FILE_MAX_BYTES=$(((MIB + 1) << 20))
  MEDIA_WORKER_GROUP=bench-media-worker MESSAGING_URL= LOG_LEVEL=warn)
env "${common_env[@]}" HTTP_PORT=$P_GRIDFS MEDIA_STORE=gridfs MEDIA_GRIDFS_BUCKET=bench \
  "$BUILD/bin/media" >"$DIR/media-gridfs.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_GW/" any
wait_http "http://127.0.0.1:$P_NGINX/" any
env "${common_env[@]}" HTTP_PORT=$P_S3 MEDIA_STORE=s3 S3_ENDPOINT="http://127.0.0.1:$P_GW" \
  S3_BUCKET=$BUCKET S3_ACCESS_KEY=$AK S3_SECRET_KEY=$SK \
  "$BUILD/bin/media" >"$DIR/media-s3.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_GRIDFS/health/live"
wait_http "http://127.0.0.1:$P_S3/health/live"

TOK=$("$ROOT/.local/venv/bin/python" - "$ROOT/.local/keys/jwt-private.pem" <<'PY'
import sys, time, jwt
now = int(time.time())
c = {"sub": "bench", "tid": "bench-tenant", "sid": "bench", "roles": ["member"],
     "iss": "chat-platform", "aud": "chat-api", "iat": now, "nbf": now, "exp": now + 3600}
print(jwt.encode(c, open(sys.argv[1], "rb").read(), algorithm="RS256", headers={"kid": "k1"}))
PY
)

# Seconds of one upload (curl's own clock: request sent to answer received); fails loudly.
t_media() { # port
  local out code
  out=$(curl -sS -o "$DIR/resp.json" -w '%{http_code} %{time_total}' \
    "http://127.0.0.1:$1/v1/media?purpose=other" -H "Authorization: Bearer $TOK" \
    -H 'Content-Type: application/pdf' -H 'Expect:' --data-binary @"$DIR/up.pdf")
  code=${out%% *}
  [ "$code" = 201 ] || { echo "upload bench: media on $1 answered $code: $(cat "$DIR/resp.json")" >&2; exit 1; }
  [ "$(jq -r .size "$DIR/resp.json")" = "$SIZE" ] || { echo "upload bench: wrong size stored" >&2; exit 1; }
  echo "${out#* }"
}
t_s3_peer() {
  local out
  out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$AK:$SK" -H "x-amz-content-sha256: $SHA" -H 'Expect:' -T "$DIR/up.pdf" \
    "http://127.0.0.1:$P_GW/$BUCKET/peer-$RANDOM")
  [ "${out%% *}" = 200 ] || { echo "upload bench: versitygw answered ${out%% *}" >&2; exit 1; }
  echo "${out#* }"
}
t_nginx() {
  local out
  out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' -H 'Expect:' -T "$DIR/up.pdf" \
    "http://127.0.0.1:$P_NGINX/f-$RANDOM.pdf")
  case "${out%% *}" in 201|204) ;; *) echo "upload bench: nginx answered ${out%% *}: $(tail -3 "$DIR/nginx/error.log")" >&2; exit 1 ;; esac
  echo "${out#* }"
}

rss0=$(awk '/VmRSS/ { print $2 }' "/proc/${PIDS[2]}/status")
best() { sort -g | head -1; }
: >"$DIR/t.gridfs"; : >"$DIR/t.s3"; : >"$DIR/t.s3peer"; : >"$DIR/t.nginx"
echo "bench: upload of one $MIB MiB file, $ROUNDS rounds, best round counts ..."
for r in $(seq 1 "$ROUNDS"); do
  t_nginx >>"$DIR/t.nginx"
  t_s3_peer >>"$DIR/t.s3peer"
  t_media $P_S3 >>"$DIR/t.s3"
  t_media $P_GRIDFS >>"$DIR/t.gridfs"
done
mibs() { awk -v m="$MIB" -v t="$1" 'BEGIN { printf "%.1f", m / t }'; }
n=$(best <"$DIR/t.nginx") p=$(best <"$DIR/t.s3peer") s=$(best <"$DIR/t.s3") g=$(best <"$DIR/t.gridfs")
echo "upload nginx WebDAV PUT to disk:      $(mibs "$n") MiB/s"
echo "upload curl PUT to versitygw (S3):    $(mibs "$p") MiB/s"
echo "upload media -> versitygw (S3):       $(mibs "$s") MiB/s"
echo "upload media -> GridFS (FerretDB):    $(mibs "$g") MiB/s"
awk -v s="$s" -v p="$p" -v n="$n" -v g="$g" 'BEGIN {
  printf "upload ratio media(S3) / versitygw PUT: %.2fx\n", p / s
  printf "upload ratio media(S3) / nginx PUT:     %.2fx\n", n / s
  printf "upload ratio media(GridFS) / nginx PUT: %.2fx\n", n / g }'
rss=$(awk '/VmHWM/ { print $2 }' "/proc/${PIDS[2]}/status" 2>/dev/null || echo 0)
echo "media (GridFS) memory: $((rss0 / 1024)) MiB before, peak $((rss / 1024)) MiB after $ROUNDS uploads of $MIB MiB (parts of 4 MiB, 4 server threads)"
