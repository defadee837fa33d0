"""The AsyncAPI 3.0 document of sensord's AMQP interface, via FastStream's specification.

Built on a broker that is never started: the alert publisher and one subscriber per
configured channel, typed with the contract's AlertEvent.
"""

from __future__ import annotations

import json

from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI

from sensord import __version__
from sensord.amqp.topology import alerts_exchange, channel_queues
from sensord.events import AlertEvent
from sensord.ops.config import Settings

DESCRIPTION = (
    "sensord publishes one AlertEvent per alert transition (firing, resolved) to the topic "
    "exchange `<prefix>.alerts` with routing key `<severity>.<site>.<kind>`, persistent, "
    "with publisher confirms. Each notification channel consumes its own quorum queue "
    "`<prefix>.notify.<channel>`; given-up notifications go to `<prefix>.notify.<channel>.dead`."
)


def build_spec(settings: Settings) -> AsyncAPI:
    broker = RabbitBroker(settings.amqp.urls[0], apply_types=False)
    exchange = alerts_exchange(settings.amqp)
    publisher = broker.publisher(
        exchange=exchange,
        routing_key="{severity}.{site}.{kind}",
        title=f"{settings.amqp.exchange}:publish",
        description="Alert transitions from the edge role (routing key <severity>.<site>.<kind>).",
        schema=AlertEvent,
        persist=True,
    )
    del publisher  # registered on the broker: that is all the document needs
    for channel in settings.channels:
        name = settings.amqp.notify_queue(channel.name)
        spec = next(q for q in channel_queues(settings.amqp, channel) if q.name == name)
        queue = RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=" | ".join(spec.bindings),
        )
        subscriber = broker.subscriber(
            queue,
            exchange=exchange,
            title=f"{settings.amqp.notify_queue(channel.name)}:consume",
            description=(
                f"Channel {channel.name!r} ({channel.type}): severities "
                f"{', '.join(channel.severities)}."
            ),
        )

        async def handle(event: AlertEvent) -> None:
            return None

        subscriber(handle)
    return AsyncAPI(
        broker,
        title="sensord",
        version=__version__,
        description=DESCRIPTION,
        schema_version="3.0.0",
    )


def render(settings: Settings) -> str:
    spec = build_spec(settings).to_specification()
    doc = json.loads(spec.to_json())
    # the document must not leak credentials from the AMQP URL
    for server in doc.get("servers", {}).values():
        host = server.get("host", "")
        server["host"] = host.rpartition("@")[2]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
