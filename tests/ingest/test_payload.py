"""Payload parsing: topic + bytes -> Reading, or PayloadError with a stable reason code."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.payload import (
    CLOCK_SKEW,
    NON_FINITE,
    NOT_JSON,
    REASONS,
    SCHEMA,
    TOO_LARGE,
    TOPIC,
    UNIT,
    PayloadParser,
)

TEMPLATE = "sensors/{site}/{device}/{kind}"
TOPIC_NAME = "sensors/plant-1/t-7/temperature"
NOW = 1_800_000_000.0
TS = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


def parse(payload: bytes, topic: str = TOPIC_NAME, template: str = TEMPLATE) -> Reading:
    (reading,) = PayloadParser(template, 1024).parse(topic, payload, NOW)
    return reading


def reason_of(payload: bytes, topic: str = TOPIC_NAME, template: str = TEMPLATE) -> str:
    with pytest.raises(PayloadError) as info:
        parse(payload, topic, template)
    assert info.value.reason in REASONS
    assert info.value.detail
    return info.value.reason


def test_json_object_with_value_ts_unit() -> None:
    r = parse(b'{"value": 21.5, "ts": "2026-11-28T12:00:00Z", "unit": "C"}')
    assert (r.site, r.device, r.kind) == ("plant-1", "t-7", "temperature")
    assert r.value == 21.5
    assert r.ts == TS
    assert r.unit == "C"
    assert r.labels == {}


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        pytest.param('"2026-11-28T12:00:00Z"', TS, id="rfc3339-z"),
        pytest.param('"2026-11-28T12:00:00.250Z"', TS + 0.25, id="rfc3339-fraction"),
        pytest.param('"2026-11-28T13:00:00+01:00"', TS, id="rfc3339-offset"),
        pytest.param(str(int(TS)), TS, id="epoch-seconds"),
        pytest.param(f"{TS + 0.5}", TS + 0.5, id="epoch-seconds-float"),
        pytest.param(str(int(TS) * 1000), TS, id="epoch-milliseconds"),
        pytest.param(str(int(TS) * 1000 + 250), TS + 0.25, id="epoch-milliseconds-fraction"),
        pytest.param("null", NOW, id="null-is-now"),
    ],
)
def test_ts_forms(ts: str, expected: float) -> None:
    r = parse(b'{"value": 1, "ts": ' + ts.encode() + b"}")
    assert r.ts == pytest.approx(expected)


def test_missing_ts_is_now() -> None:
    r = parse(b'{"value": 3}')
    assert r.ts == NOW
    assert r.value == 3.0
    assert isinstance(r.value, float)
    assert r.unit is None


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"21.5", 21.5), (b"-4", -4.0), (b"0", 0.0), (b" 1e3 \n", 1000.0)],
)
def test_bare_number(payload: bytes, value: float) -> None:
    r = parse(payload)
    assert r.value == value
    assert r.ts == NOW
    assert r.unit is None


def test_utf8_bom_is_tolerated() -> None:
    assert parse(b"\xef\xbb\xbf21.5").value == 21.5


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # not JSON at all
        pytest.param(b"hello", NOT_JSON, id="text"),
        pytest.param(b"", NOT_JSON, id="empty"),
        pytest.param(b"\xff\xfe\xfd", NOT_JSON, id="invalid-utf8"),
        pytest.param(b"\xc3\x28", NOT_JSON, id="invalid-utf8-sequence"),
        pytest.param("21.5".encode("utf-16"), NOT_JSON, id="utf16-with-bom"),
        pytest.param("21.5".encode("utf-16-le"), NOT_JSON, id="utf16-without-bom"),
        pytest.param(b'{"value": 1', NOT_JSON, id="truncated"),
        # JSON, wrong shape
        pytest.param(b'{"unit": "C"}', SCHEMA, id="no-value"),
        pytest.param(b'{"value": "21.5"}', SCHEMA, id="string-value"),
        pytest.param(b'{"value": true}', SCHEMA, id="bool-value"),
        pytest.param(b'{"value": null}', SCHEMA, id="null-value"),
        pytest.param(b'{"value": {"v": 1}}', SCHEMA, id="object-value"),
        pytest.param(b'{"value": 1, "ts": "yesterday"}', SCHEMA, id="ts-garbage"),
        pytest.param(b'{"value": 1, "ts": "2026-11-28T12:00:00"}', SCHEMA, id="ts-naive"),
        pytest.param(b'{"value": 1, "ts": true}', SCHEMA, id="ts-bool"),
        pytest.param(b'{"value": 1, "ts": [1]}', SCHEMA, id="ts-list"),
        pytest.param(b'{"value": 1, "unit": 5}', SCHEMA, id="unit-not-string"),
        pytest.param(b"[1, 2]", SCHEMA, id="json-array"),
        pytest.param(b'"21.5"', SCHEMA, id="json-string"),
        pytest.param(b"true", SCHEMA, id="json-bool"),
        pytest.param(b"null", SCHEMA, id="json-null"),
        # not a finite number, whatever the spelling
        pytest.param(b"NaN", NON_FINITE, id="nan"),
        pytest.param(b"Infinity", NON_FINITE, id="infinity"),
        pytest.param(b"-Infinity", NON_FINITE, id="minus-infinity"),
        pytest.param(b'{"value": NaN}', NON_FINITE, id="object-nan"),
        pytest.param(b'{"value": -Infinity, "unit": "C"}', NON_FINITE, id="object-minus-inf"),
        pytest.param(b"1e999", NON_FINITE, id="float-overflow"),
        pytest.param(b'{"value": -1e999}', NON_FINITE, id="object-float-overflow"),
        pytest.param(b"1" + b"0" * 400, NON_FINITE, id="integer-overflow"),
        pytest.param(b'{"value": 1, "ts": 1' + b"0" * 400 + b"}", NON_FINITE, id="ts-overflow"),
        pytest.param(b'{"value": 1, "ts": NaN}', NON_FINITE, id="ts-nan"),
    ],
)
def test_refused_payloads(payload: bytes, reason: str) -> None:
    assert reason_of(payload) == reason


def test_too_large() -> None:
    parser = PayloadParser(TEMPLATE, 64)
    ok = b'{"value": 1, "unit": "' + b"x" * 40 + b'"}'
    assert len(ok) == 64
    assert parser.parse(TOPIC_NAME, ok, NOW)[0].value == 1.0
    with pytest.raises(PayloadError) as info:
        parser.parse(TOPIC_NAME, ok[:-2] + b'x"}', NOW)
    assert info.value.reason == TOO_LARGE
    assert "65" in info.value.detail


def test_too_large_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadError) as info:
        PayloadParser(TEMPLATE, 16).parse(TOPIC_NAME, b"[" * 10_000, NOW)
    assert info.value.reason == TOO_LARGE


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("sensors/plant-1/t-7", id="too-few-levels"),
        pytest.param("sensors/plant-1/t-7/temperature/extra", id="too-many-levels"),
        pytest.param("sensor/plant-1/t-7/temperature", id="literal-mismatch"),
        pytest.param("Sensors/plant-1/t-7/temperature", id="literal-case"),
        pytest.param("sensors//t-7/temperature", id="empty-site"),
        pytest.param("sensors/plant-1/t-7/", id="empty-kind"),
        pytest.param("", id="empty-topic"),
    ],
)
def test_bad_topics(topic: str) -> None:
    assert reason_of(b"21.5", topic=topic) == TOPIC


def test_bad_topic_is_refused_every_time() -> None:
    parser = PayloadParser(TEMPLATE, 1024)
    for _ in range(2):  # errors must not be cached as labels
        with pytest.raises(PayloadError) as info:
            parser.parse("sensors//t-7/temperature", b"1", NOW)
        assert info.value.reason == TOPIC


@pytest.mark.parametrize(
    ("template", "topic", "expected"),
    [
        pytest.param(
            "{root}/{site}/{device}/{kind}",
            "factory/plant-1/t-7/temperature",
            {"root": "factory"},
            id="leading-named",
        ),
        pytest.param(
            "sensors/{site}/{area}/{device}/{kind}",
            "sensors/plant-1/hall-2/t-7/temperature",
            {"area": "hall-2"},
            id="middle-named",
        ),
        pytest.param(
            "{kind}/{device}/{site}/{zone}",
            "temperature/t-7/plant-1/north",
            {"zone": "north"},
            id="any-order",
        ),
    ],
)
def test_extra_named_segments_become_labels(
    template: str, topic: str, expected: dict[str, str]
) -> None:
    r = parse(b"1", topic=topic, template=template)
    assert (r.site, r.device, r.kind) == ("plant-1", "t-7", "temperature")
    assert r.labels == expected


def test_topic_labels_are_cached_per_topic_not_shared() -> None:
    parser = PayloadParser("sensors/{site}/{area}/{device}/{kind}", 1024)
    (a,) = parser.parse("sensors/p/hall-1/t-1/temperature", b"1", NOW)
    (b,) = parser.parse("sensors/p/hall-2/t-1/temperature", b"2", NOW)
    (again,) = parser.parse("sensors/p/hall-1/t-1/temperature", b"3", NOW)
    assert (a.labels, b.labels, again.labels) == (
        {"area": "hall-1"},
        {"area": "hall-2"},
        {"area": "hall-1"},
    )
    assert again.value == 3.0


def test_topic_templates_first_match_wins() -> None:
    parser = PayloadParser(["a/{site}/{device}/{kind}", "{site}/{zone}/{device}/{kind}"], 1024)
    (first,) = parser.parse("a/p/t-1/temperature", b"1", NOW)
    (second,) = parser.parse("p/north/t-1/temperature", b"1", NOW)
    assert (first.site, first.labels) == ("p", {})
    assert (second.site, second.labels) == ("p", {"zone": "north"})
    with pytest.raises(PayloadError) as info:
        parser.parse("too/short", b"1", NOW)
    assert info.value.reason == TOPIC
    assert "none of the 2" in info.value.detail


def senml(records: object, **kwargs: object) -> list[Reading]:
    payload = json.dumps(records).encode()
    return PayloadParser(TEMPLATE, 4096, **kwargs).parse(TOPIC_NAME, payload, NOW)  # type: ignore[arg-type]


def test_senml_base_fields_apply_to_later_records() -> None:
    readings = senml(
        [
            {"bn": "dev-9/", "bt": TS, "bu": "Cel", "bv": 10, "n": "temperature", "v": 1},
            {"n": "temperature", "v": 2, "t": 60},
            {"bn": "", "n": "humidity", "u": "%RH", "v": 3, "t": 120},
            {"v": 4},
        ]
    )
    got = [(r.device, r.kind, r.value, r.ts, r.unit) for r in readings]
    assert got == [
        ("dev-9", "temperature", 11.0, TS, "Cel"),
        ("dev-9", "temperature", 12.0, TS + 60, "Cel"),
        ("t-7", "humidity", 13.0, TS + 120, "%RH"),
        ("t-7", "temperature", 14.0, TS, "Cel"),  # no name: the topic's device and kind
    ]
    assert all(r.site == "plant-1" for r in readings)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        pytest.param(None, NOW, id="absent-is-now"),
        pytest.param(0, NOW, id="zero-is-now"),
        pytest.param(-5, NOW - 5, id="relative-past"),
        pytest.param(TS, TS, id="absolute"),
    ],
)
def test_senml_times(t: float | None, expected: float) -> None:
    record: dict[str, object] = {"n": "temperature", "v": 1}
    if t is not None:
        record["t"] = t
    (r,) = senml([record])
    assert r.ts == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "device", "kind"),
    [
        ("", "t-7", "temperature"),
        ("humidity", "t-7", "humidity"),
        ("urn:dev:ow:10e2073a:temp", "urn:dev:ow:10e2073a", "temp"),
        ("room-1/co2", "room-1", "co2"),
        ("room-1/", "room-1", "temperature"),
        ("/co2", "t-7", "co2"),
    ],
)
def test_senml_name_overrides_topic(name: str, device: str, kind: str) -> None:
    (r,) = senml([{"n": name, "v": 1}])
    assert (r.device, r.kind) == (device, kind)


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        pytest.param([], SCHEMA, id="empty-pack"),
        pytest.param([1], SCHEMA, id="record-not-object"),
        pytest.param([{"n": "x", "vs": "text"}], SCHEMA, id="string-value"),
        pytest.param([{"n": "x", "vb": 1}], SCHEMA, id="vb-not-bool"),
        pytest.param([{"n": 5, "v": 1}], SCHEMA, id="name-not-string"),
        pytest.param([{"bn": 5, "v": 1}], SCHEMA, id="bn-not-string"),
        pytest.param([{"bn": "a/"}], SCHEMA, id="base-fields-only"),
        pytest.param([{"v": "1"}], SCHEMA, id="v-string"),
        pytest.param([{"v": 1, "t": "now"}], SCHEMA, id="t-string"),
        pytest.param([{"v": 1e999}], NON_FINITE, id="v-overflow"),
        pytest.param([{"v": 1}, {"v": 2, "t": NOW + 3600}], CLOCK_SKEW, id="future-record"),
    ],
)
def test_senml_refusals(records: object, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        senml(records)
    assert info.value.reason == reason


def test_clock_skew() -> None:
    parser = PayloadParser(TEMPLATE, 1024, max_clock_skew=60)
    (ok,) = parser.parse(TOPIC_NAME, f'{{"value": 1, "ts": {NOW + 59}}}'.encode(), NOW)
    assert ok.ts == NOW + 59
    for ts in (f"{NOW + 61}", f"{int(NOW + 61) * 1000}", '"2100-01-01T00:00:00Z"'):
        with pytest.raises(PayloadError) as info:
            parser.parse(TOPIC_NAME, f'{{"value": 1, "ts": {ts}}}'.encode(), NOW)
        assert info.value.reason == CLOCK_SKEW
    (past,) = parser.parse(TOPIC_NAME, b'{"value": 1, "ts": 1000}', NOW)
    assert past.ts == 1000.0  # old readings are not refused


@pytest.mark.parametrize(
    ("value", "unit", "target", "expected"),
    [
        (212, "F", "C", 100.0),
        (32, "°F", "C", 0.0),
        (273.15, "K", "C", 0.0),
        (20, "Cel", "C", 20.0),
        (100, "C", "F", 212.0),
        (0, "C", "K", 273.15),
        (1013.25, "hPa", "kPa", 101.325),
        (1, "bar", "kPa", 100.0),
        (14.5038, "psi", "kPa", 100.0),
        (2, "kWh", "Wh", 2000.0),
    ],
)
def test_unit_normalisation(value: float, unit: str, target: str, expected: float) -> None:
    kind = "x"
    parser = PayloadParser(TEMPLATE, 1024, units={kind: target})
    payload = json.dumps({"value": value, "unit": unit}).encode()
    (r,) = parser.parse(f"sensors/p/d/{kind}", payload, NOW)
    assert r.value == pytest.approx(expected, abs=1e-3)
    assert r.unit == target


def test_unit_refusals_and_untouched_kinds() -> None:
    parser = PayloadParser(TEMPLATE, 1024, units={"temperature": "C"})
    for unit in ("kPa", "furlongs"):
        with pytest.raises(PayloadError) as info:
            parser.parse(TOPIC_NAME, f'{{"value": 1, "unit": "{unit}"}}'.encode(), NOW)
        assert info.value.reason == UNIT
    (other,) = parser.parse("sensors/p/d/humidity", b'{"value": 40, "unit": "%"}', NOW)
    assert (other.value, other.unit) == (40.0, "%")
    (bare,) = parser.parse(TOPIC_NAME, b"21", NOW)
    assert bare.unit == "C"
    (pack,) = parser.parse(TOPIC_NAME, b'[{"n": "temperature", "u": "F", "v": 50}]', NOW)
    assert pack.value == pytest.approx(10.0)
    assert pack.unit == "C"


def test_unknown_target_unit_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown unit"):
        PayloadParser(TEMPLATE, 1024, units={"temperature": "Rankine"})


@settings(max_examples=500, database=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet=' \t\n\r\x0b\x0c0123456789.eE+-[]{}":,nultrueNaIfiy', max_size=20),
    )
)
def test_not_json_exactly_when_json_loads_refuses(text: str) -> None:
    """The fast JSON path refuses exactly what json.loads refuses (a leading BOM aside)."""
    assume(not text.startswith("\ufeff"))
    try:
        json.loads(text)
    except ValueError:
        expected_not_json = True
    else:
        expected_not_json = False
    parser = PayloadParser(TEMPLATE, 1 << 20)
    reason = None
    try:
        parser.parse(TOPIC_NAME, text.encode(), NOW)
    except PayloadError as exc:
        reason = exc.reason
    assert (reason == NOT_JSON) == expected_not_json, reason
