"""Running a configured fleet: in this process, or split over several (``--processes``).

Each worker process publishes one shard of the fleet (every n-th sensor) on its own
connection, with the same start epoch, so that together they publish exactly what one
process would, each sensor's series unchanged. The parent relays stop signals, draws the
progress line from counters the workers share, and adds up their summaries.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.sharedctypes
import os
import queue
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MpQueue
from types import FrameType
from typing import Any

from simulators.broker import BrokerUnavailableError, BrokerUrl, tls_context
from simulators.faults import FaultRates
from simulators.fleet import Fleet
from simulators.payloads import Format
from simulators.runner import Progress, StopFlag, Summary, run
from simulators.scenario import Scenario
from simulators.wire import WirePublisher

_SLOTS = 6  # per worker: published, sent, errors, in_flight, connected, done


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs; picklable, so that worker processes get a copy."""

    url: BrokerUrl
    client_id: str
    qos: int = 1
    max_inflight: int = 1000
    sites: int = 1
    sensors: int = 5
    kinds: tuple[str, ...] = ("temperature",)
    rate: float = 1.0
    seed: int = 0
    scenario: Scenario | None = None
    topic_root: str = "sensors"
    fmt: Format = Format.JSON
    faults: FaultRates = field(default_factory=FaultRates)
    epoch_ms: int = 0
    count: int = 0
    duration_s: float = 0.0
    processes: int = 1
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def fleet(self, shard: tuple[int, int] = (0, 1)) -> Fleet:
        """This run's fleet, or one shard of it."""
        return Fleet(
            sites=self.sites,
            sensors=self.sensors,
            kinds=self.kinds,
            rate=self.rate,
            seed=self.seed,
            scenario=self.scenario,
            topic_root=self.topic_root,
            fmt=self.fmt,
            faults=self.faults,
            epoch_ms=self.epoch_ms,
            shard=shard,
        )

    def publisher(self, client_id: str) -> WirePublisher:
        """A publisher (not yet connected) for this run's broker."""
        tls = tls_context(
            self.url, ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file
        )
        return WirePublisher(
            self.url, client_id=client_id, qos=self.qos, max_inflight=self.max_inflight, tls=tls
        )


