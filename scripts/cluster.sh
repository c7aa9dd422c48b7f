#!/usr/bin/env bash
# A local cluster rig: Stevedore spread over processes on this machine, the
# shape of a production deployment.
#
#   - a three-node RabbitMQ cluster (ports BASE+1..BASE+3, node names
#     stevedore-PORT@localhost, data under /tmp/stevedore-rabbitmq), beside the
#     machine's own broker, which it never touches; the job queues are quorum
#     queues replicated on all three;
#   - 2 API processes (BASE+81, BASE+82) and 2 stream processes (BASE+91,
#     BASE+92) behind HAProxy on BASE+80: websocket upgrades go to the stream
#     processes, the rest to the API processes, each checked on /readyz;
#   - 3 workers; every Stevedore process gets the three nodes' URLs;
#   - the project's PostgreSQL (127.0.0.1:5432), database stevedore_rig_BASE.
#
#   scripts/cluster.sh up [--job-queues N]   start it all (prints export lines)
#   scripts/cluster.sh down                  stop it all, delete its data
#   scripts/cluster.sh status                processes, nodes, queue leaders
#   scripts/cluster.sh faults [--step S] [--rate R] [--followers F]
#       a steady stream of submissions (R/s, default 50) and websocket
#       followers through the balancer while, S seconds (default 6) apart, it
#       stops the node leading the job queue and brings it back, kill -9s an
#       API process, a stream process and two workers, and restarts them;
#       then every action settles and the last line is the summary (JSON)
#   scripts/cluster.sh load [--seconds S] [--rate R] [--verb noop]
#       the same traffic without faults; the summary adds CPU seconds per role
#   scripts/cluster.sh kill NAME | restart NAME | node-stop I | node-start I | leader | leaders
#       single steps (NAME: api-1, stream-2, worker-3, …; I: 1..3)
#
# Settings (environment): STEVEDORE_RIG_BASE (port base, default 5700; the
# test suite uses another), STEVEDORE_BIN and STEVEDORE_BENCH_BIN (binaries;
# default: built with `cargo build --release`). Like scripts/test.sh it
# installs what it needs (HAProxy, RabbitMQ) from Debian packages when
# missing, and every command may be run again. Needs root (the RabbitMQ nodes
# run as the `rabbitmq` user).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

base="${STEVEDORE_RIG_BASE:-5700}"
case "$base" in '' | *[!0-9]*) echo "STEVEDORE_RIG_BASE must be a port number" >&2 && exit 2 ;; esac
dir="/tmp/stevedore-rig-$base"
db="stevedore_rig_$base"
pg="postgres://postgres@127.0.0.1:5432"
lb_port=$((base + 80))
nodes=(1 2 3)

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'scripts/cluster.sh: %s\n' "$*" >&2
  exit 1
}

node_port() { echo $((base + $1)); }
node_name() { echo "stevedore-$(node_port "$1")@localhost"; }
amqp_urls() {
  local urls=() i
  for i in "${nodes[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(node_port "$i")/%2f"); done
  (
    IFS=,
    echo "${urls[*]}"
  )
}
ctl() { su -s /bin/sh rabbitmq -c "rabbitmqctl -n '$(node_name "$1")' $2"; }
psql_pg() { psql -q -X -v ON_ERROR_STOP=1 "$pg/postgres" "$@"; }

ensure_packages() {
  local missing=()
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  command -v psql >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian starts an HAProxy service on install; the rig runs its own.
    if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null; then
      systemctl stop haproxy 2>/dev/null || true
    fi
  fi
}

binaries() {
  stevedore="${STEVEDORE_BIN:-}"
  bench="${STEVEDORE_BENCH_BIN:-}"
  if [ -z "$stevedore" ] || [ -z "$bench" ]; then
    log "building release binaries"
    cargo build -q --release --bin stevedore --bin bench
    local target="${CARGO_TARGET_DIR:-target}"
    stevedore="${stevedore:-$target/release/stevedore}"
    bench="${bench:-$target/release/bench}"
  fi
  stevedore="$(realpath "$stevedore")"
  bench="$(realpath "$bench")"
}

