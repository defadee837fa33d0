"""sensord.testing for real: a Mosquitto it starts, a proxy it cuts, a sink it fills."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sensord.testing import (
    BrokerError,
    Mosquitto,
    TcpProxy,
    TlsFiles,
    WebhookSink,
    free_port,
    make_tls_files,
)
from tests.support import ROOT, uid


class Subscriber:
    """A paho client that subscribes on connect and keeps every payload it receives."""

    def __init__(
        self, port: int, topic: str, *, client_id: str, tls: TlsFiles | None = None
    ) -> None:
        self.client_id = client_id
        self.payloads: list[bytes] = []
        self.got = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,  # a session the broker keeps while we are away
        )
        if tls is not None:
            self.client.tls_set(str(tls.ca), str(tls.client_cert), str(tls.client_key))
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.payloads.append(bytes(msg.payload))
        self.got.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()  # closed by the network thread, unless it stopped first
        if sock is not None:
            sock.close()


def publish(port: int, topic: str, payload: bytes, tls: TlsFiles | None = None) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    if tls is not None:
        client.tls_set(str(tls.ca), str(tls.client_cert), str(tls.client_key))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_mosquitto_round_trips_a_message_and_is_gone_after_the_block() -> None:
    topic = f"testing/{uid()}"
    with Mosquitto(max_inflight_messages=7) as broker:
        assert "max_inflight_messages 7" in broker.config().splitlines()
        assert broker.version[0].isdigit(), broker.version
        sub = Subscriber(broker.port, topic, client_id=f"rt-{uid()}")
        try:
            broker.wait_subscribed(sub.client_id, topic)
            publish(broker.port, topic, b"21.5")
            assert sub.got.wait(10)
        finally:
            sub.close()
        workdir, proc = broker.workdir, broker.proc
    assert sub.payloads == [b"21.5"]
    assert proc is not None
    assert proc.returncode is not None  # stopped, by its own PID
    assert not workdir.exists()  # the temporary workdir went with it
    assert not listening(broker.port)


def test_a_persistent_session_survives_a_restart_on_the_same_port(tmp_path: Path) -> None:
    topic, client_id = f"testing/{uid()}", f"persist-{uid()}"
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    try:
        sub = Subscriber(broker.port, topic, client_id=client_id)
        broker.wait_subscribed(client_id, topic)
        sub.close()
        publish(broker.port, topic, b"queued")  # for the offline persistent session
        port = broker.port
        broker.stop()
        assert not listening(port)
        broker.start()
        assert broker.port == port
        sub = Subscriber(broker.port, topic, client_id=client_id)
        try:
            assert sub.got.wait(10), broker.log()
        finally:
            sub.close()
    finally:
        broker.stop()
    assert sub.payloads == [b"queued"]
    assert "New client connected" in broker.log_path.read_text()


def test_a_broker_that_cannot_start_raises_with_its_log_and_leaves_nothing_running() -> None:
    broker = Mosquitto(extra_config=["no_such_option 1"])
    with pytest.raises(BrokerError, match="no_such_option"), broker:
        pytest.fail("the block must not run")
    assert broker.proc is None
    assert not listening(broker.port)


@pytest.mark.parametrize("inflight", [0, 65_536])
def test_a_window_mosquitto_would_not_bound_is_refused(inflight: int) -> None:
    with pytest.raises(ValueError, match="max_inflight_messages"):
        Mosquitto(max_inflight_messages=inflight)


def test_tls_listener_with_client_certificates(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    topic = f"testing/{uid()}"
    with Mosquitto(tmp_path, tls=tls) as broker:
        assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
        assert "require_certificate true" in broker.config().splitlines()
        sub = Subscriber(broker.port, topic, client_id=f"tls-{uid()}", tls=tls)
        try:
            broker.wait_subscribed(sub.client_id, topic)
            publish(broker.port, topic, b"secret", tls=tls)
            assert sub.got.wait(10)
        finally:
            sub.close()
    assert sub.payloads == [b"secret"]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_proxy_passes_bytes_cuts_the_connection_and_comes_back() -> None:
    service = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    try:
        async with TcpProxy(port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
            await proxy.down()
            # the open connection is cut: EOF or a reset, never another echo
            try:
                data = await asyncio.wait_for(reader.read(4), 5)
            except ConnectionError:
                data = b""
            assert data == b""
            writer.close()
            with pytest.raises(ConnectionRefusedError):  # and nothing new gets in
                await asyncio.open_connection("127.0.0.1", proxy.port)
            await proxy.up()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"back")
            assert await asyncio.wait_for(reader.read(4), 5) == b"back"
            writer.close()
            await writer.wait_closed()
    finally:
        service.close()
        await service.wait_closed()


async def test_sink_records_posts_and_fails_when_told() -> None:
    body = {"alerts": [{"status": "firing"}, {"status": "resolved"}]}
    async with WebhookSink(statuses=[503], retry_after="7") as sink, aiohttp.ClientSession() as s:
        assert sink.port != 0
        async with s.post(sink.url, json=body, headers={"X-Sensord-Event-Id": "e1"}) as r:
            assert (r.status, r.headers.get("Retry-After")) == (503, "7")
        async with s.post(sink.url, json=body, headers={"X-Sensord-Event-Id": "e2"}) as r:
            assert r.status == 200
        sink.fail_with = 500
        async with s.post(sink.url, json=body) as r:
            assert r.status == 500
    assert sink.requests == 3
    assert len(sink.raw) == len(sink.times) == len(sink.headers) == 3
    assert sink.bodies == [body]  # only the one answered 2xx
    assert sink.event_ids == ["e2"]
    assert sink.alerts("resolved") == [{"status": "resolved"}]
    assert not listening(sink.port)


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise if something held it


def test_sensord_testing_imports_no_test_framework() -> None:
    code = "import sys, sensord.testing; print(sorted({'pytest', '_pytest'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"
