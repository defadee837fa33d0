"""Notification channels and the consumers that feed them from RabbitMQ.

Each channel consumes its own quorum queue `<prefix>.notify.<name>` (fan-out: every
channel gets its copy; several notify processes are competing consumers). A delivery that
fails is retried in process with doubling delay (`[channels.retry]`); after the last
attempt, or at once on a permanent error, the message is rejected and RabbitMQ
dead-letters it to `<prefix>.notify.<name>.dead`: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from typing import Any, Protocol, TextIO

import aiohttp
from faststream.exceptions import RejectMessage
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from sensord.amqp import notify_queue
from sensord.config import (
    AmqpSettings,
    ChannelSettings,
    ConsoleChannelSettings,
    RetrySettings,
    WebhookChannelSettings,
)
from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.metrics import Metrics

log = logging.getLogger("sensord.notify")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for an alert with no known end


def rfc3339(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def alertmanager_body(events: list[AlertEvent], receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook body, version 4 (contract: ARCHITECTURE.md)."""
    first = events[0]
    common_labels = dict(first.labels)
    common_annotations = dict(first.annotations)
    for ev in events[1:]:
        common_labels = {k: v for k, v in common_labels.items() if ev.labels.get(k) == v}
        common_annotations = {
            k: v for k, v in common_annotations.items() if ev.annotations.get(k) == v
        }
    status = "firing" if any(ev.status == "firing" for ev in events) else "resolved"
    group_labels = {"alertname": first.rule}
    return {
        "version": "4",
        "groupKey": "{}:{alertname=" + json.dumps(first.rule) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": ev.status,
                "labels": ev.labels,
                "annotations": ev.annotations,
                "startsAt": rfc3339(ev.starts_at),
                "endsAt": rfc3339(ev.ends_at) if ev.ends_at is not None else ZERO_TIME,
                "generatorURL": "",
                "fingerprint": ev.fingerprint,
            }
            for ev in events
        ],
    }


class NotificationChannel(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, event: AlertEvent) -> None:
        """Deliver once; raise NotifyError (retryable or not) on failure."""

    async def close(self) -> None: ...


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def console_line(event: AlertEvent) -> str:
    labels = event.labels
    sensor = f"{labels.get('site', '?')}/{labels.get('device', '?')}"
    when = event.ends_at if event.status == "resolved" and event.ends_at else event.observed_at
    summary = event.annotations.get("summary", "")
    return (
        f"{when.strftime('%H:%M:%S')} {event.status.upper():<8} {event.severity.value:<8} "
        f"{event.rule}  {sensor}  value={_fmt(event.value)} threshold={_fmt(event.threshold)}"
        + (f"  {summary}" if summary else "")
    )


class ConsoleChannel:
    def __init__(self, settings: ConsoleChannelSettings, stream: TextIO | None = None) -> None:
        self.name = settings.name
        self._stream = stream

    async def start(self) -> None:
        return None

    async def send(self, event: AlertEvent) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(console_line(event) + "\n")
        stream.flush()

    async def close(self) -> None:
        return None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


class WebhookChannel:
    def __init__(self, settings: WebhookChannelSettings, external_url: str) -> None:
        self.name = settings.name
        self._settings = settings
        self._external_url = external_url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
            connector=aiohttp.TCPConnector(limit=32),
            headers={"User-Agent": "sensord", **self._settings.headers},
        )

    async def send(self, event: AlertEvent) -> None:
        assert self._session is not None, "start() first"
        body = json.dumps(alertmanager_body([event], self.name, self._external_url)).encode()
        try:
            async with self._session.post(
                self._settings.url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                retryable = resp.status in (408, 429) or resp.status >= 500
                raise NotifyError(
                    f"{self._settings.url} answered HTTP {resp.status}",
                    retryable=retryable,
                    retry_after=_retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(
                f"{self._settings.url}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_channel(settings: ChannelSettings, external_url: str) -> NotificationChannel:
    if isinstance(settings, ConsoleChannelSettings):
        return ConsoleChannel(settings)
    return WebhookChannel(settings, external_url)


async def deliver(
    channel: NotificationChannel, event: AlertEvent, retry: RetrySettings, metrics: Metrics
) -> None:
    """Send with retries; raises the last NotifyError when giving up."""
    delay = retry.delay
    for attempt in range(1, retry.max_attempts + 1):
        try:
            await channel.send(event)
        except NotifyError as exc:
            last = attempt == retry.max_attempts or not exc.retryable
            metrics.notifications.labels(channel.name, "failed" if last else "retry").inc()
            log.warning(
                "channel %s: attempt %d/%d for %s %s failed: %s%s",
                channel.name,
                attempt,
                retry.max_attempts,
                event.rule,
                event.status,
                exc,
                "" if last else f"; retrying in {exc.retry_after or delay:g}s",
            )
            if last:
                raise
            await asyncio.sleep(exc.retry_after if exc.retry_after is not None else delay)
            delay = min(delay * 2, retry.max_delay)
        else:
            metrics.notifications.labels(channel.name, "sent").inc()
            return


def register_consumer(
    broker: RabbitBroker,
    amqp: AmqpSettings,
    settings: ChannelSettings,
    channel: NotificationChannel,
    metrics: Metrics,
) -> None:
    subscriber = broker.subscriber(
        notify_queue(amqp, settings),
        channel=Channel(prefetch_count=settings.prefetch),
    )

    async def handle(message: RabbitMessage) -> None:
        try:
            event = AlertEvent.model_validate_json(message.body)
        except ValidationError as exc:
            metrics.notifications.labels(settings.name, "invalid").inc()
            log.error(
                "channel %s: not an alert event, dead-lettered: %s",
                settings.name,
                exc.errors()[0]["msg"],
            )
            raise RejectMessage from None
        if event.status == "resolved" and not settings.send_resolved:
            metrics.notifications.labels(settings.name, "skipped").inc()
            return
        try:
            await deliver(channel, event, settings.retry, metrics)
        except NotifyError:
            log.error(
                "channel %s: gave up on %s %s (%s); dead-lettered to %s",
                settings.name,
                event.rule,
                event.status,
                event.event_id,
                amqp.dead_queue(settings.name),
            )
            raise RejectMessage from None

    subscriber(handle)
