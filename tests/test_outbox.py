"""The SQLite outbox: alert events survive RabbitMQ outages and sensord being killed."""

from __future__ import annotations

import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensord.events import AlertEvent, Severity
from sensord.metrics import Metrics
from sensord.outbox import Outbox, OutboxRow, open_state_db
from sensord.publish import unique_prefix
from tests.support import (
    AMQP_URL,
    MqttPublisher,
    SensordProcess,
    TcpProxy,
    WebhookSink,
    running,
    wait_for,
)

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _event(i: int, fingerprint: str = "fp") -> AlertEvent:
    return AlertEvent(
        event_id=f"ev-{i}",
        fingerprint=fingerprint,
        status="firing",
        rule="hot",
        severity=Severity.CRITICAL,
        labels={"site": "s", "kind": "temperature"},
        annotations={},
        value=float(i),
        threshold=80.0,
        starts_at=NOW,
        observed_at=NOW,
    )


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_rows_survive_reopening_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sensord.db"
    metrics = Metrics()
    box = Outbox(open_state_db(path), 100, metrics)
    box.add([_event(1), _event(2, "other")])
    assert len(box) == 2
    assert _sample(metrics, "sensord_outbox_pending") == 2
    box.conn.close()

    reopened = Outbox(open_state_db(path), 100, Metrics())
    rows = reopened.head(10)
    assert [r.event_id for r in rows] == ["ev-1", "ev-2"]
    assert rows[0].routing_key == "critical.s.temperature"
    assert AlertEvent.model_validate_json(rows[0].body).value == 1.0
    reopened.delete([rows[0].seq])
    assert [r.event_id for r in reopened.head(10)] == ["ev-2"]
    assert len(reopened) == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_rows_inside_the_callers_transaction_commit_with_it(tmp_path: Path) -> None:
    box = Outbox(open_state_db(tmp_path / "s.db"), 100, Metrics())
    box.conn.execute("BEGIN")
    box.add([_event(1)])
    box.conn.execute("ROLLBACK")  # the transition was not recorded: neither is its event
    assert box.head(10) == []
    assert len(box) == 0


def test_overflow_drops_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    box = Outbox(open_state_db(tmp_path / "s.db"), 3, metrics)
    box.add([_event(i, f"fp{i}") for i in range(5)])
    assert [r.event_id for r in box.head(10)] == ["ev-2", "ev-3", "ev-4"]
    assert len(box) == 3
    assert _sample(metrics, "sensord_alerts_dropped_total") == 2
    assert "outbox full" in caplog.text


def test_a_batch_never_holds_two_events_of_one_alert() -> None:
    rows = [OutboxRow(i, f"e{i}", fp, "k", b"", 0.0) for i, fp in enumerate("abcad")]
    assert [r.fingerprint for r in unique_prefix(rows)] == ["a", "b", "c"]


RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    severity: critical
"""


@pytest.mark.e2e
async def test_alerts_survive_sigkill_while_rabbitmq_is_down_and_arrive_in_order(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    proxy = TcpProxy(5672)
    sensord.amqp_url = AMQP_URL.replace(":5672", f":{proxy.port}")
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    topic = f"{sensord.topic_root}/plant-1/t-1/temperature"
    async with running(sensord, ready=False):
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        for value in (90, 70, 91, 71):  # firing, resolved, firing, resolved
            mqtt_pub.publish(topic, str(value))
        await sensord.wait_metric("sensord_outbox_pending", 4)
        assert sensord.proc is not None
        sensord.proc.send_signal(signal.SIGKILL)
        sensord.proc.wait()
    assert (sensord.workdir / "var" / "sensord.db").exists()

    await proxy.up()
    try:
        async with running(sensord):
            await wait_for(lambda: len(webhook.bodies) >= 4, timeout=30)
            metrics = await sensord.wait_metric("sensord_outbox_pending", 0, exact=True)
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
    statuses = [a["status"] for b in webhook.bodies for a in b["alerts"]]
    assert statuses == ["firing", "resolved", "firing", "resolved"]
    assert metrics["sensord_outbox_pending"] == 0
