"""Structured logs: JSON lines off a terminal, journald priorities, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sensord.ops.logs import setup_logging
from tests.support import MqttPublisher, SensordProcess, running, wait_for


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_with_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("info", "auto", out)  # not a terminal: JSON
    logging.getLogger("sensord.test").warning("refused %s", "x", extra={"reason": "schema"})
    logging.getLogger("sensord.test").debug("not shown at info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["level"] == "warning"
    assert event["logger"] == "sensord.test"
    assert event["msg"] == "refused x"
    assert event["reason"] == "schema"
    assert event["ts"].endswith("Z")


@pytest.mark.usefixtures("restore_logging")
def test_journald_gets_syslog_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    setup_logging("debug", "json", out)
    log = logging.getLogger("sensord.test")
    log.error("e")
    log.info("i")
    log.debug("d")
    assert [line[:3] for line in out.getvalue().splitlines()] == ["<3>", "<6>", "<7>"]


@pytest.mark.usefixtures("restore_logging")
def test_text_format_for_people() -> None:
    out = io.StringIO()
    setup_logging("info", "text", out)
    logging.getLogger("sensord.test").info("hello")
    assert out.getvalue().rstrip().endswith("INFO    sensord.test: hello")


@pytest.mark.e2e
async def test_no_secret_reaches_the_logs(sensord: SensordProcess, mqtt_pub: MqttPublisher) -> None:
    url_secret, file_secret = "url-s3cret-Zq9", "file-s3cret-Xw4"
    (sensord.workdir / "mqtt-password").write_text(file_secret + "\n")
    sensord.rules_yaml = "rules:\n  - {name: hot, above: 80, severity: critical}\n"
    sensord.channels = [{"name": "console", "type": "console"}]
    sensord.extra_toml = ""
    sensord.write_config()
    cfg = sensord.config_path.read_text()
    cfg = cfg.replace(
        'url = "mqtt://127.0.0.1:1883"', f'url = "mqtt://sensord:{url_secret}@127.0.0.1:1883"'
    )
    cfg = cfg.replace(
        "persistent_session = false", 'persistent_session = false\npassword_file = "mqtt-password"'
    )
    sensord.config_override = cfg
    async with running(sensord):
        mqtt_pub.publish(f"{sensord.topic_root}/p/d/temperature", b"not a number")
        mqtt_pub.publish(f"{sensord.topic_root}/p/d/temperature", b"99")
        await wait_for(lambda: "FIRING" in sensord.stdout())
        assert await sensord.stop() == 0
    logs = sensord.stderr()
    assert "connected to MQTT mqtt://sensord:***@127.0.0.1:1883" in logs
    for secret in (url_secret, file_secret, "guest:guest"):
        assert secret not in logs
        assert secret not in sensord.stdout()
    for line in logs.splitlines():
        json.loads(line)  # every line is one JSON event
