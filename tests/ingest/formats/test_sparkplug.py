"""Format "sparkplug": Sparkplug B 3.0 births, data by alias, seq, deaths, bounds, fuzz.

Payloads are built with the gencode sensord decodes with, as the specification's examples
and Eclipse Tahu's Python edge node build them:
- Sparkplug 3.0.0, https://sparkplug.eclipse.org/specification/version/3.0/documents/
  sparkplug-specification-3.0.0.pdf: its NBIRTH (bdSeq metric, seq 0), DBIRTH, NDATA/DDATA
  (metrics by alias), NDEATH (the NBIRTH's bdSeq), DDEATH, datatypes and the NCMD
  `Node Control/Rebirth` request;
- Tahu, https://github.com/eclipse/tahu/blob/master/python/examples/example.py (the group
  "Sparkplug B Devices", node "Python Edge Node 1", device "Emulated Device", its AliasMap,
  metrics and the "Quality" 500 property of its DDATA) and python/core/sparkplug_b.py
  (addMetric: Int8/16/32/64 negatives stored as value + 2**bits).
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats import _sparkplug_model as spb
from sensord.ingest.formats._sparkplug_model import Payload
from sensord.ingest.formats.sparkplug import SparkplugFormat
from sensord.ingest.reasons import SCHEMA, TOO_LARGE, TOPIC
from simulators.devices import get as get_device
from tests.ingest.formats.support import FakeLink, check_readings, create, parse_or_refused

NOW = 1_764_000_000.0
NOW_MS = int(NOW * 1000)
GROUP = "Sparkplug B Devices"
NODE = "Python Edge Node 1"
DEVICE = "Emulated Device"
T_NBIRTH = f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
T_NDATA = f"spBv1.0/{GROUP}/NDATA/{NODE}"
T_NDEATH = f"spBv1.0/{GROUP}/NDEATH/{NODE}"
T_DBIRTH = f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"
T_DDATA = f"spBv1.0/{GROUP}/DDATA/{NODE}/{DEVICE}"
T_DDEATH = f"spBv1.0/{GROUP}/DDEATH/{NODE}/{DEVICE}"
T_NCMD = f"spBv1.0/{GROUP}/NCMD/{NODE}"


def make(link: FakeLink | None = None, /, **options: object) -> SparkplugFormat:
    fmt = create("sparkplug", SparkplugFormat, site="default", source="spb", **options)
    if link is not None:
        fmt.bind(link)
    return fmt


def payload(seq: int | None = None, ts: int | None = NOW_MS, **kw: Any) -> Any:
    p = Payload(**kw)
    if seq is not None:
        p.seq = seq
    if ts is not None:
        p.timestamp = ts
    return p


def add(
    p: Any,
    name: str | None,
    alias: int | None,
    datatype: int,
    value: Any = None,
    *,
    ts: int | None = NOW_MS,
) -> Any:
    """Tahu's addMetric (python/core/sparkplug_b.py), negatives as value + 2**bits."""
    m = p.metrics.add(datatype=datatype)
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if ts is not None:
        m.timestamp = ts
    if value is None:
        m.is_null = True
        return m
    bits = {spb.INT8: 8, spb.INT16: 16, spb.INT32: 32, spb.INT64: 64}.get(datatype)
    if bits is not None and value < 0:
        value += 2**bits
    if datatype in {spb.INT8, spb.INT16, spb.INT32, spb.UINT8, spb.UINT16, spb.UINT32}:
        m.int_value = value
    elif datatype in {spb.INT64, spb.UINT64, spb.DATETIME}:
        m.long_value = value
    elif datatype == spb.FLOAT:
        m.float_value = value
    elif datatype == spb.DOUBLE:
        m.double_value = value
    elif datatype == spb.BOOLEAN:
        m.boolean_value = value
    elif datatype in {spb.STRING, spb.TEXT, spb.UUID}:
        m.string_value = value
    else:
        m.bytes_value = value
    return m


def prop(m: Any, key: str, **value: Any) -> None:
    m.properties.keys.append(key)
    m.properties.values.add(**value)


def b(p: Any) -> bytes:
    data: bytes = p.SerializeToString()
    return data


# ---- Tahu's example edge node (python/examples/example.py, publishNodeBirth/DeviceBirth)


