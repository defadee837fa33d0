"""MQTT ingest over a real Mosquitto of the test's own: formats, sessions, TLS, duplicates.

The bridge runs in-process (fast, and its counters are read directly); the broker is a
private Mosquitto on a free port that the tests stop and start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sensord.events import Reading
from sensord.ingest.client import MqttBridge
from sensord.ingest.settings import IngestSettings, MqttSettings
from sensord.ops.metrics import Metrics
from sensord.rules import AlertTransition, Rule, RuleEngine
from tests.support import (
    MqttPublisher,
    PrivateMosquitto,
    TcpProxy,
    make_tls_files,
    uid,
    wait_for,
)

ROOT = "ingest"
TEMPLATE = f"{ROOT}/{{site}}/{{device}}/{{kind}}"
NOW = time.time()

HOT = Rule.model_validate(
    {
        "name": "hot",
        "match": {"kind": "temperature"},
        "above": 80,
        "clear_below": 75,
        "severity": "critical",
    }
)


@dataclass
class Collected:
    bridge: MqttBridge
    metrics: Metrics
    readings: list[Reading] = field(default_factory=list)
    transitions: list[AlertTransition] = field(default_factory=list)
    refused: list[tuple[bytes, bytes, str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def bridge_running(
    port: int,
    *,
    ingest: IngestSettings | None = None,
    engine: RuleEngine | None = None,
    wait: bool = True,
    **mqtt: Any,
) -> AsyncIterator[Collected]:
    settings = MqttSettings.model_validate(
        {
            "url": f"mqtt://127.0.0.1:{port}",
            "client_id": f"test-ingest-{uid()}",
            "topics": [f"{ROOT}/#"],
            "topic_template": TEMPLATE,
            **mqtt,
        }
    )
    metrics = Metrics()
    rules = engine if engine is not None else RuleEngine([HOT])
    out: Collected

    def sink(reading: Reading, now: float, key: object) -> None:
        out.readings.append(reading)
        out.transitions.extend(rules.observe(reading, now))

    def refused(topic: bytes, payload: bytes, reason: str, detail: str) -> None:
        out.refused.append((topic, payload, reason, detail))

    bridge = MqttBridge(settings, sink, metrics, ingest=ingest, on_refused=refused)
    out = Collected(bridge, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        if wait:
            await asyncio.wait_for(bridge.connected.wait(), 15)
        yield out
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def topic(device: str = "t-1", kind: str = "temperature", site: str = "plant-1") -> str:
    return f"{ROOT}/{site}/{device}/{kind}"


async def test_json_epoch_ms_and_bare_number(broker: PrivateMosquitto) -> None:
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port) as c:
            ms = 1_764_331_200_123
            pub.publish(topic(), json.dumps({"value": 21.5, "ts": ms, "unit": "C"}))
            pub.publish(topic("t-2"), "22.25")
            await wait_for(lambda: len(c.readings) == 2)
    finally:
        pub.close()
    first, second = c.readings
    assert first.ts == pytest.approx(ms / 1000)
    assert (first.value, first.unit, first.device) == (21.5, "C", "t-1")
    assert second.value == 22.25
    assert second.ts == pytest.approx(time.time(), abs=10)


async def test_senml_pack_over_mqtt(broker: PrivateMosquitto) -> None:
    base = 1_764_331_200.0
    pack = [
        {"bn": "urn:dev:mac:0024be:", "bt": base, "bu": "Cel", "n": "temperature", "v": 21.5},
        {"n": "temperature", "v": 22.0, "t": 10},
        {"n": "humidity", "u": "%RH", "v": 40, "t": 10},
        {"n": "door", "vb": True},
    ]
    relative = [{"n": "temperature", "v": 5, "t": -30}]  # 30 s before receipt
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port) as c:
            pub.publish(topic("gw-1", "senml"), json.dumps(pack))
            pub.publish(topic("gw-2", "senml"), json.dumps(relative))
            await wait_for(lambda: len(c.readings) == 5)
    finally:
        pub.close()
    got = [(r.device, r.kind, r.value, r.ts, r.unit) for r in c.readings[:4]]
    assert got == [
        ("urn:dev:mac:0024be", "temperature", 21.5, base, "Cel"),
        ("urn:dev:mac:0024be", "temperature", 22.0, base + 10, "Cel"),
        ("urn:dev:mac:0024be", "humidity", 40.0, base + 10, "%RH"),
        ("urn:dev:mac:0024be", "door", 1.0, base, "Cel"),
    ]
    last = c.readings[4]
    assert (last.device, last.kind, last.value) == ("gw-2", "temperature", 5.0)  # topic device
    assert last.ts == pytest.approx(time.time() - 30, abs=10)
    assert c.metrics.messages == 2


async def test_unit_normalisation_and_unit_refusal(broker: PrivateMosquitto) -> None:
    ingest = IngestSettings(units={"temperature": "C", "pressure": "kPa"})
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port, ingest=ingest) as c:
            pub.publish(topic("t-1"), '{"value": 212, "unit": "F"}')
            pub.publish(topic("t-2"), '{"value": 300, "unit": "K"}')
            pub.publish(topic("t-3"), '{"value": 20}')  # no unit: taken as the target unit
            pub.publish(topic("p-1", "pressure"), '{"value": 1013, "unit": "hPa"}')
            pub.publish(topic("h-1", "humidity"), '{"value": 40, "unit": "%"}')  # no target
            pub.publish(topic("t-4"), '{"value": 14.7, "unit": "psi"}')  # wrong family
            await wait_for(lambda: c.metrics.messages == 6)
    finally:
        pub.close()
    got = {r.device: (round(r.value, 3), r.unit) for r in c.readings}
    assert got == {
        "t-1": (100.0, "C"),
        "t-2": (26.85, "C"),
        "t-3": (20.0, "C"),
        "p-1": (101.3, "kPa"),
        "h-1": (40.0, "%"),
    }
    assert c.metrics.invalid["unit"] == 1
    assert c.refused[0][2] == "unit"


async def test_clock_skew_and_topic_templates(broker: PrivateMosquitto) -> None:
    ingest = IngestSettings.model_validate({"max_clock_skew": "1m"})
    templates = [TEMPLATE, f"{ROOT}/{{site}}/{{area}}/{{device}}/{{kind}}"]
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port, ingest=ingest, topic_template=templates) as c:
            future = time.time() + 3600
            pub.publish(topic("t-1"), json.dumps({"value": 1, "ts": future}))
            pub.publish(topic("t-1"), json.dumps({"value": 2, "ts": time.time() + 30}))
            pub.publish(f"{ROOT}/plant-1/hall-2/t-9/temperature", "3")
            pub.publish(f"{ROOT}/a/b/c/d/e/f", "4")
            await wait_for(lambda: c.metrics.messages == 4)
    finally:
        pub.close()
    assert [r.value for r in c.readings] == [2.0, 3.0]
    assert c.readings[1].labels == {"area": "hall-2"}
    assert c.readings[1].device == "t-9"
    assert c.metrics.invalid["clock_skew"] == 1
    assert c.metrics.invalid["topic"] == 1
    reasons = sorted(r[2] for r in c.refused)
    assert reasons == ["clock_skew", "topic"]
    assert c.refused[reasons.index("clock_skew")][0] == topic("t-1").encode()


async def test_redelivered_reading_does_not_repeat_an_alert(broker: PrivateMosquitto) -> None:
    ts = round(time.time()) - 10.0  # recent: older readings than stale_after are no evidence
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port) as c:
            for value, t in ((90, ts), (90, ts), (70, ts + 1), (70, ts + 1), (90, ts)):
                pub.publish(topic(), json.dumps({"value": value, "ts": t}))
            await wait_for(lambda: c.metrics.messages == 5)
    finally:
        pub.close()
    assert [t.status for t in c.transitions] == ["firing", "resolved"]
    # the same time and value again: duplicates; the old 90 after the 70: late, which
    # never moves the alert back to firing
    assert c.metrics.duplicates == 2
    assert c.metrics.late == 1
    assert c.metrics.readings == 2


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_readings_sent_while_down_are_processed_after_reconnect(
    broker: PrivateMosquitto, protocol: str
) -> None:
    client_id = f"test-session-{uid()}"
    opts: dict[str, Any] = {"client_id": client_id, "protocol": protocol, "qos": 1}
    async with bridge_running(broker.port, **opts) as c:
        pass  # the persistent session now exists, subscribed
    assert c.readings == []
    pub = MqttPublisher(broker.port)
    try:
        for i in range(50):
            pub.publish(topic(f"t-{i}"), json.dumps({"value": i, "ts": NOW + i}))
    finally:
        pub.close()
    async with bridge_running(broker.port, **opts) as c2:
        await wait_for(lambda: len(c2.readings) == 50)
    assert sorted(r.value for r in c2.readings) == [float(i) for i in range(50)]
    # a clean session with the same id: the broker holds nothing more for it
    async with bridge_running(broker.port, **{**opts, "persistent_session": False}) as c3:
        await asyncio.sleep(0.3)
    assert c3.readings == []


async def test_broker_outage_loses_nothing_and_repeats_no_alert(tmp_path: Path) -> None:
    """Broker stopped and restarted; readings published meanwhile reach sensord once."""
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    proxy = TcpProxy(broker.port)  # the bridge's way in: cut separately from the broker
    await proxy.up()
    ts = round(time.time()) - 60.0  # recent: older readings than stale_after are no evidence
    try:
        async with bridge_running(proxy.port, client_id=f"test-outage-{uid()}") as c:
            pub = MqttPublisher(broker.port)
            for i in range(20):  # 90, 70, 90, 70...: a firing and a resolution each pair
                pub.publish(topic(), json.dumps({"value": 90 - 20 * (i % 2), "ts": ts + i}))
            await wait_for(lambda: len(c.readings) == 20)
            await proxy.down()  # sensord is cut off
            await wait_for(lambda: not c.bridge.connected.is_set())
            for i in range(20, 40):  # queued in the persistent session
                pub.publish(topic(), json.dumps({"value": 90 - 20 * (i % 2), "ts": ts + i}))
            pub.close()
            broker.stop()  # persisted on SIGTERM, with the queued readings
            broker.start()
            await proxy.up()
            await wait_for(lambda: len(c.readings) == 40, timeout=30)
            await asyncio.sleep(0.5)  # anything redelivered twice would arrive now
    finally:
        await proxy.down()
        broker.stop()
    assert [r.ts - ts for r in c.readings] == list(range(40))
    statuses = [t.status for t in c.transitions]
    assert statuses == ["firing", "resolved"] * 20


async def test_tls_with_client_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    broker = PrivateMosquitto(tmp_path, tls=tls, persistence=False)
    broker.start()
    try:
        opts: dict[str, Any] = {
            "url": f"mqtts://127.0.0.1:{broker.port}",
            "ca_file": str(tls.ca),
            "cert_file": str(tls.client_cert),
            "key_file": str(tls.client_key),
        }
        async with bridge_running(broker.port, **opts) as c:
            pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
            pub.tls_set(str(tls.ca), str(tls.client_cert), str(tls.client_key))
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            pub.publish(topic(), "42.5", qos=1).wait_for_publish(10)
            await wait_for(lambda: len(c.readings) == 1)
            pub.disconnect()
            pub.loop_stop()
        assert c.readings[0].value == 42.5
        # the same broker with a CA that did not sign it: no connection
        (tmp_path / "other").mkdir()
        other = make_tls_files(tmp_path / "other")
        wrong_ca = {**opts, "ca_file": str(other.ca)}
        async with bridge_running(broker.port, wait=False, **wrong_ca) as bad:
            await wait_for(lambda: bad.bridge.client.socket() is None and bad.refused == [])
            await asyncio.sleep(1.0)
            assert not bad.bridge.connected.is_set()
            assert bad.readings == []
    finally:
        broker.stop()


async def test_packets_split_across_reads_are_framed_right(broker: PrivateMosquitto) -> None:
    """Payloads from tiny to over max_payload: packets straddle the 64 KiB buffer refills."""
    sizes = [5, 70_000, 40_000, 1, 65_000, 30_000, 100_000, 7] * 3
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port) as c:
            for i, size in enumerate(sizes):
                body = json.dumps({"value": i, "pad": "x" * max(0, size - 30)}).encode()
                pub.client.publish(topic(f"t-{i}"), body, qos=1)
            await wait_for(lambda: c.metrics.messages == len(sizes), timeout=30)
    finally:
        pub.close()
    accepted = [i for i, size in enumerate(sizes) if size <= 65_000]
    assert [r.value for r in c.readings] == [float(i) for i in accepted]
    assert c.metrics.invalid["too_large"] == len(sizes) - len(accepted)


async def test_tls_insecure_skips_only_the_host_name_check(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path, server_san="DNS:broker.invalid")  # not 127.0.0.1
    broker = PrivateMosquitto(tmp_path, tls=tls, persistence=False)
    broker.start()
    opts: dict[str, Any] = {
        "url": f"mqtts://127.0.0.1:{broker.port}",
        "ca_file": str(tls.ca),
        "cert_file": str(tls.client_cert),
        "key_file": str(tls.client_key),
    }
    try:
        async with bridge_running(broker.port, wait=False, **opts) as strict:
            await asyncio.sleep(1.5)
            assert not strict.bridge.connected.is_set()  # name mismatch: refused
        async with bridge_running(broker.port, tls_insecure=True, **opts) as lax:
            assert lax.bridge.connected.is_set()  # same chain, host name not checked
    finally:
        broker.stop()


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux-only")
async def test_broker_connection_acks_at_once(broker: PrivateMosquitto) -> None:
    """Each read re-arms TCP_QUICKACK on the real broker socket (Mosquitto's Nagle would
    otherwise hold its writes for our delayed ACK: 40 ms per alert under load, measured in
    bench.latency); a socket that refuses the option turns it off, and reading goes on."""
    pub = MqttPublisher(broker.port)
    try:
        async with bridge_running(broker.port) as c:
            client = c.bridge.client
            pub.publish(topic(), "21.5")
            await wait_for(lambda: len(c.readings) == 1)
            assert client._quickack == socket.TCP_QUICKACK  # the real socket took it
            a, b = socket.socketpair()  # AF_UNIX: no TCP options
            real, client._sock = client._sock, a
            try:
                client._ack_now()
            finally:
                client._sock = real
                a.close()
                b.close()
            assert client._quickack is None
            pub.publish(topic("t-2"), "22.5")
            await wait_for(lambda: len(c.readings) == 2)
    finally:
        pub.close()


class _EndlessBacklog:
    """Stands in for IngestClient in a test of MqttBridge's scheduling alone: every read
    says more is waiting (an MQTT backlog that never ends)."""

    buffered = False

    def __init__(self) -> None:
        self.reads = 0

    def read_batch(self, max_packets: int, deadline: float | None = None) -> bool:
        self.reads += 1
        return True

    def flush_acks(self) -> None:
        pass


async def test_a_backlog_is_read_once_per_loop_pass_whatever_wakes_the_reader() -> None:
    """The socket's readable event and the queued resume both call the reader. Each call
    used to queue one more resume, so under a backlog the loop's ready queue grew by one
    callback per pass and HTTP and timers waited seconds (bench.product). Now one resume
    is queued at a time, and a readable event while it waits reads nothing."""
    bridge = MqttBridge(MqttSettings(), lambda *_: None, Metrics())
    stub = _EndlessBacklog()
    bridge.client = stub  # type: ignore[assignment]
    bridge._loop = asyncio.get_running_loop()
    for _ in range(5):  # five readable events in one pass: one read, one resume queued
        bridge._on_readable()
    assert stub.reads == 1
    for _ in range(20):  # every pass: the socket readable again, and the queued resume
        bridge._on_readable()
        await asyncio.sleep(0)
    assert stub.reads == 21  # one read per pass, not a growing number
    ready = len(bridge._loop._ready)  # type: ignore[attr-defined]  # the loop's own queue
    assert ready <= 2
