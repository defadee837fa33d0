"""The chaos suite's pure parts: the alert plan, its reference evaluator, the malformed
burst and the fault schedule. No I/O, no sensord import: the expectation is computed
from what the driver publishes, never read back from sensord.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from enum import StrEnum

# The one rule the plan is written for (the driver writes it to sensord's rule file):
# fire above ABOVE, resolve below CLEAR_BELOW, no `for`, no aggregation, no flapping.
SITE = "chaos"
KIND = "temperature"
ABOVE = 80.0
CLEAR_BELOW = 75.0
RULE_NAME = "chaos-hot"
RULES_YAML = f"""
rules:
  - name: {RULE_NAME}
    match: {{site: {SITE}, kind: {KIND}}}
    above: {ABOVE:g}
    clear_below: {CLEAR_BELOW:g}
    severity: critical
  # matches every simulated temperature too, and never fires: the rules run per reading
  - name: chaos-impossible
    match: {{kind: temperature}}
    above: 10000
    severity: warning
"""


@dataclass(frozen=True, slots=True)
class PlanReading:
    due: float  # seconds after the plan's start
    device: str
    value: float
    ts_ms: int  # the reading's own timestamp, unique and increasing per device

    def payload(self) -> bytes:
        return json.dumps({"value": self.value, "ts": self.ts_ms, "unit": "C"}).encode()


@dataclass(frozen=True, slots=True)
class Transition:
    """What the reference evaluator says sensord must notify: one per (device, status, ts)."""

    device: str
    status: str  # firing | resolved
    ts_ms: int  # the reading that caused it: startsAt of a firing, endsAt of a resolution

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device, self.status, self.ts_ms)


def _segment(rng: random.Random, lo: float, hi: float, n: int) -> list[float]:
    return [round(rng.uniform(lo, hi), 2) for _ in range(n)]


def device_values(seed: int, device: str, steps: int) -> list[float]:
    """A value series in phases: normal, sometimes the hysteresis band (no firing),
    breach, sometimes the band again (still firing), clear. Never within 0.5 of a
    threshold, so float rounding cannot decide a transition."""
    rng = random.Random(f"{seed}:{device}")
    out: list[float] = []
    while len(out) < steps:
        out += _segment(rng, 40, 74.5, rng.randint(3, 14))  # normal
        if rng.random() < 0.3:
            out += _segment(rng, 75.5, 79.5, rng.randint(1, 4))  # band: not firing
        out += _segment(rng, 80.5, 99, rng.randint(2, 10))  # breach: fires on the first
        if rng.random() < 0.5:
            out += _segment(rng, 75.5, 79.5, rng.randint(1, 4))  # band: still firing
    return out[:steps]


@dataclass
class AlertPlan:
    """Per device, one reading every `step` seconds, the devices evenly staggered."""

    seed: int
    devices: int
    step: float
    duration: float
    start_ms: int  # the wall-clock time (epoch ms) of due 0
    readings: list[PlanReading] = field(default_factory=list)

    def __post_init__(self) -> None:
        steps = int(self.duration / self.step)
        names = [f"a-{i}" for i in range(self.devices)]
        for i, name in enumerate(names):
            offset = self.step * i / self.devices
            for k, value in enumerate(device_values(self.seed, name, steps)):
                due = k * self.step + offset
                self.readings.append(
                    PlanReading(due, name, value, self.start_ms + round(due * 1000))
                )
        self.readings.sort(key=lambda r: r.due)

    def expected(self, upto: int | None = None) -> list[Transition]:
        """The reference evaluator over the first `upto` readings (all by default)."""
        return reference_transitions(self.readings[:upto])


def reference_transitions(readings: list[PlanReading]) -> list[Transition]:
    """Threshold with hysteresis, evaluated per device in reading order."""
    firing: dict[str, bool] = {}
    out: list[Transition] = []
    for r in readings:
        if not firing.get(r.device) and r.value > ABOVE:
            firing[r.device] = True
            out.append(Transition(r.device, "firing", r.ts_ms))
        elif firing.get(r.device) and r.value < CLEAR_BELOW:
            firing[r.device] = False
            out.append(Transition(r.device, "resolved", r.ts_ms))
    return out


# ---- the malformed burst: one of each of sensord's refusal reasons, in turn


BURST_REASONS = ("not_json", "schema", "non_finite", "topic", "too_large", "clock_skew", "unit")


def malformed(i: int, topic_root: str, now_ms: int) -> tuple[str, bytes, str]:
    """(topic, payload, the reason sensord must give) for the i-th message of a burst."""
    reason = BURST_REASONS[i % len(BURST_REASONS)]
    topic = f"{topic_root}/{SITE}/m-{i % 10}/{KIND}"
    payload: bytes
    if reason == "not_json":
        payload = b"value=21.5 unit=C"
    elif reason == "schema":
        payload = b'{"temp": 21.5}'
    elif reason == "non_finite":
        payload = b'{"value": NaN}'
    elif reason == "topic":
        topic = f"{topic_root}/{SITE}/m-{i % 10}"
        payload = b"21.5"
    elif reason == "too_large":
        payload = b'{"value": 1, "pad": "' + b"x" * 70_000 + b'"}'
    elif reason == "clock_skew":
        payload = json.dumps({"value": 21.5, "ts": now_ms + 3_600_000}).encode()
    else:
        payload = b'{"value": 21.5, "unit": "furlongs"}'
    return topic, payload, reason


# ---- the fault schedule


class FaultKind(StrEnum):
    RABBITMQ_CUT = "rabbitmq_cut"
    RABBITMQ_FLAP = "rabbitmq_flap"
    MOSQUITTO_RESTART = "mosquitto_restart"
    SIGKILL = "sigkill"
    WEBHOOK_503 = "webhook_503"
    MALFORMED_BURST = "malformed_burst"


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the load started
    kind: FaultKind
    duration: float = 0.0  # seconds the fault lasts (0: instantaneous)
    count: int = 0  # messages of a burst, flaps of a flapping


def schedule(duration: float) -> list[Fault]:
    """The issue's schedule for a run of `duration` seconds (full from 4 minutes on; a
    shorter run gets fewer and shorter faults, the same kinds)."""
    if duration >= 240:
        # 5 min: cut 30 s, 5 flaps, Mosquitto restart, 3 SIGKILLs, 503 for 60 s, a burst;
        # longer runs spread the same faults over the time
        k = duration / 300
        return [
            Fault(15 * k, FaultKind.RABBITMQ_CUT, 30),
            Fault(60 * k, FaultKind.RABBITMQ_FLAP, 2.0, count=5),
            Fault(95 * k, FaultKind.MOSQUITTO_RESTART, 3),
            Fault(115 * k, FaultKind.SIGKILL),
            Fault(135 * k, FaultKind.WEBHOOK_503, 60),
            Fault(155 * k, FaultKind.SIGKILL),  # while the target answers 503
            Fault(215 * k, FaultKind.MALFORMED_BURST, count=700),
            Fault(235 * k, FaultKind.SIGKILL),
        ]
    # the short variant (make test): about a minute
    k = duration / 60
    return [
        Fault(5 * k, FaultKind.RABBITMQ_CUT, 6 * k),
        Fault(16 * k, FaultKind.RABBITMQ_FLAP, 1.0, count=2),
        Fault(24 * k, FaultKind.MOSQUITTO_RESTART, 2),
        Fault(31 * k, FaultKind.WEBHOOK_503, 8 * k),
        Fault(35 * k, FaultKind.SIGKILL),  # while the target answers 503
        Fault(46 * k, FaultKind.MALFORMED_BURST, count=70),
    ]
