"""Composition root: wires bridge, rules, publisher, notify consumers and HTTP; owns start/stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from contextlib import AsyncExitStack
from typing import Any, Literal, TextIO

import aio_pika
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sensord import __version__
from sensord.alerts.lifecycle import build_event
from sensord.alerts.silences import Matcher
from sensord.alerts.store import AlertStore, InhibitRule, RepeatPolicy
from sensord.amqp.topology import declare_topology_once, make_broker, matches
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_memory_db, open_state_db
from sensord.errors import ConfigError
from sensord.events import AlertEvent, Reading
from sensord.http.api import AlertsApi
from sensord.http.history import CounterWindow, History
from sensord.http.server import HttpServer
from sensord.http.statuspage import StatusPage
from sensord.ingest.client import MqttBridge
from sensord.ingest.quarantine import Quarantine
from sensord.notify.base import NotificationChannel
from sensord.notify.channels import make_channel
from sensord.notify.consumer import Notifier
from sensord.notify.dedup import HandledEvents
from sensord.notify.registry import ChannelSettings
from sensord.ops.config import Settings
from sensord.ops.metrics import Metrics
from sensord.ops.systemd import SystemdNotifier
from sensord.rules import AlertTransition, Rule, RuleEngine, load_rules
from sensord.state.checkpoint import Checkpointer
from sensord.state.store import StateStore

log = logging.getLogger("sensord")

Role = Literal["all", "edge", "notify"]


def repeat_policy(settings: Settings) -> RepeatPolicy:
    """Each channel's repeat interval (its own, else `[alerts] repeat_interval`; 0: none)
    for the alerts it takes (severity, match)."""
    out = []
    for ch in settings.channels:
        interval = settings.alerts.repeat_interval
        if ch.repeat_interval is not None:
            interval = ch.repeat_interval
        if interval > 0:

            def takes(event: AlertEvent, ch: ChannelSettings = ch) -> bool:
                return event.severity.value in ch.severities and matches(ch, event.labels)

            out.append((ch.name, interval, takes))
    return RepeatPolicy(tuple(out))


class Service:
    def __init__(
        self,
        settings: Settings,
        rules: list[Rule],
        role: Role = "all",
        *,
        metrics: Metrics | None = None,
        console: TextIO | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.metrics = metrics if metrics is not None else Metrics()
        self.engine = RuleEngine(rules)
        self.metrics.rules_loaded.set(len(rules))
        self.broker = make_broker(settings.amqp, self.metrics.registry)
        self.edge = role in ("all", "edge")
        self.notifying = role in ("all", "notify")
        # the state file: the edge's rule state, outbox and alerts; the notify role's
        # handled event ids. One connection: one transaction holds a transition's all.
        state_path = settings.resolve(settings.state.path)
        self.db = open_state_db(state_path, autocheckpoint=False)
        self.checkpointer = Checkpointer(state_path)  # WAL fsyncs off the event loop
        self.state = StateStore(self.db) if self.edge else None
        self.outbox = Outbox(
            self.db if self.edge else open_memory_db(), settings.amqp.max_pending, self.metrics
        )
        self.publisher = OutboxDrain(settings.amqp, self.outbox, self.metrics)
        self.store = (
            AlertStore(
                self.db,
                [
                    InhibitRule(
                        tuple(Matcher.parse(m) for m in rule.source),
                        tuple(Matcher.parse(m) for m in rule.target),
                        tuple(rule.equal),
                    )
                    for rule in settings.alerts.inhibit
                ],
            )
            if self.edge
            else None
        )
        self.repeats = repeat_policy(settings)
        self.quarantine = Quarantine(self.broker, settings.amqp, settings.ingest, self.metrics)
        self.bridge = MqttBridge(
            settings.mqtt,
            self._on_reading,
            self.metrics,
            ingest=settings.ingest,
            on_refused=self.quarantine.refuse,
        )
        external_url = f"http://{settings.http.listen}" if settings.http.listen else ""
        self.channels: list[NotificationChannel] = []
        self.notifier: Notifier | None = None
        if self.notifying:
            self.channels = [
                make_channel(ch, settings, external_url, console) for ch in settings.channels
            ]
            self.notifier = Notifier(
                settings.amqp,
                list(settings.channels),
                self.channels,
                self.metrics,
                handled=HandledEvents(self.db),
                # one process, one core: a backlog reaches RabbitMQ before it is notified
                gate=self.publisher.caught_up if self.edge else None,
            )
        api = AlertsApi(self.store, settings.http.token_file, self._reconcile)
        # the status page's recent values per sensor (only an edge ingests)
        self.history = History(settings.http.history_window, settings.http.history_step)
        self.page = StatusPage(
            self.history if self.edge else None,
            lambda: self.engine.rules,
            self.overview,
            settings.http.silent_after,
        )
        self.http = HttpServer(
            settings.http,
            self.metrics,
            self.readiness,
            self.status,
            api=api,
            reload=self.reload,
            page=self.page,
        )
        self._started = time.monotonic()
        # (monotonic, readings) once per tick over the last minute: readings/s in status
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=61)
        # invalid readings over the last 5 minutes, for the status page's overview
        self._invalid_window = CounterWindow(300.0, 5.0)
        self._invalid_window.sample(self._started, 0)
        self.amqp_up = asyncio.Event()
        self.systemd = systemd if systemd is not None else SystemdNotifier()

    # ---- per-reading path (called synchronously from the MQTT callback)

    def _on_reading(self, reading: Reading, now: float, topic: str | None = None) -> None:
        """`topic` comes with a reading stamped by its sender: when it changes an alert,
        its time is kept with the change, so that its redelivery after a restart is
        skipped (the bridge's duplicate guard, `MqttBridge.remember`)."""
        self.history.record(reading, now)  # O(1), no I/O: the status page's plots
        transitions = self.engine.evaluate(reading, now)
        if transitions or self.engine.dirty:  # (orphans appear only at restore and reload)
            guard = None
            if transitions and topic is not None:
                guard = ((topic, reading.device, reading.kind), reading.ts)
            self._commit(transitions, now, guard=guard)

    def _commit(
        self,
        transitions: list[AlertTransition],
        now: float,
        *,
        flush: bool = False,
        guard: tuple[tuple[str, str, str], float] | None = None,
    ) -> None:
        """Persist what the engine changed (write-behind, in the call that changed it), the
        alerts' lifecycle and the events to publish, in one transaction committed before
        this returns: the MQTT message is acked only after. `flush` adds the deadman clocks
        and the heartbeat time (each tick); `guard` the (sensor key, time) of the reading
        that caused the transitions."""
        events: list[AlertEvent] = []
        for tr in transitions:
            if tr.status == "flapping":  # a marker: logged and counted, never published
                self.metrics.alerts_flapping.labels(tr.rule.severity.value).inc()
                log.warning(
                    "alert %s %s is flapping: its notifications are held until it settles",
                    tr.rule.name,
                    "/".join(tr.labels.get(k, "?") for k in ("site", "device")),
                )
            else:
                events.append(build_event(tr))
        state, alerts = self.state, self.store
        assert state is not None  # only the edge evaluates rules
        assert alerts is not None
        if len(events) > 1 and alerts.inhibit:
            # record inhibiting alerts first, so a target firing on the same reading is held
            events.sort(key=lambda e: not alerts.is_inhibit_source(e.labels))
        to_send: list[AlertEvent] = []
        if not (flush or events or guard or self.engine.has_changes):
            return
        records = self.engine.take_dirty()
        clocks = self.engine.clocks() if flush else []
        with state.transaction() as conn:
            state.write(
                conn,
                records,
                clocks,
                saved_at=now if flush else None,
                started_at=self.engine.start if flush else None,
                guard=guard,
            )
            for event in events:
                self.metrics.alerts.labels(event.severity.value, event.status).inc()
                notify = (
                    alerts.fire(event, now) if event.status == "firing" else (alerts.resolve(event))
                )
                if notify:
                    to_send.append(event)
                else:
                    self.metrics.alerts_suppressed.labels(event.status).inc()
            if to_send:
                self.outbox.add(to_send)  # joins this transaction
        if to_send:
            self.publisher.wake()

    def _reconcile(self) -> None:
        """Publish held alerts no longer silenced or inhibited, and repeats that are due."""
        if self.store is None:
            return
        now = time.time()
        self.store.gc_silences(now)
        with self.store.transaction():
            due = self.store.due(now, self.repeats)
            self.outbox.add([e for e, _ in due], now, [targets for _, targets in due])
        if due:
            self.publisher.wake()
        self.metrics.outbox_oldest_age.set(self.outbox.oldest_age(now) if self.outbox else 0.0)

    async def _tick(self) -> None:
        # A coroutine function on purpose: APScheduler's AsyncIOExecutor runs a plain
        # function in a worker thread, which would race the MQTT callback on the engine
        # and on the state file's one connection. A coroutine runs in the event loop.
        self._sample_rate()
        now = time.time()
        self._commit(self.engine.tick(now), now, flush=True)
        self._reconcile()

    def reload(self) -> tuple[bool, list[str]]:
        """Reload the rule files (SIGHUP, POST /-/reload). A bad file keeps the old rules."""
        # systemd: RELOADING=1 with the monotonic time, READY=1 once done (either way)
        self.systemd.reloading(time.monotonic_ns() // 1000)
        try:
            return self._reload_rules()
        finally:
            self.systemd.notify("READY=1", f"STATUS={self.status_text()}")

    def _reload_rules(self) -> tuple[bool, list[str]]:
        try:
            rules = load_rules(self.settings.rules.paths, self.settings.base_dir)
        except ConfigError as exc:
            self.metrics.rules_reload_failures.inc()
            for problem in exc.problems:
                log.error("rule reload refused, keeping the old rules: %s", problem)
            return False, [str(p) for p in exc.problems]
        now = time.time()
        self._commit(self.engine.replace_rules(rules, now), now)
        self.metrics.rules_loaded.set(len(rules))
        log.info("rules reloaded: %d rule(s)", len(rules))
        return True, []

    def _restore_state(self) -> None:
        """Before MQTT: take back alert state; firing alerts are not announced again."""
        assert self.state is not None
        snapshot = self.state.load()
        now = time.time()
        transitions = self.engine.restore(snapshot, now, self.settings.rules.outage_tolerance)
        log.info(
            "state file: %d alert state(s), %d deadman clock(s) restored",
            len(snapshot.records),
            len(snapshot.clocks),
        )
        self._commit(transitions, now, flush=True)
        # a reading that changed an alert, or an older one, redelivered after a SIGKILL
        # (processed, not yet acknowledged) is skipped as within a run
        self.bridge.remember(self.state.remembered_readings())

    def _flush_state(self) -> None:
        self._commit([], time.time(), flush=True)

    def health(self) -> tuple[str, list[str]]:
        """("ready" | "degraded" | "not ready", reasons).

        Degraded still serves: an edge with RabbitMQ down keeps ingesting and holds alerts.
        """
        problems: list[str] = []
        degraded: list[str] = []
        if self.edge and not self.bridge.connected.is_set():
            problems.append("MQTT not connected")
        if not self.amqp_up.is_set():
            msg = "RabbitMQ unreachable"
            (degraded if self.edge else problems).append(
                msg + (" (alerts are held)" if self.edge else "")
            )
        watermark = int(self.settings.amqp.max_pending * 0.9)
        if self.edge and self.publisher.pending >= watermark:
            problems.append(f"alert backlog at {self.publisher.pending} (>= {watermark})")
        if problems:
            return "not ready", problems + degraded
        return ("degraded", degraded) if degraded else ("ready", [])

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        state, reasons = self.health()
        detail = {
            "role": self.role,
            "mqtt": "connected" if self.bridge.connected.is_set() else "disconnected",
            "amqp": "connected" if self.amqp_up.is_set() else "disconnected",
            "alerts_pending": self.publisher.pending,
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
            "uptime_s": round(now - self._started, 1),
            "mqtt": {
                "url": self.settings.mqtt.safe_url,
                "connected": self.bridge.connected.is_set(),
            },
            "amqp": {"prefix": self.settings.amqp.prefix, "connected": self.amqp_up.is_set()},
            "readings_total": self.metrics.readings,
            "readings_per_s": round(rate, 1),
            "invalid_total": {k: v for k, v in self.metrics.invalid.items() if v},
            "duplicates_total": self.metrics.duplicates,
            "quarantine_pending": self.quarantine.pending,
            "alerts_active": active,
            "alerts_pending_publish": self.publisher.pending,
            "channels": [ch.name for ch in self.settings.channels] if self.notifying else [],
        }

    def _sample_rate(self) -> None:
        t = time.monotonic()
        self._rate_samples.append((t, self.metrics.readings))
        self._invalid_window.sample(t, sum(self.metrics.invalid.values()))

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
            "invalid_5m": self._invalid_window.increase(
                time.monotonic(), sum(self.metrics.invalid.values())
            ),
            "alerts": {
                "by_severity": by_severity,
                "acked": acked,
                "suppressed": silenced,
            },
            "mqtt": status["mqtt"] if self.edge else None,
            "amqp": status["amqp"],
            "outbox_pending": self.publisher.pending,
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
            parts.append("MQTT " + ("connected" if self.bridge.connected.is_set() else "down"))
        amqp = "connected" if self.amqp_up.is_set() else "unreachable"
        if self.edge and self.publisher.pending:
            amqp += f", {self.publisher.pending} alert(s) held"
        parts.append(f"RabbitMQ {amqp}")
        parts.append(f"{self.metrics.readings} readings")
        return "; ".join(parts)

    def _systemd_ready(self) -> bool:
        """READY=1 once rules are loaded and MQTT is subscribed (RabbitMQ may be down)."""
        return self.bridge.connected.is_set() if self.edge else self.amqp_up.is_set()

    async def _supervise(self, stop: asyncio.Event) -> None:
        """sd_notify: READY once, STATUS on change, WATCHDOG while the loop is responsive."""
        notifier = self.systemd
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
            status = self.status_text()
            if not ready and self._systemd_ready():
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

    # ---- lifecycle

    async def _connect_amqp(self) -> None:
        """Connect and declare; a connection lost meanwhile is retried, never fatal.

        A topology conflict (PRECONDITION_FAILED: a queue declared with other arguments)
        is a configuration error and stops sensord.
        """
        attempt = 0
        while True:
            try:
                # fail_fast=True (sensord.amqp.make_broker): start() raises while RabbitMQ
                # is unreachable, and this loop tries again every reconnect_interval
                await self.broker.start()
                await declare_topology_once(self.settings.amqp, list(self.settings.channels))
                if self.notifier is not None:
                    await self.notifier.start()
                if self.edge:
                    await self.quarantine.declare()
                    self.quarantine.ready.set()
                break
            except aio_pika.exceptions.ChannelPreconditionFailed:
                raise
            except (
                OSError,
                asyncio.IncompleteReadError,
                aio_pika.exceptions.AMQPError,
                TimeoutError,
            ) as exc:
                attempt += 1
                if attempt == 1 or attempt % 30 == 0:  # an outage can last: bounded logging
                    log.warning(
                        "RabbitMQ unreachable (%s: %s); retrying (attempt %d)",
                        type(exc).__name__,
                        exc,
                        attempt,
                    )
                if self.notifier is not None:
                    with contextlib.suppress(Exception):
                        await self.notifier.stop(grace=0)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(self.settings.amqp.reconnect_interval)
        self.amqp_up.set()
        self.metrics.amqp_connected.set(1)
        self.publisher.ready.set()
        log.info("connected to RabbitMQ, exchange %s ready", self.settings.amqp.exchange)

    async def run(self, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            stack.callback(self.db.close)
            if self.state is not None:
                self._restore_state()
                stack.callback(self._flush_state)  # the last heartbeat, before db.close
            await self.http.start()
            stack.push_async_callback(self.http.stop)
            for channel in self.channels:
                await channel.start()
                stack.push_async_callback(channel.close)
            stack.push_async_callback(self.broker.stop)
            stack.push_async_callback(self.publisher.close)
            if self.notifier is not None:
                # before the channels close: in-flight notifications finish first
                stack.push_async_callback(self.notifier.stop)
            scheduler = AsyncIOScheduler()
            if self.edge:
                scheduler.add_job(
                    self._tick,
                    "interval",
                    seconds=self.settings.rules.tick,
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=None,
                )
                scheduler.start()
                stack.callback(scheduler.shutdown, wait=False)
            log.info(
                "sensord running (role %s, %d rule(s), %d channel(s))",
                self.role,
                len(self.engine.rules),
                len(self.channels),
            )
            async with asyncio.TaskGroup() as tg:
                # a topology error (e.g. a queue declared with other arguments) is fatal
                amqp_task = tg.create_task(self._connect_amqp(), name="amqp-connect")
                tg.create_task(self._supervise(stop), name="systemd")
                tg.create_task(self.checkpointer.run(stop), name="checkpoint")
                if self.edge:
                    bridge_task = tg.create_task(self.bridge.run(stop), name="mqtt-bridge")
                    publish_task = tg.create_task(self.publisher.run(stop), name="alert-publisher")
                    tg.create_task(self.quarantine.run(stop), name="quarantine")
                await stop.wait()
                log.info("stopping")
                if self.edge:
                    # MQTT first: no new readings; unacknowledged ones stay with the broker
                    await bridge_task
                    await publish_task  # its publish in flight ends before the flush starts
                    left = await self.publisher.flush(self.settings.amqp.stop_grace)
                    if left:
                        log.error(
                            "%d alert event(s) not published to RabbitMQ within the %gs "
                            "stop grace: they are lost until the outbox lands",
                            left,
                            self.settings.amqp.stop_grace,
                        )
                if not amqp_task.done():
                    amqp_task.cancel()
