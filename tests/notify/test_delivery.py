"""Delivery through the broker-side retry tiers and the DLQ, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from tests.support import (
    AMQP_URL,
    SensordProcess,
    TcpProxy,
    WebhookSink,
    make_event,
    peek_queue,
    publish_events,
    queue_depth,
    run_cli,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e


def hook(sink: WebhookSink, **retry: object) -> dict[str, object]:
    return {"name": "hook", "type": "webhook", "url": sink.url, "retry": retry}


def sent(metrics: dict[str, float], outcome: str, channel: str = "hook") -> float:
    return metrics.get(
        f'sensord_notifications_total{{channel="{channel}",outcome="{outcome}"}}', 0.0
    )


async def test_503_503_200_is_delivered_on_the_third_attempt_after_the_delays(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    webhook.statuses = [503, 503]
    sensord.role = "notify"
    sensord.channels = [hook(webhook, max_attempts=3, delay="200ms", max_delay="2s")]
    event = make_event()
    async with running(sensord):
        await publish_events(sensord.prefix, [event])
        await wait_for(lambda: webhook.bodies)
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="sent"}', 1
        )
        await asyncio.sleep(0.5)  # nothing more may arrive
        assert await sensord.stop() == 0
    assert webhook.requests == 3
    first_gap = webhook.times[1] - webhook.times[0]
    second_gap = webhook.times[2] - webhook.times[1]
    # 200 ms then 400 ms (doubling), through RabbitMQ TTL queues: late by a little, never early
    # (the upper bounds leave room for a loaded host: a second-gap of 0.84 s was seen)
    assert 0.19 <= first_gap < 1.0, first_gap
    assert 0.39 <= second_gap < 1.5, second_gap
    assert sent(metrics, "retried") == 2
    assert sent(metrics, "sent") == 1
    assert sent(metrics, "dead") == 0
    assert metrics['sensord_notification_seconds_count{channel="hook"}'] == 3
    assert webhook.bodies[0]["alerts"][0]["fingerprint"] == event["fingerprint"]
    assert [json.loads(r)["alerts"][0]["fingerprint"] for r in webhook.raw] == [
        event["fingerprint"]
    ] * 3


async def test_target_down_for_good_is_dead_lettered_then_replayed(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    webhook.statuses = [503, 503, 503]  # down for every attempt; up (200) afterwards
    sensord.role = "notify"
    sensord.channels = [hook(webhook, max_attempts=3, delay="100ms")]
    event = make_event(site="plant-9", device="t-3")
    dead = f"{sensord.prefix}.notify.hook.dead"
    async with running(sensord):
        await publish_events(sensord.prefix, [event])
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="dead"}', 1
        )
        await asyncio.sleep(0.5)
        assert webhook.requests == 3  # exactly max_attempts
        assert webhook.bodies == []
        (letter,) = await peek_queue(dead)
        headers = letter.headers or {}
        assert headers["x-sensord-attempts"] == 3
        assert "HTTP 503" in str(headers["x-sensord-error"])
        assert headers["x-sensord-channel"] == "hook"
        assert str(headers["x-sensord-dead-at"]).endswith("Z")
        assert json.loads(letter.body)["event_id"] == event["event_id"]
        assert sent(metrics, "retried") == 2
        await sensord.wait_metric('sensord_dlq_messages{channel="hook"}', 1)

        listing = run_cli("dlq", "list", "-c", str(sensord.config_path))
        assert listing.returncode == 0, listing.stderr
        assert event["event_id"] in listing.stdout
        assert "critical-temperature plant-9/t-3" in listing.stdout
        assert "HTTP 503" in listing.stdout
        assert "1 dead letter(s)" in listing.stdout

        replay = run_cli("dlq", "replay", "-c", str(sensord.config_path), "--all")
        assert replay.returncode == 0, replay.stderr
        assert "1 replayed" in replay.stdout
        await wait_for(lambda: webhook.bodies)
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="sent"}', 1
        )
        assert await peek_queue(dead) == []
        assert await sensord.stop() == 0
    assert webhook.requests == 4
    assert webhook.bodies[0]["alerts"][0]["labels"]["site"] == "plant-9"
    assert sent(metrics, "dead") == 1  # the replayed copy started again at attempt 1


async def test_permanent_error_goes_straight_to_the_dlq(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    webhook.statuses = [400]
    sensord.role = "notify"
    sensord.channels = [hook(webhook, max_attempts=5, delay="100ms")]
    async with running(sensord):
        await publish_events(sensord.prefix, [make_event()])
        metrics = await sensord.wait_metric(
            'sensord_notifications_total{channel="hook",outcome="dead"}', 1
        )
        await asyncio.sleep(0.4)
        (letter,) = await peek_queue(f"{sensord.prefix}.notify.hook.dead")
        assert await sensord.stop() == 0
    assert webhook.requests == 1
    assert sent(metrics, "retried") == 0
    assert (letter.headers or {})["x-sensord-attempts"] == 1
    assert "HTTP 400" in str((letter.headers or {})["x-sensord-error"])


async def test_retry_after_picks_the_first_tier_at_least_as_long(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    webhook.statuses = [429]
    webhook.retry_after = "1"
    sensord.role = "notify"
    # tiers 100ms, 200ms, 400ms, 800ms, 1.6s: Retry-After 1 s -> the 1.6 s tier
    sensord.channels = [hook(webhook, max_attempts=6, delay="100ms")]
    async with running(sensord):
        await publish_events(sensord.prefix, [make_event()])
        await wait_for(lambda: webhook.bodies, timeout=10)
        assert await sensord.stop() == 0
    gap = webhook.times[1] - webhook.times[0]
    assert 1.55 <= gap < 2.3, gap


async def test_rate_limit_delays_over_the_limit_and_drops_nothing(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    sensord.role = "notify"
    channel = hook(webhook, max_attempts=1, delay="200ms")
    channel["rate_limit"] = {"rate": 10, "burst": 2}
    sensord.channels = [channel]
    events = [make_event(device=f"t-{i}") for i in range(8)]
    async with running(sensord):
        await publish_events(sensord.prefix, events)
        await wait_for(lambda: len(webhook.bodies) == 8, timeout=15)
        metrics = await sensord.metrics()
        assert await sensord.stop() == 0
    assert sorted(b["alerts"][0]["labels"]["device"] for b in webhook.bodies) == sorted(
        f"t-{i}" for i in range(8)
    )
    assert sent(metrics, "throttled") >= 1
    assert sent(metrics, "dead") == 0
    # 2 at once (burst), then 10/s: the 8th no sooner than ~0.6 s after the first
    assert webhook.times[-1] - webhook.times[0] >= 0.5


async def test_queues_declared_by_sensord_0_1_are_reused_and_bad_bodies_dead_lettered(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    """An install upgraded from 0.1 keeps its queues: same arguments, no PRECONDITION_FAILED."""
    work = f"{sensord.prefix}.notify.hook"
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue(f"{work}.dead", durable=True, arguments={"x-queue-type": "quorum"})
        await ch.declare_queue(
            work,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{work}.dead",
            },
        )
        # a message the 0.1 consumer rejected, dead-lettered by RabbitMQ
        await ch.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=work)
        got = await (await ch.get_queue(work)).get(no_ack=False)
        assert got is not None
        await got.reject()
    sensord.role = "notify"
    sensord.channels = [hook(webhook, max_attempts=2, delay="100ms")]
    async with running(sensord):
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            exchange = await ch.get_exchange(f"{sensord.prefix}.alerts")
            await exchange.publish(aio_pika.Message(b"not json"), routing_key="critical.a.b")
        await publish_events(sensord.prefix, [make_event()])
        await wait_for(lambda: webhook.bodies)
        await sensord.wait_metric('sensord_notifications_total{channel="hook",outcome="dead"}', 1)
        listing = run_cli("dlq", "list", "-c", str(sensord.config_path))
        assert await sensord.stop() == 0
    assert listing.returncode == 0, listing.stderr
    assert "rejected (dead-lettered by RabbitMQ)" in listing.stdout  # the 0.1 dead letter
    assert "not an alert event" in listing.stdout
    assert "2 dead letter(s)" in listing.stdout


async def test_notify_consumer_resumes_after_its_rabbitmq_connection_is_cut(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    proxy = TcpProxy(5672)
    await proxy.up()
    sensord.amqp_url = AMQP_URL.replace(":5672", f":{proxy.port}")
    sensord.role = "notify"
    sensord.channels = [hook(webhook, max_attempts=2, delay="100ms")]
    before = [make_event(device=f"b-{i}") for i in range(20)]
    during = [make_event(device=f"d-{i}") for i in range(20)]
    async with running(sensord):
        await publish_events(sensord.prefix, before)
        await wait_for(lambda: len(webhook.bodies) == 20)
        # let the acks go out first: a cut between a send and its ack means a redelivery
        # (at least once, docs/channels.md), which would make this count ambiguous
        await asyncio.sleep(0.5)
        await proxy.down()
        await publish_events(sensord.prefix, during)  # straight to RabbitMQ: they wait
        await asyncio.sleep(1.0)
        assert len(webhook.bodies) == 20
        await proxy.up()
        await wait_for(lambda: len(webhook.bodies) >= 40, timeout=30)
        await asyncio.sleep(0.5)
        assert await sensord.stop() == 0
        # acknowledged on the new AMQP channel too: nothing left to redeliver
        assert await queue_depth(f"{sensord.prefix}.notify.hook") == 0
    await proxy.down()
    devices = sorted(b["alerts"][0]["labels"]["device"] for b in webhook.bodies)
    assert devices == sorted(e["labels"]["device"] for e in before + during)
