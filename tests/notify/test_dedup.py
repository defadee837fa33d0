from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from sensord.delivery.outbox import open_state_db
from sensord.events import AlertEvent, Severity
from sensord.notify.dedup import CLAIM_TTL, HandledEvents
from tests.support import AMQP_URL, SensordProcess, WebhookSink, running


def test_handled_events_are_remembered_per_channel_and_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    handled = HandledEvents(open_state_db(path))
    assert not handled.seen("hook", "e1")
    handled.record("hook", "e1", now=1000.0)
    assert handled.seen("hook", "e1")
    assert not handled.seen("console", "e1")  # each channel notifies once on its own
    handled.conn.close()
    again = HandledEvents(open_state_db(path))
    assert again.seen("hook", "e1")


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    handled = HandledEvents(open_state_db(tmp_path / "s.db"), keep=100.0)
    handled.record("hook", "old", now=1000.0)
    handled.record("hook", "new", now=1090.0)
    assert handled.prune(now=1150.0) == 1
    assert not handled.seen("hook", "old")
    assert handled.seen("hook", "new")


@pytest.mark.e2e
async def test_a_redelivered_event_is_notified_once(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    """The same event twice on the channel queue (as after a crash before the ack)."""
    sensord.role = "notify"
    sensord.rules_yaml = "rules: []\n"
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    now = datetime.now(UTC)
    event = AlertEvent(
        event_id=str(uuid.uuid4()),
        fingerprint="f00dfeed00000001",
        status="firing",
        rule="hot",
        severity=Severity.CRITICAL,
        labels={
            "alertname": "hot",
            "site": "p",
            "device": "d",
            "kind": "temperature",
            "severity": "critical",
        },
        annotations={},
        value=99.0,
        threshold=80.0,
        starts_at=now,
        observed_at=now,
    )
    async with running(sensord):
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            ex = await ch.get_exchange(f"{sensord.prefix}.alerts")
            for _ in range(2):
                await ex.publish(
                    aio_pika.Message(event.model_dump_json().encode(), message_id=event.event_id),
                    routing_key=event.routing_key,
                )
        await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="duplicate"}', 1
        )
        # the copy may be recognised while the first is still being delivered
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="sent"}', 1
        )
        assert await sensord.stop() == 0
    assert len(webhook.bodies) == 1
    assert metrics['sensord_notifications_total{channel="hook",outcome="sent"}'] == 1


def test_a_claim_is_shared_by_workers_on_one_state_file(tmp_path: Path) -> None:
    """Two notify workers on one state file: one sends an event, the other's copy waits."""
    path = tmp_path / "notify.db"
    a, b = HandledEvents(open_state_db(path)), HandledEvents(open_state_db(path))
    assert a.claim("hook", "e1", now=100.0)
    assert not b.claim("hook", "e1", now=100.5)  # a is sending it
    a.release("hook", "e1")  # a's send failed: b may
    assert b.claim("hook", "e1", now=101.0)
    b.record("hook", "e1", now=101.2)  # sent: the claim ends, the record stays
    assert a.seen("hook", "e1")
    assert a.claim("hook", "e2", now=200.0)
    assert b.claim("hook", "e2", now=200.0 + CLAIM_TTL + 1)  # a died holding it
