"""Which rules judge which sensor: the rules compiled and indexed by kind, the sensors known.

A sensor's matching rules are found once, on its first reading (through an index on the
rule's literal `kind`), and kept as its states; a sensor heard of for the first time
satisfies the `expect` entries it matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from sensord.rules.groups import GroupIndex
from sensord.rules.model import GLOB_CHARS, Rule
from sensord.rules.records import CORE_LABELS, AlertTransition, SensorKey, sensor_key
from sensord.rules.state import CompiledRule, Expectation, RuleState, Sensor


class SensorIndex(GroupIndex):
    """The rules in force and the sensors known, each with the states of its rules."""

    _fold: bool  # False: no quiet-band shortcut (tests and benchmark compare)
    rules: list[Rule]
    _compiled: dict[str, CompiledRule]
    _by_kind: dict[str, list[CompiledRule]]
    _any_kind: list[CompiledRule]
    _sensors: dict[SensorKey, Sensor]

    def _install(self, rules: Sequence[Rule], keep: dict[str, CompiledRule]) -> None:
        self.rules = list(rules)
        self._compiled = {}
        self._by_kind = {}
        self._any_kind = []
        for i, rule in enumerate(self.rules):
            c = keep.get(rule.name)
            if c is None:
                c = CompiledRule(rule, i)
            c.index = i
            self._compiled[rule.name] = c
            kind = rule.match.get("kind")
            if kind is not None and not GLOB_CHARS.intersection(kind):
                self._by_kind.setdefault(kind, []).append(c)
            else:
                self._any_kind.append(c)

    def _candidates(self, kind: str) -> list[CompiledRule]:
        by_kind = self._by_kind.get(kind)
        if not by_kind:
            return self._any_kind
        if not self._any_kind:
            return by_kind
        return sorted(by_kind + self._any_kind, key=lambda c: c.index)

    def _attach(self, sensor: Sensor, keep: dict[str, RuleState]) -> None:
        """(Re)build a sensor's state lists from the current rules, reusing kept states."""
        sensor.states = []
        sensor.absent = []
        groups: list[RuleState] = []
        for c in self._candidates(sensor.labels.get("kind", "")):
            if not c.rule.matches(sensor.labels):
                continue
            if c.by is not None:  # a group rule: the sensor feeds its group's state
                group = self._join(c, sensor)
                if group is not None:
                    groups.append(group)
                continue
            st = keep.get(c.rule.name) or c.new_state(sensor)
            if c.absent is not None:
                sensor.absent.append(st)
                self._absent.append(st)
            else:
                sensor.states.append(st)
        sensor.groups = groups or ()
        sensor.share_windows()
        sensor.fold(self._fold)

    def _add_sensor(
        self,
        key: SensorKey,
        labels: dict[str, str],
        now: float,
        value: float | None,
        out: list[AlertTransition],
    ) -> Sensor:
        sensor = Sensor(key, labels, now)
        self._sensors[key] = sensor
        self._attach(sensor, {})
        self._satisfy(sensor, now, value, out)
        return sensor

    def _satisfy(
        self, sensor: Sensor, now: float, value: float | None, out: list[AlertTransition]
    ) -> None:
        """A sensor heard of for the first time satisfies the expectations it matches."""
        device = sensor.labels.get("device", "")
        for e in self._expectations:
            if e.satisfied or not fnmatchcase(device, e.pattern):
                continue
            if not e.c.rule.matches(sensor.labels):
                continue
            e.satisfied = True
            self.dirty.add(e)
            if e.firing_since is not None:
                out.append(
                    AlertTransition(
                        e.c.rule, "resolved", e.labels, value, e.firing_since, now, now, e.c.absent
                    )
                )
                e.firing_since = None

    def _sensor_for(self, labels: dict[str, str], now: float) -> Sensor:
        key = sensor_key(labels)
        sensor = self._sensors.get(key)
        if sensor is None:
            ordered = {k: v for k, v in labels.items() if k not in CORE_LABELS}
            ordered.update((k, labels[k]) for k in CORE_LABELS if k in labels)
            sensor = self._add_sensor(key, ordered, now, None, [])
        return sensor

    def _add_expectations(self, c: CompiledRule, since: float | None) -> None:
        for pattern in c.rule.expect:
            e = Expectation(c, pattern, since)
            for sensor in self._sensors.values():
                if fnmatchcase(sensor.labels.get("device", ""), pattern) and c.rule.matches(
                    sensor.labels
                ):
                    e.satisfied = True
                    break
            self._expectations.append(e)
