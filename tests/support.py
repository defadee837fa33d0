"""Test helpers: sensord and sensord-sim as subprocesses, MQTT and AMQP clients, fixtures.

Everything talks to the real Mosquitto and RabbitMQ of the machine, with unique names. The
broker launcher, webhook sink and TCP fault proxy are sensord.testing's (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import channel_queues
from sensord.ops.config import load_settings
from sensord.testing import Mosquitto, TcpProxy, TlsFiles, WebhookSink, free_port, make_tls_files

# The sink, the proxy and the TLS files live in sensord.testing; tests import them from here.
# __all__ names them so that mypy (no implicit re-export) lets them through; every name
# defined in this module is importable as before (nothing here is star-imported).
__all__ = ["TcpProxy", "TlsFiles", "WebhookSink", "free_port", "make_tls_files"]

MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ROOT = Path(__file__).resolve().parent.parent  # the repository


# labelled counters that tests also read as one sum (sensord_readings_total{source})
SUMMED_METRICS = frozenset({"sensord_readings_total", "sensord_fields_skipped_total"})


# the one-rule set many end-to-end tests run: a temperature above 80 is critical
HOT_RULE = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    severity: critical
"""


def uid() -> str:
    return uuid.uuid4().hex[:10]


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


def config_queues(config: Path, environ: dict[str, str]) -> tuple[str, list[str]]:
    """(prefix, every queue a sensord with this config declares): for cleaning up."""
    settings = load_settings(config, environ)
    names = [f"{settings.amqp.prefix}.quarantine"]
    for ch in settings.channels:
        names += [spec.name for spec in channel_queues(settings.amqp, ch)]
    return settings.amqp.prefix, names


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
    role: str = "all"  # `sensord run --role`

    @property
    def config_path(self) -> Path:
        return self.workdir / "sensord.toml"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def amqp_through_proxy(self) -> TcpProxy:
        """Point this sensord at a new TcpProxy in front of RabbitMQ (refusing until up())."""
        proxy = TcpProxy(5672)
        self.amqp_url = AMQP_URL.replace(":5672", f":{proxy.port}")
        return proxy

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
                if not isinstance(value, dict):
                    lines.append(f"{key} = {json.dumps(value)}")
            for key, value in ch.items():  # retry, match, rate_limit, headers: subtables
                if isinstance(value, dict):
                    lines.append(f"[channels.{key}]")
                    lines.extend(f"{k} = {json.dumps(v)}" for k, v in value.items())
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        if self.config_override is not None:
            self.config_path.write_text(self.config_override)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("SENSORD_CONFIG", None)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config_path)]
                + ([] if self.role == "all" else ["--role", self.role]),
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
                base = name.partition("{")[0]
                if base in SUMMED_METRICS and base != name:  # also their sum, by bare name
                    out[base] = out.get(base, 0.0) + float(value)
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
        names = [f"{self.prefix}.quarantine"]  # declared by every edge
        for ch in self.channels:
            names += [
                f"{self.prefix}.notify.{ch['name']}",
                f"{self.prefix}.notify.{ch['name']}.dead",
            ]
        if self.config_path.exists():  # the retry tiers, named from the config's delays
            names += [
                spec.name
                for ch in load_settings(self.config_path, {}).channels
                for spec in channel_queues(AmqpSettings(prefix=self.prefix), ch)
                if spec.name not in names
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


# ---- notification tests: alert events straight onto the exchange, peeking at queues


def make_event(
    *,
    site: str = "plant-1",
    device: str = "t-1",
    kind: str = "temperature",
    severity: str = "critical",
    status: str = "firing",
    rule: str = "critical-temperature",
    fingerprint: str | None = None,
    value: float = 81.5,
) -> dict[str, Any]:
    """An AlertEvent body (contract: ARCHITECTURE.md), as the edge role publishes it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "event_id": uuid.uuid4().hex,
        "fingerprint": fingerprint or uuid.uuid4().hex[:16],
        "status": status,
        "rule": rule,
        "severity": severity,
        "labels": {
            "alertname": rule,
            "site": site,
            "device": device,
            "kind": kind,
            "severity": severity,
        },
        "annotations": {"summary": f"{site}/{device} {kind} {value:g} above 80"},
        "value": value,
        "threshold": 80.0,
        "starts_at": "2026-11-28T12:00:00Z",
        "ends_at": now if status == "resolved" else None,
        "observed_at": now,
    }


async def publish_events(prefix: str, events: list[dict[str, Any]], in_flight: int = 128) -> None:
    """Publish AlertEvent bodies to `<prefix>.alerts` with confirms, many in flight."""
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await ch.get_exchange(f"{prefix}.alerts", ensure=True)
        sem = asyncio.Semaphore(in_flight)

        async def one(ev: dict[str, Any]) -> None:
            key = f"{ev['severity']}.{ev['labels']['site']}.{ev['labels']['kind']}"
            async with sem:
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(ev).encode(),
                        content_type="application/json",
                        message_id=ev["event_id"],
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=key,
                    mandatory=True,
                )

        await asyncio.gather(*(one(ev) for ev in events))


async def peek_queue(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Read every message of a queue and leave them there (unacked, then requeued)."""
    conn = await aio_pika.connect(AMQP_URL)
    out = []
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        while (msg := await q.get(no_ack=False, fail=False)) is not None:
            out.append(msg)
        await ch.close()
    return out


async def queue_depth(queue: str) -> int:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`sensord ARGS…` as a subprocess; returns the completed process (text)."""
    env = {**os.environ}
    env.pop("SENSORD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "sensord", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def run_bench(module: str, *args: str, timeout: float | None = 50) -> dict[str, Any]:
    """`python -m MODULE ARGS…` from the repository root: asserts exit 0, returns its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# ---- sensord-sim (the simulators package) as a subprocess


def sim_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulators", *args]


def sim_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_sim(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`sensord-sim ARGS…` to its end, output captured as text; the caller checks the exit."""
    return subprocess.run(
        sim_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=sim_env(),
        check=False,
    )


@dataclass
class SimProcess:
    """A `sensord-sim` running beside the test; `out` and `err` once it has stopped."""

    proc: subprocess.Popen[str]
    out: str = ""
    err: str = ""
    stopped: bool = False

    @classmethod
    def spawn(cls, *args: str, stdout: int = subprocess.DEVNULL) -> SimProcess:
        """Start it: stderr always piped, stdout piped only when asked (subprocess.PIPE)."""
        proc = subprocess.Popen(
            sim_argv(*args), stdout=stdout, stderr=subprocess.PIPE, text=True, env=sim_env()
        )
        return cls(proc)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def wait(self, timeout: float = 15) -> None:
        """Wait for it to exit and collect its output; killed (and the timeout raised) if not."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        finally:
            self.stopped = self.proc.poll() is not None
        self.out, self.err = out or "", err or ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Send `sig` unless it has exited already, then wait() for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.wait(timeout)


@contextlib.contextmanager
def start_sim(*args: str, stdout: int = subprocess.DEVNULL) -> Iterator[SimProcess]:
    """`sensord-sim ARGS…` for the block; stopped with SIGTERM at its end unless stopped in it.

    Whatever happens in the block, the process is gone after it (killed if SIGTERM is not
    enough); the test asserts `sim.returncode == 0, sim.err` after the block.
    """
    sim = SimProcess.spawn(*args, stdout=stdout)
    try:
        yield sim
    finally:
        if not sim.stopped:
            sim.stop()


@contextlib.contextmanager
def start_recorder(*args: str) -> Iterator[SimProcess]:
    """`sensord-sim record ARGS…` (stdout piped), yielded once its subscription is confirmed."""
    with start_sim("record", *args, stdout=subprocess.PIPE) as sim:
        assert sim.proc.stderr is not None
        line = sim.proc.stderr.readline()  # printed once the subscription is confirmed
        assert "recording" in line, line
        yield sim


class MqttRecorder:
    """Subscribes to a topic filter and records (topic, payload, retain) per message."""

    def __init__(self, topic_filter: str, port: int = MQTT_PORT) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = False
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uid()}",
            clean_session=True,
        )
        self.client.on_message = lambda _c, _u, msg: self.messages.append(
            (msg.topic, bytes(msg.payload), bool(msg.retain))
        )
        self.client.on_subscribe = lambda *_args: setattr(self, "subscribed", True)
        self.client.on_connect = lambda c, *_args: c.subscribe(topic_filter, qos=1)
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # the network thread may stop before it closed the socket: an unclosed socket is
        # a ResourceWarning (an error here) whenever the garbage collector finds it
        sock = self.client.socket()
        if sock is not None:
            sock.close()


