"""The engine's working state: a rule compiled to numbers, and per (rule, sensor) state.

Small `__slots__` objects, built once per rule and per sensor: the hot path compares
floats held here, not pydantic fields. The logic that moves them is in machine.py
(readings), timers.py (time) and restore.py (restarts and reloads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sensord.rules.model import Rule
from sensord.rules.records import SensorKey
from sensord.rules.windows import GroupSeries, Reducer, Series, rate_reducer, reducer_for

INF = math.inf


class CompiledRule:
    """A rule turned into the numbers the hot path compares."""

    __slots__ = (
        "absent",
        "by",
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
        by = rule.group_by
        self.by = tuple(by) if by is not None else None  # a group rule (aggregate.by)
        self.inside = False
        after = before = math.nextafter
        # Outside-form: breach when x < lo or x > hi; clear when clo < x < chi.
        # Default clear = "no longer in breach", written with the next float so that it
        # stays one strict comparison (x <= 80 is x < nextafter(80, inf)).
        if rule.above is not None:
            self.lo, self.hi = -INF, rule.above
            self.clo = -INF
            cb = rule.clear_below
            self.chi = cb if cb is not None else after(rule.above, INF)
        elif rule.below is not None:
            self.lo, self.hi = rule.below, INF
            ca = rule.clear_above
            self.clo = ca if ca is not None else before(rule.below, -INF)
            self.chi = INF
        elif rule.outside is not None:
            self.lo, self.hi = rule.outside
            ca, cb = rule.clear_above, rule.clear_below
            self.clo = ca if ca is not None else before(self.lo, -INF)
            self.chi = cb if cb is not None else after(self.hi, INF)
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

    def new_state(self, sensor: Sensor) -> RuleState:
        st = RuleState(self, sensor)
        if self.by is not None:
            st.series = GroupSeries(self.span, self.max_samples, self.stale)
        elif self.max_samples:
            st.series = Series(self.span, self.max_samples, self.stale)
        if self.rule.flapping is not None:
            st.flap = FlapHistory()
        return st


def _no_reducer(series: Series) -> float | None:
    raise AssertionError("a raw-value rule has no window")


class FlapHistory:
    __slots__ = ("announced_since", "bits", "flapping")

    def __init__(self) -> None:
        self.bits = 0  # bit 0 is the newest evaluation: 1 = firing
        self.flapping = False
        self.announced_since: float | None = None


class Sensor:
    """One sensor: its labels, the states of the rules that match it, its deadman clock.

    The raw-value threshold rules of a sensor (no window, no flapping) are folded into
    one quiet band [qlo, qhi] (see fold()): while none of them is pending or firing
    (`busy` false), a fresh reading inside the band is judged by all of them at once.
    """

    __slots__ = (
        "absent",
        "busy",
        "folded",
        "groups",
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
        self.states: list[RuleState] = []
        self.folded: list[RuleState] = []
        self.others: list[RuleState] = []
        self.absent: list[RuleState] = []
        self.windows: list[Series] = []
        # the states of the groups it belongs to (aggregate.by): a shared empty tuple for
        # the many sensors in none, so that they pay one falsy test per reading
        self.groups: Sequence[RuleState] = ()
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
        qlo = max((st.c.lo for st in outside), default=-INF)
        qhi = min((st.c.hi for st in outside), default=INF)
        self.folded, self.others = [], []
        for st in self.states:
            c = st.c
            quiet = c.foldable and (not c.inside or c.hi < qlo or c.lo > qhi)
            (self.folded if quiet else self.others).append(st)
        self.qlo, self.qhi = qlo, qhi
        self.qstale = min((st.c.stale for st in self.folded), default=INF)
        if not enabled:  # an empty band: every reading takes the full path
            self.qlo, self.qhi = INF, -INF
        self.busy = True  # until a full evaluation finds every folded state idle


class Group(Sensor):
    """The sensors of one `aggregate.by` rule that share the `by` labels' values: it
    stands where a sensor stands for the state machine (`labels`, one state in `states`),
    so that `for`, `keep_firing_for`, hysteresis and flapping work on it unchanged. Its
    labels are exactly the `by` labels; it is never one of the engine's sensors."""

    __slots__ = ()

    def __init__(self, key: SensorKey, labels: dict[str, str]) -> None:
        super().__init__(key, labels, 0.0)


class RuleState:
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

    def __init__(self, c: CompiledRule, sensor: Sensor) -> None:
        self.c = c
        self.sensor = sensor
        self.pending_since: float | None = None
        self.firing_since: float | None = None
        self.clearing_since: float | None = None
        self.last_value: float | None = None
        self.last_ts = 0.0
        self.series: Series | None = None
        self.flap: FlapHistory | None = None

    @property
    def announced_since(self) -> float | None:
        return self.flap.announced_since if self.flap is not None else self.firing_since


class Expectation:
    """A sensor declared by `expect`: it has a deadman clock before anything is heard of it."""

    __slots__ = ("c", "firing_since", "labels", "pattern", "satisfied", "since")

    def __init__(self, c: CompiledRule, pattern: str, since: float | None) -> None:
        self.c = c
        self.pattern = pattern
        self.labels = {**c.rule.literal_match(), "device": pattern}
        self.satisfied = False
        self.firing_since: float | None = None
        self.since = since  # None: the engine's start
