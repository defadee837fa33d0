"""RabbitMQ side: the FastStream broker and the topology every role relies on.

Names derive from `[amqp] prefix` (contract, ARCHITECTURE.md "AMQP names"). Declarations
are idempotent, so edge and notify processes can each declare what they use.
"""

from __future__ import annotations

import logging

from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)

from sensord.config import AmqpSettings, ChannelSettings

log = logging.getLogger("sensord.amqp")


def make_broker(settings: AmqpSettings) -> RabbitBroker:
    return RabbitBroker(
        settings.url.get_secret_value(),
        # An edge daemon must start and ingest while RabbitMQ is down (FACTS.md).
        fail_fast=False,
        reconnect_interval=settings.reconnect_interval,
        # Unroutable alerts come back as PublishError instead of vanishing.
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        logger=logging.getLogger("sensord.faststream"),
        # FastStream logs each consumed message at INFO; we count instead.
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
    )


def alerts_exchange(settings: AmqpSettings) -> RabbitExchange:
    return RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True)


def notify_queue(settings: AmqpSettings, channel: ChannelSettings) -> RabbitQueue:
    return RabbitQueue(
        settings.notify_queue(channel.name),
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments={
            # a message the channel gives up on is dead-lettered, never dropped
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": settings.dead_queue(channel.name),
        },
    )


def dead_queue(settings: AmqpSettings, channel: ChannelSettings) -> RabbitQueue:
    return RabbitQueue(settings.dead_queue(channel.name), queue_type=QueueType.QUORUM, durable=True)


def binding_keys(channel: ChannelSettings) -> list[str]:
    """Routing keys are `<severity>.<site>.<kind>`; a channel takes its severities."""
    return [f"{sev}.*.*" for sev in channel.severities]


async def declare_topology(
    broker: RabbitBroker, settings: AmqpSettings, channels: list[ChannelSettings]
) -> None:
    exchange = await broker.declare_exchange(alerts_exchange(settings))
    for ch in channels:
        await broker.declare_queue(dead_queue(settings, ch))
        queue = await broker.declare_queue(notify_queue(settings, ch))
        for key in binding_keys(ch):
            await queue.bind(exchange, routing_key=key)
    log.debug("declared %s and %d channel queue(s)", settings.exchange, len(channels))
