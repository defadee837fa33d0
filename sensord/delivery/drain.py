"""Drains the outbox to `<prefix>.alerts` with publisher confirms, in order per alert.

Rows go out in batches with several publishes in flight (FACTS.md: one at a time ≈ 1,600/s,
256 in flight ≈ 4,500/s). A batch never holds two rows of the same fingerprint, so the
events of one alert reach RabbitMQ in the order they were recorded, whatever fails. A row
is deleted only once its own confirm arrived; after a failure the unconfirmed rows are
retried (a consumer may then see an event twice: event ids make that harmless).

The drain has its own connection and publishes with aiormq's `basic_publish(wait=False)`:
through FastStream (`broker.publish`) each publish holds its channel's lock until its
frame is written, one event-loop pass per message, and a backlog of 10,000 alerts drained
at ~500/s in a process that also notifies (bench.latency); see `_publish_batch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq import Channel as RawChannel
from aiormq.exceptions import PublishError
from pamqp.commands import Basic

from sensord.amqp.headers import REPEAT_HEADER
from sensord.amqp.settings import AmqpSettings
from sensord.delivery.outbox import Outbox, OutboxRow
from sensord.ops.aio import first
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.publish")

BATCH = 256
# the longest the notify consumers of the same process wait for a backlog to drain
MAX_HOLD = 10.0


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
    def __init__(self, settings: AmqpSettings, outbox: Outbox, metrics: Metrics) -> None:
        self._settings = settings
        self._outbox = outbox
        self._metrics = metrics
        self._wakeup = asyncio.Event()
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self.ready = asyncio.Event()  # set by the service once the topology is declared
        # clear while a backlog is being published: in one process with the notify role,
        # its consumers wait on it, so held alerts reach RabbitMQ (durable) first
        self.caught_up = asyncio.Event()
        self.caught_up.set()
        self.published = 0

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def wake(self) -> None:
        """Call after committing new rows."""
        self._wakeup.set()

    async def _raw_channel(self) -> RawChannel:
        """The confirm channel of the drain's own robust connection (reopened by aio-pika
        after a connection loss; until then this raises and the batch is retried)."""
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(
                self._settings.url.get_secret_value(),
                reconnect_interval=self._settings.reconnect_interval,
                timeout=self._settings.publish_timeout,
            )
        if self._channel is None:
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        raw = await self._channel.get_underlay_channel()
        assert isinstance(raw, RawChannel)  # basic_publish(wait=...) is on the class only
        return raw

    async def _publish_batch(self, rows: list[OutboxRow]) -> list[BaseException | None]:
        """Publish every row, then wait for all their confirms; one result per row (None:
        confirmed). `wait=False` hands each frame to aiormq's writer without waiting for
        it to be written, so the batch goes out in one pass instead of one per message."""
        try:
            channel = await self._raw_channel()
        except Exception as exc:  # noqa: BLE001 - unreachable: every row failed alike
            return [exc] * len(rows)
        exchange = self._settings.exchange

        async def publish(row: OutboxRow) -> None:
            await channel.basic_publish(
                row.body,
                exchange=exchange,
                routing_key=row.routing_key,
                properties=Basic.Properties(
                    delivery_mode=2,
                    message_id=row.event_id,
                    content_type="application/json",
                    headers=None if row.repeat_for is None else {REPEAT_HEADER: row.repeat_for},
                ),
                mandatory=True,
                wait=False,
            )

        timeout = TimeoutError(f"no confirm within {self._settings.publish_timeout:g}s")
        if len(rows) == 1:
            # the common case, one alert: published from this task, its frame is queued for
            # aiormq's writer now rather than a loop pass later in a task of its own
            try:
                async with asyncio.timeout(self._settings.publish_timeout):
                    await publish(rows[0])
            except TimeoutError:
                return [timeout]
            except Exception as exc:  # noqa: BLE001 - returned, handled as the batch's are
                return [exc]
            return [None]
        # one timeout for the batch, not a timer per message
        tasks = [asyncio.ensure_future(publish(row)) for row in rows]
        _, pending = await asyncio.wait(tasks, timeout=self._settings.publish_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return [
            timeout if task in pending else (None if task.cancelled() else task.exception())
            for task in tasks
        ]

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 2.0)
            self._connection = self._channel = None

    async def run(self, stop: asyncio.Event) -> None:
        await first(self.ready.wait(), stop.wait())

        async def stop_wakes() -> None:
            await stop.wait()
            self._wakeup.set()

        # the idle drain waits on `_wakeup` alone, which a stop sets too: a commit's wake()
        # resumes it in the next loop pass (through `first` it took three or four passes,
        # each running whatever readings had arrived meanwhile: an alert's latency)
        stopper = asyncio.ensure_future(stop_wakes())
        try:
            await self._drain(stop)
        finally:
            stopper.cancel()
            self.caught_up.set()  # never leave consumers waiting on a drain that ended

    async def _drain(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        held_since: float | None = None  # when the consumers were last asked to wait
        while not stop.is_set():
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._outbox) > BATCH and held_since is None:
                held_since = loop.time()
                self.caught_up.clear()
            elif held_since is not None and loop.time() - held_since > MAX_HOLD:
                # alerts keep coming faster than they drain: notifying must not starve
                self.caught_up.set()
            ok = await self._step()
            if not ok or len(self._outbox) <= BATCH:
                held_since = None
                self.caught_up.set()
            if not ok:
                await first(stop.wait(), asyncio.sleep(min(self._settings.reconnect_interval, 1.0)))

    async def _step(self) -> bool:
        """Publish one batch; True when every row of it left the outbox."""
        batch = unique_prefix(self._outbox.head(BATCH))
        results = await self._publish_batch(batch)
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
