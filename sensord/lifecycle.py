"""Start, reload and stop of a built Service (sensord/app.py builds it).

Start in the order the data needs: the state restored before MQTT connects, HTTP before
the brokers, the channels before their consumers; stop in reverse, MQTT first, so that
unacknowledged readings stay with the broker and every alert recorded is published or
held in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sensord.errors import ConfigError
from sensord.ops import gc
from sensord.ops.health import supervise
from sensord.rules import load_rules

if TYPE_CHECKING:
    from sensord.app import Service

log = logging.getLogger("sensord")


def reload(service: Service) -> tuple[bool, list[str]]:
    """Reload the rule files (SIGHUP, POST /-/reload). A bad file keeps the old rules."""
    # systemd: RELOADING=1 with the monotonic time, READY=1 once done (either way)
    service.systemd.reloading(time.monotonic_ns() // 1000)
    try:
        rules = load_rules(service.settings.rules.paths, service.settings.base_dir)
    except ConfigError as exc:
        service.metrics.rules_reload_failures.inc()
        for problem in exc.problems:
            log.error("rule reload refused, keeping the old rules: %s", problem)
        return False, [str(p) for p in exc.problems]
    else:
        if service.pipeline is not None:
            service.pipeline.replace_rules(rules)
        else:
            service.engine.replace_rules(rules, time.time())
        service.metrics.rules_loaded.set(len(rules))
        log.info("rules reloaded: %d rule(s)", len(rules))
        return True, []
    finally:
        service.systemd.notify("READY=1", f"STATUS={service.health.status_text()}")


def _start_ticks(service: Service) -> AsyncIOScheduler:
    """The rules' timers (`for`, deadman) and the alerts' repeats, every `[rules] tick`."""
    scheduler = AsyncIOScheduler()
    scheduler.add_job(
        service._tick,
        "interval",
        seconds=service.settings.rules.tick,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
    )
    scheduler.start()
    return scheduler


async def _flush(service: Service, telemetry_task: asyncio.Task[None] | None) -> None:
    """On stop, once nothing new comes in: the alert events, then the readings stream."""
    grace = service.settings.amqp.stop_grace
    flush_from = time.monotonic()
    left = await service.publisher.flush(grace)
    if left:
        log.error(
            "%d alert event(s) not published to RabbitMQ within the %gs "
            "stop grace: they are lost until the outbox lands",
            left,
            grace,
        )
    telemetry = service.telemetry
    if telemetry is not None and telemetry_task is not None:
        # alerts first; the readings get what is left of the grace (>= 0.5 s)
        await telemetry_task
        await telemetry.flush(max(grace - (time.monotonic() - flush_from), 0.5))


async def run(service: Service, stop: asyncio.Event) -> None:
    """Start every part in order, run until `stop`, then stop them in reverse."""
    async with AsyncExitStack() as stack:
        stack.callback(service.db.close)
        if service.pipeline is not None:
            if service.edge:
                service.bridge.remember(
                    service.pipeline.restore(service.settings.rules.outage_tolerance)
                )
            # a central process adopts each partition's state when it takes it (central/)
            stack.callback(service.pipeline.flush)  # the last heartbeat, before db.close
        gc.freeze_startup_heap()  # built and restored: the collector skips all that
        await service.http.start()
        stack.push_async_callback(service.http.stop)
        for channel in service.channels:
            await channel.start()
            stack.push_async_callback(channel.close)
        # the process's AMQP connections, closed once every role on them stopped
        stack.push_async_callback(service.connections.close)
        stack.push_async_callback(service.broker.stop)
        stack.push_async_callback(service.publisher.close)
        telemetry = service.telemetry
        if telemetry is not None:
            stack.push_async_callback(telemetry.close)
        if service.notifier is not None:
            # before the channels close: in-flight notifications finish first
            stack.push_async_callback(service.notifier.stop)
        if service.judging:
            stack.callback(_start_ticks(service).shutdown, wait=False)
        log.info(
            "sensord running (role %s, %d rule(s), %d channel(s))",
            service.role,
            len(service.engine.rules),
            len(service.channels),
        )
        async with asyncio.TaskGroup() as tg:
            # a topology error (e.g. a queue declared with other arguments) is fatal
            amqp_task = tg.create_task(service.amqp.run(), name="amqp-connect")
            health = service.health
            tg.create_task(
                supervise(service.systemd, health.status_text, health.systemd_ready, stop),
                name="systemd",
            )
            tg.create_task(service.checkpointer.run(stop), name="checkpoint")
            reader = service.reader
            if reader is not None:
                reader_task = tg.create_task(reader.run(stop), name="central-reader")
            if service.judging:
                publish_task = tg.create_task(service.publisher.run(stop), name="alert-publisher")
            if service.edge:
                bridge_task = tg.create_task(service.bridge.run(stop), name="mqtt-bridge")
                tg.create_task(service.quarantine.run(stop), name="quarantine")
                if telemetry is not None:
                    telemetry_task = tg.create_task(telemetry.run(stop), name="telemetry")
            await stop.wait()
            log.info("stopping")
            if reader is not None:
                # the streams first: what is read and not committed is read again
                await reader_task
            if service.edge:
                # MQTT first: no new readings; unacknowledged ones stay with the broker
                await bridge_task
            if service.judging:
                await publish_task  # its publish in flight ends before the flush starts
                await _flush(service, telemetry_task if telemetry is not None else None)
            if not amqp_task.done():
                amqp_task.cancel()
