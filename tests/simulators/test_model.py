"""sensord-sim's pure model: kinds and their physics, scenarios, faults, payload formats.

No broker here: the fleet takes elapsed time as an argument. sensord's own payload parser
checks that what the simulator calls valid or invalid is what sensord calls so.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from sensord.errors import PayloadError
from sensord.ingest.payload import PayloadParser
from simulators.faults import MALFORMED_REASONS, TOO_LARGE_BYTES, FaultRates, parse_fault
from simulators.fleet import DEFAULT_EPOCH_MS, Fleet, Message, Reading
from simulators.payloads import Format
from simulators.physics import KINDS
from simulators.scenario import (
    Scenario,
    ScenarioError,
    Timeline,
    builtin_names,
    load_scenario,
    parse_scenario,
)

ALL_KINDS = tuple(KINDS)


def _by_topic(messages: list[Message]) -> dict[str, list[Reading]]:
    out: dict[str, list[Reading]] = defaultdict(list)
    for m in messages:
        out[m.reading.topic].append(m.reading)
    return out


def _scenario(yaml_text: str) -> Scenario:
    return parse_scenario(yaml_text, "test.yaml")


def _mean(readings: list[Reading], start: float, end: float) -> float:
    return statistics.fmean(r.value for r in readings if start <= r.t < end)


# --- kinds and physics -----------------------------------------------------------------


def test_every_kind_has_its_topics_device_names_and_plausible_values() -> None:
    fleet = Fleet(sites=2, sensors=3, kinds=ALL_KINDS, rate=1, topic_root="r")
    series = _by_topic(fleet.take(600))
    prefixes = {k: s.prefix for k, s in KINDS.items()}
    assert set(series) == {
        f"r/plant-{s}/{prefixes[k]}-{d}/{k}" for s in (1, 2) for k in ALL_KINDS for d in (1, 2, 3)
    }
    assert prefixes == {
        "temperature": "t",
        "humidity": "h",
        "pressure": "p",
        "co2": "c",
        "power": "w",
        "door": "d",
    }
    bounds = {
        "temperature": (18, 27),
        "humidity": (15, 75),
        "pressure": (990, 1035),
        "co2": (300, 1700),
        "power": (0, 4000),
        "door": (0, 1),
    }
    for topic, readings in series.items():
        kind = topic.rsplit("/", 1)[1]
        low, high = bounds[kind]
        values = [r.value for r in readings]
        assert low <= min(values), (topic, min(values))
        assert max(values) <= high, (topic, max(values))
        assert len(set(values)) > 1, f"{topic} never changes"
    doors = [r.value for t, rs in series.items() if t.endswith("/door") for r in rs]
    assert set(doors) == {0.0, 1.0}
    assert 0.03 < statistics.fmean(doors) < 0.3, "open about 8 s in every 68"


def test_humidity_follows_temperature_down_when_the_hvac_fails() -> None:
    fleet = Fleet(
        sensors=1,
        kinds=("temperature", "humidity"),
        rate=2,
        scenario=_scenario("events: [{at: 20s, event: hvac_failure, site: plant-1}]"),
    )
    series = _by_topic(fleet.take(60))
    temp = series["sensors/plant-1/t-1/temperature"]
    rh = series["sensors/plant-1/h-1/humidity"]
    assert _mean(temp, 40, 60) > 85
    assert _mean(temp, 0, 20) < 25
    before, after = _mean(rh, 0, 20), _mean(rh, 40, 60)
    assert after < 0.05 * before, "about -6.5 % per degree: nearly dry at 90 degrees"
    assert after >= 0


def test_co2_rises_with_occupancy() -> None:
    fleet = Fleet(
        sensors=2,
        kinds=("co2",),
        rate=1,
        scenario=_scenario(
            "events: [{at: 0s, event: occupancy, level: 0}, {at: 600s, event: occupancy, level: 1}]"
        ),
    )
    for readings in _by_topic(fleet.take(1200)).values():
        empty, full = _mean(readings, 500, 600), _mean(readings, 1100, 1200)
        assert empty < 520, "an empty room decays to outdoor CO2"
        assert full > empty + 700, "a full room climbs toward 1420 ppm"
        rising = [r.value for r in readings if 600 <= r.t < 700]
        assert rising[-1] > rising[0] + 400, "a lag, not a jump"


def test_power_moves_in_load_steps_with_small_noise() -> None:
    readings = _by_topic(Fleet(sensors=1, kinds=("power",), rate=2).take(600))[
        "sensors/plant-1/w-1/power"
    ]
    changes = [abs(b.value - a.value) / max(a.value, 1.0) for a, b in itertools.pairwise(readings)]
    steps = sum(1 for c in changes if c > 0.2)
    assert 15 <= steps <= 80, "a step every 15 s or so"
    assert statistics.median(changes) < 0.03, "between steps only the 1 % noise"


def test_a_sensor_series_does_not_depend_on_sharding_over_processes() -> None:
    whole = Fleet(sites=2, sensors=3, kinds=ALL_KINDS, rate=2, seed=9)
    reference = {t: [r.value for r in rs] for t, rs in _by_topic(whole.take(30)).items()}
    sharded: dict[str, list[float]] = defaultdict(list)
    for i in range(3):
        shard = Fleet(sites=2, sensors=3, kinds=ALL_KINDS, rate=2, seed=9, shard=(i, 3))
        for topic, rs in _by_topic(shard.take(30)).items():
            sharded[topic] += [r.value for r in rs]
    assert sharded == reference


# --- scenarios -------------------------------------------------------------------------


def test_builtin_scenarios_ship_and_load() -> None:
    assert builtin_names() == ["bad-payloads", "flapping", "heatwave", "sensor-dropout", "storm"]
    heatwave = load_scenario("heatwave")
    assert heatwave is not None
    assert heatwave.repeat == 60.0
    assert [(e.at, e.event) for e in heatwave.events] == [(3.0, "hvac_failure"), (30.0, "recover")]
    assert load_scenario("none") is None


@pytest.mark.parametrize(
    ("t", "segment", "ends"),
    [(0.0, 0, 3.0), (2.999, 0, 3.0), (3.0, 1, 30.0), (29.9, 1, 30.0), (30.0, 2, 60.0),
     (60.0, 0, 63.0), (125.0, 1, 150.0)],
)  # fmt: skip
def test_repeating_timeline_segments(t: float, segment: int, ends: float) -> None:
    got_segment, got_ends = Timeline(load_scenario("heatwave")).segment(t)
    assert got_segment == segment
    assert got_ends == pytest.approx(ends)


def test_sensor_dropout_silences_one_device_between_the_times() -> None:
    fleet = Fleet(sensors=3, rate=2, scenario=load_scenario("sensor-dropout"))
    series = _by_topic(fleet.take(130))
    times = [r.t for r in series["sensors/plant-1/t-1/temperature"]]
    for cycle in (0.0, 60.0, 120.0):
        assert not [t for t in times if cycle + 5 <= t < cycle + 45]
        assert [t for t in times if cycle <= t < cycle + 5], "talks before the dropout"
    assert [t for t in times if 45 <= t < 60], "and again after"
    for other in ("t-2", "t-3"):
        assert len(series[f"sensors/plant-1/{other}/temperature"]) == 2 * 130, "every 0.5 s"


def test_flapping_crosses_the_threshold_again_and_again() -> None:
    fleet = Fleet(sensors=2, rate=4, scenario=load_scenario("flapping"))
    series = _by_topic(fleet.take(65))
    flapper = series["sensors/plant-1/t-1/temperature"]
    assert max(r.value for r in flapper if r.t < 5) < 30, "normal until 5 s"
    above = [r.value > 80 for r in flapper if r.t >= 5]
    crossings = sum(1 for a, b in itertools.pairwise(above) if a != b)
    assert crossings >= 10, "twice per 10 s period over 60 s"
    assert all(74 < r.value < 86 for r in flapper if r.t >= 5)
    assert max(r.value for r in series["sensors/plant-1/t-2/temperature"]) < 30


def test_storm_heats_every_temperature_sensor_of_every_site_at_once() -> None:
    fleet = Fleet(
        sites=3, sensors=4, kinds=("temperature", "door"), rate=1, scenario=load_scenario("storm")
    )
    series = _by_topic(fleet.take(100))
    temps = {t: rs for t, rs in series.items() if t.endswith("/temperature")}
    assert len(temps) == 12
    for readings in temps.values():
        assert max(r.value for r in readings if r.t < 5) < 30
        assert min(r.value for r in readings if 12 <= r.t < 40) > 80
        assert max(r.value for r in readings if 50 <= r.t < 90) < 30


def test_bad_payloads_are_malformed_at_the_rate_only_inside_the_window() -> None:
    fleet = Fleet(sensors=10, rate=10, scenario=load_scenario("bad-payloads"))
    messages = fleet.take(60)
    inside = [m for m in messages if 5 <= (m.reading.t % 30) < 25]
    outside = [m for m in messages if not 5 <= (m.reading.t % 30) < 25]
    share = sum(1 for m in inside if m.fault and m.fault.startswith("malformed")) / len(inside)
    assert 0.25 < share < 0.35
    assert not [m for m in outside if m.fault]
    assert {m.fault.split(":")[1] for m in inside if m.fault and ":" in m.fault} == set(
        MALFORMED_REASONS
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("events:\n  - {at: 1s, event: recover}\n  - {at: 2s, event: boom}\n", 3, "unknown event"),
        ("repeat: 10s\nevents:\n  - at: 12s\n    event: recover\n", 3, "repeat period"),
        ("events:\n  - {at: soon, event: recover}\n", 2, "not a duration"),
        ("events:\n  - {at: 1s, event: dropout, colour: red}\n", 2, "unknown key 'colour'"),
        ("events:\n  - {at: 1s, event: faults, spike: 2}\n", 2, "within 0..1"),
        ("events:\n  - {at: 1s, event: recover\n", 3, "invalid YAML"),
        ("name: x\nevent: []\n", 1, "unknown key 'event'"),
        ("events:\n  - {event: recover}\n", 2, "has no 'at'"),
    ],
)  # fmt: skip
def test_a_broken_scenario_file_is_reported_with_file_and_line(
    tmp_path: Path, text: str, where: int, message: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message) as exc:
        load_scenario(str(path))
    assert str(exc.value).startswith(f"{path}:{where}: ")


# --- faults ----------------------------------------------------------------------------

READINGS = 20_000


def _faulty(kind: str, rate: float) -> tuple[Fleet, list[Message]]:
    fleet = Fleet(sensors=20, rate=10, faults={kind: rate}, seed=4)
    return fleet, fleet.take((READINGS - 1) / 200)


@pytest.mark.parametrize(
    ("kind", "rate"),
    [("spike", 0.02), ("malformed", 0.05), ("duplicate", 0.02), ("out_of_order", 0.02),
     ("clock_skew", 0.02), ("stuck", 0.005), ("dropout", 0.005)],
)  # fmt: skip
def test_each_fault_appears_at_about_its_rate(kind: str, rate: float) -> None:
    fleet, messages = _faulty(kind, rate)
    injected = fleet.fault_counts[kind]
    # Episodes (stuck, dropout) can only start while none is running: fewer chances.
    eligible = READINGS * (0.5 if kind in ("stuck", "dropout") else 1.0)
    assert 0.75 * rate * eligible < injected < 1.25 * rate * READINGS, injected
    tagged = [m for m in messages if m.fault and m.fault.split(":")[0] == kind]
    by_topic: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        by_topic[m.reading.topic].append(m)
    if kind == "spike":
        assert len(tagged) == injected
        assert all(abs(m.reading.value - 22) > 30 for m in tagged)
    elif kind == "duplicate":
        assert len(messages) == READINGS + injected
        assert len({(m.topic, m.payload) for m in messages}) == READINGS
    elif kind == "out_of_order":
        late = sum(
            1
            for ms in by_topic.values()
            for a, b in itertools.pairwise(ms)
            if json.loads(b.payload)["ts"] < json.loads(a.payload)["ts"]
        )
        assert late >= injected - len(by_topic), "each held message arrives after a newer one"
    elif kind == "clock_skew":
        for m in tagged:
            skew = json.loads(m.payload)["ts"] - (DEFAULT_EPOCH_MS + round(m.reading.t * 1000))
            assert 60_000 <= abs(skew) <= 1_800_000
    elif kind == "stuck":
        repeats = sum(
            1
            for ms in by_topic.values()
            for a, b in itertools.pairwise(ms)
            if a.payload[:20] == b.payload[:20]
        )
        assert repeats > 5 * injected, "a stuck sensor repeats its value for ~10 s"
    elif kind == "dropout":
        assert READINGS - len(messages) > 3 * injected, "silent ~5 s at 10 readings/s"
    elif kind == "malformed":
        assert len(tagged) == injected


def test_malformed_messages_are_refused_by_sensord_for_the_reason_they_claim() -> None:
    _, messages = _faulty("malformed", 0.2)
    parser = PayloadParser("sensors/{site}/{device}/{kind}", max_payload=65_536)
    reasons: Counter[str] = Counter()
    for m in messages:
        reason = m.fault.split(":")[1] if m.fault else None
        now = DEFAULT_EPOCH_MS / 1000 + m.reading.t  # the receive time, as if live
        if reason == "unit":
            # refused only for a kind that has a target unit in [ingest.units]
            body = json.loads(m.payload)
            assert body["unit"] == "furlongs"
        elif reason is not None:
            with pytest.raises(PayloadError) as exc:
                parser.parse(m.topic, m.payload, now=now)
            assert exc.value.reason == reason
            if reason == "too_large":
                assert len(m.payload) == TOO_LARGE_BYTES
        else:
            (reading,) = parser.parse(m.topic, m.payload, now=now)
            assert reading.value == m.reading.value
        reasons[reason or "valid"] += 1
    assert set(reasons) == {"valid", *MALFORMED_REASONS}
    assert min(reasons[r] for r in MALFORMED_REASONS) > 0.5 * 0.2 * READINGS / 7


def test_without_faults_the_series_is_unchanged_by_the_fault_machinery() -> None:
    plain = Fleet(sensors=5, rate=5, seed=2).take(60)
    zero = Fleet(sensors=5, rate=5, seed=2, faults=FaultRates()).take(60)
    assert [m.payload for m in plain] == [m.payload for m in zero]
    assert not any(m.fault for m in plain)


@pytest.mark.parametrize(
    ("text", "message"),
    [("spike", "KIND=RATE"), ("spike=x", "not a number"), ("fire=0.1", "unknown fault"),
     ("stuck=1.5", "0..1")],
)  # fmt: skip
def test_fault_option_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(text)


# --- payload formats --------------------------------------------------------------------


def test_number_and_json_formats_parse_in_sensord_to_the_same_value() -> None:
    parser = PayloadParser("sensors/{site}/{device}/{kind}", max_payload=65_536)
    for fmt in (Format.JSON, Format.NUMBER):
        fleet = Fleet(sensors=2, kinds=ALL_KINDS, rate=1, fmt=fmt)
        for m in fleet.take(20):
            (reading,) = parser.parse(m.topic, m.payload, now=DEFAULT_EPOCH_MS / 1000)
            assert reading.value == m.reading.value
            assert reading.kind == m.reading.kind
            if fmt is Format.NUMBER:
                assert reading.ts == DEFAULT_EPOCH_MS / 1000
                assert (
                    m.payload
                    == (
                        str(int(m.reading.value))
                        if m.reading.kind == "door"
                        else repr(m.reading.value)
                    ).encode()
                )


def test_senml_pack_follows_rfc_8428() -> None:
    fleet = Fleet(sensors=1, kinds=ALL_KINDS, rate=1, fmt=Format.SENML, topic_root="r")
    units = {"temperature": "Cel", "humidity": "%RH", "pressure": "Pa", "co2": "ppm", "power": "W"}
    for m in fleet.take(5):
        (record,) = json.loads(m.payload)
        assert record["bn"] + record["n"] == m.topic
        assert record["t"] == pytest.approx((DEFAULT_EPOCH_MS + m.reading.t * 1000) / 1000)
        if m.reading.kind == "door":
            assert set(record) == {"bn", "n", "vb", "t"}
            assert record["vb"] is (m.reading.value == 1.0)
        else:
            assert set(record) == {"bn", "n", "v", "u", "t"}
            assert record["u"] == units[m.reading.kind]
            scale = 100 if m.reading.kind == "pressure" else 1
            assert math.isclose(record["v"], m.reading.value * scale)
