"""Bounded sliding windows of readings, for `aggregate` and `rate` conditions.

A window holds the readings whose timestamps lie in (t - span, t], t being the newest; at
most `max_samples` of them (a ring buffer: the oldest fall out first). Reading time, not
receive time, so replayed or batched readings aggregate as they were measured.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

from sensord.rules.model import Aggregate, Rate


class Series:
    """One sensor's window. Rules with the same (span, max_samples, stale_after) on a
    sensor share one: the engine pushes each reading once and sets `fresh` when it
    entered (it was fresh enough and in order), then each rule reduces the window."""

    __slots__ = ("fresh", "span", "stale", "times", "values")

    def __init__(self, span: float, max_samples: int, stale: float = float("inf")) -> None:
        self.span = span
        self.stale = stale
        self.fresh = False
        self.times: deque[float] = deque(maxlen=max_samples)
        self.values: deque[float] = deque(maxlen=max_samples)

    def push(self, ts: float, value: float) -> bool:
        """Add a reading; False (and nothing added) when it is older than the newest one."""
        times = self.times
        if times and ts < times[-1]:
            return False
        times.append(ts)
        self.values.append(value)
        horizon = ts - self.span
        while times[0] <= horizon:
            times.popleft()
            self.values.popleft()
        return True


class GroupSeries(Series):
    """A group's window (`aggregate.by`): the readings of several sensors, which arrive
    slightly out of order. A reading older than the newest is inserted in time order
    unless it is at or before the window's start (newest - span); in a full window the
    oldest reading falls out to make room, so a reading older than all of a full window
    is not added."""

    __slots__ = ()

    def push(self, ts: float, value: float) -> bool:
        times = self.times
        if not times or ts >= times[-1]:
            return super().push(ts, value)
        if ts <= times[-1] - self.span:
            return False  # before the window's start: it would fall out at once
        values = self.values
        i = bisect_right(times, ts)  # after equal times: arrival order among ties
        if len(times) == times.maxlen:
            if i == 0:
                return False  # older than every reading of a full window
            times.popleft()
            values.popleft()
            i -= 1
        times.insert(i, ts)
        values.insert(i, value)
        return True


Reducer = Callable[[Series], float | None]


def _avg(s: Series) -> float:
    return sum(s.values) / len(s.values)


def _min(s: Series) -> float:
    return min(s.values)


def _max(s: Series) -> float:
    return max(s.values)


def _count(s: Series) -> float:
    return float(len(s.values))


def _p95(s: Series) -> float:
    ordered = sorted(s.values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]  # nearest rank


_REDUCERS: dict[str, Reducer] = {
    "avg": _avg,
    "min": _min,
    "max": _max,
    "count": _count,
    "p95": _p95,
}


def reducer_for(aggregate: Aggregate) -> Reducer:
    return _REDUCERS[aggregate.fn]


def rate_reducer(rate: Rate) -> Reducer:
    per = rate.per

    def _rate(s: Series) -> float | None:
        times = s.times
        if len(times) < 2:
            return None  # one reading is no evidence of a rate
        dt = times[-1] - times[0]
        if dt <= 0:
            return None
        return (s.values[-1] - s.values[0]) / dt * per

    return _rate
