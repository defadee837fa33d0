"""Alert latency: breaching reading published -> webhook target has the notification.

`python -m bench.latency [--alerts 200] [--load 5000] [--outage 60] [--backlog 10000]`
prints one JSON object (progress on stderr). In the same run it measures:
- end-to-end latency (p50/p95/p99) of `--alerts` alerts through a sensord subprocess
  (private Mosquitto, the machine's RabbitMQ with a unique prefix, a local aiohttp
  webhook sink) under a background load of `--load` readings/s;
- the floor: each fixed cost of that path measured alone (an MQTT QoS 1 round trip, one
  SQLite WAL commit, one RabbitMQ publish-confirm-consume, one webhook POST);
- the reference: Prometheus Alertmanager alone (POST /api/v2/alerts -> the same kind of
  webhook sink, group_wait 0, one group per alert), when it is installed;
- the outbox drain after a RabbitMQ outage of `--outage` s (a TCP proxy cut) during which
  `--backlog` alerts fired: seconds from reconnect until the outbox is empty, alerts/s.
Nothing is asserted: medians and ratios, on a noisy 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import paho.mqtt.client as mqtt
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from bench.broker import PrivateMosquitto, free_port
from sensord.amqp.topology import channel_queues
from sensord.ops.config import load_settings
from sensord.testing import TcpProxy, WebhookSink

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _log(msg: str) -> None:
    print(f"latency: {msg}", file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p95_ms": round(_pct(values, 0.95) * 1000, 3),
        "p99_ms": round(_pct(values, 0.99) * 1000, 3),
        "n": len(values),
    }


class LatencySink(WebhookSink):
    """The webhook target, `sensord.testing.WebhookSink`, that also notes when each device's
    first firing notification arrived (wall clock, taken as the request comes in, before its
    body is read) and wakes whoever waits on that device."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}
        self.count = 0  # firing alerts received
        self.events: dict[str, asyncio.Event] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time()
        response = await super()._handle(request)
        # nothing awaits between the sink appending this request's body and returning, so
        # the last body is this request's (no other handler ran in between)
        for alert in self.bodies[-1].get("alerts", []) if response.status < 300 else ():
            if alert["status"] == "firing":
                self.count += 1
                device = alert["labels"].get("device", "")
                self.arrived.setdefault(device, now)
                if device in self.events:
                    self.events[device].set()
        return response


