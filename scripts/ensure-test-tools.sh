#!/usr/bin/env bash
# Tools some tests need beyond the brokers. Installed with apt-get when missing and running
# as root; otherwise the tests that need them are skipped with a reason naming the tool.
set -euo pipefail
missing=()
command -v promtool >/dev/null || missing+=(prometheus)          # promtool check rules
command -v systemd-analyze >/dev/null || missing+=(systemd)      # unit security/verify
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "test-tools: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test-tools: missing ${missing[*]}: the tests that need them will be skipped" >&2
    fi
fi
