"""RabbitMQ side: the FastStream broker (edge publishing) and the topology every role relies on.

Names derive from `[amqp] prefix` (contract, ARCHITECTURE.md "AMQP names"). Declarations
are idempotent and go through aio-pika, so the edge role, the notify role and the `dlq`
commands declare exactly the same arguments (a difference is PRECONDITION_FAILED).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.exceptions import ChannelLockedResource

from sensord.amqp.failover import connect_any
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.notify.registry import ChannelSettings

if TYPE_CHECKING:
    from faststream.rabbit import RabbitExchange
    from prometheus_client import CollectorRegistry

    from sensord.amqp.broker import FailoverBroker

log = logging.getLogger("sensord.amqp")

_GLOB_CHARS = frozenset("*?[]#")


def make_broker(
    settings: AmqpSettings,
    registry: CollectorRegistry | None = None,
    link: SharedConnection | None = None,
) -> FailoverBroker:
    """The edge's broker; with `registry`, FastStream's own metrics (publish counts and
    durations, `faststream_*`) are exported next to sensord's on /metrics. Its channel is
    on `link`, the process's publishing connection (amqp/shared.py); without one, on a
    connection of its own that its stop closes."""
    # imported here: `sensord dlq` needs the topology, not FastStream (~1 s to import)
    from faststream.rabbit import Channel  # noqa: PLC0415
    from faststream.rabbit.prometheus import RabbitPrometheusMiddleware  # noqa: PLC0415

    from sensord.amqp.broker import FailoverBroker  # noqa: PLC0415

    middlewares = (
        (RabbitPrometheusMiddleware(registry=registry, app_name="sensord"),)
        if registry is not None
        else ()
    )
    return FailoverBroker(
        link if link is not None else SharedConnection(settings, "publish"),
        owns_link=link is None,
        # An edge daemon must start and ingest while RabbitMQ is down (FACTS.md): start()
        # fails fast (the shared connection's first connect does, amqp/shared.py) and
        # AmqpLink (amqp/connection.py) retries. With fail_fast=False, aio-pika's
        # connection task swallowed the cancellation of a stop during its connect attempt
        # and kept reconnecting: sensord then never exited (seen in make test).
        # Unroutable alerts come back as PublishError instead of vanishing.
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        logger=logging.getLogger("sensord.faststream"),
        # FastStream logs each consumed message at INFO; we count instead.
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        middlewares=middlewares,
    )


def alerts_exchange(settings: AmqpSettings) -> RabbitExchange:
    from faststream.rabbit import ExchangeType, RabbitExchange  # noqa: PLC0415

    return RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True)


def format_delay(seconds: float) -> str:
    """Queue-name form of a delay: `200ms`, `5s`, `300s`."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def retry_delays(channel: ChannelSettings) -> list[float]:
    """The channel's retry tiers, ascending: `delay` doubling, capped by `max_delay`.

    Attempt n (1-based) that fails waits `retry_delay(channel, n)`; a rate-limited channel
    needs at least one tier even with max_attempts = 1.
    """
    retry = channel.retry
    delays: list[float] = []
    steps = max(retry.max_attempts - 1, 1 if channel.rate_limit is not None else 0)
    delay = retry.delay
    for _ in range(steps):
        capped = min(delay, retry.max_delay)
        if capped not in delays:
            delays.append(capped)
        delay *= 2
    return sorted(delays)


def retry_delay(channel: ChannelSettings, attempt: int) -> float:
    """Delay after failed attempt `attempt` (1-based)."""
    delay: float = channel.retry.delay * 2.0 ** (attempt - 1)
    return min(delay, channel.retry.max_delay)


def tier_at_least(delays: list[float], seconds: float) -> float:
    """The shortest tier >= seconds (Retry-After, rate limit), else the longest."""
    for delay in delays:
        if delay >= seconds:
            return delay
    return delays[-1]


def retry_queue_name(settings: AmqpSettings, channel: str, delay: float) -> str:
    return f"{settings.notify_queue(channel)}.retry.{format_delay(delay)}"


def _word(glob: str) -> str:
    """A binding word for a label glob: the literal itself, else `*` (filtered later)."""
    if not glob or _GLOB_CHARS & set(glob) or "." in glob:
        return "*"
    return glob


def binding_keys(channel: ChannelSettings) -> list[str]:
    """Routing keys are `<severity>.<site>.<kind>`; a channel takes its severities.

    With `match`, a literal site or kind becomes that word; a glob becomes `*` and the
    consumer filters the rest (`matches`).
    """
    site = _word(channel.match.site) if channel.match else "*"
    kind = _word(channel.match.kind) if channel.match else "*"
    return [f"{sev}.{site}.{kind}" for sev in channel.severities]


