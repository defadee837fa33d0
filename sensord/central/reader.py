"""A central rules process's input: the readings streams, each partition owned by one process.

`CentralReader.run` works on the process's consuming connection (amqp/shared.py, the
cluster's nodes in turn), in sessions: one per connection made, each on channels of its
own that aio-pika does not restore (a session ends with its connection), and on them:

- **a lock per partition**: the exclusive queue `<prefix>.rules.lock.<i>`. RabbitMQ lets
  one connection declare it; the queue goes with that connection (a SIGKILL, a lost node,
  a heartbeat timeout), or when the session that declared it ends on a connection that
  stays (it deletes it), and the others, trying every `[central] lock_retry`, get it. The
  lock is the lease: a partition is read by the process that holds it, by no other.
- **taking a partition over**: the further of two checkpoints (central/checkpoint.py), the
  one the previous owner published and the state file's own, gives the alert state to
  adopt and the offset to read from; a partition without either starts at `[central]
  start`.
- **reading**: the partition's stream from that offset (`x-stream-offset`). Each message
  (one edge's batch of readings, SenML) goes through the alert pipeline as an MQTT read
  batch does: every reading to the rules, then one transaction with the state, the
  outbox rows and the stream's next offset, then the ack. A restart resumes right after
  the last message committed: nothing judged twice, nothing skipped. A message seen
  again (the edge re-sent it after a lost confirm: same `message_id`) is skipped, and so
  are late readings (older than the sensor's newest).
- **time**: a reading's "receive time" is its message's `sensord-batched-at` header
  (when its edge batched it), not the wall clock: a replay judges the readings as they
  were judged the first time, and the transitions it repeats get the same event ids
  (alerts/lifecycle.derived_event_id), which the notify side drops as already sent.

Losing the connection loses every lock at once: every partition's state leaves the engine
(`RuleEngine.reset`) and the partitions are taken again, from their checkpoints, once it
is back (on the next node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelLockedResource, ChannelPreconditionFailed
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sensord.amqp.failover import NodeRing
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection, plain_channel
from sensord.central.checkpoint import CONTENT_TYPE, Checkpoint, local_checkpoint, replace_local
from sensord.central.settings import STARTS, CentralSettings
from sensord.events import Reading
from sensord.ops.aio import first
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog
from sensord.ops.settings import parse_duration
from sensord.pipeline import AlertPipeline
from sensord.state.store import StateStore
from sensord.telemetry.senml import decode
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import stream_arguments

log = logging.getLogger("sensord.central")

SEEN_IDS = 4096  # message ids remembered per partition (re-sent copies come soon after)


def lock_queue(prefix: str, partition: int) -> str:
    return f"{prefix}.rules.lock.{partition}"


def checkpoint_queue(prefix: str, partition: int) -> str:
    return f"{prefix}.rules.checkpoint.{partition}"


def members_queue(prefix: str) -> str:
    """Every rules process consumes from it (nothing is ever published there): its
    consumer count is the number of rules processes alive."""
    return f"{prefix}.rules.members"


CHECKPOINT_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-max-length": 1,
    "x-overflow": "drop-head",
}


def start_offset(start: str, now: float | None = None) -> str | datetime:
    """`[central] start` -> the x-stream-offset of a partition with no checkpoint."""
    if start in STARTS:
        return start
    at = (time.time() if now is None else now) - parse_duration(start)
    return datetime.fromtimestamp(at, tz=UTC)


def batched_at(header: object) -> float:
    """The `sensord-batched-at` header: epoch seconds as text (a float header would go as
    a 32-bit float, in 128 s steps); the wall clock when it is absent or unreadable."""
    if isinstance(header, bytes):
        header = header.decode("ascii", "replace")
    if isinstance(header, str | int | float) and not isinstance(header, bool):
        try:
            at = float(header)
        except ValueError:
            return time.time()
        if at == at and at not in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN test
            return at
    return time.time()


@dataclass(slots=True)
class Partition:
    index: int
    stream: str
    next: int | None = None  # offset of the next message to read (committed)
    published: int | None = None  # `next` of the last checkpoint published
    channel: AbstractChannel | None = None
    inbox: asyncio.Queue[AbstractIncomingMessage] = field(default_factory=asyncio.Queue)
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=SEEN_IDS))
    seen_set: set[str] = field(default_factory=set)

    def remember(self, message_id: str) -> bool:
        """False when the id was seen (a re-sent copy)."""
        if message_id in self.seen_set:
            return False
        if len(self.seen) == SEEN_IDS:
            self.seen_set.discard(self.seen[0])
        self.seen.append(message_id)
        self.seen_set.add(message_id)
        return True


class CentralReader:
    """Takes the partitions it can, reads their streams into the alert pipeline."""

    def __init__(
        self,
        central: CentralSettings,
        telemetry: TelemetrySettings,
        amqp: AmqpSettings,
        *,
        pipeline: AlertPipeline,
        state: StateStore,
        metrics: Metrics,
        outage_tolerance: float,
        link: SharedConnection | None = None,
    ) -> None:
        """`link`: the process's consuming connection (else one of its own, closed as
        `run` ends)."""
        self._central = central
        self._amqp = amqp
        self._telemetry = telemetry
        self._pipeline = pipeline
        self._state = state
        self._metrics = metrics
        self._tolerance = outage_tolerance
        self.streams = telemetry.stream_names(amqp)
        self._by = list(telemetry.partition_by)
        self._link = link if link is not None else SharedConnection(amqp, "consume", metrics)
        self._owns_link = link is None
        self._channels: list[AbstractChannel] = []  # this session's
        self._locks: set[int] = set()  # the lock queues this session declared
        self._lost = asyncio.Event()  # this session's connection was lost
        self.owned: dict[int, Partition] = {}
        self.connected = asyncio.Event()  # Health reads it as an edge's MQTT link
        self.sources: list[Any] = []
        # newest (ts, value) per sensor: late readings and repeats skipped
        self._newest: dict[tuple[str, ...], tuple[float, float]] = {}
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self.readings = 0  # readings judged
        self.messages = 0  # stream messages committed
        self.skipped_copies = 0  # messages skipped: same message_id again
        self.late = 0  # readings skipped: older than their sensor's newest
        self.takeovers = 0  # partitions taken (at start or from another process)
        self.checkpoints = 0  # checkpoints published

    # ---- the connection's life

    @property
    def ring(self) -> NodeRing:
        """The consuming connection's nodes (which one it is on, its moves)."""
        return self._link.ring

    async def _channel(
        self, connection: AbstractConnection, *, publisher_confirms: bool = True
    ) -> AbstractChannel:
        channel = await plain_channel(connection, publisher_confirms=publisher_confirms)
        self._channels.append(channel)
        return channel

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                connection: AbstractConnection | None = None
                self._lost = asyncio.Event()
                try:
                    connection = await self._link.connect()
                    # a robust connection calls it on every loss: one session per connection
                    connection.close_callbacks.add(self._on_lost)
                    await self._serve(connection, stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure: a new session, take again
                    self._error_log.warning(
                        "central rules: RabbitMQ %s: %s: %s; partitions released, retrying",
                        self.ring.trying,
                        type(exc).__name__,
                        exc,
                    )
                finally:
                    if connection is not None:
                        connection.close_callbacks.discard(self._on_lost)
                    await self._release(connection)
                if not stop.is_set():
                    await first(stop.wait(), asyncio.sleep(self._amqp.reconnect_interval))
        finally:
            if self._owns_link:
                await self._link.close()

    def _on_lost(self, *_: object) -> None:
        self._lost.set()

    async def _serve(self, connection: AbstractConnection, stop: asyncio.Event) -> None:
        lost = self._lost
        self.connected.set()
        control = await self._channel(connection)
        for i in range(len(self.streams)):
            await control.declare_queue(
                checkpoint_queue(self._amqp.prefix, i), durable=True, arguments=CHECKPOINT_ARGUMENTS
            )
        await self._declare_streams(connection)
        members = await control.declare_queue(
            members_queue(self._amqp.prefix), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await members.consume(_ignore)
        # the others that start with this one register before anyone takes a share
        await first(stop.wait(), lost.wait(), asyncio.sleep(self._central.lock_retry))
        readers: dict[int, asyncio.Task[None]] = {}
        try:
            while not (stop.is_set() or lost.is_set()):
                share = await self._share(control)
                for i in range(len(self.streams)):
                    if len(self.owned) >= share:
                        break
                    if i not in self.owned and await self._try_lock(connection, i):
                        part = await self._take(connection, control, i)
                        readers[i] = asyncio.create_task(
                            self._read(part, lost), name=f"central-read-{i}"
                        )
                for task in list(readers.values()):
                    if task.done():
                        task.result()  # a reader's failure ends the session (all released)
                await self._publish_checkpoints(control)
                await first(
                    stop.wait(),
                    lost.wait(),
                    asyncio.sleep(min(self._central.lock_retry, self._central.checkpoint_interval)),
                )
        finally:
            for task in readers.values():
                task.cancel()
            for task in readers.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if stop.is_set() and not lost.is_set():
            # a clean stop: the last checkpoints, for whoever takes the partitions next
            for part in self.owned.values():
                part.published = None
            with contextlib.suppress(Exception):
                await self._publish_checkpoints(control)

    async def _share(self, control: AbstractChannel) -> int:
        """The partitions this process may hold: an even share among the processes alive
        (ceil(N / processes)), so that rules processes started together split the
        partitions, and the survivors of one that died take its partitions over."""
        q = await control.declare_queue(members_queue(self._amqp.prefix), passive=True)
        alive = max(int(q.declaration_result.consumer_count or 0), 1)
        return -(-len(self.streams) // alive)

    async def _declare_streams(self, connection: AbstractConnection) -> None:
        """The streams, as the edges declare them: a rules process may start first. One
        declared with other arguments (retention changed) is read as it is."""
        for stream in self.streams:
            channel = await plain_channel(connection)
            try:
                await channel.declare_queue(
                    stream, durable=True, arguments=stream_arguments(self._telemetry)
                )
            except ChannelPreconditionFailed:
                pass  # exists with other arguments: the edges' warning says so
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _release(self, connection: AbstractConnection | None) -> None:
        self.connected.clear()
        if self.owned:
            log.warning(
                "central rules: released partition(s) %s; their state left the engine",
                ", ".join(str(i) for i in sorted(self.owned)),
            )
            self.owned.clear()
            self._pipeline.end_batch()
            self._pipeline.engine.reset()
            self._newest.clear()
        channels, self._channels = self._channels, []
        locks, self._locks = self._locks, set()
        for channel in channels:  # the streams' consumers first: nothing more comes in
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), 2.0)
        if locks and connection is not None and not connection.is_closed:
            # the connection is the process's and may stay: the locks go now, not with it
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0), aio_pika.Channel(connection) as channel:
                    for i in sorted(locks):
                        await channel.queue_delete(lock_queue(self._amqp.prefix, i))

    # ---- taking a partition

    async def _try_lock(self, connection: AbstractConnection, i: int) -> bool:
        channel = await plain_channel(connection)
        try:
            await channel.declare_queue(
                lock_queue(self._amqp.prefix, i), exclusive=True, auto_delete=True
            )
        except ChannelLockedResource:
            return False  # another process holds it (the refusal closed the channel)
        self._locks.add(i)
        with contextlib.suppress(Exception):
            await channel.close()
        return True

    async def _take(
        self, connection: AbstractConnection, control: AbstractChannel, i: int
    ) -> Partition:
        stream = self.streams[i]
        prefix = self._amqp.prefix
        remote: Checkpoint | None = None
        queue = await control.get_queue(checkpoint_queue(prefix, i), ensure=False)
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            try:
                remote = Checkpoint.decode(message.body)
            except ValueError as exc:
                log.error("central rules: partition %d: checkpoint ignored: %s", i, exc)
            finally:
                await message.reject(requeue=True)  # it stays for the next owner
        local = local_checkpoint(self._state, stream, i, self._by, len(self.streams))
        chosen, origin = local, "this process's state file"
        if remote is not None and remote.stream == stream and remote.further_than(local):
            replace_local(self._state, local, remote)
            chosen, origin = remote, "the previous owner's checkpoint"
        self._pipeline.adopt(chosen.snapshot, self._tolerance)
        part = Partition(i, stream, next=chosen.next, published=None)
        self.owned[i] = part
        self.takeovers += 1
        where = f"offset {chosen.next}" if chosen.next is not None else f"{self._central.start}"
        log.info(
            "central rules: took partition %d (%s) from %s: %d alert state(s), reading from %s",
            i,
            stream,
            origin if chosen.next is not None else "no checkpoint",
            len(chosen.snapshot.records),
            where,
        )
        part.channel = channel = await self._channel(connection)
        await channel.set_qos(prefetch_count=self._central.prefetch)
        offset: Any = chosen.next if chosen.next is not None else start_offset(self._central.start)
        stream_queue = await channel.declare_queue(stream, passive=True)
        await stream_queue.consume(part.inbox.put, arguments={"x-stream-offset": offset})
        return part

    # ---- reading

    async def _read(self, part: Partition, lost: asyncio.Event) -> None:
        inbox = part.inbox
        while not lost.is_set():
            message = await inbox.get()
            self._handle(part, message)
            await message.ack()

    def _handle(self, part: Partition, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        offset = headers.get("x-stream-offset")
        if not isinstance(offset, int):
            raise RuntimeError(f"stream {part.stream}: a message without x-stream-offset")
        nxt = offset + 1
        message_id = message.message_id
        if part.next is not None and offset < part.next:
            return  # before the checkpoint (a chunk starts earlier than asked)
        if message_id is not None and not part.remember(message_id):
            self.skipped_copies += 1
            self._commit(part, nxt)
            return
        now = batched_at(headers.get("sensord-batched-at"))
        try:
            records = decode(message.body)
        except ValueError as exc:
            self._error_log.warning(
                "central rules: stream %s offset %d: not a SenML pack (%s): skipped",
                part.stream,
                offset,
                exc,
            )
            records = []
        pipeline, newest = self._pipeline, self._newest
        judged = 0
        for r in records:
            key = (r.site, r.device, r.kind, *r.labels.values())
            seen = newest.get(key)
            if seen is not None and (r.ts < seen[0] or (r.ts == seen[0] and r.value == seen[1])):
                self.late += 1
                continue
            newest[key] = (r.ts, r.value)
            pipeline.on_reading(
                Reading.trusted(r.site, r.device, r.kind, r.value, r.ts, r.labels, r.unit), now
            )
            judged += 1
        self.readings += judged
        self._metrics.readings += judged
        self._commit(part, nxt)

    def _commit(self, part: Partition, nxt: int) -> None:
        self._pipeline.end_batch({part.stream: nxt})
        part.next = nxt
        self.messages += 1

    # ---- checkpoints

    async def _publish_checkpoints(self, control: AbstractChannel) -> None:
        for i, part in list(self.owned.items()):
            if part.next is None or part.next == part.published:
                continue
            cp = local_checkpoint(self._state, part.stream, i, self._by, len(self.streams))
            await control.default_exchange.publish(
                aio_pika.Message(
                    cp.encode(),
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    app_id="sensord",
                ),
                routing_key=checkpoint_queue(self._amqp.prefix, i),
                timeout=self._amqp.publish_timeout,
            )
            part.published = cp.next
            self.checkpoints += 1


async def _ignore(message: AbstractIncomingMessage) -> None:
    """The members queue never carries a message; one published there by hand is dropped."""
    await message.ack()


class CentralMetrics(Collector):
    """The reader's counters, read at scrape time."""

    def __init__(self, reader: CentralReader) -> None:
        self._r = reader

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        r = self._r
        yield GaugeMetricFamily(
            "sensord_central_partitions_owned",
            "Readings stream partitions this rules process holds",
            value=len(r.owned),
        )
        yield CounterMetricFamily(
            "sensord_central_readings", "Readings judged from the stream", value=r.readings
        )
        yield CounterMetricFamily(
            "sensord_central_messages", "Stream messages committed", value=r.messages
        )
        yield CounterMetricFamily(
            "sensord_central_copies_skipped",
            "Stream messages skipped: a copy of one already judged (same message_id)",
            value=r.skipped_copies,
        )
        yield CounterMetricFamily(
            "sensord_central_late_skipped",
            "Readings not judged: older than their sensor's newest",
            value=r.late,
        )
        yield CounterMetricFamily(
            "sensord_central_takeovers",
            "Partitions taken (at start, after a reconnect, or from a process that died)",
            value=r.takeovers,
        )
        yield CounterMetricFamily(
            "sensord_central_checkpoints",
            "Checkpoints published",
            value=r.checkpoints,
        )
