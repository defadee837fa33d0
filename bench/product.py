"""Product benchmark: the whole `sensord run` process draining a QoS 1 backlog.

`python -m bench.product [--readings 100000] [--sensors 10000] [--runs 2]
[--windows 20,1000] [--shapes calm,storm]` prints one JSON object (progress on stderr).

For each Mosquitto window (`max_inflight_messages`; 20 is the stock value) and each shape
(calm: no transition; storm: ~1/3 of readings are alert transitions), each run:
1. sessions: sensord's (its own client id, subscribed at QoS 1, then offline) and a
   `mosquitto_sub -c` reference's, on a private Mosquitto (`max_queued_messages 0`);
2. the backlog: `--readings` QoS 1 readings over `--sensors` sensors, queued for both;
3. `sensord run -c <tmp config>` (role `all`, one `file` channel, state file, status page
   and history on): timed from its start until `sensord_readings_total` reaches the
   backlog, while a poller GETs `/metrics` every 50 ms and records each response time;
4. checks: transitions (`sensord_alerts_total`) equal the replayed expectation, every
   one reached RabbitMQ (a queue of the benchmark's bound `#` to `<prefix>.alerts`), the
   outbox is empty and the state file's active alerts match, nothing was dropped;
5. the reference: `mosquitto_sub -q 1 -c` drains the same backlog from the same broker.
The receivers' order, the shapes' order and the windows' order rotate per run. Figures
are medians with every run's value beside them; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.broker import PrivateMosquitto
from bench.product_load import SHAPES, TOPIC_FILTER, Shape, expected, publish_backlog
from bench.product_sensord import MetricsPoller, SensordRun, rabbitmq_version

SCOPE = "product: whole sensord run"
RECEIVERS = ("sensord", "mosquitto_sub")


def progress(text: str) -> None:
    print(f"[bench.product] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Config:
    readings: int = 100_000
    sensors: int = 10_000
    runs: int = 2  # 3 would take ~40 min on 2 busy cores (bench/README.md)
    windows: tuple[int, ...] = (20, 1000)
    shapes: tuple[Shape, ...] = SHAPES
    idle_timeout: float = 30.0  # a receiver that got nothing new this long has failed
    mosquitto: str = "/usr/sbin/mosquitto"
    mosquitto_sub: str = "mosquitto_sub"


def _sub_args(cfg: Config, port: int, client_id: str, qos: int) -> list[str]:
    host = ["-h", "127.0.0.1", "-p", str(port)]
    return [cfg.mosquitto_sub, *host, "-i", client_id, "-q", str(qos), "-t", TOPIC_FILTER]


def create_session(cfg: Config, port: int, client_id: str) -> None:
    """A persistent session subscribed at QoS 1, then offline (`-c`, `-E`: exit on SUBACK)."""
    subprocess.run([*_sub_args(cfg, port, client_id, 1), "-c", "-E"], check=True, timeout=10)


def delete_session(cfg: Config, port: int, client_id: str) -> None:
    """A clean-session connect with the same id discards the session and its queue."""
    subprocess.run(
        [*_sub_args(cfg, port, client_id, 0), "-E"],
        check=False,
        timeout=10,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(what: str, ready: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll `ready()` until true; the perf_counter when it was; TimeoutError after `timeout`."""
    deadline = time.perf_counter() + timeout
    while not ready():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
    return time.perf_counter()


# ---------------------------------------------------------------- the receivers


def drain_mosquitto_sub(cfg: Config, port: int, client_id: str, workdir: Path) -> dict[str, Any]:
    """From process start until it exits after N messages (`-C N`), one line each."""
    out_path = workdir / "mosquitto_sub.txt"
    args = [*_sub_args(cfg, port, client_id, 1), "-c", "-C", str(cfg.readings)]
    with out_path.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=max(cfg.idle_timeout, cfg.readings / 2000))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        seconds = time.perf_counter() - start
    with out_path.open("rb") as f:
        received = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    rate = received / seconds if seconds > 0 else 0.0
    progress(f"  mosquitto_sub {received} msgs in {seconds:.3f} s = {rate:.0f} msgs/s")
    return {"received": received, "seconds": round(seconds, 3), "msgs_per_s": round(rate, 1)}