# The rig's stevedore.toml: fault-test leases and the `mark` operation,
# whose runs append `start UUID` / `end UUID` to marks (the summary counts
# re-executions and overlapping runs from it).
write_config() {
  cat >"$dir/stevedore.toml" <<EOF
[relay]
redispatch_after = "15s"

[worker]
concurrency = 16
lease = "8s"
heartbeat = "1s"
kill_grace = "1s"
shutdown_deadline = "2s"

[http]
max_websockets_per_user = 1000

[[operation]]
object = "service"
verb = "mark"
exec = ["sh", "-c", "trap 'echo \"end \$STEVEDORE_ACTION_UUID\" >> $dir/marks; exit 143' TERM; echo \"start \$STEVEDORE_ACTION_UUID\" >> $dir/marks; sleep 0.2; echo \"end \$STEVEDORE_ACTION_UUID\" >> $dir/marks; echo marked"]

[[operation]]
object = "service"
verb = "noop"
handler = "noop"
EOF
}

write_haproxy() {
  cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 4096
  log stdout format raw local0 warning

defaults
  mode http
  log global
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h
  # A request whose connection was refused goes to the other process.
  retries 3
  option redispatch
  # Only when the connection failed: a request that reached a process that
  # then died may have been committed, and sending it again would submit
  # the action twice.
  retry-on conn-failure

frontend stevedore
  bind 127.0.0.1:$lb_port
  acl websocket hdr(Upgrade) -i websocket
  use_backend stream if websocket
  default_backend api

backend api
  balance roundrobin
  option httpchk GET /readyz
  server api-1 127.0.0.1:$((base + 81)) check inter 500 fall 2 rise 2
  server api-2 127.0.0.1:$((base + 82)) check inter 500 fall 2 rise 2

backend stream
  balance leastconn
  option httpchk GET /readyz
  server stream-1 127.0.0.1:$((base + 91)) check inter 500 fall 2 rise 2
  server stream-2 127.0.0.1:$((base + 92)) check inter 500 fall 2 rise 2
EOF
}

# The command line of a process of the rig, by name.
command_of() {
  case "$1" in
    api-1) echo "api --listen 127.0.0.1:$((base + 81))" ;;
    api-2) echo "api --listen 127.0.0.1:$((base + 82))" ;;
    stream-1) echo "stream --listen 127.0.0.1:$((base + 91))" ;;
    stream-2) echo "stream --listen 127.0.0.1:$((base + 92))" ;;
    worker-1 | worker-2 | worker-3) echo "worker" ;;
    *) die "no process named $1 (api-1, api-2, stream-1, stream-2, worker-1..3)" ;;
  esac
}
processes=(api-1 api-2 stream-1 stream-2 worker-1 worker-2 worker-3)

# Whether pid file $1 names a running process whose command line holds $2
# (a stale pid file may name another process by now).
owns() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

alive() { owns "$dir/$1.pid" "$(cat "$dir/stevedore-bin" 2>/dev/null || echo stevedore)"; }

start_process() {
  local name="$1" args
  args="$(command_of "$name")"
  alive "$name" && return 0
  # shellcheck disable=SC1091
  source "$dir/env"
  # shellcheck disable=SC2086
  setsid "$(cat "$dir/stevedore-bin")" $args >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

kill_process() {
  if alive "$1"; then
    kill -9 "$(cat "$dir/$1.pid")" 2>/dev/null || true
  fi
  rm -f "$dir/$1.pid"
}

wait_ready() {
  local name="$1" port
  case "$name" in
    api-1) port=$((base + 81)) ;; api-2) port=$((base + 82)) ;;
    stream-1) port=$((base + 91)) ;; stream-2) port=$((base + 92)) ;;
    *) return 0 ;;
  esac
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    alive "$name" || die "$name exited; see $dir/$name.log"
    sleep 0.2
  done
  die "$name not ready on $port; see $dir/$name.log"
}

# The node (1..3) that leads job queue 0.
leader() {
  local l
  l="$(leaders | awk '$1 == "stevedore.jobs" { print $2 }')"
  [ -n "$l" ] && [ "$l" != "?" ] && echo "$l"
}