def tahu_nbirth(bdseq: int = 0) -> bytes:
    p = payload(seq=0)
    add(p, "bdSeq", None, spb.INT64, bdseq)
    add(p, "Node Control/Next Server", 0, spb.BOOLEAN, False)
    add(p, "Node Control/Rebirth", 1, spb.BOOLEAN, False)
    add(p, "Node Control/Reboot", 2, spb.BOOLEAN, False)
    add(p, "Node Metric0", 4, spb.STRING, "hello node")
    add(p, "Node Metric1", 5, spb.BOOLEAN, True)
    add(p, "Node Metric3", 7, spb.INT32, None)  # addNullMetric
    ds = p.metrics.add(name="DataSet", alias=3, timestamp=NOW_MS, datatype=16)
    ds.dataset_value.num_of_columns = 3
    ds.dataset_value.columns.extend(["Int8s", "Int16s", "Int32s"])
    ds.dataset_value.types.extend([1, 2, 3])
    m = add(p, "Node Metric2", 6, spb.INT16, 13)
    prop(m, "engUnit", type=spb.STRING, string_value="MyCustomUnits")
    tpl = p.metrics.add(name="_types_/Custom_Motor", timestamp=NOW_MS, datatype=19)
    tpl.template_value.is_definition = True
    return b(p)


def tahu_dbirth(seq: int = 1) -> bytes:
    p = payload(seq=seq)
    add(p, "input/Device Metric0", 8, spb.STRING, "hello device")
    add(p, "input/Device Metric1", 9, spb.BOOLEAN, True)
    add(p, "output/Device Metric2", 10, spb.INT16, 16)
    add(p, "output/Device Metric3", 11, spb.BOOLEAN, True)
    tpl = p.metrics.add(name="My_Custom_Motor", alias=12, timestamp=NOW_MS, datatype=19)
    tpl.template_value.template_ref = "Custom_Motor"
    return b(p)


def born(link: FakeLink | None = None, **options: object) -> SparkplugFormat:
    fmt = make(link, **options)
    fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)
    fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)
    return fmt


def by_kind(readings: list[Reading]) -> dict[tuple[str, str], Reading]:
    return {(r.device, r.labels.get("sensor", "")): r for r in readings}


def test_registered_with_the_firmware_topics() -> None:
    assert "sparkplug" in formats.names()
    assert SparkplugFormat.default_topics == ("spBv1.0/#",)


def test_tahu_nbirth_learns_and_reads_the_node() -> None:
    fmt = make()
    out = fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)
    got = by_kind(out)
    online = got[(NODE, "")]
    assert (online.kind, online.value, online.unit) == ("online", 1.0, None)
    assert online.site == "default"
    assert online.labels == {"group": GROUP}
    assert online.ts == NOW
    metric1 = got[(NODE, "Node Metric1")]
    assert (metric1.kind, metric1.value) == ("node_metric1", 1.0)
    metric2 = got[(NODE, "Node Metric2")]
    assert (metric2.kind, metric2.value, metric2.unit) == ("node_metric2", 13.0, "MyCustomUnits")
    assert metric2.labels == {"group": GROUP, "sensor": "Node Metric2"}
    # bdSeq and Node Control/* are protocol, not readings; text, null, DataSet, Template skip
    assert len(out) == 3
    assert fmt.skipped == {"text": 1, "null": 1, "unsupported": 2}


def test_tahu_dbirth_then_ddata_by_alias() -> None:
    fmt = make()
    fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)
    out = fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)
    dev = f"{NODE}/{DEVICE}"
    got = by_kind(out)
    assert got[(dev, "")].kind == "online"
    assert got[(dev, "")].value == 1.0
    assert got[(dev, "output/Device Metric2")].value == 16.0
    assert got[(dev, "input/Device Metric1")].value == 1.0
    # Tahu's DDATA: an output written back (alias 10, Int16), by alias only
    p = payload(seq=2)
    add(p, None, 10, spb.INT16, -5, ts=NOW_MS + 1500)
    (r,) = fmt.parse(T_DDATA, b(p), NOW + 2)
    assert (r.device, r.kind, r.value, r.ts) == (dev, "device_metric2", -5.0, NOW + 1.5)
    assert r.labels["sensor"] == "output/Device Metric2"


def test_tahu_stale_quality_is_skipped() -> None:
    # example.py's loop: Device Metric1 with the property Quality = 500 (stale)
    fmt = born()
    p = payload(seq=2)
    m = add(p, None, 9, spb.BOOLEAN, False)
    prop(m, "Quality", type=spb.INT32, int_value=500)
    m = add(p, None, 11, spb.BOOLEAN, False)
    prop(m, "Quality", type=spb.INT32, int_value=192)
    out = fmt.parse(T_DDATA, b(p), NOW)
    assert [(r.labels["sensor"], r.value) for r in out] == [("output/Device Metric3", 0.0)]
    assert fmt.skipped["quality"] == 1


