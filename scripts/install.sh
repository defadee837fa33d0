#!/usr/bin/env bash
# Install sensord on an edge host:
#   PREFIX (default /opt/sensord): its own venv in PREFIX/venv, docs in PREFIX/share/doc
#   SYSCONFDIR (default /etc): SYSCONFDIR/sensord/sensord.toml and rules/, written from the
#     examples only when absent: a user's config is never overwritten
#   UNITDIR (default /etc/systemd/system): the systemd unit
#   DESTDIR: stage everything under this root (packaging, tests)
#   INSTALL_VENV=0: refresh config (if absent), rules (if absent) and the unit only
# `scripts/install.sh uninstall [--purge]` reverses it; config and state stay unless --purge.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${PREFIX:-/opt/sensord}"
SYSCONFDIR="${SYSCONFDIR:-/etc}"
UNITDIR="${UNITDIR:-/etc/systemd/system}"
STATEDIR="${STATEDIR:-/var/lib/sensord}"
DESTDIR="${DESTDIR:-}"
PYTHON="${PYTHON:-python3}"
ROOT="$DESTDIR$PREFIX"
CONF="$DESTDIR$SYSCONFDIR/sensord"
UNIT="$DESTDIR$UNITDIR/sensord.service"

say() { printf 'install: %s\n' "$*" >&2; }

systemd_reload() {
    if [[ -z "$DESTDIR" && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        say "systemctl daemon-reload"
        systemctl daemon-reload
    fi
}

if [[ "${1:-install}" == "uninstall" ]]; then
    if [[ -z "$DESTDIR" && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now sensord.service 2>/dev/null || true
    fi
    rm -f "$UNIT"
    rm -rf "$ROOT"
    say "removed $ROOT and $UNIT"
    if [[ "${2:-}" == "--purge" ]]; then
        rm -rf "$CONF" "$DESTDIR$STATEDIR"
        say "purged $CONF and $DESTDIR$STATEDIR"
    else
        say "kept $CONF and $DESTDIR$STATEDIR (uninstall --purge removes them)"
    fi
    systemd_reload
    exit 0
fi

if [[ "${INSTALL_VENV:-1}" != 0 ]]; then
    say "venv in $ROOT/venv (pip install, about a minute)"
    mkdir -p "$ROOT"
    "$PYTHON" -m venv "$ROOT/venv"
    "$ROOT/venv/bin/python" -m pip install -q --disable-pip-version-check "$SRC" \
        2> >(grep -v "is ignored" >&2 || true)
    if [[ -n "$DESTDIR" ]]; then
        # venv scripts carry absolute paths: make them point where the tree will live
        grep -rlI -- "$DESTDIR" "$ROOT/venv/bin" | while read -r f; do
            sed -i "s#$DESTDIR##g" "$f"
        done
    fi
fi
mkdir -p "$ROOT/share/doc/sensord"
cp -r "$SRC/README.md" "$SRC/docs" "$ROOT/share/doc/sensord/"

mkdir -p "$CONF"
if [[ -e "$CONF/sensord.toml" ]]; then
    say "kept existing $CONF/sensord.toml"
else
    cp "$SRC/sensord.toml" "$CONF/sensord.toml"
    say "wrote $CONF/sensord.toml"
fi
if [[ -e "$CONF/rules" ]]; then
    say "kept existing $CONF/rules"
else
    mkdir -p "$CONF/rules"
    cp "$SRC"/rules/*.yaml "$CONF/rules/"
    say "wrote $CONF/rules"
fi
mkdir -p "$CONF/credentials"
chmod 0700 "$CONF/credentials"
for cred in mqtt-password amqp-password http-token webhook-secret; do
    [[ -e "$CONF/credentials/$cred" ]] || install -m 0600 /dev/null "$CONF/credentials/$cred"
done

mkdir -p "$(dirname "$UNIT")"
sed -e "s#@PREFIX@#$PREFIX#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" \
    "$SRC/systemd/sensord.service" > "$UNIT"
say "wrote $UNIT"
systemd_reload
say "done: edit $SYSCONFDIR/sensord/sensord.toml, then: systemctl enable --now sensord"
