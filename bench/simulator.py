"""`python -m bench.simulator`: sensord-sim's own maximum publish rate, JSON on stdout.

Against a private Mosquitto on a free loopback port (``max_queued_messages 0``,
``persistence false``; the machine's broker keeps its stock limits and may be shared), for
QoS 0 and QoS 1, with one process and with ``--processes`` (default: one per CPU). The
simulator runs as a user runs it (``sensord-sim --total-rate 1e9 --duration D --json``),
so the figure includes the physics, payload formatting and pacing loop. The reference,
measured in the same run against the same broker: paho-mqtt publishing pre-built payloads
in a bare loop at QoS 0 (what a simple Python load generator does); the JSON gives the
ratio. QoS 0 "sent" means written to the broker's socket (TCP pushes back when the broker
falls behind); QoS 1 "sent" means acknowledged by the broker.

Nothing here is a pass/fail test (CONVENTIONS.md, point 10).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sensord.testing import MOSQUITTO, Mosquitto

GOAL_QOS0 = 50_000
"""Messages per second at QoS 0 that issue 7 asks of the simulator."""


def simulator_rate(port: int, *, qos: int, processes: int, duration: float) -> dict[str, Any]:
    """One sensord-sim run flat out; its --json summary."""
    argv = [
        *(sys.executable, "-m", "simulators", "--mqtt", f"mqtt://127.0.0.1:{port}"),
        *("--sites", "4", "--sensors", "25", "--total-rate", "1e9"),
        *("--duration", str(duration), "--qos", str(qos), "--processes", str(processes)),
        *("--max-inflight", "10000", "--quiet", "--json", "--topic-root", "bench"),
        *("--client-id", f"bench-sim-{uuid.uuid4().hex[:8]}"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        msg = f"sensord-sim failed ({done.returncode}): {done.stderr.strip()}"
        raise RuntimeError(msg)
    summary: dict[str, Any] = json.loads(done.stdout)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # CPU time per message (all processes, start-up included): unlike msg/s, it hardly
    # depends on how busy the machine is, so runs on a shared machine stay comparable.
    summary["cpu_us_per_message"] = round(cpu_s / max(summary["sent"], 1) * 1e6, 2)
    return summary


def paho_reference_rate(port: int, duration: float) -> float:
    """Messages/s of a bare paho loop publishing pre-built payloads at QoS 0."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{uuid.uuid4().hex[:8]}"
    )
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.1)
    topics = [f"bench/plant-{i % 4 + 1}/t-{i % 25 + 1}/temperature" for i in range(100)]
    payload = b'{"value": 21.53, "ts": 1764331200123, "unit": "C"}'
    sent, start = 0, time.monotonic()
    try:
        while time.monotonic() - start < duration:
            for topic in topics:
                client.publish(topic, payload, qos=0)
            sent += len(topics)
            client.loop_read()
        elapsed = time.monotonic() - start
    finally:
        client.disconnect()
    return sent / elapsed


def run(duration: float, processes: int, mosquitto: str) -> dict[str, Any]:
    """Every measurement, one JSON object."""
    runs: list[dict[str, Any]] = []
    # max_queued_messages 0 and persistence off are Mosquitto's defaults here; the window of
    # 1000 lets QoS 1 runs measure the simulator, not the broker's round trips
    with Mosquitto(max_inflight_messages=1000, executable=mosquitto) as broker:
        port = broker.port
        reference = paho_reference_rate(port, duration)
        print(f"bench.simulator: paho reference {reference:,.0f} msg/s", file=sys.stderr)
        for qos in (0, 1):
            for procs in sorted({1, processes}):
                summary = simulator_rate(port, qos=qos, processes=procs, duration=duration)
                print(
                    f"bench.simulator: QoS {qos}, {procs} process(es): "
                    f"{summary['rate']:,.0f} msg/s, {summary['errors']} errors, "
                    f"{summary['cpu_us_per_message']} us CPU per message",
                    file=sys.stderr,
                )
                runs.append(
                    {
                        "qos": qos,
                        "processes": procs,
                        "rate": summary["rate"],
                        "sent": summary["sent"],
                        "errors": summary["errors"],
                        "elapsed_s": summary["elapsed_s"],
                        "cpu_us_per_message": summary["cpu_us_per_message"],
                    }
                )
    best0 = max(r["rate"] for r in runs if r["qos"] == 0)
    best1 = max(r["rate"] for r in runs if r["qos"] == 1)
    return {
        "benchmark": "simulator_max_rate",
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "duration_s": duration,
        "broker": "private mosquitto, max_queued_messages 0, max_inflight_messages 1000",
        "reference": {"paho_bare_loop_qos0_rate": round(reference, 1)},
        "runs": runs,
        "max_rate_qos0": best0,
        "max_rate_qos1": best1,
        "ratio_qos0_vs_paho": round(best0 / reference, 2),
        "goal_qos0": GOAL_QOS0,
        "meets_goal_qos0": best0 >= GOAL_QOS0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: JSON on stdout, progress on stderr."""
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument(
        "--processes", type=int, default=max(2, os.cpu_count() or 1), help="for the multi run"
    )
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.duration, args.processes, args.mosquitto), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
