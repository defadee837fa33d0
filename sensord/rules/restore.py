"""The engine's state across restarts and reloads: hand it over, take it back, swap rules.

`take_dirty()` hands over the states whose durable fields changed and `clocks()` the
deadman clocks (the caller stores them); `restore()` takes a saved snapshot back at start;
`replace_rules()` swaps the rules at a hot reload, keeping the state of unchanged rules.
Rules that changed or vanished meanwhile have their known alerts resolved.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from sensord.rules.index import SensorIndex
from sensord.rules.model import Rule
from sensord.rules.records import (
    AlertTransition,
    ClockRecord,
    SensorKey,
    Snapshot,
    StateRecord,
)
from sensord.rules.state import CompiledRule, Expectation, FlapHistory, Group, RuleState


class Persistence(SensorIndex):
    """Hot reload (`replace_rules`) and persistence (`take_dirty`, `clocks`, `restore`)."""

    _orphans: list[StateRecord]  # rows no state owns any more: take_dirty() deletes them

    # ------------------------------------------------------------ hot reload

    def replace_rules(self, rules: Sequence[Rule], now: float) -> list[AlertTransition]:
        """Swap the rules. Unchanged rules (same name, same definition) keep their state;
        the alerts of changed or removed rules that receivers know as firing are resolved."""
        new = {r.name: r for r in rules}
        keep = {n: c for n, c in self._compiled.items() if new.get(n) == c.rule}
        out: list[AlertTransition] = []
        kept_states: dict[SensorKey, dict[str, RuleState]] = {}
        for sensor in self._sensors.values():
            kept: dict[str, RuleState] = {}
            for st in (*sensor.states, *sensor.absent):
                if st.c.rule.name in keep:
                    kept[st.c.rule.name] = st
                else:
                    self._drop(st, now, out)
            kept_states[sensor.key] = kept
        # a group lives as long as its rule: kept with its window, or dropped (resolved)
        groups: dict[SensorKey, Group] = {}
        for key, group in self._groups.items():
            st = group.states[0]
            if st.c.rule.name in keep:
                groups[key] = group
            else:
                self._drop(st, now, out)
        self._groups = groups
        old_expectations = self._expectations
        self._install(rules, keep)
        self._timed = {st: None for st in self._timed if st.c.rule.name in keep}
        self._absent = []
        for sensor in self._sensors.values():
            self._attach(sensor, kept_states[sensor.key])
        self._expectations = []
        for e in old_expectations:
            if e.c.rule.name in keep:
                self._expectations.append(e)
            elif e.firing_since is not None:
                out.append(
                    AlertTransition(
                        e.c.rule, "resolved", e.labels, None, e.firing_since, now, now, e.c.absent
                    )
                )
                e.firing_since = None
                self.dirty.add(e)
        for c in self._compiled.values():
            if c.rule.name not in keep:
                self._add_expectations(c, now)
        return out

    def _drop(self, st: RuleState, now: float, out: list[AlertTransition]) -> None:
        since = st.announced_since
        if since is not None:
            x = st.last_value
            out.append(
                AlertTransition(
                    st.c.rule, "resolved", st.sensor.labels, x, since, now, now, st.c.threshold(x)
                )
            )
        st.pending_since = st.firing_since = st.clearing_since = None
        if st.flap is not None:
            st.flap = FlapHistory()
        self.dirty.add(st)  # an all-empty record deletes the stored row

    # ------------------------------------------------------------ persistence

    @property
    def has_changes(self) -> bool:
        """True when take_dirty() has something to hand over."""
        return bool(self.dirty or self._orphans)

    def take_dirty(self) -> list[StateRecord]:
        """The states whose durable fields changed since the last call."""
        records = [*self._orphans, *(self._record(st) for st in self.dirty)]
        self.dirty.clear()
        self._orphans.clear()
        return records

    def _record(self, st: RuleState | Expectation) -> StateRecord:
        c = st.c
        if isinstance(st, Expectation):
            firing = None if st.satisfied else st.firing_since
            return StateRecord(
                c.rule.name,
                c.rule_json,
                st.labels,
                expect=st.pattern,
                firing_since=firing,
                announced_since=firing,
            )
        f = st.flap
        return StateRecord(
            c.rule.name,
            c.rule_json,
            st.sensor.labels,
            pending_since=st.pending_since,
            firing_since=st.firing_since,
            clearing_since=st.clearing_since,
            last_value=st.last_value,
            last_ts=st.last_ts,
            announced_since=st.announced_since,
            flapping=f.flapping if f is not None else False,
            flap_history=f.bits if f is not None else 0,
        )

    def clocks(self) -> list[ClockRecord]:
        """Deadman clocks that moved since the last call (sensors with absent_for rules)."""
        out = []
        for sensor in self._sensors.values():
            if sensor.absent and sensor.last_seen != sensor.saved_seen:
                sensor.saved_seen = sensor.last_seen
                out.append(ClockRecord(sensor.labels, sensor.last_seen))
        return out

    def restore(
        self, snapshot: Snapshot, now: float, outage_tolerance: float
    ) -> list[AlertTransition]:
        """Take back saved state. Firing alerts stay firing without a new announcement; the
        alerts of rules that changed or vanished meanwhile are resolved. The downtime does
        not count towards `absent_for`. After a downtime longer than `outage_tolerance`,
        `for` and `keep_firing_for` timers and deadman clocks start afresh."""
        out: list[AlertTransition] = []
        downtime = max(now - snapshot.saved_at, 0.0) if snapshot.saved_at is not None else 0.0
        reset = downtime > outage_tolerance
        # Deadman clocks: sensord could not hear anything while it was down, so the
        # downtime does not count as silence (clocks move forward by it).
        if reset or snapshot.started_at is None:
            self.start = now
        else:
            self.start = snapshot.started_at + downtime
        for e in self._expectations:
            e.since = None
        for clock in snapshot.clocks:
            sensor = self._sensor_for(clock.labels, now)
            sensor.last_seen = now if reset else min(clock.last_seen + downtime, now)
        for rec in snapshot.records:
            self._restore_one(rec, now, reset, out)
        return out

    def adopt(
        self, snapshot: Snapshot, now: float, outage_tolerance: float
    ) -> list[AlertTransition]:
        """Take over the saved state of sensors this engine does not hold yet, beside the
        ones it holds (a central rules process taking a partition over): as `restore`,
        for the snapshot's own sensors only; the engine's start and expectations stay."""
        out: list[AlertTransition] = []
        downtime = max(now - snapshot.saved_at, 0.0) if snapshot.saved_at is not None else 0.0
        reset = downtime > outage_tolerance
        for clock in snapshot.clocks:
            sensor = self._sensor_for(clock.labels, now)
            sensor.last_seen = now if reset else min(clock.last_seen + downtime, now)
        for rec in snapshot.records:
            if rec.expect is None:
                self._restore_one(rec, now, reset, out)
        return out

    def _restore_one(
        self, rec: StateRecord, now: float, reset: bool, out: list[AlertTransition]
    ) -> None:
        c = self._compiled.get(rec.rule)
        try:
            saved_rule = Rule.model_validate_json(rec.rule_json)
        except ValidationError:
            saved_rule = None
        if c is None or saved_rule != c.rule:
            if rec.announced_since is not None and saved_rule is not None:
                out.append(
                    AlertTransition(
                        saved_rule,
                        "resolved",
                        rec.labels,
                        rec.last_value,
                        rec.announced_since,
                        now,
                        now,
                        saved_rule.threshold,
                    )
                )
            self._tombstone(rec)
            return
        if rec.expect is not None:
            for e in self._expectations:
                if e.c is c and e.pattern == rec.expect and not e.satisfied:
                    e.firing_since = rec.firing_since
            return
        st = self._state_for(c, rec.labels, now)
        if st is None:
            self._tombstone(rec)
            return
        st.firing_since = rec.firing_since
        st.last_value = rec.last_value
        st.last_ts = rec.last_ts if rec.last_ts is not None else now
        if reset and (rec.pending_since is not None or rec.clearing_since is not None):
            self.dirty.add(st)
        else:
            st.pending_since = rec.pending_since
            st.clearing_since = rec.clearing_since
            if st.pending_since is not None or st.clearing_since is not None:
                self._timed[st] = None
        if st.flap is not None:
            st.flap.flapping = rec.flapping
            st.flap.bits = rec.flap_history
            st.flap.announced_since = rec.announced_since

    def _state_for(self, c: CompiledRule, labels: dict[str, str], now: float) -> RuleState | None:
        """The state a saved record of rule `c` belongs to: its group's for a group rule
        (the saved labels must be exactly the `by` labels), else its sensor's."""
        if c.by is not None:
            if set(labels) != set(c.by):
                return None
            group = self._group_for(c, labels)
            return group.states[0] if group is not None else None
        sensor = self._sensor_for(labels, now)
        sensor.busy = True
        return next((s for s in (*sensor.states, *sensor.absent) if s.c is c), None)

    def _tombstone(self, rec: StateRecord) -> None:
        """Make take_dirty() delete a stored row that no state owns any more."""
        self._orphans.append(StateRecord(rec.rule, rec.rule_json, rec.labels, expect=rec.expect))
