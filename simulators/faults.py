"""Fault injection: the ways real sensors misbehave, each at a rate per reading.

- ``spike``: one reading jumps by the kind's spike size (up or down);
- ``stuck``: the sensor starts repeating its last value, for about 10 s;
- ``dropout``: the sensor starts sending nothing, for about 5 s;
- ``malformed``: the message is invalid, for one of the reasons sensord refuses (below);
- ``duplicate``: the message is sent twice;
- ``out_of_order``: the message is held back and sent after the sensor's next one;
- ``clock_skew``: the timestamp is off by 1 to 30 minutes, either way.

A rate is the probability per reading that the fault starts there (for ``stuck`` and
``dropout``, that an episode starts). Draws come from each sensor's own fault generator, and
only for faults whose rate is not zero, so a run without faults is the same series as
before faults existed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from simulators.payloads import Encoder, json_payload
from simulators.scenario import FAULT_KINDS, Condition

if TYPE_CHECKING:
    from simulators.fleet import Message, Reading
    from simulators.physics import SensorModel

MALFORMED_REASONS = (
    "not_json",
    "schema",
    "topic",
    "non_finite",
    "too_large",
    "clock_skew",
    "unit",
)
"""sensord's invalid-reading reason codes (sensord/ingest/payload.py; clock_skew and unit are
refused once sensord checks timestamps and units)."""
TOO_LARGE_BYTES = 70_000
"""Above sensord's default ``max_payload`` (64 KiB)."""
FUTURE_SKEW_MS = 3_600_000
"""A malformed ``clock_skew`` reading is stamped one hour in the future."""
BAD_UNIT = "furlongs"
STUCK_MEAN_S = 10.0
DROPOUT_MEAN_S = 5.0


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability per reading of each fault (0 = never)."""

    spike: float = 0.0
    stuck: float = 0.0
    dropout: float = 0.0
    malformed: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    clock_skew: float = 0.0

    @classmethod
    def of(cls, rates: Mapping[str, float]) -> FaultRates:
        """From ``{"spike": 0.01, …}``; raise ValueError naming a bad kind or rate."""
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                msg = f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}"
                raise ValueError(msg)
            if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
                msg = f"fault {kind}: the rate is a probability per reading (0..1), got {rate}"
                raise ValueError(msg)
        return cls(**{k: float(v) for k, v in rates.items()})

    def merged(self, override: Mapping[str, float]) -> FaultRates:
        """These rates with some replaced (a scenario's ``faults`` event)."""
        return FaultRates.of({**self.as_dict(), **override})

    def as_dict(self) -> dict[str, float]:
        """Every rate by fault name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def any(self) -> bool:
        """Whether any fault is on."""
        return any(self.as_dict().values())


def parse_fault(text: str) -> tuple[str, float]:
    """``spike=0.01`` → ``("spike", 0.01)``; raise ValueError with the reason."""
    kind, sep, raw = text.partition("=")
    kind = kind.strip()
    if not sep:
        msg = f"expected KIND=RATE, e.g. spike=0.01, got {text!r}"
        raise ValueError(msg)
    try:
        rate = float(raw)
    except ValueError:
        msg = f"{kind}: rate {raw!r} is not a number"
        raise ValueError(msg) from None
    FaultRates.of({kind: rate})  # validates
    return kind, rate


def malformed(reason: str, sensor: SensorModel, value: float, ts_ms: int) -> tuple[str, bytes]:
    """Topic and payload of a message that sensord must refuse with ``reason``."""
    unit = sensor.spec.unit
    topic = sensor.topic
    if reason == "not_json":
        return topic, f"value={value!r} unit={unit or '-'}".encode()
    if reason == "schema":
        return topic, f'{{"reading": {value!r}, "ts": {ts_ms}}}'.encode()
    if reason == "topic":  # the kind segment missing: a device with a wrong topic setting
        return topic.rpartition("/")[0], json_payload(value, ts_ms, unit)
    if reason == "non_finite":
        return topic, f'{{"value": NaN, "ts": {ts_ms}, "unit": "{unit or ""}"}}'.encode()
    if reason == "too_large":
        head = f'{{"value": {value!r}, "ts": {ts_ms}, "debug": "'.encode()
        return topic, head + b"x" * (TOO_LARGE_BYTES - len(head) - 2) + b'"}'
    if reason == "clock_skew":
        return topic, json_payload(value, ts_ms + FUTURE_SKEW_MS, unit)
    if reason == "unit":
        return topic, json_payload(value, ts_ms, BAD_UNIT)
    msg = f"unknown malformed reason {reason!r}"
    raise ValueError(msg)


class FaultInjector:
    """Applies fault rates to each reading of the fleet; counts what it injected."""

    __slots__ = ("_merged", "active", "counts", "encoder", "rates")

    def __init__(self, rates: FaultRates, encoder: Encoder, seed: int) -> None:
        self.rates = rates
        self.active = rates.any()
        self.encoder = encoder
        self.counts: Counter[str] = Counter()
        self._merged: dict[int, FaultRates] = {}

    def _rates_for(self, cond: Condition) -> FaultRates:
        if not cond.faults:
            return self.rates
        key = id(cond.faults)  # conditions are cached per sensor and segment: few distinct
        merged = self._merged.get(key)
        if merged is None:
            merged = self._merged[key] = self.rates.merged(cond.faults)
        return merged

    def inject(
        self,
        sensor: SensorModel,
        reading: Reading,
        ts_ms: int,
        cond: Condition,
        out: list[Message],
    ) -> None:
        """Append the messages of ``reading`` to ``out``, faults applied."""
        from simulators.fleet import Message  # noqa: PLC0415 - fleet imports this module

        rates = self._rates_for(cond)
        rng = sensor.fault_rng
        rnd = rng.random
        counts = self.counts
        t, value = reading.t, reading.value

        if t < sensor.silent_until:
            return
        if rates.dropout and rnd() < rates.dropout:
            sensor.silent_until = t + rng.expovariate(1.0 / DROPOUT_MEAN_S)
            counts["dropout"] += 1
            return

        fault: str | None = None
        if t < sensor.stuck_until:
            value, fault = sensor.stuck_value, "stuck"
        elif rates.stuck and rnd() < rates.stuck:
            sensor.stuck_until = t + rng.expovariate(1.0 / STUCK_MEAN_S)
            sensor.stuck_value = value
            fault = "stuck"
            counts["stuck"] += 1
        if rates.spike and rnd() < rates.spike and not sensor.spec.boolean:
            value = round(value + rng.choice((-1.0, 1.0)) * sensor.spec.spike, 2)
            fault = "spike"
            counts["spike"] += 1
        if value != reading.value:
            reading = reading._replace(value=value)

        topic = sensor.topic
        if rates.malformed and rnd() < rates.malformed:
            reason = MALFORMED_REASONS[rng.randrange(len(MALFORMED_REASONS))]
            topic, payload = malformed(reason, sensor, value, ts_ms)
            fault = f"malformed:{reason}"
            counts["malformed"] += 1
            counts[fault] += 1
        else:
            if rates.clock_skew and rnd() < rates.clock_skew:
                ts_ms += round(rng.choice((-1, 1)) * rng.uniform(60.0, 1800.0) * 1000)
                fault = "clock_skew"
                counts["clock_skew"] += 1
            payload = self.encoder.encode(sensor, value, ts_ms)
        message = Message(topic, payload, reading, fault)

        held = sensor.held
        if held is None and rates.out_of_order and rnd() < rates.out_of_order:
            sensor.held = message._replace(fault="out_of_order")
            counts["out_of_order"] += 1
            return
        out.append(message)
        if rates.duplicate and rnd() < rates.duplicate:
            out.append(message._replace(fault="duplicate"))
            counts["duplicate"] += 1
        if held is not None:
            sensor.held = None
            out.append(held)
