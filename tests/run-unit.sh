#!/usr/bin/env bash
# Runs the cmocka unit-test binaries given as arguments (make check-unit), prints their output,
# and ends with one summary line "N passed, M failed" counting test cases. Exits 1 on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

if [ "$#" -eq 0 ]; then
  echo "usage: tests/run-unit.sh BINARY..." >&2
  exit 2
fi

# Leaks fail the run. Suppressions, if ever needed, name third-party library frames only.
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
if [ -f "$ROOT/tests/lsan.supp" ]; then
  export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
fi

# The JWT tests sign and verify with the real key pair made by deploy/deps.sh.
export TEST_JWT_PRIVATE_KEY_FILE="${TEST_JWT_PRIVATE_KEY_FILE:-$ROOT/.local/keys/jwt-private.pem}"
export TEST_JWT_PUBLIC_KEY_FILE="${TEST_JWT_PUBLIC_KEY_FILE:-$ROOT/.local/keys/jwt-public.pem}"
for f in "$TEST_JWT_PRIVATE_KEY_FILE" "$TEST_JWT_PUBLIC_KEY_FILE"; do
  [ -r "$f" ] || echo "run-unit: warning: $f is missing (run deploy/deps.sh)" >&2
done

# The Kafka, MongoDB and Redis tests use the local stack; say so up front when it is down.
for port in 6379 9092 27017; do
  if ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    echo "run-unit: warning: nothing listens on 127.0.0.1:$port (bash deploy/stack.sh start)" >&2
  fi
done

PER_BINARY_TIMEOUT="${UNIT_TIMEOUT_S:-120}"
passed=0
failed=0
failed_bins=()
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

for bin in "$@"; do
  echo "=== $bin"
  start=$(date +%s.%N)
  timeout --kill-after=5 "$PER_BINARY_TIMEOUT" "$bin" >"$out" 2>&1
  rc=$?
  cat "$out"
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')

  # cmocka: "[  PASSED  ] k test(s)." and "[  FAILED  ] k test(s), listed below:".
  p=$(awk '/^\[  PASSED  \] [0-9]+ test\(s\)\.$/ { s += $4 } END { print s + 0 }' "$out")
  f=$(awk '/^\[  FAILED  \] [0-9]+ test\(s\), listed below:$/ { s += $4 } END { print s + 0 }' \
      "$out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # A crash, a timeout, a failed group setup or a sanitizer report after the tests passed:
    # the binary failed even though no test case was counted as failed.
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ]; then
    failed_bins+=("$bin")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "--- $bin: FAILED (timed out after ${PER_BINARY_TIMEOUT}s, ${secs}s)"
    else
      echo "--- $bin: FAILED (exit $rc, ${secs}s)"
    fi
  else
    echo "--- $bin: ok ($p tests, ${secs}s)"
  fi
done

if [ "${#failed_bins[@]}" -gt 0 ]; then
  echo "failed binaries:"
  printf '  %s\n' "${failed_bins[@]}"
fi
echo "$passed passed, $failed failed"
[ "${#failed_bins[@]}" -eq 0 ] && [ "$failed" -eq 0 ]
