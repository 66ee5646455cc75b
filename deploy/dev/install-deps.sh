#!/usr/bin/env bash
# install-deps.sh — installs everything fleetmigrate's tests and demo need on a
# Debian/Ubuntu machine: database servers and clients, BIND9 and its tools, the
# dump tools we benchmark against, promtool (alert rules) and systemd-analyze
# (the units), and versitygw (an S3 server) built with Go
# into the repository's tool directory (.tools/bin), where internal/fleettest
# looks for it.
#
# Idempotent: when everything is present it returns in well under a second
# without touching apt. Run as root (or with sudo available).
#
#   deploy/dev/install-deps.sh          # install what is missing
#   deploy/dev/install-deps.sh --check  # only report what is missing (exit 1 if anything is)
set -euo pipefail

VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
STATICCHECK_VERSION=${STATICCHECK_VERSION:-2026.1}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools="$repo/.tools/bin"
check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1

log() { printf 'install-deps: %s\n' "$*" >&2; }

# command -> Debian package providing it
declare -A want=(
  [mariadbd]=mariadb-server
  [mariadb-install-db]=mariadb-server
  [mariadb]=mariadb-client
  [mariadb-dump]=mariadb-client
  [named]=bind9
  [tsig-keygen]=bind9-utils
  [nsupdate]=bind9-dnsutils
  [dig]=bind9-dnsutils
  [mydumper]=mydumper
  [myloader]=mydumper
  [pgcopydb]=pgcopydb
  [sysbench]=sysbench
  [promtool]=prometheus
  [systemd-analyze]=systemd
)

missing_pkgs=()
for cmd in "${!want[@]}"; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
    missing_pkgs+=("${want[$cmd]}")
  fi
done
# PostgreSQL server binaries live outside PATH, one directory per major version.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing_pkgs+=(postgresql)
fi
# de-duplicate
if ((${#missing_pkgs[@]})); then
  mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
fi

missing_tools=()
[[ -x "$tools/versitygw" && "$(cat "$tools/.versitygw-version" 2>/dev/null)" == "$VERSITYGW_VERSION" ]] || missing_tools+=(versitygw)

if ((check_only)); then
  if ((${#missing_pkgs[@]} + ${#missing_tools[@]})); then
    log "missing packages: ${missing_pkgs[*]:-none}; missing tools: ${missing_tools[*]:-none}"
    exit 1
  fi
  log "everything is installed"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { log "not root and no sudo: install ${missing_pkgs[*]} yourself"; exit 1; }
  sudo=sudo
fi

if ((${#missing_pkgs[@]})); then
  log "installing Debian packages: ${missing_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # The packages' own services are not wanted: the test harness starts private
  # instances on loopback addresses. On machines without a policy-rc.d that
  # denies service starts, the packaged services may start; they use the
  # standard ports, which the harness avoids.
  $sudo apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi

if ((${#missing_tools[@]})); then
  command -v go >/dev/null || { log "go is not on PATH; install Go 1.26 first"; exit 1; }
  mkdir -p "$tools"
  log "building versitygw $VERSITYGW_VERSION into $tools (about 90 s the first time)"
  GOBIN="$tools" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  echo "$VERSITYGW_VERSION" >"$tools/.versitygw-version"
fi

log "ok"
