#!/usr/bin/env bash
# `make run`: sensord with the example config and rules, fed by the heatwave simulator.
# Alerts are printed by the console channel; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

"$BIN/sensord" check -c sensord.toml
"$BIN/sensord" run -c sensord.toml &
SENSORD=$!
SIM=""
cleanup() {
    trap - INT TERM EXIT
    [[ -n "$SIM" ]] && kill -TERM "$SIM" 2>/dev/null || true
    kill -TERM "$SENSORD" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

sleep 2
cat >&2 <<'MSG'
------------------------------------------------------------------------------------
 sensord is running (metrics: http://127.0.0.1:9300/metrics), fed by sensord-sim.
 Heatwave scenario: plant-1/t-1 and t-2 climb above 80 °C a few seconds in; the
 critical-temperature rule (above 80 for 10 s) fires, then resolves when they cool
 below 75 — each notification is one FIRING/RESOLVED line below. Ctrl-C to stop.
------------------------------------------------------------------------------------
MSG
"$BIN/sensord-sim" --mqtt mqtt://127.0.0.1:1883 --sites 2 --sensors 4 --rate 1 \
    --scenario heatwave --quiet &
SIM=$!
wait "$SENSORD"
