"""``sensord-sim``: publish simulated temperature readings to an MQTT broker."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TextIO

from simulators.fleet import (
    HEATWAVE_CYCLE_S,
    HEATWAVE_DEVICES,
    HEATWAVE_HOT_FROM_S,
    HEATWAVE_HOT_UNTIL_S,
    HEATWAVE_SITE,
    Fleet,
    Scenario,
)
from simulators.publisher import (
    MAX_INFLIGHT_LIMIT,
    BrokerUnavailableError,
    BrokerUrlError,
    MqttPublisher,
    parse_broker_url,
)
from simulators.runner import Progress, StopFlag, Summary, run

PROG = "sensord-sim"


def _number(
    kind: type[int] | type[float], *, low: float, high: float | None = None
) -> Callable[[str], int | float]:
    """An argparse ``type`` accepting a finite number of ``kind`` within [low, high]."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            msg = f"not a valid {kind.__name__}: {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if not (math.isfinite(value) and low <= value and (high is None or value <= high)):
            bounds = f">= {low:g}" if high is None else f"within {low:g}..{high:g}"
            msg = f"must be {bounds}, got {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests and docs can inspect it)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Publish simulated temperature readings to MQTT for sensord.",
    )
    p.add_argument(
        "--mqtt",
        default="mqtt://127.0.0.1:1883",
        help="broker URL mqtt://[user:pass@]host[:port] (default: %(default)s)",
    )
    p.add_argument(
        "--topic-root", default="sensors", help="first topic level (default: %(default)s)"
    )
    p.add_argument(
        "--sites",
        type=_number(int, low=1),
        default=1,
        help="sites plant-1..plant-N (default: %(default)s)",
    )
    p.add_argument(
        "--sensors",
        type=_number(int, low=1),
        default=5,
        help="devices t-1..t-N per site (default: %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=_number(float, low=1e-6, high=1e9),
        default=1.0,
        help="readings per second per sensor (default: %(default)s)",
    )
    p.add_argument(
        "--duration",
        type=_number(float, low=0),
        default=0.0,
        help="seconds to run; 0 = until Ctrl-C/SIGTERM or --count (default: 0)",
    )
    p.add_argument(
        "--count",
        type=_number(int, low=0),
        default=0,
        help="total messages; 0 = no limit (default: 0)",
    )
    p.add_argument(
        "--scenario",
        choices=[s.value for s in Scenario],
        default=Scenario.NONE.value,
        help=f"heatwave: {HEATWAVE_SITE} {'/'.join(HEATWAVE_DEVICES)} run hot from "
        f"{HEATWAVE_HOT_FROM_S:g} s to {HEATWAVE_HOT_UNTIL_S:g} s of every "
        f"{HEATWAVE_CYCLE_S:g} s cycle (default: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same value series (default: 0)")
    p.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="MQTT QoS (default: 1)")
    p.add_argument("--client-id", default=None, help="MQTT client id (default: sensord-sim-<pid>)")
    p.add_argument(
        "--max-inflight",
        type=_number(int, low=1, high=MAX_INFLIGHT_LIMIT),
        default=1000,
        help="unconfirmed publishes allowed before waiting for acks (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line and no summary line")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return p


class ProgressLine:
    """A status line redrawn in place with ``\\r`` on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._drawn = False

    def draw(self, p: Progress) -> None:
        """Redraw the line from one snapshot."""
        parts = [
            f"sent {p.sent:,}",
            f"{p.rate:,.0f} msg/s",
            f"in-flight {p.in_flight:,}",
            f"errors {p.errors:,}",
            f"elapsed {p.elapsed_s:.1f} s",
        ]
        if p.remaining_s is not None:
            parts.append(f"remaining {p.remaining_s:.1f} s")
        if not p.connected:
            parts.append("RECONNECTING")
        self._stream.write("\r" + "  ".join(parts) + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the line so that the summary starts on a clean one."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def _summary_line(s: Summary) -> str:
    return (
        f"{PROG}: sent {s.sent:,} readings at QoS {s.qos} in {s.elapsed_s:.2f} s "
        f"({s.rate:,.0f} msg/s), {s.errors:,} errors"
    )


def _heatwave_note(fleet: Fleet) -> str:
    hot = ", ".join(f"{s.site}/{s.device}" for s in fleet.sensors if s.heatwave)
    return (
        f"heatwave: {hot} run hot from {HEATWAVE_HOT_FROM_S:g} s to {HEATWAVE_HOT_UNTIL_S:g} s "
        f"of every {HEATWAVE_CYCLE_S:g} s cycle, counted from now"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sensord-sim``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        url = parse_broker_url(args.mqtt)
    except BrokerUrlError as exc:
        parser.error(str(exc))  # exits 2, like every other usage error
    topic_root = args.topic_root.strip("/")
    if not topic_root or any(c in topic_root for c in "+#\0"):
        parser.error(f"--topic-root {args.topic_root!r}: must be non-empty, without + # or NUL")

    fleet = Fleet(
        sites=args.sites,
        sensors=args.sensors,
        rate=args.rate,
        seed=args.seed,
        scenario=Scenario(args.scenario),
        topic_root=topic_root,
    )
    stop = StopFlag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.request()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with MqttPublisher(
            url,
            client_id=args.client_id or f"{PROG}-{os.getpid()}",
            qos=args.qos,
            max_inflight=args.max_inflight,
        ) as publisher:
            try:
                publisher.connect(cancelled=lambda: stop.requested)
            except BrokerUnavailableError as exc:
                print(f"{PROG}: {exc}", file=sys.stderr)
                return 1
            if not args.quiet and any(sensor.heatwave for sensor in fleet.sensors):
                print(f"{PROG}: {_heatwave_note(fleet)}", file=sys.stderr)
            line = ProgressLine(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
            try:
                summary = run(
                    fleet,
                    publisher,
                    stop=stop,
                    count=args.count,
                    duration_s=args.duration,
                    on_progress=line.draw if line is not None else None,
                )
            finally:
                if line is not None:
                    line.clear()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if not args.quiet:
        print(_summary_line(summary), file=sys.stderr)
    if args.json:
        print(summary.to_json(), flush=True)
    return 0
