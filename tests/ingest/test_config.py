"""The `[mqtt]` TLS/session keys and the `[ingest]` section: validated with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.errors import ConfigError
from sensord.ops.config import load_settings


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    return str(info.value)


def test_tls_session_and_ingest_keys(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("x")
    settings = load_settings(
        _write(
            tmp_path,
            """
[mqtt]
url = "mqtts://broker.example"
ca_file = "ca.pem"
cert_file = "c.pem"
key_file = "c.key"
protocol = "5"
session_expiry = "2h"
topic_template = ["a/{site}/{device}/{kind}", "b/{site}/{zone}/{device}/{kind}"]

[ingest]
max_clock_skew = "30s"
units = {temperature = "C", pressure = "hPa"}
""",
        ),
        environ={},
    )
    m = settings.mqtt
    assert (m.tls, m.port, m.protocol, m.session_expiry) == (True, 8883, "5", 7200.0)
    assert m.ca_file == tmp_path / "ca.pem"  # resolved against the config's directory
    assert m.templates == ["a/{site}/{device}/{kind}", "b/{site}/{zone}/{device}/{kind}"]
    assert settings.ingest.max_clock_skew == 30.0
    assert settings.ingest.units == {"temperature": "C", "pressure": "hPa"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[mqtt]\nurl = "mqtts://h"\ncert_file = "c.pem"\n', "cert_file and key_file go together"),
        ('[mqtt]\nurl = "mqtt://h"\ntls_insecure = true\n', "need an mqtts:// url"),
        ('[mqtt]\nurl = "mqtts://h"\nca_file = "missing.pem"\n', "mqtt.ca_file: cannot read"),
        ('[mqtt]\nprotocol = "4"\n', "mqtt.protocol"),
        ('[mqtt]\ntopic_template = ["a/{site}/{kind}"]\n', "missing device"),
        ("[mqtt]\ntopic_template = []\n", "at least one topic template"),
        ('[ingest]\nunits = {temperature = "Rankine"}\n', "unknown unit 'Rankine'"),
        ('[ingest]\nmax_clock_skew = "0s"\n', "must be more than 0"),
        ("[ingest]\nfoo = 1\n", "ingest.foo: unknown key"),
    ],
)
def test_invalid(tmp_path: Path, text: str, message: str) -> None:
    assert message in error(tmp_path, text)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensord.toml"
    path.write_text(text)
    return path
