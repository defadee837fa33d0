"""Composition root: wires bridge, rules, publisher, notify consumers and HTTP; owns start/stop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import AsyncExitStack
from typing import Any, Literal, TextIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sensord.alerts import build_event
from sensord.amqp import declare_topology, make_broker
from sensord.bridge import MqttBridge
from sensord.config import ConsoleChannelSettings, Settings
from sensord.errors import ConfigError
from sensord.events import Reading
from sensord.http import HttpServer
from sensord.metrics import Metrics
from sensord.notify import ConsoleChannel, NotificationChannel, make_channel, register_consumer
from sensord.publish import AlertPublisher
from sensord.ratelimit import RateLimitedLog
from sensord.rules import AlertTransition, Rule, RuleEngine, load_rules
from sensord.store import StateStore

log = logging.getLogger("sensord")

Role = Literal["all", "edge", "notify"]

STOP_GRACE = 5.0  # seconds to keep publishing held alerts after SIGTERM


class Service:
    def __init__(
        self,
        settings: Settings,
        rules: list[Rule],
        role: Role = "all",
        *,
        metrics: Metrics | None = None,
        console: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.metrics = metrics if metrics is not None else Metrics()
        self.engine = RuleEngine(rules)
        self.metrics.rules_loaded.set(len(rules))
        self.store: StateStore | None = None  # opened by run() for the edge role
        self._store_error_log = RateLimitedLog(log, interval=30.0, burst=1)
        self.broker = make_broker(settings.amqp)
        self.edge = role in ("all", "edge")
        self.notifying = role in ("all", "notify")
        self.publisher = AlertPublisher(self.broker, settings.amqp, self.metrics)
        self.bridge = MqttBridge(settings.mqtt, self._on_reading, self.metrics)
        external_url = f"http://{settings.http.listen}" if settings.http.listen else ""
        self.channels: list[NotificationChannel] = []
        if self.notifying:
            for ch_settings in settings.channels:
                channel: NotificationChannel = (
                    ConsoleChannel(ch_settings, console)
                    if isinstance(ch_settings, ConsoleChannelSettings)
                    else make_channel(ch_settings, external_url)
                )
                self.channels.append(channel)
                register_consumer(self.broker, settings.amqp, ch_settings, channel, self.metrics)
        self.http = HttpServer(settings.http, self.metrics, self.readiness, self.reload)
        self.amqp_up = asyncio.Event()

    # ---- per-reading path (called synchronously from the MQTT callback)

    def _on_reading(self, reading: Reading, now: float) -> None:
        transitions = self.engine.evaluate(reading, now)
        if transitions or self.engine.dirty:  # (orphans appear only at restore and reload)
            self._commit(transitions, now)

    def _commit(
        self, transitions: list[AlertTransition], now: float, *, flush: bool = False
    ) -> None:
        """Persist what the engine changed (write-behind: in the call that changed it), then
        hand the transitions on. `flush` adds the deadman clocks and the heartbeat time."""
        if self.store is not None and (flush or self.engine.has_changes):
            records = self.engine.take_dirty()
            clocks = self.engine.clocks() if flush else []
            try:
                with self.store.transaction() as conn:
                    self.store.write(
                        conn,
                        records,
                        clocks,
                        saved_at=now if flush else None,
                        started_at=self.engine.start if flush else None,
                    )
            except sqlite3.Error as exc:
                self.metrics.state_write_failures.inc()
                self._store_error_log.warning("cannot write the state file: %s", exc)
        if transitions:
            self._emit(transitions)

    def _emit(self, transitions: list[AlertTransition]) -> None:
        for tr in transitions:
            if tr.status == "flapping":
                self.metrics.alerts_flapping.labels(tr.rule.severity.value).inc()
                log.warning(
                    "alert %s %s is flapping: its notifications are held until it settles",
                    tr.rule.name,
                    "/".join(tr.labels.get(k, "?") for k in ("site", "device")),
                )
                continue
            event = build_event(tr)
            self.metrics.alerts.labels(event.severity.value, event.status).inc()
            self.publisher.enqueue(event)

    def _tick(self) -> None:
        now = time.time()
        self._commit(self.engine.tick(now), now, flush=True)

    def reload(self) -> tuple[bool, list[str]]:
        """Reload the rule files (SIGHUP, POST /-/reload). A bad file keeps the old rules."""
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

    def _open_state(self) -> None:
        path = self.settings.resolve(self.settings.state.path)
        self.store = StateStore(path)
        snapshot = self.store.load()
        now = time.time()
        transitions = self.engine.restore(snapshot, now, self.settings.rules.outage_tolerance)
        log.info(
            "state file %s: %d alert state(s), %d deadman clock(s) restored",
            path,
            len(snapshot.records),
            len(snapshot.clocks),
        )
        self._commit(transitions, now, flush=True)

    def _close_state(self) -> None:
        if self.store is not None:
            self._commit([], time.time(), flush=True)
            self.store.close()
            self.store = None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        mqtt_up = self.bridge.connected.is_set()
        amqp_up = self.amqp_up.is_set()
        detail = {
            "role": self.role,
            "mqtt": "connected" if mqtt_up else "disconnected",
            "amqp": "connected" if amqp_up else "disconnected",
            "alerts_pending": self.publisher.pending,
        }
        ok = (mqtt_up or not self.edge) and (amqp_up or not self.notifying)
        return ok, detail

    # ---- lifecycle

    async def _connect_amqp(self) -> None:
        # With fail_fast=False, start() returns only once RabbitMQ is reachable (FACTS.md).
        await self.broker.start()
        await declare_topology(self.broker, self.settings.amqp, list(self.settings.channels))
        self.amqp_up.set()
        self.metrics.amqp_connected.set(1)
        self.publisher.ready.set()
        log.info("connected to RabbitMQ, exchange %s ready", self.settings.amqp.exchange)

    async def run(self, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            await self.http.start()
            stack.push_async_callback(self.http.stop)
            for channel in self.channels:
                await channel.start()
                stack.push_async_callback(channel.close)
            stack.push_async_callback(self.broker.stop)
            scheduler = AsyncIOScheduler()
            if self.edge:
                self._open_state()
                stack.callback(self._close_state)
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
                if self.edge:
                    tg.create_task(self.bridge.run(stop), name="mqtt-bridge")
                    tg.create_task(self.publisher.run(stop), name="alert-publisher")
                tg.create_task(_cancel_on(stop, amqp_task), name="stop")
            log.info("stopping")
            if self.edge:
                left = await self.publisher.flush(STOP_GRACE)
                if left:
                    log.error("%d alert event(s) not yet published to RabbitMQ at stop", left)


async def _cancel_on(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    await stop.wait()
    if not task.done():
        task.cancel()
