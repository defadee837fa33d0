"""Physics of each sensor kind: what a real sensor of that kind would report at time ``t``.

- temperature: a first-order lag toward a setpoint (which a failed HVAC raises), a daily
  cycle, the sensor's own bias and gaussian noise;
- humidity: relative humidity of the same kind of room air, coupled to its temperature
  (about -6.5 % per °C, as saturation vapour pressure rises), so it drops in a heatwave;
- pressure: slow weather swings in hPa;
- co2: ppm lagging toward 420 + 1000 * occupancy, occupancy changing in random steps;
- power: load steps (machines switching) in watts with 1 % noise;
- door: a contact, closed for about a minute, open for a few seconds.

Every sensor draws from its own generators seeded by ``seed/site/device``: its series does
not depend on the size of the fleet, the rate or how the schedule is consumed. Random
*event times* (load steps, door openings) come from a second generator, so they do not
move when the reading rate changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulators.scenario import NORMAL, Condition, Timeline

if TYPE_CHECKING:
    from simulators.fleet import Message

TAU_S = 1.5
"""Time constant of the temperature lag: fast enough that a heatwave sensor crosses 80 °C
about 3 s after its setpoint jumps, so an ``above: 80, for: 10s`` rule fires early."""
DAY_S = 86_400.0
TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How a kind is named, measured and encoded."""

    kind: str
    prefix: str
    """Device names are ``<prefix>-<n>``."""
    unit: str | None
    """Unit in the JSON payload (none for the door contact)."""
    senml_unit: str
    """RFC 8428 unit; ``senml_scale`` converts the value to it."""
    senml_scale: float
    spike: float
    """Size of an injected spike, in the kind's unit."""
    boolean: bool = False


KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec("temperature", "t", "C", "Cel", 1.0, spike=40.0),
        KindSpec("humidity", "h", "%RH", "%RH", 1.0, spike=40.0),
        KindSpec("pressure", "p", "hPa", "Pa", 100.0, spike=60.0),
        KindSpec("co2", "c", "ppm", "ppm", 1.0, spike=3000.0),
        KindSpec("power", "w", "W", "W", 1.0, spike=5000.0),
        KindSpec("door", "d", None, "", 1.0, spike=0.0, boolean=True),
    )
}


class Lag:
    """A first-order lag toward a piecewise-constant target, solved exactly between changes,
    so that the curve does not depend on the reading rate."""

    __slots__ = ("t", "tau", "x")

    def __init__(self, x: float, tau: float) -> None:
        self.x, self.tau, self.t = x, tau, 0.0

    def advance(self, t: float, target_at: Callable[[float], tuple[float, float]]) -> float:
        """Move to ``t``; ``target_at(now)`` gives the target and when it next changes."""
        now, x = self.t, self.x
        while now < t:
            target, change_at = target_at(now)
            until = min(t, change_at)
            x = target + (x - target) * math.exp((now - until) / self.tau)
            now = until
        self.t, self.x = now, x
        return x


class Steps:
    """A level that changes at random times (exponential gaps): load steps, occupancy.

    Forward-only: ``at`` must be called with non-decreasing times.
    """

    __slots__ = ("_draw", "_mean", "_rng", "change_at", "level")

    def __init__(
        self, rng: random.Random, mean_interval: float, draw: Callable[[random.Random], float]
    ) -> None:
        self._rng, self._mean, self._draw = rng, mean_interval, draw
        self.level = draw(rng)
        self.change_at = rng.expovariate(1.0 / mean_interval)

    def at(self, t: float) -> tuple[float, float]:
        """The level at ``t`` and when it next changes."""
        while t >= self.change_at:
            self.level = self._draw(self._rng)
            self.change_at += self._rng.expovariate(1.0 / self._mean)
        return self.level, self.change_at


