"""The sensor gauges: read from History at scrape time, bounded, stale series left out."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sensord.events import Reading
from sensord.http.history import History
from sensord.telemetry.prometheus import SensorGauges

NOW = 1_800_000_000.0


def scrape(history: History, max_series: int = 100, stale: float = 900.0) -> dict[str, float]:
    """The exposition as prometheus_client's own parser reads it, by sorted label text."""
    text = SensorGauges(history, max_series, stale, clock=lambda: NOW).render().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def record(history: History, device: str, value: float, seen: float, **labels: str) -> None:
    unit = labels.pop("unit", None)
    history.record(Reading.trusted("p1", device, "temperature", value, seen, labels, unit), seen)


def test_latest_value_and_last_seen_per_sensor() -> None:
    h = History()
    record(h, "t-1", 20.0, NOW - 10, unit="Cel")
    record(h, "t-1", 21.5, NOW - 5, unit="Cel")
    record(h, "t-2", 7.0, NOW - 1)
    got = scrape(h)
    assert got['sensord_sensor_value{device="t-1",kind="temperature",site="p1",unit="Cel"}'] == 21.5
    assert got['sensord_sensor_value{device="t-2",kind="temperature",site="p1",unit=""}'] == 7.0
    assert got['sensord_sensor_last_seen_seconds{device="t-1",kind="temperature",site="p1"}'] == (
        NOW - 5
    )
    assert got["sensord_sensor_series_omitted"] == 0


def test_stale_series_are_dropped() -> None:
    h = History()
    record(h, "old", 1.0, NOW - 120)
    record(h, "new", 2.0, NOW - 30)
    got = scrape(h, stale=60)
    assert [k for k in got if k.startswith("sensord_sensor_value")] == [
        'sensord_sensor_value{device="new",kind="temperature",site="p1",unit=""}'
    ]


def test_bounded_by_max_series_keeping_the_most_recently_seen() -> None:
    h = History()
    for i in range(50):
        record(h, f"t-{i}", float(i), NOW - 100 + i)
    got = scrape(h, max_series=10)
    devices = sorted(
        int(k.split('device="t-')[1].split('"')[0])
        for k in got
        if k.startswith("sensord_sensor_value")
    )
    assert devices == list(range(40, 50))
    assert got["sensord_sensor_series_omitted"] == 40


def test_sensors_differing_by_extra_labels_only_share_one_series() -> None:
    h = History()
    record(h, "t-1", 1.0, NOW - 20, room="a")
    record(h, "t-1", 2.0, NOW - 10, room="b")
    got = scrape(h)
    values = {k: v for k, v in got.items() if k.startswith("sensord_sensor_value")}
    assert values == {
        'sensord_sensor_value{device="t-1",kind="temperature",site="p1",unit=""}': 2.0
    }


def test_label_values_are_escaped() -> None:
    h = History()
    h.record(Reading.trusted('a"b', "c\\d", "k\nx", 1.0, NOW, {}, None), NOW)
    text = SensorGauges(h, 10, 60, clock=lambda: NOW).render().decode()
    (family, *_) = text_string_to_metric_families(text)
    (sample,) = family.samples
    assert sample.labels == {"site": 'a"b', "device": "c\\d", "kind": "k\nx", "unit": ""}
