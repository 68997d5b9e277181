#!/usr/bin/env bash
# make bench: the authentication benchmark (bench_auth.c) and its PyJWT peer, side by side in
# one run. Needs the JWT keys of deploy/deps.sh and, for the denylist figure, the local Redis.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/build/rel/bench/bench_auth}
KEYS=$ROOT/.local/keys
TOKEN=$(mktemp)
trap 'rm -f "$TOKEN"' EXIT
out=$("$BIN" "$KEYS/jwt-private.pem" "$KEYS/jwt-public.pem" "$TOKEN")
echo "$out"
ours=$(echo "$out" | awk '/1 thread :/ {gsub("/s", "", $5); print $5; exit}')
peer=$("$ROOT/.local/venv/bin/python" "$ROOT/bench/peer_pyjwt.py" "$TOKEN" "$KEYS/jwt-public.pem" 2)
awk -v o="$ours" -v p="$peer" 'BEGIN { printf "peer, same token and checks, 1 thread: PyJWT %.0f/s | cm_jwt_verify %.0f/s | ratio %.2f\n", p, o, o / p }'