class SensorModel:
    """One sensor: identity, scenario condition (cached per timeline segment), fault state.

    Subclasses implement ``measure(t)``: the noisy value the sensor reports.
    """

    __slots__ = (
        "_conds",
        "bias",
        "cond",
        "cond_until",
        "device",
        "fault_rng",
        "held",
        "kind",
        "rng",
        "silent_until",
        "site",
        "spec",
        "steps_rng",
        "stuck_until",
        "stuck_value",
        "timeline",
        "topic",
    )

    def __init__(
        self, spec: KindSpec, *, site: str, device: str, topic: str, seed: int, timeline: Timeline
    ) -> None:
        # Seeded per sensor, not per fleet: a sensor's series does not change with fleet size.
        self.rng = random.Random(f"{seed}/{site}/{device}")
        self.steps_rng = random.Random(f"{seed}/{site}/{device}/steps")
        self.fault_rng = random.Random(f"{seed}/{site}/{device}/faults")
        self.spec, self.kind = spec, spec.kind
        self.site, self.device, self.topic = site, device, topic
        self.timeline = timeline
        self._conds: dict[int, Condition] = {0: NORMAL}
        self.cond = NORMAL
        self.cond_until = -math.inf
        self.bias = 0.0
        # Fault state (see simulators.faults).
        self.stuck_until = -math.inf
        self.stuck_value = 0.0
        self.silent_until = -math.inf
        self.held: Message | None = None
        self.setup()

    def setup(self) -> None:
        """Draw the sensor's own parameters (setpoint, bias, …) from ``rng``."""

    def condition_in(self, segment: int) -> Condition:
        """The scenario's condition for this sensor in a timeline segment (cached)."""
        cond = self._conds.get(segment)
        if cond is None:
            cond = self.timeline.condition(segment, self.site, self.device, self.kind)
            self._conds[segment] = cond
        return cond

    def refresh(self, t: float) -> None:
        """Load the condition in force at ``t`` into ``cond`` (valid until ``cond_until``)."""
        segment, self.cond_until = self.timeline.segment(t)
        self.cond = self.condition_in(segment)

    def condition_at(self, t: float) -> tuple[Condition, float]:
        """Condition at ``t`` and when it may next change (does not touch ``cond``)."""
        segment, until = self.timeline.segment(t)
        return self.condition_in(segment), until

    def read(self, t: float) -> float:
        """The reported value at ``t`` (``refresh(t)`` first): physics, or a forced flap."""
        value = self.measure(t)
        flap = self.cond.flap
        if flap is not None:
            wave = flap.amplitude * math.sin(TWO_PI * t / flap.period)
            return round(flap.center + wave + self.rng.gauss(0.0, 0.1), 2)
        return value

    def measure(self, t: float) -> float:
        raise NotImplementedError


class Temperature(SensorModel):
    """°C: lag toward the setpoint (raised by ``hvac_failure``), daily cycle, bias, noise."""

    __slots__ = ("_target_until", "_target_value", "daily_amp", "daily_phase", "lag", "setpoint")
    NOISE_SIGMA = 0.1

    def setup(self) -> None:
        self.setpoint = self.rng.uniform(21.0, 23.0)
        self.bias = self.rng.gauss(0.0, 0.3)
        self.daily_amp = self.rng.uniform(0.2, 0.6)
        self.daily_phase = self.rng.uniform(0.0, TWO_PI)
        self.lag = Lag(self.setpoint, TAU_S)
        self._target_value, self._target_until = self.setpoint, -math.inf

    def _target(self, now: float) -> tuple[float, float]:
        # The lag asks with ever later times: the answer holds until the segment ends.
        if now < self._target_until:
            return self._target_value, self._target_until
        cond, until = self.condition_at(now)
        target = cond.setpoint if cond.setpoint is not None else self.setpoint
        self._target_value, self._target_until = target, until
        return target, until

    def air(self, t: float) -> float:
        """True air temperature at ``t`` (no sensor error)."""
        daily = self.daily_amp * math.sin(TWO_PI * t / DAY_S + self.daily_phase)
        lag = self.lag
        if lag.t < t <= self._target_until:
            # Hot path: still in the timeline segment of the last call, so one exact step
            # (none at all at the target: the steady state of a sensor left alone).
            target = self._target_value
            if lag.x != target:
                lag.x = target + (lag.x - target) * math.exp((lag.t - t) / TAU_S)
            lag.t = t
            return lag.x + daily
        return lag.advance(t, self._target) + daily

    def measure(self, t: float) -> float:
        return round(self.air(t) + self.bias + self.rng.gauss(0.0, self.NOISE_SIGMA), 2)


