"""Pure model of a sensor fleet: physics, scenarios and the reading schedule.

No I/O and no clock: callers pass elapsed time in, so a seed gives the same value series
however fast or slow the publisher runs, and every property is testable without a broker.
"""

from __future__ import annotations

import enum
import math
import random
from typing import NamedTuple

TAU_S = 1.5
"""Time constant of the first-order lag: fast enough that a heatwave sensor crosses 80 °C
about 3 s after its setpoint jumps, so an ``above: 80, for: 10s`` rule fires early."""
NOISE_SIGMA_C = 0.1
BIAS_SIGMA_C = 0.3
SETPOINT_MIN_C = 21.0
SETPOINT_MAX_C = 23.0

HEATWAVE_CYCLE_S = 60.0
HEATWAVE_HOT_FROM_S = 3.0
HEATWAVE_HOT_UNTIL_S = 30.0
HEATWAVE_SETPOINT_C = 91.0
HEATWAVE_SITE = "plant-1"
HEATWAVE_DEVICES = ("t-1", "t-2")


class Scenario(enum.StrEnum):
    """What happens to the fleet beyond normal noise."""

    NONE = "none"
    HEATWAVE = "heatwave"


class Reading(NamedTuple):
    """One measurement, due ``t`` seconds after the simulator started."""

    topic: str
    site: str
    device: str
    t: float
    value: float

    def payload(self, ts_ms: int) -> bytes:
        """JSON payload of the readings contract; ``ts`` is epoch milliseconds."""
        # Formatted by hand: json.dumps costs more than the rest of a reading put together.
        return f'{{"value": {self.value!r}, "ts": {ts_ms}, "unit": "C"}}'.encode()


def heatwave_setpoint(t: float, normal_c: float) -> tuple[float, float]:
    """Setpoint of a heatwave sensor at ``t``, and the time at which it next changes."""
    cycle_start = math.floor(t / HEATWAVE_CYCLE_S) * HEATWAVE_CYCLE_S
    phase = t - cycle_start
    if phase < HEATWAVE_HOT_FROM_S:
        setpoint, change_at = normal_c, cycle_start + HEATWAVE_HOT_FROM_S
    elif phase < HEATWAVE_HOT_UNTIL_S:
        setpoint, change_at = HEATWAVE_SETPOINT_C, cycle_start + HEATWAVE_HOT_UNTIL_S
    else:
        setpoint, change_at = normal_c, cycle_start + HEATWAVE_CYCLE_S
    # Float rounding may put a boundary at or before t; time must still move forward.
    return setpoint, max(change_at, math.nextafter(t, math.inf))


class SensorModel:
    """One temperature sensor: a lagged true temperature plus bias and gaussian noise."""

    __slots__ = ("_rng", "_t", "_temp", "bias", "device", "heatwave", "setpoint", "site", "topic")

    def __init__(self, *, site: str, device: str, topic: str, seed: int, heatwave: bool) -> None:
        # Seeded per sensor, not per fleet: a sensor's series does not change with fleet size.
        self._rng = random.Random(f"{seed}/{site}/{device}")
        self.site = site
        self.device = device
        self.topic = topic
        self.heatwave = heatwave
        self.setpoint = self._rng.uniform(SETPOINT_MIN_C, SETPOINT_MAX_C)
        self.bias = self._rng.gauss(0.0, BIAS_SIGMA_C)
        self._temp = self.setpoint
        self._t = 0.0

    def setpoint_at(self, t: float) -> tuple[float, float]:
        """Setpoint in force at ``t`` and the time at which it next changes."""
        if self.heatwave:
            return heatwave_setpoint(t, self.setpoint)
        return self.setpoint, math.inf

    def read(self, t: float) -> float:
        """Advance the true temperature to ``t``; return one measurement (2 decimals)."""
        now, temp = self._t, self._temp
        # Exact solution of the lag for a piecewise-constant setpoint, split at each change,
        # so the curve does not depend on the reading rate.
        while now < t:
            setpoint, change_at = self.setpoint_at(now)
            until = min(t, change_at)
            temp = setpoint + (temp - setpoint) * math.exp((now - until) / TAU_S)
            now = until
        self._t, self._temp = now, temp
        return round(temp + self.bias + self._rng.gauss(0.0, NOISE_SIGMA_C), 2)


class Fleet:
    """All sensors, read in a fixed order at a fixed total rate.

    Reading ``j`` (0-based, across the fleet) is due at ``j / total_rate`` seconds: sensors
    take turns, so each one reads at ``rate`` per second and the load is spread evenly.
    Due times are computed from the index, never accumulated, so the schedule cannot drift.
    """

    def __init__(
        self,
        *,
        sites: int = 1,
        sensors: int = 5,
        rate: float = 1.0,
        seed: int = 0,
        scenario: Scenario = Scenario.NONE,
        topic_root: str = "sensors",
    ) -> None:
        if sites < 1 or sensors < 1:
            msg = f"need at least one site and one sensor, got sites={sites} sensors={sensors}"
            raise ValueError(msg)
        if not rate > 0 or math.isinf(rate):
            msg = f"rate must be a positive finite number, got {rate}"
            raise ValueError(msg)
        self.sensors: tuple[SensorModel, ...] = tuple(
            SensorModel(
                site=site,
                device=device,
                topic=f"{topic_root}/{site}/{device}/temperature",
                seed=seed,
                heatwave=scenario is Scenario.HEATWAVE
                and site == HEATWAVE_SITE
                and device in HEATWAVE_DEVICES,
            )
            for site in (f"plant-{s}" for s in range(1, sites + 1))
            for device in (f"t-{d}" for d in range(1, sensors + 1))
        )
        self.total_rate = rate * len(self.sensors)
        self.taken = 0

    @property
    def next_due(self) -> float:
        """Seconds after start at which the next reading is due."""
        return self.taken / self.total_rate

    def readings_before(self, end_s: float) -> int:
        """How many readings in total are due strictly before ``end_s``."""
        return max(0, math.ceil(end_s * self.total_rate - 1e-9))

    def take(self, until: float, limit: int | None = None) -> list[Reading]:
        """The next readings due at or before ``until`` seconds, at most ``limit`` of them."""
        out: list[Reading] = []
        sensors, n, rate = self.sensors, len(self.sensors), self.total_rate
        j = self.taken
        stop = j + max(limit, 0) if limit is not None else None
        while j != stop and (t := j / rate) <= until:
            sensor = sensors[j % n]
            out.append(Reading(sensor.topic, sensor.site, sensor.device, t, sensor.read(t)))
            j += 1
        self.taken = j
        return out
