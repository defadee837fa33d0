"""Drains the outbox to `<prefix>.alerts` with publisher confirms, in order per alert.

Rows go out in batches, each batch in ONE write (sensord/amqp/publisher.py: frames encoded
once, confirms through aiormq's own futures), with up to DEPTH batches in flight, so that
the next batch is on the wire while RabbitMQ confirms the last (FACTS.md: through
FastStream, 256 publishes in flight top out near 4,500/s). No two rows of one fingerprint
are in flight at once, so the events of one alert reach RabbitMQ in the order they were
recorded, whatever fails. A row is deleted only once its own confirm arrived; after a
failure the unconfirmed rows are retried (a consumer may then see an event twice: event
ids make that harmless). A row published before (in this run, or in the outbox at start:
published before a crash, maybe) carries `x-sensord-resent`, so that the notify workers
check with each other before sending it (notify/fleet.py).

The drain has its own confirm channel on the process's publishing connection
(amqp/shared.py: aio-pika's robust connection on the nodes of `[amqp] url`, shared with the
quarantine's and the readings stream's channels; the channel's aiormq channel does the
publishing, amqp/publisher.py). A nack means "not stored" (a quorum queue without a leader;
a channel opened in the moments after a leader died nacks every publish for as long as it
stays open, FACTS.md): the rows stay, the channel is reopened after a pause, and after
NACK_ROUNDS nacked rounds in a row the publishing connection moves to the next node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq import Channel as RawChannel
from aiormq.exceptions import DeliveryError, PublishError

from sensord.amqp.failover import NodeRing
from sensord.amqp.headers import REPEAT_HEADER, RESENT_HEADER
from sensord.amqp.publisher import BatchPublisher, Message
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.shared import SharedConnection
from sensord.delivery.outbox import Outbox, OutboxRow
from sensord.ops.aio import first
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.publish")

BATCH = 512
# batches in flight at once: the next one is written while RabbitMQ confirms the last
DEPTH = 2
# the longest the notify consumers of the same process wait for a backlog to drain
MAX_HOLD = 10.0
# nacked rounds in a row on one node before the drain moves to the next
NACK_ROUNDS = 3


def unique_prefix(
    rows: list[OutboxRow], flying: set[str] | frozenset[str] = frozenset()
) -> list[OutboxRow]:
    """The longest head of `rows` with no fingerprint twice, nor one of `flying`."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.fingerprint in seen or row.fingerprint in flying:
            break
        seen.add(row.fingerprint)
        out.append(row)
    return out


def _headers(row: OutboxRow, again: bool) -> dict[str, Any] | None:
    """A repeat's target channels; the mark of an event published again. Most rows have
    neither (the publisher's fast path)."""
    if row.repeat_for is None and not again:
        return None
    headers: dict[str, Any] = {}
    if row.repeat_for is not None:
        headers[REPEAT_HEADER] = row.repeat_for
    if again:
        headers[RESENT_HEADER] = 1
    return headers


