"""sensord/amqp/publisher.py: frames encoded as pamqp would, confirms from the real RabbitMQ,
and every aiormq internal it relies on still there (an aiormq upgrade fails here)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from importlib import metadata

import aiormq
import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from sensord.amqp.publisher import BatchPublisher, FrameEncoder, Message
from tests.support import AMQP_URL, uid


def _pamqp_frames(channel: int, exchange: str, msg: Message, body_max: int) -> bytes:
    props = Basic.Properties(
        content_type="application/json",
        headers=msg.headers,
        delivery_mode=2,
        message_id=msg.message_id,
    )
    frames = [
        pamqp.frame.marshal(
            Basic.Publish(exchange=exchange, routing_key=msg.routing_key, mandatory=True), channel
        ),
        pamqp.frame.marshal(ContentHeader(0, len(msg.body), props), channel),
    ]
    for i in range(0, len(msg.body), body_max):
        frames.append(pamqp.frame.marshal(ContentBody(msg.body[i : i + body_max]), channel))
    return b"".join(frames)


@pytest.mark.parametrize(
    "msg",
    [
        Message("critical.plant-1.temperature", b'{"status":"firing"}', "0b5e-4f"),
        Message("info.s.k", b"", "e" * 36),
        Message("warning.\u00e9t\u00e9.kind", "caf\u00e9".encode() * 50, "id-\u00e9"),
        Message("critical.s.k", b"x" * 300, "r-1", {"x-sensord-repeat-for": "ops,pager"}),
        Message("critical.s.k", bytes(range(256)) * 10, "big"),  # split into body frames
    ],
)
@pytest.mark.parametrize("channel", [1, 7, 2047])
def test_frames_are_byte_for_byte_pamqps(msg: Message, channel: int) -> None:
    encoder = FrameEncoder(channel, "sensord.alerts", body_max=1000)
    assert encoder.encode(msg) == _pamqp_frames(channel, "sensord.alerts", msg, 1000)
    assert encoder.encode(msg) == encoder.encode(msg)  # the cached method frame is reused


def test_a_short_string_over_255_bytes_is_refused() -> None:
    encoder = FrameEncoder(1, "x", body_max=1000)
    with pytest.raises(ValueError, match="over 255 bytes"):
        encoder.encode(Message("k" * 256, b"{}", "id"))


def test_the_aiormq_internals_it_uses_are_there() -> None:
    """publish_many stands in for Channel.basic_publish: the names and shapes it touches."""
    source = inspect.getsource(aiormq.Channel)
    for name in (
        "self.delivery_tag",
        "self.confirmations",
        "self.message_id_delivery_tag",
        "self.write_queue",
        "self.max_content_size",
        "async def lock",
        "def _confirm_delivery",
        "await self._on_confirm_frame(frame)",  # looked up on the instance: replaceable
    ):
        assert name in source, name
    assert callable(aiormq.Channel.create_future)
    fields = {f.name for f in ChannelFrame.__dataclass_fields__.values()}
    assert {"payload", "should_close", "drain_future"} <= fields
    # pyproject.toml pins aiormq to 7.2.x: re-check the above on an upgrade
    assert metadata.version("aiormq").startswith("7.2.")


@pytest.fixture
async def channel() -> AsyncIterator[tuple[aiormq.Channel, str]]:
    conn = await aiormq.connect(AMQP_URL)
    ch = await conn.channel(publisher_confirms=True)
    assert isinstance(ch, aiormq.Channel)
    exchange = f"test-pub-{uid()}"
    await ch.exchange_declare(exchange, exchange_type="topic", auto_delete=False)
    try:
        yield ch, exchange
    finally:
        if ch.is_closed:
            ch = await conn.channel()
        await ch.exchange_delete(exchange)
        await conn.close()


async def test_many_messages_confirmed_and_delivered_in_order(
    channel: tuple[aiormq.Channel, str],
) -> None:
    ch, exchange = channel
    queue = f"test-pub-q-{uid()}"
    await ch.queue_declare(queue, exclusive=True)
    await ch.queue_bind(queue, exchange, routing_key="#")
    publisher = BatchPublisher(ch, exchange)
    messages = [
        Message(f"critical.s.k{i % 3}", json.dumps({"i": i}).encode(), f"m-{i}") for i in range(500)
    ]
    messages.append(Message("critical.s.k", b"{}", "m-repeat", {"x-sensord-repeat-for": "a"}))
    futures = await publisher.publish_many(messages[:250])
    futures += await publisher.publish_many(messages[250:])
    results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert all(isinstance(r, Basic.Ack) for r in results)
    assert not ch.message_id_delivery_tag  # forgotten once confirmed
    got: list[tuple[str, bytes, object]] = []
    while len(got) < len(messages):
        msg = await ch.basic_get(queue, no_ack=True)
        assert msg.body is not None
        got.append((str(msg.header.properties.message_id), msg.body, msg.header.properties))
    assert [g[0] for g in got] == [m.message_id for m in messages]
    assert [g[1] for g in got] == [m.body for m in messages]
    props = got[0][2]
    assert isinstance(props, Basic.Properties)
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    last = got[-1][2]
    assert isinstance(last, Basic.Properties)
    assert last.headers == {"x-sensord-repeat-for": "a"}


async def test_an_unroutable_message_fails_alone(channel: tuple[aiormq.Channel, str]) -> None:
    ch, exchange = channel
    queue = f"test-pub-q-{uid()}"
    await ch.queue_declare(queue, exclusive=True)
    await ch.queue_bind(queue, exchange, routing_key="critical.#")
    publisher = BatchPublisher(ch, exchange)
    futures = await publisher.publish_many(
        [
            Message("critical.s.k", b"{}", "ok-1"),
            Message("info.s.k", b"{}", "lost"),  # no binding: basic.return
            Message("critical.s.k", b"{}", "ok-2"),
        ]
    )
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
    assert isinstance(results[0], Basic.Ack)
    assert isinstance(results[1], aiormq.exceptions.PublishError)
    assert isinstance(results[2], Basic.Ack)


async def test_a_closed_channel_fails_the_batch_before_it_is_sent(
    channel: tuple[aiormq.Channel, str],
) -> None:
    ch, exchange = channel
    publisher = BatchPublisher(ch, exchange)
    await ch.close()
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await publisher.publish_many([Message("a.b.c", b"{}", "x")])


async def test_a_channel_without_confirms_is_refused() -> None:
    conn = await aiormq.connect(AMQP_URL)
    try:
        ch = await conn.channel(publisher_confirms=False)
        assert isinstance(ch, aiormq.Channel)
        with pytest.raises(ValueError, match="publisher confirms"):
            BatchPublisher(ch, "x")
    finally:
        await conn.close()


async def test_a_multiple_ack_resolves_exactly_the_tags_it_covers(
    channel: tuple[aiormq.Channel, str],
) -> None:
    ch, exchange = channel
    publisher = BatchPublisher(ch, exchange)
    futures = {tag: ch.create_future() for tag in (101, 102, 103, 104)}
    ch.confirmations.update(futures)
    await ch._on_confirm_frame(Basic.Ack(delivery_tag=102, multiple=True))
    assert [t for t, f in futures.items() if f.done()] == [101, 102]
    assert list(ch.confirmations) == [103, 104]
    await publisher._on_confirm_frame(Basic.Nack(delivery_tag=103))
    assert isinstance(futures[103].exception(), aiormq.exceptions.DeliveryError)
    ack = Basic.Ack(delivery_tag=999, multiple=True)
    await publisher._on_confirm_frame(ack)
    assert futures[104].result() is ack
    assert not ch.confirmations
