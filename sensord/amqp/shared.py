"""A process's AMQP connections: at most one that publishes and one that consumes.

RabbitMQ blocks a connection that publishes while a memory or disk alarm is on, and only
such a connection ("Connections that are only used to consume messages will not be
blocked", https://www.rabbitmq.com/docs/alarms); its flow control, too, throttles
publishing connections (https://www.rabbitmq.com/docs/flow-control). A consumer on a
blocked connection could not acknowledge, so its queues would not drain: RabbitMQ's advice
is a connection for publishing and another for consuming. Every role takes channels of
its own on them (docs/architecture.md, "AMQP connections"):

- `publish`: the outbox drain's confirm channel (delivery/drain.py), the FastStream
  broker's channel (the quarantine, amqp/broker.py), the readings stream's channel
  (telemetry/stream.py);
- `consume`: a channel per notify consumer (notify/consumer.py, which also publishes its
  retry and dead-letter copies there, on the channel that acknowledges the original), the
  central rules reader's channels (central/reader.py).

Each is a `FailoverConnection` (amqp/failover.py) with its own `NodeRing`: on the loss of
its node it moves to the next one and aio-pika restores its robust channels there. The
connection is made on first use, fails fast while no node answers (AmqpLink and the roles
retry), and is closed only by `close`, once every role stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustChannel
from aiormq.exceptions import ChannelInvalidStateError

from sensord.amqp.failover import FailoverConnection, NodeRing, connect_robust
from sensord.amqp.settings import AmqpSettings
from sensord.ops.metrics import Metrics

Purpose = Literal["publish", "consume"]


def connection_name(settings: AmqpSettings, purpose: Purpose) -> str:
    """The `connection_name` client property (rabbitmqctl list_connections
    client_properties, the management UI): which sensord, which connection."""
    return f"sensord {settings.prefix} {purpose} {socket.gethostname()}:{os.getpid()}"


class SharedConnection:
    """One connection of a process, shared by roles that each take channels on it."""

    def __init__(
        self, settings: AmqpSettings, purpose: Purpose, metrics: Metrics | None = None
    ) -> None:
        self.purpose = purpose
        self._settings = settings
        self.ring = NodeRing(
            settings,
            purpose,
            on_move=(
                (lambda _old, _new: metrics.amqp_failovers.labels(purpose).inc())
                if metrics is not None
                else None
            ),
        )
        self.name = connection_name(settings, purpose)
        self._connection: FailoverConnection | None = None
        self._lock = asyncio.Lock()  # one connect attempt at a time: one connection

    @property
    def node(self) -> str | None:
        """host:port of the node it is on (None while it is not connected)."""
        return self.ring.connected

    async def connect(self) -> FailoverConnection:
        """The connection: made now if it never was (raises OSError or an AMQPError if no
        node answers: the caller retries). While a made one is reconnecting, waits for it
        up to `publish_timeout` (then TimeoutError)."""
        s = self._settings
        async with self._lock:
            if self._connection is None:
                # fail fast (aio-pika's default): a first connect that finds no node raises
                # instead of leaving a reconnecting task that a stop cannot cancel
                self._connection = await connect_robust(
                    s,
                    self.ring,
                    reconnect_interval=s.reconnect_interval,
                    timeout=s.publish_timeout,
                    client_properties={"connection_name": self.name},
                )
        conn = self._connection
        if not conn.connected.is_set():
            await asyncio.wait_for(conn.connected.wait(), s.publish_timeout)
        return conn

    async def channel(
        self, *, publisher_confirms: bool = True, on_return_raises: bool = False
    ) -> AbstractRobustChannel:
        """A robust channel of its own on the connection (aio-pika reopens it, with its
        qos, consumers and robust declarations, after each reconnect)."""
        conn = await self.connect()
        try:
            channel = conn.channel(
                publisher_confirms=publisher_confirms, on_return_raises=on_return_raises
            )
        except RuntimeError as exc:  # lost between the two lines: "Connection was not opened"
            raise ChannelInvalidStateError(str(exc)) from exc
        await channel
        return channel

    async def move_on(self) -> None:
        """Drop the connection's transport: it reconnects on the ring's next node (after
        failover.LOSS_PAUSE) and restores every robust channel of every role there."""
        conn = self._connection
        transport = conn.transport if conn is not None else None
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.connection.close(), 2.0)

    async def close(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)


async def plain_channel(
    connection: AbstractConnection, *, publisher_confirms: bool = True
) -> AbstractChannel:
    """A channel aio-pika does not restore after a reconnect: for a role whose session
    ends with the connection it ran on and starts over on the next one (the central
    reader: its partition locks are exclusive queues of the lost connection)."""
    channel = aio_pika.Channel(connection, publisher_confirms=publisher_confirms)
    await channel
    return channel


class Connections:
    """The process's `publish` and `consume` connections, each only if a role uses it."""

    def __init__(
        self, settings: AmqpSettings, metrics: Metrics, *, publish: bool, consume: bool
    ) -> None:
        self.publish = SharedConnection(settings, "publish", metrics) if publish else None
        self.consume = SharedConnection(settings, "consume", metrics) if consume else None

    @property
    def any(self) -> SharedConnection:
        """The publishing connection if there is one, else the consuming one (declaring)."""
        link = self.publish or self.consume
        assert link is not None, "a role without RabbitMQ"
        return link

    def nodes(self) -> dict[str, str | None]:
        """/readyz `amqp_nodes`: the node each connection is on."""
        return {
            link.purpose: link.node for link in (self.publish, self.consume) if link is not None
        }

    async def close(self) -> None:
        for link in (self.consume, self.publish):
            if link is not None:
                await link.close()