def sensor_births() -> tuple[bytes, bytes]:
    nb = payload(seq=0)
    add(nb, "bdSeq", None, spb.UINT64, 7)
    db = payload(seq=1)
    m = add(db, "Sensors/Temperature", 1, spb.FLOAT, 21.3)
    prop(m, "engUnit", type=spb.STRING, string_value="°C")
    m = add(db, "Inputs/Temp 1", 2, spb.DOUBLE, 19.5)
    prop(m, "engUnit", type=spb.STRING, string_value="°F")
    add(db, "Inputs/Temp 2", 3, spb.FLOAT, 20.0)
    add(db, "Sensors/Humidity", 4, spb.FLOAT, 45.0)
    add(db, "Alarms/WaterLeak", 5, spb.BOOLEAN, False)
    return b(nb), b(db)


def test_kind_from_the_last_path_element_and_sensor_label_from_the_full_name() -> None:
    fmt = make()
    nb, db = sensor_births()
    fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)
    out = fmt.parse("spBv1.0/plant/DBIRTH/edge-1/rack-3", db, NOW)
    rows = {(r.labels.get("sensor"), r.kind, r.value, r.unit) for r in out}
    assert rows == {
        (None, "online", 1.0, None),
        ("Sensors/Temperature", "temperature", 21.3, "°C"),  # float32, 7 digits: 21.3
        ("Inputs/Temp 1", "temperature", 19.5, "°F"),
        ("Inputs/Temp 2", "temperature", 20.0, "°C"),  # no engUnit: the kind's unit
        ("Sensors/Humidity", "humidity", 45.0, "%"),
        ("Alarms/WaterLeak", "water_leak", 0.0, None),
    }
    assert {r.device for r in out} == {"edge-1/rack-3"}
    assert len({(r.kind, tuple(sorted(r.labels.items()))) for r in out}) == len(out)


def test_times_metric_then_payload_then_now() -> None:
    fmt = make()
    nb, db = sensor_births()
    fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)
    fmt.parse("spBv1.0/plant/DBIRTH/edge-1/rack-3", db, NOW)
    p = payload(seq=2, ts=NOW_MS - 10_000)
    add(p, None, 1, spb.FLOAT, 22.0, ts=NOW_MS - 20_000)
    add(p, None, 4, spb.FLOAT, 50.0, ts=None)
    out = fmt.parse("spBv1.0/plant/DDATA/edge-1/rack-3", b(p), NOW)
    assert [r.ts for r in out] == [NOW - 20, NOW - 10]
    p = payload(seq=3, ts=None)
    add(p, None, 1, spb.FLOAT, 23.0, ts=None)
    (r,) = fmt.parse("spBv1.0/plant/DDATA/edge-1/rack-3", b(p), NOW + 5)
    assert r.ts == NOW + 5


def test_metric_ahead_of_the_clock_is_skipped() -> None:
    fmt = make()
    nb, db = sensor_births()
    fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)
    fmt.parse("spBv1.0/plant/DBIRTH/edge-1/rack-3", db, NOW)
    p = payload(seq=2)
    add(p, None, 1, spb.FLOAT, 22.0, ts=NOW_MS + 3_600_000)
    add(p, None, 4, spb.FLOAT, 50.0)
    out = fmt.parse("spBv1.0/plant/DDATA/edge-1/rack-3", b(p), NOW)
    assert [r.kind for r in out] == ["humidity"]
    assert fmt.skipped["clock_skew"] == 1


def test_units_converted_per_ingest_units() -> None:
    fmt = make(units={"temperature": "F"})
    nb, db = sensor_births()
    fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)
    out = fmt.parse("spBv1.0/plant/DBIRTH/edge-1/rack-3", db, NOW)
    temps = {r.labels["sensor"]: r for r in out if r.kind == "temperature"}
    assert temps["Sensors/Temperature"].value == pytest.approx(70.34)
    assert temps["Inputs/Temp 1"].value == pytest.approx(19.5)
    assert {r.unit for r in temps.values()} == {"F"}