def matches(channel: ChannelSettings, labels: dict[str, str]) -> bool:
    if channel.match is None:
        return True
    return fnmatch.fnmatchcase(labels.get("site", ""), channel.match.site) and (
        fnmatch.fnmatchcase(labels.get("kind", ""), channel.match.kind)
    )


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: list[str] = field(default_factory=list)
    # arguments added by configuration ([amqp] quorum_group_size, delivery_limit): a queue
    # declared before without them is kept as it is (declare_topology), not an error
    optional: dict[str, Any] = field(default_factory=dict)
    # the arguments an earlier release declared this queue with, as a classic queue: such
    # a queue is migrated when empty and kept as it is while it holds messages (_declare)
    legacy: dict[str, Any] | None = None

    @property
    def all_arguments(self) -> dict[str, Any]:
        return {**self.arguments, **self.optional}


def cluster_arguments(settings: AmqpSettings, *, work: bool) -> dict[str, Any]:
    """The quorum queue arguments a cluster configuration adds (none by default)."""
    extra: dict[str, Any] = {}
    if settings.group_size is not None:
        extra["x-quorum-initial-group-size"] = settings.group_size
    if work and settings.delivery_limit is not None:
        # a message redelivered this often is poison: RabbitMQ dead-letters it to the
        # channel's dead queue (x-death reason delivery_limit) instead of looping
        extra["x-delivery-limit"] = settings.delivery_limit
    return extra


def channel_queues(settings: AmqpSettings, channel: ChannelSettings) -> list[QueueSpec]:
    """Every queue of one channel, with the exact declaration arguments."""
    work = settings.notify_queue(channel.name)
    dead = settings.dead_queue(channel.name)
    # The arguments of the first release: changing them is PRECONDITION_FAILED for
    # existing installs. sensord itself publishes to dead/retry queues explicitly.
    work_args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead,
    }
    if channel.type == "alertmanager":
        # The re-send state lives in the consuming process: with competing consumers a
        # process that missed the resolution would keep re-sending the alert as firing.
        # (A type new in 0.2: no existing queue has other arguments.)
        work_args["x-single-active-consumer"] = True
    specs = [
        QueueSpec(
            dead, {"x-queue-type": "quorum"}, optional=cluster_arguments(settings, work=False)
        ),
        QueueSpec(
            work, work_args, binding_keys(channel), optional=cluster_arguments(settings, work=True)
        ),
    ]
    for delay in retry_delays(channel):
        back_to_work: dict[str, Any] = {
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": work,
        }
        specs.append(
            QueueSpec(
                retry_queue_name(settings, channel.name, delay),
                {
                    "x-queue-type": "quorum",
                    **back_to_work,
                    # an expired message stays in the tier until the work queue has
                    # confirmed it (RabbitMQ 3.10+): a work queue without a leader for a
                    # moment delays it instead of losing it (docs/channels.md)
                    "x-dead-letter-strategy": "at-least-once",
                    # at-least-once needs it (with the default drop-head RabbitMQ falls
                    # back to at-most-once); a tier has no length limit, so nothing is refused
                    "x-overflow": "reject-publish",
                },
                optional=cluster_arguments(settings, work=False),
                legacy=back_to_work,  # earlier releases: classic queues
            )
        )
    return specs


def quarantine_queue(settings: AmqpSettings) -> QueueSpec:
    """`<prefix>.quarantine` (ingest/quarantine.py), declared by each edge."""
    return QueueSpec(
        settings.quarantine_queue,
        {"x-queue-type": "quorum"},
        optional=cluster_arguments(settings, work=False),
        # FastStream's RabbitQueue(name, durable=True) of the earlier releases
        legacy={"x-queue-type": "classic"},
    )


async def declare_topology(
    channel: AbstractChannel, settings: AmqpSettings, channels: list[ChannelSettings]
) -> None:
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    for ch in channels:
        for spec in channel_queues(settings, ch):
            queue = await _declare(channel, spec)
            for key in spec.bindings:
                await queue.bind(exchange, routing_key=key)
    log.debug("declared %s and %d channel queue set(s)", settings.exchange, len(channels))


# waiting for another sensord process to migrate a queue (milliseconds, normally)
_LOCK_POLL = 0.1
_LOCK_POLLS = 100


