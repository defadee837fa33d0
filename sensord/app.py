"""Composition root: builds each stage and wires them; owns start and stop. Wiring only:
the alert pipeline is sensord/pipeline.py, health and status sensord/ops/health.py."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from typing import Any, Literal, TextIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sensord.alerts.silences import Matcher
from sensord.alerts.store import AlertStore, InhibitRule, RepeatPolicy
from sensord.amqp.connection import connect_until_up
from sensord.amqp.topology import declare_topology_once, make_broker, matches
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_memory_db, open_state_db
from sensord.errors import ConfigError
from sensord.events import AlertEvent
from sensord.http.api import AlertsApi
from sensord.http.history import History
from sensord.http.server import HttpServer
from sensord.http.statuspage import StatusPage
from sensord.ingest.client import MqttBridge
from sensord.ingest.quarantine import Quarantine
from sensord.notify.base import NotificationChannel
from sensord.notify.channels import make_channel
from sensord.notify.consumer import Notifier
from sensord.notify.dedup import HandledEvents
from sensord.notify.registry import ChannelSettings
from sensord.ops import gc
from sensord.ops.config import Settings
from sensord.ops.health import Health, supervise
from sensord.ops.metrics import Metrics
from sensord.ops.systemd import SystemdNotifier
from sensord.pipeline import AlertPipeline
from sensord.rules import Rule, RuleEngine, load_rules
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
        self.settings, self.role = settings, role
        self.metrics = metrics = metrics if metrics is not None else Metrics()
        self.engine = RuleEngine(rules)
        metrics.rules_loaded.set(len(rules))
        self.broker = make_broker(settings.amqp, metrics.registry)
        self.edge = edge = role in ("all", "edge")
        self.notifying = role in ("all", "notify")
        # the state file: the edge's rule state, outbox and alerts; the notify role's
        # handled event ids. One connection: one transaction holds a batch's all.
        state_path = settings.resolve(settings.state.path)
        self.db = open_state_db(state_path, autocheckpoint=False)
        self.checkpointer = Checkpointer(state_path)  # WAL fsyncs off the event loop
        self.state = StateStore(self.db) if edge else None
        self.outbox = Outbox(
            self.db if edge else open_memory_db(), settings.amqp.max_pending, metrics
        )
        self.publisher = OutboxDrain(settings.amqp, self.outbox, metrics)
        inhibit = [
            InhibitRule(
                tuple(Matcher.parse(m) for m in r.source),
                tuple(Matcher.parse(m) for m in r.target),
                tuple(r.equal),
            )
            for r in settings.alerts.inhibit
        ]
        self.store = AlertStore(self.db, inhibit) if edge else None
        # the status page's recent values per sensor (only an edge ingests)
        self.history = History(settings.http.history_window, settings.http.history_step)
        self.pipeline: AlertPipeline | None = None
        if self.state is not None and self.store is not None:
            self.pipeline = AlertPipeline(
                self.engine,
                state=self.state,
                alerts=self.store,
                outbox=self.outbox,
                drain=self.publisher,
                history=self.history,
                metrics=metrics,
                repeats=repeat_policy(settings),
            )
        self.quarantine = Quarantine(self.broker, settings.amqp, settings.ingest, metrics)
        self.bridge = MqttBridge(
            settings.mqtt,
            self.pipeline.on_reading if self.pipeline else _no_sink,
            metrics,
            ingest=settings.ingest,
            on_refused=self.quarantine.refuse,
            on_batch_end=self.pipeline.end_batch if self.pipeline else None,
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
                metrics,
                handled=HandledEvents(self.db),
                # one process, one core: a backlog reaches RabbitMQ before it is notified
                gate=self.publisher.caught_up if edge else None,
            )
        self.amqp_up = asyncio.Event()
        self.page = StatusPage(
            self.history if edge else None,
            lambda: self.engine.rules,
            self._overview,  # the health's, built right after the page
            settings.http.silent_after,
        )
        self.health = Health(
            settings,
            role,
            metrics,
            self.bridge,
            self.publisher,
            self.quarantine,
            self.store,
            self.history,
            self.page,
            self.amqp_up,
            edge,
            self.notifying,
        )
        api = AlertsApi(self.store, settings.http.token_file, self._reconcile)
        self.http = HttpServer(
            settings.http,
            metrics,
            self.health.readiness,
            self.health.status,
            api=api,
            reload=self.reload,
            page=self.page,
        )
        self.systemd = systemd if systemd is not None else SystemdNotifier()

    def _overview(self) -> dict[str, Any]:
        return self.health.overview()

    def _reconcile(self) -> None:
        if self.pipeline is not None:
            self.pipeline.reconcile()

    async def _tick(self) -> None:
        # A coroutine function on purpose: APScheduler's AsyncIOExecutor runs a plain
        # function in a worker thread, which would race the MQTT callback on the engine
        # and on the state file's one connection. A coroutine runs in the event loop.
        self.health.sample_rate()
        if self.pipeline is not None:
            self.pipeline.tick(time.time())

    def reload(self) -> tuple[bool, list[str]]:
        """Reload the rule files (SIGHUP, POST /-/reload). A bad file keeps the old rules."""
        # systemd: RELOADING=1 with the monotonic time, READY=1 once done (either way)
        self.systemd.reloading(time.monotonic_ns() // 1000)
        try:
            try:
                rules = load_rules(self.settings.rules.paths, self.settings.base_dir)
            except ConfigError as exc:
                self.metrics.rules_reload_failures.inc()
                for problem in exc.problems:
                    log.error("rule reload refused, keeping the old rules: %s", problem)
                return False, [str(p) for p in exc.problems]
            now = time.time()
            transitions = self.engine.replace_rules(rules, now)
            if self.pipeline is not None:
                self.pipeline.commit(transitions, now)
            self.metrics.rules_loaded.set(len(rules))
            log.info("rules reloaded: %d rule(s)", len(rules))
            return True, []
        finally:
            self.systemd.notify("READY=1", f"STATUS={self.health.status_text()}")

    def _restore_state(self) -> None:
        """Before MQTT: take back alert state; firing alerts are not announced again."""
        assert self.state is not None
        assert self.pipeline is not None
        snapshot = self.state.load()
        now = time.time()
        transitions = self.engine.restore(snapshot, now, self.settings.rules.outage_tolerance)
        log.info(
            "state file: %d alert state(s), %d deadman clock(s) restored",
            len(snapshot.records),
            len(snapshot.clocks),
        )
        self.pipeline.commit(transitions, now, flush=True)
        # a reading that changed an alert, or an older one, redelivered after a SIGKILL
        # (processed, not yet acknowledged) is skipped as within a run
        self.bridge.remember(self.state.remembered_readings())

    async def _start_amqp(self) -> None:
        # fail_fast=True (sensord.amqp.topology.make_broker): start() raises while RabbitMQ
        # is unreachable, and connect_until_up tries again every reconnect_interval
        await self.broker.start()
        await declare_topology_once(self.settings.amqp, list(self.settings.channels))
        if self.notifier is not None:
            await self.notifier.start()
        if self.edge:
            await self.quarantine.declare()
            self.quarantine.ready.set()

    async def _reset_amqp(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop(grace=0)
        await self.broker.stop()

    async def _connect_amqp(self) -> None:
        await connect_until_up(
            self._start_amqp, self._reset_amqp, self.settings.amqp.reconnect_interval
        )
        self.amqp_up.set()
        self.metrics.amqp_connected.set(1)
        self.publisher.ready.set()
        log.info("connected to RabbitMQ, exchange %s ready", self.settings.amqp.exchange)

    async def run(self, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            stack.callback(self.db.close)
            if self.state is not None:
                self._restore_state()
                assert self.pipeline is not None
                stack.callback(self.pipeline.flush)  # the last heartbeat, before db.close
            gc.freeze_startup_heap()  # built and restored: the collector skips all that
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
                health = self.health
                tg.create_task(
                    supervise(self.systemd, health.status_text, health.systemd_ready, stop),
                    name="systemd",
                )
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


def _no_sink(*_args: object) -> None:
    """The notify role ingests nothing (its bridge never connects)."""