def test_site_from_group() -> None:
    fmt = make(site_from_group=True)
    nb, db = sensor_births()
    fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)
    out = fmt.parse("spBv1.0/plant/DBIRTH/edge-1/rack-3", db, NOW)
    assert {r.site for r in out} == {"plant"}
    assert all("group" not in r.labels for r in out)


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "expected"),
    [
        (spb.INT8, "int_value", 255, -1.0),
        (spb.INT8, "int_value", 2**32 - 1, -1.0),  # sign-extended to 32 bits by some encoders
        (spb.INT16, "int_value", 2**16 - 2, -2.0),
        (spb.INT32, "int_value", 2**32 - 3, -3.0),
        (spb.INT64, "long_value", 2**64 - 4, -4.0),
        (spb.INT32, "int_value", 123, 123.0),
        (spb.UINT8, "int_value", 200, 200.0),
        (spb.UINT16, "int_value", 65535, 65535.0),
        (spb.UINT32, "int_value", 4_000_000_000, 4e9),  # Tahu: int_value
        (spb.UINT32, "long_value", 4_000_000_000, 4e9),  # Java Tahu: long_value
        (spb.UINT64, "long_value", 2**40, float(2**40)),
        (spb.FLOAT, "float_value", 21.3, 21.3),
        (spb.FLOAT, "float_value", -0.0001234, -0.0001234),
        (spb.DOUBLE, "double_value", 0.1, 0.1),
        (spb.BOOLEAN, "boolean_value", False, 0.0),
        (spb.BOOLEAN, "int_value", 1, 1.0),
    ],
)
def test_datatypes(datatype: int, field: str, raw: Any, expected: float) -> None:
    fmt = make()
    p = payload(seq=0)
    p.metrics.add(name="bdSeq", datatype=spb.INT64, long_value=0)
    p.metrics.add(name="Sensors/Value", alias=1, datatype=datatype)
    fmt.parse(T_NBIRTH, b(p), NOW)
    assert fmt.skipped == {"null": 1}  # declared without a value
    fmt.skipped.clear()
    d = payload(seq=1)
    setattr(d.metrics.add(alias=1), field, raw)
    (r,) = fmt.parse(T_NDATA, b(d), NOW)
    assert r.value == expected
    assert fmt.skipped == {}


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "reason"),
    [
        (spb.STRING, "string_value", "hello", "text"),
        (spb.TEXT, "string_value", "hello", "text"),
        (spb.UUID, "string_value", "2b7e-…", "text"),
        (spb.DATETIME, "long_value", NOW_MS, "unsupported"),
        (17, "bytes_value", b"\x00", "unsupported"),  # Bytes
        (18, "bytes_value", b"\x00", "unsupported"),  # File
        (22, "bytes_value", b"\x00", "unsupported"),  # Int8Array (3.0)
        (spb.DOUBLE, "double_value", math.nan, "non_finite"),
        (spb.FLOAT, "float_value", math.inf, "non_finite"),
        (spb.FLOAT, "string_value", "21.5", "datatype"),
        (spb.INT32, "boolean_value", True, "datatype"),
        (spb.INT32, "is_null", True, "null"),
    ],
)
def test_datatypes_skipped(datatype: int, field: str, raw: Any, reason: str) -> None:
    fmt = make()
    p = payload(seq=0)
    p.metrics.add(name="Sensors/Value", alias=1, datatype=datatype)
    p.metrics.add(name="Sensors/Other", alias=2, datatype=spb.DOUBLE)
    fmt.parse(T_NBIRTH, b(p), NOW)
    fmt.skipped.clear()
    d = payload(seq=1)
    setattr(d.metrics.add(alias=1), field, raw)
    d.metrics.add(alias=2, double_value=1.0)
    (r,) = fmt.parse(T_NDATA, b(d), NOW)
    assert r.labels["sensor"] == "Sensors/Other"
    assert fmt.skipped == {reason: 1}


def test_data_by_name_without_alias() -> None:
    fmt = make()
    p = payload(seq=0)
    add(p, "Sensors/Temperature", None, spb.DOUBLE, 20.0)
    fmt.parse(T_NBIRTH, b(p), NOW)
    d = payload(seq=1)
    add(d, "Sensors/Temperature", None, spb.DOUBLE, 20.5)
    (r,) = fmt.parse(T_NDATA, b(d), NOW)
    assert (r.device, r.kind, r.value) == (NODE, "temperature", 20.5)


# ---- seq, rebirth


def ddata(seq: int, value: int = 1) -> bytes:
    p = payload(seq=seq)
    add(p, None, 10, spb.INT16, value)
    return b(p)


def test_seq_wraps_without_a_gap() -> None:
    fmt = born()
    for seq in [*range(2, 256), 0, 1, 2]:
        assert fmt.parse(T_DDATA, ddata(seq), NOW)
    assert fmt.skipped.get("seq_gap") is None