def _watch_drain(sd: SensordRun, poller: MetricsPoller, cfg: Config) -> None:
    """Until the poller saw the whole backlog; fail on an exit or a stall.

    During a storm /metrics may not answer for many seconds (that is measured), so
    progress is either a higher readings count or CPU time burnt by sensord; a hard
    deadline bounds the rest.
    """
    started = time.perf_counter()
    deadline = started + cfg.readings / 200 + 120
    last = (-1.0, -1.0)
    last_change = started
    while not poller.finished:
        time.sleep(0.2)
        code = sd.exited()
        if code is not None:
            raise RuntimeError(f"sensord exited with {code} during the drain: {sd.stderr_tail()}")
        now = time.perf_counter()
        seen = (poller.latest.readings, round(sd.cpu_seconds(), 1))
        if seen != last:
            last, last_change = seen, now
        elif now - last_change > cfg.idle_timeout or now > deadline:
            msg = f"sensord stalled at {seen[0]:.0f}/{cfg.readings} readings"
            raise RuntimeError(f"{msg} (no progress, no CPU for {cfg.idle_timeout:g} s)")


def _wait_outbox_empty(sd: SensordRun, idle_timeout: float) -> float:
    """The perf_counter when `sensord_outbox_pending` was 0; fails only if it stops falling."""
    best, best_at = float("inf"), time.perf_counter()
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            pending = sd.scrape().outbox_pending
            if pending == 0:
                return time.perf_counter()
            if pending < best:
                best, best_at = pending, time.perf_counter()
        if time.perf_counter() - best_at > idle_timeout:
            raise TimeoutError(f"outbox stuck at {best:.0f} events for {idle_timeout:g} s")
        time.sleep(0.1)


def drain_sensord(sd: SensordRun, cfg: Config, shape: Shape) -> dict[str, Any]:
    exp = expected(shape, cfg.readings, cfg.sensors)
    counter = sd.counter
    assert counter is not None, "declare_counter() first"
    poller = MetricsPoller(sd.http_port, cfg.readings)
    sd.start()
    poller.start()
    try:
        _watch_drain(sd, poller, cfg)
    finally:
        poller.stop()
    assert poller.done_at is not None
    drain = poller.done_at - sd.started_at
    # the events of the last readings may still be in the outbox: wait until it is empty,
    # then until the benchmark's own queue holds every one of them
    outbox_empty_at = _wait_outbox_empty(sd, cfg.idle_timeout)
    final = sd.scrape()
    transitions = round(final.transitions)
    with contextlib.suppress(TimeoutError):  # a shortfall is reported by the check below
        _wait_for("events on RabbitMQ", lambda: counter.count() >= transitions, 30, 0.2)
    on_rabbitmq = counter.count()
    exit_code = sd.stop()
    state = sd.state_counts()
    checks = {
        "every_reading_arrived": final.readings == cfg.readings,
        "no_refused_or_duplicate": final.invalid == 0 and final.duplicates == 0,
        "transitions_as_expected": transitions == exp.transitions,
        "every_transition_on_rabbitmq": on_rabbitmq == transitions,
        "outbox_empty_in_state_file": state["outbox_rows"] == 0,
        "active_alerts_in_state_file": state["active_alerts"]
        == round(final.firing - final.resolved)
        == exp.firing_at_end,
        "nothing_dropped": final.alerts_dropped == 0,
        "clean_exit": exit_code == 0,
    }
    rate = cfg.readings / drain
    progress(
        f"  sensord {cfg.readings} readings in {drain:.3f} s = {rate:.0f}/s, "
        f"{transitions} transitions = {transitions / drain:.0f}/s, "
        f"/metrics p99 {poller.summary().get('p99_ms')} ms max {poller.summary().get('max_ms')} ms"
    )
    return {
        "readings": round(final.readings),
        "seconds": round(drain, 3),
        "readings_per_s": round(rate, 1),
        "drain_end_uncertainty_s": round(poller.done_took, 3),
        "startup_s": round((poller.up_at or poller.done_at) - sd.started_at, 3),
        "first_reading_s": round((poller.first_reading_at or poller.done_at) - sd.started_at, 3),
        "transitions": transitions,
        "transitions_expected": exp.transitions,
        "transition_fraction": round(transitions / cfg.readings, 4),
        "transitions_per_s": round(transitions / drain, 1),
        "outbox_empty_s": round(outbox_empty_at - sd.started_at, 3),
        # to RabbitMQ: from sensord's start until its outbox was empty
        "transitions_published_per_s": round(transitions / (outbox_empty_at - sd.started_at), 1),
        "on_rabbitmq": on_rabbitmq,
        "notified_by_file_channel": sd.notified(),
        "state_file": state,
        "metrics_during_drain": poller.summary(),
        "peak_rss_mib": sd.peak_rss_mib,
        "checks": checks,
        "verified": all(checks.values()),
    }


