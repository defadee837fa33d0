"""What the rule engine hands out: alert transitions, and the records of its durable state.

The caller persists `StateRecord`s and `ClockRecord`s (sensord/state/store.py) and gives
them back as a `Snapshot` at start (`RuleEngine.restore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from sensord.rules.model import Rule

SensorKey = tuple[str, ...]
Status = Literal["firing", "resolved", "flapping"]
CORE_LABELS = ("site", "device", "kind")
# the first element of a group's key: no sensor's (a sensor's key starts with its site)
GROUP_MARK = "\x00group"


class AlertTransition(NamedTuple):
    """What the engine decided: an alert began firing, resolved, or began flapping.

    `flapping` is a marker, not a notification: while an alert flaps its firing and
    resolved transitions are held (see docs/rules.md, "Flapping"). A NamedTuple: built
    in the evaluation path, it costs a third of a frozen dataclass.
    """

    rule: Rule
    status: Status
    labels: dict[str, str]
    value: float | None
    starts_at: float
    observed_at: float
    ends_at: float | None = None
    threshold: float | None = None


class StateRecord(NamedTuple):
    """The durable part of one (rule, sensor) state; all-empty means: delete the row.

    A NamedTuple, as AlertTransition: one is built per changed state per batch (an alert
    storm: one per transition), and a frozen dataclass of 12 fields cost 3x as much."""

    rule: str
    rule_json: str
    labels: dict[str, str]
    expect: str | None = None  # the `expect` entry of a declared, never-seen sensor
    pending_since: float | None = None
    firing_since: float | None = None
    clearing_since: float | None = None
    last_value: float | None = None
    last_ts: float | None = None
    announced_since: float | None = None  # starts_at of the episode receivers know of
    flapping: bool = False
    flap_history: int = 0

    @property
    def idle(self) -> bool:
        return (
            self.pending_since is None
            and self.firing_since is None
            and self.clearing_since is None
            and self.announced_since is None
            and not self.flapping
        )


@dataclass(frozen=True, slots=True)
class ClockRecord:
    """A deadman clock: when a sensor that has `absent_for` rules was last heard of."""

    labels: dict[str, str]
    last_seen: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    records: list[StateRecord]
    clocks: list[ClockRecord]
    saved_at: float | None = None  # last time the state was flushed (≈ when sensord stopped)
    started_at: float | None = None  # when the expectations' clocks started


def sensor_key(labels: dict[str, str]) -> SensorKey:
    """The key `evaluate` computes from a reading, rebuilt from the labels dict it made."""
    extra = [v for k, v in labels.items() if k not in CORE_LABELS]
    return (labels.get("site", ""), labels.get("device", ""), labels.get("kind", ""), *extra)


def group_key(rule: str, by: Sequence[str], labels: dict[str, str]) -> SensorKey | None:
    """The key of the `aggregate.by` group of `rule` that a sensor (or a saved group
    state) with these labels belongs to; None when a `by` label is missing. Groups are
    kept apart from sensors, and their keys have a shape of their own (GROUP_MARK, the
    rule's name, the `by` values), so that `sensor_key` never rebuilds one."""
    values = []
    for name in by:
        value = labels.get(name)
        if value is None:
            return None
        values.append(value)
    return (GROUP_MARK, rule, *values)
