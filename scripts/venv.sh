#!/usr/bin/env bash
# Create the virtualenv and install sensord (editable) with its dev tools.
set -euo pipefail
PY="${1:-python3}"
VENV="${2:-.venv}"
if ! command -v "$PY" >/dev/null; then
    echo "venv: $PY not found: install Python 3.11 or newer" >&2
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "venv: sensord needs Python >= 3.11 ($PY is $("$PY" -V 2>&1))" >&2
    exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "venv: creating $VENV" >&2
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >/dev/null
            "$PY" -m venv "$VENV"
        else
            echo "venv: '$PY -m venv' failed: install python3-venv" >&2
            exit 1
        fi
    fi
fi
echo "venv: installing sensord and its dev tools into $VENV" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