# ---------------------------------------------------------------- one measurement


def measure(
    cfg: Config, broker: PrivateMosquitto, shape: Shape, order: Sequence[str]
) -> dict[str, Any]:
    """Sessions, backlog, both receivers in `order`; everything it made is removed."""
    with tempfile.TemporaryDirectory(prefix="sensord-bench-product-") as tmp:
        sd = SensordRun(Path(tmp), broker.port)
        sub_id = f"{sd.prefix}-sub"
        try:
            sd.declare_counter()
            create_session(cfg, broker.port, sd.client_id)
            create_session(cfg, broker.port, sub_id)
            pub = publish_backlog(
                broker.port,
                shape=shape,
                readings=cfg.readings,
                sensors=cfg.sensors,
                client_id=f"{sd.prefix}-pub",
            )
            progress(f"  backlog of {pub.readings} published at {pub.rate:.0f} msgs/s")
            out: dict[str, Any] = {"order": list(order), "publisher_msgs_per_s": round(pub.rate)}
            for receiver in order:
                if receiver == "sensord":
                    out["sensord"] = drain_sensord(sd, cfg, shape)
                else:
                    out["mosquitto_sub"] = drain_mosquitto_sub(cfg, broker.port, sub_id, Path(tmp))
        finally:
            sd.stop()
            delete_session(cfg, broker.port, sd.client_id)
            delete_session(cfg, broker.port, sub_id)
            sd.cleanup()
    ref = out["mosquitto_sub"]["msgs_per_s"]
    out["ratio"] = round(out["sensord"]["readings_per_s"] / ref, 3) if ref else None
    out["complete"] = (
        out["sensord"]["verified"] and out["mosquitto_sub"]["received"] == cfg.readings
    )
    return out


def _rotate(items: Sequence[Any], by: int) -> list[Any]:
    k = by % len(items)
    return [*items[k:], *items[:k]]


def _median_of(runs: list[dict[str, Any]], *path: str) -> dict[str, Any]:
    values = []
    for r in runs:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            values.append(v)
    return {"median": round(statistics.median(values), 3) if values else None, "values": values}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    worst = [v for r in ok if (v := r["sensord"]["metrics_during_drain"].get("max_ms")) is not None]
    return {
        "ratio": _median_of(ok, "ratio"),
        "sensord_readings_per_s": _median_of(ok, "sensord", "readings_per_s"),
        "mosquitto_sub_msgs_per_s": _median_of(ok, "mosquitto_sub", "msgs_per_s"),
        "transitions_per_s": _median_of(ok, "sensord", "transitions_per_s"),
        "transitions_published_per_s": _median_of(ok, "sensord", "transitions_published_per_s"),
        "transition_fraction": _median_of(ok, "sensord", "transition_fraction"),
        "metrics_p99_ms": _median_of(ok, "sensord", "metrics_during_drain", "p99_ms"),
        "metrics_max_ms": {"max": max(worst, default=None), "values": worst},
        "complete": bool(ok) and len(ok) == len(runs) and all(r["complete"] for r in ok),
        "errors": [r["error"] for r in runs if "error" in r],
        "runs": runs,
    }


