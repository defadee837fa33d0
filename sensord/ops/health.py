"""Health, status and the systemd supervision loop: what an operator and systemd ask.

`Health` reads the components the composition root (sensord/app.py) built; it changes
nothing. /readyz, /api/v1/status, /api/v1/overview, `sensord status` and sd_notify's STATUS
all come from here, so they never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sensord import __version__
from sensord.http.history import CounterWindow
from sensord.ops.systemd import SystemdNotifier

if TYPE_CHECKING:  # read only: ops imports no stage at run time
    from sensord.alerts.store import AlertStore
    from sensord.http.history import History
    from sensord.http.statuspage import StatusPage
    from sensord.ops.config import Settings
    from sensord.ops.metrics import Metrics


class _Connected(Protocol):
    connected: asyncio.Event
    sources: list[Any]  # sensord.ingest.sources.Source: this module stays below ingest


class _Pending(Protocol):
    @property
    def pending(self) -> int: ...


@dataclass
class Health:
    settings: Settings
    role: str
    metrics: Metrics
    bridge: _Connected
    drain: _Pending
    quarantine: _Pending
    store: AlertStore | None
    history: History
    page: StatusPage
    amqp_up: asyncio.Event
    edge: bool
    notifying: bool
    # the node (host:port) each RabbitMQ connection is on (None while it has none)
    amqp_nodes: Callable[[], dict[str, str | None]] = field(default=dict)
    started: float = field(default_factory=time.monotonic)
    # (monotonic, readings) once per tick over the last minute: readings/s in status
    _rate_samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=61))
    # invalid readings over the last 5 minutes, for the status page's overview
    _invalid_window: CounterWindow = field(default_factory=lambda: CounterWindow(300.0, 5.0))

    def __post_init__(self) -> None:
        self._invalid_window.sample(self.started, 0)

    def sample_rate(self) -> None:
        """Once per tick: the readings/s of status and the invalid readings of overview."""
        t = time.monotonic()
        self._rate_samples.append((t, self.metrics.readings))
        self._invalid_window.sample(t, sum(self.metrics.invalid.values()))

    def health(self) -> tuple[str, list[str]]:
        """("ready" | "degraded" | "not ready", reasons).

        Degraded still serves: an edge with RabbitMQ down keeps ingesting and holds alerts.
        """
        problems: list[str] = []
        degraded: list[str] = []
        if self.edge and not self.bridge.connected.is_set():
            # a central rules process's input is the readings stream, not MQTT
            problems.append(
                "readings stream not connected" if self.role == "rules" else "MQTT not connected"
            )
        if not self.amqp_up.is_set():
            msg = "RabbitMQ unreachable"
            (degraded if self.edge else problems).append(
                msg + (" (alerts are held)" if self.edge else "")
            )
        watermark = int(self.settings.amqp.max_pending * 0.9)
        if self.edge and self.drain.pending >= watermark:
            problems.append(f"alert backlog at {self.drain.pending} (>= {watermark})")
        if problems:
            return "not ready", problems + degraded
        return ("degraded", degraded) if degraded else ("ready", [])

    def amqp_node(self) -> tuple[str | None, dict[str, str | None]]:
        """(the node this process works with, every connection's node): the publishing
        connection's on an edge, the consuming one's on a notify worker."""
        nodes = self.amqp_nodes()
        main = nodes.get("publish") if self.edge else nodes.get("consume")
        return main, nodes

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        state, reasons = self.health()
        node, nodes = self.amqp_node()
        detail = {
            "role": self.role,
            "mqtt": "connected" if self.bridge.connected.is_set() else "disconnected",
            "amqp": "connected" if self.amqp_up.is_set() else "disconnected",
            "amqp_node": node,
            "amqp_nodes": nodes,
            "alerts_pending": self.drain.pending,
            "reasons": reasons,
        }
        return state != "not ready", {"status": state, **detail}

    def status(self) -> dict[str, Any]:
        """/api/v1/status: what an operator asks first."""
        state, reasons = self.health()
        now = time.monotonic()
        rate = 0.0
        if len(self._rate_samples) >= 2:
            (t0, c0), (t1, c1) = self._rate_samples[0], self._rate_samples[-1]
            rate = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        active = dict(self.store.by_severity) if self.store is not None else {}
        return {
            "status": state,
            "reasons": reasons,
            "version": __version__,
            "role": self.role,
            "uptime_s": round(now - self.started, 1),
            "mqtt": {
                "url": self.settings.mqtt.safe_url,
                "connected": self.bridge.connected.is_set(),
            },
            "amqp": {
                "prefix": self.settings.amqp.prefix,
                "connected": self.amqp_up.is_set(),
                "node": self.amqp_node()[0],
                "nodes": self.amqp_node()[1],
                "cluster": self.settings.amqp.nodes,
            },
            "readings_total": self.metrics.readings,
            "readings_per_s": round(rate, 1),
            "invalid_total": {k: v for k, v in self.metrics.invalid.items() if v},
            "duplicates_total": self.metrics.duplicates,
            "late_total": self.metrics.late,
            "sources": [
                {
                    "name": src.name,
                    "format": src.format_name,
                    "messages": src.messages,
                    "readings": src.readings,
                    "refused": src.refused,
                    "skipped": sum(src.skipped.values()),
                    "devices": len(src.devices),
                }
                for src in (self.bridge.sources if self.edge else [])
            ],
            "quarantine_pending": self.quarantine.pending,
            "alerts_active": active,
            "alerts_pending_publish": self.drain.pending,
            "channels": [ch.name for ch in self.settings.channels] if self.notifying else [],
        }

    def overview(self) -> dict[str, Any]:
        """/api/v1/overview: what the status page shows at the top."""
        now = time.time()
        status = self.status()
        by_severity = {"critical": 0, "warning": 0, "info": 0}
        acked = silenced = 0
        store = self.store
        if store is not None:
            by_severity.update(store.by_severity)
            # a scan of the active alerts, at most once a second (the page's cache); the
            # suppression check only when there is something that could suppress
            check = bool(store.silences or store.inhibit)
            for alert in store.alerts.values():
                acked += alert.acked_by is not None
                silenced += check and store.suppressed(alert.event, now)
        dlq = {
            sample.labels["channel"]: int(sample.value)
            for family in self.metrics.dlq_depth.collect()
            for sample in family.samples
        }
        return {
            "status": status["status"],
            "reasons": status["reasons"],
            "version": __version__,
            "role": self.role,
            "uptime_s": status["uptime_s"],
            "sensors": self.page.sensor_counts(now),
            "readings_total": self.metrics.readings,
            "readings_per_s": status["readings_per_s"],
            "sources": status["sources"],
            "invalid_5m": self._invalid_window.increase(
                time.monotonic(), sum(self.metrics.invalid.values())
            ),
            "alerts": {"by_severity": by_severity, "acked": acked, "suppressed": silenced},
            "mqtt": status["mqtt"] if self.edge else None,
            "amqp": status["amqp"],
            "outbox_pending": self.drain.pending,
            "dlq": dlq,
            "history": {
                "window_s": self.history.window,
                "step_s": self.history.step,
                "sensors": len(self.history),
            },
            "mutations": self.settings.http.token_file is not None,
        }

    def status_text(self) -> str:
        parts = []
        if self.edge:
            link = "readings stream " if self.role == "rules" else "MQTT "
            parts.append(link + ("connected" if self.bridge.connected.is_set() else "down"))
        amqp = "connected" if self.amqp_up.is_set() else "unreachable"
        if self.edge and self.drain.pending:
            amqp += f", {self.drain.pending} alert(s) held"
        parts.append(f"RabbitMQ {amqp}")
        parts.append(f"{self.metrics.readings} readings")
        return "; ".join(parts)

    def systemd_ready(self) -> bool:
        """READY=1 once rules are loaded and MQTT is subscribed (RabbitMQ may be down)."""
        return self.bridge.connected.is_set() if self.edge else self.amqp_up.is_set()


async def supervise(
    notifier: SystemdNotifier,
    status_text: Callable[[], str],
    is_ready: Callable[[], bool],
    stop: asyncio.Event,
) -> None:
    """sd_notify: READY once, STATUS on change, WATCHDOG while the loop is responsive."""
    if not notifier.enabled:
        return
    loop = asyncio.get_running_loop()
    watchdog = notifier.watchdog_interval
    period = min(watchdog, 1.0) if watchdog else 1.0
    ready = False
    last_status = ""
    expected = loop.time()
    while not stop.is_set():
        now = loop.time()
        lag = now - expected  # how late this task woke: the loop's responsiveness
        status = status_text()
        if not ready and is_ready():
            ready = notifier.ready(status)
        elif status != last_status:
            notifier.status(status)
        last_status = status
        if watchdog and lag < watchdog:
            notifier.watchdog()
        expected = loop.time() + period
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
    notifier.stopping()
