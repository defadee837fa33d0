"""The quarantine buffer while RabbitMQ is unreachable: bounded, overflow counted, then sent."""

from __future__ import annotations

import asyncio
import contextlib
import json

from pydantic import SecretStr

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import make_broker
from sensord.ingest.quarantine import Quarantine, quarantine_queue_name
from sensord.ingest.settings import IngestSettings
from sensord.ops.metrics import Metrics
from tests.support import AMQP_URL, delete_amqp, get_queue_messages, uid, wait_for


async def test_buffer_is_bounded_until_rabbitmq_is_there_then_drained_in_order() -> None:
    amqp = AmqpSettings(url=SecretStr(AMQP_URL), prefix=f"tq{uid()}")
    metrics = Metrics()
    broker = make_broker(amqp)
    quarantine = Quarantine(broker, amqp, IngestSettings(quarantine_max_pending=3), metrics)
    for i in range(5):  # not connected yet: held in memory, the oldest two dropped
        quarantine.refuse(b"t/x", f"payload {i}".encode(), "not_json", f"detail {i}")
    assert quarantine.pending == 3
    assert metrics.quarantine_dropped == 2
    stop = asyncio.Event()
    runner = asyncio.create_task(quarantine.run(stop))
    queue = quarantine_queue_name(amqp)
    try:
        await broker.start()
        await quarantine.declare()
        quarantine.ready.set()
        await wait_for(lambda: quarantine.pending == 0)
        messages = await get_queue_messages(queue)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await broker.stop()
        await delete_amqp(amqp.prefix, [queue])
    assert [json.loads(m.body)["payload"] for m in messages] == [
        "payload 2",
        "payload 3",
        "payload 4",
    ]
    assert metrics.quarantined == 3