def test_seq_gap_is_counted_and_answered_with_a_rate_limited_rebirth() -> None:
    link = FakeLink()
    fmt = born(link, rebirth=True)
    assert fmt.parse(T_DDATA, ddata(2), NOW)
    assert link.published == []
    (r,) = fmt.parse(T_DDATA, ddata(5, value=9), NOW + 1)  # 3, 4 lost: the data is kept
    assert r.value == 9.0
    assert fmt.skipped["seq_gap"] == 1
    ((topic, data, qos, retain),) = link.published
    assert (topic, qos, retain) == (T_NCMD, 0, False)
    cmd = Payload.FromString(data)
    ((metric),) = cmd.metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == (
        "Node Control/Rebirth",
        spb.BOOLEAN,
        True,
    )
    assert cmd.timestamp == NOW_MS + 1000
    fmt.parse(T_DDATA, ddata(9), NOW + 2)  # another gap within 5 s: counted, not asked
    assert fmt.skipped["seq_gap"] == 2
    assert len(link.published) == 1
    fmt.parse(T_DDATA, ddata(20), NOW + 6.5)
    assert len(link.published) == 2
    assert fmt.discovered()["rebirths_requested"] == 2


def test_rebirth_is_off_by_default() -> None:
    link = FakeLink()
    fmt = born(link)
    fmt.parse(T_DDATA, ddata(7), NOW)
    assert fmt.skipped["seq_gap"] == 1
    assert link.published == []


def test_rebirth_answered_births_resume_the_data() -> None:
    link = FakeLink()
    fmt = born(link, rebirth=True, rebirth_interval=0)
    fmt.parse(T_DDATA, ddata(9), NOW)
    assert len(link.published) == 1
    fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)  # the node answers: NBIRTH seq 0, DBIRTH seq 1
    fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)
    assert fmt.parse(T_DDATA, ddata(2), NOW)
    assert fmt.skipped["seq_gap"] == 1


def test_data_before_birth_is_counted_and_asks_for_a_birth() -> None:
    link = FakeLink()
    fmt = make(link, rebirth=True)
    assert fmt.parse(T_NDATA, ddata(3), NOW) == []
    assert fmt.parse(T_DDATA, ddata(4), NOW) == []
    assert fmt.parse(T_DBIRTH, tahu_dbirth(), NOW) == []
    assert fmt.skipped["no_birth"] == 1 + 1 + 5
    assert [t for t, *_ in link.published] == [T_NCMD]  # once per node per interval
    fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)
    # a device of a born node that never sent its DBIRTH
    assert fmt.parse(f"spBv1.0/{GROUP}/DDATA/{NODE}/other", ddata(1), NOW + 10) == []
    assert fmt.skipped["no_birth"] == 8
    assert len(link.published) == 2


def test_unknown_alias_is_counted_and_asks_for_a_birth() -> None:
    link = FakeLink()
    fmt = born(link, rebirth=True)
    p = payload(seq=2)
    add(p, None, 99, spb.INT16, 1)
    add(p, None, 10, spb.INT16, 2)
    (r,) = fmt.parse(T_DDATA, b(p), NOW)
    assert r.value == 2.0
    assert fmt.skipped["unknown_alias"] == 1
    assert len(link.published) == 1


def test_no_link_no_publish() -> None:
    fmt = born(rebirth=True)
    fmt.parse(T_DDATA, ddata(9), NOW)
    assert fmt.rebirths_requested == 0


# ---- deaths


def ndeath(bdseq: int) -> bytes:
    p = payload(ts=None)  # the will: no timestamp, no seq
    add(p, "bdSeq", None, spb.INT64, bdseq, ts=None)
    return b(p)


def test_ndeath_with_the_births_bdseq_takes_node_and_devices_offline() -> None:
    fmt = make()
    fmt.parse(T_NBIRTH, tahu_nbirth(bdseq=3), NOW)
    fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)
    out = fmt.parse(T_NDEATH, ndeath(3), NOW + 60)
    assert {(r.device, r.kind, r.value, r.ts) for r in out} == {
        (NODE, "online", 0.0, NOW + 60),
        (f"{NODE}/{DEVICE}", "online", 0.0, NOW + 60),
    }
    assert fmt.parse(T_DDATA, ddata(2), NOW + 61) == []  # dead until its next birth
    assert fmt.skipped["no_birth"] == 1
    assert fmt.parse(T_NDEATH, ndeath(3), NOW + 62) == []  # the death, delivered twice
    online = by_kind(fmt.parse(T_NBIRTH, tahu_nbirth(bdseq=4), NOW + 70))[(NODE, "")]
    assert online.value == 1.0


def test_stale_ndeath_is_ignored() -> None:
    # the spec's bdSeq rule: an NDEATH of another bdSeq is an older session's will
    fmt = make()
    fmt.parse(T_NBIRTH, tahu_nbirth(bdseq=4), NOW)
    fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)
    assert fmt.parse(T_NDEATH, ndeath(3), NOW) == []
    assert fmt.skipped["stale_death"] == 1
    assert fmt.parse(T_DDATA, ddata(2), NOW)  # still alive


