#!/usr/bin/env bash
# Lints the contracts in proto/: openapi.yaml and asyncapi.yaml with Redocly CLI, asyncapi.yaml
# again with @asyncapi/parser (what `asyncapi validate` runs), events/*.schema.json against the
# JSON Schema metaschema. One line per check on success; the tool's whole output on failure, or
# always with LINT_VERBOSE=1. Tools come from deploy/check-tools.sh (`make lint-contracts`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
NODE_MODULES="$LOCAL/contracts-node/node_modules"
cd "$ROOT"

[ -x "$NODE_MODULES/.bin/redocly" ] && [ -x "$LOCAL/deploy-venv/bin/python" ] \
  || { echo "lint-contracts: tools missing: run bash deploy/check-tools.sh" >&2; exit 1; }

# No usage reporting and no update check: these machines reach package registries only.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
out="$LOCAL/logs/lint-contracts.log"
mkdir -p "$LOCAL/logs"
rc=0

# run NAME CMD...: runs CMD with its output in the log; prints the log when it fails (or when
# LINT_VERBOSE=1), else the one summary line `summary` extracts.
run() {
  local name=$1 t; shift
  t=$(date +%s%N)
  if "$@" >"$out" 2>&1; then
    [ "${LINT_VERBOSE:-0}" = 1 ] && cat "$out"
    echo "lint-contracts: $name ok ($(summary "$name")) in $(( ($(date +%s%N) - t) / 1000000 )) ms"
  else
    cat "$out" >&2
    echo "lint-contracts: $name FAILED" >&2
    rc=1
  fi
}

summary() {
  case "$1" in
    redocly) grep -o 'You have [0-9]* warnings\?' "$out" | sed 's/You have //' || echo "no warnings" ;;
    asyncapi) grep -o 'valid AsyncAPI [^ ]*' "$out" | head -n1 ;;
    events) sed -n 's/^proto\/events: //p' "$out" ;;
  esac
}

run redocly "$NODE_MODULES/.bin/redocly" lint --config deploy/contracts/redocly.yaml \
  proto/openapi.yaml proto/asyncapi.yaml
run asyncapi env NODE_PATH="$NODE_MODULES" node deploy/contracts/asyncapi-validate.cjs proto/asyncapi.yaml
run events "$LOCAL/deploy-venv/bin/python" deploy/check_contracts.py proto/events
exit $rc
