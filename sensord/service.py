"""Composition root: wires bridge, rules, publisher, notify consumers and HTTP; owns start/stop."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from typing import Any, Literal, TextIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sensord.alerts import build_event
from sensord.amqp import declare_topology_once, make_broker
from sensord.bridge import MqttBridge
from sensord.config import Settings
from sensord.events import Reading
from sensord.http import HttpServer
from sensord.metrics import Metrics
from sensord.notify.base import NotificationChannel
from sensord.notify.channels import make_channel
from sensord.notify.consumer import Notifier
from sensord.publish import AlertPublisher
from sensord.rules import AlertTransition, Rule, RuleEngine

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
        self.broker = make_broker(settings.amqp)
        self.edge = role in ("all", "edge")
        self.notifying = role in ("all", "notify")
        self.publisher = AlertPublisher(self.broker, settings.amqp, self.metrics)
        self.bridge = MqttBridge(settings.mqtt, self._on_reading, self.metrics)
        external_url = f"http://{settings.http.listen}" if settings.http.listen else ""
        self.channels: list[NotificationChannel] = []
        self.notifier: Notifier | None = None
        if self.notifying:
            self.channels = [
                make_channel(ch, settings, external_url, console) for ch in settings.channels
            ]
            self.notifier = Notifier(
                settings.amqp, list(settings.channels), self.channels, self.metrics
            )
        self.http = HttpServer(settings.http, self.metrics, self.readiness)
        self.amqp_up = asyncio.Event()

    # ---- per-reading path (called synchronously from the MQTT callback)

    def _on_reading(self, reading: Reading, now: float) -> None:
        transitions = self.engine.observe(reading, now)
        if transitions:
            self._emit(transitions)

    def _emit(self, transitions: list[AlertTransition]) -> None:
        for tr in transitions:
            event = build_event(tr)
            self.metrics.alerts.labels(event.severity.value, event.status).inc()
            self.publisher.enqueue(event)

    def _tick(self) -> None:
        transitions = self.engine.tick(time.time())
        if transitions:
            self._emit(transitions)

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
        await declare_topology_once(self.settings.amqp, list(self.settings.channels))
        if self.notifier is not None:
            await self.notifier.start()
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