async def _declare(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declare `spec`, with what an existing queue of an earlier release allows.

    RabbitMQ refuses to change a queue's arguments (PRECONDITION_FAILED, which closes the
    channel), and stopping sensord over it would be worse (docs/scale-out.md, Upgrading):
    - a queue that exists without the configured cluster arguments is kept without them;
    - a classic queue of an earlier release (`spec.legacy`) is migrated if it is empty and
      unused: deleted, then declared anew; one holding messages is kept as it is (with a
      warning) until a later start finds it empty. Nothing is deleted that holds a message.
    """
    if not spec.optional and spec.legacy is None:
        return await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    if (queue := await _try_declare(channel, spec.name, spec.all_arguments)) is not None:
        return queue
    if spec.optional and (
        (queue := await _try_declare(channel, spec.name, spec.arguments)) is not None
    ):
        log.warning(
            "queue %s exists with other arguments: kept without %s (recreate it to apply"
            " them: docs/scale-out.md, Upgrading)",
            spec.name,
            ", ".join(sorted(spec.optional)),
        )
        return queue
    if spec.legacy is not None:
        async with _migration_lock(channel, spec.name):
            # another sensord process may have migrated it while this one waited
            if (queue := await _try_declare(channel, spec.name, spec.all_arguments)) is not None:
                return queue
            if (old := await _try_declare(channel, spec.name, spec.legacy)) is not None:
                return await _migrate(channel, spec, spec.legacy, old)
    # neither ours nor an earlier release's: RabbitMQ's refusal is the error to report
    return await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)


async def _try_declare(
    channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> AbstractQueue | None:
    """The queue, or None when it exists with other arguments."""
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        await channel.reopen()  # the refusal closed the channel
        return None


@contextlib.asynccontextmanager
async def _migration_lock(channel: AbstractChannel, name: str) -> AsyncIterator[None]:
    """One sensord process at a time migrates a queue (the workers of an install start
    together). Otherwise a second one could find the queue classic and delete it once the
    first had declared it quorum: RabbitMQ refuses that by closing the whole connection.
    The lock is an exclusive queue, which RabbitMQ frees with a connection that dies."""
    lock = f"{name}.migrating"
    for _ in range(_LOCK_POLLS):
        try:
            await channel.declare_queue(lock, exclusive=True)
            break
        except ChannelLockedResource:  # RESOURCE_LOCKED: another process holds it
            await channel.reopen()
            await asyncio.sleep(_LOCK_POLL)
    else:
        # TimeoutError is transient (amqp/connection.py): declared again at the next try
        raise TimeoutError(f"queue {lock} still held by another connection")
    try:
        yield
    finally:
        await channel.queue_delete(lock)


async def _migrate(
    channel: AbstractChannel, spec: QueueSpec, legacy: dict[str, Any], old: AbstractQueue
) -> AbstractQueue:
    """`old` is the classic queue of an earlier release: the quorum queue that replaces it
    if it is empty and unused, else `old`, kept as it is."""
    held = old.declaration_result
    if not held.message_count and not held.consumer_count:
        try:
            # Under the lock no sensord makes it a quorum queue meanwhile. if_empty and
            # if_unused: a message published or a consumer attached since the declaration
            # keeps it. Through the channel, so that a robust channel forgets the classic
            # declaration instead of restoring it on a reopen.
            await channel.queue_delete(spec.name, if_unused=True, if_empty=True)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            await channel.reopen()
            old = await channel.declare_queue(spec.name, durable=True, arguments=legacy)
            held = old.declaration_result
        else:
            # Until this declaration the queue does not exist and a publish to it is
            # unroutable. sensord publishes to tiers and the quarantine with mandatory=True
            # on channels with on_return_raises, so such a publish fails instead of
            # vanishing: the notify consumer then nacks the original with requeue
            # (notify/consumer.py _on_message); the quarantine keeps the refusal and
            # publishes it again.
            queue = await channel.declare_queue(
                spec.name, durable=True, arguments=spec.all_arguments
            )
            log.info("queue %s: migrated from a classic queue to a quorum queue", spec.name)
            return queue
    log.warning(
        "queue %s is a classic queue of an earlier release holding %d message(s)"
        " (%d consumer(s)): kept as it is; sensord makes it a quorum queue at a later"
        " start once it is empty (docs/scale-out.md, Upgrading)",
        spec.name,
        held.message_count,
        held.consumer_count,
    )
    return old


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> dict[str, Any]:
    """Declare one queue (migrated from an earlier release's arguments, `_declare`) on a
    channel of its own; the arguments it now has, for a second declaration that must
    match (FastStream's, the edge's quarantine)."""
    queue = await _declare(channel, spec)
    return dict(queue.arguments or {})


async def declare_queue_once(settings: AmqpSettings, spec: QueueSpec) -> dict[str, Any]:
    """`declare_queue` over a short-lived connection (tests, tools)."""
    conn = await connect_any(settings)
    async with conn:
        return await declare_queue(await conn.channel(), spec)


async def declare_topology_once(settings: AmqpSettings, channels: list[ChannelSettings]) -> None:
    """Declare over a short-lived connection (edge role, CLI), on the first node that
    answers."""
    conn = await connect_any(settings)
    async with conn:
        await declare_topology(await conn.channel(), settings, channels)
