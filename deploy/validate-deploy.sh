#!/usr/bin/env bash
# Validates the deployment descriptions offline: hadolint on deploy/docker/*.Dockerfile, the
# runtime-package derivation on the built binaries, `docker-compose config` on
# docker-compose.yml, `kustomize build` of k8s/base and every overlay, then deploy/check_deploy.py
# (kubernetes-validate schemas, cross-checks, the README's configuration table). One line per
# step on success. Tools come from deploy/check-tools.sh (`make validate-deploy`).
#   PROCESSES="gateway user messaging" BUILD_DIR=build/asan deploy/validate-deploy.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
BUILD_DIR="${BUILD_DIR:-build/asan}"
PROCESSES="${PROCESSES:?PROCESSES must list the processes (the Makefile passes its BINS)}"
OUT="$ROOT/build/validate-deploy"  # per checkout: worktrees may share .local
cd "$ROOT"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac

PY="$LOCAL/deploy-venv/bin/python"
KUSTOMIZE="$LOCAL/bin/kustomize"
[ -x "$PY" ] && [ -x "$KUSTOMIZE" ] && command -v docker-compose >/dev/null \
  || { echo "validate-deploy: tools missing: run bash deploy/check-tools.sh" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
log="$OUT/step.log"

# step NAME SUMMARY CMD...: runs CMD, its output in the log; prints the log if it fails.
step() {
  local name=$1 summary=$2 t; shift 2
  t=$(date +%s%N)
  if "$@" >"$log" 2>&1; then
    echo "validate-deploy: $name ok ($summary) in $(( ($(date +%s%N) - t) / 1000000 )) ms"
  else
    cat "$log" >&2
    echo "validate-deploy: $name FAILED" >&2
    exit 1
  fi
}

dockerfiles=(deploy/docker/*.Dockerfile)
step hadolint "${#dockerfiles[@]} Dockerfiles, hadolint $("$LOCAL/deploy-venv/bin/hadolint" --version | awk '{print $NF}')" \
  "$LOCAL/deploy-venv/bin/hadolint" "${dockerfiles[@]}"

runtime_packages() {
  local p
  for p in $PROCESSES; do
    deploy/docker/runtime-packages.sh "$BUILD_DIR/bin/$p" > "$OUT/$p.runtime-packages"
    echo "$p: $(tr '\n' ' ' < "$OUT/$p.runtime-packages")"
  done
}
step runtime-packages "every library of $(echo $PROCESSES | tr ' ' ',') maps to a Debian package" runtime_packages

# A clean environment, so a developer's exported KAFKA_TOPIC_PREFIX etc. cannot change the render.
compose_config() {
  env -i PATH="$PATH" HOME="${HOME:-/root}" docker-compose -f docker-compose.yml \
    --project-directory "$ROOT" config > "$OUT/compose.yaml"
}
step docker-compose "$(docker-compose version --short) accepts docker-compose.yml" compose_config

overlays=()
render() {
  local dir name
  for dir in k8s/base k8s/overlays/*/; do
    dir=${dir%/}; name=${dir##*/}
    "$KUSTOMIZE" build "$dir" > "$OUT/k8s-$name.yaml" || return 1  # set -e is off inside ||
    overlays+=("--k8s" "$name=$OUT/k8s-$name.yaml")
  done
}
render >"$log" 2>&1 || { cat "$log" >&2; echo "validate-deploy: kustomize FAILED" >&2; exit 1; }
echo "validate-deploy: kustomize ok ($("$KUSTOMIZE" version) rendered $(( ${#overlays[@]} / 2 )): base and $(ls k8s/overlays | tr '\n' ' ' | sed 's/ $//'))"

t=$(date +%s%N)
"$PY" deploy/check_deploy.py --root "$ROOT" --bin-dir "$BUILD_DIR/bin" --processes "$PROCESSES" \
  --compose "$OUT/compose.yaml" "${overlays[@]}"
echo "validate-deploy: checks ok in $(( ($(date +%s%N) - t) / 1000000 )) ms"
