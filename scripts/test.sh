#!/usr/bin/env bash
# The test command. Makes sure what the test suite needs is on this machine,
# then runs `cargo test --workspace` with any arguments given (without
# `--workspace` when they pick packages with -p, which it would override):
#
#   - PostgreSQL on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672: started if
#     installed but stopped, installed from Debian packages if missing;
#   - Chromium and chromedriver (the dashboard's browser test) and HAProxy
#     (the cluster rig's test), installed from Debian packages if missing.
#
# Each step does nothing when its service is already there, so running the
# script again costs only the tests. Installing and starting need root (or
# sudo).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/test.sh [CARGO TEST ARGS...]

Ensures PostgreSQL (127.0.0.1:5432), RabbitMQ (127.0.0.1:5672), Chromium and
chromedriver, starting or installing them (Debian packages) as needed, then
runs `cargo test --workspace ARGS...` (`cargo test ARGS...` when ARGS pick
packages with -p/--package). Examples:

  scripts/test.sh                               # the whole suite
  scripts/test.sh --lib                         # every crate's unit tests
  scripts/test.sh -p stevedore-core --lib     # one crate's unit tests
  scripts/test.sh --test faults -- --nocapture  # one test file, with output

The tests' own settings (STEVEDORE_TEST_PG_URL, STEVEDORE_TEST_AMQP_URL,
STEVEDORE_CHROMIUM, STEVEDORE_CHROMEDRIVER) are passed through.
EOF
}

case "${1:-}" in -h | --help)
  usage
  exit 0
  ;;
esac

cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'scripts/test.sh: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "needs root to run: $* (run as root, or install sudo)"
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Waits up to $2 seconds for 127.0.0.1:$1 to accept connections.
wait_for_port() {
  for _ in $(seq 1 "$2"); do
    port_open "$1" && return 0
    sleep 1
  done
  return 1
}

apt_updated=
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "$* missing and this is not a Debian-like system: install them, then run again"
  log "installing $*"
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# With systemd running, services start through it; in a container without
# it, the packages' own start commands are used.
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

ensure_postgres() {
  local installed_now=
  if ! port_open 5432; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      apt_install postgresql
      installed_now=1
    fi
    log "starting PostgreSQL"
    if have_systemd; then
      as_root systemctl start postgresql
    else
      # Every cluster that is down: version, name, port, status, ...
      pg_lsclusters -h | while read -r version name _ status _; do
        [ "$status" = online ] ||
          as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || true
      done
    fi
    wait_for_port 5432 60 || die "PostgreSQL did not come up on 127.0.0.1:5432"
  fi
  # The tests connect as `postgres` without a password unless told otherwise.
  local url="${STEVEDORE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  command -v psql >/dev/null 2>&1 || return 0
  psql "$url" -Atqc 'select 1' >/dev/null 2>&1 && return 0
  if [ -n "$installed_now" ] && [ -z "${STEVEDORE_TEST_PG_URL:-}" ]; then
    # A server installed just now for the tests: trust local TCP connections
    # as `postgres` (Debian's default asks for a password the role lacks).
    log "letting the tests connect to the new PostgreSQL as postgres"
    local hba
    for hba in /etc/postgresql/*/*/pg_hba.conf; do
      as_root sed -i -e '1i host all postgres 127.0.0.1/32 trust' \
        -e '1i host all postgres ::1/128 trust' "$hba"
    done
    if have_systemd; then
      as_root systemctl reload postgresql
    else
      pg_lsclusters -h | while read -r version name _; do
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload || true
      done
    fi
    sleep 1
    psql "$url" -Atqc 'select 1' >/dev/null 2>&1 && return 0
  fi
  die "PostgreSQL is up but refuses $url: allow it in pg_hba.conf, or set STEVEDORE_TEST_PG_URL"
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  log "starting RabbitMQ"
  if have_systemd; then
    as_root systemctl start rabbitmq-server
  else
    as_root rabbitmq-server -detached || true
  fi
  as_root rabbitmqctl -q await_startup --timeout 120
  wait_for_port 5672 60 || die "RabbitMQ did not come up on 127.0.0.1:5672"
}

ensure_browser() {
  # tests/dashboard.rs drives Debian's Chromium through chromedriver.
  local chromium="${STEVEDORE_CHROMIUM:-/usr/bin/chromium}"
  local driver="${STEVEDORE_CHROMEDRIVER:-/usr/bin/chromedriver}"
  [ -x "$chromium" ] && [ -x "$driver" ] && return 0
  apt_install chromium chromium-driver
  [ -x "$chromium" ] && [ -x "$driver" ] ||
    die "no $chromium or $driver after installing chromium and chromium-driver"
}

ensure_haproxy() {
  # tests/e2e/cluster.rs runs the cluster rig (scripts/cluster.sh) behind
  # HAProxy; Debian's package starts a service of its own, which the rig
  # does not use.
  command -v haproxy >/dev/null 2>&1 && return 0
  apt_install haproxy
  if command -v systemctl >/dev/null 2>&1; then
    as_root systemctl stop haproxy 2>/dev/null || true
  fi
}

ensure_postgres
ensure_rabbitmq
ensure_browser
ensure_haproxy

# `--workspace` selects every package whatever -p says, so it goes when the
# arguments name packages themselves.
scope=(--workspace)
for arg in "$@"; do
  case "$arg" in
  --) break ;;
  -p | --package | -p?* | --package=*) scope=() ;;
  esac
done
log "cargo test ${scope[*]:+${scope[*]} }$*"
exec cargo test "${scope[@]}" "$@"
