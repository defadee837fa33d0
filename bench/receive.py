"""A receiver in its own process: `python -m bench.receive sensord|paho ...`.

Prints one JSON line `{"received", "started", "finished", "peak_rss_kb"}`; times are
`time.monotonic()` (system-wide on Linux, so the parent compares them with its own).
- `sensord`: MqttBridge + RuleEngine with the example rules (`rules/temperature.yaml`)
  and the status page's history hook (`History.record`), as `Service._on_reading` does;
  `engine.tick` once a second, done when sensord's own `readings` counter reaches N.
- `paho`: a bare paho client in `loop_forever`, counting messages in on_message (QoS 1
  acked by paho itself): the ceiling of any paho-based receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.load import TOPIC_FILTER, TOPIC_TEMPLATE
from sensord.events import Reading
from sensord.http.history import History
from sensord.ingest.client import MqttBridge
from sensord.ingest.settings import MqttSettings
from sensord.ops.metrics import Metrics
from sensord.rules import Rule, RuleEngine

RULES_FILE = Path(__file__).resolve().parent.parent / "rules" / "temperature.yaml"


def example_rules() -> list[Rule]:
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [Rule.model_validate(r) for r in doc["rules"]]


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


async def _sensord(args: argparse.Namespace) -> dict[str, float]:
    settings = MqttSettings(
        url=f"mqtt://127.0.0.1:{args.port}",
        client_id=args.client_id,
        topics=[TOPIC_FILTER],
        topic_template=TOPIC_TEMPLATE,
        qos=args.qos,
        persistent_session=args.persistent,
    )
    engine = RuleEngine(example_rules())
    history = History()
    metrics = Metrics()
    done = asyncio.Event()
    finished = 0.0

    def sink(reading: Reading, now: float, key: object) -> None:
        nonlocal finished
        history.record(reading, now)  # what service.py does per reading
        engine.observe(reading, now)
        if metrics.readings >= args.messages and not done.is_set():
            finished = time.monotonic()
            done.set()

    async def tick() -> None:
        while True:
            await asyncio.sleep(1.0)
            engine.tick(time.time())

    bridge = MqttBridge(settings, sink, metrics)
    stop = asyncio.Event()
    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    runner = asyncio.create_task(bridge.run(stop))
    await bridge.connected.wait()
    print("subscribed", flush=True)
    last, last_growth = -1, time.monotonic()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 0.1)
        except TimeoutError:
            if metrics.readings != last:
                last, last_growth = metrics.readings, time.monotonic()
            elif time.monotonic() - last_growth > args.idle_timeout:
                finished = last_growth
                break
    stop.set()
    ticker.cancel()
    await runner
    return {"received": metrics.readings, "started": started, "finished": finished}


def _paho(args: argparse.Namespace) -> dict[str, float]:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        clean_session=not args.persistent,
    )
    state = {"received": 0, "finished": 0.0, "last": time.monotonic()}

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe(TOPIC_FILTER, args.qos)

    def on_subscribe(*_a: object) -> None:
        print("subscribed", flush=True)

    def on_message(c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        state["received"] += 1
        if state["received"] >= args.messages:
            state["finished"] = time.monotonic()
            c.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    started = time.monotonic()
    client.connect("127.0.0.1", args.port)
    while not state["finished"]:
        before = state["received"]
        client.loop(timeout=1.0)
        if state["received"] != before:
            state["last"] = time.monotonic()
        elif time.monotonic() - state["last"] > args.idle_timeout:
            state["finished"] = state["last"]
            break
    return {"received": state["received"], "started": started, "finished": state["finished"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receive", description=__doc__)
    parser.add_argument("receiver", choices=("sensord", "paho"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), required=True)
    parser.add_argument("--persistent", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = asyncio.run(_sensord(args)) if args.receiver == "sensord" else _paho(args)
    print(json.dumps({**result, "peak_rss_kb": _peak_rss_kb()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
