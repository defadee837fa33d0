"""Notify workers on different hosts (each its own state file) send each event once: whole
`sensord run --role notify` processes on the real RabbitMQ (sensord/notify/fleet.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
import pytest

from sensord.amqp.headers import RESENT_HEADER
from sensord.testing.webhook import WebhookSink
from tests.support import AMQP_URL, SensordProcess, make_event, running, uid, wait_for

pytestmark = pytest.mark.e2e

PEERS = "sensord_notify_fleet_peers"
SENT = 'sensord_notifications_total{channel="hook",outcome="sent"}'
DUPLICATE = 'sensord_notifications_total{channel="hook",outcome="duplicate"}'


def worker(tmp_path: Path, name: str, prefix: str, sink: WebhookSink) -> SensordProcess:
    """A notify worker with a state file of its own (another host), prefetch 1."""
    workdir = tmp_path / name
    workdir.mkdir()
    p = SensordProcess(workdir=workdir, prefix=prefix, topic_root=f"test-{uid()}")
    p.role = "notify"
    p.rules_yaml = "rules: []\n"
    p.channels = [{"name": "hook", "type": "webhook", "url": sink.url, "prefetch": 1}]
    return p


async def publish(prefix: str, event: dict[str, object], headers: dict[str, object]) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(f"{prefix}.alerts", ensure=True)
        key = f"{event['severity']}.plant-1.temperature"
        await exchange.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                message_id=str(event["event_id"]),
                headers=headers,  # type: ignore[arg-type]
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=key,
            mandatory=True,
        )


async def test_a_copy_redelivered_to_another_host_after_a_cut_is_not_sent_again(
    tmp_path: Path,
) -> None:
    """Worker A is sending an event when its link to RabbitMQ is cut: RabbitMQ gives the
    unacknowledged message to worker B (another state file). B asks the fleet, waits for
    A, silent while cut off, and drops the copy once A, back, answers "sent"."""
    prefix = f"t{uid()}"
    async with WebhookSink(hold=asyncio.Event()) as sink:
        assert sink.hold is not None
        a, b = worker(tmp_path, "a", prefix, sink), worker(tmp_path, "b", prefix, sink)
        proxy = a.amqp_through_proxy()
        await proxy.up()
        try:
            async with running(a):
                await publish(prefix, make_event(), {})
                await wait_for(lambda: sink.requests == 1, timeout=15)  # A sends, held
                async with running(b):
                    await b.wait_metric(PEERS, 1)
                    await a.wait_metric(PEERS, 1)
                    await proxy.down()  # A's connection (and its fleet queue) gone
                    await asyncio.sleep(1.0)  # B now holds the redelivered copy, asking
                    sink.hold.set()  # A's notification goes through; its ack cannot
                    await asyncio.sleep(1.0)
                    await proxy.up()  # A back: it answers B "sent"
                    metrics = await b.wait_metric(DUPLICATE, 1, timeout=20)
                    assert metrics.get(SENT, 0) == 0
                    assert (await a.metrics()).get(SENT) == 1
                    await asyncio.sleep(0.5)
                    assert sink.requests == 1, sink.event_ids
        finally:
            await proxy.down()


async def test_an_event_the_edge_published_again_is_sent_once_across_hosts(
    tmp_path: Path,
) -> None:
    """An edge whose confirm was lost publishes the event again (`x-sensord-resent`): the
    two copies reach two workers at once (prefetch 1, the first held by a slow target);
    the copy's worker waits for the other's "sent"."""
    prefix = f"t{uid()}"
    async with WebhookSink(hold=asyncio.Event()) as sink:
        assert sink.hold is not None
        a, b = worker(tmp_path, "a", prefix, sink), worker(tmp_path, "b", prefix, sink)
        async with running(a), running(b):
            await a.wait_metric(PEERS, 1)
            await b.wait_metric(PEERS, 1)
            event = make_event()
            await publish(prefix, event, {})
            await wait_for(lambda: sink.requests == 1, timeout=15)
            await publish(prefix, event, {RESENT_HEADER: 1})
            await asyncio.sleep(1.0)  # the copy reached the other worker, which waits
            assert sink.requests == 1
            sink.hold.set()
            totals = [0.0, 0.0]
            for i, metric in enumerate((SENT, DUPLICATE)):
                for _ in range(100):
                    scrapes = [await p.metrics() for p in (a, b)]
                    totals[i] = sum(m.get(metric, 0) for m in scrapes)
                    if totals[i] >= 1:
                        break
                    await asyncio.sleep(0.1)
            assert totals == [1, 1]
            await asyncio.sleep(0.5)
            assert sink.requests == 1
