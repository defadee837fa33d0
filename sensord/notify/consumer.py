"""Channel consumers: RabbitMQ channel queue -> channel, with broker-side retries and a DLQ.

The consumers run on the process's consuming connection (amqp/shared.py: aio-pika's
robust connection on the nodes of `[amqp] url`; on the loss of its node it moves to the
next, where aio-pika restores the channels and consumers); per channel one AMQP channel
with publisher confirms, its own prefetch, and a consumer on `<prefix>.notify.<name>`.

A failed attempt is published to the retry tier `<...>.retry.<delay>` (TTL, dead-letters
back to the channel queue) with `x-sensord-attempts` set; after `max_attempts`, or at once
on a permanent error, it is published to `<...>.dead` with reason headers. The original
is acknowledged only once RabbitMQ confirmed the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from sensord.amqp.failover import NodeRing
from sensord.amqp.headers import (
    ATTEMPTS_HEADER,
    BROKER_HEADERS,
    CHANNEL_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    REPEAT_HEADER,
    header_int,
    header_str,
)
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.amqp.topology import (
    declare_topology,
    matches,
    retry_delay,
    retry_delays,
    retry_queue_name,
    tier_at_least,
)
from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.acks import BatchedAcks
from sensord.notify.base import NotificationChannel
from sensord.notify.dedup import HandledEvents
from sensord.notify.fleet import Fleet, is_suspect
from sensord.notify.order import RetryOrder
from sensord.notify.registry import ChannelSettings
from sensord.notify.render import rfc3339
from sensord.notify.throttle import TokenBucket
from sensord.ops.metrics import Metrics

log = logging.getLogger("sensord.notify")

DLQ_POLL_INTERVAL = 15.0
CLAIM_POLL = 0.1  # while another worker holds an event's claim (notify/dedup.py)
STOP_STEP_TIMEOUT = 2.0  # seconds for each broker round trip while stopping


class ChannelConsumer:
    def __init__(
        self,
        amqp: AmqpSettings,
        settings: ChannelSettings,
        channel: NotificationChannel,
        metrics: Metrics,
        *,
        handled: HandledEvents | None = None,
        gate: asyncio.Event | None = None,
        fleet: Fleet,
    ) -> None:
        self.settings = settings
        self._handled = handled
        self._fleet = fleet  # the other workers: asked before a suspect copy is sent
        self._gate = gate  # while clear, messages wait (the edge's outbox drain goes first)
        self._claimed: set[str] = set()  # event ids being delivered by this consumer
        # per fingerprint while in use: (lock, number of messages holding or awaiting it)
        self._order: dict[str, tuple[asyncio.Lock, int]] = {}
        self.channel = channel
        self._amqp = amqp
        self._metrics = metrics
        self._queue_name = amqp.notify_queue(settings.name)
        self._dead_name = amqp.dead_queue(settings.name)
        self._tiers = retry_delays(settings)
        self._bucket = (
            TokenBucket(settings.rate_limit, time.monotonic()) if settings.rate_limit else None
        )
        self._amqp_channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # messages being handled (_on_message)
        self._idle = asyncio.Event()
        self._idle.set()
        self._acks = BatchedAcks()
        self._retry_order = RetryOrder()  # events parked in a retry tier hold later ones
        self.dead_lettered = asyncio.Event()  # the DLQ poller refreshes the depth on it
        # labelled children looked up once: labels() costs a lock and a dict per call
        self._outcomes = {
            outcome: metrics.notifications.labels(settings.name, outcome)
            for outcome in ("sent", "retried", "dead", "skipped", "throttled", "duplicate", "held")
        }
        self._seconds = metrics.notification_seconds.labels(settings.name)

    async def start(self, connection: AbstractRobustConnection) -> None:
        ch = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await ch.set_qos(prefetch_count=self.settings.prefetch)
        self._amqp_channel = ch
        self._queue = await ch.declare_queue(self._queue_name, passive=True)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace: float) -> None:
        """Stop taking messages, let those in hand finish for up to `grace` seconds."""
        if self._queue is not None and self._tag is not None:
            # the connection may be gone or stuck: never wait on it for long
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._tag), STOP_STEP_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acks.drain(), STOP_STEP_TIMEOUT)
        if self._amqp_channel is not None:
            # the connection is shared (amqp/shared.py) and outlives the consumer: its
            # channel goes now, or aio-pika would restore it after every reconnect
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._amqp_channel.close(), STOP_STEP_TIMEOUT)
        log.debug("channel %s: consumer stopped", self.settings.name)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika runs this in a task of the AMQP channel, which aiormq cancels when
        the channel closes (a connection loss), and so would be whatever it awaits: a
        notification cut there could have reached its target unrecorded, to be sent
        again by the worker RabbitMQ redelivers it to. So each message is handled in a
        task of its own, not awaited here, which finishes (sent, recorded, counted; its
        ack lost with the channel) whatever becomes of the channel."""
        task = asyncio.ensure_future(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        self._inflight += 1
        self._idle.clear()
        self._acks.track(message)
        fleet, event_id = self._fleet, message.message_id
        suspect = is_suspect(message)
        if event_id:
            # from now on the fleet hears "sending" (or "waiting") for it from this worker
            fleet.hold(self.settings.name, event_id, suspect=suspect)
        try:
            if self._gate is not None and not self._gate.is_set():
                await self._gate.wait()
            await self._handle(message, suspect)
        except Exception:
            # A broker error while publishing a copy: leave the original to RabbitMQ.
            log.exception("channel %s: cannot settle a message; requeued", self.settings.name)
            self._acks.forget(message)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if event_id:
                fleet.release(self.settings.name, event_id, suspect=suspect)
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _count(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    async def _handle(self, message: AbstractIncomingMessage, suspect: bool) -> None:
        name = self.settings.name
        headers = dict(message.headers or {})
        attempts = header_int(headers, ATTEMPTS_HEADER)
        try:
            event = AlertEvent.model_validate_json(message.body)
        except ValidationError as exc:
            reason = f"not an alert event: {exc.errors()[0]['msg']}"
            log.error("channel %s: %s; dead-lettered", name, reason)
            await self._to_dead(message, headers, attempts, reason)
            self._count("dead")
            return
        if event.event_id in self._claimed or (
            self._handled is not None and self._handled.seen(name, event.event_id)
        ):
            # notified before (or being notified now), then redelivered: a crash or a cut
            # before the ack. Once only.
            self._acks.settle(message)
            self._count("duplicate")
            return
        self._claimed.add(event.event_id)
        # one alert's events go out in the order they arrived (firing before its
        # resolution), while other alerts' events are delivered concurrently
        fp = event.fingerprint
        lock, users = self._order.get(fp) or (asyncio.Lock(), 0)
        self._order[fp] = (lock, users + 1)
        try:
            async with lock:
                if suspect and await self._sent_before(event.event_id):
                    self._acks.settle(message)
                    self._count("duplicate")
                    return
                await self._deliver(message, headers, event, attempts)
        finally:
            self._claimed.discard(event.event_id)
            lock, users = self._order[fp]
            if users == 1:
                del self._order[fp]
            else:
                self._order[fp] = (lock, users - 1)

    async def _sent_before(self, event_id: str) -> bool:
        """A suspect copy: did another worker send this event (the fleet; it waits for
        their answers), or this process before a restart (the state file's record)?"""
        name, handled = self.settings.name, self._handled
        if await self._fleet.sent_elsewhere(name, event_id):
            return True
        return handled is not None and handled.seen(name, event_id)

    async def _deliver(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        event: AlertEvent,
        attempts: int,
    ) -> None:
        name = self.settings.name
        if (
            not matches(self.settings, event.labels)
            or (event.status == "resolved" and not self.settings.send_resolved)
            or not self._repeat_is_for_me(headers)
        ):
            self._acks.settle(message)
            self._count("skipped")
            return
        if self._tiers and self._retry_order.blocked(event, time.monotonic()):
            # an earlier event of this alert waits in a retry tier: wait behind it
            delay = self._tiers[0]
            await self._republish(
                message, headers, retry_queue_name(self._amqp, name, delay), attempts
            )
            self._retry_order.park(event, time.monotonic(), delay)
            self._count("held")
            return
        if self._bucket is not None and (wait := self._bucket.take(time.monotonic())) > 0:
            delay = tier_at_least(self._tiers, wait)
            await self._republish(
                message, headers, retry_queue_name(self._amqp, name, delay), attempts
            )
            self._retry_order.park(event, time.monotonic(), delay)
            self._count("throttled")
            return
        handled = self._handled
        if handled is not None:
            while not handled.claim(name, event.event_id):
                # another worker sharing the state file is sending this event right now
                if handled.seen(name, event.event_id):
                    self._acks.settle(message)
                    self._count("duplicate")
                    return
                await asyncio.sleep(CLAIM_POLL)
        started = time.perf_counter()
        try:
            await self.channel.send(event)
        except NotifyError as exc:
            if handled is not None:
                handled.release(name, event.event_id)
            await self._failed(message, headers, event, attempts + 1, exc)
        except Exception as exc:
            if handled is not None:
                handled.release(name, event.event_id)
            log.exception("channel %s: unexpected error", name)
            error = NotifyError(f"{type(exc).__name__}: {exc}", retryable=True)
            await self._failed(message, headers, event, attempts + 1, error)
        else:
            if self._handled is not None:
                self._handled.record(name, event.event_id)
            self._fleet.sent(name, event.event_id)
            self._retry_order.settled(event)
            self._acks.settle(message)
            self._count("sent")
        finally:
            self._metrics.notification_seconds.labels(name).observe(time.perf_counter() - started)

    def _repeat_is_for_me(self, headers: dict[str, Any]) -> bool:
        """A repeat names the channels whose repeat interval passed; others skip it."""
        if REPEAT_HEADER not in headers:
            return True
        targets = header_str(headers, REPEAT_HEADER).split(",")
        return "*" in targets or self.settings.name in targets

    async def _failed(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        event: AlertEvent,
        attempts: int,
        exc: NotifyError,
    ) -> None:
        name = self.settings.name
        max_attempts = self.settings.retry.max_attempts
        if exc.retryable and attempts < max_attempts and self._tiers:
            delay = retry_delay(self.settings, attempts)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            delay = tier_at_least(self._tiers, delay)
            headers[ERROR_HEADER] = str(exc)[:500]
            await self._republish(
                message, headers, retry_queue_name(self._amqp, name, delay), attempts
            )
            self._retry_order.park(event, time.monotonic(), delay)
            self._count("retried")
            log.warning(
                "channel %s: attempt %d/%d for %s %s (%s) failed: %s; retrying in %s s",
                name,
                attempts,
                max_attempts,
                event.rule,
                event.status,
                event.event_id,
                exc,
                f"{delay:g}",
            )
            return
        await self._to_dead(message, headers, attempts, str(exc))
        self._retry_order.settled(event)
        self._count("dead")
        log.error(
            "channel %s: gave up on %s %s (%s) after %d attempt(s): %s; dead-lettered to %s",
            name,
            event.rule,
            event.status,
            event.event_id,
            attempts,
            exc,
            self._dead_name,
        )

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        routing_key: str,
        attempts: int,
    ) -> None:
        """Publish a copy, wait for RabbitMQ's confirm, only then ack the original."""
        assert self._amqp_channel is not None
        for key in BROKER_HEADERS:
            headers.pop(key, None)
        headers[ATTEMPTS_HEADER] = attempts
        headers[CHANNEL_HEADER] = self.settings.name
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type or "application/json",
            message_id=message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._amqp_channel.default_exchange.publish(
            copy, routing_key=routing_key, mandatory=True, timeout=self._amqp.publish_timeout
        )
        self._acks.settle(message)  # only now that RabbitMQ confirmed the copy

    async def _to_dead(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempts: int,
        reason: str,
    ) -> None:
        headers[ERROR_HEADER] = reason[:500]
        headers[DEAD_AT_HEADER] = rfc3339(datetime.now(UTC).replace(microsecond=0))
        await self._republish(message, headers, self._dead_name, attempts)
        self.dead_lettered.set()


class Notifier:
    """The notify role: topology, one consumer per channel, the DLQ depth gauge."""

    def __init__(
        self,
        amqp: AmqpSettings,
        channel_settings: list[ChannelSettings],
        channels: list[NotificationChannel],
        metrics: Metrics,
        *,
        dlq_poll_interval: float = DLQ_POLL_INTERVAL,
        handled: HandledEvents | None = None,
        gate: asyncio.Event | None = None,
        link: SharedConnection | None = None,
    ) -> None:
        """`link`: the process's consuming connection; without one (a notifier alone:
        tests) a connection of its own, closed by `stop`."""
        self._amqp = amqp
        self._settings = channel_settings
        self._metrics = metrics
        self._poll_interval = dlq_poll_interval
        # the other workers of this prefix, asked before a suspect copy is sent
        self.fleet = Fleet(
            amqp,
            seen=handled.seen if handled is not None else None,
            on_peers=metrics.fleet_peers.set,
        )
        self.consumers = [
            ChannelConsumer(amqp, s, c, metrics, handled=handled, gate=gate, fleet=self.fleet)
            for s, c in zip(channel_settings, channels, strict=True)
        ]
        self._connection: AbstractRobustConnection | None = None
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._link = link if link is not None else SharedConnection(amqp, "consume", metrics)
        self._owns_link = link is None

    @property
    def ring(self) -> NodeRing:
        """The consuming connection's nodes (which one it is on, its moves)."""
        return self._link.ring

    async def start(self) -> None:
        """Connect, declare the topology, start consuming. Raises while RabbitMQ is
        unreachable (OSError, an AMQPError, TimeoutError): AmqpLink retries, after `stop`."""
        self._connection = await self._link.connect()
        setup = await self._link.channel()
        await declare_topology(setup, self._amqp, self._settings)
        await setup.close()
        if self.consumers:  # before the consumers: a suspect copy asks it at once
            await self.fleet.start(self._connection)
        for consumer in self.consumers:
            await consumer.start(self._connection)
        if self.consumers:  # no channel, no dead-letter queue to watch
            self._poller = asyncio.create_task(self._poll_dlq(), name="dlq-depth")

    async def stop(self, grace: float = 10.0) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._poller, STOP_STEP_TIMEOUT)
        await asyncio.gather(*(c.stop(grace) for c in self.consumers))
        await self.fleet.stop()
        if self._owns_link:
            await self._link.close()
        log.debug("notify: stopped")

    async def dlq_depths(self) -> dict[str, int]:
        assert self._connection is not None
        depths: dict[str, int] = {}
        ch = await self._connection.channel()
        try:
            for s in self._settings:
                queue = await ch.declare_queue(self._amqp.dead_queue(s.name), passive=True)
                count = queue.declaration_result.message_count
                depths[s.name] = int(count or 0)
        finally:
            with contextlib.suppress(Exception):
                await ch.close()
        return depths

    async def _poll_dlq(self) -> None:
        """Every DLQ_POLL_INTERVAL, and soon after a dead-lettering, by passive declare."""
        waits = [asyncio.create_task(c.dead_lettered.wait()) for c in self.consumers]
        try:
            while True:
                try:
                    for name, depth in (await self.dlq_depths()).items():
                        self._metrics.dlq_depth.labels(name).set(depth)
                except Exception as exc:  # noqa: BLE001 - a gauge must not stop the role
                    log.debug("cannot read DLQ depths: %s", exc)
                for c in self.consumers:
                    c.dead_lettered.clear()
                for w in waits:
                    w.cancel()
                waits = [asyncio.create_task(c.dead_lettered.wait()) for c in self.consumers]
                await asyncio.wait(waits, timeout=self._poll_interval)
                await asyncio.sleep(0.2)  # let a burst of dead-letterings settle
        finally:
            for w in waits:
                w.cancel()
