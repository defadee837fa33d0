"""The pure rule engine: readings and clock ticks in, alert transitions out. No I/O.

`evaluate(reading, now)` and `tick(now)` return the transitions they caused. State lives
per (rule, sensor) in small `__slots__` objects; a sensor's matching rules are found once
(through an index on the rule's literal `kind`) and cached, so a reading costs only the
rules that match it. Persistence is the caller's: `take_dirty()` hands over the states
whose durable fields changed, `clocks()` the deadman clocks, `restore()` takes them back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal, NamedTuple

from pydantic import ValidationError

from sensord.events import Reading
from sensord.rules.model import GLOB_CHARS, Rule
from sensord.rules.windows import Reducer, Series, rate_reducer, reducer_for

SensorKey = tuple[str, ...]
Status = Literal["firing", "resolved", "flapping"]
_INF = math.inf
_CORE = ("site", "device", "kind")


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


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The durable part of one (rule, sensor) state; all-empty means: delete the row."""

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


class _Compiled:
    """A rule turned into the numbers the hot path compares."""

    __slots__ = (
        "absent",
        "chi",
        "clo",
        "flap_high",
        "flap_low",
        "flap_mask",
        "flap_weights",
        "foldable",
        "for_",
        "hi",
        "index",
        "inside",
        "keep",
        "lo",
        "max_samples",
        "reducer",
        "rule",
        "rule_json",
        "span",
        "stale",
    )

    def __init__(self, rule: Rule, index: int) -> None:
        self.rule = rule
        self.rule_json = rule.model_dump_json(by_alias=True)
        self.index = index
        self.for_ = rule.for_
        self.keep = rule.keep_firing_for
        self.stale = rule.stale_after
        self.absent = rule.absent_for
        self.inside = False
        after = before = math.nextafter
        # Outside-form: breach when x < lo or x > hi; clear when clo < x < chi.
        # Default clear = "no longer in breach", written with the next float so that it
        # stays one strict comparison (x <= 80 is x < nextafter(80, inf)).
        if rule.above is not None:
            self.lo, self.hi = -_INF, rule.above
            self.clo = -_INF
            cb = rule.clear_below
            self.chi = cb if cb is not None else after(rule.above, _INF)
        elif rule.below is not None:
            self.lo, self.hi = rule.below, _INF
            ca = rule.clear_above
            self.clo = ca if ca is not None else before(rule.below, -_INF)
            self.chi = _INF
        elif rule.outside is not None:
            self.lo, self.hi = rule.outside
            ca, cb = rule.clear_above, rule.clear_below
            self.clo = ca if ca is not None else before(self.lo, -_INF)
            self.chi = cb if cb is not None else after(self.hi, _INF)
        elif rule.inside is not None:
            # Inside-form: breach when lo <= x <= hi; clear when x < clo or x > chi.
            self.inside = True
            self.lo, self.hi = rule.inside
            cb, ca = rule.clear_below, rule.clear_above
            self.clo = cb if cb is not None else self.lo
            self.chi = ca if ca is not None else self.hi
        else:
            self.lo = self.hi = self.clo = self.chi = 0.0
        self.reducer: Reducer = _no_reducer  # only called when a state has a series
        self.span = 0.0
        self.max_samples = 0
        if rule.aggregate is not None:
            self.reducer = reducer_for(rule.aggregate)
            self.span, self.max_samples = rule.aggregate.window, rule.aggregate.max_samples
        elif rule.rate is not None:
            self.reducer = rate_reducer(rule.rate)
            self.span, self.max_samples = rule.rate.span, rule.rate.max_samples
        flap = rule.flapping
        self.foldable = not self.max_samples and flap is None and self.absent is None
        self.flap_low = flap.low if flap else 0.0
        self.flap_high = flap.high if flap else 0.0
        n = flap.history if flap else 0
        self.flap_mask = (1 << n) - 1
        # Nagios/Kapacitor: the newest change weighs 1.2, the oldest 0.8, linearly between.
        self.flap_weights = tuple(1.2 - 0.4 * j / (n - 2) for j in range(n - 1)) if flap else ()

    def threshold(self, value: float | None) -> float | None:
        outside = self.rule.outside
        if outside is not None and value is not None:
            return outside[1] if value > outside[1] else outside[0]
        return self.rule.threshold

    def new_state(self, sensor: _Sensor) -> _State:
        st = _State(self, sensor)
        if self.max_samples:
            st.series = Series(self.span, self.max_samples, self.stale)
        if self.rule.flapping is not None:
            st.flap = _Flap()
        return st


