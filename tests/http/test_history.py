"""The status page's history ring (sensord/http/history.py): pure, time passed in."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from sensord.events import Reading
from sensord.http.history import CounterWindow, History

T0 = 1_764_331_200.0  # a multiple of 30 s and of 3600 s


def reading(value: float, ts: float, device: str = "t-1", **labels: str) -> Reading:
    return Reading.trusted("plant-1", device, "temperature", value, ts, labels, "C")


def test_buckets_keep_min_max_and_last_of_their_readings() -> None:
    h = History(window=3600, step=30)
    for value, dt in ((20.0, 1), (25.5, 5), (18.0, 10), (21.0, 29), (30.0, 31)):
        h.record(reading(value, T0 + dt), T0 + dt)
    s = h.find("plant-1/t-1/temperature")
    assert s is not None
    assert h.points(s, T0 + 40) == [(T0, 18.0, 25.5, 21.0), (T0 + 30, 30.0, 30.0, 30.0)]
    assert (s.value, s.unit, s.ts, s.seen) == (30.0, "C", T0 + 31, T0 + 31)


def test_sparkline_spans_the_window_with_gaps_as_none() -> None:
    h = History(window=300, step=30)  # 10 buckets
    h.record(reading(1.0, T0 + 5), T0 + 5)
    h.record(reading(2.0, T0 + 95), T0 + 95)  # bucket 3; 1 and 2 stay empty
    s = h.find("plant-1/t-1/temperature")
    assert s is not None
    spark = h.spark(s, T0 + 100)
    assert len(spark) == 10
    assert spark[-4:] == [1.0, None, None, 2.0]
    assert spark[:-4] == [None] * 6
    assert h.head_time(T0 + 100) == T0 + 90


def test_old_buckets_fall_out_of_the_window_and_slots_are_reused() -> None:
    h = History(window=300, step=30)
    h.record(reading(1.0, T0), T0)
    # a lap later the same slot holds a new bucket; the old one is gone, not mixed in
    h.record(reading(5.0, T0 + 300), T0 + 300)
    s = h.find("plant-1/t-1/temperature")
    assert s is not None
    assert h.points(s, T0 + 300) == [(T0 + 300, 5.0, 5.0, 5.0)]
    # ten minutes of silence: nothing left to plot, the last value is still known
    assert h.points(s, T0 + 900) == []
    assert s.value == 5.0


def test_late_and_early_readings_never_corrupt_a_bucket() -> None:
    h = History(window=300, step=30)
    h.record(reading(5.0, T0 + 300), T0 + 300)
    h.record(reading(99.0, T0 + 1), T0 + 305)  # late, for the bucket this slot held a lap ago
    h.record(reading(98.0, T0 - 10_000), T0 + 306)  # far older than the window
    h.record(reading(7.0, T0 + 10_000), T0 + 307)  # a device clock hours ahead: "now"
    s = h.find("plant-1/t-1/temperature")
    assert s is not None
    assert h.points(s, T0 + 307) == [(T0 + 300, 5.0, 7.0, 7.0)]
    # the newest by the reading's own clock is the last value
    assert s.value == 7.0
    assert s.seen == T0 + 307


def test_values_beyond_float32_are_kept_exact_as_last_and_infinite_in_buckets() -> None:
    h = History(window=300, step=30)
    h.record(reading(1e300, T0), T0)
    s = h.find("plant-1/t-1/temperature")
    assert s is not None
    assert s.value == 1e300
    (_, lo, hi, last) = h.points(s, T0)[0]
    assert math.isinf(lo)
    assert math.isinf(hi)
    assert math.isinf(last)


def test_sensors_are_told_apart_by_every_label_and_bounded_in_number() -> None:
    h = History(window=300, step=30, max_sensors=2)
    h.record(reading(1.0, T0, line="a"), T0)
    h.record(reading(2.0, T0, line="b"), T0)
    h.record(reading(3.0, T0, device="t-2"), T0)  # a third sensor: beyond the bound
    assert len(h) == 2
    assert h.untracked == 1
    a = h.find("plant-1/t-1/temperature/a")
    assert a is not None
    assert a.labels() == {"line": "a", "site": "plant-1", "device": "t-1", "kind": "temperature"}
    assert a.id == "plant-1/t-1/temperature/a"
    assert h.find("plant-1/t-2/temperature") is None


@pytest.mark.parametrize(("window", "step"), [(3600, 0), (10, 30), (-1, 1)])
def test_bad_shapes_are_refused(window: float, step: float) -> None:
    with pytest.raises(ValueError, match="history"):
        History(window=window, step=step)


def test_memory_per_sensor_is_bounded_and_does_not_grow_with_readings() -> None:
    h = History(window=3600, step=30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            h.record(reading(20.0, T0, device=f"d-{i}"), T0)
        per_sensor = (tracemalloc.get_traced_memory()[0] - before) / 1000
        for t in range(0, 7200, 7):  # two hours of readings for each of 50 sensors
            for i in range(50):
                h.record(reading(20.0 + t % 13, T0 + t, device=f"d-{i}"), T0 + t)
        grown = tracemalloc.get_traced_memory()[0] - before - per_sensor * 1000
    finally:
        tracemalloc.stop()
    # 120 buckets: 120 x 4 bytes of bucket number + 120 x 3 x 4 bytes of float32, plus
    # the objects around them
    assert 1920 <= per_sensor < 3000, per_sensor
    assert grown < 50_000, grown  # two hours more of readings allocate nothing that stays


def test_counter_window_counts_the_increase_over_its_span() -> None:
    w = CounterWindow(span=300, every=5)
    w.sample(0.0, 0)
    assert w.increase(1.0, 3) == 3
    for t in range(5, 1000, 5):
        w.sample(float(t), t // 100)  # one more every 100 s
    # at t=1000 the count is 10; 300 s ago (t=700) it was 7
    assert w.increase(1000.0, 10) == 3
    w.sample(1001.0, 10)  # too soon after the last sample: not kept
    assert w.increase(1000.0, 10) == 3
    assert CounterWindow().increase(0.0, 4) == 0  # no sample yet: nothing known
