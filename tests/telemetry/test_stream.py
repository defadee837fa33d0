"""ReadingsStream against the real RabbitMQ: exactly once without faults, in order per sensor;
buffered through a cut (TcpProxy) and delivered; a full buffer counted, never silent; with
partitions, each reading in its partition's stream and a failed part alone sent again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.events import Reading
from sensord.telemetry.partition import partition_of_labels
from sensord.telemetry.senml import CONTENT_TYPE, decode
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import ReadingsStream
from tests.support import AMQP_URL, TcpProxy, uid, wait_for
from tests.telemetry.support import (
    delete_queue,
    read_messages,
    read_stream,
    reading,
    unique_by_message,
)


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
        await delete_queue(*stream.queues)


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
    # one partition (the default): the one stream keeps its name of before partitions
    assert stream.queues == [stream.queue]
    assert stream.queue.endswith(".readings")
    assert stream.queue.count(".") == 1
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
    assert msg.headers["sensord-partition"] == 0
    # text holding epoch seconds (a float header would be a 32-bit float: 128 s steps)
    batched_at = msg.headers["sensord-batched-at"]
    assert isinstance(batched_at, str)
    assert time.time() - 30 < float(batched_at) <= time.time()
    assert len(batched_at.partition(".")[2]) >= 1  # a fraction of a second kept
    r = reading(1)
    assert (
        msg.body
        == (
            f'[{{"bn":"plant-1/t-1/","n":"temperature","u":"Cel","v":{r.value!r},"t":{r.ts!r}}}]'
        ).encode()
    )


@pytest.mark.parametrize("partitions", [1, 3])
async def test_rabbitmq_cut_readings_buffered_then_delivered(partitions: int) -> None:
    async with TcpProxy(5672) as proxy:
        stream = make_stream(
            AMQP_URL.replace(":5672", f":{proxy.port}"),
            batch_max=50,
            partitions=partitions,
            partition_by=["device"],  # reading()'s 5 devices over the partitions
        )
        assert len(stream.queues) == partitions
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
            records = await read_stream(stream.queues, 2000, idle=1.5)
    assert stream.dropped == 0
    assert stream.buffered == 0
    # at-least-once: a batch whose confirm was lost is re-sent as the same message
    unique = unique_by_message(records)
    assert len(unique) == 700
    assert sorted(r["ts"] for r in unique) == [reading(i).ts for i in range(700)]
    expected = [{"device": r.device, "ts": r.ts} for r in map(reading, range(700))]
    assert per_sensor(unique) == per_sensor(expected)
    assert len(records) - len(unique) <= stream.resent * 50
    assert len({r["partition"] for r in records}) == partitions


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


@pytest.mark.parametrize("partitions", [1, 3])
async def test_stop_flushes_what_is_buffered(partitions: int) -> None:
    # no tick before the stop: only the flush publishes
    stream = make_stream(batch=60, partitions=partitions, partition_by=["device"])
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
        assert stream.messages == partitions  # 300 readings: one batch, a part per stream
        assert len(await read_stream(stream.queues, 400, idle=1.5)) == 300
    finally:
        await delete_queue(*stream.queues)


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


# ---- partitions

SITES = [f"plant-{i}" for i in range(8)]  # over 3 partitions: 6, 1 and 1 sites (CRC-32)


def site_reading(i: int, *, rooms: bool = False) -> Reading:
    """8 sites x 4 devices x 2 kinds, round-robin; ts grows with i."""
    site, d = SITES[i % 8], i // 8 % 4
    kind = ("temperature", "humidity")[i // 32 % 2]
    labels = {"room": f"r{d % 3}"} if rooms else {}  # a device's room: one per sensor
    return Reading.trusted(site, f"d-{d}", kind, float(i), 1.8e9 + i / 1000, labels, None)


def sensor_of(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r["site"], r["device"], r["kind"])


@pytest.mark.parametrize("by", [["site"], ["site", "room"]])
async def test_partitions_each_reading_in_its_partitions_stream_in_order_with_headers(
    by: list[str],
) -> None:
    rooms = "room" in by
    stream = make_stream(partitions=3, partition_by=by, batch_max=100)
    assert [q.rsplit(".", 2)[1:] for q in stream.queues] == [["readings", str(i)] for i in range(3)]
    n = 1200
    started = time.time()
    async with running(stream):
        for i in range(n):
            stream.append(site_reading(i, rooms=rooms))
            if i % 150 == 0:
                await asyncio.sleep(0.02)  # several ticks: several batches
        await wait_for(lambda: stream.published == n)
        messages = [await read_messages(q) for q in stream.queues]
    expected = [site_reading(i, rooms=rooms) for i in range(n)]
    seen: list[tuple[str, str, str, float]] = []
    batched_at_of: dict[str, set[str]] = {}
    for partition, stream_messages in enumerate(messages):
        assert stream_messages, f"partition {partition} is empty"
        last_batched_at = 0.0
        for m in stream_messages:
            records = decode(m.body)
            assert m.headers["sensord-partition"] == partition
            assert m.headers["sensord-readings"] == len(records)
            batched_at = float(m.headers["sensord-batched-at"])
            assert started <= batched_at <= time.time()
            assert batched_at >= last_batched_at  # batches in the order taken, per stream
            last_batched_at = batched_at
            batch_id = m.message_id.rsplit("-", 1)[0]
            batched_at_of.setdefault(batch_id, set()).add(m.headers["sensord-batched-at"])
            for r in records:
                labels = {"site": r.site, "device": r.device, "kind": r.kind, **r.labels}
                assert partition_of_labels(labels, by, 3) == partition
                seen.append((r.site, r.device, r.kind, r.ts))
    assert len(seen) == n == len(set(seen))  # every reading in exactly one stream, once
    # in order per sensor: a sensor's readings in one stream, in the order accepted
    per_sensor_seen: dict[tuple[str, str, str], list[float]] = {}
    for site, device, kind, ts in seen:
        per_sensor_seen.setdefault((site, device, kind), []).append(ts)
    per_sensor_expected: dict[tuple[str, str, str], list[float]] = {}
    for e in expected:
        per_sensor_expected.setdefault((e.site, e.device, e.kind), []).append(e.ts)
    assert per_sensor_seen == per_sensor_expected
    # a batch's parts share its batched-at; ids are unique across the streams
    assert all(len(v) == 1 for v in batched_at_of.values())
    assert len({m.message_id for ms in messages for m in ms}) == stream.messages
    assert stream.messages > len(batched_at_of)  # batches were split into parts
    assert (stream.resent, stream.dropped, stream.buffered) == (0, 0, 0)


async def _partition_1_fails(stream: ReadingsStream) -> None:
    """64 readings over 3 partitions; partition 1's stream has disappeared: its part is
    returned (mandatory), the others are confirmed."""
    await wait_for(lambda: stream.declared)
    await delete_queue(stream.queues[1])
    for i in range(64):
        stream.append(site_reading(i))
    stream.absorb()
    assert await stream.send() is False


async def test_a_failed_part_alone_is_published_again_with_its_id_and_batched_at() -> None:
    stream = make_stream(partitions=3, batch=60)  # batches taken by hand below (send)
    async with running(stream):
        await _partition_1_fails(stream)
        assert stream.messages == 2
        in_1 = sum(partition_of_labels({"site": SITES[i % 8]}, ["site"], 3) == 1 for i in range(64))
        assert 0 < in_1 < 64
        assert stream.buffered == in_1  # only the failed part's readings wait
        assert stream.published == 64 - in_1
        await asyncio.sleep(0.3)  # after the first copy: a new batched-at would differ
        assert await stream.send() is True  # declares the streams again, re-sends the part
        assert (stream.messages, stream.resent, stream.published) == (3, 1, 64)
        messages = [await read_messages(q) for q in stream.queues]
    assert [len(ms) for ms in messages] == [1, 1, 1]  # no second copy of a confirmed part
    (m0,), (m1,), (m2,) = messages
    assert {m.message_id.rsplit("-", 1)[0] for m in (m0, m1, m2)} == {
        m0.message_id.rsplit("-", 1)[0]
    }
    assert m1.headers["sensord-batched-at"] == m0.headers["sensord-batched-at"]
    assert m1.headers["sensord-readings"] == in_1 == len(decode(m1.body))


async def test_full_buffer_drops_a_waiting_partly_confirmed_batch_counted() -> None:
    stream = make_stream(partitions=3, batch=60, buffer=64)
    async with running(stream):
        await _partition_1_fails(stream)
        waiting = stream.buffered
        for i in range(64, 128):
            stream.append(site_reading(i))
        stream.absorb()  # over the bound: the waiting part (the oldest) goes first
        assert stream.dropped >= waiting
        assert stream.buffered <= 64
        assert stream.published + stream.dropped + stream.buffered == 128
