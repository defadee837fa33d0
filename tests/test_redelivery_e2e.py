"""A QoS 1 redelivery that reaches a restarted sensord: found by reasoning while writing the
chaos suite (docs/chaos.md), not by a run. The duplicate guard that skips redeliveries
(per sensor, newest reading time) lives in memory, and the rule state of a resolved alert is
not kept in the state file: a reading processed but not yet acknowledged before a SIGKILL,
older than the alert's resolution, is evaluated again after the restart."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support import MqttPublisher, SensordProcess, WebhookSink, running, wait_for

pytestmark = pytest.mark.e2e

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
"""


@pytest.mark.xfail(
    strict=True,
    reason="known gap: after a restart a redelivered reading older than a resolution fires a"
    " new episode (the duplicate guard is in memory, a resolved alert's state is not kept)",
)
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