class OutboxDrain:
    def __init__(
        self,
        settings: AmqpSettings,
        outbox: Outbox,
        metrics: Metrics,
        link: SharedConnection | None = None,
    ) -> None:
        """`link`: the process's publishing connection; without one (a drain alone: tests,
        benchmarks) a connection of its own, closed by `close`."""
        self._settings = settings
        self._outbox = outbox
        self._metrics = metrics
        self._wakeup = asyncio.Event()
        self._error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self._link = link if link is not None else SharedConnection(settings, "publish", metrics)
        self._owns_link = link is None
        self._channel: AbstractChannel | None = None
        self._publisher: BatchPublisher | None = None
        self._held_since: float | None = None  # when the consumers were last asked to wait
        self.ready = asyncio.Event()  # set by the service once the topology is declared
        # clear while a backlog is being published: in one process with the notify role,
        # its consumers wait on it, so held alerts reach RabbitMQ (durable) first
        self.caught_up = asyncio.Event()
        self.caught_up.set()
        self.published = 0
        self._nacked = 0  # rounds in a row with a nack (see the module doc)
        # rows that may have reached RabbitMQ already: those handed to a publish, and
        # those in the outbox at start (a crash may have come between publish and delete)
        self._tried: set[int] = {row.seq for row in outbox.head(len(outbox))}

    @property
    def ring(self) -> NodeRing:
        """The publishing connection's nodes (which one it is on, its moves)."""
        return self._link.ring

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def wake(self) -> None:
        """Call after committing new rows."""
        self._wakeup.set()

    async def _raw_channel(self) -> RawChannel:
        """The drain's confirm channel on the publishing connection (reopened by aio-pika
        after a connection loss; until then this raises and the batch is retried)."""
        if self._channel is None:
            self._channel = await self._link.channel(publisher_confirms=True, on_return_raises=True)
        raw = await self._channel.get_underlay_channel()
        assert isinstance(raw, RawChannel)  # BatchPublisher works on aiormq's channel
        return raw

    async def _send(self, rows: list[OutboxRow]) -> list[asyncio.Future[Any]]:
        """Queue every row for the writer in one frame; one confirmation future each."""
        channel = await self._raw_channel()
        publisher = self._publisher
        if publisher is None or publisher.channel is not channel:
            publisher = self._publisher = BatchPublisher(channel, self._settings.exchange)
        tried = self._tried
        messages = [
            Message(row.routing_key, row.body, row.event_id, _headers(row, row.seq in tried))
            for row in rows
        ]
        tried.update(row.seq for row in rows)
        return await publisher.publish_many(messages)

    async def _confirmed(self, futures: list[asyncio.Future[Any]]) -> list[BaseException | None]:
        """One result per future (None: confirmed), waiting at most publish_timeout."""
        timeout = self._settings.publish_timeout
        _, pending = await asyncio.wait(futures, timeout=timeout)
        expired = TimeoutError(f"no confirm within {timeout:g}s")
        for fut in pending:
            fut.cancel()
        return [
            expired if fut in pending else (None if fut.cancelled() else fut.exception())
            for fut in futures
        ]

    async def _publish_batch(self, rows: list[OutboxRow]) -> list[BaseException | None]:
        """Publish every row, then wait for all their confirms; one result per row."""
        try:
            futures = await self._send(rows)
        except Exception as exc:  # noqa: BLE001 - unreachable: every row failed alike
            return [exc] * len(rows)
        return await self._confirmed(futures)

    async def close(self) -> None:
        """Close the drain's channel (the shared connection is its owner's to close)."""
        channel, self._channel, self._publisher = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 2.0)
        if self._owns_link:
            await self._link.close()

    async def run(self, stop: asyncio.Event) -> None:
        await first(self.ready.wait(), stop.wait())
        if not stop.is_set():
            # connect now, not at the first alert: /readyz names the node from the start
            with contextlib.suppress(Exception):
                await first(self._raw_channel(), stop.wait())

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

    def _hold(self) -> None:
        """Before each batch: hold the consumers of this process while a backlog drains."""
        now = asyncio.get_running_loop().time()
        if len(self._outbox) > BATCH:
            if self._held_since is None:
                self._held_since = now
                self.caught_up.clear()
            elif now - self._held_since > MAX_HOLD:
                # alerts keep coming faster than they drain: notifying must not starve
                self.caught_up.set()
        else:
            self._release()

    def _release(self) -> None:
        self._held_since = None
        self.caught_up.set()

    async def _drain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            ok = await self._pump(stop)
            if not ok or len(self._outbox) <= BATCH:
                self._release()
            if not ok:
                await first(stop.wait(), asyncio.sleep(min(self._settings.reconnect_interval, 1.0)))
                await self._after_nack()

    async def _pump(self, stop: asyncio.Event) -> bool:
        """Publish what the outbox holds, DEPTH batches in flight, until it is empty, a
        batch failed or `stop` is set (then every batch in flight is settled first: the
        stop's `flush` takes over within its grace); True if none failed."""
        in_flight: deque[tuple[list[OutboxRow], asyncio.Future[list[BaseException | None]]]]
        in_flight = deque()
        flying: set[str] = set()  # fingerprints in flight
        last_seq = 0
        ok = True
        while True:
            while ok and len(in_flight) < DEPTH and not stop.is_set():
                self._hold()
                batch = unique_prefix(self._outbox.head(BATCH, after=last_seq), flying)
                if not batch:
                    break
                try:
                    futures = await self._send(batch)
                except Exception as exc:  # noqa: BLE001 - unreachable: every row failed alike
                    self._settle(batch, [exc] * len(batch))
                    ok = False
                    break
                in_flight.append((batch, asyncio.ensure_future(self._confirmed(futures))))
                flying.update(row.fingerprint for row in batch)
                last_seq = batch[-1].seq
            if not in_flight:
                return ok
            batch, results = in_flight.popleft()
            ok = self._settle(batch, await results) and ok
            flying.difference_update(row.fingerprint for row in batch)

    async def _after_nack(self) -> None:
        """After a nacked round: a fresh channel (opened after the pause just taken), and
        after NACK_ROUNDS such rounds the next node (the whole publishing connection moves,
        the other roles' channels with it: aio-pika restores them there)."""
        if not self._nacked:
            return
        if self._nacked >= NACK_ROUNDS and len(self.ring) > 1:
            log.warning(
                "RabbitMQ node %s nacked %d round(s) of alert events: moving to the next node",
                self.ring.trying,
                self._nacked,
            )
            self._nacked = 0
            await self._link.move_on()
            return
        channel, self._channel, self._publisher = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 2.0)

    async def _step(self) -> bool:
        """Publish one batch; True when every row of it left the outbox."""
        batch = unique_prefix(self._outbox.head(BATCH))
        return self._settle(batch, await self._publish_batch(batch))

    def _settle(self, batch: list[OutboxRow], results: list[BaseException | None]) -> bool:
        """Delete the confirmed rows (and the unroutable ones, counted); True if none failed."""
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
        self._tried.difference_update(done)
        if len(self._tried) > 2 * len(self._outbox) + BATCH * DEPTH:
            # rows dropped from a full outbox (max_pending) are never confirmed here
            self._tried.intersection_update(r.seq for r in self._outbox.head(len(self._outbox)))
        self.published += len(done)
        if failure is None:
            self._nacked = 0
            self._metrics.amqp_connected.set(1)
            return True
        if isinstance(failure, DeliveryError):  # a nack: RabbitMQ did not store them
            self._nacked += 1
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
                await self._after_nack()
        return len(self._outbox)