def run_here(
    cfg: RunConfig,
    stop: StopFlag,
    *,
    shard: tuple[int, int] = (0, 1),
    count: int | None = None,
    client_id: str | None = None,
    on_connected: Callable[[], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary | None:
    """Connect and run in this process; None when stopped before connecting.

    Raises `BrokerUnavailableError` when the broker cannot be reached.
    """
    fleet = cfg.fleet(shard)
    with cfg.publisher(client_id or cfg.client_id) as publisher:
        publisher.connect(cancelled=lambda: stop.requested)
        if not publisher.connected:
            return None
        if on_connected is not None:
            on_connected()
        return run(
            fleet,
            publisher,
            stop=stop,
            count=cfg.count if count is None else count,
            duration_s=cfg.duration_s,
            on_progress=on_progress,
        )


def _share(count: int, index: int, of: int) -> int:
    return count // of + (1 if index < count % of else 0)


def _worker(
    cfg: RunConfig,
    index: int,
    counters: Any,  # a multiprocessing Array of doubles, _SLOTS per worker
    results: MpQueue[tuple[int, dict[str, Any] | str]],
) -> None:
    """Entry point of a worker process: one shard, one connection."""
    stop = StopFlag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.request()

    # The parent relays SIGINT/SIGTERM as SIGTERM; a terminal's Ctrl-C reaches the whole
    # process group, so SIGINT is ignored here or it would count as a second, forcing signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_signal)
    base = index * _SLOTS

    def on_progress(p: Progress) -> None:
        counters[base : base + 5] = [p.published, p.sent, p.errors, p.in_flight, p.connected]

    def on_connected() -> None:
        counters[base + 4] = 1.0

    count = _share(cfg.count, index, cfg.processes) if cfg.count else 0
    if cfg.count and not count:  # fewer messages than workers: nothing to do here
        counters[base + 5] = 1.0
        results.put((index, {}))
        return
    try:
        summary = run_here(
            cfg,
            stop,
            shard=(index, cfg.processes),
            count=count,
            client_id=f"{cfg.client_id}-{index}",
            on_connected=on_connected,
            on_progress=on_progress,
        )
    except BrokerUnavailableError as exc:
        results.put((index, str(exc)))
        return
    finally:
        counters[base + 5] = 1.0
    if summary is None:
        results.put((index, {}))
        return
    counters[base + 1 : base + 3] = [summary.sent, summary.errors]
    results.put((index, summary.as_dict()))


def _aggregate(
    c: list[float], n: int, *, elapsed: float, span: float, last_sent: int, cfg: RunConfig
) -> Progress:
    """One progress snapshot from the workers' shared counters."""
    sent = int(sum(c[i * _SLOTS + 1] for i in range(n)))
    return Progress(
        published=int(sum(c[i * _SLOTS] for i in range(n))),
        sent=sent,
        errors=int(sum(c[i * _SLOTS + 2] for i in range(n))),
        in_flight=int(sum(c[i * _SLOTS + 3] for i in range(n))),
        rate=(sent - last_sent) / span if span > 0 else 0.0,
        elapsed_s=elapsed,
        remaining_s=max(0.0, cfg.duration_s - elapsed) if cfg.duration_s else None,
        connected=all(c[i * _SLOTS + 4] for i in range(n)),
    )


def run_parallel(
    cfg: RunConfig,
    stop: StopFlag,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 0.5,
) -> Summary | None:
    """Run ``cfg.processes`` workers and add up their summaries.

    Raises `BrokerUnavailableError` (the first worker's) when the broker cannot be reached.
    """
    n = cfg.processes
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.Array("d", n * _SLOTS, lock=False)
    results: MpQueue[tuple[int, dict[str, Any] | str]] = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(cfg, i, counters, results), name=f"sim-{i}")
        for i in range(n)
    ]
    start = time.monotonic()
    for proc in procs:
        proc.start()
    relayed = 0
    last_sent, last_at = 0, start
    outcomes: dict[int, dict[str, Any] | str] = {}
    try:
        while len(outcomes) < n:
            if stop.requested and relayed < 1 + stop.forced:
                for proc in procs:
                    if proc.pid is not None and proc.is_alive():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, signal.SIGTERM)
                relayed += 1
            try:
                index, outcome = results.get(timeout=min(progress_every_s, 0.1))
            except queue.Empty:
                pass
            else:
                outcomes[index] = outcome
                continue
            if any(not p.is_alive() and i not in outcomes for i, p in enumerate(procs)):
                # A worker died without a word (killed): give its result a moment, then stop.
                time.sleep(0.2)
                if results.empty():
                    for i, p in enumerate(procs):
                        if not p.is_alive() and i not in outcomes:
                            outcomes[i] = f"worker {i} exited with code {p.exitcode}"
            now = time.monotonic()
            if on_progress is not None and now - last_at >= progress_every_s:
                progress = _aggregate(
                    list(counters),
                    n,
                    elapsed=now - start,
                    span=now - last_at,
                    last_sent=last_sent,
                    cfg=cfg,
                )
                on_progress(progress)
                last_sent, last_at = progress.sent, now
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    failures = [o for o in outcomes.values() if isinstance(o, str)]
    if failures:
        raise BrokerUnavailableError(failures[0])
    parts = [o for o in outcomes.values() if isinstance(o, dict) and o]
    if not parts:
        return None
    faults: Counter[str] = Counter()
    for part in parts:
        faults.update(part["faults"])
    sent = sum(int(p["sent"]) for p in parts)
    elapsed = max(float(p["elapsed_s"]) for p in parts)
    return Summary(
        sent=sent,
        errors=sum(int(p["errors"]) for p in parts),
        elapsed_s=elapsed,
        rate=sent / elapsed if elapsed > 0 else 0.0,
        qos=cfg.qos,
        faults=dict(faults),
        processes=n,
    )
