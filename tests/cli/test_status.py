"""`sensord status`, /api/v1/status and /readyz against a running sensord."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from sensord.cli.status import exit_code, render_status
from tests.support import (
    MqttPublisher,
    SensordProcess,
    free_port,
    running,
    wait_for,
)

RULES = "rules:\n  - {name: hot, match: {kind: temperature}, above: 80, severity: critical}\n"


async def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sensord", "status", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.e2e
async def test_status_summarises_a_running_sensord(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "console", "type": "console"}]
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    async with running(sensord):
        mqtt_pub.publish(topic, b"21.5")
        mqtt_pub.publish(topic, b"garbage")
        mqtt_pub.publish(topic, b"95")
        await wait_for(lambda: "FIRING" in sensord.stdout())
        result = await _status("-c", str(sensord.config_path))
        as_json = await _status("--url", sensord.base_url, "--json")
        assert await sensord.stop() == 0
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "status: ready" in out
    assert "2 total" in out  # readings
    assert "not_json 1" in out
    assert "critical 1" in out  # firing
    assert "channels  console" in out
    st = json.loads(as_json.stdout)
    assert st["readings_total"] == 2
    assert st["alerts_active"] == {"critical": 1}
    assert st["mqtt"]["connected"] is True


@pytest.mark.e2e
async def test_rabbitmq_down_is_degraded_not_dead(sensord: SensordProcess) -> None:
    sensord.amqp_through_proxy()  # never opened
    sensord.rules_yaml = RULES
    async with running(sensord, ready=False):
        await sensord.wait_started()
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        code, body = await sensord.get("/readyz")
        result = await _status("--url", sensord.base_url)
        assert await sensord.stop() == 0
    assert code == 200
    assert json.loads(body)["status"] == "degraded"
    assert result.returncode == 1
    assert "RabbitMQ unreachable" in result.stdout


async def test_status_of_no_sensord_exits_2() -> None:
    result = await _status("--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "cannot reach sensord" in result.stderr


def test_render_and_exit_codes() -> None:
    st = {
        "status": "not ready",
        "reasons": ["MQTT not connected"],
        "version": "0.1.0",
        "role": "edge",
        "uptime_s": 3725.0,
        "mqtt": {"url": "mqtt://h:1883", "connected": False},
        "amqp": {"prefix": "p", "connected": True},
        "readings_total": 1234567,
        "readings_per_s": 52.5,
        "invalid_total": {"schema": 2},
        "alerts_active": {},
        "alerts_pending_publish": 0,
        "channels": [],
    }
    text = render_status(st)
    assert "up 1h 2m" in text
    assert "status: not ready (MQTT not connected)" in text
    assert "1,234,567 total, 52.5/s" in text
    assert "DOWN" in text
    assert exit_code(st) == 2
    assert exit_code({**st, "status": "degraded"}) == 1
    assert exit_code({**st, "status": "ready"}) == 0


def test_render_names_the_rabbitmq_node_of_a_cluster() -> None:
    st = {
        "status": "ready",
        "reasons": [],
        "version": "0.1.0",
        "role": "edge",
        "uptime_s": 5.0,
        "mqtt": {"url": "mqtt://h:1883", "connected": True},
        "amqp": {
            "prefix": "p",
            "connected": True,
            "node": "rmq2:5671",
            "nodes": {"publish": "rmq2:5671", "consume": "rmq1:5671"},
            "cluster": ["rmq1:5671", "rmq2:5671", "rmq3:5671"],
        },
        "readings_total": 1,
        "readings_per_s": 0.0,
        "invalid_total": {},
        "alerts_active": {},
        "alerts_pending_publish": 0,
        "channels": [],
    }
    assert "prefix p, node rmq2:5671 of 3" in render_status(st)
