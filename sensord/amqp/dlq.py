"""Dead-letter tooling: list, replay and purge `<prefix>.notify.<channel>.dead` over AMQP.

Talks to RabbitMQ directly with aio-pika (the HTTP API comes later). Listing takes each
message without acknowledging it and closes the channel, which puts them all back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from sensord.amqp.failover import connect_any
from sensord.amqp.headers import (
    ATTEMPTS_HEADER,
    BROKER_HEADERS,
    CHANNEL_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    header_int,
    header_str,
)
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import declare_topology
from sensord.errors import SensordError
from sensord.notify.registry import ChannelSettings

# Headers that belong to a failed delivery; a replayed message starts clean.
_DROP_ON_REPLAY = (ATTEMPTS_HEADER, ERROR_HEADER, CHANNEL_HEADER, DEAD_AT_HEADER, *BROKER_HEADERS)


class DlqError(SensordError):
    """A dlq command cannot do what was asked (unknown channel, no such message)."""


@dataclass(frozen=True)
class DeadLetter:
    channel: str
    event_id: str
    dead_at: str
    alert: str
    status: str
    reason: str
    attempts: int


def describe(channel: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    try:
        body = json.loads(message.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    labels = body.get("labels") if isinstance(body.get("labels"), dict) else {}
    assert isinstance(labels, dict)
    alert = f"{body.get('rule', '?')} {labels.get('site', '?')}/{labels.get('device', '?')}"
    reason = header_str(headers, ERROR_HEADER)
    if not reason and "x-death" in headers:
        reason = "rejected (dead-lettered by RabbitMQ)"  # from sensord 0.1
    return DeadLetter(
        channel=channel,
        event_id=str(body.get("event_id") or message.message_id or "?"),
        dead_at=header_str(headers, DEAD_AT_HEADER) or "?",
        alert=alert,
        status=str(body.get("status", "?")),
        reason=reason or "?",
        attempts=header_int(headers, ATTEMPTS_HEADER),
    )


def select_channels(channels: list[ChannelSettings], name: str | None) -> list[ChannelSettings]:
    if name is None:
        return channels
    chosen = [c for c in channels if c.name == name]
    if not chosen:
        known = ", ".join(c.name for c in channels) or "none"
        raise DlqError(f"no channel named {name!r} in the config (channels: {known})")
    return chosen


async def _connect(amqp: AmqpSettings) -> aio_pika.abc.AbstractConnection:
    try:
        return await connect_any(amqp)  # the first node of the cluster that answers
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
        raise DlqError(f"cannot connect to RabbitMQ: {exc}") from exc


async def _drain(ch: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    queue = await ch.declare_queue(queue_name, passive=True)
    out = []
    while (msg := await queue.get(no_ack=False, fail=False)) is not None:
        out.append(msg)
    return out


async def list_dead(amqp: AmqpSettings, channels: list[ChannelSettings]) -> list[DeadLetter]:
    conn = await _connect(amqp)
    async with conn:
        setup = await conn.channel()
        await declare_topology(setup, amqp, channels)  # a fresh install lists nothing
        out = []
        for ch_settings in channels:
            ch = await conn.channel()
            for msg in await _drain(ch, amqp.dead_queue(ch_settings.name)):
                out.append(describe(ch_settings.name, msg))
            await ch.close()  # unacknowledged: every message goes back
        return out


async def replay(
    amqp: AmqpSettings, channels: list[ChannelSettings], event_id: str | None
) -> list[DeadLetter]:
    """Move dead letters (all, or the one with `event_id`) back to their channel queue."""
    conn = await _connect(amqp)
    replayed: list[DeadLetter] = []
    async with conn:
        setup = await conn.channel()
        await declare_topology(setup, amqp, channels)
        for ch_settings in channels:
            ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
            for msg in await _drain(ch, amqp.dead_queue(ch_settings.name)):
                letter = describe(ch_settings.name, msg)
                if event_id is not None and letter.event_id != event_id:
                    continue  # left unacknowledged: back in the DLQ when the channel closes
                headers = {k: v for k, v in (msg.headers or {}).items() if k not in _DROP_ON_REPLAY}
                copy = aio_pika.Message(
                    msg.body,
                    headers=headers,
                    content_type=msg.content_type or "application/json",
                    message_id=msg.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await ch.default_exchange.publish(
                    copy, routing_key=amqp.notify_queue(ch_settings.name), mandatory=True
                )
                await msg.ack()  # only once the copy is confirmed
                replayed.append(letter)
            await ch.close()
    if event_id is not None and not replayed:
        raise DlqError(f"no dead letter with id {event_id!r}")
    return replayed


async def purge(amqp: AmqpSettings, channel: ChannelSettings) -> int:
    conn = await _connect(amqp)
    async with conn:
        ch = await conn.channel()
        await declare_topology(ch, amqp, [channel])
        queue = await ch.declare_queue(amqp.dead_queue(channel.name), passive=True)
        result = await queue.purge()
        return int(result.message_count or 0)


def table(letters: list[DeadLetter]) -> str:
    rows = [("WHEN", "CHANNEL", "ALERT", "STATUS", "REASON", "ATTEMPTS", "ID")]
    rows += [
        (
            d.dead_at,
            d.channel,
            d.alert,
            d.status,
            d.reason if len(d.reason) <= 60 else d.reason[:57] + "...",
            str(d.attempts),
            d.event_id,
        )
        for d in letters
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
