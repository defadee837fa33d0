"""Retry tiers and the quarantine are quorum queues; the classic ones of earlier releases
are migrated in place when empty and kept (with their messages) when not.

Against the shared RabbitMQ, one `[amqp] prefix` per test; queue types are read with
`rabbitmqctl list_queues` (a declaration's reply does not say a queue's type).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import (
    channel_queues,
    declare_queue_once,
    declare_topology,
    quarantine_queue,
    retry_queue_name,
)
from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.ingest.quarantine import Quarantine
from sensord.ingest.settings import IngestSettings
from sensord.notify.consumer import Notifier
from sensord.notify.registry import ChannelSettings
from sensord.ops.metrics import Metrics
from tests.support import (
    AMQP_URL,
    delete_amqp,
    get_queue_messages,
    make_event,
    publish_events,
    uid,
    wait_for,
)

# tiers retry.200ms and retry.400ms
SHORT = ChannelSettings.model_validate(
    {"name": "ops", "type": "console", "retry": {"max_attempts": 3, "delay": "200ms"}}
)
# one tier, retry.2s: long enough for a message to still be there when sensord starts
LONG = ChannelSettings.model_validate(
    {"name": "ops", "type": "console", "retry": {"max_attempts": 2, "delay": "2s"}}
)


def queue_types(prefix: str) -> dict[str, tuple[str, str]]:
    """name -> (type, arguments as rabbitmqctl prints them) of the queues under `prefix.`"""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "type", "arguments"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    types = {}
    for line in out.splitlines():
        name, kind, arguments = [*line.split("\t"), "", ""][:3]
        if name.startswith(f"{prefix}."):
            types[name] = (kind, arguments)
    return types


@pytest.fixture
async def amqp() -> AsyncIterator[AmqpSettings]:
    settings = AmqpSettings.model_validate(
        {"url": AMQP_URL, "prefix": f"t{uid()}", "reconnect_interval": 0.2}
    )
    yield settings
    names = [settings.quarantine_queue]
    for ch in (SHORT, LONG):
        names += [spec.name for spec in channel_queues(settings, ch)]
    await delete_amqp(settings.prefix, sorted(set(names)))


async def declare_earlier_release(
    settings: AmqpSettings, channel: ChannelSettings, tiers_ms: list[int]
) -> None:
    """The queues as earlier releases declared them (literally): tiers and quarantine classic."""
    work = settings.notify_queue(channel.name)
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue(
            settings.dead_queue(channel.name), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await ch.declare_queue(
            work,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.dead_queue(channel.name),
            },
        )
        for ms in tiers_ms:
            await ch.declare_queue(
                retry_queue_name(settings, channel.name, ms / 1000),
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": work,
                },
            )
        # FastStream's RabbitQueue(name, durable=True) adds x-queue-type: classic
        await ch.declare_queue(
            settings.quarantine_queue, durable=True, arguments={"x-queue-type": "classic"}
        )


async def publish(queue: str, body: bytes) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        await ch.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue,
            mandatory=True,
        )


async def declare_all(settings: AmqpSettings, channel: ChannelSettings) -> None:
    """What a start declares: the channel's topology, then the edge's quarantine."""
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        await declare_topology(await conn.channel(), settings, [channel])
    await declare_queue_once(settings, quarantine_queue(settings))


async def test_a_new_install_declares_quorum_tiers_and_quarantine(amqp: AmqpSettings) -> None:
    settings = amqp.model_copy(update={"quorum_group_size": 1})
    await declare_all(settings, SHORT)
    await declare_all(settings, SHORT)  # idempotent
    types = queue_types(settings.prefix)
    assert {name: kind for name, (kind, _) in types.items()} == {
        f"{settings.prefix}.notify.ops": "quorum",
        f"{settings.prefix}.notify.ops.dead": "quorum",
        f"{settings.prefix}.notify.ops.retry.200ms": "quorum",
        f"{settings.prefix}.notify.ops.retry.400ms": "quorum",
        f"{settings.prefix}.quarantine": "quorum",
    }
    for name in (retry_queue_name(settings, "ops", 0.2), settings.quarantine_queue):
        assert '{"x-quorum-initial-group-size",1}' in types[name][1], types[name]
    tier = types[retry_queue_name(settings, "ops", 0.4)][1]
    for argument in ("x-dead-letter-strategy", "at-least-once", "x-overflow", "reject-publish"):
        assert argument in tier, tier
    assert '{"x-message-ttl",400}' in tier, tier


async def test_a_message_in_a_quorum_tier_comes_back_to_the_work_queue_after_its_ttl(
    amqp: AmqpSettings,
) -> None:
    await declare_all(amqp, SHORT)
    tier = retry_queue_name(amqp, "ops", 0.4)
    sent = time.monotonic()
    await publish(tier, b"retry me")
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        work = await (await conn.channel()).declare_queue(amqp.notify_queue("ops"), passive=True)
        got = None
        for _ in range(100):
            if (got := await work.get(no_ack=True, fail=False)) is not None:
                break
            await asyncio.sleep(0.05)
    assert got is not None, "not dead-lettered back"
    assert time.monotonic() - sent >= 0.35  # held for its TTL (400 ms)
    assert got.body == b"retry me"
    deaths: Any = (got.headers or {})["x-death"]
    assert deaths[0]["reason"] == "expired"
    assert deaths[0]["queue"] == tier


async def test_empty_classic_queues_of_an_earlier_release_are_migrated_once(
    amqp: AmqpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sensord.amqp")
    await declare_earlier_release(amqp, SHORT, [200, 400])
    assert queue_types(amqp.prefix)[amqp.quarantine_queue][0] == "classic"
    await declare_all(amqp, SHORT)
    await declare_all(amqp, SHORT)  # a second start has nothing to migrate
    kinds = {name: kind for name, (kind, _) in queue_types(amqp.prefix).items()}
    assert set(kinds.values()) == {"quorum"}, kinds
    migrated = [r for r in caplog.records if "migrated" in r.getMessage()]
    assert sorted(r.getMessage() for r in migrated) == sorted(
        f"queue {name}: migrated from a classic queue to a quorum queue"
        for name in [*(retry_queue_name(amqp, "ops", d) for d in (0.2, 0.4)), amqp.quarantine_queue]
    )
    assert all(r.levelno == logging.INFO for r in migrated)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_concurrent_starts_migrate_an_empty_classic_tier_without_error(
    amqp: AmqpSettings,
) -> None:
    """Several workers of one install start at once after an upgrade."""
    await declare_earlier_release(amqp, SHORT, [200, 400])
    await asyncio.gather(*(declare_all(amqp, SHORT) for _ in range(4)))
    kinds = {name: kind for name, (kind, _) in queue_types(amqp.prefix).items()}
    assert set(kinds.values()) == {"quorum"}, kinds


class _FailsOnce:
    """A channel whose first send of each event fails (retryable): it goes to a tier."""

    name = "ops"

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.sent: list[str] = []

    async def start(self) -> None:
        pass

    async def send(self, event: AlertEvent) -> None:
        n = self.attempts[event.event_id] = self.attempts.get(event.event_id, 0) + 1
        if n == 1 and event.event_id != "kept":
            raise NotifyError("not yet", retryable=True)
        self.sent.append(event.event_id)

    async def close(self) -> None:
        pass


async def test_a_classic_tier_holding_a_message_is_kept_used_then_migrated_once_empty(
    amqp: AmqpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing lost, sensord not stopped: the kept classic tier still delays retries.

    Publishing to a tier while another process migrates it (between delete and declare
    the queue does not exist) fails: the consumer publishes with mandatory=True on a
    channel with on_return_raises and, on that error, nacks the original with requeue
    (notify/consumer.py `_on_message`), so the event is tried again, not lost."""
    caplog.set_level(logging.INFO, logger="sensord.amqp")
    await declare_earlier_release(amqp, LONG, [2000])
    tier = retry_queue_name(amqp, "ops", 2.0)
    kept = {**make_event(device="kept"), "event_id": "kept"}
    await publish(tier, json.dumps(kept).encode())  # waits 2 s in the classic tier
    channel = _FailsOnce()
    notifier = Notifier(amqp, [LONG], [channel], Metrics())
    try:
        await notifier.start()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"{tier} is a classic queue" in warnings[0].getMessage()
        assert "holding 1 message(s)" in warnings[0].getMessage()
        assert queue_types(amqp.prefix)[tier][0] == "classic"
        fresh = make_event(device="fresh")
        await publish_events(amqp.prefix, [fresh])
        # the kept message expires into the work queue; the fresh one fails, waits in the
        # kept tier and comes back
        await wait_for(lambda: len(channel.sent) == 2, timeout=20)
        assert sorted(channel.sent) == sorted(["kept", fresh["event_id"]])
        assert channel.attempts[fresh["event_id"]] == 2
    finally:
        await notifier.stop(grace=1)
    caplog.clear()
    await declare_all(amqp, LONG)  # a later start: the tier is empty now
    assert queue_types(amqp.prefix)[tier][0] == "quorum"
    assert any(f"queue {tier}: migrated" in r.getMessage() for r in caplog.records)


