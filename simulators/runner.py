"""Pacing loop: takes due messages from a source (a fleet, a trace) and hands them to a
sink on schedule."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

BATCH_MAX = 512
"""Readings published between two looks at the clock, the stop flag and the progress line."""
MAX_SLEEP_S = 0.25
"""Longest sleep: a stop signal only sets a flag, so this bounds how late it is noticed."""


class StopFlag:
    """Set by signal handlers. Plain attributes on purpose: a handler must never take a
    lock, since the main thread may hold it when the signal arrives."""

    __slots__ = ("forced", "requested")

    def __init__(self) -> None:
        self.requested = False
        self.forced = False

    def request(self) -> None:
        """First call: stop publishing and drain. Second call: skip the drain too."""
        if self.requested:
            self.forced = True
        self.requested = True


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag) -> Iterator[StopFlag]:
    """While inside: SIGINT and SIGTERM call `stop.request()`. On leaving, however left, the
    handlers found on entering are back."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.request()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Outgoing(Protocol):
    """One message to publish (`simulators.fleet.Message`, a replayed trace record)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class Source(Protocol):
    """What to publish when (`simulators.fleet.Fleet`, `simulators.trace.TraceSource`)."""

    @property
    def next_due(self) -> float: ...

    @property
    def fault_counts(self) -> dict[str, int]: ...

    def due(self, j: int) -> float: ...

    def take(self, until: float, limit: int | None = None) -> Sequence[Outgoing]: ...


class Sink(Protocol):
    """Where readings go (`simulators.publisher.MqttPublisher` in production)."""

    qos: int
    sent: int
    errors: int
    connected: bool

    @property
    def in_flight(self) -> int: ...

    def publish(self, topic: str, payload: bytes) -> None: ...

    def settle(self) -> None: ...

    def room(self) -> int: ...

    def wait(self, timeout: float) -> None: ...

    def abandon(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for the live progress line."""

    published: int
    sent: int
    errors: int
    in_flight: int
    rate: float
    elapsed_s: float
    remaining_s: float | None
    connected: bool


@dataclass(frozen=True, slots=True)
class Summary:
    """The outcome of one run."""

    sent: int
    errors: int
    elapsed_s: float
    rate: float
    qos: int
    faults: dict[str, int] = field(default_factory=dict)
    """Faults injected, by kind (``malformed:<reason>`` counted apart as well)."""
    processes: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` summary object."""
        return {
            "sent": self.sent,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 1),
            "qos": self.qos,
            "faults": dict(sorted(self.faults.items())),
            "processes": self.processes,
        }

    def to_json(self) -> str:
        """The ``--json`` summary, one line."""
        return json.dumps(self.as_dict())


def _publish(sink: Sink, batch: Sequence[Outgoing]) -> int:
    for message in batch:
        sink.publish(message.topic, message.payload)
    return len(batch)


def run(
    fleet: Source,
    sink: Sink,
    *,
    stop: StopFlag,
    count: int = 0,
    duration_s: float = 0.0,
    drain_s: float = 2.0,
    progress_every_s: float = 0.5,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Summary:
    """Publish readings on schedule until ``count`` messages, ``duration_s`` or a stop.

    ``count`` and ``duration_s`` of 0 mean no limit. Each reading is published when its due
    time (from the fleet, relative to the start) has passed; if the sink falls behind, the
    backlog goes out as fast as ``room()`` allows and the schedule catches up, not shifts.
    """
    limit = count if count > 0 else None
    end_s = duration_s if duration_s > 0 else None
    if limit is not None and end_s is None:
        end_s = fleet.due(limit - 1)  # for the progress line's "remaining" only

    # Everything below is in seconds since start, the same scale as the fleet's due times,
    # so "is anything due" and "how long to sleep" can never disagree through rounding.
    start = clock()
    published = 0
    report_at = progress_every_s
    last_report, last_sent = 0.0, 0

    def report(elapsed: float) -> None:
        nonlocal last_report, last_sent
        sink.settle()
        span = elapsed - last_report
        if on_progress is not None:
            on_progress(
                Progress(
                    published=published,
                    sent=sink.sent,
                    errors=sink.errors,
                    in_flight=sink.in_flight,
                    rate=(sink.sent - last_sent) / span if span > 0 else 0.0,
                    elapsed_s=elapsed,
                    remaining_s=max(0.0, end_s - elapsed) if end_s is not None else None,
                    connected=sink.connected,
                )
            )
        last_report, last_sent = elapsed, sink.sent

    while not stop.requested and (limit is None or published < limit):
        elapsed = clock() - start
        if duration_s > 0 and elapsed >= duration_s:
            break  # wall-clock limit: a sink that cannot keep up does not stretch the run
        if elapsed >= report_at:
            report(elapsed)
            # On a grid from the start, not from now: the line keeps a steady beat.
            report_at = (elapsed // progress_every_s + 1) * progress_every_s
        room = sink.room()
        if room <= 0:
            sink.wait(min(MAX_SLEEP_S, max(report_at - elapsed, 0.001)))
            continue
        batch_max = min(room, BATCH_MAX)
        if limit is not None:
            batch_max = min(batch_max, limit - published)
        batch = fleet.take(elapsed, batch_max)
        if batch:
            published += _publish(sink, batch)
            continue
        # Nothing due: sleep until the next due time, which is computed from the start,
        # so sleep overshoot never accumulates into drift.
        pause = min(fleet.next_due, report_at, elapsed + MAX_SLEEP_S) - elapsed
        if pause > 0:
            sleep(pause)

    # Stop intake, then give outstanding publishes a grace period to be confirmed.
    drain_deadline = clock() + drain_s
    while sink.in_flight and not stop.forced:
        now = clock()
        if now >= drain_deadline:
            break
        sink.wait(min(MAX_SLEEP_S, drain_deadline - now))
    sink.abandon()
    elapsed = clock() - start
    return Summary(
        sent=sink.sent,
        errors=sink.errors,
        elapsed_s=elapsed,
        rate=sink.sent / elapsed if elapsed > 0 else 0.0,
        qos=sink.qos,
        faults=fleet.fault_counts,
    )
