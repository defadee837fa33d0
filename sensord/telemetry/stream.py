"""Every accepted reading to the RabbitMQ stream `<prefix>.readings` (or, with
`[telemetry] partitions` N > 1, to the N streams `<prefix>.readings.<i>`), in batches.

The per-reading cost is one `list.append` (`ReadingsStream.append`, the alert pipeline's
tap): no encoding, no lock, no wake-up. Everything else happens on two small tasks:

- the ticker, every `batch` seconds, moves what arrived into the buffer (a deque) and
  bounds it: beyond `buffer` readings the oldest are dropped and counted
  (`sensord_telemetry_dropped_total`), so a RabbitMQ outage costs memory up to a bound;
- the sender takes up to `batch_max` readings from the buffer's head (a `Batch`), splits
  them by partition (telemetry/partition.py: a sensor is always in the same one), encodes
  each partition's readings once as a SenML pack (telemetry/senml.py: a `Part`) and
  publishes the parts, each with a publisher confirm, on the stream's own channel.
  Readings leave the buffer for good only when their part is confirmed; a part that fails
  (connection lost, nack, timeout) is published again, the same body, `message_id` and
  `sensord-batched-at`, before anything newer (the parts already confirmed are not):
  at-least-once, in order per stream, so in order per sensor. A copy RabbitMQ stored but
  whose confirm was lost is therefore read twice: consumers that must not count twice skip
  a `message_id` already seen.

Alerts keep priority: the stream has its own channel on the process's publishing
connection (amqp/shared.py, beside the outbox drain's channel, which it never touches;
the connection's writer sends each channel's write whole, so a batch of readings goes
between two batches of alerts, never inside one), and while the drain reports a backlog
(`gate`, its `caught_up` event) the
sender holds its batches back (at most MAX_HOLD seconds at a stretch; the buffer takes
them meanwhile). One batch is in flight at a time, its parts (one per stream) side by
side: at up to 1,000 readings a batch that is far above the ingest rate, and it keeps the
order per stream without bookkeeping. A part that keeps failing holds back the batches
behind it in every partition (the buffer takes them), not only in its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.exceptions import ChannelPreconditionFailed
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.events import Reading
from sensord.ops.aio import first
from sensord.ops.ratelimit import RateLimitedLog
from sensord.telemetry.partition import partitioner
from sensord.telemetry.senml import CONTENT_TYPE, PackEncoder
from sensord.telemetry.settings import TelemetrySettings

log = logging.getLogger("sensord.telemetry")

# the longest the sender holds back while the alert drain has a backlog
MAX_HOLD = 10.0
# on stop, how long the sender may finish its publish in flight before it is cancelled
SENDER_GRACE = 1.0


def stream_arguments(settings: TelemetrySettings) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": settings.max_age_argument}
    if settings.stream_max_bytes is not None:
        args["x-max-length-bytes"] = settings.stream_max_bytes
    return args


@dataclass(slots=True, eq=False)  # eq=False: a batch removes its confirmed part by identity
class Part:
    """One message: a batch's readings of one partition, its SenML body, its id (kept when
    re-sent)."""

    partition: int
    message_id: str
    count: int
    body: bytes
    attempts: int = 0


@dataclass(slots=True)
class Batch:
    """Readings taken from the buffer together: one part per partition present, the ones
    not yet confirmed; `batched_at` (epoch s, when taken, as the `sensord-batched-at`
    header's text) is on every part's every copy."""

    batched_at: str
    parts: list[Part]

    @property
    def count(self) -> int:
        """Readings of the parts not yet confirmed."""
        return sum(part.count for part in self.parts)


class _PartFailed(Exception):  # noqa: N818 - a wrapper of the failure, not an error of its own
    """A part's publish failed: which stream, and why (the log names the stream)."""

    def __init__(self, queue: str, cause: Exception) -> None:
        super().__init__(f"{queue}: {cause}")
        self.queue = queue
        self.cause = cause


class ReadingsStream:
    def __init__(
        self,
        settings: TelemetrySettings,
        amqp: AmqpSettings,
        *,
        gate: asyncio.Event | None = None,
        link: SharedConnection | None = None,
    ) -> None:
        """`link`: the process's publishing connection; without one (a stream alone:
        tests, benchmarks) a connection of its own, closed by `close`."""
        self._settings = settings
        self._amqp = amqp
        # partition i's stream at index i; one `<prefix>.readings` when partitions == 1
        self.queues = settings.stream_names(amqp)
        self.queue = self.queues[0]
        self._partition = partitioner(settings.partition_by, settings.partitions)
        self._link = link if link is not None else SharedConnection(amqp, "publish")
        self._owns_link = link is None
        self._gate = gate
        # the pipeline appends here (the hot path); the ticker empties it into _buffer
        self._incoming: list[Reading] = []
        self.append = self._incoming.append
        self._buffer: deque[Reading] = deque()
        self._pending: Batch | None = None  # taken from the buffer, not yet confirmed
        self._sending = False  # _pending is in flight (its confirm may still come)
        self._encoder = PackEncoder()
        self._ids = itertools.count(1)
        self._run = uuid.uuid4().hex[:12]  # message ids unique across restarts
        self._wake = asyncio.Event()
        self._held_since: float | None = None
        self._channel: AbstractChannel | None = None
        self._declared = False
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self._drop_log = RateLimitedLog(log, interval=30.0, burst=1)
        self.published = 0  # readings confirmed by RabbitMQ
        self.dropped = 0  # readings dropped: buffer full, or left at stop
        self.messages = 0  # messages confirmed
        self.resent = 0  # messages published again after a failure
        self.connected = False

    # ---- the buffer

    @property
    def buffered(self) -> int:
        """Readings accepted but not yet confirmed by RabbitMQ."""
        pending = self._pending.count if self._pending is not None else 0
        return len(self._incoming) + len(self._buffer) + pending

    def absorb(self) -> None:
        """What arrived since the last tick into the buffer; the oldest beyond the bound out."""
        incoming = self._incoming
        if incoming:
            self._buffer.extend(incoming)
            incoming.clear()  # the same list: the pipeline's bound append stays valid
        pending = self._pending
        excess = len(self._buffer) + (pending.count if pending else 0) - self._settings.buffer
        if excess <= 0:
            return
        dropped = 0
        if pending is not None and not self._sending:
            # the oldest: a batch that failed and waits to be sent again (not in flight,
            # so it cannot be confirmed after it was counted as dropped)
            self._pending = None
            dropped, excess = pending.count, excess - pending.count
        if excess > 0:
            popleft = self._buffer.popleft
            for _ in range(excess):
                popleft()
            dropped += excess
        if dropped:
            self.dropped += dropped
            self._drop_log.warning(
                "telemetry buffer full (%d readings, RabbitMQ unreachable or slow): "
                "%d oldest reading(s) dropped (sensord_telemetry_dropped_total)",
                self._settings.buffer,
                dropped,
            )

    def _take(self) -> Batch | None:
        buffer = self._buffer
        n = min(len(buffer), self._settings.batch_max)
        if n == 0:
            return None
        # the header's text, fixed now: a copy sent again carries the very same value. Text,
        # not a float header: aio-pika (pamqp) sends a float as a 32-bit one, which at
        # epoch seconds is exact to 128 s only
        batched_at = repr(round(time.time(), 6))
        popleft = buffer.popleft
        readings = [popleft() for _ in range(n)]
        batch_id = f"{self._run}-{next(self._ids)}"
        encode = self._encoder.encode
        if len(self.queues) == 1:
            return Batch(batched_at, [Part(0, batch_id, n, encode(readings))])
        # split here, on the sender task: the per-reading path stays one list.append
        groups: dict[int, list[Reading]] = {}
        partition_of = self._partition
        for r in readings:
            p = partition_of(r)
            group = groups.get(p)
            if group is None:
                groups[p] = [r]
            else:
                group.append(r)
        parts = [
            Part(p, f"{batch_id}-{p}", len(group), encode(group))
            for p, group in sorted(groups.items())
        ]
        return Batch(batched_at, parts)

    # ---- the connection

    @property
    def declared(self) -> bool:
        """Connected, and the stream declared (at start, or after a failure, again)."""
        return self._declared

    async def _exchange(self) -> AbstractExchange:
        if self._channel is None:
            self._channel = await self._link.channel(publisher_confirms=True, on_return_raises=True)
        if not self._declared:
            await self._declare()
        return self._channel.default_exchange

    async def _declare(self) -> None:
        """The stream queues, each on a channel of its own (a refusal closes the channel)."""
        for queue in self.queues:
            await self._declare_one(queue)
        self._declared = True
        log.info("publishing readings to the RabbitMQ %s", self.describe())

    async def _declare_one(self, queue: str) -> None:
        channel = await self._link.channel()
        try:
            await channel.declare_queue(
                queue, durable=True, arguments=stream_arguments(self._settings)
            )
        except ChannelPreconditionFailed as exc:
            # the stream exists with other arguments (retention changed in the config):
            # publish to it as it is; a RabbitMQ policy changes a stream's retention
            log.warning(
                "stream %s exists with other arguments than [telemetry] asks (%s); "
                "publishing to it as it is",
                queue,
                exc,
            )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    def describe(self) -> str:
        """`stream x.readings`, or `streams x.readings.0 … x.readings.3` (logs)."""
        if len(self.queues) == 1:
            return f"stream {self.queue}"
        return f"streams {self.queues[0]} … {self.queues[-1]}"

    async def close(self) -> None:
        """Close the stream's channel (the shared connection is its owner's to close)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 2.0)
        if self._owns_link:
            await self._link.close()

    # ---- publishing

    async def _publish(self, batch: Batch) -> None:
        """The batch's unconfirmed parts side by side (each to its own stream, so the order
        per stream holds); a confirmed part leaves the batch at once, so a failure of one
        leaves only the unconfirmed ones to publish again. Raises the first failure."""
        parts = list(batch.parts)
        if not parts:  # all confirmed just before a deadline cut the batch short
            return
        exchange = await self._exchange()
        if len(parts) == 1:
            await self._publish_part(exchange, batch, parts[0])
            return
        results = await asyncio.gather(
            *(self._publish_part(exchange, batch, part) for part in parts),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _publish_part(self, exchange: AbstractExchange, batch: Batch, part: Part) -> None:
        if part.attempts:
            self.resent += 1
        part.attempts += 1
        queue = self.queues[part.partition]
        try:
            await exchange.publish(
                aio_pika.Message(
                    part.body,
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=part.message_id,
                    app_id="sensord",
                    headers={
                        "sensord-readings": part.count,
                        "sensord-partition": part.partition,
                        "sensord-batched-at": batch.batched_at,
                    },
                ),
                routing_key=queue,
                mandatory=True,  # no stream (deleted?): returned, then declared again
                timeout=self._amqp.publish_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _PartFailed(queue, exc) from exc
        # confirmed: out of the batch and counted at once (a sibling's failure, or the
        # flush's deadline cancelling the rest, must not send it again)
        batch.parts.remove(part)
        self.published += part.count
        self.messages += 1

    async def send(self, stop: asyncio.Event | None = None, deadline: float | None = None) -> bool:
        """Publish the buffer, one confirmed batch at a time, until it is empty (True),
        a publish failed (False), `stop` is set or the monotonic `deadline` passed."""
        while True:
            if stop is not None and stop.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._pending is None:
                self._pending = self._take()
                if self._pending is None:
                    return True
            batch = self._pending
            self._sending = True
            try:
                if deadline is None:
                    await self._publish(batch)
                else:
                    await asyncio.wait_for(
                        self._publish(batch), max(deadline - time.monotonic(), 0.01)
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: the unconfirmed parts stay
                self._failed(exc)
                return False
            finally:
                self._sending = False
            self._pending = None
            self.connected = True

    def _failed(self, exc: BaseException) -> None:
        self.connected = False
        # a returned message: the stream may be gone; declare it again. The robust
        # connection and its channel reopen themselves after a cut (as the drain's do)
        self._declared = False
        if isinstance(exc, _PartFailed):
            where, exc = f"stream {exc.queue}", exc.cause
        else:
            where = self.describe()
        self._error_log.warning(
            "cannot publish readings to RabbitMQ %s (%s: %s); %d reading(s) buffered, retrying",
            where,
            type(exc).__name__,
            exc,
            self.buffered,
        )

    def _held(self) -> bool:
        """While the alert drain has a backlog, telemetry waits (up to MAX_HOLD)."""
        gate = self._gate
        if gate is None or gate.is_set():
            self._held_since = None
            return False
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        return now - self._held_since < MAX_HOLD

    # ---- the tasks

    async def run(self, stop: asyncio.Event) -> None:
        """The ticker, and the sender beside it, until `stop` (then `flush` takes over)."""
        sender = asyncio.create_task(self._sender(stop), name="telemetry-sender")
        try:
            while not stop.is_set():
                await first(stop.wait(), asyncio.sleep(self._settings.batch))
                self.absorb()
                self._wake.set()
        finally:
            self._wake.set()
            # a publish in flight gets its confirm (else the flush would send it again);
            # a connect hanging on an unreachable host does not hold up the stop
            done, _ = await asyncio.wait([sender], timeout=SENDER_GRACE)
            if done:
                sender.result()  # an unexpected error of the sender surfaces here
            else:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _sender(self, stop: asyncio.Event) -> None:
        # connect and declare the stream at start, not with the first batch: consumers can
        # attach before readings flow, and the connect's cost is not paid mid-ingest
        try:
            await self._exchange()
        except Exception as exc:  # noqa: BLE001 - unreachable: retried with the first batch
            self._failed(exc)
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if stop.is_set() or self._held():
                continue
            if not await self.send(stop):
                await first(stop.wait(), asyncio.sleep(self._amqp.reconnect_interval))

    async def flush(self, grace: float) -> int:
        """On stop, after ingest ended: publish what is buffered for up to `grace` seconds,
        then close; what is left is counted as dropped and returned."""
        deadline = time.monotonic() + grace
        self.absorb()
        while self.buffered and time.monotonic() < deadline:
            if not await self.send(deadline=deadline):
                await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
        left = self.buffered
        if left:
            self.dropped += left
            log.error(
                "%d reading(s) not published to the %s within the %gs stop grace: "
                "dropped (sensord_telemetry_dropped_total)",
                left,
                self.describe(),
                grace,
            )
            self._incoming.clear()
            self._buffer.clear()
            self._pending = None
        await self.close()
        return left


class StreamMetrics(Collector):
    """The stream's counters, read at scrape time (plain ints on the stream)."""

    def __init__(self, stream: ReadingsStream) -> None:
        self._s = stream

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._s
        yield CounterMetricFamily(
            "sensord_telemetry_published",
            "Readings published to the readings stream and confirmed by RabbitMQ",
            value=s.published,
        )
        yield CounterMetricFamily(
            "sensord_telemetry_dropped",
            "Readings never published to the stream: buffer full, or still buffered at stop",
            value=s.dropped,
        )
        yield CounterMetricFamily(
            "sensord_telemetry_messages",
            "Messages (SenML packs) confirmed on the readings stream",
            value=s.messages,
        )
        yield CounterMetricFamily(
            "sensord_telemetry_resent",
            "Messages published again after a failure (a consumer may see them twice)",
            value=s.resent,
        )
        yield GaugeMetricFamily(
            "sensord_telemetry_buffered",
            "Readings accepted and not yet confirmed on the stream",
            value=s.buffered,
        )