# Each quorum queue with the node (1..3) that leads it, a line each.
leaders() {
  local i out map=""
  for i in "${nodes[@]}"; do map+="$(node_name "$i")=$i "; done
  for i in "${nodes[@]}"; do
    if out="$(ctl "$i" "list_queues -q name type leader" 2>/dev/null)"; then
      awk -v map="$map" '
        BEGIN { n = split(map, kv, " "); for (k = 1; k <= n; k++) { split(kv[k], p, "="); node[p[1]] = p[2] } }
        $2 == "quorum" { print $1, ($3 in node ? node[$3] : "?") }' <<<"$out" | sort
      return 0
    fi
  done
  return 1
}

cmd_up() {
  local job_queues=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --job-queues) job_queues="${2:?}" && shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  ensure_packages
  binaries
  cmd_down >/dev/null 2>&1 || true
  mkdir -p "$dir"
  : >"$dir/marks"
  chmod 666 "$dir/marks"
  echo "$stevedore" >"$dir/stevedore-bin"
  echo "$bench" >"$dir/bench-bin"
  write_config
  write_haproxy

  log "RabbitMQ: three nodes on $(node_port 1)-$(node_port 3)"
  scripts/rabbitmq-node.sh up "$(node_port 1)" >/dev/null
  scripts/rabbitmq-node.sh up "$(node_port 2)" --join "$(node_name 1)" >/dev/null
  scripts/rabbitmq-node.sh up "$(node_port 3)" --join "$(node_name 1)" >/dev/null

  log "PostgreSQL: database $db"
  psql_pg -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  cat >"$dir/env" <<EOF
export STEVEDORE_CONFIG='$dir/stevedore.toml'
export STEVEDORE_DATABASE_URL='$pg/$db'
export STEVEDORE_AMQP_URL='$(amqp_urls)'
export STEVEDORE_BROKER_JOB_QUEUES='$job_queues'
export STEVEDORE_TRUSTED_PROXIES='127.0.0.1/32'
export STEVEDORE_LOG_FORMAT=json
export RUST_LOG="\${RUST_LOG:-info}"
EOF
  # shellcheck disable=SC1091
  source "$dir/env"
  "$stevedore" migrate >"$dir/migrate.log" 2>&1 || die "migrate failed; see $dir/migrate.log"
  # The rig user's API key: readable by root only.
  (
    umask 077
    STEVEDORE_URL="http://127.0.0.1:$lb_port" "$stevedore" user create rig >"$dir/user" 2>>"$dir/migrate.log"
  )

  log "Stevedore: ${processes[*]} (job queues: $job_queues)"
  for p in "${processes[@]}"; do start_process "$p"; done
  for p in "${processes[@]}"; do wait_ready "$p"; done

  log "HAProxy on 127.0.0.1:$lb_port"
  haproxy -D -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid" 2>>"$dir/haproxy.log" ||
    die "HAProxy did not start; see $dir/haproxy.log"
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$lb_port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$lb_port/readyz" >/dev/null || die "HAProxy does not answer; see $dir/haproxy.log"
  log "job queue leaders (queue node): $(leaders | paste -sd, -)"
  cat "$dir/user"
}

cmd_down() {
  local p i
  if [ -d "$dir" ]; then
    if owns "$dir/haproxy.pid" "$dir/haproxy.cfg"; then kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true; fi
    if owns "$dir/driver.pid" " drive "; then kill "$(cat "$dir/driver.pid")" 2>/dev/null || true; fi
    for p in "${processes[@]}"; do kill_process "$p"; done
  fi
  for i in "${nodes[@]}"; do scripts/rabbitmq-node.sh down "$(node_port "$i")" 2>/dev/null || true; done
  psql_pg -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  rm -rf "$dir"
  log "rig on base $base is down"
}

cmd_status() {
  local p i
  [ -d "$dir" ] || die "no rig on base $base (scripts/cluster.sh up)"
  for p in "${processes[@]}"; do
    if alive "$p"; then echo "$p: running (pid $(cat "$dir/$p.pid"))"; else echo "$p: stopped"; fi
  done
  for i in "${nodes[@]}"; do
    if ctl "$i" "status" >/dev/null 2>&1; then echo "rabbitmq-$i: running"; else echo "rabbitmq-$i: stopped"; fi
  done
  echo "job queue leaders (queue node):"
  leaders || echo "(no node answers)"
}

