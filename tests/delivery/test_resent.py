"""An alert event the edge publishes again carries `x-sensord-resent` (notify/fleet.py)."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest

from sensord.amqp.headers import RESENT_HEADER
from sensord.amqp.settings import AmqpSettings
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_state_db
from sensord.ops.metrics import Metrics
from tests.delivery.test_outbox import _event
from tests.support import AMQP_URL, uid

pytestmark = pytest.mark.e2e


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
