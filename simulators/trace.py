"""``sensord-sim record`` and ``sensord-sim replay``: capture real MQTT traffic, play it back.

A trace is JSON Lines. The first line describes the recording, every other line is one
message, in the order received::

    {"sensord_trace": 1, "started": "2026-11-29T01:02:03.456Z", "topics": ["sensors/#"]}
    {"t": 0.0, "topic": "sensors/plant-1/t-1/temperature", "payload": "{\\"value\\": 21.5}"}
    {"t": 0.25, "topic": "sensors/plant-1/t-2/temperature", "payload_b64": "//79"}

``t`` is seconds since the first message; ``payload`` holds the bytes as text when they
are UTF-8, else ``payload_b64`` holds them in base64, so a replay sends exactly the bytes
that were recorded. Replay keeps the original spacing, divided by ``--speed``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.broker import BrokerUrl, tls_context
from simulators.errors import SimulatorError
from simulators.runner import StopFlag, run, stop_on_signals
from simulators.wire import MAX_INFLIGHT_LIMIT, WirePublisher

FORMAT_VERSION = 1


class TraceError(SimulatorError):
    """A trace file cannot be read; the message names ``file:line``."""


class TraceMessage(NamedTuple):
    """One recorded message."""

    t: float
    topic: str
    payload: bytes


def encode_record(t: float, topic: str, payload: bytes) -> str:
    """One trace line (without the newline)."""
    record: dict[str, Any] = {"t": round(t, 6), "topic": topic}
    try:
        record["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        record["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(record)


def read_trace(path: str) -> Iterator[TraceMessage]:
    """The messages of a trace file, in order; raise `TraceError` naming ``file:line``."""
    try:
        stream = Path(path).open(encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        msg = f"{path}: cannot read trace: {exc.strerror or exc}"
        raise TraceError(msg) from None
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if number == 1 and "sensord_trace" in record:
                    if record["sensord_trace"] != FORMAT_VERSION:
                        msg = (
                            f"trace format {record['sensord_trace']} (this reads {FORMAT_VERSION})"
                        )
                        raise ValueError(msg)
                    continue
                if "payload_b64" in record:
                    payload = base64.b64decode(record["payload_b64"], validate=True)
                else:
                    payload = record["payload"].encode("utf-8")
                t, topic = float(record["t"]), record["topic"]
                if not isinstance(topic, str) or not topic or t < 0:
                    msg = "bad 't' or 'topic'"
                    raise ValueError(msg)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                msg = f"{path}:{number}: not a trace record: {detail}"
                raise TraceError(msg) from None
            yield TraceMessage(t, topic, payload)


class TraceSource:
    """A trace as the runner's source: message ``j`` is due at ``t_j / speed``."""

    def __init__(self, messages: Sequence[TraceMessage], speed: float) -> None:
        self.messages = messages
        self.speed = speed
        self.taken = 0
        self.fault_counts: dict[str, int] = {}

    def due(self, j: int) -> float:
        """Seconds after start at which message ``j`` is due (0 at full speed)."""
        if not self.messages or self.speed == 0:
            return 0.0
        j = min(j, len(self.messages) - 1)
        return (self.messages[j].t - self.messages[0].t) / self.speed

    @property
    def next_due(self) -> float:
        """When the next message is due; far away once the trace is done."""
        if self.taken >= len(self.messages):
            return float("inf")
        return self.due(self.taken)

    @property
    def done(self) -> bool:
        """Whether every message was taken."""
        return self.taken >= len(self.messages)

    def take(self, until: float, limit: int | None = None) -> list[TraceMessage]:
        """The next messages due at or before ``until``, at most ``limit``."""
        end = len(self.messages) if limit is None else min(len(self.messages), self.taken + limit)
        j = self.taken
        while j < end and self.due(j) <= until:
            j += 1
        out = list(self.messages[self.taken : j])
        self.taken = j
        return out


# --- record ------------------------------------------------------------------------------


class Recorder:
    """A paho subscriber writing every message it receives to a trace."""

    def __init__(
        self, url: BrokerUrl, topics: Sequence[str], out: IO[str], *, client_id: str, qos: int
    ) -> None:
        self.out = out
        self.count = 0
        self.topics = list(topics)
        self.qos = qos
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._first: float | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client
        self.url = url

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
        else:
            client.subscribe([(topic, self.qos) for topic in self.topics])
        self.connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        with self._lock:
            if self._first is None:
                self._first = now
            self.out.write(encode_record(now - self._first, msg.topic, bytes(msg.payload)) + "\n")
            self.count += 1