def _no_reducer(series: Series) -> float | None:
    raise AssertionError("a raw-value rule has no window")


class _Flap:
    __slots__ = ("announced_since", "bits", "flapping")

    def __init__(self) -> None:
        self.bits = 0  # bit 0 is the newest evaluation: 1 = firing
        self.flapping = False
        self.announced_since: float | None = None


class _Sensor:
    """One sensor: its labels, the states of the rules that match it, its deadman clock.

    The raw-value threshold rules of a sensor (no window, no flapping) are folded into
    one quiet band [qlo, qhi] (see fold()): while none of them is pending or firing
    (`busy` false), a fresh reading inside the band is judged by all of them at once.
    """

    __slots__ = (
        "absent",
        "busy",
        "folded",
        "key",
        "labels",
        "last_seen",
        "others",
        "qhi",
        "qlo",
        "qstale",
        "saved_seen",
        "states",
        "windows",
    )

    def __init__(self, key: SensorKey, labels: dict[str, str], now: float) -> None:
        self.key = key
        self.labels = labels
        self.states: list[_State] = []
        self.folded: list[_State] = []
        self.others: list[_State] = []
        self.absent: list[_State] = []
        self.windows: list[Series] = []
        self.busy = True
        self.qlo = self.qhi = self.qstale = 0.0
        self.last_seen = now
        self.saved_seen: float | None = None

    def share_windows(self) -> None:
        """One Series per distinct (span, max_samples, stale_after) among the states."""
        shared: dict[tuple[float, int, float], Series] = {}
        for st in self.states:
            series = st.series
            if series is None:
                continue
            c = st.c
            key = (c.span, c.max_samples, c.stale)
            st.series = shared.setdefault(key, series)
        self.windows = list(shared.values())

    def fold(self, enabled: bool) -> None:
        """The quiet band: values in breach of none of the folded rules. Outside-form rules
        (above, below, outside) narrow it; an `inside` rule is folded only when its band
        lies wholly beside the quiet one (else it is judged on its own)."""
        outside = [st for st in self.states if st.c.foldable and not st.c.inside]
        qlo = max((st.c.lo for st in outside), default=-_INF)
        qhi = min((st.c.hi for st in outside), default=_INF)
        self.folded, self.others = [], []
        for st in self.states:
            c = st.c
            quiet = c.foldable and (not c.inside or c.hi < qlo or c.lo > qhi)
            (self.folded if quiet else self.others).append(st)
        self.qlo, self.qhi = qlo, qhi
        self.qstale = min((st.c.stale for st in self.folded), default=_INF)
        if not enabled:  # an empty band: every reading takes the full path
            self.qlo, self.qhi = _INF, -_INF
        self.busy = True  # until a full evaluation finds every folded state idle


class _State:
    __slots__ = (
        "c",
        "clearing_since",
        "firing_since",
        "flap",
        "last_ts",
        "last_value",
        "pending_since",
        "sensor",
        "series",
    )

    def __init__(self, c: _Compiled, sensor: _Sensor) -> None:
        self.c = c
        self.sensor = sensor
        self.pending_since: float | None = None
        self.firing_since: float | None = None
        self.clearing_since: float | None = None
        self.last_value: float | None = None
        self.last_ts = 0.0
        self.series: Series | None = None
        self.flap: _Flap | None = None

    @property
    def announced_since(self) -> float | None:
        return self.flap.announced_since if self.flap is not None else self.firing_since


class _Expectation:
    """A sensor declared by `expect`: it has a deadman clock before anything is heard of it."""

    __slots__ = ("c", "firing_since", "labels", "pattern", "satisfied", "since")

    def __init__(self, c: _Compiled, pattern: str, since: float | None) -> None:
        self.c = c
        self.pattern = pattern
        self.labels = {**c.rule.literal_match(), "device": pattern}
        self.satisfied = False
        self.firing_since: float | None = None
        self.since = since  # None: the engine's start


