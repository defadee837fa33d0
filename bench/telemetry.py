"""Telemetry benchmark: the cost of `[telemetry] stream = true` on calm ingest, whole product.

`python -m bench.telemetry [--readings 100000] [--sensors 10000] [--runs 2] [--window 20]
[--partitions 1]` prints one JSON object (progress on stderr).

Each run drains the same calm QoS 1 backlog (bench/product_load.py: no transition) twice
through the whole `sensord run` process, as bench/product.py does (private Mosquitto with
`max_queued_messages 0`, `max_inflight_messages` = `--window`, the machine's RabbitMQ, role
`all`, a `file` channel, state file, status page and history on), once without and once
with `[telemetry] stream = true` (the order alternates per run). Timed from sensord's
start until `sensord_readings_total` reaches the backlog (bench.product's MetricsPoller).
With the stream it then waits until `sensord_telemetry_published_total` reaches it too,
stops sensord, and reads the whole stream back (every reading exactly once?).

The figures: `ratio` = readings/s with the stream / readings/s without (wall clock, from
sensord's start), and `cpu_ratio` = sensord's CPU per reading during the drain without /
with, each the median over the runs; the issue's goal is a forwarding cost (1 - ratio)
of at most 15 %. On a shared host the wall-clock ratio swings with other load (and
RabbitMQ, on the same cores, writes the stream); the CPU figure is sensord's own cost.
`stream_alone` (a sub-assembly, labelled so) feeds `ReadingsStream` alone in the benchmark
process: sensord's CPU per reading for the stream, without the rest of the product; once
with one stream and once with `ALONE_PARTITIONS` (4) partitions of the same readings
(10 sites: the split and a message per partition present, `stream_alone_partitions`).
`--partitions N` sets `[telemetry] partitions` of the whole-product stream variant (the
backlog's 10 sites over N streams, all read back). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika

from bench.broker import PrivateMosquitto
from bench.product import Config as ProductConfig
from bench.product import _watch_drain, create_session, delete_session, run_to_json
from bench.product_load import publish_backlog
from bench.product_sensord import AMQP_URL, MetricsPoller, SensordRun, get_metrics
from sensord.amqp.settings import AmqpSettings
from sensord.cli.readings import tail
from sensord.events import Reading
from sensord.telemetry.partition import stream_names
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import ReadingsStream

SCOPE = "product: whole sensord run, calm QoS 1 backlog, with and without the readings stream"
VARIANTS = ("off", "stream")
TELEMETRY_TOML = "[telemetry]\nstream = true\n"
ALONE_PARTITIONS = 4
_PUBLISHED = re.compile(r"^sensord_telemetry_(published|dropped)_total ([0-9.e+]+)$", re.M)


def progress(text: str) -> None:
    print(f"[bench.telemetry] {text}", file=sys.stderr, flush=True)


def _telemetry(port: int) -> dict[str, float]:
    text = get_metrics(port)
    return {name: float(v) for name, v in _PUBLISHED.findall(text)}


async def _count_stream(queues: list[str], expected: int) -> tuple[int, int]:
    """(readings in the streams, distinct (device, ts) among them)."""
    out = io.StringIO()
    await tail(
        AMQP_URL,
        dict(enumerate(queues)),
        "first",
        [],
        count=expected + 1000,
        idle=3.0,
        as_json=True,
        out=out,
    )
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return len(records), len({(r["device"], r["ts"]) for r in records})


async def _delete_stream(queues: list[str]) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        for queue in queues:
            ch = await conn.channel()  # a failed delete closes its channel
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(queue)


def drain(cfg: ProductConfig, sd: SensordRun, stream: bool, partitions: int) -> dict[str, Any]:
    poller = MetricsPoller(sd.http_port, cfg.readings)
    sd.start()
    poller.start()
    try:
        # sensord's CPU once readings flow: its start-up (imports, connects) left out
        while poller.first_reading_at is None and not poller.finished and sd.exited() is None:
            time.sleep(0.01)
        cpu_first, readings_first = sd.cpu_seconds(), poller.latest.readings
        _watch_drain(sd, poller, cfg)
    finally:
        poller.stop()
    assert poller.done_at is not None
    seconds = poller.done_at - sd.started_at
    cpu = sd.cpu_seconds()  # the process's CPU when the backlog was in (startup included)
    after_first = poller.done_at - (poller.first_reading_at or sd.started_at)
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "readings_per_s": round(cfg.readings / seconds, 1),
        # from the first scrape that showed a reading: sensord's startup left out (none
        # when that scrape already showed the whole backlog: a tiny one, a fast host)
        "readings_per_s_after_first": (
            round(cfg.readings / after_first, 1) if after_first > 0 else None
        ),
        "cpu_s": round(cpu, 3),
        # CPU per reading during the drain: less sensitive to other load than wall time
        "cpu_us_per_reading": round(
            (cpu - cpu_first) / max(cfg.readings - readings_first, 1) * 1e6, 2
        ),
    }
    if stream:
        deadline = time.perf_counter() + 60
        tel: dict[str, float] = {}
        while time.perf_counter() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                tel = _telemetry(sd.http_port)
                if tel.get("published", 0) + tel.get("dropped", 0) >= cfg.readings:
                    break
            time.sleep(0.05)
        out["stream_complete_s"] = round(time.perf_counter() - sd.started_at, 3)
        out["telemetry_published"] = tel.get("published")
        out["telemetry_dropped"] = tel.get("dropped")
    out["exit_code"] = sd.stop()
    out["peak_rss_mib"] = sd.peak_rss_mib
    if stream:
        queues = stream_names(sd.prefix, partitions)
        total, distinct = asyncio.run(_count_stream(queues, cfg.readings))
        out["stream_readings"] = total
        out["stream_exactly_once"] = total == distinct == cfg.readings
    return out


def measure(
    cfg: ProductConfig, broker: PrivateMosquitto, variant: str, partitions: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sensord-bench-telemetry-") as tmp:
        sd = SensordRun(Path(tmp), broker.port)
        if variant == "stream":
            with sd.config.open("a", encoding="utf-8") as f:
                f.write(TELEMETRY_TOML + f"partitions = {partitions}\n")
        try:
            sd.declare_counter()
            create_session(cfg, broker.port, sd.client_id)
            pub = publish_backlog(
                broker.port,
                shape="calm",
                readings=cfg.readings,
                sensors=cfg.sensors,
                client_id=f"{sd.prefix}-pub",
            )
            progress(f"  {variant}: backlog of {pub.readings} at {pub.rate:.0f} msgs/s")
            result = drain(cfg, sd, variant == "stream", partitions)
        finally:
            sd.stop()
            delete_session(cfg, broker.port, sd.client_id)
            sd.cleanup()
            asyncio.run(_delete_stream(stream_names(sd.prefix, partitions)))
    progress(f"  {variant}: {result['readings_per_s']:.0f} readings/s ({result})")
    return result


async def _alone(readings: int, partitions: int = 1) -> dict[str, Any]:
    """Sub-assembly: ReadingsStream alone in this process against the same RabbitMQ: CPU
    per reading fed in bursts of 300 every 10 ms, with the stream and with a bare list;
    the readings' 10 sites over `partitions` streams."""
    batch = [
        Reading.trusted(
            f"site-{i % 10}", f"dev-{i % 1000}", "temperature", 20 + (i * 37 % 700) / 100,
            time.time() + i * 1e-4, {}, None,
        )
        for i in range(readings)
    ]  # fmt: skip

    async def feed(append: Any) -> float:
        started = time.process_time()
        for i in range(0, readings, 300):
            for r in batch[i : i + 300]:
                append(r)
            await asyncio.sleep(0.01)
        return started

    bare: list[Reading] = []
    started = await feed(bare.append)
    base = (time.process_time() - started) / readings * 1e6
    amqp = AmqpSettings.model_validate(
        {"url": AMQP_URL, "prefix": f"benchtel{os.getpid()}x{time.time_ns() % 10**6}"}
    )
    stream = ReadingsStream(TelemetrySettings(stream=True, partitions=partitions), amqp)
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        while not stream.declared:  # the sender connects at start
            await asyncio.sleep(0.05)
        started = await feed(stream.append)
        while stream.published < readings:
            await asyncio.sleep(0.005)
        with_stream = (time.process_time() - started) / readings * 1e6
    finally:
        stop.set()
        await task
        await stream.flush(2.0)
        await _delete_stream(stream.queues)
    return {
        "scope": "sub-assembly: ReadingsStream alone, same RabbitMQ",
        "partitions": partitions,
        "readings": readings,
        "messages": stream.messages,
        "bare_list_cpu_us_per_reading": round(base, 2),
        "stream_cpu_us_per_reading": round(with_stream, 2),
        "extra_cpu_us_per_reading": round(with_stream - base, 2),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def run(cfg: ProductConfig, window: int, partitions: int = 1) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: list[dict[str, Any]] = []
    with PrivateMosquitto(max_inflight=window, executable=cfg.mosquitto) as broker:
        for run_no in range(cfg.runs):
            order = VARIANTS if run_no % 2 == 0 else VARIANTS[::-1]
            progress(f"run {run_no + 1}/{cfg.runs}: {order}")
            one: dict[str, Any] = {"run": run_no + 1, "order": list(order)}
            for variant in order:
                try:
                    one[variant] = measure(cfg, broker, variant, partitions)
                except Exception as exc:  # noqa: BLE001 - reported, the others go on
                    progress(f"  {variant} failed: {exc!r}")
                    one[variant] = {"error": f"{exc.__class__.__name__}: {exc}"[:2000]}
            off, on = one["off"].get("readings_per_s"), one["stream"].get("readings_per_s")
            one["ratio"] = round(on / off, 3) if off and on else None
            off_cpu = one["off"].get("cpu_us_per_reading")
            on_cpu = one["stream"].get("cpu_us_per_reading")
            both = off_cpu is not None and on_cpu is not None
            one["extra_cpu_us_per_reading"] = round(on_cpu - off_cpu, 2) if both else None
            one["cpu_ratio"] = round(off_cpu / on_cpu, 3) if both and on_cpu else None
            runs.append(one)
    alone: list[dict[str, Any]] = []
    alone_parts: list[dict[str, Any]] = []
    for run_no in range(cfg.runs):  # alternating, as the product's variants
        sizes = (1, ALONE_PARTITIONS) if run_no % 2 == 0 else (ALONE_PARTITIONS, 1)
        for n in sizes:
            (alone if n == 1 else alone_parts).append(asyncio.run(_alone(cfg.readings, n)))
    progress(f"alone: {[a['extra_cpu_us_per_reading'] for a in alone]} us/reading extra")
    progress(
        f"alone, {ALONE_PARTITIONS} partitions: "
        f"{[a['extra_cpu_us_per_reading'] for a in alone_parts]} us/reading extra"
    )
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    ratio = _median(ratios)
    return {
        "benchmark": "telemetry",
        "scope": SCOPE,
        "readings": cfg.readings,
        "sensors": cfg.sensors,
        "runs": cfg.runs,
        "window": window,
        "partitions": partitions,
        "summary": {
            "ratio": ratio,
            "ratios": ratios,
            "forwarding_cost": None if ratio is None else round(1 - ratio, 3),
            "off_readings_per_s": _median(
                [r["off"]["readings_per_s"] for r in runs if "readings_per_s" in r["off"]]
            ),
            "stream_readings_per_s": _median(
                [r["stream"]["readings_per_s"] for r in runs if "readings_per_s" in r["stream"]]
            ),
            "stream_exactly_once": all(r["stream"].get("stream_exactly_once") for r in runs),
            # sensord's own CPU for the stream (RabbitMQ's, on the same host, not counted)
            "extra_cpu_us_per_reading": _median(
                [x for r in runs if (x := r["extra_cpu_us_per_reading"]) is not None]
            ),
            "off_cpu_us_per_reading": _median(
                [r["off"]["cpu_us_per_reading"] for r in runs if "cpu_s" in r["off"]]
            ),
            # readings per CPU-second with the stream / without: the throughput ratio on a
            # host where sensord has its core to itself
            "cpu_ratio": _median([x for r in runs if (x := r["cpu_ratio"]) is not None]),
        },
        "stream_alone": {
            "extra_cpu_us_per_reading": _median([a["extra_cpu_us_per_reading"] for a in alone]),
            "runs": alone,
        },
        "stream_alone_partitions": {
            "partitions": ALONE_PARTITIONS,
            "extra_cpu_us_per_reading": _median(
                [a["extra_cpu_us_per_reading"] for a in alone_parts]
            ),
            "runs": alone_parts,
        },
        "target": {"forwarding_cost_at_most": 0.15},
        "runs_detail": runs,
        "host_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> tuple[ProductConfig, int, int]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.telemetry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--readings", type=_positive, default=100_000)
    parser.add_argument("--sensors", type=_positive, default=10_000)
    parser.add_argument("--runs", type=_positive, default=2)
    parser.add_argument("--window", type=_positive, default=20, help="max_inflight_messages")
    parser.add_argument(
        "--partitions", type=_positive, default=1, help="[telemetry] partitions of the stream run"
    )
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    a = parser.parse_args(argv)
    cfg = ProductConfig(
        readings=a.readings,
        sensors=a.sensors,
        runs=a.runs,
        idle_timeout=a.idle_timeout,
        mosquitto=a.mosquitto,
    )
    return cfg, a.window, a.partitions


def main(argv: Sequence[str] | None = None) -> int:
    cfg, window, partitions = parse_args(argv)
    return run_to_json(lambda: run(cfg, window, partitions))


if __name__ == "__main__":
    sys.exit(main())
