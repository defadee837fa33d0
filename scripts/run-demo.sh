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
    # shellcheck disable=SC2086
    if [[ -n "$SIM" ]]; then kill -TERM $SIM 2>/dev/null || true; fi
    kill -TERM "$SENSORD" 2>/dev/null || true
    wait 2>/dev/null || true
}
# Ctrl-C is how the demo ends: stop both cleanly and exit 0.
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

sleep 2
cat >&2 <<'MSG'
------------------------------------------------------------------------------------
 sensord is running (metrics: http://127.0.0.1:9300/metrics), fed by sensord-sim.
 Heatwave scenario: plant-1/t-1 and t-2 climb above 80 °C a few seconds in; the
 critical-temperature rule (above 80 for 10 s) fires, then resolves when they cool
 below 75 — each notification is one FIRING/RESOLVED line below. Two simulated
 Zigbee2MQTT thermometers (source "zigbee", site home) run hot the same way and fire
 the same rule. Sources: .venv/bin/sensord sources --url http://127.0.0.1:9300.
 Ctrl-C to stop.
------------------------------------------------------------------------------------
MSG
# SIM_ARGS: extra simulator flags (the quick-start test isolates its topics with them)
# shellcheck disable=SC2086
"$BIN/sensord-sim" --mqtt mqtt://127.0.0.1:1883 --sites 2 --sensors 4 --rate 1 \
    --scenario heatwave --quiet ${SIM_ARGS:-} &
SIM=$!
# two Zigbee2MQTT thermometers (temperature, humidity, battery, availability) in the same
# heatwave: the same rule fires for home/plant-1-dev-1 and -2, read from zigbee2mqtt/…
# shellcheck disable=SC2086
"$BIN/sensord-sim" --mqtt mqtt://127.0.0.1:1883 --format zigbee2mqtt --sensors 2 \
    --kinds temperature,humidity --rate 1 --scenario heatwave --quiet ${SIM_Z2M_ARGS:-} &
SIM="$SIM $!"
wait "$SENSORD"
