"""End to end over the real brokers: MQTT reading -> rule -> RabbitMQ -> console + webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import (
    MqttPublisher,
    SensordProcess,
    WebhookSink,
    get_queue_messages,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e

RULES = """
rules:
  - name: critical-temperature
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
    labels: {team: facilities}
    annotations:
      summary: "{site}/{device} temperature {value:.1f} above {threshold:g}"
"""


def _channels(sink: WebhookSink, **retry: object) -> list[dict[str, object]]:
    hook: dict[str, object] = {"name": "hook", "type": "webhook", "url": sink.url}
    if retry:
        hook["retry"] = retry
    return [{"name": "console", "type": "console"}, hook]


async def test_alert_fires_and_resolves_through_webhook_and_console(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.channels = _channels(webhook)
    topic = f"{sensord.topic_root}/plant-1/t-7/temperature"
    async with running(sensord):
        mqtt_pub.publish(topic, '{"value": 70.0}')
        # a reading time of its own, recent: readings older than stale_after (5m) are no evidence
        measured = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        mqtt_pub.publish(topic, f'{{"value": 81.25, "ts": "{measured}", "unit": "C"}}')
        await wait_for(lambda: webhook.alerts("firing"))
        mqtt_pub.publish(topic, "78")  # inside the hysteresis band: still firing
        mqtt_pub.publish(topic, '{"value": 74.0}')
        await wait_for(lambda: webhook.alerts("resolved"))
        await wait_for(lambda: "RESOLVED" in sensord.stdout())
        assert await sensord.stop() == 0

    assert len(webhook.bodies) == 2, webhook.bodies
    firing_body, resolved_body = webhook.bodies
    # Alertmanager webhook v4 shape (contract)
    for key in (
        "version",
        "groupKey",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ):
        assert key in firing_body
    assert firing_body["version"] == "4"
    assert firing_body["receiver"] == "hook"
    assert firing_body["status"] == "firing"
    (firing,) = firing_body["alerts"]
    assert firing["labels"] == {
        "alertname": "critical-temperature",
        "site": "plant-1",
        "device": "t-7",
        "kind": "temperature",
        "severity": "critical",
        "team": "facilities",
    }
    assert firing["annotations"] == {"summary": "plant-1/t-7 temperature 81.2 above 80"}
    assert firing["startsAt"] == measured
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(firing["fingerprint"]) == 16
    (resolved,) = resolved_body["alerts"]
    assert resolved_body["status"] == "resolved"
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert resolved["startsAt"] == firing["startsAt"]
    # a resolution reads as one: the clear threshold (clear_below), not the firing wording
    assert resolved["annotations"] == {"summary": "plant-1/t-7 temperature 74, back below 75"}
    assert datetime.fromisoformat(resolved["endsAt"]) > datetime.fromisoformat(firing["startsAt"])

    lines = [ln for ln in sensord.stdout().splitlines() if "critical-temperature" in ln]
    assert len(lines) == 2, lines
    assert "FIRING" in lines[0]
    assert "RESOLVED" in lines[1]
    for line in lines:
        assert " critical " in line
        assert "plant-1/t-7" in line
        assert "threshold=80" in line
    assert "value=81.25" in lines[0]
    assert "value=74" in lines[1]
    assert lines[1].endswith("plant-1/t-7 temperature 74, back below 75")


async def test_invalid_payloads_are_counted_and_ingest_goes_on(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.channels = _channels(webhook)
    topic = f"{sensord.topic_root}/plant-2/t-1/temperature"
    async with running(sensord):
        mqtt_pub.publish(topic, b"not json at all")
        mqtt_pub.publish(topic, b'{"temperature": 90}')  # JSON without value
        mqtt_pub.publish(topic, b'{"value": "90"}')  # a string value
        mqtt_pub.publish(topic, b"NaN")
        mqtt_pub.publish(topic, b'{"value": Infinity}')
        mqtt_pub.publish(f"{sensord.topic_root}/too/many/levels/here", b"90")
        mqtt_pub.publish(topic, b'{"value": 95}')
        await wait_for(lambda: webhook.alerts("firing"))
        metrics = await sensord.metrics()
        _, text = await sensord.get("/metrics")
        assert await sensord.stop() == 0
    # FastStream's own middleware metrics sit next to sensord's on the same registry
    assert "faststream_published_messages_total" in text

    def invalid(reason: str) -> float:
        return metrics[f'sensord_readings_invalid_total{{reason="{reason}"}}']

    assert invalid("not_json") == 1
    assert invalid("schema") == 2
    assert invalid("non_finite") == 2
    assert invalid("topic") == 1
    assert metrics["sensord_readings_total"] == 1
    assert metrics['sensord_alerts_total{severity="critical",status="firing"}'] == 1
    assert webhook.alerts("firing")[0]["labels"]["site"] == "plant-2"
    assert "not_json" in sensord.stderr()  # logged, rate-limited


async def test_failing_webhook_is_retried_then_dead_lettered(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    webhook.statuses = [503, 500, 502]  # every attempt fails
    sensord.rules_yaml = RULES
    sensord.channels = _channels(webhook, max_attempts=3, delay="100ms")
    topic = f"{sensord.topic_root}/plant-3/t-2/temperature"
    dead = f"{sensord.prefix}.notify.hook.dead"
    async with running(sensord):
        mqtt_pub.publish(topic, '{"value": 99}')
        await wait_for(lambda: webhook.requests >= 3)
        await wait_for(lambda: "dead-lettered" in sensord.stderr())
        messages = await get_queue_messages(dead)
        metrics = await sensord.metrics()
        assert await sensord.stop() == 0
    assert len(messages) == 1
    assert b'"critical-temperature"' in messages[0].body
    assert webhook.bodies == []
    assert metrics['sensord_notifications_total{channel="hook",outcome="retried"}'] == 2
    assert metrics['sensord_notifications_total{channel="hook",outcome="dead"}'] == 1
    # the console channel has its own queue and copy: it was not affected
    assert metrics['sensord_notifications_total{channel="console",outcome="sent"}'] == 1
    assert "HTTP 503" in sensord.stderr()


async def test_permanent_webhook_error_is_not_retried(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    webhook.statuses = [400]
    sensord.rules_yaml = RULES
    sensord.channels = _channels(webhook, max_attempts=5, delay="100ms")
    async with running(sensord):
        mqtt_pub.publish(f"{sensord.topic_root}/plant-3/t-3/temperature", '{"value": 99}')
        await wait_for(lambda: "dead-lettered" in sensord.stderr())
        messages = await get_queue_messages(f"{sensord.prefix}.notify.hook.dead")
        assert await sensord.stop() == 0
    assert webhook.requests == 1
    assert len(messages) == 1


async def test_alerts_wait_while_rabbitmq_is_unreachable(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    """sensord starts and evaluates without RabbitMQ; the alert is published once it is back."""
    proxy = sensord.amqp_through_proxy()
    sensord.rules_yaml = RULES
    sensord.channels = _channels(webhook)
    async with running(sensord, ready=False):
        await sensord.wait_started()
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        mqtt_pub.publish(f"{sensord.topic_root}/plant-4/t-1/temperature", '{"value": 90}')
        firing = 'sensord_alerts_total{severity="critical",status="firing"}'
        metrics = await sensord.wait_metric(firing, 1)
        assert metrics["sensord_outbox_pending"] == 1
        assert webhook.bodies == []
        await proxy.up()
        try:
            await wait_for(lambda: webhook.alerts("firing"), timeout=30)
            metrics = await sensord.metrics()
            assert metrics["sensord_outbox_pending"] == 0
            assert await sensord.stop() == 0
        finally:
            await proxy.down()
