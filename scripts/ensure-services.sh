#!/usr/bin/env bash
# Make sure Mosquitto (127.0.0.1:1883) and RabbitMQ (127.0.0.1:5672) are reachable:
# start them when installed, install them with apt-get when missing and running as root,
# otherwise stop with a message naming what is missing.
set -euo pipefail

MQTT_PORT="${SENSORD_TEST_MQTT_PORT:-1883}"
AMQP_PORT="${SENSORD_TEST_AMQP_PORT:-5672}"

say() { printf 'services: %s\n' "$*" >&2; }

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, seconds, name
    local i
    for ((i = 0; i < $2 * 4; i++)); do
        reachable "$1" && return 0
        sleep 0.25
    done
    say "$3 did not open 127.0.0.1:$1 within $2 s"
    return 1
}

APT_UPDATED=0
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "missing: $* — install it (Debian/Ubuntu: sudo apt-get install $*) and retry"
        exit 1
    fi
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
        APT_UPDATED=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# --- Mosquitto, and its command-line clients (benchmarks and tests use mosquitto_sub/pub)
if ! command -v mosquitto_sub >/dev/null || ! command -v mosquitto_pub >/dev/null; then
    apt_install mosquitto-clients
fi
if ! reachable "$MQTT_PORT"; then
    command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || apt_install mosquitto
    MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    say "starting Mosquitto"
    if [[ -f /etc/mosquitto/mosquitto.conf ]]; then
        "$MOSQ" -d -c /etc/mosquitto/mosquitto.conf
    else
        "$MOSQ" -d -p "$MQTT_PORT"
    fi
    wait_port "$MQTT_PORT" 15 Mosquitto
fi

# --- RabbitMQ
if ! reachable "$AMQP_PORT"; then
    command -v rabbitmq-server >/dev/null || [[ -x /usr/sbin/rabbitmq-server ]] \
        || apt_install rabbitmq-server
    RMQ=$(command -v rabbitmq-server || echo /usr/sbin/rabbitmq-server)
    say "starting RabbitMQ (this can take ~20 s)"
    "$RMQ" -detached
    wait_port "$AMQP_PORT" 90 RabbitMQ
fi
say "Mosquitto 127.0.0.1:$MQTT_PORT and RabbitMQ 127.0.0.1:$AMQP_PORT reachable"