class Humidity(Temperature):
    """%RH of room air whose temperature behaves like a temperature sensor's."""

    __slots__ = ("rh0",)
    COUPLING = 0.065
    """Relative change of RH per °C at constant absolute humidity (Magnus formula, ~20 °C)."""

    def setup(self) -> None:
        super().setup()
        self.rh0 = self.rng.uniform(35.0, 55.0)
        self.bias = self.rng.gauss(0.0, 1.0)

    def measure(self, t: float) -> float:
        rh = self.rh0 * math.exp(-self.COUPLING * (self.air(t) - self.setpoint))
        rh += self.bias + self.rng.gauss(0.0, 0.3)
        return round(min(100.0, max(0.0, rh)), 1)


class Pressure(SensorModel):
    """hPa: a site's weather swinging slowly around its altitude's mean."""

    __slots__ = ("amp", "base", "period", "phase")

    def setup(self) -> None:
        self.base = self.rng.uniform(1005.0, 1022.0)
        self.amp = self.rng.uniform(2.0, 6.0)
        self.period = self.rng.uniform(4 * 3600.0, 10 * 3600.0)
        self.phase = self.rng.uniform(0.0, TWO_PI)
        self.bias = self.rng.gauss(0.0, 0.5)

    def measure(self, t: float) -> float:
        weather = self.amp * math.sin(TWO_PI * t / self.period + self.phase)
        return round(self.base + weather + self.bias + self.rng.gauss(0.0, 0.05), 2)


def _occupancy(rng: random.Random) -> float:
    return 0.0 if rng.random() < 0.3 else rng.uniform(0.1, 1.0)


class Co2(SensorModel):
    """ppm: lags (about 90 s) toward 420 + 1000 * occupancy; people come and go in steps."""

    __slots__ = ("lag", "people")
    OUTDOOR_PPM = 420.0
    PPM_PER_OCCUPANCY = 1000.0

    def setup(self) -> None:
        self.people = Steps(self.steps_rng, 120.0, _occupancy)
        self.lag = Lag(self.OUTDOOR_PPM + self.PPM_PER_OCCUPANCY * self.people.level, 90.0)
        self.bias = self.rng.gauss(0.0, 15.0)

    def _target(self, now: float) -> tuple[float, float]:
        cond, until = self.condition_at(now)
        if cond.occupancy is not None:
            occupancy = cond.occupancy
        else:
            occupancy, change_at = self.people.at(now)
            until = min(until, change_at)
        return self.OUTDOOR_PPM + self.PPM_PER_OCCUPANCY * occupancy, until

    def measure(self, t: float) -> float:
        ppm = self.lag.advance(t, self._target) + self.bias + self.rng.gauss(0.0, 5.0)
        return round(max(0.0, ppm), 1)


_LOAD_FACTORS = (0.05, 0.4, 0.7, 1.0, 1.3)


class Power(SensorModel):
    """W: a machine's load switching between levels every 15 s on average, 1 % noise."""

    __slots__ = ("load", "rated")

    def setup(self) -> None:
        self.rated = self.rng.uniform(200.0, 3000.0)
        self.load = Steps(self.steps_rng, 15.0, lambda r: r.choice(_LOAD_FACTORS))

    def measure(self, t: float) -> float:
        factor, _ = self.load.at(t)
        return round(self.rated * factor * (1.0 + self.rng.gauss(0.0, 0.01)), 1)


class Door(SensorModel):
    """1 (open) or 0 (closed): closed about 60 s, then open about 8 s, at random."""

    __slots__ = ("change_at", "open")
    MEAN_CLOSED_S = 60.0
    MEAN_OPEN_S = 8.0

    def setup(self) -> None:
        self.open = False
        self.change_at = self.steps_rng.expovariate(1.0 / self.MEAN_CLOSED_S)

    def measure(self, t: float) -> float:
        while t >= self.change_at:
            self.open = not self.open
            mean = self.MEAN_OPEN_S if self.open else self.MEAN_CLOSED_S
            self.change_at += self.steps_rng.expovariate(1.0 / mean)
        return 1.0 if self.open else 0.0


_MODELS: dict[str, type[SensorModel]] = {
    "temperature": Temperature,
    "humidity": Humidity,
    "pressure": Pressure,
    "co2": Co2,
    "power": Power,
    "door": Door,
}


def make_sensor(
    spec: KindSpec, *, site: str, device: str, topic: str, seed: int, timeline: Timeline
) -> SensorModel:
    """A sensor model of ``spec.kind``."""
    return _MODELS[spec.kind](
        spec, site=site, device=device, topic=topic, seed=seed, timeline=timeline
    )
