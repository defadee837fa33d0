"""`alertmanager`: POST /api/v2/alerts with Alertmanager's client contract.

Like Prometheus: a firing alert is sent with `endsAt` = now + 4 x resend_interval and
re-sent every `resend_interval` while it fires (so Alertmanager resolves it by itself if
sensord disappears); a resolution is sent with the real `endsAt` and re-sent for
`resolved_retention`. The set of alerts to re-send lives in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import field_validator

from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import rfc3339
from sensord.notify.settings import ChannelSettingsBase, http_url
from sensord.notify.webhook import HttpPoster
from sensord.ops.settings import Duration


class AlertmanagerChannelSettings(ChannelSettingsBase):
    type: Literal["alertmanager"]
    url: str  # base URL, e.g. http://127.0.0.1:9093
    resend_interval: Duration = 60.0
    resolved_retention: Duration = 900.0
    timeout: Duration = 10.0
    generator_url: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return http_url(v).rstrip("/")


log = logging.getLogger("sensord.notify.alertmanager")


def postable_alert(
    event: AlertEvent, now: datetime, valid_for: float, generator_url: str
) -> dict[str, Any]:
    ends = event.ends_at if event.status == "resolved" and event.ends_at else None
    alert: dict[str, Any] = {
        "labels": event.labels,
        "annotations": event.annotations,
        "startsAt": rfc3339(event.starts_at),
        "endsAt": rfc3339(ends if ends else now + timedelta(seconds=valid_for)),
    }
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerChannel:
    def __init__(self, settings: AlertmanagerChannelSettings) -> None:
        self.name = settings.name
        self._s = settings
        self._http = HttpPoster(f"{settings.url}/api/v2/alerts", settings.timeout)
        # fingerprint -> (latest event, monotonic time a resolution stops being re-sent)
        self._active: dict[str, tuple[AlertEvent, float]] = {}
        self._resender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._http.start()
        self._resender = asyncio.create_task(self._resend_loop(), name=f"am-{self.name}")

    def _body(self, events: list[AlertEvent]) -> bytes:
        now = datetime.now(UTC)
        valid_for = 4 * self._s.resend_interval
        return json.dumps(
            [postable_alert(ev, now, valid_for, self._s.generator_url) for ev in events]
        ).encode()

    async def send(self, event: AlertEvent) -> None:
        await self._http.post(self._body([event]), {})
        keep_until = (
            time.monotonic() + self._s.resolved_retention
            if event.status == "resolved"
            else float("inf")
        )
        previous = self._active.get(event.fingerprint)
        if previous is None or previous[0].observed_at <= event.observed_at:
            self._active[event.fingerprint] = (event, keep_until)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self._s.resend_interval)
            now = time.monotonic()
            for fp in [fp for fp, (_, until) in self._active.items() if until < now]:
                del self._active[fp]
            events = [ev for ev, _ in self._active.values()]
            if not events:
                continue
            try:
                await self._http.post(self._body(events), {})
            except NotifyError as exc:
                log.warning("channel %s: re-sending %d alert(s): %s", self.name, len(events), exc)

    async def close(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
        await self._http.close()


def _alertmanager(
    settings: AlertmanagerChannelSettings, context: ChannelContext
) -> AlertmanagerChannel:
    return AlertmanagerChannel(settings)


register("alertmanager", AlertmanagerChannelSettings, _alertmanager)
