"""The whole `sensord run` with `[telemetry]`: MQTT in, the readings stream and the gauges
out; `sensord readings tail`; a RabbitMQ cut; a real Prometheus when installed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sensord.telemetry.partition import partition_of_labels
from sensord.testing import free_port
from tests.support import MqttPublisher, SensordProcess, run_cli, running
from tests.telemetry.support import delete_queue, read_stream, unique_by_message

pytestmark = pytest.mark.e2e

TELEMETRY = '[telemetry]\nstream = true\nprometheus = true\nbatch = "50ms"\n'
DEVICES = ("t-0", "t-1", "t-2")


@pytest.fixture
async def telemetry_sensord(sensord: SensordProcess) -> AsyncIterator[SensordProcess]:
    sensord.extra_toml = TELEMETRY
    yield sensord
    await delete_queue(f"{sensord.prefix}.readings")


def publish(sensord: SensordProcess, pub: MqttPublisher, start: int, n: int) -> None:
    """n readings (i from start), round-robin over DEVICES, ts growing with i."""
    t0 = time.time() - 100
    for i in range(start, start + n):
        device = DEVICES[i % len(DEVICES)]
        body = json.dumps({"value": float(i), "ts": round(t0 + i / 100, 3), "unit": "C"})
        pub.publish(f"{sensord.topic_root}/plant-1/{device}/temperature", body)


def tail(sensord: SensordProcess, *args: str) -> list[dict[str, Any]]:
    proc = run_cli("readings", "tail", "-c", str(sensord.config_path), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def values_per_sensor(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in records:
        out.setdefault(r["device"], []).append(r["value"])
    return out


EXPECTED_300 = {d: [float(i) for i in range(300) if i % 3 == k] for k, d in enumerate(DEVICES)}


async def test_every_reading_once_in_order_tail_resumes_from_an_offset_and_gauges(
    telemetry_sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord = telemetry_sensord
    async with running(sensord):
        publish(sensord, mqtt_pub, 0, 300)
        await sensord.wait_metric("sensord_readings_total", 300)
        metrics = await sensord.wait_metric("sensord_telemetry_published_total", 300)
        records = tail(sensord, "--from", "first", "--count", "400", "--idle", "3")
        # resume from the offset of a message in the middle of the stream
        offsets = sorted({r["offset"] for r in records})
        assert len(offsets) >= 2, "several batches expected"
        middle = offsets[len(offsets) // 2]
        resumed = tail(sensord, "--from", str(middle), "--count", "400", "--idle", "3")
        matched = tail(
            sensord, "--from", "first", "--match", "device=t-1", "--count", "400", "--idle", "2"
        )
        text = run_cli(
            "readings", "tail", "-c", str(sensord.config_path), "--from", "10m", "--count", "1"
        )
        _, scrape = await sensord.get("/metrics")
        assert await sensord.stop() == 0
    assert metrics["sensord_readings_total"] == 300
    assert metrics["sensord_telemetry_dropped_total"] == 0
    assert len(records) == 300  # exactly once
    assert values_per_sensor(records) == EXPECTED_300  # in order per sensor
    assert {(r["site"], r["kind"], r["unit"]) for r in records} == {("plant-1", "temperature", "C")}
    assert resumed == [r for r in records if r["offset"] >= middle]
    assert values_per_sensor(matched) == {"t-1": EXPECTED_300["t-1"]}
    assert text.returncode == 0, text.stderr
    assert text.stdout.endswith(" plant-1/t-0 temperature 0 C\n")
    for k, device in enumerate(DEVICES):
        last = max(i for i in range(300) if i % 3 == k)
        labels = f'site="plant-1",device="{device}",kind="temperature"'
        series = f'sensord_sensor_value{{{labels},unit="C"}}'
        assert f"{series} {float(last)}" in scrape


async def test_tail_of_a_missing_stream_says_so(sensord: SensordProcess) -> None:
    sensord.write_config()
    proc = run_cli("readings", "tail", "-c", str(sensord.config_path), "--count", "1")
    assert proc.returncode == 1
    assert f"no stream {sensord.prefix}.readings" in proc.stderr


# the 30 s outage under the slow marker (make test-slow); 5 s in make test
@pytest.mark.parametrize("cut", [5.0, pytest.param(30.0, marks=pytest.mark.slow)])
async def test_rabbitmq_cut_readings_buffered_then_delivered(
    telemetry_sensord: SensordProcess, mqtt_pub: MqttPublisher, cut: float
) -> None:
    sensord = telemetry_sensord
    proxy = sensord.amqp_through_proxy()
    await proxy.up()
    try:
        async with running(sensord):
            publish(sensord, mqtt_pub, 0, 60)
            await sensord.wait_metric("sensord_telemetry_published_total", 60)
            await proxy.down()
            publish(sensord, mqtt_pub, 60, 240)
            await sensord.wait_metric("sensord_readings_total", 300)
            held = await sensord.wait_metric("sensord_telemetry_buffered", 240)
            await asyncio.sleep(cut)  # cut for a while: ingest goes on, nothing is lost
            during = await sensord.metrics()
            await proxy.up()
            after = await sensord.wait_metric("sensord_telemetry_published_total", 300, timeout=30)
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
    assert held["sensord_telemetry_published_total"] == 60
    assert during["sensord_telemetry_published_total"] == 60
    assert during["sensord_telemetry_buffered"] == 240
    assert after["sensord_telemetry_dropped_total"] == 0
    records = await read_stream(f"{sensord.prefix}.readings", 1000, idle=2)
    assert values_per_sensor(unique_by_message(records)) == EXPECTED_300


@pytest.mark.slow  # ~30 s; tests/telemetry/test_stream.py proves the bound on the component
async def test_a_tiny_buffer_counts_what_it_drops(
    telemetry_sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord = telemetry_sensord
    sensord.extra_toml = TELEMETRY + "buffer = 20\n"
    proxy = sensord.amqp_through_proxy()
    await proxy.up()
    try:
        async with running(sensord):
            publish(sensord, mqtt_pub, 0, 3)
            await sensord.wait_metric("sensord_telemetry_published_total", 3)
            await proxy.down()
            publish(sensord, mqtt_pub, 3, 97)
            await sensord.wait_metric("sensord_telemetry_dropped_total", 77)
            await proxy.up()
            await sensord.wait_metric("sensord_telemetry_published_total", 23, timeout=30)
            final = await sensord.metrics()
            assert await sensord.stop() == 0
    finally:
        await proxy.down()
    accepted = final["sensord_readings_total"]
    assert accepted == 100
    assert final["sensord_telemetry_published_total"] + final[
        "sensord_telemetry_dropped_total"
    ] == (accepted)
    records = unique_by_message(await read_stream(f"{sensord.prefix}.readings", 1000, idle=2))
    assert len(records) == final["sensord_telemetry_published_total"]
    assert [r["value"] for r in records][-20:] == [float(i) for i in range(80, 100)]  # newest kept


SITES = [f"plant-{i}" for i in range(8)]  # over 3 partitions: 6, 1 and 1 sites (CRC-32)


async def test_partitions_tail_merges_the_streams_or_reads_the_chosen_ones(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord.extra_toml = TELEMETRY + "partitions = 3\n"
    queues = [f"{sensord.prefix}.readings.{i}" for i in range(3)]
    n = 240
    t0 = time.time() - 100
    try:
        async with running(sensord):
            for i in range(n):  # 8 sites x 3 devices, ts growing with i
                site, device = SITES[i % 8], DEVICES[i // 8 % 3]
                body = json.dumps({"value": float(i), "ts": round(t0 + i / 100, 3)})
                mqtt_pub.publish(f"{sensord.topic_root}/{site}/{device}/temperature", body)
            await sensord.wait_metric("sensord_telemetry_published_total", n)
            merged = tail(sensord, "--from", "first", "--count", str(n + 50), "--idle", "3")
            one = tail(sensord, "--from", "first", "--partition", "2", "--idle", "2")
            two = tail(
                sensord, "--from", "first", "--partition", "0", "--partition", "2", "--idle", "2"
            )
            offsets = sorted({r["offset"] for r in one})
            resumed = tail(sensord, "--from", str(offsets[-1]), "--partition", "2", "--idle", "2")
            cfg = str(sensord.config_path)
            refused = run_cli("readings", "tail", "-c", cfg, "--from", "5", "--count", "1")
            out_of_range = run_cli("readings", "tail", "-c", cfg, "--partition", "3")
            assert await sensord.stop() == 0
    finally:
        await delete_queue(*queues)
    assert len(merged) == n  # every reading once, from the three streams
    assert {r["partition"] for r in merged} == {0, 1, 2}
    for r in merged:
        assert r["partition"] == partition_of_labels({"site": r["site"]}, ["site"], 3)
    # in order per sensor across the merge (each sensor is in one stream)
    per_sensor: dict[tuple[str, str], list[float]] = {}
    for r in merged:
        per_sensor.setdefault((r["site"], r["device"]), []).append(r["value"])
    assert all(values == sorted(values) for values in per_sensor.values())
    assert len(per_sensor) == 24
    assert one == [r for r in merged if r["partition"] == 2] != []
    assert sorted(r["value"] for r in two) == sorted(
        r["value"] for r in merged if r["partition"] != 1
    )
    assert resumed == [r for r in one if r["offset"] >= offsets[-1]] != []
    assert refused.returncode == 2
    assert "--from 5: an offset is a position in one stream, and 3 are read" in refused.stderr
    assert "--partition" in refused.stderr
    assert out_of_range.returncode == 2
    assert "--partition 3: [telemetry] partitions is 3" in out_of_range.stderr


async def test_tail_of_missing_partition_streams_names_the_setting(sensord: SensordProcess) -> None:
    sensord.extra_toml = "[telemetry]\npartitions = 2\n"
    sensord.write_config()
    proc = run_cli("readings", "tail", "-c", str(sensord.config_path), "--count", "1")
    assert proc.returncode == 1
    assert f"no stream {sensord.prefix}.readings.0" in proc.stderr
    assert "partitions = 2 as on the edges" in proc.stderr


PROMETHEUS = shutil.which("prometheus")


def start_prometheus(tmp: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    assert PROMETHEUS is not None
    return subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary: install the Debian package `prometheus` to run this test",
)
async def test_a_real_prometheus_scrapes_the_sensor_value(
    telemetry_sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    assert PROMETHEUS is not None
    sensord = telemetry_sensord
    sensord.extra_toml = "[telemetry]\nprometheus = true\n"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sensord-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: sensord\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{sensord.http_port}']}}]\n"
        )
        async with running(sensord):
            publish(sensord, mqtt_pub, 0, 3)
            await sensord.wait_metric("sensord_readings_total", 3)
            prom = start_prometheus(Path(tmp), config, port)
            try:
                found: list[Any] = []
                query = 'sensord_sensor_value{device="t-2"}'
                url = f"http://127.0.0.1:{port}/api/v1/query"

                async def ask() -> None:
                    async with (
                        aiohttp.ClientSession() as s,
                        s.get(url, params={"query": query}) as r,
                    ):
                        found[:] = (await r.json())["data"]["result"]

                async def answered() -> bool:
                    try:
                        await ask()
                    except (aiohttp.ClientError, KeyError, ValueError):
                        return False
                    return bool(found)

                deadline = time.monotonic() + 30
                while not await answered():
                    assert time.monotonic() < deadline, "Prometheus never had the series"
                    await asyncio.sleep(0.5)
            finally:
                prom.terminate()
                prom.wait(10)
    (series,) = found
    assert series["metric"]["site"] == "plant-1"
    assert series["metric"]["unit"] == "C"
    assert float(series["value"][1]) == 2.0
