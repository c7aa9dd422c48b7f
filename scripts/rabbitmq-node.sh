#!/usr/bin/env bash
# Starts or stops an extra RabbitMQ node on this machine, beside (and never
# touching) the machine's own broker: its own node name, AMQP port,
# distribution port, config file and data/log directories, owned by the
# `rabbitmq` user. Benchmarks use it to compare broker settings in one run;
# scripts/cluster.sh joins three of them into a cluster.
#
#   scripts/rabbitmq-node.sh up 5673 [--busy-wait none|very_short|short|medium|long|very_long]
#                                    [--join stevedore-5672@localhost]
#   scripts/rabbitmq-node.sh stop 5673     # stop the node, keep its data
#   scripts/rabbitmq-node.sh start 5673    # start a stopped node on its data
#   scripts/rabbitmq-node.sh down 5673     # stop it and delete its data
#
# `up` (a fresh node) and `start` print the node's AMQP URL on their last
# line. `--join NODE` makes the fresh node join NODE's cluster. `--busy-wait` sets the
# Erlang schedulers' busy-wait threshold (`+sbwt`, `+sbwtdcpu`, `+sbwtdio`):
# RabbitMQ's own default is `none`; Erlang's is `medium`, which spins a
# scheduler for a while before it sleeps (docs/decisions.md, "RabbitMQ's
# schedulers on shared cores"). Idempotent: `up` on a running node restarts
# it with the given settings, `down` on a stopped one does nothing.
set -euo pipefail

usage() {
  echo "usage: $0 up PORT [--busy-wait THRESHOLD] [--join NODE] | start PORT | stop PORT | down PORT" >&2
  exit 2
}
[ $# -ge 2 ] || usage
cmd="$1" port="$2"
shift 2
case "$port" in '' | *[!0-9]*) usage ;; esac
[ "$port" != 5672 ] || {
  echo "port 5672 is the machine's own broker; pick another" >&2
  exit 2
}
busy_wait=none
join=
while [ $# -gt 0 ]; do
  case "$1" in
    --busy-wait)
      busy_wait="${2:?--busy-wait needs a value}"
      shift 2
      ;;
    --join)
      join="${2:?--join needs a node name}"
      shift 2
      ;;
    *) usage ;;
  esac
done
case "$busy_wait" in none | very_short | short | medium | long | very_long) ;; *) usage ;; esac

command -v rabbitmq-server >/dev/null || {
  echo "rabbitmq-server is not installed (scripts/test.sh installs it)" >&2
  exit 1
}
node="stevedore-$port@localhost"
base="${STEVEDORE_RABBIT_BASE:-/tmp/stevedore-rabbitmq}/$port"
ctl() { su -s /bin/sh rabbitmq -c "rabbitmqctl -n '$node' $*"; }

stop() {
  if ctl status >/dev/null 2>&1; then
    ctl stop >/dev/null 2>&1 || true
  fi
  # A node that did not answer may still hold its port.
  if [ -f "$base/pid" ]; then
    local pid
    pid="$(cat "$base/pid")"
    # Only if it is this node still (a stale pid file may name another process).
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$node"; then
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$base/pid"
  fi
}

# Starts the node on $base and waits until it runs.
launch() {
  su -s /bin/sh rabbitmq -c "env \
    RABBITMQ_NODENAME='$node' \
    RABBITMQ_CONFIG_FILE='$base/rabbitmq.conf' \
    RABBITMQ_ENABLED_PLUGINS_FILE='$base/enabled_plugins' \
    RABBITMQ_MNESIA_BASE='$base/mnesia' \
    RABBITMQ_LOG_BASE='$base/log' \
    RABBITMQ_PID_FILE='$base/pid' \
    RABBITMQ_DIST_PORT='$((port + 20000))' \
    RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD='$busy_wait' \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    rabbitmq-server -detached" >>"$base/log/start.out" 2>&1
  for _ in $(seq 1 60); do
    ctl await_startup >/dev/null 2>&1 && break
    sleep 1
  done
  ctl await_startup >/dev/null || {
    echo "node $node did not start; see $base/log" >&2
    exit 1
  }
  echo "node $node up on 127.0.0.1:$port (busy-wait $busy_wait)" >&2
}

case "$cmd" in
  down)
    stop
    rm -rf "$base"
    echo "node $node stopped" >&2
    ;;
  up)
    stop
    rm -rf "$base"
    mkdir -p "$base/mnesia" "$base/log"
    printf 'listeners.tcp.1 = 127.0.0.1:%s\nmanagement.tcp.port = %s\n' \
      "$port" "$((port + 10000))" >"$base/rabbitmq.conf"
    echo "[]." >"$base/enabled_plugins"
    echo "$busy_wait" >"$base/busy-wait"
    chown -R rabbitmq:rabbitmq "$base"
    # A node wiped here may have been a member before: the cluster must
    # forget it, or it refuses the join.
    if [ -n "$join" ]; then
      su -s /bin/sh rabbitmq -c "rabbitmqctl -n '$join' forget_cluster_node '$node'" >/dev/null 2>&1 || true
    fi
    launch
    if [ -n "$join" ]; then
      ctl stop_app >/dev/null
      ctl join_cluster "'$join'" >/dev/null
      ctl start_app >/dev/null
      ctl await_startup >/dev/null
      echo "node $node joined $join" >&2
    fi
    echo "amqp://guest:guest@127.0.0.1:$port/%2f"
    ;;
  start)
    [ -f "$base/rabbitmq.conf" ] || {
      echo "node $node has no data under $base: use up" >&2
      exit 1
    }
    busy_wait="$(cat "$base/busy-wait" 2>/dev/null || echo none)"
    ctl status >/dev/null 2>&1 || launch
    echo "amqp://guest:guest@127.0.0.1:$port/%2f"
    ;;
  stop)
    stop
    echo "node $node stopped (data kept under $base)" >&2
    ;;
  *) usage ;;
esac
