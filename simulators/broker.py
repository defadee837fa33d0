"""Where and how to connect: the ``--mqtt`` URL, credentials and TLS, as sensord takes them.

This module only connects to a broker. To start one (in the simulator's tests and
benchmarks) use ``sensord.testing.Mosquitto``: the shared test tool is the one part of
sensord besides the event/payload contract that simulators code may import (docs/testing.md).
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from simulators.errors import SimulatorError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


class BrokerUrlError(SimulatorError):
    """The ``--mqtt`` URL (or a TLS/credential file) cannot be used."""


class BrokerUnavailableError(SimulatorError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where and as whom to connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        # Shown in messages and progress, so the password never appears.
        user = ""
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            user += ":***@" if self.password is not None else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user[:pass]@]host[:port]``; raise `BrokerUrlError` naming the URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"invalid MQTT URL {url!r}: {exc}"
        raise BrokerUrlError(msg) from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        msg = f"invalid MQTT URL {url!r}: the scheme must be mqtt:// or mqtts://"
        raise BrokerUrlError(msg)
    if not parts.hostname:
        msg = f"invalid MQTT URL {url!r}: no host"
        raise BrokerUrlError(msg)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        msg = f"invalid MQTT URL {url!r}: unexpected path, query or fragment"
        raise BrokerUrlError(msg)
    tls = parts.scheme == "mqtts"
    unquote = urllib.parse.unquote
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
    )


def with_password_file(url: BrokerUrl, path: str) -> BrokerUrl:
    """The URL with its password read from ``path`` (first line), as sensord's *_file keys."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"--password-file {path}: {exc.strerror or exc}"
        raise BrokerUrlError(msg) from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        msg = f"--password-file {path}: empty"
        raise BrokerUrlError(msg)
    if url.username is None:
        msg = f"--password-file needs a user name in the URL (mqtt://USER@host), got {url}"
        raise BrokerUrlError(msg)
    return replace(url, password=lines[0])


def tls_context(
    url: BrokerUrl,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext | None:
    """The TLS context for ``mqtts://`` (None for ``mqtt://``); files are checked here."""
    if not url.tls:
        if ca_file or cert_file or key_file:
            msg = f"--ca-file, --cert-file and --key-file need an mqtts:// URL, got {url}"
            raise BrokerUrlError(msg)
        return None
    if bool(cert_file) != bool(key_file):
        msg = "--cert-file and --key-file go together (a client certificate and its key)"
        raise BrokerUrlError(msg)
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file and key_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        which = " ".join(f for f in (ca_file, cert_file, key_file) if f)
        msg = f"TLS files ({which}): {getattr(exc, 'strerror', None) or exc}"
        raise BrokerUrlError(msg) from None
    return context
