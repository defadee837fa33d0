"""``sensord-sim``: publish simulated sensor readings to an MQTT broker."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from simulators import devices, ecosystem
from simulators.broker import (
    BrokerUnavailableError,
    BrokerUrl,
    BrokerUrlError,
    parse_broker_url,
    tls_context,
    with_password_file,
)
from simulators.faults import FaultRates, parse_fault
from simulators.launch import RunConfig, run_here, run_parallel
from simulators.payloads import Format
from simulators.physics import KINDS
from simulators.runner import Progress, StopFlag, Summary, stop_on_signals
from simulators.scenario import FAULT_KINDS, ScenarioError, builtin_names, load_scenario
from simulators.wire import MAX_INFLIGHT_LIMIT

PROG = "sensord-sim"


def number(
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


def _fault(text: str) -> tuple[str, float]:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        msg = f"unknown kind {unknown[0] if unknown else text!r}; known: {','.join(KINDS)}"
        raise argparse.ArgumentTypeError(msg)
    return kinds


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """``--mqtt`` and its TLS/credential files (shared with record and replay)."""
    p.add_argument(
        "--mqtt",
        default="mqtt://127.0.0.1:1883",
        help="broker URL mqtt[s]://[user[:pass]@]host[:port] (default: %(default)s)",
    )
    p.add_argument("--ca-file", help="CA certificates (PEM) that signed the broker's (mqtts://)")
    p.add_argument("--cert-file", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key-file", help="private key (PEM) of --cert-file")
    p.add_argument(
        "--password-file", help="read the password from this file (user name in the URL)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests and docs can inspect it)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Publish simulated sensor readings to MQTT for sensord. "
        f"Also: '{PROG} record --help' (capture MQTT traffic to a trace file) and "
        f"'{PROG} replay --help' (publish a trace again, its spacing scaled).",
    )
    add_connection_options(p)
    p.add_argument(
        "--topic-root",
        default=None,
        help="first topic level (default: sensors); with an ecosystem --format, a prefix "
        "put before the firmware's own topics (default: none), e.g. to isolate a test",
    )
    p.add_argument(
        "--sites",
        type=number(int, low=1),
        default=1,
        help="sites plant-1..plant-N (default: %(default)s)",
    )
    p.add_argument(
        "--sensors",
        type=number(int, low=1),
        default=5,
        help="devices per site and kind, e.g. t-1..t-N (default: %(default)s)",
    )
    p.add_argument(
        "--kinds",
        type=_kinds,
        default=("temperature",),
        help=f"comma-separated kinds among {','.join(KINDS)}; devices are named "
        + ", ".join(f"{s.prefix}-N" for s in KINDS.values())
        + " (default: temperature)",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--rate",
        type=number(float, low=1e-6, high=1e9),
        default=None,
        help="readings per second per sensor (default: 1)",
    )
    rate.add_argument(
        "--total-rate",
        type=number(float, low=1e-6, high=1e9),
        default=None,
        help="readings per second for the whole fleet, spread evenly over its sensors",
    )
    p.add_argument(
        "--duration",
        type=number(float, low=0),
        default=0.0,
        help="seconds to run; 0 = until Ctrl-C/SIGTERM or --count (default: 0)",
    )
    p.add_argument(
        "--count",
        type=number(int, low=0),
        default=0,
        help="total messages; 0 = no limit (default: 0)",
    )
    p.add_argument(
        "--scenario",
        default="none",
        metavar="NAME|FILE.yaml",
        help=f"a timeline of events: builtin {', '.join(builtin_names())}, or a YAML file "
        "(see docs/simulator.md) (default: none)",
    )
    p.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"inject a fault with a probability per reading; KIND among {', '.join(FAULT_KINDS)}"
        " (repeatable)",
    )
    native = [f.value for f in Format]
    ecosystems = [name for name in devices.names() if name not in native]
    p.add_argument(
        "--format",
        choices=native + ecosystems,
        default=Format.JSON.value,
        help="payload: JSON object, bare number or SenML pack on --topic-root; or devices of "
        f"an ecosystem ({', '.join(ecosystems)}) publishing as their firmware does, each "
        "with one sensor per --kinds kind, --sensors devices per site "
        "(docs/simulator.md) (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same series (default: 0)")
    p.add_argument(
        "--start-time",
        type=number(float, low=0),
        default=None,
        metavar="EPOCH_S",
        help="timestamp of the first reading, epoch seconds (default: now); with the same "
        "seed, the same messages byte for byte",
    )
    p.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="MQTT QoS (default: 1)")
    p.add_argument("--client-id", default=None, help="MQTT client id (default: sensord-sim-<pid>)")
    p.add_argument(
        "--max-inflight",
        type=number(int, low=1, high=MAX_INFLIGHT_LIMIT),
        default=1000,
        help="unconfirmed publishes allowed before waiting for acks (default: %(default)s)",
    )
    p.add_argument(
        "--processes",
        type=number(int, low=1, high=256),
        default=1,
        help="publish from N processes, each a slice of the fleet on its own connection "
        "(default: %(default)s)",
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


def summary_line(s: Summary) -> str:
    line = (
        f"{PROG}: sent {s.sent:,} messages at QoS {s.qos} in {s.elapsed_s:.2f} s "
        f"({s.rate:,.0f} msg/s), {s.errors:,} errors"
    )
    faults = {k: v for k, v in s.faults.items() if ":" not in k}
    if faults:
        line += "; faults: " + ", ".join(f"{k} {v:,}" for k, v in sorted(faults.items()))
    return line


def connection_url(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BrokerUrl:
    """The broker URL with its password file applied and TLS files checked (exit 2 if bad)."""
    try:
        url = parse_broker_url(args.mqtt)
        if args.password_file:
            url = with_password_file(url, args.password_file)
        tls_context(url, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    except BrokerUrlError as exc:
        parser.error(str(exc))  # exits 2, like every other usage error
    return url


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    url = connection_url(args, parser)
    topic_root = (args.topic_root or "sensors").strip("/")
    if not topic_root or any(c in topic_root for c in "+#\0"):
        parser.error(f"--topic-root {args.topic_root!r}: must be non-empty, without + # or NUL")
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        parser.error(f"--scenario: {exc}")
    fleet_size = args.sites * args.sensors * len(args.kinds)
    if args.processes > fleet_size:
        parser.error(f"--processes {args.processes}: more than the {fleet_size} sensors")
    rate = args.total_rate / fleet_size if args.total_rate is not None else args.rate or 1.0
    start_s = args.start_time if args.start_time is not None else time.time()
    return RunConfig(
        url=url,
        client_id=args.client_id or f"{PROG}-{os.getpid()}",
        qos=args.qos,
        max_inflight=args.max_inflight,
        sites=args.sites,
        sensors=args.sensors,
        kinds=args.kinds,
        rate=rate,
        seed=args.seed,
        scenario=scenario,
        topic_root=topic_root,
        fmt=Format(args.format),
        faults=FaultRates.of(dict(args.fault)),
        epoch_ms=round(start_s * 1000),
        count=args.count,
        duration_s=args.duration,
        processes=args.processes,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sensord-sim``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("record", "replay"):
        from simulators import trace  # noqa: PLC0415 - only these subcommands need paho

        return trace.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format not in {f.value for f in Format}:
        return _run_ecosystem(args, parser)
    cfg = _config(args, parser)
    stop = StopFlag()
    line = ProgressLine(sys.stderr) if not args.quiet and sys.stderr.isatty() else None

    def on_connected() -> None:
        if not args.quiet and cfg.scenario is not None:
            print(f"{PROG}: {_scenario_note(cfg)}", file=sys.stderr)

    with stop_on_signals(stop):
        try:
            if cfg.processes == 1:
                summary = run_here(
                    cfg,
                    stop,
                    on_connected=on_connected,
                    on_progress=line.draw if line is not None else None,
                )
            else:
                on_connected()
                summary = run_parallel(cfg, stop, on_progress=line.draw if line else None)
        except BrokerUnavailableError as exc:
            if line is not None:
                line.clear()
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        finally:
            if line is not None:
                line.clear()
    if summary is None:  # stopped before connecting
        summary = Summary(sent=0, errors=0, elapsed_s=0.0, rate=0.0, qos=cfg.qos)
    if not args.quiet:
        print(summary_line(summary), file=sys.stderr)
    if args.json:
        print(summary.to_json(), flush=True)
    return 0


def _scenario_note(cfg: RunConfig) -> str:
    assert cfg.scenario is not None
    s = cfg.scenario
    repeat = f", repeating every {s.repeat:g} s" if s.repeat else ""
    return f"scenario {s.name}: {s.description or '(no description)'} (counted from now{repeat})"


def _run_ecosystem(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`--format zigbee2mqtt|tasmota|…`: simulated devices of that ecosystem."""
    url = connection_url(args, parser)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        parser.error(f"--scenario: {exc}")
    if args.fault:
        parser.error("--fault: only with the native formats (json, number, senml)")
    tls = tls_context(url, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    cfg = ecosystem.EcosystemConfig(
        fmt=args.format,
        url=url,
        client_id=args.client_id or f"{PROG}-{os.getpid()}",
        qos=args.qos,
        sites=args.sites,
        devices=args.sensors,
        kinds=args.kinds,
        rate=args.rate or 1.0,
        seed=args.seed,
        scenario=scenario,
        count=args.count,
        duration_s=args.duration or None,
        tls=tls,
        prefix=(args.topic_root or "").strip("/"),
    )
    stop = StopFlag()
    with stop_on_signals(stop):
        try:
            summary = ecosystem.run(cfg, lambda: stop.requested)
        except BrokerUnavailableError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    if not args.quiet:
        print(summary_line(summary), file=sys.stderr)
    if args.json:
        print(summary.to_json(), flush=True)
    return 0
