"""An alert event the edge publishes again carries `x-sensord-resent` (notify/fleet.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from sensord.amqp.headers import RESENT_HEADER
from sensord.amqp.settings import AmqpSettings
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_state_db
from sensord.events import AlertEvent, Severity
from sensord.ops.metrics import Metrics
from tests.support import AMQP_URL, uid

pytestmark = pytest.mark.e2e

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _event(i: int) -> AlertEvent:
    return AlertEvent(
        event_id=f"ev-{i}",
        fingerprint=f"fp-{i}",
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


async def test_rows_found_at_start_and_rows_sent_twice_are_marked(tmp_path: Path) -> None:
    amqp = AmqpSettings.model_validate({"url": AMQP_URL, "prefix": f"t{uid()}"})
    path = tmp_path / "s.db"
    Outbox(open_state_db(path), 100, Metrics()).add([_event(0)])  # left by an earlier run
    outbox = Outbox(open_state_db(path), 100, Metrics())
    drain = OutboxDrain(amqp, outbox, Metrics())
    outbox.add([_event(1)])  # new in this run
    conn = await aio_pika.connect(AMQP_URL)
    got: dict[str, list[bool]] = {}
    async with conn:
        ch = await conn.channel()
        exchange = await ch.declare_exchange(amqp.exchange, aio_pika.ExchangeType.TOPIC)
        queue = await ch.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")
        try:
            rows = outbox.head(10)
            # the first publish of both, then ev-1 once more (as after a lost confirm)
            for batch in (rows, rows[1:]):
                for fut in await drain._send(batch):
                    await fut
            for _ in range(3):
                msg = await queue.get(timeout=5)
                assert msg is not None
                await msg.ack()
                headers = msg.headers or {}
                got.setdefault(str(msg.message_id), []).append(RESENT_HEADER in headers)
        finally:
            await drain.close()
            await exchange.delete()
    assert got == {"ev-0": [True], "ev-1": [False, True]}
