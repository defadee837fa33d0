"""Helpers of the telemetry tests: readings, reading the stream back, cleaning up."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika

from sensord.cli.readings import tail
from sensord.events import Reading
from tests.support import AMQP_URL


def reading(i: int, sensors: int = 5, *, site: str = "plant-1", t0: float = 1.8e9) -> Reading:
    return Reading.trusted(
        site, f"t-{i % sensors}", "temperature", 20 + i / 1000, t0 + i / 1000, {}, "Cel"
    )


async def read_stream(
    queue: str | Sequence[str],
    count: int,
    start: str | int = "first",
    idle: float = 3.0,
    url: str = AMQP_URL,
) -> list[dict[str, Any]]:
    """Up to `count` readings from the stream, or from the streams (partition i at index
    i), fewer if none comes for `idle` s."""
    out = io.StringIO()
    queues = queue if isinstance(queue, str) else dict(enumerate(queue))
    await tail(url, queues, start, [], count=count, idle=idle, as_json=True, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of a stream as a consumer gets it."""

    offset: int
    message_id: str
    headers: dict[str, Any]
    body: bytes


async def read_messages(queue: str, idle: float = 1.0) -> list[StreamMessage]:
    """Every message of the stream from its first, until none comes for `idle` s."""
    conn = await aio_pika.connect(AMQP_URL)
    out: list[StreamMessage] = []
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=100)
        q = await ch.declare_queue(queue, passive=True)
        # not q.iterator(): it nacks on close, which a stream answers by closing the channel
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await q.consume(inbox.put, arguments={"x-stream-offset": "first"})
        while True:
            try:
                msg = await asyncio.wait_for(inbox.get(), idle)
            except TimeoutError:
                break
            headers: dict[str, Any] = dict(msg.headers or {})
            offset = headers["x-stream-offset"]
            assert isinstance(offset, int)
            out.append(StreamMessage(offset, str(msg.message_id), headers, msg.body))
            await msg.ack()
    return out


async def delete_queue(*names: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        for name in names:
            ch = await conn.channel()  # a failed delete closes its channel
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(name)


def unique_by_message(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A consumer's dedup: each message id once (a re-sent batch is the same message)."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    offsets_of: dict[str, int] = {}
    for rec in records:
        mid = rec["message_id"]
        if mid in seen and offsets_of[mid] != rec["offset"]:
            continue  # a second copy of a message already read
        seen.add(mid)
        offsets_of[mid] = rec["offset"]
        out.append(rec)
    return out
