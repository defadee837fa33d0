"""Refused MQTT messages go to `<prefix>.quarantine`, a quorum queue a user can inspect.

Each message keeps the original topic, the payload (first `quarantine_max_payload` bytes,
as they were when UTF-8, else base64), the reason code and its detail, as JSON body and
as headers. While RabbitMQ is down they wait in a bounded in-memory queue; on overflow
the oldest is dropped, counted (`sensord_quarantine_dropped_total`) and logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

from faststream.rabbit import RabbitQueue
from pamqp.common import FieldValue

from sensord.amqp.broker import FailoverBroker
from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import declare_queue, quarantine_queue
from sensord.ingest.settings import IngestSettings
from sensord.ops.aio import first
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.quarantine")


def quarantine_queue_name(settings: AmqpSettings) -> str:
    return settings.quarantine_queue


@dataclass(frozen=True, slots=True)
class Refusal:
    topic: bytes
    payload: bytes  # already cut to the configured bound
    payload_size: int
    reason: str
    detail: str
    received_at: float

    def body(self) -> bytes:
        topic = self.topic.decode("utf-8", "replace")
        try:
            text, encoding = self.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(self.payload).decode("ascii"), "base64"
        doc = {
            "topic": topic,
            "reason": self.reason,
            "detail": self.detail,
            "payload": text,
            "payload_encoding": encoding,
            "payload_size": self.payload_size,
            "payload_truncated": len(self.payload) < self.payload_size,
            "received_at": self.received_at,
        }
        return json.dumps(doc).encode()

    def headers(self) -> dict[str, FieldValue]:
        return {
            "x-sensord-reason": self.reason,
            "x-sensord-detail": self.detail[:500],
            "x-sensord-topic": self.topic.decode("utf-8", "replace")[:500],
        }


class Quarantine:
    """Bounded buffer of refusals + a task that publishes them with confirms, in order."""

    def __init__(
        self,
        broker: FailoverBroker,
        amqp: AmqpSettings,
        ingest: IngestSettings,
        metrics: Metrics,
    ) -> None:
        self._broker = broker
        self._amqp = amqp
        self._queue = quarantine_queue_name(amqp)
        self._timeout = amqp.publish_timeout
        self._retry = min(amqp.reconnect_interval, 1.0)
        self._max_pending = ingest.quarantine_max_pending
        self._max_payload = ingest.quarantine_max_payload
        self._metrics = metrics
        self._pending: deque[Refusal] = deque()
        self._wakeup = asyncio.Event()
        self._log = RateLimitedLog(log, interval=30.0, burst=1)
        self.ready = asyncio.Event()  # set by the service once RabbitMQ is connected
        self.published = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def refuse(self, topic: bytes, payload: bytes, reason: str, detail: str) -> None:
        """Called on the hot path for each refused message: cheap, never blocks."""
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._metrics.quarantine_dropped += 1
            self._log.warning(
                "quarantine buffer full (%d, RabbitMQ unreachable?): dropped the oldest "
                "refused message",
                self._max_pending,
            )
        self._pending.append(
            Refusal(topic, payload[: self._max_payload], len(payload), reason, detail, time.time())
        )
        self._wakeup.set()

    async def declare(self) -> None:
        # Declared (or migrated from the classic queue of earlier releases: amqp/topology.py
        # _declare) on a short-lived channel of the publishing connection: a refused
        # declaration closes its channel, which must not be the broker's. FastStream's
        # declaration then carries the arguments the queue has, or it would be refused.
        # Not robust: the queue is durable and declared at each start; restoring it on a
        # reconnect could only fail (a classic queue kept here, since migrated by another
        # edge), and keep the connection down (FailoverBroker.declare_queue).
        channel = await self._broker.link.channel(publisher_confirms=False)
        try:
            arguments = await declare_queue(channel, quarantine_queue(self._amqp))
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        queue = RabbitQueue(self._queue, durable=True, robust=False)
        # exactly those arguments, whichever the queue's type: RabbitQueue's parameter is
        # typed per queue type (TypedDicts) and takes no dict built at run time
        queue.arguments = arguments
        await self._broker.declare_queue(queue)

    async def run(self, stop: asyncio.Event) -> None:
        await first(self.ready.wait(), stop.wait())
        while not stop.is_set():
            if not self._pending:
                self._wakeup.clear()
                await first(self._wakeup.wait(), stop.wait())
                continue
            refusal = self._pending[0]
            try:
                await self._broker.publish(
                    refusal.body(),
                    queue=self._queue,
                    persist=True,
                    headers=refusal.headers(),
                    content_type="application/json",
                    timeout=self._timeout,
                )
            except Exception as exc:  # noqa: BLE001 - any broker failure: keep it, retry
                self._log.warning(
                    "cannot publish to %s (%s: %s); %d refused message(s) held",
                    self._queue,
                    type(exc).__name__,
                    exc,
                    len(self._pending),
                )
                await asyncio.sleep(self._retry)
                continue
            # the head may have been dropped by an overflow meanwhile: remove by identity
            if self._pending and self._pending[0] is refusal:
                self._pending.popleft()
            self.published += 1
            self._metrics.quarantined += 1