def test_ndeath_of_an_unknown_node() -> None:
    fmt = make()
    assert fmt.parse(T_NDEATH, ndeath(0), NOW) == []
    assert fmt.skipped == {"no_birth": 1}


def test_ddeath_takes_one_device_offline() -> None:
    fmt = born()
    p = payload(seq=2)
    (r,) = fmt.parse(T_DDEATH, b(p), NOW + 5)
    assert (r.device, r.kind, r.value, r.ts) == (f"{NODE}/{DEVICE}", "online", 0.0, NOW)
    assert fmt.parse(T_DDATA, ddata(3), NOW) == []
    assert fmt.skipped["no_birth"] == 1
    p = payload(seq=4)
    add(p, "Node Metric1", 5, spb.BOOLEAN, False)
    (r,) = fmt.parse(T_NDATA, b(p), NOW)  # the node itself is still up
    assert (r.device, r.value) == (NODE, 0.0)
    out = fmt.parse(T_NDEATH, ndeath(0), NOW)
    assert [r.device for r in out] == [NODE]  # the device was already offline


# ---- topics and malformed messages


@pytest.mark.parametrize(
    "topic",
    [
        f"spBv1.0/{GROUP}/NCMD/{NODE}",
        f"spBv1.0/{GROUP}/DCMD/{NODE}/{DEVICE}",
        "spBv1.0/STATE/scada-host-1",
    ],
)
def test_commands_and_host_state_carry_nothing(topic: str) -> None:
    assert make().parse(topic, b'{"online": true, "timestamp": 1}', NOW) == []


@pytest.mark.parametrize(
    "topic",
    [
        "spAv1.0/g/NDATA/n",
        "spBv1.0/g",
        "spBv1.0/g/NDATA",
        "spBv1.0/g/NDATA/n/d",
        "spBv1.0/g/DDATA/n",
        "spBv1.0/g/DDATA/n/d/x",
        "spBv1.0/g/NFOO/n",
        "spBv1.0//NDATA/n",
        "spBv1.0/g/DDATA/n/",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(PayloadError) as err:
        make().parse(topic, b"", NOW)
    assert err.value.reason == TOPIC
    assert err.value.detail.startswith("sparkplug: ")


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\x02\x92\x01",  # a metric whose template field is cut short
        b"\xff\xff\xff",
        b'{"timestamp": 1, "metrics": []}',  # JSON is not Sparkplug B
        tahu_nbirth()[:-3],
        b"\x0a",  # field 1 as length-delimited, cut
    ],
)
def test_malformed_protobuf_is_refused(data: bytes) -> None:
    fmt = born()
    with pytest.raises(PayloadError) as err:
        fmt.parse(T_NBIRTH, data, NOW)
    assert err.value.reason == SCHEMA
    assert err.value.detail.startswith("sparkplug: ")
    assert fmt.parse(T_DDATA, ddata(2), NOW)  # the good birth is kept


def test_bad_utf8_metric_name_is_skipped() -> None:
    fmt = make()
    p = payload(seq=0)
    add(p, "Sensors/Temperature", 1, spb.DOUBLE, 20.0)
    data = b(p).replace(b"Sensors/Temperature", b"Sensors/Temp\xffrature")
    out = fmt.parse(T_NBIRTH, data, NOW)
    assert [r.kind for r in out] == ["online"]
    assert fmt.skipped == {"no_name": 1}


def test_group_option_keeps_one_group() -> None:
    fmt = make(group="plant")
    assert fmt.parse(T_NBIRTH, tahu_nbirth(), NOW) == []
    nb, _ = sensor_births()
    assert fmt.parse("spBv1.0/plant/NBIRTH/edge-1", nb, NOW)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"groups": "x"}, "groups: unknown sparkplug option; known: group, max_aliases"),
        ({"group": "a/b"}, "group: "),
        ({"group": ""}, "group: "),
        ({"rebirth": "yes"}, "rebirth: must be true or false"),
        ({"site_from_group": 1}, "site_from_group: must be true or false"),
        ({"rebirth_interval": -1}, "rebirth_interval: "),
        ({"rebirth_interval": True}, "rebirth_interval: "),
        ({"max_metrics": 0}, "max_metrics: must be a positive integer"),
        ({"max_aliases": 1.5}, "max_aliases: must be a positive integer"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        make(**options)


# ---- bounds (issue 17, "Untrusted input")


def test_payload_size_bound() -> None:
    fmt = formats.create("sparkplug", FormatOptions("", 100))
    with pytest.raises(PayloadError) as err:
        fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)
    assert err.value.reason == TOO_LARGE
    assert err.value.detail.startswith("sparkplug: ")


