"""Webhook notifications per second from one and two `sensord run --role notify` processes.

Runs on its own: `python -m bench.notify [--n 20000] [--prefetch 128]`, JSON on stdout.

In the same run, against the same aiohttp sink (a subprocess pinned to the last core):
- `bare`: an aiohttp client loop posting the same Alertmanager bodies at `--concurrency`,
  pinned to core 0: the reference;
- `one`: `--n` alert events are put in the channel queue first, then one notify process
  (pinned to core 0) drains it; the rate is sink-side, first to last request;
- `two`: the same with two notify processes (both on core 0 on a 2-core machine, the sink
  and RabbitMQ need the rest: the ratio says how much a second process gains here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web

from sensord.testing import free_port

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
BARE = ["taskset", "-c", "0", sys.executable, "-m", "bench.notify", "--bare"]


# ---- the sink (run as `python -m bench.notify --sink PORT`)


def run_sink(port: int) -> None:
    stats: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}

    async def alerts(request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes on Linux
        if stats["count"] == 0:
            stats["first"] = now
        stats["count"] += 1
        stats["last"] = now
        return web.Response(text="ok")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(request: web.Request) -> web.Response:
        stats.update(count=0, first=0.0, last=0.0)
        return web.json_response(stats)

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Sink:
    def __init__(self, core: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(core),
                sys.executable,
                "-m",
                "bench.notify",
                "--sink",
                str(self.port),
            ]
        )

    async def call(self, method: str, path: str) -> dict[str, float]:
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path) as r:
            data: dict[str, float] = await r.json()
            return data

    async def wait_up(self) -> None:
        for _ in range(100):
            try:
                await self.call("GET", "/stats")
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise RuntimeError("sink did not start")

    async def wait_count(self, n: int, limit: float) -> dict[str, float]:
        deadline = time.monotonic() + limit
        stats = await self.call("GET", "/stats")
        while stats["count"] < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stats = await self.call("GET", "/stats")
        return stats

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---- the events and the reference client loop


def event(i: int) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    labels = {
        "alertname": "critical-temperature",
        "site": "plant-1",
        "device": f"t-{i % 100}",
        "kind": "temperature",
        "severity": "critical",
    }
    return {
        "event_id": uuid.uuid4().hex,
        "fingerprint": uuid.uuid4().hex[:16],
        "status": "firing",
        "rule": "critical-temperature",
        "severity": "critical",
        "labels": labels,
        "annotations": {"summary": f"plant-1/t-{i % 100} temperature 81.2 above 80"},
        "value": 81.2,
        "threshold": 80.0,
        "starts_at": now,
        "ends_at": None,
        "observed_at": now,
    }


def bare_loop(url: str, n: int, concurrency: int) -> float:
    """The reference, in a child pinned to core 0: aiohttp posting the same bodies."""
    from sensord.events import AlertEvent  # only the reference needs it
    from sensord.notify.render import alertmanager_body

    bodies = [
        json.dumps(alertmanager_body([AlertEvent.model_validate(event(i))], "bench", "")).encode()
        for i in range(n)
    ]

    async def main() -> float:
        queue = iter(bodies)
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def worker() -> None:
                for body in queue:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return n / (time.perf_counter() - start)

    return asyncio.run(main())


async def preload(prefix: str, n: int) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(f"{prefix}.alerts")
        sem = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            body = json.dumps(event(i)).encode()
            async with sem:
                await exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="critical.plant-1.temperature",
                )

        await asyncio.gather(*(one(i) for i in range(n)))


async def cleanup(prefix: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        for suffix in ("", ".dead"):
            await ch.queue_delete(f"{prefix}.notify.hook{suffix}")
        await ch.exchange_delete(f"{prefix}.alerts")


def write_config(workdir: Path, prefix: str, url: str, prefetch: int) -> Path:
    path = workdir / "sensord.toml"
    path.write_text(
        f'[amqp]\nprefix = "{prefix}"\n[rules]\npaths = []\n[http]\nlisten = ""\n'
        f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "{url}/alerts"\n'
        f"prefetch = {prefetch}\n[channels.retry]\nmax_attempts = 1\n"
    )
    return path


def start_notify(config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    command = ["taskset", "-c", "0", sys.executable, "-m", "sensord", "run", "-c", str(config)]
    return subprocess.Popen([*command, "--role", "notify", "--log-level", "warning"], cwd=workdir)


async def notify_run(sink: Sink, n: int, processes: int, prefetch: int, workdir: Path) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = write_config(workdir, prefix, sink.url, prefetch)
    # `dlq list` declares the topology, so the events wait in the channel queue
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sensord", "dlq", "list", "-c", str(config)],
        check=True,
        capture_output=True,
    )
    try:
        await preload(prefix, n)
        await sink.call("POST", "/reset")
        procs = [start_notify(config, workdir) for _ in range(processes)]
        try:
            stats = await sink.wait_count(n, limit=300)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
        if stats["count"] < n:
            raise RuntimeError(f"only {stats['count']} of {n} delivered")
        return (stats["count"] - 1) / (stats["last"] - stats["first"])
    finally:
        await cleanup(prefix)


async def bench(n: int, concurrency: int, prefetch: int) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    sink = Sink(core=cores - 1)
    try:
        await sink.wait_up()
        bare = await asyncio.to_thread(
            lambda: float(
                subprocess.run(
                    [*BARE, sink.url + "/alerts", str(n), str(concurrency)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
        )
        with tempfile.TemporaryDirectory() as tmp:
            one = await notify_run(sink, n, 1, prefetch, Path(tmp))
            two = await notify_run(sink, n, 2, prefetch, Path(tmp))
    finally:
        sink.stop()
    return {
        "benchmark": "notify",
        "n": n,
        "cores": cores,
        "prefetch": prefetch,
        "bare_concurrency": concurrency,
        "bare_client_posts_per_s": round(bare),
        "one_process_notifications_per_s": round(one),
        "two_processes_notifications_per_s": round(two),
        "ratio_one_vs_bare": round(one / bare, 3),
        "ratio_two_vs_one": round(two / one, 3),
        "targets": {"one_process_per_s": 3000, "ratio_one_vs_bare": 0.3},
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        print(bare_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.notify")
    parser.add_argument("--n", type=int, default=20000, help="notifications per run")
    parser.add_argument("--concurrency", type=int, default=16, help="bare client loop")
    parser.add_argument("--prefetch", type=int, default=128, help="the channel's prefetch")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.n, args.concurrency, args.prefetch)), indent=2))


if __name__ == "__main__":
    main()
