"""Scale-out figures on a local RabbitMQ cluster (sensord.testing.rabbitmq), in one run.

`python -m bench.cluster [--transitions 3000] [--kills 3]` prints one JSON object
(progress on stderr):

- `transitions_per_s`: alert transitions end to end (MQTT reading -> `sensord run` ->
  outbox -> RabbitMQ -> notify consumer -> webhook sink) on a 1-node and on a 3-node
  cluster of the same installed server, same settings, same run: a burst of readings that
  each flip a sensor above or below the threshold; the clock runs from the first publish
  to the last webhook. The 1-node run is repeated after the 3-node one; `ratio` = 3 nodes
  / the mean of both 1-node runs.
- `failover`: sensord's own drain (delivery/drain.py: OutboxDrain on a failover
  connection) publishing alert events at a steady rate to the 3-node cluster; the node it
  is connected to, which also leads the queue, is SIGKILLed; the time from the kill to the
  first confirm from the next node (after the drain's move), `--kills` times.

Nothing is asserted; figures from a noisy 2-core machine (docs/scale-out.md, Sizing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from sensord.amqp.settings import AmqpSettings
from sensord.delivery.drain import OutboxDrain
from sensord.delivery.outbox import Outbox, open_memory_db
from sensord.events import AlertEvent
from sensord.ops.metrics import Metrics
from sensord.testing import Mosquitto, WebhookSink, free_port
from sensord.testing.rabbitmq import RabbitCluster, missing

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 50
    severity: critical
"""


def say(msg: str) -> None:
    print(f"bench.cluster: {msg}", file=sys.stderr, flush=True)


def _config(work: Path, urls: list[str], mqtt_port: int, hook: str, prefix: str) -> Path:
    (work / "rules").mkdir(parents=True)
    (work / "rules" / "r.yaml").write_text(RULES)
    cfg = work / "sensord.toml"
    cfg.write_text(
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nclient_id = "{prefix}"\n'
        f'topics = ["{prefix}/#"]\ntopic_template = "{prefix}/{{site}}/{{device}}/{{kind}}"\n'
        f"persistent_session = false\n\n[amqp]\nurl = {json.dumps(urls)}\n"
        f'prefix = "{prefix}"\nreconnect_interval = 0.5\n\n[rules]\npaths = ["rules/*.yaml"]\n'
        f'\n[http]\nlisten = "127.0.0.1:{free_port()}"\n\n[[channels]]\nname = "hook"\n'
        f'type = "webhook"\nurl = "{hook}"\nsend_resolved = true\n'
    )
    return cfg