async def clear_retained(topic_filter: str, port: int = MQTT_PORT) -> int:
    """Delete the retained messages under `topic_filter` (an empty retained payload each):
    what simulated devices leave on the shared broker. Returns how many."""
    recorder = MqttRecorder(topic_filter, port)
    try:
        await wait_for(lambda: recorder.subscribed)
        await asyncio.sleep(0.5)  # the broker sends the retained messages right after SUBACK
        retained = {topic for topic, _payload, retain in recorder.messages if retain}
        for topic in retained:
            recorder.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        recorder.close()
    return len(retained)


ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


@dataclass
class AlertmanagerProcess:
    """A real Prometheus Alertmanager on a free loopback port, storage in `workdir`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        config = self.workdir / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n"
        )
        (self.workdir / "am-data").mkdir()
        log = (self.workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER_BIN,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(self.url + "/-/ready") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(
            "alertmanager not ready: " + (self.workdir / "alertmanager.log").read_text()
        )

    async def alerts(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(self.url + "/api/v2/alerts") as r:
            assert r.status == 200
            data: list[dict[str, Any]] = await r.json()
            return data

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def delete_mqtt_session(client_id: str, port: int = MQTT_PORT) -> None:
    """A clean-session connect with the same id discards a persistent session."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
    )
    with contextlib.suppress(OSError):
        client.connect(MQTT_HOST, port)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


class PrivateMosquitto(Mosquitto):
    """A Mosquitto of the test's own on a free port in `workdir`: stopped and started by it.

    Persistence on by default (sessions and queued messages survive a stop/start) and a
    window of 100 in flight (tests/chaos/driver.py counts on it).
    """

    def __init__(
        self, workdir: Path, *, persistence: bool = True, tls: TlsFiles | None = None
    ) -> None:
        super().__init__(workdir, persistence=persistence, tls=tls, max_inflight_messages=100)