def big_birth(n: int, seq: int, first_alias: int = 100) -> bytes:
    p = payload(seq=seq)
    for i in range(n):
        add(p, f"Sensors/Temperature {i}", first_alias + i, spb.FLOAT, 20.0)
    return b(p)


def test_max_metrics_per_birth_refuses_and_keeps_the_previous_birth() -> None:
    fmt = born(max_metrics=10)  # Tahu's NBIRTH has 10
    before = fmt.discovered()
    with pytest.raises(PayloadError) as err:
        fmt.parse(T_DBIRTH, big_birth(11, seq=2), NOW)
    assert err.value.reason == TOO_LARGE
    assert "max_metrics 10" in err.value.detail
    assert "previous birth is kept" in err.value.detail
    assert fmt.discovered() == before
    assert fmt.parse(T_DDATA, ddata(3), NOW)  # old aliases still read
    with pytest.raises(PayloadError):
        fmt.parse(T_NBIRTH, big_birth(11, seq=0), NOW)
    assert fmt.discovered() == before


def test_max_aliases_per_edge_node() -> None:
    fmt = make(max_aliases=11)
    fmt.parse(T_NBIRTH, tahu_nbirth(), NOW)  # 8 aliases
    with pytest.raises(PayloadError) as err:
        fmt.parse(T_DBIRTH, tahu_dbirth(), NOW)  # 5 more
    assert err.value.reason == TOO_LARGE
    assert "13 aliases on the edge node > max_aliases 11" in err.value.detail
    assert fmt.discovered()["nodes"][0]["devices"] == []  # type: ignore[index]
    fmt.parse(f"spBv1.0/{GROUP}/DBIRTH/{NODE}/small", big_birth(3, seq=2), NOW)
    with pytest.raises(PayloadError):
        fmt.parse(T_NBIRTH, big_birth(12, seq=0), NOW)
    assert fmt.discovered()["sensors"] == 11 + 4  # online + 10 metrics, online + 3


def test_duplicate_alias_refuses_the_birth() -> None:
    fmt = born()
    p = payload(seq=2)
    add(p, "Sensors/Temperature", 10, spb.FLOAT, 20.0)
    add(p, "Sensors/Humidity", 10, spb.FLOAT, 40.0)
    with pytest.raises(PayloadError) as err:
        fmt.parse(T_DBIRTH, b(p), NOW)
    assert err.value.reason == SCHEMA
    assert "alias 10 is bound twice" in err.value.detail
    (r,) = fmt.parse(T_DDATA, ddata(3, value=4), NOW)  # the old Device Metric2 still
    assert r.labels["sensor"] == "output/Device Metric2"


def test_sensor_cap_learns_up_to_the_cap_and_counts_the_rest() -> None:
    link = FakeLink()
    fmt = make(link, rebirth=True, max_sensors=6)
    p = payload(seq=0)
    add(p, "bdSeq", None, spb.INT64, 0)
    fmt.parse(T_NBIRTH, b(p), NOW)  # 2 sensors: the node's online, bdSeq
    out = fmt.parse(T_DBIRTH, big_birth(5, seq=1), NOW)  # room for online + 3
    assert len(out) == 1 + 3
    assert fmt.skipped["sensor_cap"] == 2
    assert fmt.discovered()["sensors"] == 6
    d = payload(seq=2)
    add(d, None, 104, spb.FLOAT, 1.0)  # over the cap: counted, no rebirth loop
    add(d, None, 100, spb.FLOAT, 2.0)
    (r,) = fmt.parse(T_DDATA, b(d), NOW)
    assert r.value == 2.0
    assert fmt.skipped["sensor_cap"] == 3
    assert link.published == []
    # no room for another node, nor another device
    nb, _ = sensor_births()
    assert fmt.parse("spBv1.0/plant/NBIRTH/edge-2", nb, NOW) == []
    assert fmt.parse(f"spBv1.0/{GROUP}/DBIRTH/{NODE}/d2", big_birth(1, seq=3), NOW) == []
    assert fmt.skipped["sensor_cap"] == 5
    # a rebirth of the same node frees and relearns its own sensors
    fmt.parse(T_NBIRTH, b(p), NOW)
    assert fmt.discovered()["sensors"] == 2
    assert len(fmt.parse(T_DBIRTH, big_birth(3, seq=1), NOW)) == 4


def test_discovered_summary() -> None:
    fmt = born()
    fmt.parse(T_NDEATH, ndeath(0), NOW)
    assert fmt.discovered() == {
        "nodes": [
            {
                "group": GROUP,
                "edge_node": NODE,
                "online": False,
                "bdSeq": 0,
                "metrics": 10,
                "devices": [{"device": DEVICE, "online": False, "metrics": 5}],
            }
        ],
        "sensors": 11 + 6,
        "rebirths_requested": 0,
    }


