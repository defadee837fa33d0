#!/usr/bin/env bash
# Tools some tests run as real processes, beyond the brokers (ensure-services.sh):
# Prometheus Alertmanager for the alertmanager channel. Installed with apt-get when missing
# and running as root; otherwise the tests that need it are skipped, naming the binary.
set -euo pipefail

say() { printf 'test tools: %s\n' "$*" >&2; }

ALERTMANAGER=/usr/bin/prometheus-alertmanager
if [[ ! -x $ALERTMANAGER ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing prometheus-alertmanager"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        # policy-rc.d or no systemd: the package's own service is not started, and the
        # tests start their own Alertmanager on a free port anyway
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
    else
        say "missing $ALERTMANAGER (Debian: sudo apt-get install prometheus-alertmanager):" \
            "the Alertmanager test will be skipped"
    fi
fi
