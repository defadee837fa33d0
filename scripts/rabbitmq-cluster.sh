#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster from the installed rabbitmq-server, to try sensord's
# scale-out on one machine (docs/scale-out.md). Never touches the machine's own RabbitMQ:
# private node names, ports, data dirs, cookie and epmd (sensord/testing/rabbitmq.py).
#
#   scripts/rabbitmq-cluster.sh start [--nodes 3] [--base-port 5680] [--tls]
#   scripts/rabbitmq-cluster.sh status
#   scripts/rabbitmq-cluster.sh stop
#
# Node i listens on 127.0.0.1:BASE+i (5681, 5682, 5683), with --tls also on BASE+100+i
# (a throw-away CA in the state directory's tls/). State and data: $SENSORD_CLUSTER_DIR,
# default ${TMPDIR:-/tmp}/sensord-rabbitmq-cluster; `stop` stops every process `start`
# started (by PID) and removes the nodes' data: each start is a fresh cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z $PY ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
cmd="${1:-}"
case "$cmd" in
start | stop | status) shift ;;
*)
    echo "usage: $0 start|stop|status [--nodes N] [--base-port P] [--tls]" >&2
    exit 2
    ;;
esac
DIR="${SENSORD_CLUSTER_DIR:-${TMPDIR:-/tmp}/sensord-rabbitmq-cluster}"
cd "$ROOT"
exec env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m sensord.testing.rabbitmq "$cmd" --dir "$DIR" "$@"