def sensor_key(labels: dict[str, str]) -> SensorKey:
    """The key `evaluate` computes from a reading, rebuilt from the labels dict it made."""
    extra = [v for k, v in labels.items() if k not in _CORE]
    return (labels.get("site", ""), labels.get("device", ""), labels.get("kind", ""), *extra)


class RuleEngine:
    def __init__(
        self, rules: Sequence[Rule], *, start: float | None = None, fold: bool = True
    ) -> None:
        """`fold=False` turns the quiet-band shortcut off (tests and benchmark compare)."""
        self._fold = fold
        self.rules: list[Rule] = []
        self._compiled: dict[str, _Compiled] = {}
        self._by_kind: dict[str, list[_Compiled]] = {}
        self._any_kind: list[_Compiled] = []
        self._sensors: dict[SensorKey, _Sensor] = {}
        # pending `for` or `keep_firing_for` running; a dict: an ordered set, so that tick()
        # reports in a reproducible order
        self._timed: dict[_State, None] = {}
        self._absent: list[_State] = []
        self._expectations: list[_Expectation] = []
        self.dirty: set[_State | _Expectation] = set()
        self._orphans: list[StateRecord] = []
        self.start = start
        self._install(rules, {})
        for c in self._compiled.values():
            self._add_expectations(c, None)

    # ------------------------------------------------------------ rules and sensors

    def _install(self, rules: Sequence[Rule], keep: dict[str, _Compiled]) -> None:
        self.rules = list(rules)
        self._compiled = {}
        self._by_kind = {}
        self._any_kind = []
        for i, rule in enumerate(self.rules):
            c = keep.get(rule.name)
            if c is None:
                c = _Compiled(rule, i)
            c.index = i
            self._compiled[rule.name] = c
            kind = rule.match.get("kind")
            if kind is not None and not GLOB_CHARS.intersection(kind):
                self._by_kind.setdefault(kind, []).append(c)
            else:
                self._any_kind.append(c)

    def _candidates(self, kind: str) -> list[_Compiled]:
        by_kind = self._by_kind.get(kind)
        if not by_kind:
            return self._any_kind
        if not self._any_kind:
            return by_kind
        return sorted(by_kind + self._any_kind, key=lambda c: c.index)

    def _attach(self, sensor: _Sensor, keep: dict[str, _State]) -> None:
        """(Re)build a sensor's state lists from the current rules, reusing kept states."""
        sensor.states = []
        sensor.absent = []
        for c in self._candidates(sensor.labels.get("kind", "")):
            if not c.rule.matches(sensor.labels):
                continue
            st = keep.get(c.rule.name) or c.new_state(sensor)
            if c.absent is not None:
                sensor.absent.append(st)
                self._absent.append(st)
            else:
                sensor.states.append(st)
        sensor.share_windows()
        sensor.fold(self._fold)

    def _add_sensor(
        self,
        key: SensorKey,
        labels: dict[str, str],
        now: float,
        value: float | None,
        out: list[AlertTransition],
    ) -> _Sensor:
        sensor = _Sensor(key, labels, now)
        self._sensors[key] = sensor
        self._attach(sensor, {})
        self._satisfy(sensor, now, value, out)
        return sensor

    def _satisfy(
        self, sensor: _Sensor, now: float, value: float | None, out: list[AlertTransition]
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

    def _sensor_for(self, labels: dict[str, str], now: float) -> _Sensor:
        key = sensor_key(labels)
        sensor = self._sensors.get(key)
        if sensor is None:
            ordered = {k: v for k, v in labels.items() if k not in _CORE}
            ordered.update((k, labels[k]) for k in _CORE if k in labels)
            sensor = self._add_sensor(key, ordered, now, None, [])
        return sensor

    # ------------------------------------------------------------ evaluation

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

    def _heard(self, sensor: _Sensor, value: float, ts: float, out: list[AlertTransition]) -> None:
        """A reading resolves the sensor's firing deadman alerts: the silent one speaks."""
        for st in sensor.absent:
            if st.firing_since is not None:
                c = st.c
                out.append(
                    AlertTransition(
                        c.rule, "resolved", sensor.labels, value, st.firing_since, ts, ts, c.absent
                    )
                )
                st.firing_since = None
                self.dirty.add(st)

    def _step(
        self, st: _State, x: float, ts: float, breach: bool, out: list[AlertTransition]
    ) -> None:
        c = st.c
        before = len(out)
        if st.firing_since is None:
            if breach:
                if st.pending_since is None:
                    st.pending_since = ts
                    self.dirty.add(st)
                st.last_value = x
                st.last_ts = ts
                if ts - st.pending_since >= c.for_:
                    self._fire(st, x, ts, out)
                else:
                    self._timed[st] = None
            elif st.pending_since is not None:  # `for` interrupted
                st.pending_since = None
                self._timed.pop(st, None)
                self.dirty.add(st)
        else:
            st.last_value = x
            st.last_ts = ts
            clear = (x < c.clo or x > c.chi) if c.inside else (c.clo < x < c.chi)
            if clear:
                if not c.keep:
                    self._resolve(st, x, ts, out)
                else:
                    if st.clearing_since is None:
                        st.clearing_since = ts
                        self._timed[st] = None
                        self.dirty.add(st)
                    if ts - st.clearing_since >= c.keep:
                        self._resolve(st, x, ts, out)
            elif st.clearing_since is not None:  # keep_firing_for re-arms
                st.clearing_since = None
                self._timed.pop(st, None)
                self.dirty.add(st)
        if st.flap is not None:
            self._flap(st, x, ts, before, out)

    def _fire(
        self, st: _State, x: float | None, observed: float, out: list[AlertTransition]
    ) -> None:
        c = st.c
        st.firing_since = st.pending_since
        st.pending_since = None
        self._timed.pop(st, None)
        self.dirty.add(st)
        assert st.firing_since is not None
        out.append(
            AlertTransition(
                c.rule,
                "firing",
                st.sensor.labels,
                x,
                st.firing_since,
                observed,
                None,
                c.threshold(x),
            )
        )

    def _resolve(
        self, st: _State, x: float | None, observed: float, out: list[AlertTransition]
    ) -> None:
        c = st.c
        assert st.firing_since is not None
        out.append(
            AlertTransition(
                c.rule,
                "resolved",
                st.sensor.labels,
                x,
                st.firing_since,
                observed,
                observed,
                c.threshold(x),
            )
        )
        st.firing_since = None
        st.clearing_since = None
        self._timed.pop(st, None)
        self.dirty.add(st)

    def _flap(
        self, st: _State, x: float | None, observed: float, before: int, out: list[AlertTransition]
    ) -> None:
        """Record the evaluation in the history; hold notifications while flapping."""
        f = st.flap
        assert f is not None
        c = st.c
        f.bits = ((f.bits << 1) | (st.firing_since is not None)) & c.flap_mask
        changes = f.bits ^ (f.bits >> 1)
        weights = c.flap_weights
        score = sum(w for j, w in enumerate(weights) if changes >> j & 1) / len(weights)
        new = out[before:]
        del out[before:]
        if not f.flapping:
            if score > c.flap_high:
                f.flapping = True
                self.dirty.add(st)
                since = st.firing_since if st.firing_since is not None else observed
                out.append(
                    AlertTransition(
                        c.rule,
                        "flapping",
                        st.sensor.labels,
                        x,
                        since,
                        observed,
                        None,
                        c.threshold(x),
                    )
                )
                return  # what this evaluation changed is held with the rest
            for tr in new:
                out.append(tr)
                f.announced_since = tr.starts_at if tr.status == "firing" else None
            return
        if score >= c.flap_low:
            return  # still flapping: held
        f.flapping = False
        self.dirty.add(st)
        if st.firing_since is not None and f.announced_since is None:
            f.announced_since = st.firing_since
            out.append(
                AlertTransition(
                    c.rule,
                    "firing",
                    st.sensor.labels,
                    x,
                    st.firing_since,
                    observed,
                    None,
                    c.threshold(x),
                )
            )
        elif st.firing_since is None and f.announced_since is not None:
            out.append(
                AlertTransition(
                    c.rule,
                    "resolved",
                    st.sensor.labels,
                    x,
                    f.announced_since,
                    observed,
                    observed,
                    c.threshold(x),
                )
            )
            f.announced_since = None

    def tick(self, now: float) -> list[AlertTransition]:
        """Time passes: `for` and `keep_firing_for` elapse between readings; deadman clocks."""
        out: list[AlertTransition] = []
        if self.start is None:
            self.start = now
        for st in list(self._timed):
            c = st.c
            before = len(out)
            if st.pending_since is not None:
                if now - st.last_ts > c.stale:  # the evidence went stale: no longer pending
                    st.pending_since = None
                    self._timed.pop(st, None)
                    self.dirty.add(st)
                    continue
                if now - st.pending_since < c.for_:
                    continue
                self._fire(st, st.last_value, now, out)
            elif st.clearing_since is not None:
                if now - st.clearing_since < c.keep:
                    continue
                self._resolve(st, st.last_value, now, out)
            else:
                self._timed.pop(st, None)
                continue
            if st.flap is not None:
                self._flap(st, st.last_value, now, before, out)
        for st in self._absent:
            absent = st.c.absent
            assert absent is not None
            if st.firing_since is None and now - st.sensor.last_seen >= absent:
                st.firing_since = now
                self.dirty.add(st)
                out.append(
                    AlertTransition(
                        st.c.rule, "firing", st.sensor.labels, None, now, now, None, absent
                    )
                )
        for e in self._expectations:
            absent = e.c.absent
            assert absent is not None
            since = e.since if e.since is not None else self.start
            if not e.satisfied and e.firing_since is None and now - since >= absent:
                e.firing_since = now
                self.dirty.add(e)
                out.append(
                    AlertTransition(e.c.rule, "firing", e.labels, None, now, now, None, absent)
                )
        return out

    # ------------------------------------------------------------ hot reload

    def replace_rules(self, rules: Sequence[Rule], now: float) -> list[AlertTransition]:
        """Swap the rules. Unchanged rules (same name, same definition) keep their state;
        the alerts of changed or removed rules that receivers know as firing are resolved."""
        new = {r.name: r for r in rules}
        keep = {n: c for n, c in self._compiled.items() if new.get(n) == c.rule}
        out: list[AlertTransition] = []
        kept_states: dict[SensorKey, dict[str, _State]] = {}
        for sensor in self._sensors.values():
            kept: dict[str, _State] = {}
            for st in (*sensor.states, *sensor.absent):
                if st.c.rule.name in keep:
                    kept[st.c.rule.name] = st
                else:
                    self._drop(st, now, out)
            kept_states[sensor.key] = kept
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

    def _drop(self, st: _State, now: float, out: list[AlertTransition]) -> None:
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
            st.flap = _Flap()
        self.dirty.add(st)  # an all-empty record deletes the stored row

    def _add_expectations(self, c: _Compiled, since: float | None) -> None:
        for pattern in c.rule.expect:
            e = _Expectation(c, pattern, since)
            for sensor in self._sensors.values():
                if fnmatchcase(sensor.labels.get("device", ""), pattern) and c.rule.matches(
                    sensor.labels
                ):
                    e.satisfied = True
                    break
            self._expectations.append(e)

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

    def _record(self, st: _State | _Expectation) -> StateRecord:
        c = st.c
        if isinstance(st, _Expectation):
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
        sensor = self._sensor_for(rec.labels, now)
        st = next((s for s in (*sensor.states, *sensor.absent) if s.c is c), None)
        if st is None:
            self._tombstone(rec)
            return
        sensor.busy = True
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

    def _tombstone(self, rec: StateRecord) -> None:
        """Make take_dirty() delete a stored row that no state owns any more."""
        self._orphans.append(StateRecord(rec.rule, rec.rule_json, rec.labels, expect=rec.expect))

    def sensors(self) -> Iterable[SensorKey]:
        return self._sensors.keys()

    def firing(self) -> list[tuple[Rule, dict[str, str]]]:
        """The alerts receivers know as firing: (rule, labels)."""
        out = [
            (st.c.rule, sensor.labels)
            for sensor in self._sensors.values()
            for st in (*sensor.states, *sensor.absent)
            if st.announced_since is not None
        ]
        out += [(e.c.rule, e.labels) for e in self._expectations if e.firing_since is not None]
        return out

    @property
    def state_count(self) -> int:
        """(rule, sensor) states held: only the rules that match each sensor have one."""
        return sum(len(s.states) + len(s.absent) for s in self._sensors.values())
