"""Drains the outbox to `<prefix>.alerts` with publisher confirms, in order per alert.

Rows go out in batches with several publishes in flight (FACTS.md: one at a time ≈ 1,600/s,
256 in flight ≈ 4,500/s). A batch never holds two rows of the same fingerprint, so the
events of one alert reach RabbitMQ in the order they were recorded, whatever fails. A row
is deleted only once its own confirm arrived; after a failure the unconfirmed rows are
retried (a consumer may then see an event twice: event ids make that harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.exceptions import PublishError
from faststream.rabbit import RabbitBroker

from sensord.aio import first
from sensord.amqp import alerts_exchange
from sensord.config import AmqpSettings
from sensord.metrics import Metrics
from sensord.outbox import Outbox, OutboxRow
from sensord.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.publish")

BATCH = 256


def unique_prefix(rows: list[OutboxRow]) -> list[OutboxRow]:
    """The longest head of `rows` with no fingerprint twice."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.fingerprint in seen:
            break
        seen.add(row.fingerprint)
        out.append(row)
    return out


class OutboxDrain:
    def __init__(
        self, broker: RabbitBroker, settings: AmqpSettings, outbox: Outbox, metrics: Metrics
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._outbox = outbox
        self._metrics = metrics
        self._exchange = alerts_exchange(settings)
        self._wakeup = asyncio.Event()
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self.ready = asyncio.Event()  # set by the service once the topology is declared
        self.published = 0

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def wake(self) -> None:
        """Call after committing new rows."""
        self._wakeup.set()

    async def _publish(self, row: OutboxRow) -> None:
        await self._broker.publish(
            row.body,
            exchange=self._exchange,
            routing_key=row.routing_key,
            persist=True,
            mandatory=True,
            message_id=row.event_id,
            content_type="application/json",
            timeout=self._settings.publish_timeout,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await first(self.ready.wait(), stop.wait())
        while not stop.is_set():
            if not self._outbox:
                self._wakeup.clear()
                await first(self._wakeup.wait(), stop.wait())
                continue
            if not await self._step():
                await first(stop.wait(), asyncio.sleep(min(self._settings.reconnect_interval, 1.0)))

    async def _step(self) -> bool:
        """Publish one batch; True when every row of it left the outbox."""
        batch = unique_prefix(self._outbox.head(BATCH))
        results = await asyncio.gather(
            *(self._publish(row) for row in batch), return_exceptions=True
        )
        done: list[int] = []
        failure: BaseException | None = None
        for row, result in zip(batch, results, strict=True):
            if result is None:
                done.append(row.seq)
            elif isinstance(result, PublishError):
                # no queue bound for this routing key: a config problem, not an outage
                done.append(row.seq)
                self._metrics.alerts_unroutable.inc()
                log.error(
                    "RabbitMQ returned alert event %s: no queue is bound to %s with routing"
                    " key %r; check the channels' severities",
                    row.event_id,
                    self._settings.exchange,
                    row.routing_key,
                )
            elif isinstance(result, asyncio.CancelledError):
                raise result
            else:
                failure = result
        self._outbox.delete(done)
        self.published += len(done)
        if failure is None:
            self._metrics.amqp_connected.set(1)
            return True
        self._metrics.amqp_connected.set(0)
        self._error_log.warning(
            "cannot publish to RabbitMQ (%s: %s); %d alert event(s) held, retrying",
            type(failure).__name__,
            failure,
            len(self._outbox),
        )
        return False

    async def flush(self, grace: float) -> int:
        """On stop: keep publishing for up to `grace` seconds; returns what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._outbox and not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), grace)
        if not self.ready.is_set():
            return len(self._outbox)
        while self._outbox and loop.time() < deadline:
            try:
                ok = await asyncio.wait_for(self._step(), max(deadline - loop.time(), 0.01))
            except TimeoutError:
                break
            if not ok:
                await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0)))
        return len(self._outbox)
