"""Format "senml": every example of RFC 8428 resolves as §4.6 says, in JSON and in CBOR.

The examples are RFC 8428's own (https://www.rfc-editor.org/rfc/rfc8428), section beside each.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats.native import NativeFormat
from sensord.ingest.formats.senml import CBOR_LABELS, SenmlFormat
from sensord.ingest.reasons import CLOCK_SKEW, NON_FINITE, NOT_JSON, SCHEMA, TOO_LARGE
from simulators.devices import get as get_device
from tests.ingest.formats.support import check_readings

TEMPLATE = "senml/{site}/{device}/{kind}"
TOPIC = "senml/plant-1/t-7/temperature"
NOW = 1_800_000_000.0
LABELS = {name: label for label, name in CBOR_LABELS.items()}
Pack = list[dict[str, Any]]

# RFC 8428 §5.1.1 (Single Datapoint): a temperature "now" from a 1-wire sensor
SINGLE: Pack = [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}]
# RFC 8428 §5.1.1: voltage and current "now"
VOLTAGE_CURRENT: Pack = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "u": "A", "v": 1.2},
]
# RFC 8428 §5.1.2 (Multiple Datapoints): current at Tue Jun 8 18:01:16.001 UTC 2010 and
# each second of the 5 before; base time, base unit, bver 5 (the example of §6 in CBOR)
DATAPOINTS: Pack = [
    {
        "bn": "urn:dev:ow:10e2073a0108006:",
        "bt": 1.276020076001e09,
        "bu": "A",
        "bver": 5,
        "n": "voltage",
        "u": "V",
        "v": 120.1,
    },
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "v": 1.7},
]
# RFC 8428 §6: DATAPOINTS in CBOR, the RFC's own hex dump
RFC_CBOR_HEX = (
    "87a721781b75726e3a6465763a6f773a3130653230373361303130383030363a22fb41d303a15b00106223"
    "614120050067766f6c7461676501615602fb405e066666666666a3006763757272656e74062402fb3ff333"
    "3333333333a3006763757272656e74062302fb3ff4cccccccccccda3006763757272656e74062202fb3ff6"
    "666666666666a3006763757272656e74062102f93e00a3006763757272656e74062002fb3ff99999999999"
    "9aa3006763757272656e74060002fb3ffb333333333333"
)
# RFC 8428 §5.1.3 (Multiple Measurements): humidity of a mobile device, its position, and its
# battery at a separate time; one name, told apart by unit
MEASUREMENTS: Pack = [
    {"bn": "urn:dev:ow:10e2073a01080063", "bt": 1.320067464e09, "bu": "%RH", "v": 20},
    {"u": "lon", "v": 24.30621},
    {"u": "lat", "v": 60.07965},
    {"t": 60, "v": 20.3},
    {"u": "lon", "t": 60, "v": 24.30622},
    {"u": "lat", "t": 60, "v": 60.07965},
    {"t": 120, "v": 20.7},
    {"u": "lon", "t": 120, "v": 24.30623},
    {"u": "lat", "t": 120, "v": 60.07966},
    {"u": "%EL", "t": 150, "v": 98},
    {"t": 180, "v": 21.2},
    {"u": "lon", "t": 180, "v": 24.30628},
    {"u": "lat", "t": 180, "v": 60.07967},
]
# RFC 8428 §5.1.4 (Resolved Data): MEASUREMENTS resolved
_ID = "urn:dev:ow:10e2073a01080063"
RESOLVED: Pack = [
    {"n": _ID, "u": u, "t": t, "v": v}
    for u, t, v in [
        ("%RH", 1.320067464e09, 20),
        ("lon", 1.320067464e09, 24.30621),
        ("lat", 1.320067464e09, 60.07965),
        ("%RH", 1.320067524e09, 20.3),
        ("lon", 1.320067524e09, 24.30622),
        ("lat", 1.320067524e09, 60.07965),
        ("%RH", 1.320067584e09, 20.7),
        ("lon", 1.320067584e09, 24.30623),
        ("lat", 1.320067584e09, 60.07966),
        ("%EL", 1.320067614e09, 98),
        ("%RH", 1.320067644e09, 21.2),
        ("lon", 1.320067644e09, 24.30628),
        ("lat", 1.320067644e09, 60.07967),
    ]
]
# RFC 8428 §5.1.5 (Multiple Data Types)
DATA_TYPES: Pack = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
    {"n": "label", "vs": "Machine Room"},
    {"n": "open", "vb": False},
    {"n": "nfc-reader", "vd": "aGkgCg"},
]
# RFC 8428 §5.1.6 (Collection of Resources): "the last record would use the Base Name from
# the 3rd record but the Base Time from the first record"
COLLECTION: Pack = [
    {"bn": "2001:db8::2/", "bt": 1.320078429e09, "n": "temperature", "u": "Cel", "v": 27.2},
    {"n": "humidity", "u": "%RH", "v": 80},
    {"bn": "2001:db8::1/", "n": "temperature", "u": "Cel", "v": 12.3},
    {"n": "humidity", "u": "%RH", "v": 67},
]
# RFC 8428 §5.1.7 (Setting an Actuator): a thermostat; a record of base fields only first
THERMOSTAT: Pack = [
    {"bn": "urn:dev:ow:10e2073a01080063:"},
    {"n": "temp", "u": "Cel", "v": 23.1},
    {"n": "heat", "u": "/", "v": 1},
    {"n": "fan", "u": "/", "v": 0},
]
# RFC 8428 §5.1.7: two lights on
LIGHTS_ON: Pack = [
    {"bt": 1.320078429e09, "bu": "/", "n": "2001:db8::3", "v": 1},
    {"n": "2001:db8::4", "v": 1},
]
# RFC 8428 §5.1.7: two lights dimmed now, off 100 ms later
LIGHTS_OFF: Pack = [
    {"bt": 1.320078429e09, "bu": "/", "n": "2001:db8::3", "v": 0.5},
    {"n": "2001:db8::4", "v": 0.5},
    {"n": "2001:db8::3", "t": 0.1, "v": 0},
    {"n": "2001:db8::4", "t": 0.1, "v": 0},
]
# RFC 8428 §4.8 (SenSML): a stream's records, here as one pack
STREAM: Pack = [
    {"bn": "urn:dev:ow:10e2073a01080063", "bt": 1.320067464e09, "bu": "%RH", "v": 21.2},
    *({"t": t, "v": v} for t, v in [(10, 21.3), (20, 21.4), (30, 21.4), (40, 21.5)]),
]


def fmt(**options: object) -> SenmlFormat:
    return SenmlFormat(FormatOptions(TEMPLATE, 4096, options=options))


def to_cbor(pack: Pack) -> bytes:
    return cbor2.dumps([{LABELS.get(k, k): v for k, v in rec.items()} for rec in pack])


def rows(readings: list[Reading]) -> list[tuple[str, str, float, float, str | None]]:
    return [(r.device, r.kind, r.value, r.ts, r.unit) for r in readings]


def both(pack: Pack, f: SenmlFormat | None = None) -> list[Reading]:
    """Parse the pack as JSON and as CBOR: the same readings."""
    f = f or fmt()
    got = f.parse(TOPIC, json.dumps(pack).encode(), NOW)
    assert f.parse(TOPIC, to_cbor(pack), NOW) == got
    return got


def test_5_1_1_single_datapoint_is_now() -> None:
    (r,) = both(SINGLE)
    # the name is a bare device URN (RFC 9039): the device; the kind from the unit
    assert (r.site, r.device, r.kind, r.value, r.ts, r.unit) == (
        "plant-1",
        "urn:dev:ow:10e2073a01080063",
        "temperature",
        23.1,
        NOW,
        "Cel",
    )


def test_5_1_1_base_name_and_now() -> None:
    assert rows(both(VOLTAGE_CURRENT)) == [
        ("urn:dev:ow:10e2073a01080063", "voltage", 120.1, NOW, "V"),
        ("urn:dev:ow:10e2073a01080063", "current", 1.2, NOW, "A"),
    ]


def test_5_1_2_base_time_unit_version_and_relative_times() -> None:
    got = rows(both(DATAPOINTS))
    bt = 1.276020076001e09
    assert got[0] == ("urn:dev:ow:10e2073a0108006", "voltage", 120.1, bt, "V")
    assert [(d, k, v, u) for d, k, v, _, u in got[1:]] == [
        ("urn:dev:ow:10e2073a0108006", "current", v, "A") for v in (1.2, 1.3, 1.4, 1.5, 1.6, 1.7)
    ]
    assert [ts - bt for *_, ts, _ in got[1:]] == pytest.approx([-5, -4, -3, -2, -1, 0])


def test_6_the_rfcs_cbor_dump_is_the_5_1_2_pack() -> None:
    payload = bytes.fromhex(RFC_CBOR_HEX)
    assert cbor2.loads(payload)[0][-1] == 5  # bver, label -1
    f = fmt()
    assert f.parse(TOPIC, payload, NOW) == f.parse(TOPIC, json.dumps(DATAPOINTS).encode(), NOW)
    for encoding in ("auto", "cbor"):
        assert len(fmt(encoding=encoding).parse(TOPIC, payload, NOW)) == 7
    # the "sensord" format reads a CBOR pack too (after its JSON failed)
    native = NativeFormat(FormatOptions(TEMPLATE, 4096))
    assert native.parse(TOPIC, payload, NOW) == f.parse(TOPIC, payload, NOW)


def test_5_1_3_one_name_several_units_are_several_kinds() -> None:
    got = both(MEASUREMENTS)
    assert len(got) == 13
    assert {r.device for r in got} == {"urn:dev:ow:10e2073a01080063"}
    bt = 1.320067464e09
    assert [(r.kind, r.value, r.ts, r.unit) for r in got[:4]] == [
        ("humidity", 20.0, bt, "%RH"),
        ("longitude", 24.30621, bt, "lon"),
        ("latitude", 60.07965, bt, "lat"),
        ("humidity", 20.3, bt + 60, "%RH"),
    ]
    assert (got[9].kind, got[9].value, got[9].ts, got[9].unit) == ("battery", 98.0, bt + 150, "%EL")


def test_5_1_4_the_resolved_form_gives_the_same_readings() -> None:
    assert rows(both(RESOLVED)) == rows(both(MEASUREMENTS))


def test_5_1_5_text_and_data_records_are_skipped_and_counted() -> None:
    f = fmt()
    got = f.parse(TOPIC, json.dumps(DATA_TYPES).encode(), NOW)
    assert rows(got) == [
        ("urn:dev:ow:10e2073a01080063", "temp", 23.1, NOW, "Cel"),
        ("urn:dev:ow:10e2073a01080063", "open", 0.0, NOW, None),
    ]
    assert f.skipped == {"text": 1, "data": 1}
    # CBOR: vd is a byte string there
    cbor = to_cbor([*DATA_TYPES[:3], {"n": "nfc-reader", "vd": b"hi\n"}])
    assert f.parse(TOPIC, cbor, NOW) == got
    assert f.skipped == {"text": 2, "data": 2}


def test_5_1_5_the_sensord_format_still_refuses_text_records() -> None:
    """It counts no skipped fields: a silent drop would be uncounted."""
    native = NativeFormat(FormatOptions(TEMPLATE, 4096))
    with pytest.raises(PayloadError) as info:
        native.parse(TOPIC, json.dumps(DATA_TYPES).encode(), NOW)
    assert info.value.reason == SCHEMA
    assert "format senml skips it" in info.value.detail


def test_a_pack_of_text_records_only_is_nothing_to_read() -> None:
    f = fmt()
    assert f.parse(TOPIC, b'[{"n": "label", "vs": "Machine Room"}]', NOW) == []
    assert f.parse(TOPIC, b'[{"bn": "room-1/"}]', NOW) == []  # base fields only
    assert f.skipped == {"text": 1}


def test_5_1_6_base_name_changes_base_time_stays() -> None:
    bt = 1.320078429e09
    assert rows(both(COLLECTION)) == [
        ("2001:db8::2", "temperature", 27.2, bt, "Cel"),
        ("2001:db8::2", "humidity", 80.0, bt, "%RH"),
        ("2001:db8::1", "temperature", 12.3, bt, "Cel"),
        ("2001:db8::1", "humidity", 67.0, bt, "%RH"),
    ]


def test_5_1_7_actuator_examples() -> None:
    assert rows(both(THERMOSTAT)) == [
        ("urn:dev:ow:10e2073a01080063", "temp", 23.1, NOW, "Cel"),
        ("urn:dev:ow:10e2073a01080063", "heat", 1.0, NOW, "/"),
        ("urn:dev:ow:10e2073a01080063", "fan", 0.0, NOW, "/"),
    ]
    bt = 1.320078429e09
    # the names split at their last ':' as every name does (docs/formats/senml.md)
    assert rows(both(LIGHTS_ON)) == [
        ("2001:db8:", "3", 1.0, bt, "/"),
        ("2001:db8:", "4", 1.0, bt, "/"),
    ]
    assert [(r.kind, r.value, r.ts) for r in both(LIGHTS_OFF)] == [
        ("3", 0.5, bt),
        ("4", 0.5, bt),
        ("3", 0.0, bt + 0.1),
        ("4", 0.0, bt + 0.1),
    ]


def test_4_8_stream_records() -> None:
    got = both(STREAM)
    assert [(r.kind, r.value, r.ts - 1.320067464e09) for r in got] == [
        ("humidity", 21.2, 0),
        ("humidity", 21.3, 10),
        ("humidity", 21.4, 20),
        ("humidity", 21.4, 30),
        ("humidity", 21.5, 40),
    ]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        pytest.param(0, NOW, id="zero-is-now"),
        pytest.param(-60, NOW - 60, id="relative-past"),
        pytest.param(30, NOW + 30, id="relative-future"),
        pytest.param(2**28 - 1, NOW + 2**28 - 1, id="largest-relative"),
        pytest.param(2**28, 2**28, id="smallest-absolute"),
        pytest.param(1.7e9, 1.7e9, id="absolute"),
    ],
)
def test_4_5_3_relative_and_absolute_times(t: float, expected: float) -> None:
    f = SenmlFormat(FormatOptions(TEMPLATE, 4096, max_clock_skew=2**29))
    (r,) = f.parse(TOPIC, json.dumps([{"v": 1, "t": t}]).encode(), NOW)
    assert r.ts == expected


def test_4_6_base_value_and_base_time_add() -> None:
    pack = [
        {"bn": "d/", "bt": 1.7e9, "bv": 100, "n": "level", "v": 1, "t": 5},
        {"n": "level", "v": -2},
    ]
    assert [(r.value, r.ts) for r in both(pack)] == [(101.0, 1.7e9 + 5), (98.0, 1.7e9)]


def test_4_6_sums_are_readings_of_kind_sum() -> None:
    """A sum (s, bs + s) is a reading of its own, kind `<kind>_sum`, unit `<unit>·s`; once a
    base sum is set every later record has a sum (§4.6: a missing s counts as zero)."""
    pack = [
        {"bn": "meter-1/", "n": "power", "u": "W", "v": 230, "s": 3600},
        {"n": "water", "u": "l", "s": 12.5},
        {"bs": 1000, "n": "gas", "u": "m3", "s": 4},
        {"n": "flow", "u": "l/s", "v": 0.5},
    ]
    assert rows(both(pack)) == [
        ("meter-1", "power", 230.0, NOW, "W"),
        ("meter-1", "power_sum", 3600.0, NOW, "W·s"),
        ("meter-1", "water_sum", 12.5, NOW, "l·s"),
        ("meter-1", "gas_sum", 1004.0, NOW, "m3·s"),
        ("meter-1", "flow", 0.5, NOW, "l/s"),
        ("meter-1", "flow_sum", 1000.0, NOW, "l/s·s"),
    ]


def test_4_4_update_time_and_unknown_fields_are_ignored() -> None:
    (r,) = both([{"n": "temp", "v": 1, "ut": 60, "x-vendor": {"a": 1}, "bver": 10}])
    assert (r.kind, r.value) == ("temp", 1.0)


@pytest.mark.parametrize(
    ("pack", "detail"),
    [
        pytest.param([{"bver": 11, "v": 1}], "SenML version 11 > 10", id="bver-above-10"),
        pytest.param([{"bver": 5, "v": 1}, {"bver": 6, "v": 2}], "bver differs", id="bver-changes"),
        pytest.param([{"v": 1, "n_": "x"}], "must-understand field 'n_'", id="must-understand"),
        pytest.param([{"n": "x", "v": 1, "vs": "a"}], "more than one value", id="v-and-vs"),
        pytest.param([{"n": "x", "v": 1, "vb": True}], "more than one value", id="v-and-vb"),
        pytest.param([{"n": "x", "vs": "a", "vd": "b"}], "more than one value", id="vs-and-vd"),
        pytest.param([{"n": "x", "vs": 5}], "vs must be a string", id="vs-not-string"),
        pytest.param([{"n": "x", "vd": 5}], "vd must be a string", id="vd-not-string"),
        pytest.param([{"n": "x", "vb": 1}], "vb must be true or false", id="vb-not-bool"),
        pytest.param([{"n": "x"}], "has no value", id="no-value"),
        pytest.param([{"n": "x", "ut": 5}], "has no value", id="update-time-only"),
        pytest.param([{"n": 5, "v": 1}], "n must be a string", id="n-not-string"),
        pytest.param([{"bn": 5, "v": 1}], "bn must be a string", id="bn-not-string"),
        pytest.param([{"bu": 5, "v": 1}], "bu must be a string", id="bu-not-string"),
        pytest.param([{"u": 5, "v": 1}], "u must be a string", id="u-not-string"),
        pytest.param([{"bt": "now", "v": 1}], "bt must be a number", id="bt-string"),
        pytest.param([{"bs": "x", "v": 1}], "bs must be a number", id="bs-string"),
        pytest.param([{"s": True, "n": "x"}], "s must be a number", id="s-bool"),
        pytest.param([{"v": "1"}], "v must be a number", id="v-string"),
        pytest.param([1], "record 0 is not", id="record-not-object"),
        pytest.param([], "empty SenML pack", id="empty"),
    ],
)
def test_malformed_records_refuse_the_pack(pack: list[object], detail: str) -> None:
    f = fmt()
    for payload in (json.dumps(pack).encode(), cbor2.dumps(pack)):
        with pytest.raises(PayloadError) as info:
            f.parse(TOPIC, payload, NOW)
        assert info.value.reason == SCHEMA
        assert detail in info.value.detail


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"\x81\xa1\x02", NOT_JSON, "senml: payload is not CBOR"),  # truncated
        (b"\x82\xa1\x02\x01", NOT_JSON, "senml: payload is not CBOR"),
        (b"\x81\x01", SCHEMA, "SenML record 0 is not a map"),
        (b"\x81\xa1\xf5\x01", SCHEMA, "a label must be int or text"),
        (cbor2.dumps([{2: 1e400}]), NON_FINITE, "v is not a finite number"),
        (cbor2.dumps([{2: 1, 6: NOW + 3600}]), CLOCK_SKEW, "ahead of the receive time"),
        (b"\x81" * 3000, TOO_LARGE, "3000 bytes > 2048"),
        (b"\x9f" * 2000, NOT_JSON, "senml: payload is not CBOR"),  # nested, never ended
    ],
)
def test_malformed_cbor(payload: bytes, reason: str, detail: str) -> None:
    f = SenmlFormat(FormatOptions(TEMPLATE, 2048))
    with pytest.raises(PayloadError) as info:
        f.parse(TOPIC, payload, NOW)
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_encoding_option() -> None:
    payload = to_cbor(SINGLE)
    with pytest.raises(PayloadError) as info:
        fmt(encoding="json").parse(TOPIC, payload, NOW)
    assert info.value.reason == NOT_JSON
    with pytest.raises(PayloadError) as info:
        fmt(encoding="cbor").parse(TOPIC, json.dumps(SINGLE).encode(), NOW)
    assert info.value.detail == "senml: payload is not CBOR"
    with pytest.raises(PayloadError) as info:
        fmt(encoding="cbor").parse(TOPIC, b"5", NOW)  # CBOR: the integer 21
    assert info.value.detail == "senml: a pack is a CBOR array of records, got int"
    # the CBOR self-describe tag (RFC 8949 §3.4.6) before the pack
    assert len(fmt().parse(TOPIC, b"\xd9\xd9\xf7" + payload, NOW)) == 1
    # JSON after a BOM and whitespace is JSON
    assert len(fmt().parse(TOPIC, b"\xef\xbb\xbf \n" + json.dumps(SINGLE).encode(), NOW)) == 1
    with pytest.raises(ValueError, match="encoding: must be one of auto, json, cbor"):
        fmt(encoding="xml")
    with pytest.raises(
        ValueError, match=r"unknown option .colour. \(this format.s options: encoding\)"
    ):
        fmt(colour="red")


def test_the_simulated_device_reads_back() -> None:
    device = get_device("senml")("room-1", "plant-1")
    f = fmt()
    readings: list[Reading] = []
    messages = [*device.birth(), *device.state({"temperature": 21.5, "humidity": 40.0}, NOW - 5)]
    messages += device.death()
    for topic, payload, _qos, _retain in messages:
        readings += f.parse(topic, payload, NOW)
    got = {(r.site, r.device, r.kind): (r.value, r.ts, r.unit) for r in readings}
    assert got[("plant-1", "room-1", "temperature")] == (21.5, NOW - 5, "Cel")
    assert got[("plant-1", "room-1", "humidity")] == (40.0, NOW - 5, "%RH")
    online = [r.value for r in readings if r.kind == "online"]
    assert online == [1.0, 0.0]


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_label = st.sampled_from([*LABELS, "x", "n_"])
_record = st.dictionaries(_label, _scalar, max_size=6)


@settings(max_examples=100, database=None, deadline=None)
@given(st.lists(_record, max_size=5))
def test_fuzz_json_packs(pack: Pack) -> None:
    f = fmt()
    with contextlib.suppress(PayloadError):
        check_readings(f.parse(TOPIC, json.dumps(pack).encode(), NOW))


@settings(max_examples=100, database=None, deadline=None)
@given(st.lists(_record, max_size=5))
def test_fuzz_cbor_packs(pack: Pack) -> None:
    f = fmt()
    with contextlib.suppress(PayloadError):
        check_readings(f.parse(TOPIC, to_cbor(pack), NOW))


@settings(max_examples=100, database=None, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_bytes(payload: bytes) -> None:
    for f in (fmt(), fmt(encoding="cbor"), NativeFormat(FormatOptions(TEMPLATE, 4096))):
        with contextlib.suppress(PayloadError):
            check_readings(f.parse(TOPIC, payload, NOW))


@settings(max_examples=100, database=None, deadline=None)
@given(st.binary(max_size=48))
def test_fuzz_cbor_bytes_after_an_array_head(tail: bytes) -> None:
    f = fmt()
    with contextlib.suppress(PayloadError):
        check_readings(f.parse(TOPIC, b"\x81" + tail, NOW))