async def test_a_classic_quarantine_holding_messages_is_kept_and_used_then_migrated(
    amqp: AmqpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    from sensord.amqp.topology import make_broker

    caplog.set_level(logging.INFO, logger="sensord.amqp")
    await declare_earlier_release(amqp, SHORT, [200, 400])
    queue = amqp.quarantine_queue
    await publish(queue, b'{"reason": "from before"}')
    broker = make_broker(amqp)
    quarantine = Quarantine(broker, amqp, IngestSettings(), Metrics())
    stop = asyncio.Event()
    runner = asyncio.create_task(quarantine.run(stop))
    try:
        await broker.start()
        await quarantine.declare()
        quarantine.ready.set()
        quarantine.refuse(b"t/x", b"junk", "not_json", "new")
        await wait_for(lambda: quarantine.published == 1)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await broker.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{queue} is a classic queue" in w and "1 message(s)" in w for w in warnings)
    assert queue_types(amqp.prefix)[queue][0] == "classic"
    bodies = [json.loads(m.body) for m in await get_queue_messages(queue)]  # a user reads them
    assert [b.get("reason") for b in bodies] == ["from before", "not_json"]
    await declare_queue_once(amqp, quarantine_queue(amqp))  # a later start, once empty
    assert queue_types(amqp.prefix)[queue][0] == "quorum"
