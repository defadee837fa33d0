"""`python -m bench [--messages N] [--runs R] ...`: JSON on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from bench.ingest import SCENARIOS, BenchConfig, Scenario, dump, run


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="MQTT ingest: sensord's bridge + rule engine against mosquitto_sub, "
        "same load, same run. JSON on stdout, progress on stderr.",
    )
    parser.add_argument("--messages", type=_positive, default=defaults.messages)
    parser.add_argument("--runs", type=_positive, default=defaults.runs)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--broker-inflight",
        type=_positive,
        default=defaults.broker_inflight,
        help="mosquitto max_inflight_messages, the outgoing QoS 1 window "
        f"(default {defaults.broker_inflight}; Mosquitto's own default is 20)",
    )
    parser.add_argument(
        "--publish-window",
        type=_positive,
        default=defaults.publish_window,
        help="QoS 1 publishes in flight while loading the backlog",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="give up on a receiver that received nothing for this many seconds",
    )
    parser.add_argument("--mosquitto", default=defaults.mosquitto)
    parser.add_argument("--mosquitto-sub", default=defaults.mosquitto_sub)
    args = parser.parse_args(argv)
    scenarios: tuple[Scenario, ...] = tuple(args.scenario) if args.scenario else SCENARIOS
    return BenchConfig(
        messages=args.messages,
        runs=args.runs,
        broker_inflight=args.broker_inflight,
        publish_window=args.publish_window,
        idle_timeout=args.idle_timeout,
        scenarios=scenarios,
        mosquitto=args.mosquitto,
        mosquitto_sub=args.mosquitto_sub,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the private broker and the
    # child processes are stopped by their `finally` blocks instead of being orphaned
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # sensord's own log lines (connects, refused messages) go to stderr with the progress
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = run(cfg)
    except KeyboardInterrupt:
        print("[bench] interrupted", file=sys.stderr)
        return 130
    dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
