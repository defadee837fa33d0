"""Format "influx": InfluxDB line protocol, with the examples of InfluxDB's own docs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats.influx import InfluxFormat, field_value, parse_line
from sensord.ingest.reasons import SCHEMA, TOO_LARGE
from simulators.devices import get as get_device
from tests.ingest.formats.support import check_readings

NOW = 1_800_000_000.0
TOPIC = "telegraf/web01/sensors"
DOCS = "https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/"


def fmt(**options: object) -> InfluxFormat:
    return InfluxFormat(FormatOptions("", 4096, options=options, site="home"))


def rows(readings: list[Reading]) -> list[tuple[str, str, str, float, float, dict[str, str]]]:
    return [(r.site, r.device, r.kind, r.value, r.ts, dict(r.labels)) for r in readings]


def test_docs_syntax_example() -> None:
    # DOCS, "Elements of line protocol"
    line = b'myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000'
    f = fmt()
    assert f.parse(TOPIC, line, NOW) == []  # a string field: nothing to read
    assert f.skipped == {"text": 1}
    assert parse_line(line.decode()) == (
        "myMeasurement",
        {"tag1": "value1", "tag2": "value2"},
        [("fieldKey", "fieldValue", True)],
        "1556813561098000000",
    )


def test_docs_get_started_home_data_in_seconds() -> None:
    # https://docs.influxdata.com/influxdb/v2/get-started/write/ (precision s)
    payload = (
        b"home,room=Living\\ Room temp=21.1,hum=35.9,co=0i 1641024000\n"
        b"home,room=Kitchen temp=21.0,hum=35.9,co=0i 1641024000\n"
        b"home,room=Living\\ Room temp=21.4,hum=35.9,co=0i 1641027600\n"
    )
    f = fmt(precision="s", device_tag="room")
    got = rows(f.parse("home/data", payload, NOW))
    labels = {"measurement": "home"}
    assert got[:3] == [
        ("home", "Living Room", "temperature", 21.1, 1641024000.0, labels),
        ("home", "Living Room", "humidity", 35.9, 1641024000.0, labels),
        ("home", "Living Room", "co", 0.0, 1641024000.0, labels),
    ]
    assert [(d, k, ts) for _, d, k, _, ts, _ in got[3:6]] == [
        ("Kitchen", "temperature", 1641024000.0),
        ("Kitchen", "humidity", 1641024000.0),
        ("Kitchen", "co", 1641024000.0),
    ]
    assert got[6][4] == 1641027600.0


@pytest.mark.parametrize(
    ("line", "measurement", "tags", "fields"),
    [
        # DOCS, "Special characters" / escaping examples
        (
            'my\\ Measurement fieldKey="string value"',
            "my Measurement",
            {},
            [("fieldKey", "string value", True)],
        ),
        (
            "myMeasurement,tag\\ Key1=tag\\ Value1,tag\\ Key2=tag\\ Value2 fieldKey=100",
            "myMeasurement",
            {"tag Key1": "tag Value1", "tag Key2": "tag Value2"},
            [("fieldKey", "100", False)],
        ),
        (
            'myMeasurement fieldKey="\\"string\\" within a string"',
            "myMeasurement",
            {},
            [("fieldKey", '"string" within a string', True)],
        ),
        (
            'myMeasurement,tagKey=🍭 fieldKey="Launch 🚀" 1556813561098000000',
            "myMeasurement",
            {"tagKey": "🍭"},
            [("fieldKey", "Launch 🚀", True)],
        ),
        # DOCS, "Backslashes": a lone backslash is literal, two are one
        (
            'my\\Measurement fieldKey="string value"',
            "my\\Measurement",
            {},
            [("fieldKey", "string value", True)],
        ),
        (
            'my\\\\Measurement fieldKey="string value"',
            "my\\Measurement",
            {},
            [("fieldKey", "string value", True)],
        ),
        (
            'm,a\\,b=c\\=d f\\=x="a, b=c \\\\ d",g=1',
            "m",
            {"a,b": "c=d"},
            [("f=x", "a, b=c \\ d", True), ("g", "1", False)],
        ),
        ('m s="with space" 5', "m", {}, [("s", "with space", True)]),
    ],
)
def test_docs_escaping(line: str, measurement: str, tags: dict[str, str], fields: object) -> None:
    got = parse_line(line)
    assert got[:3] == (measurement, tags, fields)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        # DOCS, "Field values": float, integer, uinteger, boolean
        ("1.0", 1.0),
        ("1", 1.0),
        ("-1.234456e+78", -1.234456e78),
        ("1i", 1.0),
        ("-12i", -12.0),
        ("12485903u", 12485903.0),
        *((word, 1.0) for word in ("t", "T", "true", "True", "TRUE")),
        *((word, 0.0) for word in ("f", "F", "false", "False", "FALSE")),
        ("-1u", None),
        ("1.5i", None),
        ("i", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("tRUE", None),
        ("1e999", None),
        ("abc", None),
        ("", None),
    ],
)
def test_docs_field_values(raw: str, value: float | None) -> None:
    assert field_value(raw) == value


def test_kinds_devices_sites_and_labels() -> None:
    payload = (
        b"temperature,host=a value=21 1800000000000000000\n"  # value: the measurement's kind
        b"sensors,host=a,site=lab temp=22,batt=90i\n"
        b"mem,host=a used=1i\n"
        b"disk,host=a,path=/ used=2i\n"
        b"cpu usage_idle=99.5\n"  # no host: the topic's second level
        b"door,host=a value=true\n"
    )
    got = rows(fmt().parse(TOPIC, payload, NOW))
    assert got == [
        ("home", "a", "temperature", 21.0, 1.8e9, {}),
        ("lab", "a", "temperature", 22.0, NOW, {"measurement": "sensors"}),
        ("lab", "a", "battery", 90.0, NOW, {"measurement": "sensors"}),
        ("home", "a", "used", 1.0, NOW, {"measurement": "mem"}),
        ("home", "a", "used", 2.0, NOW, {"measurement": "disk"}),
        ("home", "web01", "usage_idle", 99.5, NOW, {"measurement": "cpu"}),
        ("home", "a", "contact", 1.0, NOW, {}),
    ]
    units = [r.unit for r in fmt().parse(TOPIC, payload, NOW)]
    assert units[:3] == ["°C", "°C", "%"]  # no unit in line protocol: the kind's usual one


def test_options() -> None:
    payload = b"sensors,node=n1,room=r1,bus=i2c temp=21 1800000000000"
    f = fmt(precision="ms", device_tag="node", site_tag="room", label_tags=["bus"])
    (r,) = f.parse(TOPIC, payload, NOW)
    assert (r.site, r.device, r.kind, r.ts, r.labels) == (
        "r1",
        "n1",
        "temperature",
        1.8e9,
        {"measurement": "sensors", "bus": "i2c"},
    )
    for precision, ts in (
        ("ns", b"1800000000000000000"),
        ("us", b"1800000000000000"),
        ("s", b"1800000000"),
    ):
        (r,) = fmt(precision=precision).parse(TOPIC, b"t value=1 " + ts, NOW)
        assert r.ts == 1.8e9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "h"}, "precision: must be one of ns, us, ms, s"),
        ({"site_tag": ""}, "site_tag: must be a tag name"),
        ({"device_tag": 5}, "device_tag: must be a tag name"),
        ({"label_tags": "bus"}, "label_tags: must be a list of tag names"),
        ({"label_tags": ["site"]}, "label_tags: site is a reserved label"),
        ({"colour": 1}, "colour: unknown influx option; known: precision, site_tag"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fmt(**options)


@pytest.mark.parametrize(
    "line",
    [
        "measurement_only",
        "m,tag fields=1",
        "m,=v f=1",
        "m,t= f=1",
        ",t=v f=1",
        "m f",
        "m f=",
        "m =1",
        "m f=1,",
        "m f=1 notatime",
        "m f=1 1 2",
        'm f="unterminated',
        "m f=abc",
        "m f=1.5i",
        'm f="a" 12 3',
        "m f=1 -",
        "m  f=1",
    ],
)
def test_malformed_lines_are_skipped_and_counted(line: str) -> None:
    f = fmt()
    payload = f"ok value=1\n{line}\n".encode()
    got = f.parse(TOPIC, payload, NOW)
    assert [(r.kind, r.value) for r in got] == [("ok", 1.0)]
    assert f.skipped == {"line": 1}
    # alone, it refuses the message: nothing in it is line protocol
    with pytest.raises(PayloadError) as info:
        f.parse(TOPIC, line.encode(), NOW)
    assert info.value.reason == SCHEMA
    assert info.value.detail.startswith("influx: no line is line protocol (")


def test_refusals_and_nothing_to_read() -> None:
    f = InfluxFormat(FormatOptions("", 64, site="home"))
    with pytest.raises(PayloadError) as info:
        f.parse(TOPIC, b"\xff value=1", NOW)
    assert (info.value.reason, info.value.detail) == (SCHEMA, "influx: payload is not UTF-8 text")
    with pytest.raises(PayloadError) as info:
        f.parse(TOPIC, b"m value=1\n" * 10, NOW)
    assert info.value.reason == TOO_LARGE
    assert f.parse(TOPIC, b"", NOW) == []
    assert f.parse(TOPIC, b"# a comment\n\n  \r\n", NOW) == []
    # CRLF line ends; a line far in the future is skipped (clock_skew)
    got = f.parse(TOPIC, b"a value=1\r\nb value=2 9999999999999999999\r\n", NOW)
    assert [r.kind for r in got] == ["a"]
    assert f.skipped == {"clock_skew": 1}


def test_unit_conversion_per_ingest_units() -> None:
    f = InfluxFormat(FormatOptions("", 4096, units={"temperature": "K"}))
    (r,) = f.parse(TOPIC, b"temperature,host=a value=20", NOW)
    assert r.value == pytest.approx(293.15)
    assert r.unit == "K"


def test_the_simulated_device_reads_back() -> None:
    device = get_device("influx")("room-1", "plant-1")
    f = fmt()
    messages = [
        *device.birth(),
        *device.state({"temperature": 21.5, "humidity": 40.0, "occupancy": 1.0}, NOW - 5),
    ]
    messages += device.death()
    assert len(messages) == 1  # one message, several lines (Telegraf's batch layout)
    readings: list[Reading] = []
    for topic, payload, _qos, _retain in messages:
        assert topic == "telegraf/room-1/sensors"
        readings += f.parse(topic, payload, NOW)
    assert [(r.site, r.device, r.kind, r.value) for r in readings] == [
        ("plant-1", "room-1", "temperature", 21.5),
        ("plant-1", "room-1", "humidity", 40.0),
        ("plant-1", "room-1", "occupancy", 1.0),
    ]
    assert [r.ts for r in readings] == pytest.approx([NOW - 5] * 3)


@settings(max_examples=100, database=None, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_bytes(payload: bytes) -> None:
    with contextlib.suppress(PayloadError):
        check_readings(fmt().parse(TOPIC, payload, NOW))


_alphabet = st.sampled_from(list('ab1 ,="\\\n#.-iutTeE'))


@settings(max_examples=100, database=None, deadline=None)
@given(st.lists(_alphabet, max_size=60).map("".join))
def test_fuzz_line_protocol_like_text(text: str) -> None:
    with contextlib.suppress(PayloadError):
        check_readings(fmt().parse(TOPIC, ("m,host=h f=1 " + text).encode(), NOW))
    with contextlib.suppress(PayloadError):
        check_readings(fmt().parse(TOPIC, text.encode(), NOW))
