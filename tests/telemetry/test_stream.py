"""ReadingsStream against the real RabbitMQ: exactly once without faults, in order per sensor;
buffered through a cut (TcpProxy) and delivered; a full buffer counted, never silent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.telemetry.senml import CONTENT_TYPE
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import ReadingsStream
from tests.support import AMQP_URL, TcpProxy, uid, wait_for
from tests.telemetry.support import delete_queue, read_stream, reading, unique_by_message


def make_stream(url: str = AMQP_URL, **telemetry: Any) -> ReadingsStream:
    settings = TelemetrySettings(stream=True, **{"batch": 0.05, **telemetry})
    amqp = AmqpSettings.model_validate(
        {"url": url, "prefix": f"t{uid()}", "reconnect_interval": 0.2, "publish_timeout": 3}
    )
    return ReadingsStream(settings, amqp)


@contextlib.asynccontextmanager
async def running(stream: ReadingsStream) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task
        await stream.flush(2.0)
        await delete_queue(stream.queue)


def per_sensor(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in records:
        out.setdefault(r["device"], []).append(r["ts"])
    return out


async def test_every_reading_once_in_order_per_sensor_with_its_stream_arguments() -> None:
    stream = make_stream(batch_max=70, stream_max_bytes=10_000_000)
    n = 1000
    async with running(stream):
        for i in range(n):
            stream.append(reading(i))
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # several ticks: several batches
        await wait_for(lambda: stream.published == n)
        records = await read_stream(stream.queue, n + 10, idle=1.5)
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:  # the queue is a stream: redeclaring with its arguments is accepted
            ch = await conn.channel()
            await ch.declare_queue(
                stream.queue,
                durable=True,
                arguments={
                    "x-queue-type": "stream",
                    "x-max-age": "604800s",
                    "x-max-length-bytes": 10_000_000,
                },
            )
    assert len(records) == n  # no duplicate, no loss
    expected = [reading(i) for i in range(n)]
    assert per_sensor(records) == per_sensor([{"device": r.device, "ts": r.ts} for r in expected])
    assert {(r["site"], r["kind"], r["unit"]) for r in records} == {
        ("plant-1", "temperature", "Cel")
    }
    assert stream.messages >= n // 70
    assert stream.dropped == 0
    assert stream.resent == 0


async def test_message_is_a_senml_pack_with_its_content_type() -> None:
    stream = make_stream()
    async with running(stream):
        stream.append(reading(1))
        await wait_for(lambda: stream.published == 1)
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=10)
            q = await ch.declare_queue(stream.queue, passive=True)
            async with q.iterator(arguments={"x-stream-offset": "first"}) as it:
                msg = await asyncio.wait_for(anext(it), 5)
                await msg.ack()
    assert msg.content_type == CONTENT_TYPE
    assert msg.message_id
    assert msg.headers["sensord-readings"] == 1
    r = reading(1)
    assert (
        msg.body
        == (
            f'[{{"bn":"plant-1/t-1/","n":"temperature","u":"Cel","v":{r.value!r},"t":{r.ts!r}}}]'
        ).encode()
    )


async def test_rabbitmq_cut_readings_buffered_then_delivered() -> None:
    async with TcpProxy(5672) as proxy:
        stream = make_stream(AMQP_URL.replace(":5672", f":{proxy.port}"), batch_max=50)
        async with running(stream):
            for i in range(200):
                stream.append(reading(i))
            await wait_for(lambda: stream.published == 200)
            await proxy.down()
            for i in range(200, 700):
                stream.append(reading(i))
                if i % 50 == 0:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # cut for a while: ticks and failed publishes
            assert stream.published == 200
            assert stream.buffered == 500
            await proxy.up()
            await wait_for(lambda: stream.published == 700, timeout=20)
            records = await read_stream(stream.queue, 2000, idle=1.5)
    assert stream.dropped == 0
    # at-least-once: a batch whose confirm was lost is re-sent as the same message
    unique = unique_by_message(records)
    assert len(unique) == 700
    assert sorted(r["ts"] for r in unique) == [reading(i).ts for i in range(700)]
    assert len(records) - len(unique) <= stream.resent * 50


async def test_tiny_buffer_drops_the_oldest_counted_never_silently() -> None:
    async with TcpProxy(5672) as proxy:
        stream = make_stream(AMQP_URL.replace(":5672", f":{proxy.port}"), buffer=100)
        async with running(stream):
            stream.append(reading(0))
            await wait_for(lambda: stream.published == 1)
            await proxy.down()
            for i in range(1, 501):
                stream.append(reading(i))
            await wait_for(lambda: stream.dropped >= 400)
            assert stream.buffered <= 100
            await proxy.up()
            await wait_for(lambda: stream.buffered == 0, timeout=20)
            records = await read_stream(stream.queue, 1000, idle=1.5)
    assert stream.published + stream.dropped == 501
    unique = unique_by_message(records)
    assert len(unique) == stream.published
    # what was dropped is the oldest: the newest readings all arrived
    assert [r["ts"] for r in unique][-stream.published + 1 :] == [
        reading(i).ts for i in range(501 - stream.published + 1, 501)
    ]


async def test_stop_flushes_what_is_buffered() -> None:
    stream = make_stream(batch=60)  # no tick before the stop: only the flush publishes
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        await asyncio.sleep(0.1)
        for i in range(300):
            stream.append(reading(i))
        stop.set()
        await task
        assert await stream.flush(5.0) == 0
        assert stream.published == 300
        assert len(await read_stream(stream.queue, 400, idle=1.5)) == 300
    finally:
        await delete_queue(stream.queue)


async def test_stop_without_rabbitmq_counts_the_buffer_as_dropped() -> None:
    async with TcpProxy(5672) as proxy:
        await proxy.down()
        stream = make_stream(AMQP_URL.replace(":5672", f":{proxy.port}"))
        stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stop))
        for i in range(10):
            stream.append(reading(i))
        await asyncio.sleep(0.3)
        stop.set()
        await task
        assert await stream.flush(0.5) == 10
    assert stream.published == 0
    assert stream.dropped == 10


async def test_held_while_the_alert_drain_has_a_backlog() -> None:
    gate = asyncio.Event()  # the drain's caught_up: clear while alerts are behind
    stream = make_stream()
    stream._gate = gate
    async with running(stream):
        stream.append(reading(1))
        await asyncio.sleep(0.5)
        assert stream.published == 0
        gate.set()
        await wait_for(lambda: stream.published == 1)


@pytest.mark.parametrize("changed", ["7d", "1h"])
async def test_an_existing_stream_with_other_arguments_is_used_as_it_is(changed: str) -> None:
    stream = make_stream(stream_max_age=changed)
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue(
            stream.queue, durable=True, arguments={"x-queue-type": "stream", "x-max-age": "2D"}
        )
    async with running(stream):
        stream.append(reading(1))
        await wait_for(lambda: stream.published == 1)
        assert len(await read_stream(stream.queue, 5, idle=1.0)) == 1
