"""Rules across sensors (`aggregate.by`): groups, their members, and their judgement.

A group is the set of sensors that a group rule matches and that share the values of its
`by` labels. Its window holds all of their readings (InfluxQL's `GROUP BY`: a sensor that
reports more often weighs more); its one state is stepped by the same state machine as a
sensor's, with the group's labels. Which groups a sensor feeds is decided once, when the
sensor is first seen (`_join`, from index.py), so that the sensors of no group pay one
falsy test per reading (`sensor.groups`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sensord.rules.records import AlertTransition, SensorKey, group_key
from sensord.rules.state import CompiledRule, Group, RuleState, Sensor
from sensord.rules.timers import Timers


class GroupIndex(Timers):
    """The groups of the group rules in force, keyed by `group_key`."""

    _groups: dict[SensorKey, Group]

    def _group_for(self, c: CompiledRule, labels: dict[str, str]) -> Group | None:
        """The group of rule `c` for these labels (made on first need); None when the
        labels lack one of the rule's `by` labels."""
        by = c.by
        assert by is not None
        key = group_key(c.rule.name, by, labels)
        if key is None:
            return None
        group = self._groups.get(key)
        if group is None:
            group = Group(key, {name: labels[name] for name in by})
            group.states = [c.new_state(group)]
            self._groups[key] = group
        return group

    def _join(self, c: CompiledRule, sensor: Sensor) -> RuleState | None:
        """The state of the group of `c` that the sensor's readings feed, if any."""
        group = self._group_for(c, sensor.labels)
        if group is None:
            return None  # a sensor lacking a `by` label joins no group
        return group.states[0]

    def _judge_groups(
        self,
        states: Sequence[RuleState],
        value: float,
        ts: float,
        age: float,
        out: list[AlertTransition],
    ) -> None:
        """One reading into the windows of its sensor's groups, each judged on its
        aggregate at the group's time (its newest reading: a late reading moves no
        timer back)."""
        for st in states:
            c = st.c
            if age > c.stale:
                continue  # too old to be evidence (stale_after)
            series = st.series
            assert series is not None
            if not series.push(ts, value):
                continue  # before the window's start
            x = c.reducer(series)
            if x is None:
                continue
            breach = (c.lo <= x <= c.hi) if c.inside else (x < c.lo or x > c.hi)
            if (
                breach
                or st.firing_since is not None
                or st.pending_since is not None
                or st.flap is not None
            ):
                self._step(st, x, series.times[-1], breach, out)
