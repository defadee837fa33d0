"""Publishing many messages with confirms in one write: aiormq's channel internals, here only.

`aiormq.Channel.basic_publish` marshals each message with pamqp (tens of µs for the
method and header frames) and hands it to the connection's writer as its own frame: one
`write()` syscall per message, the ceiling of an alert storm's drain (bench/README.md).
`publish_many` encodes the three frames of each message itself (the method frame cached
per routing key, the header for sensord's fixed set of properties, the body as is), joins
a whole batch into one `ChannelFrame` and registers one confirmation future per message
exactly as `basic_publish` does, so that aiormq's own confirm, nack, return and
channel-close handling resolve them.

It relies on aiormq 7.2's `Channel.lock`, `delivery_tag`, `confirmations`,
`message_id_delivery_tag`, `write_queue`, `number`, `max_content_size`, `create_future`,
`_confirm_delivery` and the reader's call of `_on_confirm_frame` (replaced here), and on
`aiormq.abc.ChannelFrame`; pyproject.toml pins aiormq to 7.2.x and
tests/amqp/test_publisher.py checks each of them, and the encoding byte for byte
against pamqp's, so that an upgrade fails in CI rather than in production.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

log = logging.getLogger("sensord.amqp")

_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC_CLASS = 60
# property flags (AMQP 0-9-1 §4.2.6.1, basic class): the ones sensord sets on an alert
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080
_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_HEAD = struct.Struct(">HHQH")


class Message(NamedTuple):
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] | None = None  # rare (repeats): encoded by pamqp


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {value[:40]!r}…")
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + _FRAME_END


class FrameEncoder:
    """The frames of persistent JSON messages to one exchange, on one channel."""

    def __init__(self, channel_number: int, exchange: str, body_max: int) -> None:
        self.channel = channel_number
        self.exchange = exchange
        self.body_max = body_max  # the connection's frame_max less a frame's 8 octets
        self._methods: dict[str, bytes] = {}
        self._content_type = _shortstr("application/json")

    def method(self, routing_key: str) -> bytes:
        """basic.publish(exchange, routing_key, mandatory=True), cached per routing key."""
        frame = self._methods.get(routing_key)
        if frame is None:
            if len(self._methods) > 10_000:  # bounded: routing keys follow sites and kinds
                self._methods.clear()
            payload = (
                struct.pack(">HHH", _BASIC_CLASS, 40, 0)
                + _shortstr(self.exchange)
                + _shortstr(routing_key)
                + b"\x01"  # mandatory: an unroutable alert comes back as basic.return
            )
            frame = self._methods[routing_key] = _frame(_METHOD, self.channel, payload)
        return frame

    def header(self, body_size: int, message_id: str, headers: dict[str, Any] | None) -> bytes:
        if headers:  # a repeat's target channels: pamqp encodes the table
            props = Basic.Properties(
                content_type="application/json",
                headers=headers,
                delivery_mode=2,
                message_id=message_id,
            )
            return pamqp.frame.marshal(ContentHeader(0, body_size, props), self.channel)
        flags = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID
        payload = (
            _HEADER_HEAD.pack(_BASIC_CLASS, 0, body_size, flags)
            + self._content_type
            + b"\x02"  # delivery_mode 2: persistent
            + _shortstr(message_id)
        )
        return _frame(_HEADER, self.channel, payload)

    def encode(self, msg: Message) -> bytes:
        body = msg.body
        parts = [self.method(msg.routing_key), self.header(len(body), msg.message_id, msg.headers)]
        step = self.body_max
        for i in range(0, len(body), step):
            parts.append(_frame(_BODY, self.channel, body[i : i + step]))
        return b"".join(parts)


class BatchPublisher:
    """`publish_many` on one confirm channel of an aiormq connection."""

    def __init__(self, channel: aiormq.Channel, exchange: str) -> None:
        if not channel.publisher_confirms:
            raise ValueError("BatchPublisher needs a channel with publisher confirms")
        self.channel = channel
        self._encoder = FrameEncoder(channel.number, exchange, channel.max_content_size)
        # aiormq resolves a `multiple` ack by scanning every outstanding confirmation and
        # scheduling a callback for each tag it covers, again for each further ack frame
        # that arrives before those callbacks ran: quadratic in the publishes in flight
        # (1 s stalls of the event loop seen with 1,024 in flight). This resolves the
        # covered tags at once, oldest first; the channel's reader looks the handler up
        # on the instance.
        channel._on_confirm_frame = self._on_confirm_frame  # type: ignore[method-assign]  # on purpose, see above

    async def publish_many(self, messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
        """Queue every message for the writer in one frame; return one confirmation
        future per message (a `Basic.Ack` result, or PublishError / DeliveryError /
        ChannelInvalidStateError... as `basic_publish` would raise)."""
        ch = self.channel
        encode = self._encoder.encode
        futures: list[asyncio.Future[Any]] = []
        async with ch.lock:  # raises ChannelInvalidStateError on a closed channel
            payload = b"".join([encode(m) for m in messages])
            tag = ch.delivery_tag
            confirmations = ch.confirmations
            by_message_id = ch.message_id_delivery_tag
            for m in messages:
                tag += 1
                fut = ch.create_future()
                confirmations[tag] = fut
                by_message_id[m.message_id] = tag
                fut.add_done_callback(_forget(by_message_id, m.message_id, tag))
                futures.append(fut)
            ch.delivery_tag = tag
            await ch.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        return futures

    async def _on_confirm_frame(self, frame: Basic.Ack | Basic.Nack | Basic.Reject) -> None:
        ch = self.channel
        confirmations = ch.confirmations
        tag = frame.delivery_tag or 0
        if not getattr(frame, "multiple", False):
            if tag not in confirmations:
                log.error("unexpected confirmation frame %r from RabbitMQ", frame)
                return
            ch._confirm_delivery(tag, frame)
            return
        covered = []
        for t in confirmations:  # insertion order: tags are handed out increasing
            if t > tag:
                break
            covered.append(t)
        for t in covered:
            ch._confirm_delivery(t, frame)


def _forget(by_message_id: dict[str, int], message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if by_message_id.get(message_id) == tag:
            del by_message_id[message_id]

    return forget
