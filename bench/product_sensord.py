"""The product benchmark's sensord: a whole `sensord run` process, what it is asked, and
what it leaves behind (RabbitMQ messages, the state file).

- `SensordRun` writes a config into a temp dir (private Mosquitto, the machine's RabbitMQ
  with a unique `[amqp] prefix`, a `file` channel with `send_resolved = true`, the state
  file, status page and history at their defaults), starts `sensord run -c` in the default
  role `all`, stops it with SIGTERM and deletes every queue and exchange of its prefix.
- `MetricsPoller` is a thread that GETs `/metrics` every 50 ms, a new connection each time
  with a 5 s timeout, records each response time, and notes when `sensord_readings_total`
  reached the backlog: that response's arrival ends the drain.
- `AlertCounter` is a queue of the benchmark's own bound with `#` to `<prefix>.alerts`,
  declared before sensord starts: its message count is how many events reached RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from bench.broker import free_port
from bench.product_load import RULES_YAML
from sensord.amqp.topology import channel_queues
from sensord.ingest.quarantine import quarantine_queue_name
from sensord.ops.config import load_settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "events"
QUIET = ("--log-level", "warning")

_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([-+0-9.eEinfaN]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Scrape:
    """The few series of one /metrics response that the benchmark reads."""

    readings: float = 0.0
    firing: float = 0.0
    resolved: float = 0.0
    outbox_pending: float = 0.0
    alerts_dropped: float = 0.0
    invalid: float = 0.0
    duplicates: float = 0.0

    @property
    def transitions(self) -> float:
        return self.firing + self.resolved


def parse_metrics(text: str) -> Scrape:
    values: dict[str, float] = {}
    for name, labels, number in _SAMPLE.findall(text):
        key = name
        if name == "sensord_alerts_total":
            key += ".resolved" if 'status="resolved"' in labels else ".firing"
        values[key] = values.get(key, 0.0) + float(number)
    return Scrape(
        readings=values.get("sensord_readings_total", 0.0),
        firing=values.get("sensord_alerts_total.firing", 0.0),
        resolved=values.get("sensord_alerts_total.resolved", 0.0),
        outbox_pending=values.get("sensord_outbox_pending", 0.0),
        alerts_dropped=values.get("sensord_alerts_dropped_total", 0.0),
        invalid=values.get("sensord_readings_invalid_total", 0.0),
        duplicates=values.get("sensord_readings_duplicate_total", 0.0),
    )


def get_metrics(port: int, timeout: float = 5.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"/metrics answered {resp.status}")
        return body.decode()
    finally:
        conn.close()


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(slots=True)
class MetricsPoller:
    """GET /metrics every `interval` s from `start()` until the readings reach `target`."""

    port: int
    target: int
    interval: float = 0.05
    timeout: float = 5.0
    times: list[float] = field(default_factory=list)  # response times, timeouts included
    errors: int = 0
    up_at: float | None = None  # perf_counter of the first answer
    first_reading_at: float | None = None
    done_at: float | None = None  # arrival of the first answer with readings >= target
    done_took: float = 0.0  # that answer's response time: how late done_at may be
    latest: Scrape = field(default_factory=Scrape)
    latest_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)

    @property
    def finished(self) -> bool:
        return self.done_at is not None

    def _run(self) -> None:
        while not self._stop.is_set() and self.done_at is None:
            sent = time.perf_counter()
            try:
                text = get_metrics(self.port, self.timeout)
            except ConnectionRefusedError:
                if self.up_at is not None:  # it answered before: a failure, counted
                    self.errors += 1
                    self.times.append(time.perf_counter() - sent)
            except (OSError, http.client.HTTPException):
                # listening but no answer (a timeout, a reset): a sample, also before the
                # first answer, since a storm can starve /metrics from the start
                self.errors += 1
                self.times.append(time.perf_counter() - sent)
            else:
                arrived = time.perf_counter()
                if self.up_at is None:
                    self.up_at = arrived
                self.times.append(arrived - sent)
                self.latest, self.latest_at = parse_metrics(text), arrived
                if self.first_reading_at is None and self.latest.readings > 0:
                    self.first_reading_at = arrived
                if self.latest.readings >= self.target:
                    self.done_at, self.done_took = arrived, arrived - sent
            self._stop.wait(max(0.0, sent + self.interval - time.perf_counter()))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        if not ordered:
            return {"count": 0, "errors": self.errors}
        return {
            "count": len(ordered),
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(_pct(ordered, 0.99) * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1),
            "over_250ms": sum(t > 0.25 for t in ordered),
            "errors": self.errors,
        }


# ---------------------------------------------------------------- RabbitMQ


async def _declare_counter(prefix: str, queue: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        # the same declaration as sensord's (topology.py): a difference is PRECONDITION_FAILED
        exchange = await ch.declare_exchange(
            f"{prefix}.alerts", aio_pika.ExchangeType.TOPIC, durable=True
        )
        q = await ch.declare_queue(queue, durable=False, auto_delete=False)
        await q.bind(exchange, "#")


async def _count(queue: str) -> int:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def _delete(queues: list[str], exchange: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        for name in queues:
            ch = await conn.channel()  # a failed delete closes its channel: one each
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(name)
        ch = await conn.channel()
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await ch.exchange_delete(exchange)


async def _rabbitmq_version() -> str:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        props = conn.transport.connection.server_properties  # type: ignore[union-attr]
        version = props.get("version", b"")
        return version.decode() if isinstance(version, bytes) else str(version)


def rabbitmq_version() -> str:
    try:
        return asyncio.run(_rabbitmq_version())
    except Exception as exc:  # noqa: BLE001 - a version is informative only
        return f"unknown ({exc.__class__.__name__})"


class AlertCounter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queue = f"{prefix}.bench.count"
        asyncio.run(_declare_counter(prefix, self.queue))

    def count(self) -> int:
        return asyncio.run(_count(self.queue))


# ---------------------------------------------------------------- the sensord process


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(m.group(1)) / 1024, 1) if m else 0.0


class SensordRun:
    """One `sensord run` with a config of its own in `workdir`."""

    def __init__(
        self, workdir: Path, mqtt_port: int, *, mqtt_extra: str = "", extra: str = ""
    ) -> None:
        """`mqtt_extra`: more lines of the `[mqtt]` table (e.g. `topics = []`); `extra`:
        TOML appended to the config (e.g. a `[[mqtt.sources]]` table; bench.formats)."""
        self.workdir = workdir
        self.prefix = f"benchprod{uuid.uuid4().hex[:8]}"
        self.client_id = f"{self.prefix}-sensord"
        self.http_port = free_port()
        self.state_path = workdir / "state" / "sensord.db"
        self.events_path = workdir / "events.jsonl"
        self.config = workdir / "sensord.toml"
        (workdir / "rules").mkdir(parents=True, exist_ok=True)
        (workdir / "rules" / "bench.yaml").write_text(RULES_YAML, encoding="utf-8")
        self.config.write_text(
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nclient_id = "{self.client_id}"\n'
            f"{mqtt_extra}"
            f'[amqp]\nurl = "{AMQP_URL}"\nprefix = "{self.prefix}"\n'
            f'[rules]\npaths = ["{workdir / "rules"}/*.yaml"]\n'
            f'[state]\npath = "{self.state_path}"\n'
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
            # no re-announcements: every message on the exchange is a transition
            "[alerts]\nrepeat_interval = 0\n"
            f'[[channels]]\nname = "{CHANNEL}"\ntype = "file"\n'
            f'path = "{self.events_path}"\nsend_resolved = true\n'
            f"{extra}",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.peak_rss_mib = 0.0
        self.counter: AlertCounter | None = None

    def declare_counter(self) -> AlertCounter:
        self.counter = AlertCounter(self.prefix)
        return self.counter

    def start(self) -> None:
        with (self.workdir / "sensord.stderr").open("wb") as err:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config), *QUIET],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )

    def cpu_seconds(self) -> float:
        return 0.0 if self.proc is None else cpu_seconds(self.proc.pid)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "sensord.stderr").read_text(errors="replace")[-1500:]
        return ""

    def scrape(self) -> Scrape:
        return parse_metrics(get_metrics(self.http_port))

    def stop(self) -> int | None:
        """SIGTERM and wait (kill after 30 s); the exit status, None if never started."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self.peak_rss_mib = _peak_rss_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def cleanup(self) -> None:
        """Every queue and exchange of this run's prefix, sensord's and the benchmark's."""
        settings = load_settings(self.config, {})
        queues = [quarantine_queue_name(settings.amqp), f"{self.prefix}.bench.count"]
        for ch in settings.channels:
            queues += [spec.name for spec in channel_queues(settings.amqp, ch)]
        asyncio.run(_delete(queues, settings.amqp.exchange))

    def state_counts(self) -> dict[str, int]:
        """After stop: rows left in the outbox (unpublished) and alerts still active."""
        db = sqlite3.connect(f"file:{self.state_path}?mode=ro", uri=True)
        try:
            (outbox,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            (active,) = db.execute("SELECT COUNT(*) FROM alerts").fetchone()
        finally:
            db.close()
        return {"outbox_rows": int(outbox), "active_alerts": int(active)}

    def notified(self) -> int:
        """Lines the file channel wrote (informative: notify runs behind the drain)."""
        try:
            with self.events_path.open("rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0
