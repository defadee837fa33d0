"""Graceful stop on SIGTERM: MQTT first, then held alerts get the stop grace to go out."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import make_broker
from tests.support import (
    AMQP_URL,
    MqttPublisher,
    SensordProcess,
    TcpProxy,
    WebhookSink,
    get_queue_messages,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e

RULES = "rules:\n  - {name: hot, match: {kind: temperature}, above: 80, severity: critical}\n"
FIRING = 'sensord_alerts_total{severity="critical",status="firing"}'


def _with_stop_grace(sensord: SensordProcess, grace: str) -> None:
    """The config sensord writes, with `stop_grace` in its [amqp] table."""
    sensord.write_config()
    sensord.config_override = sensord.config_path.read_text().replace(
        "reconnect_interval = 0.5", f'reconnect_interval = 0.5\nstop_grace = "{grace}"'
    )


async def test_held_alert_is_flushed_when_rabbitmq_returns_within_the_grace(
    sensord: SensordProcess, webhook: WebhookSink, mqtt_pub: MqttPublisher
) -> None:
    proxy = sensord.amqp_through_proxy()
    sensord.extra_toml = ""
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    sensord.config_override = None
    _with_stop_grace(sensord, "15s")
    async with running(sensord, ready=False):
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        mqtt_pub.publish(f"{sensord.topic_root}/p/t-1/temperature", b"99")
        metrics = await sensord.wait_metric(FIRING, 1)
        assert metrics["sensord_outbox_pending"] == 1
        assert sensord.proc is not None
        sensord.proc.terminate()  # SIGTERM while the alert is held
        await wait_for(lambda: "stopping" in sensord.stderr())
        await proxy.up()  # RabbitMQ comes back during the grace
        try:
            assert await sensord.stop() == 0
        finally:
            await proxy.down()
        # confirmed by RabbitMQ before exit: either this process's own notify consumer
        # delivered it already, or it waits in the channel's queue for the next one
        queued = await get_queue_messages(f"{sensord.prefix}.notify.hook")
    assert len(webhook.alerts("firing")) + len(queued) == 1
    assert "not published" not in sensord.stderr()


async def test_stop_grace_bounds_the_wait_and_says_what_was_left(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord.amqp_through_proxy()  # never opened
    sensord.rules_yaml = RULES
    _with_stop_grace(sensord, "1s")
    async with running(sensord, ready=False):
        await wait_for(lambda: "connected to MQTT" in sensord.stderr())
        mqtt_pub.publish(f"{sensord.topic_root}/p/t-1/temperature", b"99")
        await sensord.wait_metric(FIRING, 1)
        started = time.monotonic()
        assert await sensord.stop() == 0
        took = time.monotonic() - started
    assert took < 8, took
    assert "1 alert event(s) not published to RabbitMQ within the 1s stop grace" in sensord.stderr()


async def test_broker_start_fails_fast_and_leaves_no_reconnecting_task() -> None:
    """Unreachable RabbitMQ: start() raises (AmqpLink retries), and no
    aio-pika connection task is left behind. With fail_fast=False that task swallowed
    the cancellation of a stop during its connect attempt and kept sensord from exiting."""
    proxy = TcpProxy(5672)  # never opened: connection refused
    settings = AmqpSettings.model_validate(
        {"url": AMQP_URL.replace(":5672", f":{proxy.port}"), "reconnect_interval": 0.1}
    )
    broker = make_broker(settings, CollectorRegistry())
    with pytest.raises((OSError, aio_pika.exceptions.AMQPError)):
        await asyncio.wait_for(broker.start(), 10)
    await broker.stop()
    await asyncio.sleep(0.3)  # longer than reconnect_interval: a loop would be visible
    left = [t for t in asyncio.all_tasks() if "connection_factory" in repr(t.get_coro())]
    assert left == []