# ---- the simulated device is what sensord reads


def test_simulated_device_round_trip() -> None:
    sim = get_device("sparkplug")("edge-7", "plant")
    fmt = make()
    out: list[Reading] = []
    now = time.time()  # births and deaths are stamped with the wall clock
    messages = [*sim.birth(), *sim.state({"temperature": 21.5, "humidity": 40.3}, now)]
    messages += sim.state({"temperature": 22.0, "water_leak": 1.0, "co2": 600.0}, now + 1)
    messages += sim.death()
    for topic, data, qos, retain in messages:
        assert (qos, retain) == (0, False)
        out.extend(fmt.parse(topic, data, now + 2))
    rows = [(r.site, r.device, r.kind, r.value, r.unit) for r in out]
    dev = "edge-7/sensors"
    assert rows == [
        ("default", "edge-7", "online", 1.0, None),
        ("default", dev, "online", 1.0, None),
        ("default", dev, "temperature", 21.5, "°C"),
        ("default", dev, "humidity", 40.3, "%"),
        ("default", dev, "online", 1.0, None),  # re-birth with the new kinds
        ("default", dev, "temperature", 22.0, "°C"),
        ("default", dev, "water_leak", 1.0, None),
        ("default", dev, "co2", 600.0, "ppm"),
        ("default", dev, "online", 0.0, None),  # DDEATH
        ("default", "edge-7", "online", 0.0, None),  # NDEATH, matching bdSeq
    ]
    assert {r.labels["group"] for r in out} == {"plant"}
    assert out[2].ts == pytest.approx(now, abs=0.001)
    assert out[-1].ts == now + 2  # the will has no timestamp: the receive time
    assert fmt.skipped == {"null": 6}  # the DBIRTHs' metrics without a value yet
    # the next session: bdSeq + 1, seq from 0 again
    again = [fmt.parse(t, d, now + 3) for t, d, *_ in sim.birth()]
    assert [r.value for rs in again for r in rs if r.kind == "online"] == [1.0, 1.0]
    assert "seq_gap" not in fmt.skipped


# ---- fuzz


def parse_or_refuse(fmt: SparkplugFormat, topic: str, data: bytes) -> None:
    """Readings that pass `check_readings`, or a PayloadError of this format; nothing else."""
    check_readings(parse_or_refused(fmt, topic, data, NOW, "sparkplug"), nonempty_kind=True)


TOPICS = [T_NBIRTH, T_NDATA, T_NDEATH, T_DBIRTH, T_DDATA, T_DDEATH]


@settings(max_examples=100, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), st.binary(max_size=300))
def test_fuzz_bytes(topic: str, data: bytes) -> None:
    fmt = born(rebirth=True)
    fmt.bind(FakeLink())
    parse_or_refuse(fmt, topic, data)


_values = st.one_of(
    st.tuples(st.just("int_value"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("long_value"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("float_value"), st.floats(width=32)),
    st.tuples(st.just("double_value"), st.floats()),
    st.tuples(st.just("boolean_value"), st.booleans()),
    st.tuples(st.just("string_value"), st.text(max_size=8)),
    st.tuples(st.just("bytes_value"), st.binary(max_size=8)),
    st.none(),
)
_metrics = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["bdSeq", "Sensors/Temperature", "a/b/Temp 2", ""])),
        st.one_of(st.none(), st.integers(0, 20)),
        st.integers(0, 40),
        _values,
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    ),
    max_size=12,
)


@settings(max_examples=100, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(TOPICS),
            st.one_of(st.none(), st.integers(0, 2**64 - 1)),
            st.one_of(st.none(), st.integers(0, 2**64 - 1)),
            _metrics,
        ),
        max_size=6,
    )
)
def test_fuzz_messages(messages: list[tuple[str, int | None, int | None, list[Any]]]) -> None:
    fmt = make(FakeLink(), rebirth=True, max_sensors=20, max_metrics=10, max_aliases=15)
    for topic, seq, ts, metrics in messages:
        p = Payload()
        if seq is not None:
            p.seq = seq
        if ts is not None:
            p.timestamp = ts
        for name, alias, datatype, value, mts in metrics:
            m = p.metrics.add(datatype=datatype)
            if name is not None:
                m.name = name
            if alias is not None:
                m.alias = alias
            if mts is not None:
                m.timestamp = mts
            if value is not None:
                setattr(m, value[0], value[1])
        parse_or_refuse(fmt, topic, b(p))
    assert fmt.discovered()["sensors"] <= 20  # type: ignore[operator]