async def _ready(proc: subprocess.Popen[bytes], listen: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sensord exited {proc.returncode}")
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://{listen}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("sensord not ready")


async def transitions(cluster: RabbitCluster, mosq: Mosquitto, n: int, work: Path) -> float:
    """Transitions/s end to end through one `sensord run` on this cluster."""
    sink = WebhookSink()
    await sink.start()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    cfg = _config(work / prefix, cluster.urls, mosq.port, sink.url, prefix)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err = (work / f"{prefix}.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not on a hot path
        [sys.executable, "-m", "sensord", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=env,
    )
    try:
        listen = next(
            ln.split('"')[1] for ln in cfg.read_text().splitlines() if ln.startswith("listen")
        )
        await _ready(proc, listen)
        pub = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub"
        )
        pub.connect("127.0.0.1", mosq.port)
        pub.loop_start()
        sensors = 100
        began = time.monotonic()
        infos = []
        for i in range(n):
            value = 60 if (i // sensors) % 2 == 0 else 40
            topic = f"{prefix}/site/t-{i % sensors}/temperature"
            infos.append(pub.publish(topic, str(value), qos=1))
            if len(infos) >= 1000:  # bounded in flight (16-bit packet ids)
                for info in infos:
                    info.wait_for_publish(10)
                infos.clear()
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 120
        while len(sink.event_ids) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        took = time.monotonic() - began
        pub.disconnect()
        pub.loop_stop()
        got = len(sink.event_ids)
        if got < n:
            say(f"only {got}/{n} notifications arrived")
        return got / took
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        await sink.stop()


def _event(i: int) -> AlertEvent:
    now = datetime.now(UTC)
    return AlertEvent.model_validate(
        {
            "event_id": uuid.uuid4().hex,
            "fingerprint": f"fp-{i}",
            "status": "firing",
            "rule": "hot",
            "severity": "critical",
            "labels": {"alertname": "hot", "site": "s", "device": f"d{i}", "kind": "temperature"},
            "annotations": {},
            "value": 60.0,
            "threshold": 50.0,
            "starts_at": now,
            "observed_at": now,
        }
    )


async def failover(  # noqa: PLR0915 - one measurement, read top to bottom
    cluster: RabbitCluster, kills: int
) -> dict[str, Any]:
    """Kill -> first confirm on the next node, for sensord's OutboxDrain."""
    prefix = f"f{uuid.uuid4().hex[:8]}"
    settings = AmqpSettings.model_validate(
        {"url": cluster.urls, "prefix": prefix, "reconnect_interval": 0.5}
    )
    metrics = Metrics(CollectorRegistry())
    outbox = Outbox(open_memory_db(), 1_000_000, metrics)
    drain = OutboxDrain(settings, outbox, metrics)
    stop = asyncio.Event()
    drain.ready.set()
    runner = asyncio.create_task(drain.run(stop))
    times: list[float] = []
    moved: list[float] = []  # when the drain's connection reached another node
    seen = moves = 0
    loop = asyncio.get_running_loop()

    async def watch() -> None:  # the time of each confirm (published counts up) and move
        nonlocal seen, moves
        while True:
            if drain.ring.moves > moves:
                moves = drain.ring.moves
                moved.append(loop.time())
            if drain.published > seen:
                seen = drain.published
                times.append(loop.time())
            await asyncio.sleep(0.002)

    async def feed() -> None:  # 200 events/s
        i = 0
        while True:
            outbox.add([_event(i)])
            drain.wake()
            i += 1
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    feeder: asyncio.Task[None] | None = None
    results: list[float] = []
    try:
        while drain.ring.connected is None:
            await asyncio.sleep(0.05)
        for _ in range(kills):
            node = cluster.node_by_port(int(str(drain.ring.connected).rpartition(":")[2]))
            # the queue the alerts land in, led by that node: the kill takes both
            conn = await aio_pika.connect(node.url)
            async with conn:
                ch = await conn.channel()
                ex = await ch.declare_exchange(settings.exchange, "topic", durable=True)
                q = await ch.declare_queue(
                    f"{prefix}.q{len(results)}",
                    durable=True,
                    arguments={"x-queue-type": "quorum"},
                )
                await q.bind(ex, "#")
            if feeder is None:
                feeder = asyncio.create_task(feed())
            await asyncio.sleep(1.0)
            killed = loop.time()
            await asyncio.to_thread(cluster.kill, node)
            # the first confirm from the next node: after the move (a confirm from the
            # dying node can still arrive in the first milliseconds)
            while not (moved and moved[-1] > killed and times[-1] > moved[-1]):
                await asyncio.sleep(0.005)
            first = next(t for t in times if t > moved[-1])
            results.append(first - killed)
            say(f"kill of {node.name}: first confirm after {first - killed:.3f} s")
            await asyncio.to_thread(cluster.restart, node)
            await asyncio.to_thread(cluster.wait_clustered, 60)
    finally:
        if feeder is not None:
            feeder.cancel()
        watcher.cancel()
        stop.set()
        await runner
        await drain.close()
    return {
        "median_s": round(statistics.median(results), 3),
        "each_s": [round(r, 3) for r in results],
        "rate_per_s": 200,
        "left_in_outbox": len(outbox),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--transitions", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    if (why := missing()) is not None:
        print(json.dumps({"skipped": why}))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    out: dict[str, Any] = {"bench": "cluster", "cores": os.cpu_count()}
    try:
        with Mosquitto(max_queued_messages=0) as mosq:
            with RabbitCluster(1, name="bench-one") as one:
                say(f"1 node up in {one.started_in:.1f} s")
                one_rate = await transitions(one, mosq, args.transitions, work)
            with RabbitCluster(3, name="bench-three") as three:
                say(f"3 nodes up in {three.started_in:.1f} s")
                three_rate = await transitions(three, mosq, args.transitions, work)
                out["cluster_start_s"] = round(three.started_in, 1)
                out["failover"] = await failover(three, args.kills)
            # the 1-node run again, after: how much the machine drifted in between
            with RabbitCluster(1, name="bench-one") as one:
                again = await transitions(one, mosq, args.transitions, work)
        ref = (one_rate + again) / 2
        out["transitions_per_s"] = {
            "one_node": round(one_rate, 1),
            "one_node_again": round(again, 1),
            "three_nodes": round(three_rate, 1),
            "ratio": round(three_rate / ref, 3),  # against the mean of both 1-node runs
            "transitions": args.transitions,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
