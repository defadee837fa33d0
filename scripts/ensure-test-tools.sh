#!/usr/bin/env bash
# Tools some tests run as real processes, beyond the brokers (ensure-services.sh):
# promtool (Debian prometheus) checks docs/prometheus rules, systemd-analyze checks the unit,
# Prometheus Alertmanager for the alertmanager channel, openssl for TLS test certificates,
# Chromium (+ chromium-driver) for the status page's browser tests (Playwright drives
# /usr/bin/chromium: it never downloads a browser).
# Installed with apt-get when missing and running as root; otherwise the tests that need
# them are skipped, naming the missing binary.
set -euo pipefail

say() { printf 'test tools: %s\n' "$*" >&2; }

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[[ -x /usr/bin/prometheus-alertmanager ]] || missing+=(prometheus-alertmanager)
command -v openssl >/dev/null || missing+=(openssl)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
        # without systemd as PID 1 (CI) the packages' own services are not started;
        # the tests start their own processes on free ports anyway
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        say "missing ${missing[*]} (Debian: sudo apt-get install ${missing[*]}):" \
            "the tests that need them will be skipped"
    fi
fi