def _record(args: argparse.Namespace, url: BrokerUrl) -> int:
    from simulators.cli import PROG  # noqa: PLC0415 - cli imports this module lazily

    tls = tls_context(url, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    stop = StopFlag()
    topics = [t for spec in args.topics for t in spec.split(",") if t]
    with Path(args.output).open("w", encoding="utf-8") as out:
        header = {
            "sensord_trace": FORMAT_VERSION,
            "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "topics": topics,
        }
        out.write(json.dumps(header) + "\n")
        recorder = Recorder(
            url, topics, out, client_id=args.client_id or f"{PROG}-rec-{id(out):x}", qos=args.qos
        )
        if tls is not None:
            recorder.client.tls_set_context(tls)
        try:
            recorder.client.connect(url.host, url.port, keepalive=30)
        except OSError as exc:
            print(f"{PROG}: cannot connect to MQTT broker {url}: {exc}", file=sys.stderr)
            return 1
        recorder.client.loop_start()
        with stop_on_signals(stop):
            try:
                if not recorder.connected.wait(10) or recorder.refused:
                    why = recorder.refused or "no answer within 10 s"
                    print(f"{PROG}: MQTT broker {url}: {why}", file=sys.stderr)
                    return 1
                if not recorder.subscribed.wait(10):
                    print(
                        f"{PROG}: MQTT broker {url} did not confirm the subscription",
                        file=sys.stderr,
                    )
                    return 1
                if not args.quiet:
                    print(
                        f"{PROG}: recording {', '.join(topics)} to {args.output}", file=sys.stderr
                    )
                started = time.monotonic()
                while not stop.requested:
                    if args.count and recorder.count >= args.count:
                        break
                    if args.duration and time.monotonic() - started >= args.duration:
                        break
                    time.sleep(0.02)
            finally:
                recorder.client.disconnect()
                recorder.client.loop_stop()
        elapsed = time.monotonic() - started
    if not args.quiet:
        print(
            f"{PROG}: recorded {recorder.count:,} messages in {elapsed:.2f} s to {args.output}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"recorded": recorder.count, "elapsed_s": round(elapsed, 3)}), flush=True)
    return 0


# --- replay ------------------------------------------------------------------------------


def _replay(args: argparse.Namespace, url: BrokerUrl) -> int:
    from simulators.cli import PROG, ProgressLine, summary_line  # noqa: PLC0415 - see _record

    try:
        messages = list(read_trace(args.trace))
    except TraceError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if not messages:
        print(f"{PROG}: {args.trace}: no messages to replay", file=sys.stderr)
        return 2
    source = TraceSource(messages, args.speed)
    tls = tls_context(url, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    stop = StopFlag()
    with stop_on_signals(stop):
        line = ProgressLine(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
        try:
            with WirePublisher(
                url,
                client_id=args.client_id or f"{PROG}-replay-{id(source):x}",
                qos=args.qos,
                max_inflight=args.max_inflight,
                tls=tls,
            ) as publisher:
                publisher.connect(cancelled=lambda: stop.requested)
                summary = run(
                    source,
                    publisher,
                    stop=stop,
                    count=len(messages),
                    on_progress=line.draw if line is not None else None,
                )
        except SimulatorError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        finally:
            if line is not None:
                line.clear()
    if not args.quiet:
        print(summary_line(summary), file=sys.stderr)
    if args.json:
        print(summary.to_json(), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """``sensord-sim record …`` and ``sensord-sim replay …``."""
    from simulators.cli import PROG, add_connection_options, number  # noqa: PLC0415 - see _record

    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="capture MQTT traffic to a trace file", description=__doc__)
    add_connection_options(rec)
    rec.add_argument(
        "--topics",
        action="append",
        required=True,
        help="topic filter(s) to record, e.g. 'sensors/#' (repeatable, or comma-separated)",
    )
    rec.add_argument("-o", "--output", required=True, help="trace file to write (JSON Lines)")
    rec.add_argument(
        "--duration", type=number(float, low=0), default=0.0, help="stop after S seconds"
    )
    rec.add_argument("--count", type=number(int, low=0), default=0, help="stop after N messages")
    rec.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="subscription QoS")
    rec.add_argument("--client-id", default=None, help="MQTT client id")
    rec.add_argument("--quiet", action="store_true", help="no messages on stderr")
    rec.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    rep = sub.add_parser(
        "replay", help="publish a trace again, with its original spacing", description=__doc__
    )
    rep.add_argument("trace", help="trace file written by 'record'")
    add_connection_options(rep)
    rep.add_argument(
        "--speed",
        type=number(float, low=0),
        default=1.0,
        help="time factor: 10 plays ten times faster; 0 as fast as possible (default: 1)",
    )
    rep.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="MQTT QoS (default: 1)")
    rep.add_argument(
        "--max-inflight",
        type=number(int, low=1, high=MAX_INFLIGHT_LIMIT),
        default=1000,
        help="unconfirmed publishes allowed before waiting for acks (default: %(default)s)",
    )
    rep.add_argument("--client-id", default=None, help="MQTT client id")
    rep.add_argument("--quiet", action="store_true", help="no progress line and no summary line")
    rep.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return parser


def main(argv: Sequence[str]) -> int:
    """``sensord-sim record|replay …``; returns the exit status."""
    from simulators.cli import connection_url  # noqa: PLC0415 - see _record

    parser = build_parser()
    args = parser.parse_args(argv)
    url = connection_url(args, parser)
    if args.command == "record":
        return _record(args, url)
    return _replay(args, url)
