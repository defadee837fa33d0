"""A real HTTP server on loopback that records every webhook POST, and fails when told to."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from sensord.testing.ports import free_port


@dataclass
class WebhookSink:
    """`async with WebhookSink() as sink:` POSTs to `sink.url` are recorded.

    Failure modes: `statuses` are answered in turn (then 200); while `fail_with` is set every
    request gets that status; `hold` keeps every answer back until it is set; `retry_after`
    is sent with every non-2xx answer. Only 2xx
    bodies land in `bodies` and `event_ids`; every request, failed ones too, in `times`,
    `raw` and `headers`. `stop()` then `start()` serves again on the same port (an outage).
    """

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)  # X-Sensord-Event-Id of each body
    requests: int = 0
    port: int = 0  # 0: a free port at start()
    _runner: web.AppRunner | None = None
    # every request, failed ones too: arrival time (monotonic), raw body, headers
    times: list[float] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    retry_after: str | None = None  # sent with every non-2xx answer when set
    fail_with: int | None = None  # while set, every request is answered with this status
    # when given, each request (recorded in `times`, `raw`, `headers` on arrival) waits
    # for it to be set before it is answered: a target that is slow to answer
    hold: asyncio.Event | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        arrived = time.monotonic()
        raw = await request.read()
        # appended together, after the only await: index i of each list is one request
        self.times.append(arrived)
        self.raw.append(raw)
        self.headers.append(dict(request.headers))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None:
            status = self.fail_with
        else:
            status = self.statuses.pop(0) if self.statuses else 200
        if status < 300:
            self.event_ids.append(request.headers.get("X-Sensord-Event-Id", ""))
            self.bodies.append(await request.json())
        headers = {"Retry-After": self.retry_after} if self.retry_after and status >= 300 else {}
        return web.Response(status=status, text="ok" if status < 300 else "fail", headers=headers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if not self.port:
            self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        """Every alert of that status ("firing", "resolved") in the recorded bodies."""
        return [a for b in self.bodies for a in b["alerts"] if a["status"] == status]
