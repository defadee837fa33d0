"""Rules across sensors (`aggregate.by`): a group's window, its alert and its timers.

Restarts, reloads and loader errors of group rules: test_group_persistence.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from sensord.alerts.lifecycle import build_event, fingerprint
from sensord.events import Reading
from sensord.rules import AlertTransition, Rule, RuleEngine
from sensord.rules.windows import GroupSeries

SUMMARY = "site {site}: average temperature {value:.1f} above {threshold} ({device})"


def group_rule(**fields: object) -> Rule:
    spec: dict[str, object] = {
        "name": "site-too-warm",
        "match": {"kind": "temperature"},
        "aggregate": {"fn": "avg", "window": "5m", "by": ["site", "kind"]},
        "above": 30,
        **fields,
    }
    return Rule.model_validate(spec)


def reading(value: float, ts: float, device: str, site: str = "plant-1", **labels: str) -> Reading:
    return Reading(site=site, device=device, kind="temperature", value=value, ts=ts, labels=labels)


def feed(engine: RuleEngine, readings: Iterable[tuple[float, Reading]]) -> list[AlertTransition]:
    out: list[AlertTransition] = []
    for now, r in readings:
        out += engine.evaluate(r, now)
    return out


def summary(out: list[AlertTransition]) -> list[tuple[str, dict[str, str], float | None, float]]:
    return [(t.status, t.labels, t.value, t.observed_at) for t in out]


PLANT_1 = {"site": "plant-1", "kind": "temperature"}


# ---------------------------------------------------------------- the group's window


def test_count_of_two_devices_fires_while_neither_alone_is_above() -> None:
    # a mean cannot do this (the pooled mean lies between the devices' own means), a
    # count can: 2 + 2 readings in the window are 4 for the site, 2 for each device
    window = {"fn": "count", "window": "1m"}
    site = group_rule(name="site-busy", aggregate={**window, "by": ["site"]}, above=3)
    device = group_rule(name="device-busy", aggregate=window, above=3)
    engine = RuleEngine([site, device], start=0)
    out = feed(engine, [(t, reading(20, t, f"t-{t % 2}")) for t in range(3)])
    assert out == []
    [firing] = feed(engine, [(3, reading(20, 3, "t-1"))])
    assert (firing.rule.name, firing.labels, firing.value) == ("site-busy", {"site": "plant-1"}, 4)


def test_average_is_the_pooled_mean_of_the_devices() -> None:
    per_sensor = group_rule(name="per-sensor", aggregate={"fn": "avg", "window": "5m"})
    engine = RuleEngine([group_rule(), per_sensor], start=0)
    # t-1 alone is above 30, t-2 below: the site's mean 29.5 is not
    out = feed(engine, [(0, reading(28, 0, "t-2")), (1, reading(31, 1, "t-1"))])
    assert [(t.rule.name, t.labels.get("device")) for t in out] == [("per-sensor", "t-1")]
    [firing] = feed(engine, [(2, reading(34, 2, "t-1"))])  # (31 + 28 + 34) / 3 = 31
    assert (firing.rule.name, firing.status, firing.labels) == ("site-too-warm", "firing", PLANT_1)
    assert firing.value == pytest.approx(31)
    assert (firing.starts_at, firing.threshold) == (2, 30)
    assert sorted((r.name, tuple(labels.values())) for r, labels in engine.firing()) == [
        ("per-sensor", ("plant-1", "t-1", "temperature")),
        ("site-too-warm", ("plant-1", "temperature")),
    ]


def test_two_sites_are_two_alerts_with_their_own_fingerprints_and_labels() -> None:
    engine = RuleEngine([group_rule(annotations={"summary": SUMMARY})], start=0)
    out = feed(
        engine,
        [
            (0, reading(35, 0, "t-1", site="plant-1")),
            (1, reading(36, 1, "t-9", site="plant-2")),
            (2, reading(20, 2, "t-2", site="plant-1")),  # plant-1: 27.5, resolved
        ],
    )
    assert [(t.status, t.labels["site"]) for t in out] == [
        ("firing", "plant-1"),
        ("firing", "plant-2"),
        ("resolved", "plant-1"),
    ]
    one, two = build_event(out[0]), build_event(out[1])
    assert one.fingerprint != two.fingerprint
    assert one.fingerprint == fingerprint("site-too-warm", PLANT_1)  # per group, host-free
    assert build_event(out[2]).fingerprint == one.fingerprint
    # exactly the `by` labels (and alertname, severity): no device, no extra label
    assert one.labels == {
        "alertname": "site-too-warm",
        "site": "plant-1",
        "kind": "temperature",
        "severity": "warning",
    }
    # a name the group does not have stays literal
    assert (
        one.annotations["summary"] == "site plant-1: average temperature 35.0 above 30.0 ({device})"
    )
    assert out[1].value == 36


def test_a_group_rule_adds_its_labels_and_a_sensor_without_a_by_label_joins_none() -> None:
    rule = group_rule(
        aggregate={"fn": "max", "window": "5m", "by": ["site", "zone"]}, labels={"team": "ops"}
    )
    engine = RuleEngine([rule], start=0)
    assert feed(engine, [(0, reading(99, 0, "t-1"))]) == []  # no zone label: no group
    assert engine.state_count == 0
    [firing] = feed(engine, [(1, reading(31, 1, "t-2", zone="north"))])
    assert firing.labels == {"site": "plant-1", "zone": "north"}
    assert build_event(firing).labels["team"] == "ops"
    assert engine.state_count == 1


def test_a_sensor_that_reports_more_often_weighs_more_and_count_counts_readings() -> None:
    avg = group_rule()
    count = group_rule(
        name="busy-site", aggregate={"fn": "count", "window": "1m", "by": ["site"]}, above=3
    )
    engine = RuleEngine([avg, count], start=0)
    # t-1 says 40 once, t-2 says 25 three times: the readings' mean is 28.75 (the mean of
    # the two sensors' means would be 32.5, still firing)
    out = feed(engine, [(0, reading(40, 0, "t-1"))])
    assert [t.rule.name for t in out] == ["site-too-warm"]
    out = feed(engine, [(t, reading(25, t, "t-2")) for t in (1, 2, 3)])
    [resolved, busy] = out
    assert (resolved.rule.name, resolved.status, resolved.observed_at) == (
        "site-too-warm",
        "resolved",
        2,
    )
    assert resolved.value == 30  # (40 + 25 + 25) / 3: no longer above 30
    assert (busy.rule.name, busy.status, busy.value, busy.labels) == (
        "busy-site",
        "firing",
        4,
        {"site": "plant-1"},
    )


def test_late_readings_of_other_sensors_enter_the_window() -> None:
    rule = group_rule(aggregate={"fn": "min", "window": "10s", "by": ["site"]}, below=5, above=None)
    engine = RuleEngine([rule], start=0)
    assert feed(engine, [(20, reading(50, 20, "t-1"))]) == []
    # t-2's reading of 12 s arrives after t-1's of 20 s: inside (10, 20], it counts
    [firing] = feed(engine, [(20.5, reading(1, 12, "t-2"))])
    assert (firing.status, firing.value) == ("firing", 1)
    assert firing.starts_at == 20  # the group's time is its newest reading: no timer goes back
    # one from 10 s is at the window's start (20 - 10): not added, nothing changes
    assert feed(engine, [(21, reading(-40, 10, "t-3"))]) == []
    # 12 s leaves the window once the newest is 22 s; the -40 never entered it
    [resolved] = feed(engine, [(22, reading(50, 22, "t-1"))])
    assert (resolved.status, resolved.value, resolved.ends_at) == ("resolved", 50, 22)


def test_window_expiry_lets_a_group_resolve() -> None:
    engine = RuleEngine([group_rule(aggregate={"fn": "avg", "window": "1m", "by": ["site"]})])
    assert [t.status for t in feed(engine, [(0, reading(40, 0, "t-1"))])] == ["firing"]
    assert feed(engine, [(30, reading(25, 30, "t-2"))]) == []  # avg 32.5
    [resolved] = feed(engine, [(60, reading(25, 60, "t-2"))])  # 40 at 0 s is out of (0, 60]
    assert (resolved.status, resolved.value) == ("resolved", 25)


def test_stale_readings_are_no_evidence_for_a_group() -> None:
    engine = RuleEngine([group_rule(stale_after="10s")], start=0)
    assert feed(engine, [(100, reading(90, 80, "t-1"))]) == []  # 20 s old
    assert engine.firing() == []
    [firing] = feed(engine, [(101, reading(31, 100, "t-2"))])
    assert firing.value == 31  # the stale 90 never entered the window


@pytest.mark.parametrize(
    ("times", "accepted", "kept"),
    [
        pytest.param([5, 7, 6], [True] * 3, [5, 6, 7], id="late-inserted-in-order"),
        pytest.param([5, 7, 6, 6], [True] * 4, [5, 6, 6, 7], id="equal-times-after-each-other"),
        pytest.param([20, 10.5, 10], [True, True, False], [10.5, 20], id="at-window-start-refused"),
        pytest.param([1, 2, 3, 4, 2.5], [True] * 5, [2, 2.5, 3, 4], id="full-drops-the-oldest"),
        pytest.param([1, 2, 3, 4, 0.5], [True] * 4 + [False], [1, 2, 3, 4], id="full-older"),
        pytest.param([1, 25], [True, True], [25], id="in-order-expiry"),
    ],
)
def test_group_series_inserts_late_readings(
    times: list[float], accepted: list[bool], kept: list[float]
) -> None:
    series = GroupSeries(10, 4)
    assert [series.push(t, t * 10) for t in times] == accepted
    assert list(series.times) == kept
    assert list(series.values) == [t * 10 for t in kept]  # values move with their times


# ---------------------------------------------------------------- timers on a group


def test_for_and_keep_firing_for_and_hysteresis_on_a_group() -> None:
    rule = group_rule(
        aggregate={"fn": "avg", "window": "10s", "by": ["site"]},
        clear_below=28,
        keep_firing_for="5s",
        **{"for": "3s"},
    )
    engine = RuleEngine([rule], start=0)
    assert feed(engine, [(0, reading(31, 0, "t-1")), (1, reading(32, 1, "t-2"))]) == []
    assert engine.tick(2) == []  # pending since 0
    [firing] = engine.tick(3)
    assert (firing.status, firing.starts_at, firing.observed_at) == ("firing", 0, 3)
    assert firing.value == pytest.approx(31.5)
    # 29: in the hysteresis band (28 < avg < 30) keeps firing with no clear timer
    assert feed(engine, [(11, reading(29, 11, "t-1")), (12, reading(29, 12, "t-2"))]) == []
    assert engine.tick(30) == []
    # below 28: the clear timer starts; keep_firing_for 5 s ends it on a tick
    assert feed(engine, [(31, reading(20, 31, "t-1"))]) == []  # (21, 31] holds only the 20
    assert engine.tick(35) == []
    [resolved] = engine.tick(36)
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == ("resolved", 0, 36)
    assert engine.firing() == []


def test_a_pending_group_is_cancelled_by_an_average_back_in_range() -> None:
    rule = group_rule(aggregate={"fn": "avg", "window": "1m", "by": ["site"]}, **{"for": "10s"})
    engine = RuleEngine([rule], start=0)
    assert feed(engine, [(0, reading(40, 0, "t-1"))]) == []  # pending
    assert feed(engine, [(5, reading(10, 5, "t-2"))]) == []  # avg 25: cancelled
    assert engine.tick(20) == []
    assert feed(engine, [(21, reading(60, 21, "t-1"))]) == []  # avg 36.7: pending again
    [firing] = engine.tick(31)
    assert firing.starts_at == 21


def test_flapping_on_a_group_holds_its_notifications() -> None:
    rule = group_rule(
        aggregate={"fn": "max", "window": "1s", "by": ["site"]},
        flapping={"low": 0.2, "high": 0.4, "history": 5},
    )
    engine = RuleEngine([rule], start=0)
    values = [40, 20, 40, 20, 40, 20]
    out = feed(engine, [(t, reading(v, t, f"t-{t % 2}")) for t, v in enumerate(values)])
    # 40 fires; 20 resolves, which is two changes in the history (off, on, off): score
    # (1.2 + 1.07) / 4 = 0.57 > 0.4, flapping, and the resolution is held with the rest
    assert [(t.observed_at, t.status) for t in out] == [(0, "firing"), (1, "flapping")]
    [(_, labels)] = engine.firing()  # receivers still know it as firing
    assert labels == {"site": "plant-1"}
    assert all(t.labels == {"site": "plant-1"} for t in out)


def test_sensors_of_no_group_skip_the_group_path() -> None:
    engine = RuleEngine([group_rule(match={"kind": "temperature", "device": "t-*"})])
    feed(engine, [(0, reading(20, 0, "t-1")), (0, reading(20, 0, "x-1"))])
    sensors = engine._sensors  # the per-sensor cache is what is tested
    groups = {key[1]: s.groups for key, s in sensors.items()}
    assert groups["x-1"] == ()
    assert len(groups["t-1"]) == 1
    assert list(engine.sensors()) == [s.key for s in sensors.values()]  # groups are not sensors
    [(rule, labels)] = engine.groups()
    assert (rule.name, labels) == ("site-too-warm", PLANT_1)
