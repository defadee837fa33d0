"""MQTT ingest benchmark: sensord's MqttBridge + rule engine against mosquitto_sub and paho.

Every receiver gets the same load from the same private broker in the same run, one at a
time, in rotating order; the results are ratios of medians (CONVENTIONS.md point 10).
(a) mosquitto_sub, (b) a bare paho loop and (c) sensord each run in their own process;
sensord's rate is read from its own readings counter, and its peak RSS is reported.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Literal

from bench.broker import PrivateMosquitto
from bench.load import TOPIC_FILTER, mean_payload_bytes

Receiver = Literal["mosquitto_sub", "paho", "sensord"]
Scenario = Literal["qos1_backlog", "qos0_live"]
RECEIVERS: tuple[Receiver, ...] = ("mosquitto_sub", "paho", "sensord")
SCENARIOS: tuple[Scenario, ...] = ("qos1_backlog", "qos0_live")

NOTES: dict[Scenario, str] = {
    "qos1_backlog": (
        "Drain of N QoS 1 messages queued for an offline persistent session (publisher "
        "finished before the clock starts), so this measures the receiver. mosquitto_sub is "
        "timed from process start until it exits after N messages (process start and "
        "connect included, nothing subtracted); paho and sensord (own processes) from their "
        "connect until the Nth message (sensord: its readings counter, after the rule "
        "engine) (connect included). Each QoS 1 message is acked. "
        "publisher: how fast the backlog was loaded beforehand (not part of the ratio)."
    ),
    "qos0_live": (
        "Subscriber connected, then a separate process floods N QoS 0 messages; timed from "
        "the go signal to the publisher until the Nth message was received. The publisher "
        "or the broker can be the bottleneck here, not only the receiver (see "
        "publisher.median); the broker queues QoS 0 without limit (max_queued_messages 0)."
    ),
}


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    messages: int = 200_000
    sensors: int = 10_000
    runs: int = 3
    broker_inflight: int = 1000
    publish_window: int = 1000
    idle_timeout: float = 10.0
    scenarios: tuple[Scenario, ...] = SCENARIOS
    mosquitto: str = "/usr/sbin/mosquitto"
    mosquitto_sub: str = "mosquitto_sub"


@dataclass(frozen=True, slots=True)
class Measurement:
    received: int
    seconds: float  # until the last message counted

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Series:
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(m.rate for m in self.measurements) if self.measurements else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rates": [round(m.rate, 1) for m in self.measurements],
            "received": [m.received for m in self.measurements],
            "seconds": [round(m.seconds, 4) for m in self.measurements],
            "median": round(self.median, 1),
        }


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- publisher process


class Publisher:
    """`python -m bench.load` in its own process; `go()` starts it, `result()` waits."""

    def __init__(self, port: int, messages: int, qos: int, window: int, sensors: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.load",
                f"--port={port}",
                f"--messages={messages}",
                f"--qos={qos}",
                f"--window={window}",
                f"--sensors={sensors}",
                f"--client-id=bench-pub-{_uid()}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"publisher did not start (exit {self.proc.returncode})")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()  # left open: communicate() in result() closes it

    def result(self, timeout: float) -> Measurement:
        assert self.proc.stdout is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"publisher failed with exit status {self.proc.returncode}")
        data = json.loads(out)
        return Measurement(received=int(data["sent"]), seconds=float(data["seconds"]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def publish_backlog(broker: PrivateMosquitto, cfg: BenchConfig) -> Measurement:
    pub = Publisher(
        broker.port, cfg.messages, qos=1, window=cfg.publish_window, sensors=cfg.sensors
    )
    try:
        pub.go()
        return pub.result(timeout=cfg.messages / 1000 + 60)
    finally:
        pub.kill()


# ---------------------------------------------------------------- mosquitto_sub


def _sub_args(cfg: BenchConfig, broker: PrivateMosquitto, client_id: str, qos: int) -> list[str]:
    return [
        cfg.mosquitto_sub,
        "-h",
        "127.0.0.1",
        "-p",
        str(broker.port),
        "-i",
        client_id,
        "-q",
        str(qos),
        "-t",
        TOPIC_FILTER,
    ]


def create_session(cfg: BenchConfig, broker: PrivateMosquitto, client_id: str) -> None:
    """Persistent session subscribed at QoS 1, then offline (`-c`, `-E`: exit on SUBACK)."""
    subprocess.run([*_sub_args(cfg, broker, client_id, 1), "-c", "-E"], check=True, timeout=10)


def delete_session(cfg: BenchConfig, broker: PrivateMosquitto, client_id: str) -> None:
    """A clean-session connect with the same id discards the persistent session."""
    subprocess.run(
        [*_sub_args(cfg, broker, client_id, 0), "-E"],
        check=True,
        timeout=10,
        stdout=subprocess.DEVNULL,
    )


class _StallWatch:
    """Kill a receiver whose output stopped growing; remember when it last grew."""

    def __init__(self, size: Callable[[], int], kill: Callable[[], None], idle: float) -> None:
        self._size, self._kill, self._idle = size, kill, idle
        self.last_growth = time.perf_counter()
        self.killed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        last = -1
        while not self._done.wait(0.1):
            now, size = time.perf_counter(), self._size()
            if size != last:
                last, self.last_growth = size, now
            elif now - self.last_growth > self._idle:
                self.killed = True
                self._kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def run_mosquitto_sub(
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    scenario: Scenario,
    client_id: str,
    publisher: Publisher | None,
) -> Measurement:
    """Receive N messages with mosquitto_sub writing them to a file (one line each)."""
    qos = 1 if scenario == "qos1_backlog" else 0
    args = [*_sub_args(cfg, broker, client_id, qos), "-C", str(cfg.messages)]
    if scenario == "qos1_backlog":
        args.append("-c")
    with tempfile.TemporaryDirectory(prefix="sensord-bench-sub-") as tmp:
        out_path = Path(tmp) / "messages.txt"
        with out_path.open("wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
            watch = _StallWatch(lambda: os.fstat(out.fileno()).st_size, proc.kill, cfg.idle_timeout)
            try:
                if publisher is not None:
                    broker.wait_subscribed(client_id, TOPIC_FILTER)
                    start = time.perf_counter()
                    publisher.go()
                proc.wait()
                end = time.perf_counter()
            finally:
                watch.stop()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        received = _count_lines(out_path)
    if watch.killed:
        end = watch.last_growth
    return Measurement(received=received, seconds=end - start)


# ---------------------------------------------------------------- paho and sensord


@dataclass(frozen=True, slots=True)
class ProcessMeasurement(Measurement):
    peak_rss_kb: int = 0


def _run_python_receiver(  # noqa: PLR0917 - the RunReceiver signature plus the receiver
    receiver: Literal["paho", "sensord"],
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    scenario: Scenario,
    client_id: str,
    publisher: Publisher | None,
) -> ProcessMeasurement:
    """`python -m bench.receive` in its own process, so that its peak RSS is its own."""
    backlog = scenario == "qos1_backlog"
    args = [
        sys.executable,
        "-m",
        "bench.receive",
        receiver,
        f"--port={broker.port}",
        f"--client-id={client_id}",
        f"--messages={cfg.messages}",
        f"--qos={1 if backlog else 0}",
        f"--idle-timeout={cfg.idle_timeout}",
    ]
    if backlog:
        args.append("--persistent")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    try:
        go = 0.0
        if publisher is not None:
            broker.wait_subscribed(client_id, TOPIC_FILTER)
            go = time.monotonic()
            publisher.go()
        out, _ = proc.communicate(timeout=cfg.messages / 500 + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{receiver} receiver failed with exit status {proc.returncode}")
    data = json.loads(out.strip().splitlines()[-1])
    start = go if publisher is not None else float(data["started"])
    return ProcessMeasurement(
        received=int(data["received"]),
        seconds=float(data["finished"]) - start,
        peak_rss_kb=int(data["peak_rss_kb"]),
    )


def run_paho(
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    scenario: Scenario,
    client_id: str,
    publisher: Publisher | None,
) -> Measurement:
    return _run_python_receiver("paho", cfg, broker, scenario, client_id, publisher)


def run_sensord(
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    scenario: Scenario,
    client_id: str,
    publisher: Publisher | None,
) -> Measurement:
    return _run_python_receiver("sensord", cfg, broker, scenario, client_id, publisher)


# ---------------------------------------------------------------- scenarios


RunReceiver = Callable[
    [BenchConfig, PrivateMosquitto, Scenario, str, Publisher | None], Measurement
]
RUNNERS: dict[Receiver, RunReceiver] = {
    "mosquitto_sub": run_mosquitto_sub,
    "paho": run_paho,
    "sensord": run_sensord,
}


@dataclass(slots=True)
class ScenarioResult:
    receivers: dict[Receiver, Series] = field(
        default_factory=lambda: {r: Series() for r in RECEIVERS}
    )
    publisher: Series = field(default_factory=Series)

    def ratio(self, reference: Receiver = "mosquitto_sub") -> float | None:
        ref = self.receivers[reference].median
        return self.receivers["sensord"].median / ref if ref > 0 else None

    def peak_rss_kb(self) -> int:
        return max(
            (
                m.peak_rss_kb
                for m in self.receivers["sensord"].measurements
                if isinstance(m, ProcessMeasurement)
            ),
            default=0,
        )


def _record(result: ScenarioResult, scenario: Scenario, receiver: Receiver, m: Measurement) -> None:
    result.receivers[receiver].measurements.append(m)
    progress(
        f"{scenario:<13} {receiver:<13} {m.received:>8} msgs in "
        f"{m.seconds:7.3f} s = {m.rate:>9.0f} msgs/s"
    )


def _client_id(receiver: Receiver) -> str:
    return f"bench-{receiver.replace('_', '-')}-{_uid()}"


def measure_backlog(
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    order: tuple[Receiver, ...],
    result: ScenarioResult,
) -> None:
    """One load for both receivers: a session each, N queued for both, drained in turn.

    The broker stores each message once for all sessions, and the receivers never run at
    the same time, so sharing the load only saves a publish phase per run.
    """
    ids = {r: _client_id(r) for r in order}
    try:
        for client_id in ids.values():
            create_session(cfg, broker, client_id)
        result.publisher.measurements.append(publish_backlog(broker, cfg))
        for receiver in order:
            measured = RUNNERS[receiver](cfg, broker, "qos1_backlog", ids[receiver], None)
            _record(result, "qos1_backlog", receiver, measured)
    finally:
        for client_id in ids.values():
            delete_session(cfg, broker, client_id)


def measure_live(
    cfg: BenchConfig,
    broker: PrivateMosquitto,
    order: tuple[Receiver, ...],
    result: ScenarioResult,
) -> None:
    for receiver in order:
        # started (packets built, connected) before the receiver; go() once it subscribed
        publisher = Publisher(broker.port, cfg.messages, qos=0, window=1, sensors=cfg.sensors)
        try:
            measured = RUNNERS[receiver](cfg, broker, "qos0_live", _client_id(receiver), publisher)
            result.publisher.measurements.append(publisher.result(timeout=cfg.idle_timeout))
        finally:
            publisher.kill()
        _record(result, "qos0_live", receiver, measured)


MEASURE: dict[
    Scenario,
    Callable[[BenchConfig, PrivateMosquitto, tuple[Receiver, ...], ScenarioResult], None],
] = {"qos1_backlog": measure_backlog, "qos0_live": measure_live}


def run(cfg: BenchConfig) -> dict[str, Any]:
    if shutil.which(cfg.mosquitto_sub) is None:
        raise FileNotFoundError(f"{cfg.mosquitto_sub} not found: install mosquitto-clients")
    results: dict[Scenario, ScenarioResult] = {s: ScenarioResult() for s in cfg.scenarios}
    with PrivateMosquitto(max_inflight=cfg.broker_inflight, executable=cfg.mosquitto) as broker:
        progress(f"mosquitto {broker.version} on 127.0.0.1:{broker.port}")
        for run_no in range(cfg.runs):
            # rotate who goes first, so drift on a noisy machine hits every receiver
            shift = run_no % len(RECEIVERS)
            order = RECEIVERS[shift:] + RECEIVERS[:shift]
            for scenario in cfg.scenarios:
                MEASURE[scenario](cfg, broker, order, results[scenario])
        version = broker.version
    return report(cfg, results, version)


def report(
    cfg: BenchConfig, results: dict[Scenario, ScenarioResult], mosquitto_version: str
) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for scenario, res in results.items():
        ratio, ratio_paho = res.ratio(), res.ratio("paho")
        entry: dict[str, Any] = {r: res.receivers[r].to_json() for r in RECEIVERS}
        entry["ratio"] = round(ratio, 3) if ratio is not None else None
        entry["ratio_to_paho"] = round(ratio_paho, 3) if ratio_paho is not None else None
        entry["sensord_peak_rss_mib"] = round(res.peak_rss_kb() / 1024, 1)
        entry["complete"] = all(
            m.received == cfg.messages for s in res.receivers.values() for m in s.measurements
        )
        entry["publisher"] = res.publisher.to_json()
        entry["note"] = NOTES[scenario]
        scenarios[scenario] = entry
    load1, load5, _ = os.getloadavg()
    return {
        "benchmark": "mqtt_ingest",
        "scope": "sub-assembly: bridge + rule engine",
        "messages": cfg.messages,
        "runs": cfg.runs,
        "payload_bytes": round(mean_payload_bytes(cfg.messages), 1),
        "sensors": cfg.sensors,
        "rules": "rules/temperature.yaml",
        "broker": {
            "mosquitto": mosquitto_version,
            "max_queued_messages": 0,
            "max_inflight_messages": cfg.broker_inflight,
        },
        "scenarios": scenarios,
        "python": platform.python_version(),
        "paho_mqtt": metadata.version("paho-mqtt"),
        "host_cores": os.cpu_count(),
        "load_average": [round(load1, 2), round(load5, 2)],
    }


_SCALAR_LIST = re.compile(r"\[\s*([^\[\]{}]*?)\s*\]")


def dump(result: dict[str, Any], stream: IO[str]) -> None:
    """Indented JSON, with lists of numbers kept on one line so that runs read side by side."""
    text = json.dumps(result, indent=2)
    text = _SCALAR_LIST.sub(lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1))) + "]", text)
    stream.write(text + "\n")