def run(cfg: Config) -> dict[str, Any]:
    if shutil.which(cfg.mosquitto_sub) is None:
        raise FileNotFoundError(f"{cfg.mosquitto_sub} not found: install mosquitto-clients")
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: dict[int, dict[Shape, list[dict[str, Any]]]] = {
        w: {s: [] for s in cfg.shapes} for w in cfg.windows
    }
    mosquitto_version = ""
    for run_no in range(cfg.runs):
        for window in _rotate(cfg.windows, run_no):
            with PrivateMosquitto(max_inflight=window, executable=cfg.mosquitto) as broker:
                mosquitto_version = broker.version
                for shape in _rotate(cfg.shapes, run_no):
                    order = _rotate(RECEIVERS, run_no)
                    progress(f"run {run_no + 1}/{cfg.runs} window {window} {shape}: {order}")
                    try:
                        result = measure(cfg, broker, shape, order)
                    except Exception as exc:  # noqa: BLE001 - reported, the other runs go on
                        progress(f"  failed: {exc!r}")
                        result = {"error": f"{exc.__class__.__name__}: {exc}"[:2000]}
                    runs[window][shape].append({"run": run_no + 1, **result})
    results = {f"window_{w}": {s: aggregate(runs[w][s]) for s in cfg.shapes} for w in cfg.windows}
    return {
        "benchmark": "product",
        "scope": SCOPE,
        "readings": cfg.readings,
        "sensors": cfg.sensors,
        "runs": cfg.runs,
        "rule": "above: 80, clear_below: 75 (bench/product_load.py)",
        "channel": "file, send_resolved = true (role all: the notify consumer runs too)",
        "broker": {"mosquitto": mosquitto_version, "max_queued_messages": 0},
        "summary": summary(results),
        "results": results,
        "targets": {"calm_ratio": 0.8, "storm_transitions_per_s": 10_000, "metrics_max_ms": 250},
        "versions": versions(mosquitto_version),
        "host_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def summary(results: dict[str, dict[Shape, dict[str, Any]]]) -> dict[str, Any]:
    """The figures the issue asks for, per window: medians over the runs."""
    out: dict[str, Any] = {}
    for window, shapes in results.items():
        entry: dict[str, Any] = {}
        for shape, agg in shapes.items():
            entry[f"{shape}_ratio"] = agg["ratio"]["median"]
            if shape == "storm":
                entry["storm_transitions_per_s"] = agg["transitions_per_s"]["median"]
                entry["storm_transition_fraction"] = agg["transition_fraction"]["median"]
                entry["storm_transitions_published_per_s"] = agg["transitions_published_per_s"][
                    "median"
                ]
            entry[f"{shape}_metrics_p99_ms"] = agg["metrics_p99_ms"]["median"]
            entry[f"{shape}_metrics_max_ms"] = agg["metrics_max_ms"]["max"]
            entry[f"{shape}_complete"] = agg["complete"]
        out[window] = entry
    return out


def versions(mosquitto_version: str) -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "sensord": dist("sensord"),
        "paho_mqtt": dist("paho-mqtt"),
        "aio_pika": dist("aio-pika"),
        "faststream": dist("faststream"),
        "mosquitto": mosquitto_version,
        "rabbitmq": rabbitmq_version(),
    }


# ---------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _windows(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {text!r}") from None
    if not values or any(not 1 <= v <= 65_535 for v in values):
        raise argparse.ArgumentTypeError("each window must be within 1..65535")
    return values


def _shapes(text: str) -> tuple[Shape, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in SHAPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"shapes among {', '.join(SHAPES)}, got {text!r}")
    return tuple(n for n in SHAPES if n in names)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    d = Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench.product",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--readings", type=_positive, default=d.readings)
    parser.add_argument("--sensors", type=_positive, default=d.sensors)
    parser.add_argument("--runs", type=_positive, default=d.runs)
    parser.add_argument(
        "--windows",
        type=_windows,
        default=d.windows,
        help="Mosquitto max_inflight_messages values, comma-separated (20 is the stock value)",
    )
    parser.add_argument("--shapes", type=_shapes, default=d.shapes, help="calm,storm")
    parser.add_argument("--idle-timeout", type=float, default=d.idle_timeout)
    parser.add_argument("--mosquitto", default=d.mosquitto)
    parser.add_argument("--mosquitto-sub", default=d.mosquitto_sub)
    a = parser.parse_args(argv)
    return Config(
        readings=a.readings,
        sensors=a.sensors,
        runs=a.runs,
        windows=a.windows,
        shapes=a.shapes,
        idle_timeout=a.idle_timeout,
        mosquitto=a.mosquitto,
        mosquitto_sub=a.mosquitto_sub,
    )


def run_to_json(run: Callable[[], dict[str, Any]]) -> int:
    """A product benchmark's entry point: `run()`'s JSON on stdout; Ctrl-C exits 130.

    SIGTERM unwinds like Ctrl-C: the `finally` blocks stop sensord and the broker and
    delete the run's queues, exchange and temp dir."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        result = run()
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    print(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_to_json(lambda: run(cfg))


if __name__ == "__main__":
    sys.exit(main())
