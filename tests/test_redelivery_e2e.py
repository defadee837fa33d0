"""A QoS 1 redelivery that reaches a restarted sensord (found while designing the chaos
suite's accounting, docs/chaos.md): the duplicate guard that skips redeliveries (per
sensor, newest reading time) lived only in memory, and a resolved alert keeps no rule
state, so a reading processed but not yet acknowledged before a SIGKILL, older than its
alert's resolution, fired a new episode after the restart. The state file now remembers,
per sensor, the newest reading that changed an alert, and the guard starts from it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sensord.app import Service
from sensord.events import Reading
from sensord.ops.config import load_settings
from sensord.ops.metrics import Metrics
from sensord.rules import load_rules
from sensord.state.store import StateStore
from tests.support import MqttPublisher, SensordProcess, WebhookSink, running, wait_for

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
"""


@pytest.mark.e2e
async def test_a_replayed_reading_older_than_the_resolution_fires_nothing_after_a_restart(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    t1 = int(time.time() * 1000) - 2000
    breach = f'{{"value": 90, "ts": {t1}}}'
    async with running(sensord):
        mqtt_pub.publish(topic, breach)
        mqtt_pub.publish(topic, f'{{"value": 60, "ts": {t1 + 1000}}}')
        await wait_for(lambda: len(webhook.bodies) == 2)
        assert await sensord.stop() == 0
    async with running(sensord):
        mqtt_pub.publish(topic, breach)  # what the broker redelivers after a SIGKILL
        await sensord.wait_metric("sensord_mqtt_messages_total", 1)
        await asyncio.sleep(1.0)  # a new firing would reach the target meanwhile
        assert await sensord.stop() == 0
    assert [b["alerts"][0]["status"] for b in webhook.bodies] == ["firing", "resolved"]


def test_the_state_file_keeps_the_newest_changing_reading_per_sensor(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.db") as store:
        store.remember_reading(("sensors/p/t-1/temperature", "t-1", "temperature"), 5.0)
        store.remember_reading(("sensors/p/t-1/temperature", "t-1", "temperature"), 7.5)
        store.remember_reading(("sensors/p/t-2/temperature", "t-2", "temperature"), 6.0)
    with StateStore.open(tmp_path / "s.db") as store:
        assert store.remembered_readings() == {
            ("sensors/p/t-1/temperature", "t-1", "temperature"): 7.5,
            ("sensors/p/t-2/temperature", "t-2", "temperature"): 6.0,
        }


def test_the_guard_is_kept_in_the_transaction_that_records_the_alert(tmp_path: Path) -> None:
    """One commit holds the transition, its outbox row and the reading's time: a crash
    between two commits could otherwise leave a recorded alert whose reading, redelivered
    after the restart, is not recognised."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    config = tmp_path / "sensord.toml"
    config.write_text('[rules]\npaths = ["rules/*.yaml"]\n[http]\nlisten = ""\n')
    settings = load_settings(config, environ={})
    rules = load_rules(settings.rules.paths, settings.base_dir)
    service = Service(settings, rules, "edge", metrics=Metrics(CollectorRegistry()))
    statements: list[str] = []
    service.db.set_trace_callback(statements.append)
    topic = "sensors/p/t-1/temperature"
    now = time.time()
    hot = Reading(site="p", device="t-1", kind="temperature", value=95, ts=now - 1)
    assert service.pipeline is not None
    service.pipeline.on_reading(hot, now, (topic, hot.device, hot.kind))
    service.pipeline.end_batch()  # the bridge's call after each read batch
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert any("reading_guard" in s for s in statements)
    assert len(service.outbox) == 1
    # a reading stamped with the receive time (no topic passed) carries no identity
    statements.clear()
    cool = Reading(site="p", device="t-2", kind="temperature", value=95, ts=now)
    service.pipeline.on_reading(cool, now, None)
    service.pipeline.end_batch()
    assert not any("reading_guard" in s for s in statements)
    assert service.state is not None
    assert service.state.remembered_readings() == {(topic, "t-1", "temperature"): now - 1}
    service.db.close()
