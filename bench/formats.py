"""Readings/s per payload format through the whole `sensord run` (issue 17's "Bench").

`python -m bench.formats [--messages 20000] [--devices 1000] [--runs 1] [--formats a,b]
[--window 20]` prints one JSON object (progress on stderr).

For the native format `sensord` and each format of `simulators.devices` (zigbee2mqtt,
tasmota, shelly, esphome, homeassistant, sparkplug, senml, influx), each run, on a private
Mosquitto of its own (`max_inflight_messages` = `--window`, 20 being the stock value):
1. **learn run**: `sensord run` with one `[[mqtt.sources]]` table of that format (the
   native one: `[mqtt] topics`) connects, which makes its persistent session and its
   subscriptions; every device's birth is published while it is up (a discovery format
   learns its state topics from them and subscribes: those subscriptions are in the
   session from now on); then SIGTERM;
2. a `mosquitto_sub -c` reference session subscribes to `#` at QoS 1 and goes offline;
3. **the backlog**, queued for both sessions: every device's birth again (devices that come
   up while sensord is down announce themselves again; a discovery format and Sparkplug
   need them ahead of the data after sensord's restart, since sensord keeps nothing of
   them across one), then `--messages` state messages from `--devices` devices, calm;
4. **the timed run**: `sensord run` again, timed from its process start, and separately
   from the first reading, until `sensord_readings_total{source}` reaches the expected
   count (`bench/formats_load.py`: the backlog through sensord's own decoder, in this
   process); then the checks: every message arrived, nothing refused, late or
   duplicate, clean exit;
5. the reference: `mosquitto_sub -q 1 -c -C N` drains the same backlog from the same broker.
The receivers' order and the formats' order rotate per run. Reported per format:
messages/s, readings/s, readings per message, the ratio of readings/s to the native
format's in the same run and of messages/s to mosquitto_sub's on the same backlog.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.broker import PrivateMosquitto
from bench.formats_load import NATIVE, SITE, Backlog, Expected, build, names, packets, replay
from bench.load import RawPublisher
from bench.product import _median_of, _positive, _rotate, run_to_json, versions
from bench.product_sensord import MetricsPoller, SensordRun, get_metrics
from sensord.ingest.sources import build_sources
from sensord.ops.config import load_settings

SCOPE = "product: whole sensord run"
RECEIVERS = ("sensord", "mosquitto_sub")
NOTES = [
    "messages = the backlog's births (every device's birth() again) + its state messages;"
    " rates count both, timed from sensord's process start (start-up and connect included)"
    " and, separately, from the first /metrics answer that showed a reading",
    "every message is published at QoS 1 and not retained: Mosquitto queues no QoS 0"
    " message for an offline session, and a retained one would be sent again on each"
    " SUBSCRIBE",
    "a learn run before the backlog: sensord connects, gets the births live, subscribes"
    " (a discovery format: to the state topics its configs name), stops; so its persistent"
    " session holds the subscriptions that queue the backlog",
    "the backlog repeats the births ahead of the states: after a restart sensord knows no"
    " discovery config and no Sparkplug birth until they arrive again, and a queued state"
    " message arrives before any retained config would (retained messages come after"
    " SUBSCRIBE)",
    "expected readings: the backlog through a fresh instance of the source's decoder in"
    " the benchmark process, then the duplicate guard of docs/sources.md",
    "ratio_to_native: the format's readings/s / the native format's in the same run;"
    " ratio_to_mosquitto_sub: sensord's messages/s / mosquitto_sub's on the same backlog",
]

_SERIES = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([-+0-9.eEinfaN]+)$", re.MULTILINE)


def progress(text: str) -> None:
    print(f"[bench.formats] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Config:
    messages: int = 20_000
    devices: int = 1000
    runs: int = 1
    formats: tuple[str, ...] = ()  # empty: all
    window: int = 20  # Mosquitto's stock max_inflight_messages
    idle_timeout: float = 20.0  # no new reading this long (while /metrics answers): failed
    mosquitto: str = "/usr/sbin/mosquitto"
    mosquitto_sub: str = "mosquitto_sub"

    @property
    def chosen(self) -> tuple[str, ...]:
        return self.formats or names()


def series(text: str) -> dict[str, float]:
    """Each series of a /metrics text summed over its labels; `name{reason}` kept apart
    for the skipped fields."""
    out: dict[str, float] = {}
    for name, labels, number in _SERIES.findall(text):
        out[name] = out.get(name, 0.0) + float(number)
        if name == "sensord_fields_skipped_total":
            m = re.search(r'reason="([^"]*)"', labels)
            key = f"skipped.{m.group(1) if m else ''}"
            out[key] = out.get(key, 0.0) + float(number)
    return out


def scrape(sd: SensordRun) -> dict[str, float]:
    return series(get_metrics(sd.http_port))


def _wait(what: str, ready: Any, timeout: float, interval: float = 0.1) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def _publish(port: int, client_id: str, msgs: Sequence[tuple[str, bytes, int, bool]]) -> float:
    """QoS 1, every PUBACK awaited; msgs/s."""
    if not msgs:
        return 0.0
    pub = RawPublisher(port, client_id)
    try:
        start = time.perf_counter()
        pub.publish_qos1(packets(msgs), 1000)
        seconds = time.perf_counter() - start
    finally:
        pub.close()
    return len(msgs) / seconds if seconds > 0 else 0.0


# ---------------------------------------------------------------- the phases


def source_toml(fmt: str) -> tuple[str, str]:
    """(more `[mqtt]` lines, appended TOML) for a source of `fmt`."""
    if fmt == NATIVE:
        return "", ""  # [mqtt] topics and topic_template at their defaults
    return "topics = []\n", f'[[mqtt.sources]]\nformat = "{fmt}"\nsite = "{SITE}"\n'


def learn(sd: SensordRun, port: int, backlog: Backlog, cfg: Config) -> None:
    """Connect (session and subscriptions), take the births live, stop."""
    sd.start()
    _wait("sensord connected", lambda: scrape(sd).get("sensord_mqtt_connected") == 1, 30)
    _publish(port, f"{sd.prefix}-birth", backlog.births)
    if backlog.births:
        _settle(sd, 60)
    code = sd.stop()
    if code != 0:
        raise RuntimeError(f"the learn run exited with {code}: {sd.stderr_tail()}")


def _settle(sd: SensordRun, timeout: float, quiet: float = 1.0) -> None:
    """Until sensord has read something and its message count stood still `quiet` s: not
    every birth is on a topic it subscribes to (Tasmota's INFO1), and a discovery format's
    availability topics are subscribed only once their configs are read."""
    deadline = time.perf_counter() + timeout
    last, since = -1.0, time.perf_counter()
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            count = scrape(sd).get("sensord_mqtt_messages_total", 0.0)
            if count != last:
                last, since = count, time.perf_counter()
            elif count > 0 and time.perf_counter() - since >= quiet:
                return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"births: sensord still reading after {timeout:g} s")
        time.sleep(0.1)


def _watch(sd: SensordRun, poller: MetricsPoller, cfg: Config, messages: int) -> None:
    started = time.perf_counter()
    deadline = started + messages / 200 + 120
    last, last_change = -1.0, started
    while not poller.finished:
        time.sleep(0.2)
        code = sd.exited()
        if code is not None:
            raise RuntimeError(f"sensord exited with {code} during the drain: {sd.stderr_tail()}")
        now = time.perf_counter()
        if poller.latest.readings != last:
            last, last_change = poller.latest.readings, now
        # stalled: /metrics answers (so the loop runs) but the count has stopped
        answering = now - poller.latest_at < 2.0
        if (answering and now - last_change > cfg.idle_timeout) or now > deadline:
            msg = f"sensord stalled at {last:.0f}/{poller.target} readings"
            raise RuntimeError(f"{msg} for {cfg.idle_timeout:g} s")


def drain_sensord(sd: SensordRun, backlog: Backlog, exp: Expected, cfg: Config) -> dict[str, Any]:
    poller = MetricsPoller(sd.http_port, exp.readings)
    messages = exp.messages
    sd.start()
    poller.start()
    try:
        _watch(sd, poller, cfg, messages)
    finally:
        poller.stop()
    assert poller.done_at is not None
    seconds = poller.done_at - sd.started_at
    first = poller.first_reading_at or poller.done_at
    from_first = poller.done_at - first
    final = scrape(sd)
    exit_code = sd.stop()
    readings = round(final.get("sensord_readings_total", 0))
    received = round(final.get("sensord_mqtt_messages_total", 0))
    refused = round(final.get("sensord_readings_invalid_total", 0))
    late = round(final.get("sensord_readings_late_total", 0))
    duplicates = round(final.get("sensord_readings_duplicate_total", 0))
    checks = {
        "readings_as_expected": readings == exp.readings,
        "every_message_arrived": received == messages,
        "none_refused": refused == 0 == exp.refused,
        # as the replay found: 0 for each of today's loads
        "late_and_duplicates_as_expected": late == exp.late and duplicates == exp.duplicates,
        "clean_exit": exit_code == 0,
    }
    rate = readings / seconds
    progress(
        f"  sensord {readings} readings / {received} msgs in {seconds:.3f} s = {rate:.0f} "
        f"readings/s ({from_first:.3f} s from the first reading)"
    )
    skipped = {k.split(".", 1)[1]: round(v) for k, v in final.items() if k.startswith("skipped.")}
    return {
        "readings": readings,
        "messages": received,
        "seconds": round(seconds, 3),
        "readings_per_s": round(rate, 1),
        "messages_per_s": round(received / seconds, 1),
        "startup_s": round((poller.up_at or poller.done_at) - sd.started_at, 3),
        "first_reading_s": round(first - sd.started_at, 3),
        "from_first_reading": {
            "seconds": round(from_first, 3),
            "readings_per_s": round(readings / from_first, 1) if from_first > 0 else None,
            "messages_per_s": round(received / from_first, 1) if from_first > 0 else None,
        },
        "drain_end_uncertainty_s": round(poller.done_took, 3),
        "refused": refused,
        "late": late,
        "duplicates": duplicates,
        "fields_skipped": skipped,
        "peak_rss_mib": sd.peak_rss_mib,
        "metrics_during_drain": poller.summary(),
        "checks": checks,
        "verified": all(checks.values()),
    }


def drain_mosquitto_sub(
    cfg: Config, port: int, client_id: str, exp: Expected, workdir: Path
) -> dict[str, Any]:
    """From process start until it exits after the messages sensord gets; one line (the
    topic) each: payloads may hold newlines (line protocol batches, protobuf)."""
    out_path = workdir / "mosquitto_sub.txt"
    n = exp.messages
    args = [*_sub_args(cfg, port, client_id, 1, exp.filters), "-c", "-C", str(n), "-F", "%t"]
    with out_path.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=max(cfg.idle_timeout, n / 2000))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        seconds = time.perf_counter() - start
    received = out_path.read_bytes().count(b"\n")
    rate = received / seconds if seconds > 0 else 0.0
    progress(f"  mosquitto_sub {received} msgs in {seconds:.3f} s = {rate:.0f} msgs/s")
    return {"received": received, "seconds": round(seconds, 3), "msgs_per_s": round(rate, 1)}


def _sub_args(
    cfg: Config, port: int, client_id: str, qos: int, filters: Sequence[str] = ("#",)
) -> list[str]:
    host = ["-h", "127.0.0.1", "-p", str(port)]
    topics = [arg for f in filters for arg in ("-t", f)]
    return [cfg.mosquitto_sub, *host, "-i", client_id, "-q", str(qos), *topics]


# ---------------------------------------------------------------- one format, one run


def measure(cfg: Config, fmt: str, order: Sequence[str]) -> dict[str, Any]:
    backlog = build(fmt, cfg.devices, cfg.messages)
    with (
        PrivateMosquitto(max_inflight=cfg.window, executable=cfg.mosquitto) as broker,
        tempfile.TemporaryDirectory(prefix="sensord-bench-formats-") as tmp,
    ):
        mqtt_extra, extra = source_toml(fmt)
        sd = SensordRun(Path(tmp), broker.port, mqtt_extra=mqtt_extra, extra=extra)
        sub_id = f"{sd.prefix}-sub"
        settings = load_settings(sd.config, {})
        (source,) = build_sources(settings.mqtt, settings.ingest)
        exp = replay(source, backlog)
        messages = exp.messages
        try:
            learn(sd, broker.port, backlog, cfg)
            subprocess.run(
                [*_sub_args(cfg, broker.port, sub_id, 1, exp.filters), "-c", "-E"],
                check=True,
                timeout=10,
            )
            rate = _publish(broker.port, f"{sd.prefix}-pub", backlog.messages)
            progress(
                f"  backlog: {len(backlog.births)} births + {len(backlog.states)} states "
                f"({backlog.reports} reports), {exp.readings} readings expected, "
                f"published at {rate:.0f} msgs/s"
            )
            out: dict[str, Any] = {"order": list(order), "publisher_msgs_per_s": round(rate)}
            for receiver in order:
                if receiver == "sensord":
                    out["sensord"] = drain_sensord(sd, backlog, exp, cfg)
                else:
                    out["mosquitto_sub"] = drain_mosquitto_sub(
                        cfg, broker.port, sub_id, exp, Path(tmp)
                    )
        finally:
            sd.stop()
            for client_id in (sd.client_id, sub_id):  # a clean-session connect drops it
                subprocess.run(
                    [*_sub_args(cfg, broker.port, client_id, 0), "-E"],
                    check=False,
                    timeout=10,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            sd.cleanup()
    s, ref = out["sensord"], out["mosquitto_sub"]
    out.update(
        {
            "messages": messages,
            "published": len(backlog.births) + len(backlog.states),
            "birth_messages": len(backlog.births),
            "state_messages": len(backlog.states),
            "reports": backlog.reports,
            "values_per_report": round(backlog.values_in_reports / backlog.reports, 2),
            "expected": {
                "readings": exp.readings,
                "from_births": exp.births_readings,
                "from_states": exp.states_readings,
                "late": exp.late,
                "duplicates": exp.duplicates,
            },
            "readings_per_message": round(s["readings"] / messages, 3),
            "readings_per_state_message": round(exp.states_readings / len(backlog.states), 3),
            "ratio_to_mosquitto_sub": (
                round(s["messages_per_s"] / ref["msgs_per_s"], 3) if ref["msgs_per_s"] else None
            ),
            "complete": s["verified"] and ref["received"] == messages,
        }
    )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(cfg: Config) -> dict[str, Any]:
    if shutil.which(cfg.mosquitto_sub) is None:
        raise FileNotFoundError(f"{cfg.mosquitto_sub} not found: install mosquitto-clients")
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, list[dict[str, Any]]] = {f: [] for f in cfg.chosen}
    for run_no in range(cfg.runs):
        this_run: dict[str, dict[str, Any]] = {}
        for fmt in _rotate(cfg.chosen, run_no):
            order = _rotate(RECEIVERS, run_no)
            progress(f"run {run_no + 1}/{cfg.runs} {fmt}: {order}")
            try:
                result = measure(cfg, fmt, order)
            except Exception as exc:  # noqa: BLE001 - reported, the other formats go on
                progress(f"  failed: {exc!r}")
                result = {"error": f"{exc.__class__.__name__}: {exc}"[:2000]}
            this_run[fmt] = {"run": run_no + 1, **result}
        native = this_run.get(NATIVE, {}).get("sensord", {})
        native_first = native.get("from_first_reading", {}).get("readings_per_s")
        for fmt, result in this_run.items():
            if "error" not in result:
                s = result["sensord"]
                result["ratio_to_native"] = _ratio(
                    s["readings_per_s"], native.get("readings_per_s")
                )
                # start-up weighs less in a longer drain: this one leaves it out
                result["ratio_to_native_from_first_reading"] = _ratio(
                    s["from_first_reading"]["readings_per_s"], native_first
                )
            runs[fmt].append(result)
    results = {fmt: aggregate(rs) for fmt, rs in runs.items()}
    mosquitto_version = ""
    with contextlib.suppress(Exception), PrivateMosquitto(max_inflight=cfg.window) as b:
        mosquitto_version = b.version
    return {
        "benchmark": "formats",
        "scope": SCOPE,
        "messages": cfg.messages,
        "devices": cfg.devices,
        "runs": cfg.runs,
        "formats": list(cfg.chosen),
        "broker": {"max_inflight_messages": cfg.window, "max_queued_messages": 0},
        "summary": {fmt: summary(agg) for fmt, agg in results.items()},
        "results": results,
        "notes": NOTES,
        "versions": versions(mosquitto_version),
        "host_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    return {
        "readings_per_s": _median_of(ok, "sensord", "readings_per_s"),
        "messages_per_s": _median_of(ok, "sensord", "messages_per_s"),
        "readings_per_s_from_first_reading": _median_of(
            ok, "sensord", "from_first_reading", "readings_per_s"
        ),
        "readings_per_message": _median_of(ok, "readings_per_message"),
        "ratio_to_native": _median_of(ok, "ratio_to_native"),
        "ratio_to_native_from_first_reading": _median_of(ok, "ratio_to_native_from_first_reading"),
        "mosquitto_sub_msgs_per_s": _median_of(ok, "mosquitto_sub", "msgs_per_s"),
        "ratio_to_mosquitto_sub": _median_of(ok, "ratio_to_mosquitto_sub"),
        "complete": bool(ok) and len(ok) == len(runs) and all(r["complete"] for r in ok),
        "errors": [r["error"] for r in runs if "error" in r],
        "runs": runs,
    }


def summary(agg: dict[str, Any]) -> dict[str, Any]:
    first = agg["runs"][0] if agg["runs"] and "error" not in agg["runs"][0] else {}
    return {
        "readings_per_s": agg["readings_per_s"]["median"],
        "messages_per_s": agg["messages_per_s"]["median"],
        "readings_per_message": agg["readings_per_message"]["median"],
        "readings_per_state_message": first.get("readings_per_state_message"),
        "ratio_to_native": agg["ratio_to_native"]["median"],
        "mosquitto_sub_msgs_per_s": agg["mosquitto_sub_msgs_per_s"]["median"],
        "ratio_to_mosquitto_sub": agg["ratio_to_mosquitto_sub"]["median"],
        "readings_per_s_from_first_reading": agg["readings_per_s_from_first_reading"]["median"],
        "ratio_to_native_from_first_reading": agg["ratio_to_native_from_first_reading"]["median"],
        "complete": agg["complete"],
    }


# ---------------------------------------------------------------- command line


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in chosen if n not in names()]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"formats among {', '.join(names())}, got {text!r}")
    return tuple(n for n in names() if n in chosen)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    d = Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench.formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=_positive, default=d.messages, help="state messages")
    parser.add_argument("--devices", type=_positive, default=d.devices)
    parser.add_argument("--runs", type=_positive, default=d.runs, help="figures: the median")
    parser.add_argument(
        "--formats", type=_formats, default=d.formats, help=f"default all: {','.join(names())}"
    )
    parser.add_argument(
        "--window",
        type=_positive,
        default=d.window,
        help="Mosquitto max_inflight_messages (20 is the stock value)",
    )
    parser.add_argument("--idle-timeout", type=float, default=d.idle_timeout)
    parser.add_argument("--mosquitto", default=d.mosquitto)
    parser.add_argument("--mosquitto-sub", default=d.mosquitto_sub)
    a = parser.parse_args(argv)
    return Config(
        messages=a.messages,
        devices=a.devices,
        runs=a.runs,
        formats=a.formats,
        window=a.window,
        idle_timeout=a.idle_timeout,
        mosquitto=a.mosquitto,
        mosquitto_sub=a.mosquitto_sub,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_to_json(lambda: run(cfg))


if __name__ == "__main__":
    sys.exit(main())
