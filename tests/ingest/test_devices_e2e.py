"""Every ecosystem end to end: a simulated device of each format (simulators/devices/,
publishing as its firmware does) -> a private Mosquitto -> the whole `sensord run` with a
`[[mqtt.sources]]` table of that format -> `GET /api/v1/sensors`, the per-source metrics
and `sensord sources`.

The device formats subscribe to their firmware's own topics (`zigbee2mqtt/#`, `tele/+/…`),
so each test has a Mosquitto of its own: nothing else publishes there.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from simulators import devices
from tests.support import (
    MqttPublisher,
    PrivateMosquitto,
    SensordProcess,
    delete_amqp,
    get_queue_messages,
    run_cli,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e

# one report per device: shared kinds -> values a real sensor could give
VALUES = {"temperature": 21.5, "humidity": 48.0}


def test_every_format_of_the_issue_has_a_simulated_device() -> None:
    assert set(devices.names()) >= {
        "zigbee2mqtt", "tasmota", "shelly", "esphome", "homeassistant", "sparkplug", "influx",
    }  # fmt: skip


def _sensors(listing: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    return [(s["site"], s["device"], s["kind"], s["value"]) for s in listing["sensors"]]


def _send(pub: MqttPublisher, messages: list[tuple[str, bytes, int, bool]]) -> None:
    for topic, payload, qos, retain in messages:
        pub.client.publish(topic, payload, qos, retain).wait_for_publish(10)


# one sensord per group: the formats whose default topics do not overlap share one (the
# homeassistant and esphome sources would both read ESPHome's discovery configs)
GROUPS = {
    "ecosystems": [f for f in devices.names() if f != "homeassistant"],
    "homeassistant": ["homeassistant"],
}


@pytest.mark.parametrize("group", list(GROUPS))
async def test_simulated_devices_are_read_end_to_end(
    group: str, sensord: SensordProcess, broker: PrivateMosquitto
) -> None:
    fmts = GROUPS[group]
    sensord.mqtt_port = broker.port
    sensord.extra_toml = "".join(f'[[mqtt.sources]]\nformat = "{f}"\nsite = "e2e"\n' for f in fmts)
    fleet = {f: devices.get(f)(f"dev-{f}", "e2e") for f in fmts}
    pub = MqttPublisher(broker.port)
    found: list[tuple[str, str, str, float]] = []

    async def listed(fmt: str) -> set[tuple[str, float]]:
        """(kind, value) of the sensors of format `fmt`'s device."""
        nonlocal found
        _, body = await sensord.get("/api/v1/sensors?spark=0")
        found = _sensors(json.loads(body))
        return {(k, round(v, 3)) for _s, d, k, v in found if f"dev-{fmt}" in d}

    try:
        async with running(sensord):
            for device in fleet.values():
                _send(pub, device.birth())
            # a discovery source subscribes to the state topics its configs name: until
            # that SUBACK, a state report may find no subscriber, so the devices report
            # again, as real ones do periodically
            deadline = time.monotonic() + 30
            waiting = list(fmts)
            while waiting:
                assert time.monotonic() < deadline, f"{waiting}: values not listed: {found}"
                for fmt in waiting:
                    _send(pub, fleet[fmt].state(VALUES, time.time()))
                await asyncio.sleep(0.5)
                waiting = [f for f in waiting if not set(VALUES.items()) <= await listed(f)]
            assert all(site == "e2e" for site, *_ in found), found
            assert all(any(f"dev-{f}" in d for f in fmts) for _s, d, _k, _v in found), found
            # availability: online after the birth, offline after the death (Telegraf's
            # line protocol has none: its device sends no birth and no death)
            announced = [f for f in fmts if fleet[f].death()]
            for fmt in fmts:
                assert (("online", 1.0) in await listed(fmt)) is (fmt in announced), fmt
                _send(pub, fleet[fmt].death())
            deadline = time.monotonic() + 20
            for fmt in announced:
                while ("online", 0.0) not in await listed(fmt):
                    assert time.monotonic() < deadline, f"{fmt}: not offline: {found}"
                    await asyncio.sleep(0.2)
            metrics = await sensord.metrics()
            cli = run_cli("sources", "--url", sensord.base_url)
            assert cli.returncode == 0, cli.stderr
            for fmt in fmts:
                expected = len(VALUES) + (2 if fmt in announced else 0)
                assert metrics[f'sensord_readings_total{{source="{fmt}"}}'] >= expected, fmt
                assert f"{fmt}  format {fmt}" in cli.stdout
                assert f"e2e/dev-{fmt}" in cli.stdout  # a device it has seen
    finally:
        pub.close()


