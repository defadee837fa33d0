"""Composition root: builds each stage and wires them; owns start and stop. Wiring only:
the alert pipeline is sensord/pipeline.py, health and status sensord/ops/health.py, the
AMQP bring-up sensord/amqp/connection.py, the process's AMQP connections
sensord/amqp/shared.py (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TextIO

from sensord import lifecycle
from sensord.alerts.policy import inhibit_rules
from sensord.alerts.store import AlertStore
from sensord.amqp.connection import AmqpLink
from sensord.amqp.shared import Connections
from sensord.amqp.topology import declare_topology, make_broker
from sensord.central.wiring import build_reader
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_memory_db, open_state_db
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
from sensord.notify.repeats import repeat_policy
from sensord.ops.config import Settings
from sensord.ops.health import Health
from sensord.ops.metrics import Metrics
from sensord.ops.systemd import SystemdNotifier
from sensord.pipeline import AlertPipeline
from sensord.rules import Rule, RuleEngine
from sensord.state.checkpoint import Checkpointer
from sensord.state.store import StateStore
from sensord.telemetry.wiring import build_telemetry

log = logging.getLogger("sensord")

Role = Literal["all", "edge", "notify", "rules"]


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
        # edge: MQTT in (and the telemetry out); central: the readings stream in; either
        # judges (rules, alert state, outbox); notifying: alert events to the channels
        self.edge = role in ("all", "edge")
        self.central = role == "rules"
        self.judging = judging = self.edge or self.central
        self.notifying = role in ("all", "notify")
        # one connection that publishes (the judging roles), one that consumes (notify,
        # central): RabbitMQ blocks the first in an alarm, never the second
        self.connections = links = Connections(
            settings.amqp, metrics, publish=judging, consume=self.notifying or self.central
        )
        self.broker = make_broker(settings.amqp, metrics.registry, links.publish)
        # the state file: the judging roles' rule state, outbox and alerts (and a central
        # process's stream offsets); the notify role's handled event ids. One connection:
        # one transaction holds a batch's all.
        state_path = settings.resolve(settings.state.path)
        self.db = open_state_db(state_path, autocheckpoint=False)
        self.checkpointer = Checkpointer(state_path)  # WAL fsyncs off the event loop
        self.state = StateStore(self.db) if judging else None
        db = self.db if judging else open_memory_db()
        self.outbox = Outbox(db, settings.amqp.max_pending, metrics)
        self.publisher = OutboxDrain(settings.amqp, self.outbox, metrics, links.publish)
        self.store = AlertStore(self.db, inhibit_rules(settings.alerts)) if judging else None
        # the status page's recent values per sensor (only an edge ingests)
        self.history = History(settings.http.history_window, settings.http.history_step)
        # readings out: the stream (with its own buffer) and the gauges; alerts go first
        self.telemetry = build_telemetry(
            settings.telemetry, settings.amqp, metrics, self.history,
            edge=self.edge, gate=self.publisher.caught_up, link=links.publish,
        )  # fmt: skip
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
                repeats=repeat_policy(list(settings.channels), settings.alerts),
                tap=self.telemetry.append if self.telemetry else None,
                # a replay after a takeover repeats a transition's id: dropped as seen
                derive_ids=self.central,
            )
        self.quarantine = Quarantine(self.broker, settings.amqp, settings.ingest, metrics)
        pipeline = self.pipeline
        self.bridge = MqttBridge(
            settings.mqtt,
            pipeline.on_reading if pipeline else _no_sink,
            metrics,
            ingest=settings.ingest,
            on_refused=self.quarantine.refuse,
            on_batch_end=pipeline.end_batch if pipeline else None,
            on_late=pipeline.on_late if pipeline else None,
        )
        # a central process reads no MQTT source: sensord_readings_total{source="sensord"}
        metrics.sources = [] if self.central else self.bridge.sources
        self.reader = (
            build_reader(settings, self.pipeline, self.state, metrics, links.consume)
            if self.central
            else None
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
                gate=self.publisher.caught_up if judging else None,
                link=links.consume,
            )
        self.amqp = self._amqp_link()
        self.page = StatusPage(
            self.history if judging else None,
            lambda: self.engine.rules,
            self._overview,  # the health's, built right after the page
            settings.http.silent_after,
        )
        self.health = Health(
            settings, role, metrics, self.reader or self.bridge, self.publisher,
            self.quarantine, self.store, self.history, self.page, self.amqp.up, judging,
            self.notifying,
            amqp_nodes=links.nodes,
        )  # fmt: skip
        api = AlertsApi(self.store, settings.http.token_file, self._reconcile)
        self.http = HttpServer(
            settings.http, metrics, self.health.readiness, self.health.status,
            api=api, reload=self.reload, page=self.page,
        )  # fmt: skip
        self.systemd = systemd if systemd is not None else SystemdNotifier()

    def _amqp_link(self) -> AmqpLink:
        """Connect, declare, then the roles' channels; retried while RabbitMQ is away.
        Each step raises while it is unreachable (amqp/shared.py: the connections fail fast)."""
        s, notifier, publish = self.settings, self.notifier, self.connections.publish

        async def declare() -> None:  # on a channel of the publishing connection
            assert publish is not None
            channel = await publish.channel()
            try:
                await declare_topology(channel, s.amqp, list(s.channels))
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

        # the notifier declares the topology itself, on the consuming connection
        start: list[Callable[[], Awaitable[None]]] = [declare] if publish is not None else []
        reset: list[Callable[[], Awaitable[None]]] = []
        if self.edge:  # the quarantine's broker: a channel on the publishing connection
            start += [self.broker.start, self.quarantine.declare]
            reset.append(self.broker.stop)
        if notifier is not None:

            async def stop_consumers() -> None:
                await notifier.stop(grace=0)

            start.append(notifier.start)
            reset.insert(0, stop_consumers)

        def up() -> None:
            self.quarantine.ready.set()
            self.metrics.amqp_connected.set(1)
            self.publisher.ready.set()
            log.info(
                "connected to RabbitMQ (%s), exchange %s ready",
                ", ".join(s.amqp.nodes),
                s.amqp.exchange,
            )

        return AmqpLink(start, reset, s.amqp.reconnect_interval, up)

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
        return lifecycle.reload(self)

    async def run(self, stop: asyncio.Event) -> None:
        """Start every part in order, run until `stop`, then stop them in reverse."""
        await lifecycle.run(self, stop)


def _no_sink(*_args: object) -> None:
    """The notify role ingests nothing (its bridge never connects)."""
