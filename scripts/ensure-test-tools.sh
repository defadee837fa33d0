#!/usr/bin/env bash
# Tools some tests run as real processes, beyond the brokers (ensure-services.sh):
# Prometheus Alertmanager for the alertmanager channel, openssl for the e-mail TLS test's
# certificate. Installed with apt-get when missing and running as root; otherwise the tests
# that need them are skipped, naming the missing binary.
set -euo pipefail

say() { printf 'test tools: %s\n' "$*" >&2; }

missing=()
[[ -x /usr/bin/prometheus-alertmanager ]] || missing+=(prometheus-alertmanager)
command -v openssl >/dev/null || missing+=(openssl)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        # without systemd as PID 1 (CI) the package's own Alertmanager service is not
        # started; the tests start their own on a free port anyway
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing ${missing[*]} (Debian: sudo apt-get install ${missing[*]}):" \
            "the tests that need them will be skipped"
    fi
fi
