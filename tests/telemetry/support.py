"""Helpers of the telemetry tests: readings, reading the stream back, cleaning up."""

from __future__ import annotations

import contextlib
import io
import json
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
    queue: str, count: int, start: str | int = "first", idle: float = 3.0, url: str = AMQP_URL
) -> list[dict[str, Any]]:
    """Up to `count` readings from the stream (fewer if none comes for `idle` s)."""
    out = io.StringIO()
    await tail(url, queue, start, [], count=count, idle=idle, as_json=True, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def delete_queue(name: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
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