class Sensord:
    def __init__(self, workdir: Path, mqtt_port: int, sink: WebhookSink, amqp_url: str) -> None:
        self.workdir = workdir
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.http_port = free_port()
        (workdir / "rules").mkdir(parents=True, exist_ok=True)
        (workdir / "rules" / "r.yaml").write_text(
            "rules:\n  - {name: hot, match: {kind: temperature}, above: 80, severity: critical}\n"
        )
        (workdir / "sensord.toml").write_text(
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nclient_id = "{self.prefix}"\n'
            'topics = ["lat/#"]\ntopic_template = "lat/{site}/{device}/{kind}"\n'
            "persistent_session = false\n"
            f'[amqp]\nurl = "{amqp_url}"\nprefix = "{self.prefix}"\nreconnect_interval = 0.5\n'
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n[alerts]\nrepeat_interval = 0\n'
            f'[[channels]]\nname = "hook"\ntype = "webhook"\n'
            f'url = "{sink.url}"\nprefetch = 256\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sensord",
                    "run",
                    "-c",
                    str(self.workdir / "sensord.toml"),
                    "--log-level",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.workdir,
            )

    async def status(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.http_port}/api/v1/status") as r,
        ):
            data: dict[str, Any] = await r.json()
            return data

    async def wait(self, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                st = await self.status()
                if pred(st):
                    return st
            await asyncio.sleep(0.02)
        raise TimeoutError(f"sensord condition not met in {timeout}s")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        conn = await aio_pika.connect(AMQP)
        async with conn:
            settings = load_settings(self.workdir / "sensord.toml", {})
            names = [f"{self.prefix}.quarantine"] + [
                spec.name for ch in settings.channels for spec in channel_queues(settings.amqp, ch)
            ]
            for name in names:
                ch = await conn.channel()
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await ch.queue_delete(name)
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.exchange_delete(f"{self.prefix}.alerts")


def _cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU seconds of a child process so far (Linux /proc)."""
    if proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"lat-pub-{uuid.uuid4().hex[:8]}",
    )
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _background(port: int, rate: int, stop: Any) -> None:
    """`rate` non-breaching readings/s over 1,000 sensors, paced from the start time. Runs
    in a process of its own: in a thread it would hold the GIL for up to the 5 ms switch
    interval while the sink is about to time an arrival."""
    c = _publisher(port)
    start, n = time.monotonic(), 0
    try:
        while not stop.is_set():
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.01))
                continue
            c.publish(f"lat/bg/s-{n % 1000}/temperature", b"21.5", qos=0)
            n += 1
    finally:
        c.disconnect()
        c.loop_stop()


async def measure_latency(mqtt_port: int, alerts: int, load: int, work: Path) -> dict[str, Any]:
    sink = LatencySink()
    await sink.start()
    sd = Sensord(work / "lat", mqtt_port, sink, AMQP)
    sd.start()
    mp = multiprocessing.get_context("spawn")  # no fork of this threaded process
    stop = mp.Event()
    bg = mp.Process(target=_background, args=(mqtt_port, load, stop), daemon=True)
    try:
        await sd.wait(lambda st: st["mqtt"]["connected"] and st["amqp"]["connected"])
        bg.start()
        await asyncio.sleep(2.0)  # load reaches steady state
        cpu0, wall0 = _cpu_seconds(sd.proc), time.monotonic()
        pub = _publisher(mqtt_port)
        latencies = []
        for i in range(alerts):
            device = f"a-{i}"
            sink.events[device] = asyncio.Event()
            t0 = time.time()
            pub.publish(f"lat/lat/{device}/temperature", b"95", qos=1)
            await asyncio.wait_for(sink.events[device].wait(), 30)
            latencies.append(sink.arrived[device] - t0)
            pub.publish(f"lat/lat/{device}/temperature", b"20", qos=1)
            await asyncio.sleep(0.01)
            if (i + 1) % 50 == 0:
                p50 = statistics.median(latencies) * 1000
                _log(f"{i + 1}/{alerts} alerts, p50 so far {p50:.1f} ms")
        pub.disconnect()
        pub.loop_stop()
        cpu = (_cpu_seconds(sd.proc) - cpu0) / (time.monotonic() - wall0)
        st = await sd.status()
        return {
            **_summary_ms(latencies),
            "sensord_cpu_percent": round(cpu * 100, 1),
            "background_rate": load,
            "readings_per_s_seen": st["readings_per_s"],
        }
    finally:
        stop.set()
        if bg.is_alive():
            bg.join(5)
        if bg.is_alive():
            bg.kill()
        await sd.stop()
        await sink.stop()


async def measure_floor(  # noqa: PLR0915 - four measurements in a row, read top to bottom
    mqtt_port: int, work: Path, n: int = 200
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    p99: dict[str, float] = {}

    def _put(out: dict[str, Any], name: str, values: list[float]) -> None:
        out[f"{name}_ms"] = round(statistics.median(values) * 1000, 3)
        p99[name] = round(_pct(values, 0.99) * 1000, 3)

    # MQTT QoS 1 round trip through the broker
    got = threading.Event()
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="lat-floor-sub")
    sub.on_message = lambda c, u, m: got.set()
    sub.connect("127.0.0.1", mqtt_port)
    sub.subscribe("floor/x", qos=1)
    sub.loop_start()
    pub = _publisher(mqtt_port)
    await asyncio.sleep(0.5)
    rtts = []
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        pub.publish("floor/x", b"1", qos=1)
        await asyncio.to_thread(got.wait, 5)
        rtts.append(time.perf_counter() - t0)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    _put(out, "mqtt_qos1_round_trip", rtts)
    # one SQLite WAL commit (synchronous=NORMAL, as the outbox)
    db = sqlite3.connect(work / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (x BLOB)")
    commits = []
    for _ in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 400,))
        db.execute("COMMIT")
        commits.append(time.perf_counter() - t0)
    db.close()
    _put(out, "sqlite_commit", commits)
    # RabbitMQ publish with confirm, then consume: as sensord does it, a persistent
    # message into a durable quorum queue (its confirm waits for the Raft log's fsync)
    conn = await aio_pika.connect(AMQP)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        name = f"bench-floor-{uuid.uuid4().hex[:8]}"
        q = await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        rts = []
        try:
            async with q.iterator() as it:
                for _ in range(n):
                    t0 = time.perf_counter()
                    await ch.default_exchange.publish(
                        aio_pika.Message(b"x" * 400, delivery_mode=2), q.name
                    )
                    msg = await it.__anext__()
                    await msg.ack()
                    rts.append(time.perf_counter() - t0)
        finally:
            await q.delete(if_unused=False, if_empty=False)
    _put(out, "rabbitmq_publish_confirm_consume", rts)
    # one webhook POST to a local aiohttp server
    sink = WebhookSink()
    await sink.start()
    body = json.dumps({"alerts": [{"status": "firing", "labels": {}}]}).encode()
    posts = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(sink.url, data=body) as r:
                await r.read()
            posts.append(time.perf_counter() - t0)
    await sink.stop()
    _put(out, "webhook_post", posts)
    out["sum_ms"] = round(sum(v for k, v in out.items() if k.endswith("_ms")), 3)
    out["p99_ms"] = p99
    out["p99_sum_ms"] = round(sum(p99.values()), 3)
    return out


async def measure_drain(mqtt_port: int, outage: float, backlog: int, work: Path) -> dict[str, Any]:
    sink = LatencySink()
    await sink.start()
    proxy = TcpProxy(5672)
    await proxy.up()
    sd = Sensord(work / "drain", mqtt_port, sink, AMQP.replace(":5672", f":{proxy.port}"))
    (sd.workdir / "sensord.toml").write_text(
        (sd.workdir / "sensord.toml")
        .read_text()
        .replace(
            "reconnect_interval = 0.5\n", f"reconnect_interval = 0.5\nmax_pending = {backlog * 2}\n"
        )
    )
    sd.start()
    try:
        await sd.wait(lambda st: st["mqtt"]["connected"] and st["amqp"]["connected"])
        await proxy.down()
        cut = time.monotonic()
        _log(f"RabbitMQ cut; firing {backlog} alerts")
        pub = _publisher(mqtt_port)
        for i in range(backlog):
            pub.publish(f"lat/drain/d-{i}/temperature", b"95", qos=0)
            if i % 2000 == 1999:
                await asyncio.sleep(0.2)  # keep the stock-size broker queues happy
        pub.disconnect()
        pub.loop_stop()
        await sd.wait(lambda st: st["alerts_pending_publish"] >= backlog, timeout=120)
        remaining = outage - (time.monotonic() - cut)
        if remaining > 0:
            _log(f"backlog of {backlog} held; outage continues {remaining:.0f}s")
            await asyncio.sleep(remaining)
        await proxy.up()
        t0 = time.monotonic()
        st = await sd.wait(lambda st: st["alerts_pending_publish"] == 0, timeout=300)
        drained = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while sink.count < backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        delivered = time.monotonic() - t0
        return {
            "outage_s": outage,
            "backlog": backlog,
            "seconds_to_empty_outbox": round(drained, 3),
            "drain_alerts_per_s": round(backlog / drained, 1) if drained else None,
            "seconds_until_all_notified": round(delivered, 3),
            "notified": sink.count,
            "status_after": st["status"],
        }
    finally:
        await sd.stop()
        await proxy.down()
        await sink.stop()


ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")


def _start_alertmanager(wd: Path, port: int, hook: str) -> subprocess.Popen[bytes] | None:
    """Alertmanager on `port`, routing every alert alone and at once to `hook`."""
    if not ALERTMANAGER_BIN.exists():
        return None
    (wd / "data").mkdir(parents=True)
    (wd / "am.yml").write_text(
        "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 0s\n"
        "  group_interval: 1m\n  repeat_interval: 4h\nreceivers:\n  - name: hook\n"
        f"    webhook_configs:\n      - url: {hook}\n        send_resolved: false\n"
    )
    with (wd / "am.log").open("wb") as log:
        return subprocess.Popen(
            [
                str(ALERTMANAGER_BIN),
                f"--config.file={wd / 'am.yml'}",
                f"--storage.path={wd / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def measure_alertmanager(work: Path, n: int = 200) -> dict[str, Any]:
    """The reference: Prometheus Alertmanager alone, POST /api/v2/alerts -> webhook, with
    group_wait 0 and one group per alert, to the same kind of sink, idle."""
    sink = LatencySink()
    await sink.start()
    port = free_port()
    wd = work / "alertmanager"
    proc = _start_alertmanager(wd, port, sink.url)
    if proc is None:
        await sink.stop()
        return {"skipped": f"{ALERTMANAGER_BIN} is not installed (Debian prometheus-alertmanager)"}
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(base + "/-/ready") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    return {"skipped": f"alertmanager not ready: see {wd / 'am.log'}"}
                await asyncio.sleep(0.1)
            version = ""
            async with s.get(base + "/api/v2/status") as r:
                version = (await r.json()).get("versionInfo", {}).get("version", "")
            latencies = []
            for i in range(n):
                device = f"am-{i}"
                sink.events[device] = asyncio.Event()
                alert = [{"labels": {"alertname": "lat", "device": device}}]
                t0 = time.time()
                async with s.post(base + "/api/v2/alerts", json=alert) as r:
                    await r.read()
                await asyncio.wait_for(sink.events[device].wait(), 30)
                latencies.append(sink.arrived[device] - t0)
        return {**_summary_ms(latencies), "version": version}
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await sink.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with PrivateMosquitto(max_inflight=1000) as broker, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _log("floor: fixed costs alone")
        floor = await measure_floor(broker.port, work)
        _log("reference: Prometheus Alertmanager alone, POST -> webhook")
        alertmanager = await measure_alertmanager(work)
        _log(f"latency: {args.alerts} alerts under {args.load} readings/s")
        latency = await measure_latency(broker.port, args.alerts, args.load, work)
        drain = None
        if args.backlog:
            _log(f"drain: {args.backlog} alerts after a {args.outage:g}s RabbitMQ outage")
            drain = await measure_drain(broker.port, args.outage, args.backlog, work)
    return {
        "benchmark": "alert_latency",
        "latency": latency,
        "floor": floor,
        "ratio_p50_to_floor": round(latency["p50_ms"] / floor["sum_ms"], 2),
        "alertmanager_alone": alertmanager,
        "drain": drain,
        "targets": {"p50_ms": 5, "p99_ms": 10, "drain_10000_s": 5},
        "host_cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()[:2]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--load", type=int, default=5000, help="background readings/s")
    parser.add_argument("--outage", type=float, default=60.0, help="RabbitMQ outage, seconds")
    parser.add_argument("--backlog", type=int, default=10000, help="alerts during the outage")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
