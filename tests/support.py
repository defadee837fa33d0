"""Test helpers: sensord as a subprocess, a webhook sink, an MQTT publisher, a TCP fault proxy.

Everything talks to the real Mosquitto and RabbitMQ of the machine, with unique names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import paho.mqtt.client as mqtt
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll until predicate() is truthy; fail with the predicate's name on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


class MqttPublisher:
    """A paho client with its own network thread; publish() waits for the broker's ack."""

    def __init__(self, port: int = MQTT_PORT) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uid()}",
            clean_session=True,
        )
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class WebhookSink:
    """A real HTTP server recording every POST; `statuses` are answered in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status < 300:
            self.bodies.append(await request.json())
        return web.Response(status=status, text="ok" if status < 300 else "fail")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [a for b in self.bodies for a in b["alerts"] if a["status"] == status]


class TcpProxy:
    """A TCP proxy on loopback in front of a real service, to cut and restore connections."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))

    async def up(self) -> None:
        """Accept connections (the service is 'reachable')."""
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)


async def delete_amqp(prefix: str, queues: list[str]) -> None:
    """Remove what a test declared on the shared RabbitMQ."""
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        for name in queues:
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(name)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.close()
        ch = await conn.channel()
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await ch.exchange_delete(f"{prefix}.alerts")


async def get_queue_messages(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message from a queue (acknowledged: the test owns the queue)."""
    conn = await aio_pika.connect(AMQP_URL)
    out = []
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        while (msg := await q.get(no_ack=True, fail=False)) is not None:
            out.append(msg)
    return out


@dataclass
class SensordProcess:
    """`sensord run` as a subprocess with a config written for one test."""

    workdir: Path
    prefix: str
    topic_root: str
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    channels: list[dict[str, Any]] = field(default_factory=list)
    rules_yaml: str = ""
    amqp_url: str = AMQP_URL
    mqtt_port: int = MQTT_PORT
    extra_toml: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    config_override: str | None = None  # the whole config text, when a test needs its own

    @property
    def config_path(self) -> Path:
        return self.workdir / "sensord.toml"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def write_config(self) -> None:
        (self.workdir / "rules").mkdir(exist_ok=True)
        (self.workdir / "rules" / "test.yaml").write_text(self.rules_yaml)
        lines = [
            "[mqtt]",
            f'url = "mqtt://{MQTT_HOST}:{self.mqtt_port}"',
            f'client_id = "sensord-test-{self.prefix}"',
            f'topics = ["{self.topic_root}/#"]',
            f'topic_template = "{self.topic_root}/{{site}}/{{device}}/{{kind}}"',
            "persistent_session = false",
            "",
            "[amqp]",
            f'url = "{self.amqp_url}"',
            f'prefix = "{self.prefix}"',
            "reconnect_interval = 0.5",
            "",
            "[rules]",
            'paths = ["rules/*.yaml"]',
            "tick = 0.2",
            "",
            "[http]",
            f'listen = "127.0.0.1:{self.http_port}"',
            "",
            self.extra_toml,
        ]
        for ch in self.channels:
            lines.append("[[channels]]")
            for key, value in ch.items():
                if key != "retry":
                    lines.append(f"{key} = {json.dumps(value)}")
            if "retry" in ch:
                lines.append("[channels.retry]")
                lines.extend(f"{k} = {json.dumps(v)}" for k, v in ch["retry"].items())
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        if self.config_override is not None:
            self.config_path.write_text(self.config_override)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("SENSORD_CONFIG", None)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config_path)],
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.workdir,
            )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.base_url + path) as r:
            return r.status, await r.text()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sensord exited {self.proc.returncode}: {self.stderr()}")
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await self.get("/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"sensord not ready after {timeout}s: {self.stderr()}")

    async def wait_started(self, timeout: float = 20.0) -> None:
        """HTTP is up (sensord may still be waiting for a broker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await self.get("/healthz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"sensord HTTP not up after {timeout}s: {self.stderr()}")

    async def metrics(self) -> dict[str, float]:
        _, text = await self.get("/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def wait_metric(
        self, name: str, value: float, timeout: float = 15.0, *, exact: bool = False
    ) -> dict[str, float]:
        """Poll /metrics until `name` reaches `value` (or equals it); returns that scrape."""
        deadline = time.monotonic() + timeout
        metrics: dict[str, float] = {}
        while time.monotonic() < deadline:
            metrics = await self.metrics()
            got = metrics.get(name, 0.0)
            if got == value or (not exact and got >= value):
                return metrics
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} did not reach {value}: {metrics.get(name)}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sensord did not stop on SIGTERM: {self.stderr()}")
        return self.proc.returncode

    def queues(self) -> list[str]:
        names = []
        for ch in self.channels:
            names += [
                f"{self.prefix}.notify.{ch['name']}",
                f"{self.prefix}.notify.{ch['name']}.dead",
            ]
        return names


@contextlib.asynccontextmanager
async def running(sensord: SensordProcess, *, ready: bool = True) -> AsyncIterator[SensordProcess]:
    sensord.start()
    try:
        if ready:
            await sensord.wait_ready()
        yield sensord
    finally:
        assert sensord.proc is not None
        if sensord.proc.poll() is None:
            sensord.proc.kill()
            sensord.proc.wait()
        await delete_amqp(sensord.prefix, sensord.queues())
