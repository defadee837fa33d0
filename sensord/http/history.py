"""Recent values per sensor for the status page: bounded, downsampled, in memory.

Each sensor keeps a ring of `slots` buckets of `step` seconds (1 h at 30 s: 120 buckets).
A bucket holds the min, max and last value of the readings whose timestamp falls in it, as
float32 (7 significant digits: a plot's precision; the last value itself is kept exact), and
the bucket's number, so that a slot left over from an older lap of the ring is told apart
without clearing anything. `record` is on the per-reading hot path: one dict lookup, one
tuple for the key, a few array stores; no allocation that grows, no I/O, no logging.
Memory: about 2 KiB per sensor at the defaults (measured by `python -m bench.history`).

Nothing is persisted: after a restart the plots start empty, the alerts (SQLite) do not.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterator

from sensord.events import Reading

SensorKey = tuple[str, ...]

# a hard bound on the sensors tracked, whatever arrives: beyond it new sensors are counted
# in `untracked` and left out of the page (the rules still evaluate them)
MAX_SENSORS = 100_000


class SensorSeries:
    """One sensor: its last reading, exactly, and the ring of buckets."""

    __slots__ = ("buckets", "extra", "hi", "i", "key", "lo", "seen", "stats", "ts", "unit", "value")

    def __init__(self, key: SensorKey, extra: dict[str, str], slots: int) -> None:
        self.key = key
        self.extra = extra  # the labels beyond site/device/kind (shared, read-only)
        self.value = math.nan
        self.ts = -math.inf  # the reading's own timestamp
        self.seen = 0.0  # when sensord received it: the age on the page
        self.unit: str | None = None
        # bucket number per slot (0: never written) and (min, max, last) per slot
        self.buckets = array("i", bytes(4 * slots))
        self.stats = array("f", bytes(12 * slots))
        # the bucket written last: [lo, hi) in time, its index in stats (the fast path)
        self.lo = self.hi = 0.0
        self.i = 0

    @property
    def site(self) -> str:
        return self.key[0]

    @property
    def device(self) -> str:
        return self.key[1]

    @property
    def kind(self) -> str:
        return self.key[2]

    @property
    def id(self) -> str:
        """`site/device/kind[/extra…]`: topic segments never contain a slash."""
        return "/".join(self.key)

    def labels(self) -> dict[str, str]:
        return {**self.extra, "site": self.site, "device": self.device, "kind": self.kind}


class History:
    def __init__(
        self, window: float = 3600.0, step: float = 30.0, max_sensors: int = MAX_SENSORS
    ) -> None:
        if step <= 0 or window < step:
            raise ValueError("history: step must be > 0 and window >= step")
        self.window = window
        self.step = step
        self.slots = math.ceil(window / step)
        self.max_sensors = max_sensors
        self.untracked = 0  # readings of sensors beyond max_sensors (not kept)
        self._series: dict[SensorKey, SensorSeries] = {}

    def __len__(self) -> int:
        return len(self._series)

    def __iter__(self) -> Iterator[SensorSeries]:
        return iter(self._series.values())

    def get(self, key: SensorKey) -> SensorSeries | None:
        return self._series.get(key)

    def find(self, sensor_id: str) -> SensorSeries | None:
        return self._series.get(tuple(sensor_id.split("/")))

    def record(self, reading: Reading, now: float) -> None:
        """Keep one reading (the hot path: called for every reading, in the event loop)."""
        # a Reading's fields straight from its __dict__, as RuleEngine.evaluate reads them
        f = reading.__dict__
        extra = f["labels"]
        key = (
            (f["site"], f["device"], f["kind"], *extra.values())
            if extra
            else (f["site"], f["device"], f["kind"])
        )
        s = self._series.get(key)
        if s is None:
            s = self._add(key, extra)
            if s is None:
                return
        value = f["value"]
        ts = f["ts"]
        s.seen = now
        if ts >= s.ts:  # the newest by its own clock is "the last value"
            s.value = value
            s.ts = ts
            unit = f["unit"]
            if unit is not None:
                s.unit = unit
        if s.lo <= ts < s.hi:  # the bucket written last: nearly every reading
            stats = s.stats
            i = s.i
            if value < stats[i]:  # noqa: PLR1730 - a compare is cheaper than min() here
                stats[i] = value
            if value > stats[i + 1]:  # noqa: PLR1730 - the same
                stats[i + 1] = value
            stats[i + 2] = value
        else:
            self._other_bucket(s, value, ts, now)

    def _add(self, key: SensorKey, extra: dict[str, str]) -> SensorSeries | None:
        if len(self._series) >= self.max_sensors:
            self.untracked += 1
            return None
        s = self._series[key] = SensorSeries(key, extra, self.slots)
        return s

    def _other_bucket(self, s: SensorSeries, value: float, ts: float, now: float) -> None:
        """A reading outside the bucket written last: a new bucket, or a late one."""
        if ts > now:
            ts = now  # a device clock ahead lands in the current bucket, not a future one
        elif ts <= now - self.window:
            return  # older than the plot: the last value is kept, no bucket
        b = int(ts // self.step)
        slot = b % self.slots
        i = slot * 3
        stats = s.stats
        have = s.buckets[slot]
        if have == b:  # a late reading for a bucket still in the ring
            if value < stats[i]:  # noqa: PLR1730 - as in record
                stats[i] = value
            if value > stats[i + 1]:  # noqa: PLR1730 - the same
                stats[i + 1] = value
            stats[i + 2] = value
            return
        if have > b:
            return  # a late reading for a bucket already reused by a newer one: dropped
        # a slot from an older lap of the ring: start the bucket afresh
        s.buckets[slot] = b
        stats[i] = stats[i + 1] = stats[i + 2] = value
        if b * self.step >= s.lo:  # the newest bucket: the fast path's from now on
            s.lo, s.hi, s.i = b * self.step, (b + 1) * self.step, i

    # ---- reading out (HTTP handlers, never the hot path)

    def _head(self, now: float) -> int:
        return int(now // self.step)

    def points(self, s: SensorSeries, now: float) -> list[tuple[float, float, float, float]]:
        """(bucket start, min, max, last) of every non-empty bucket in the window, oldest first."""
        head = self._head(now)
        out = []
        buckets, stats, n = s.buckets, s.stats, self.slots
        for b in range(head - n + 1, head + 1):
            slot = b % n
            if buckets[slot] == b:
                i = slot * 3
                out.append((b * self.step, stats[i], stats[i + 1], stats[i + 2]))
        return out

    def spark(self, s: SensorSeries, now: float) -> list[float | None]:
        """The last value of each bucket of the window, oldest first; None for no reading."""
        head = self._head(now)
        buckets, stats, n = s.buckets, s.stats, self.slots
        return [
            stats[(b % n) * 3 + 2] if buckets[b % n] == b else None
            for b in range(head - n + 1, head + 1)
        ]

    def head_time(self, now: float) -> float:
        """Start of the newest bucket (the last point of a sparkline)."""
        return self._head(now) * self.step


class CounterWindow:
    """The increase of a monotonic counter over the last `span` seconds, from samples.

    Sampled from the scheduler tick (at most once per `every` seconds): a bounded deque,
    never per reading.
    """

    def __init__(self, span: float = 300.0, every: float = 5.0) -> None:
        self.span = span
        self.every = every
        self._samples: deque[tuple[float, int]] = deque(maxlen=math.ceil(span / every) + 2)

    def sample(self, t: float, count: int) -> None:
        if not self._samples or t - self._samples[-1][0] >= self.every:
            self._samples.append((t, count))

    def increase(self, t: float, count: int) -> int:
        """Counted since the oldest sample within `span` of t (or the oldest there is)."""
        base = None
        for st, c in self._samples:
            if st >= t - self.span:
                base = c
                break
        if base is None:
            base = self._samples[-1][1] if self._samples else count
        return max(0, count - base)
