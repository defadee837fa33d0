"""Pure model of a sensor fleet: physics per kind, scenario, faults, payloads and schedule.

No I/O and no clock: callers pass elapsed time in, and timestamps are the start epoch plus
each reading's due time, so a seed gives the same messages byte for byte however fast or
slow the publisher runs, and every property is testable without a broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from simulators.faults import FaultInjector, FaultRates
from simulators.payloads import Encoder, Format
from simulators.physics import KINDS, SensorModel, make_sensor
from simulators.scenario import NORMAL, Condition, Scenario, Timeline

DEFAULT_EPOCH_MS = 1_764_000_000_000
"""Start epoch used when none is given (tests): 2025-11-24T16:00:00Z."""


class Reading(NamedTuple):
    """One measurement of one sensor, due ``t`` seconds after the start."""

    topic: str
    site: str
    device: str
    kind: str
    t: float
    value: float


class Message(NamedTuple):
    """What goes on the wire for a reading (one reading may give 0, 1 or 2 messages)."""

    topic: str
    payload: bytes
    reading: Reading
    fault: str | None = None
    """The fault injected into this message, if any (``malformed:<reason>`` for malformed)."""


@dataclass(frozen=True, slots=True)
class SensorId:
    """Where a sensor sits in the fleet."""

    site: str
    device: str
    kind: str


def fleet_layout(sites: int, sensors: int, kinds: Sequence[str]) -> list[SensorId]:
    """Every sensor of the fleet, in schedule order: by site, then kind, then number."""
    return [
        SensorId(f"plant-{s}", f"{KINDS[kind].prefix}-{d}", kind)
        for s in range(1, sites + 1)
        for kind in kinds
        for d in range(1, sensors + 1)
    ]


class Fleet:
    """The sensors of this process, read in a fixed order at a fixed total rate.

    Reading ``j`` (0-based, across this fleet) is due at ``j / total_rate`` seconds: sensors
    take turns, so each one reads at ``rate`` per second and the load is spread evenly.
    Due times are computed from the index, never accumulated, so the schedule cannot drift.
    With ``shard=(i, n)`` the fleet holds every n-th sensor from the i-th: n processes with
    one shard each publish the whole fleet, and each sensor's series is the same as alone.
    """

    def __init__(
        self,
        *,
        sites: int = 1,
        sensors: int = 5,
        kinds: Sequence[str] = ("temperature",),
        rate: float = 1.0,
        seed: int = 0,
        scenario: Scenario | None = None,
        topic_root: str = "sensors",
        fmt: Format = Format.JSON,
        faults: FaultRates | Mapping[str, float] | None = None,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if sites < 1 or sensors < 1:
            msg = f"need at least one site and one sensor, got sites={sites} sensors={sensors}"
            raise ValueError(msg)
        if not rate > 0 or math.isinf(rate):
            msg = f"rate must be a positive finite number, got {rate}"
            raise ValueError(msg)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            msg = f"unknown kind {unknown[0] if unknown else ''!r}; known: {', '.join(KINDS)}"
            raise ValueError(msg)
        index, of = shard
        if not 0 <= index < of:
            msg = f"shard must be (i, n) with 0 <= i < n, got {shard}"
            raise ValueError(msg)
        self.timeline = Timeline(scenario)
        whole = fleet_layout(sites, sensors, kinds)
        layout = whole[index::of]
        if not layout:
            msg = f"shard {index} of {of} has no sensor: fewer sensors than processes"
            raise ValueError(msg)
        self.sensors: tuple[SensorModel, ...] = tuple(
            make_sensor(
                KINDS[s.kind],
                site=s.site,
                device=s.device,
                topic=f"{topic_root}/{s.site}/{s.device}/{s.kind}",
                seed=seed,
                timeline=self.timeline,
            )
            for s in layout
        )
        self.rate = rate
        self.total_rate = rate * len(self.sensors)
        # A shard keeps each sensor's due times from the whole fleet's schedule: sensor at
        # position p of N reads at (m * N + p) / (rate * N), whoever publishes it.
        self._sharded = of > 1
        self._positions = list(range(index, len(whole), of))
        self._whole = len(whole)
        self._whole_rate = rate * len(whole)
        self.encoder = Encoder(fmt, topic_root)
        rates = faults if isinstance(faults, FaultRates) else FaultRates.of(faults or {})
        self.injector = FaultInjector(rates, self.encoder, seed)
        self.epoch_ms = epoch_ms
        self.taken = 0
        self._spill: list[Message] = []

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many times each fault was injected so far."""
        return dict(self.injector.counts)

    def due(self, j: int) -> float:
        """Seconds after start at which this fleet's reading ``j`` is due."""
        if not self._sharded:
            return j / self.total_rate
        rounds, k = divmod(j, len(self.sensors))
        return (rounds * self._whole + self._positions[k]) / self._whole_rate

    @property
    def next_due(self) -> float:
        """Seconds after start at which the next reading is due."""
        return self.due(self.taken)

    def take(self, until: float, limit: int | None = None) -> list[Message]:
        """Messages of the readings due at or before ``until`` seconds, at most ``limit``.

        A silent sensor (scenario dropout, dropout fault) gives no message for its turn;
        a duplicated or delayed reading may add one, so the count of messages and readings
        differ when faults are on.
        """
        sensors, n, rate = self.sensors, len(self.sensors), self.total_rate
        encode, epoch_ms, injector = self.encoder.encode, self.epoch_ms, self.injector
        cap = max(limit, 0) if limit is not None else math.inf
        # Messages that did not fit the last call's limit (a duplicate, a delayed one) first.
        out, self._spill = self._spill, []
        j = self.taken
        sharded, due = self._sharded, self.due
        while len(out) < cap:
            t = due(j) if sharded else j / rate
            if t > until:
                break
            sensor = sensors[j % n]
            j += 1
            if t >= sensor.cond_until:
                sensor.refresh(t)
            cond = sensor.cond
            if cond.silent:
                continue
            value = sensor.measure(t) if cond.flap is None else sensor.read(t)
            reading = Reading(sensor.topic, sensor.site, sensor.device, sensor.kind, t, value)
            ts_ms = epoch_ms + round(t * 1000)
            if injector.active or cond.faults:
                injector.inject(sensor, reading, ts_ms, cond, out)
            else:
                out.append(Message(sensor.topic, encode(sensor, value, ts_ms), reading))
        if len(out) > cap:
            keep = int(cap)
            out, self._spill = out[:keep], out[keep:]
        self.taken = j
        return out

    def condition(self, sensor: SensorModel, t: float) -> Condition:
        """The scenario's condition for ``sensor`` at ``t`` (for tests and notes)."""
        segment, _ = self.timeline.segment(t)
        if segment == 0:
            return NORMAL
        return self.timeline.condition(segment, sensor.site, sensor.device, sensor.kind)


def readings_of(messages: Sequence[Message]) -> list[Reading]:
    """The readings behind messages, once each (duplicates and faults folded)."""
    seen: set[tuple[str, float]] = set()
    out: list[Reading] = []
    for m in messages:
        key = (m.reading.topic, m.reading.t)
        if key not in seen:
            seen.add(key)
            out.append(m.reading)
    return out
