"""sensord's own HTTP server (aiohttp): /metrics, /healthz, /readyz, /api/v1/status,
POST /-/reload, the alerts API and the status page (`/`).

JSON reads carry an ETag (a hash of the body): a page polling with If-None-Match gets a
304 without the body when nothing changed."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sensord.http.api import AlertsApi
from sensord.http.auth import authorize, read_token
from sensord.http.settings import HttpSettings
from sensord.http.statuspage import StatusPage
from sensord.ops.metrics import Metrics

log = logging.getLogger("sensord.http")

ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]
StatusProbe = Callable[[], dict[str, Any]]
Reloader = Callable[[], tuple[bool, list[str]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def etag_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ETag on JSON reads under /api/; 304 when the client's If-None-Match is current."""
    response = await handler(request)
    if (
        request.method != "GET"
        or not request.path.startswith("/api/")
        or response.status != 200
        or not isinstance(response, web.Response)
        or not isinstance(response.body, bytes)
    ):
        return response
    etag = '"' + hashlib.blake2b(response.body, digest_size=12).hexdigest() + '"'
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return response


class HttpServer:
    def __init__(
        self,
        settings: HttpSettings,
        metrics: Metrics,
        ready: ReadinessProbe,
        status: StatusProbe,
        *,
        api: AlertsApi | None = None,
        reload: Reloader | None = None,
        page: StatusPage | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._ready = ready
        self._status = status
        self._api = api
        self._reload = reload
        self._token = read_token(settings.token_file)  # POST /-/reload is a mutation too
        self._page = page
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[etag_middleware])
        app.router.add_get("/metrics", self._metrics_view)
        app.router.add_get("/healthz", self._health_view)
        app.router.add_get("/readyz", self._ready_view)
        app.router.add_get("/api/v1/status", self._status_view)
        app.router.add_get("/api/v1/sources", self._sources_view)
        if self._api is not None:
            self._api.routes(app)
        if self._reload is not None:
            app.router.add_post("/-/reload", self._reload_view)
        if self._page is not None:
            self._page.routes(app)
        return app

    async def _reload_view(self, request: web.Request) -> web.Response:
        """Reload the rule files, as SIGHUP does; 500 with the problems when refused.

        Like every mutation it needs the bearer token (Prometheus gates the same endpoint
        behind --web.enable-lifecycle); SIGHUP needs none, it comes from the host.
        """
        assert self._reload is not None
        authorize(request, self._token)
        ok, problems = self._reload()
        if ok:
            return web.json_response({"status": "reloaded"})
        return web.json_response({"status": "refused", "errors": problems}, status=500)

    async def _metrics_view(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        if self._metrics.expositions:
            body += b"".join(render() for render in self._metrics.expositions)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health_view(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready_view(self, request: web.Request) -> web.Response:
        ok, detail = self._ready()
        return web.json_response(detail, status=200 if ok else 503)

    async def _status_view(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _sources_view(self, request: web.Request) -> web.Response:
        """Each source's format, topics, counters and the devices it has seen."""
        return web.json_response({"sources": [src.summary() for src in self._metrics.sources]})

    async def start(self) -> None:
        if not self._settings.listen:
            return
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        log.info(
            "HTTP on http://%s (status page /, /metrics, /healthz, /readyz)",
            self._settings.listen,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
