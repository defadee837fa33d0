"""Ingest through a `sensord run` subprocess: quarantine queue content, SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path

import pytest

from bench.load import RawPublisher, publish_packet
from tests.support import (
    HOT_RULE,
    MqttPublisher,
    PrivateMosquitto,
    SensordProcess,
    TcpProxy,
    delete_amqp,
    get_queue_messages,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e

RULES = HOT_RULE


async def test_refused_messages_are_quarantined_with_topic_payload_and_reason(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.extra_toml = '[ingest]\nmax_clock_skew = "1m"\nquarantine_max_payload = 16\n'
    queue = f"{sensord.prefix}.quarantine"
    root = sensord.topic_root
    try:
        async with running(sensord):
            await wait_for(lambda: "connected to RabbitMQ" in sensord.stderr())
            mqtt_pub.publish(f"{root}/p/t-1/temperature", b"not json")
            mqtt_pub.publish(f"{root}/p/t-1/temperature", b"\xff\xfe binary")
            mqtt_pub.publish(f"{root}/p/t-1/temperature", b'{"value": 1, "ts": 4102444800}')
            mqtt_pub.publish(f"{root}/p/t-1/temperature", b"1" * 40)  # number, overflows
            mqtt_pub.publish(f"{root}/bad-topic", b"1")
            mqtt_pub.publish(f"{root}/p/t-1/temperature", b"21.5")  # accepted
            await sensord.wait_metric("sensord_quarantine_published_total", 4)
            await asyncio.sleep(0.3)
            metrics = await sensord.metrics()
            messages = await get_queue_messages(queue)
            assert await sensord.stop() == 0
    finally:
        await delete_amqp(sensord.prefix, [queue])
    # "1" * 40 is a finite double (1.1e39): a valid reading, like "21.5"
    assert metrics["sensord_readings_total"] == 2
    assert metrics["sensord_mqtt_messages_total"] == 6
    bodies = [json.loads(m.body) for m in messages]
    reasons = [b["reason"] for b in bodies]
    assert reasons == ["not_json", "not_json", "clock_skew", "topic"]
    assert metrics["sensord_quarantine_published_total"] == 4
    first, binary, skew, topic = bodies
    assert first["topic"] == f"{root}/p/t-1/temperature"
    assert (first["payload"], first["payload_encoding"]) == ("not json", "utf-8")
    assert binary["payload_encoding"] == "base64"
    assert base64.b64decode(binary["payload"]) == b"\xff\xfe binary"
    assert skew["detail"].startswith("ts is ")
    assert skew["payload"] == '{"value": 1, "ts'  # cut to quarantine_max_payload = 16
    assert (skew["payload_size"], skew["payload_truncated"]) == (30, True)
    assert topic["topic"] == f"{root}/bad-topic"
    headers = messages[0].headers
    assert headers["x-sensord-reason"] == "not_json"
    assert headers["x-sensord-topic"] == f"{root}/p/t-1/temperature"
    assert all(m.delivery_mode == 2 for m in messages)  # persistent


async def test_sigkill_mid_stream_loses_no_qos1_reading(
    tmp_path: Path, sensord: SensordProcess
) -> None:
    """Readings sensord had not finished when killed are redelivered to the next run.

    sensord reads through a proxy, cut before the kill: from then on nothing reaches it
    and none of its PUBACKs reaches the broker, so once its count stands still it is
    exactly what the first run processed, a bound on what it acknowledged (the count
    taken while it still read would miss what it processed, and acknowledged, after)."""
    total = 20_000
    (tmp_path / "broker").mkdir()
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    proxy = TcpProxy(broker.port)
    await proxy.up()
    sensord.mqtt_port = proxy.port
    sensord.rules_yaml = RULES
    root = sensord.topic_root
    sensord.write_config()
    sensord.config_override = sensord.config_path.read_text().replace(
        "persistent_session = false", "persistent_session = true"
    )
    try:
        async with running(sensord):
            pub = RawPublisher(broker.port, f"pub-{sensord.prefix}")
            packets = [
                publish_packet(
                    f"{root}/p/t-{i % 100}/temperature",
                    json.dumps({"value": 20, "ts": 1_764_331_200 + i}).encode(),
                    1,
                    i % 65535 + 1,
                )
                for i in range(total)
            ]
            sender = asyncio.create_task(asyncio.to_thread(pub.publish_qos1, packets, 1000))
            seen = 0.0
            while seen < total // 10:
                seen = (await sensord.metrics()).get("sensord_readings_total", 0.0)
            await proxy.down()
            while True:  # what it had received, processed: the count stands still
                await asyncio.sleep(0.3)
                settled = (await sensord.metrics())["sensord_readings_total"]
                if settled == seen:
                    break
                seen = settled
            assert sensord.proc is not None
            sensord.proc.send_signal(signal.SIGKILL)
            sensord.proc.wait()
            await sender
            pub.close()
        assert seen < total, "killed too late: nothing left to redeliver"
        await proxy.up()
        async with running(sensord):
            await sensord.wait_metric("sensord_readings_total", total - seen, timeout=60)
            await asyncio.sleep(0.5)
            second = (await sensord.metrics())["sensord_readings_total"]
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
        broker.stop()
    # every reading was processed by one run or the other (seen: the first run's count);
    # the second run got only what the first had not acknowledged
    assert seen + second >= total
    assert second < total
