"""The pure rule engine: readings and clock ticks in, alert transitions out. No I/O.

`evaluate(reading, now)` and `tick(now)` return the transitions they caused. State lives
per (rule, sensor) in small `__slots__` objects; a sensor's matching rules are found once
(through an index on the rule's literal `kind`) and cached, so a reading costs only the
rules that match it. Persistence is the caller's: `take_dirty()` hands over the states
whose durable fields changed, `clocks()` the deadman clocks, `restore()` takes them back.

`RuleEngine` is the façade over the layers it is built of, one module each:
state.py (compiled rules and per-(rule, sensor) state), machine.py (the state machine a
value drives), timers.py (`tick`: `for`, `keep_firing_for`, deadman clocks), groups.py
(rules across sensors: `aggregate.by` groups), index.py (which rules judge which sensor),
restore.py (restart, hot reload, handing state over).
Here: construction, the hot path (`evaluate`) and the read-only queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sensord.events import Reading
from sensord.rules.model import Rule
from sensord.rules.records import (
    AlertTransition,
    ClockRecord,
    SensorKey,
    Snapshot,
    StateRecord,
    Status,
    sensor_key,
)
from sensord.rules.restore import Persistence

__all__ = [
    "AlertTransition",
    "ClockRecord",
    "RuleEngine",
    "SensorKey",
    "Snapshot",
    "StateRecord",
    "Status",
    "sensor_key",
]


class RuleEngine(Persistence):
    def __init__(
        self, rules: Sequence[Rule], *, start: float | None = None, fold: bool = True
    ) -> None:
        """`fold=False` turns the quiet-band shortcut off (tests and benchmark compare)."""
        self._fold = fold
        self.rules = []
        self._compiled = {}
        self._by_kind = {}
        self._any_kind = []
        self._sensors = {}
        self._groups = {}
        self._timed = {}
        self._absent = []
        self._expectations = []
        self.dirty = set()
        self._orphans = []
        self.start = start
        self._install(rules, {})
        for c in self._compiled.values():
            self._add_expectations(c, None)

    def evaluate(self, reading: Reading, now: float) -> list[AlertTransition]:
        """Evaluate every rule that matches the reading's sensor; `now` is the receive time."""
        # The hot path: a Reading's fields are read from its __dict__ (where pydantic keeps
        # them, and where Reading.trusted puts them), a third of the cost of attributes.
        fields = reading.__dict__
        extra = fields["labels"]
        site, device, kind = fields["site"], fields["device"], fields["kind"]
        key: SensorKey = (site, device, kind, *extra.values()) if extra else (site, device, kind)
        out: list[AlertTransition] = []
        sensor = self._sensors.get(key)
        value = fields["value"]
        ts = fields["ts"]
        if sensor is None:
            labels = {**extra, "site": site, "device": device, "kind": kind}
            sensor = self._add_sensor(key, labels, now, value, out)
        sensor.last_seen = now
        if sensor.absent:
            self._heard(sensor, value, ts, out)
        age = now - ts
        # NaN: no evidence (the payload parser refuses it already); x != x is the cheapest test
        if value != value:  # noqa: PLR0124 - see above
            return out
        if sensor.groups:  # rules across sensors (aggregate.by); most sensors feed none
            self._judge_groups(sensor.groups, value, ts, age, out)
        if sensor.windows:
            for window in sensor.windows:
                window.fresh = age <= window.stale and window.push(ts, value)
        full = sensor.busy or not sensor.qlo <= value <= sensor.qhi or age > sensor.qstale
        for st in sensor.states if full else sensor.others:
            c = st.c
            if age > c.stale:
                continue  # too old to be evidence (stale_after)
            series = st.series
            if series is None:
                x = value
            else:
                if not series.fresh:
                    continue  # stale or out of order: it did not enter the window
                agg = c.reducer(series)
                if agg is None:
                    continue  # not enough readings yet (a rate needs two)
                x = agg
            breach = (c.lo <= x <= c.hi) if c.inside else (x < c.lo or x > c.hi)
            if (
                breach
                or st.firing_since is not None
                or st.pending_since is not None
                or st.flap is not None
            ):
                self._step(st, x, ts, breach, out)
        if full:
            for st in sensor.folded:
                if st.firing_since is not None or st.pending_since is not None:
                    sensor.busy = True
                    break
            else:
                sensor.busy = False
        return out

    observe = evaluate  # the foundation's name

    def reset(self) -> None:
        """Forget every sensor and its state, keep the rules, without a transition (a
        central rules process that lost its partitions: their new owner judges them)."""
        self.__init__(self.rules, start=self.start, fold=self._fold)  # type: ignore[misc]

    def sensors(self) -> Iterable[SensorKey]:
        """The sensors heard of (or restored); groups are not among them (see groups())."""
        return self._sensors.keys()

    def groups(self) -> list[tuple[Rule, dict[str, str]]]:
        """The groups of `aggregate.by` rules: (rule, group labels)."""
        return [(g.states[0].c.rule, g.labels) for g in self._groups.values()]

    def firing(self) -> list[tuple[Rule, dict[str, str]]]:
        """The alerts receivers know as firing: (rule, labels)."""
        out = [
            (st.c.rule, sensor.labels)
            for sensor in self._sensors.values()
            for st in (*sensor.states, *sensor.absent)
            if st.announced_since is not None
        ]
        out += [
            (st.c.rule, group.labels)
            for group in self._groups.values()
            for st in group.states
            if st.announced_since is not None
        ]
        out += [(e.c.rule, e.labels) for e in self._expectations if e.firing_since is not None]
        return out

    @property
    def state_count(self) -> int:
        """(rule, sensor) states held: only the rules that match each sensor have one; and
        one per group of an `aggregate.by` rule."""
        sensors = sum(len(s.states) + len(s.absent) for s in self._sensors.values())
        return sensors + len(self._groups)
