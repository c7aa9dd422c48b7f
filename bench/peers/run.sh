#!/usr/bin/env bash
# Runs the Celery peer of `bench compare` (celery_noop.py) on the local
# RabbitMQ. The first run creates a virtualenv under target/ and installs
# Celery from PyPI; later runs reuse it. Arguments go to celery_noop.py.
#
#   bench/peers/run.sh --tasks 10000 --concurrency 2
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${BENCH_PEER_VENV:-$root/target/bench-peers-venv}"
if ! "$venv/bin/python" -c 'import celery' >/dev/null 2>&1; then
  echo "creating $venv and installing celery" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'celery>=5.5,<6'
fi
cd "$here"
exec "$venv/bin/python" celery_noop.py "$@"
