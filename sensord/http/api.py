"""The alerts API: active alerts, acknowledgements and silences (JSON over aiohttp).

Reads are open (the server listens on localhost by default); mutations need
`Authorization: Bearer <token>` with the token from `[http] token_file`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from sensord.alerts.silences import Matcher
from sensord.alerts.store import AlertStore
from sensord.errors import SensordError
from sensord.events import AlertEvent
from sensord.http.auth import authorize, read_token
from sensord.ops.settings import parse_duration

Changed = Callable[[], None]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _time(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        from sensord.ingest.payload import parse_ts  # noqa: PLC0415 - RFC 3339 / epoch, as readings

        try:
            return parse_ts(value, 0.0)
        except SensordError:
            pass
    raise web.HTTPBadRequest(
        text=json.dumps({"error": f"{what}: RFC 3339 time or epoch seconds"}),
        content_type="application/json",
    )


class AlertsApi:
    def __init__(self, store: AlertStore | None, token_file: Path | None, changed: Changed) -> None:
        self._store = store
        self._token = read_token(token_file)
        self._changed = changed  # the service re-evaluates suppressions after a change

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/alerts", self.list_alerts)
        app.router.add_post("/api/v1/alerts/{fingerprint}/ack", self.ack)
        app.router.add_get("/api/v1/silences", self.list_silences)
        app.router.add_post("/api/v1/silences", self.add_silence)
        app.router.add_delete("/api/v1/silences/{id}", self.expire_silence)

    def _need_store(self) -> AlertStore:
        if self._store is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "this sensord runs --role notify: ask an edge"}),
                content_type="application/json",
            )
        return self._store

    def _authorize(self, request: web.Request) -> None:
        authorize(request, self._token)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be JSON"}), content_type="application/json"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be a JSON object"}),
                content_type="application/json",
            )
        return body

    async def list_alerts(self, request: web.Request) -> web.Response:
        store = self._need_store()
        now = time.time()
        q = request.query
        out = []
        for alert in store.alerts.values():
            item = store.alert_json(alert, now)
            ev: AlertEvent = alert.event
            if "severity" in q and ev.severity.value not in q.getall("severity"):
                continue
            if any(k in q and ev.labels.get(k) != q[k] for k in ("site", "device", "kind")):
                continue
            if "state" in q and item["state"] != q["state"]:
                continue
            if "acked" in q and (alert.acked_by is not None) != (q["acked"] == "true"):
                continue
            out.append(item)
        out.sort(key=lambda a: (str(a["severity"]), str(a["starts_at"])))
        return web.json_response({"alerts": out})

    async def ack(self, request: web.Request) -> web.Response:
        self._authorize(request)
        store = self._need_store()
        body = await self._body(request)
        fp = request.match_info["fingerprint"]
        by = str(body.get("by") or "api")
        if not store.ack(fp, by, str(body.get("comment", ""))):
            return _error(404, f"no active alert with fingerprint {fp}")
        return web.json_response({"fingerprint": fp, "acked_by": by})

    async def list_silences(self, request: web.Request) -> web.Response:
        store = self._need_store()
        now = time.time()
        items = [s.to_json(now) for s in store.silences.values()]
        if request.query.get("state"):
            items = [s for s in items if s["state"] == request.query["state"]]
        items.sort(key=lambda s: float(str(s["ends_at"])))
        return web.json_response({"silences": items})

    async def add_silence(self, request: web.Request) -> web.Response:
        self._authorize(request)
        store = self._need_store()
        body = await self._body(request)
        raw = body.get("matchers")
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
            return _error(400, 'matchers: a non-empty list like ["site=plant-1"]')
        try:
            matchers = [Matcher.parse(m) for m in raw]
        except ValueError as exc:
            return _error(400, str(exc))
        now = time.time()
        starts = _time(body["starts_at"], "starts_at") if "starts_at" in body else now
        if "ends_at" in body:
            ends = _time(body["ends_at"], "ends_at")
        elif "duration" in body:
            try:
                ends = starts + parse_duration(body["duration"])
            except ValueError as exc:
                return _error(400, f"duration: {exc}")
        else:
            return _error(400, "give ends_at or duration")
        try:
            silence = store.add_silence(
                matchers,
                starts,
                ends,
                str(body.get("author") or "api"),
                str(body.get("comment", "")),
            )
        except ValueError as exc:
            return _error(400, str(exc))
        self._changed()
        return web.json_response(silence.to_json(now), status=201)

    async def expire_silence(self, request: web.Request) -> web.Response:
        self._authorize(request)
        store = self._need_store()
        sid = request.match_info["id"]
        if not store.expire_silence(sid):
            return _error(404, f"no silence {sid}")
        self._changed()
        return web.json_response({"id": sid, "state": "expired"})