# one message per format that is not what its firmware sends: refused, quarantined
MALFORMED = [
    ("zigbee2mqtt", "zigbee2mqtt/kitchen", b"{not json"),
    ("tasmota", "tele/kitchen/SENSOR", b"[1, 2"),
    ("shelly", "shelly-1/events/rpc", b"\xff\xfe"),
    ("sparkplug", "spBv1.0/plant/NDATA/edge-1", b"\xff\xff\xff\xff"),
    ("influx", "telegraf/h1/cpu", b"no fields here"),
]


async def test_malformed_device_messages_are_quarantined_naming_source_and_format(
    sensord: SensordProcess, broker: PrivateMosquitto
) -> None:
    sensord.mqtt_port = broker.port
    sensord.extra_toml = "".join(
        f'[[mqtt.sources]]\nname = "src-{fmt}"\nformat = "{fmt}"\n' for fmt, _t, _p in MALFORMED
    )
    queue = f"{sensord.prefix}.quarantine"
    pub = MqttPublisher(broker.port)
    try:
        async with running(sensord):
            await wait_for(lambda: "connected to RabbitMQ" in sensord.stderr())
            for _fmt, topic, payload in MALFORMED:
                pub.publish(topic, payload)
            await sensord.wait_metric("sensord_quarantine_published_total", len(MALFORMED))
            messages = await get_queue_messages(queue)
    finally:
        pub.close()
        await delete_amqp(sensord.prefix, [queue])
    details = {json.loads(m.body)["topic"]: json.loads(m.body)["detail"] for m in messages}
    for fmt, topic, _payload in MALFORMED:
        assert details[topic].startswith(f"source src-{fmt}: {fmt}: "), details[topic]


async def test_home_assistant_states_queued_while_down_are_read_after_a_restart(
    sensord: SensordProcess, broker: PrivateMosquitto
) -> None:
    """A persistent session queues the learned state topics' messages while sensord is
    down; after the restart they arrive before the retained configs that name them."""
    sensord.mqtt_port = broker.port
    sensord.extra_toml = '[[mqtt.sources]]\nformat = "homeassistant"\nsite = "e2e"\n'
    sensord.write_config()
    sensord.config_override = sensord.config_path.read_text().replace(
        "persistent_session = false", "persistent_session = true"
    )
    device = devices.get("homeassistant")("dev-1", "e2e")
    pub = MqttPublisher(broker.port)
    try:
        async with running(sensord):
            _send(pub, device.birth())

            async def learned() -> bool:
                _, body = await sensord.get("/api/v1/sources")
                (src,) = [s for s in json.loads(body)["sources"] if s["name"] == "homeassistant"]
                return len(src["topics"]) > 2  # the discovery filters and a state topic

            deadline = time.monotonic() + 20
            while not await learned():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert await sensord.stop() == 0
        # down: three reports queue in the session
        for i in range(3):
            _send(pub, device.state({"temperature": 30.0 + i, "humidity": 50.0}, time.time()))
        async with running(sensord):
            await sensord.wait_metric('sensord_readings_total{source="homeassistant"}', 6)
            _, body = await sensord.get("/api/v1/sensors?spark=0&kind=temperature")
            (temperature,) = json.loads(body)["sensors"]
            assert temperature["value"] == 32.0  # the last one queued
    finally:
        pub.close()