# Runs the traffic driver (`bench drive`) against the balancer; in a
# subshell only (it ends with exec).
drive() {
  local key user url
  url="http://127.0.0.1:$lb_port"
  user="$(sed -n 's/^export STEVEDORE_USER=//p' "$dir/user" | tr -d "'\"")"
  key="$(sed -n 's/^export STEVEDORE_APIKEY=//p' "$dir/user" | tr -d "'\"")"
  [ -n "$user" ] && [ -n "$key" ] || die "no credentials in $dir/user"
  # shellcheck disable=SC1091
  source "$dir/env"
  # exec: the background job's pid is the driver's own (faults and down kill it).
  STEVEDORE_APIKEY="$key" exec "$(cat "$dir/bench-bin")" drive --url "$url" --user "$user" \
    --database-url "$STEVEDORE_DATABASE_URL" --rig-dir "$dir" "$@"
}

cmd_faults() {
  local step=6
  while [ $# -gt 0 ]; do
    case "$1" in
      --step) step="${2:?}" && shift 2 ;;
      *) break ;;
    esac
  done
  [ -d "$dir" ] || die "no rig on base $base (scripts/cluster.sh up)"
  : >"$dir/marks"
  rm -f "$dir/stop" "$dir/stop.started"
  # The driver submits until the faults are over (at most an hour).
  drive --seconds 3600 --stop-file "$dir/stop" --verb mark "$@" >"$dir/summary.json" &
  local driver=$!
  echo "$driver" >"$dir/driver.pid"
  # However this ends, the driver stops submitting.
  trap 'touch "$dir/stop"; kill '"$driver"' 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do
    [ -f "$dir/stop.started" ] && break
    kill -0 "$driver" 2>/dev/null || die "the driver failed; see above"
    sleep 0.1
  done
  local l
  sleep "$step"
  l="$(leader)" || die "cannot tell the job queue's leader"
  log "fault: stopping RabbitMQ node $l (leads the job queue)"
  scripts/rabbitmq-node.sh stop "$(node_port "$l")" 2>/dev/null
  sleep "$step"
  log "fault: starting RabbitMQ node $l again"
  scripts/rabbitmq-node.sh start "$(node_port "$l")" >/dev/null 2>&1
  log "job queue leader now: node $(leader || echo '?')"
  sleep "$step"
  log "fault: kill -9 api-1"
  kill_process api-1
  sleep "$step"
  start_process api-1
  log "fault: kill -9 stream-1"
  kill_process stream-1
  sleep "$step"
  start_process stream-1
  log "fault: kill -9 worker-1 and worker-2"
  kill_process worker-1
  kill_process worker-2
  sleep "$step"
  start_process worker-1
  start_process worker-2
  sleep "$step"
  log "faults done; the driver stops submitting and settles"
  touch "$dir/stop"
  wait "$driver" || die "the driver failed; see above"
  trap - EXIT
  tail -n 1 "$dir/summary.json"
}

cmd_load() {
  [ -d "$dir" ] || die "no rig on base $base (scripts/cluster.sh up)"
  drive "$@" | tail -n 1
}

[ $# -ge 1 ] || {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
cmd="$1"
shift
case "$cmd" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    ;;
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  faults) cmd_faults "$@" ;;
  load) cmd_load "$@" ;;
  kill) kill_process "${1:?kill NAME}" ;;
  restart)
    kill_process "${1:?restart NAME}"
    start_process "$1"
    wait_ready "$1"
    ;;
  node-stop) scripts/rabbitmq-node.sh stop "$(node_port "${1:?node-stop 1..3}")" ;;
  node-start) scripts/rabbitmq-node.sh start "$(node_port "${1:?node-start 1..3}")" ;;
  leader) leader ;;
  leaders) leaders ;;
  *) die "unknown command $cmd (--help)" ;;
esac
