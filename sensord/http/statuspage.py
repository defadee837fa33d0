"""The status page: static assets (sensord/http/web/) and the read-only JSON it polls.

GET /                                  the page (HTML; its assets under /static/)
GET /api/v1/overview                   counts, connections, outbox and DLQ depth
GET /api/v1/sensors                    last value, unit, age and sparkline per sensor
GET /api/v1/sensors/{id}/history       one sensor's buckets and the rule thresholds

Reads are open like the rest of the API; mutations (ack, silences) stay in `AlertsApi`,
with its token. Every answer here is computed at most once per second per query (a small
cache), so that many open pages cost no more than one: the cost is bounded by the number
of sensors, never by the number of viewers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from sensord.http.history import History, SensorSeries
from sensord.rules import Rule

WEB_DIR = Path(str(resources.files("sensord.http") / "web"))
GLOB_CHARS = frozenset("*?[")
CACHE_SECONDS = 1.0
CACHE_ENTRIES = 64
MAX_LIMIT = 5000

# what the page may load: its own origin only (edge hosts are often offline, and a
# status page that calls out is a leak); uPlot sets element styles, hence 'unsafe-inline'
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

Overview = Callable[[], dict[str, Any]]
Rules = Callable[[], list[Rule]]


def _num(v: float, digits: int = 6) -> float | None:
    """A float for JSON: short (float32 buckets print as 81.19999694824219) and finite."""
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _matcher(text: str) -> Callable[[str], bool]:
    """A glob when it has glob characters, else an exact match."""
    if GLOB_CHARS.intersection(text):
        return lambda v: fnmatchcase(v, text)
    return lambda v: v == text


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


class StatusPage:
    def __init__(
        self,
        history: History | None,
        rules: Rules,
        overview: Overview,
        silent_after: float,
    ) -> None:
        self._history = history  # None: this sensord does not ingest (--role notify)
        self._rules = rules
        self._overview = overview
        self._silent_after = silent_after
        self._cache: dict[str, tuple[float, web.Response]] = {}
        # per sensor: the `absent_for` of the deadman rules that match it, else silent_after;
        # rebuilt when the rules change (a reload installs a new list)
        self._silence_rules: list[Rule] | None = None
        self._silent_limit: dict[tuple[str, ...], float] = {}
        self._order: list[SensorSeries] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/api/v1/overview", self.overview)
        app.router.add_get("/api/v1/sensors", self.sensors)
        app.router.add_get(r"/api/v1/sensors/{sensor:.+}/history", self.sensor_history)
        app.router.add_static("/static/", WEB_DIR, show_index=False, follow_symlinks=False)

    # ---- helpers

    def _need_history(self) -> History:
        if self._history is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "this sensord runs --role notify: ask an edge"}),
                content_type="application/json",
            )
        return self._history

    def _cached(self, request: web.Request, build: Callable[[], Any]) -> web.Response:
        """The same answer for a second: polling pages cost one computation per second."""
        key = request.path_qs
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return web.Response(body=hit[1].body, content_type="application/json")
        body = json.dumps(build(), separators=(",", ":")).encode()
        response = web.Response(body=body, content_type="application/json")
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < CACHE_SECONDS}
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
        self._cache[key] = (now, response)
        return web.Response(body=body, content_type="application/json")

    def _limits(self) -> tuple[list[Rule], dict[tuple[str, ...], float]]:
        """The rules in force and the silent limits cached for them (reset on reload)."""
        rules = self._rules()
        if rules is not self._silence_rules:
            self._silence_rules = rules
            self._silent_limit = {}
        return rules, self._silent_limit

    def silent_limit(self, s: SensorSeries) -> float:
        rules, limits = self._limits()
        limit = limits.get(s.key)
        if limit is None:
            labels = s.labels()
            deadman = [
                r.absent_for for r in rules if r.absent_for is not None and r.matches(labels)
            ]
            limit = limits[s.key] = min(deadman, default=self._silent_after)
        return limit

    def is_silent(self, s: SensorSeries, now: float) -> bool:
        return now - s.seen > self.silent_limit(s)

    def sensor_counts(self, now: float) -> dict[str, int]:
        """For the overview: sensors heard of, reporting and silent (one pass, no calls
        per sensor once the limits are cached: 10,000 sensors in a few milliseconds)."""
        if self._history is None:
            return {"total": 0, "reporting": 0, "silent": 0, "untracked_readings": 0}
        _, limits = self._limits()
        silent = 0
        for s in self._history:
            limit = limits.get(s.key)
            if limit is None:
                limit = self.silent_limit(s)
            if now - s.seen > limit:
                silent += 1
        total = len(self._history)
        return {
            "total": total,
            "reporting": total - silent,
            "silent": silent,
            "untracked_readings": self._history.untracked,
        }

    def _sorted(self, history: History) -> list[SensorSeries]:
        """Sensors by site, device, kind; sorted again only when sensors were added."""
        if len(self._order) != len(history):
            self._order = sorted(history, key=lambda s: s.key)
        return self._order

    def thresholds(self, s: SensorSeries) -> list[dict[str, Any]]:
        """The value limits of the rules that match this sensor, to draw on its plot."""
        labels = s.labels()
        out: list[dict[str, Any]] = []
        for rule in self._rules():
            if rule.absent_for is not None or not rule.matches(labels):
                continue
            lines: list[tuple[str, float | None]] = [
                ("above", rule.above),
                ("below", rule.below),
                ("clear_below", rule.clear_below),
                ("clear_above", rule.clear_above),
            ]
            if rule.outside is not None:
                lines += [("outside_low", rule.outside[0]), ("outside_high", rule.outside[1])]
            if rule.inside is not None:
                lines += [("inside_low", rule.inside[0]), ("inside_high", rule.inside[1])]
            on = "value"
            if rule.aggregate is not None:
                on = f"{rule.aggregate.fn} over {rule.aggregate.window:g}s"
            elif rule.rate is not None:
                on = "rate"
            out += [
                {"rule": rule.name, "severity": rule.severity.value, "op": op, "value": v, "on": on}
                for op, v in lines
                if v is not None
            ]
        return out

    # ---- views

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            WEB_DIR / "index.html",
            headers={
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    async def overview(self, request: web.Request) -> web.Response:
        return self._cached(request, self._overview)

    async def sensors(self, request: web.Request) -> web.Response:
        history = self._need_history()
        q = request.query
        try:
            limit = min(int(q.get("limit", "1000")), MAX_LIMIT)
            offset = max(int(q.get("offset", "0")), 0)
        except ValueError:
            raise _bad_request("limit and offset: whole numbers") from None
        spark = q.get("spark", "1") != "0"
        filters = [
            (i, _matcher(q[k])) for i, k in enumerate(("site", "device", "kind")) if q.get(k)
        ]
        silent_only = q.get("silent") == "true"

        def build() -> dict[str, Any]:
            now = time.time()
            chosen = [s for s in self._sorted(history) if all(m(s.key[i]) for i, m in filters)]
            if silent_only:
                chosen = [s for s in chosen if self.is_silent(s, now)]
            items = []
            for s in chosen[offset : offset + limit]:
                item: dict[str, Any] = {
                    "id": s.id,
                    "site": s.site,
                    "device": s.device,
                    "kind": s.kind,
                    "labels": s.extra,
                    "value": _num(s.value, 10),
                    "unit": s.unit,
                    "ts": s.ts,
                    "age_s": round(now - s.seen, 1),
                    "silent": self.is_silent(s, now),
                }
                if spark:
                    item["spark"] = [
                        None if v is None else _num(v, 4) for v in history.spark(s, now)
                    ]
                items.append(item)
            return {
                "total": len(chosen),
                "offset": offset,
                "limit": limit,
                "step": history.step,
                "window": history.window,
                "spark_end": history.head_time(now),
                "sensors": items,
            }

        return self._cached(request, build)

    async def sensor_history(self, request: web.Request) -> web.Response:
        history = self._need_history()
        sensor_id = request.match_info["sensor"]
        s = history.find(sensor_id)
        if s is None:
            return web.json_response({"error": f"no sensor {sensor_id}"}, status=404)

        def build() -> dict[str, Any]:
            now = time.time()
            return {
                "id": s.id,
                "site": s.site,
                "device": s.device,
                "kind": s.kind,
                "labels": s.extra,
                "unit": s.unit,
                "value": _num(s.value, 10),
                "ts": s.ts,
                "age_s": round(now - s.seen, 1),
                "silent": self.is_silent(s, now),
                "step": history.step,
                "window": history.window,
                "end": history.head_time(now),
                "points": [
                    [t, _num(lo), _num(hi), _num(last)]
                    for t, lo, hi, last in history.points(s, now)
                ],
                "thresholds": self.thresholds(s),
            }

        return self._cached(request, build)
