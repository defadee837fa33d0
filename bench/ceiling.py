"""The Python ceiling of a calm drain: what the leanest Python receiver does beside mosquitto_sub.

`python -m bench.ceiling [--readings 100000] [--sensors 10000] [--runs 5] [--windows 20]`
prints one JSON object (progress on stderr). Scope: **reference, no sensord**. It answers
"how close to `mosquitto_sub` can any Python daemon get on this host", the bound under
bench.product's calm ratio (issue 16 asks for >= 0.8x there).

Per run and window, on a private Mosquitto (bench/broker.py), with the same calm backlog
as bench.product (`--readings` QoS 1 readings over `--sensors` sensors, bench/product_load.py)
queued for three offline sessions, each receiver drains it, timed from its process start
until it exits after the last message, in an order that rotates per run:
- `mosquitto_sub -q 1 -c -C N` (C), bench.product's reference;
- `bare_frames`: `python bench/bare_client.py ... frames`, MQTT framing and PUBACKs only;
- `bare_json`: the same plus `json.loads` of each payload (bench/bare_client.py).
A bare receiver is timed until the broker has taken its last PUBACK (a PINGREQ answered),
so that it leaves the session as mosquitto_sub does: with nothing unacknowledged.
Reported: each receiver's msgs/s and seconds (medians, every run beside them) and each bare
receiver's ratio to mosquitto_sub in the same run (median). A Python process's start-up
(~20-40 ms here) is in its time, as sensord's is in bench.product's.

Also `stack_import_s`: importing the project's chosen stack (`STACK`: aiohttp, FastStream,
aio-pika, pydantic, prometheus-client, APScheduler, paho-mqtt, PyYAML) in a fresh
interpreter, median of 5, and `floor_ratio`: mosquitto_sub's seconds over (that import +
bare_json's seconds), the best calm ratio a daemon on this stack could reach if it did
nothing else, per run (median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.broker import PrivateMosquitto
from bench.product import (
    Config,
    _median_of,
    _rotate,
    create_session,
    delete_session,
    drain_mosquitto_sub,
)
from bench.product_load import publish_backlog

SCOPE = "reference: bare Python QoS 1 receivers beside mosquitto_sub (no sensord)"
BARE = Path(__file__).with_name("bare_client.py")
RECEIVERS = ("mosquitto_sub", "bare_frames", "bare_json")
STACK = (
    "asyncio, aiohttp.web, faststream.rabbit, aio_pika, pydantic, prometheus_client,"
    " apscheduler.schedulers.asyncio, paho.mqtt.client, yaml, sqlite3"
)


def progress(text: str) -> None:
    print(f"[bench.ceiling] {text}", file=sys.stderr, flush=True)


def drain_bare(cfg: Config, port: int, client_id: str, mode: str) -> dict[str, Any]:
    args = [sys.executable, str(BARE), str(port), client_id, str(cfg.readings), mode]
    start = time.perf_counter()
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=False,
        timeout=max(cfg.idle_timeout, cfg.readings / 2000),
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"bare_client {mode} exited with {proc.returncode}: {proc.stderr}")
    received = int(proc.stdout)  # the PUBLISHes it counted
    rate = received / seconds
    progress(f"  bare_{mode} {received} msgs in {seconds:.3f} s = {rate:.0f} msgs/s")
    return {"received": received, "seconds": round(seconds, 3), "msgs_per_s": round(rate, 1)}


def stack_import_s(times: int = 5) -> dict[str, Any]:
    """Seconds to import STACK in a fresh interpreter (its start-up not included)."""
    code = f"import time; t = time.perf_counter(); import {STACK}; print(time.perf_counter() - t)"
    values = [
        round(float(subprocess.run([sys.executable, "-c", code], check=True,
                                   capture_output=True, text=True).stdout), 3)
        for _ in range(times)
    ]  # fmt: skip
    return {"median": round(statistics.median(values), 3), "values": values}


def measure(cfg: Config, broker: PrivateMosquitto, order: list[str]) -> dict[str, Any]:
    prefix = f"benchceil{uuid.uuid4().hex[:8]}"
    ids = {r: f"{prefix}-{r}" for r in RECEIVERS}
    out: dict[str, Any] = {"order": order}
    with tempfile.TemporaryDirectory(prefix="sensord-bench-ceiling-") as tmp:
        try:
            for cid in ids.values():
                create_session(cfg, broker.port, cid)
            pub = publish_backlog(
                broker.port, shape="calm", readings=cfg.readings, sensors=cfg.sensors,
                client_id=f"{prefix}-pub",
            )  # fmt: skip
            progress(f"  backlog of {pub.readings} published at {pub.rate:.0f} msgs/s")
            for r in order:
                if r == "mosquitto_sub":
                    out[r] = drain_mosquitto_sub(cfg, broker.port, ids[r], Path(tmp))
                else:
                    out[r] = drain_bare(cfg, broker.port, ids[r], r.removeprefix("bare_"))
        finally:
            for cid in ids.values():
                delete_session(cfg, broker.port, cid)
    ref = out["mosquitto_sub"]["msgs_per_s"]
    for r in ("bare_frames", "bare_json"):
        out[f"{r}_ratio"] = round(out[r]["msgs_per_s"] / ref, 3) if ref else None
    return out


def run(cfg: Config, runs: int) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    imports = stack_import_s()
    progress(f"importing the stack: {imports['median']} s (median of 5)")
    results: dict[str, Any] = {}
    for window in cfg.windows:
        done: list[dict[str, Any]] = []
        with PrivateMosquitto(max_inflight=window, executable=cfg.mosquitto) as broker:
            for n in range(runs):
                order = _rotate(RECEIVERS, n)
                progress(f"run {n + 1}/{runs} window {window}: {order}")
                d = measure(cfg, broker, order)
                floor = imports["median"] + d["bare_json"]["seconds"]
                d["floor_ratio"] = round(d["mosquitto_sub"]["seconds"] / floor, 3)
                done.append(d)
        results[f"window_{window}"] = {
            **{f"{r}_msgs_per_s": _median_of(done, r, "msgs_per_s") for r in RECEIVERS},
            **{f"{r}_ratio": _median_of(done, f"{r}_ratio") for r in RECEIVERS[1:]},
            "floor_ratio": _median_of(done, "floor_ratio"),
            "runs": done,
        }
    return {
        "benchmark": "ceiling",
        "scope": SCOPE,
        "readings": cfg.readings,
        "sensors": cfg.sensors,
        "runs": runs,
        "stack": STACK,
        "stack_import_s": imports,
        "results": results,
        "python": sys.version.split()[0],
        "host_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--windows", default="20", help="comma-separated, e.g. 20,1000")
    a = ap.parse_args(argv)
    windows = tuple(int(w) for w in a.windows.split(","))
    cfg = Config(readings=a.readings, sensors=a.sensors, windows=windows)
    print(json.dumps(run(cfg, a.runs), indent=2))


if __name__ == "__main__":
    main()
