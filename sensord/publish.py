"""Publishes AlertEvents to `<prefix>.alerts` with publisher confirms, in order.

Until the SQLite outbox lands, pending events live in a bounded in-memory queue: an event
leaves it only when RabbitMQ confirmed it, so a RabbitMQ outage delays alerts, it does not
drop them. Overflow (max_pending) drops the oldest, counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aio_pika.exceptions import PublishError
from faststream.rabbit import RabbitBroker

from sensord.amqp import alerts_exchange
from sensord.config import AmqpSettings
from sensord.events import AlertEvent
from sensord.metrics import Metrics
from sensord.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.publish")


class AlertPublisher:
    def __init__(self, broker: RabbitBroker, settings: AmqpSettings, metrics: Metrics) -> None:
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self._exchange = alerts_exchange(settings)
        self._pending: deque[AlertEvent] = deque()
        self._wakeup = asyncio.Event()
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self.ready = asyncio.Event()  # set by the service once the topology is declared
        self.published = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def enqueue(self, event: AlertEvent) -> None:
        if len(self._pending) >= self._settings.max_pending:
            lost = self._pending.popleft()
            self._metrics.alerts_dropped.inc()
            log.error(
                "pending alert queue full (%d): dropped the oldest event %s (%s %s)",
                self._settings.max_pending,
                lost.event_id,
                lost.rule,
                lost.status,
            )
        self._pending.append(event)
        self._metrics.outbox_pending.set(len(self._pending))
        self._wakeup.set()

    async def _publish_one(self, event: AlertEvent) -> None:
        await self._broker.publish(
            event.model_dump_json().encode(),
            exchange=self._exchange,
            routing_key=event.routing_key,
            persist=True,
            mandatory=True,
            message_id=event.event_id,
            content_type="application/json",
            timeout=self._settings.publish_timeout,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await _first(self.ready.wait(), stop.wait())
        while not stop.is_set():
            if not self._pending:
                self._wakeup.clear()
                await _first(self._wakeup.wait(), stop.wait())
                continue
            await self._step()

    async def _step(self) -> bool:
        """Try the head event once; True when it left the queue."""
        event = self._pending[0]
        try:
            await self._publish_one(event)
        except PublishError:
            self._metrics.alerts_unroutable.inc()
            log.error(
                "RabbitMQ returned alert %s (%s): no queue is bound to %s with routing key %r;"
                " check the channels' severities",
                event.event_id,
                event.rule,
                self._settings.exchange,
                event.routing_key,
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure means: keep it, retry
            self._metrics.amqp_connected.set(0)
            self._error_log.warning(
                "cannot publish to RabbitMQ (%s: %s); %d alert event(s) held, retrying",
                type(exc).__name__,
                exc,
                len(self._pending),
            )
            await asyncio.sleep(min(self._settings.reconnect_interval, 1.0))
            return False
        else:
            self.published += 1
            self._metrics.amqp_connected.set(1)
        self._pending.popleft()
        self._metrics.outbox_pending.set(len(self._pending))
        return True

    async def flush(self, grace: float) -> int:
        """On stop: keep publishing for up to `grace` seconds; returns what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._pending and not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), grace)
        if not self.ready.is_set():
            return len(self._pending)
        while self._pending and loop.time() < deadline:
            try:
                await asyncio.wait_for(self._step(), max(deadline - loop.time(), 0.01))
            except TimeoutError:
                break
        return len(self._pending)


async def _first(*aws: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
