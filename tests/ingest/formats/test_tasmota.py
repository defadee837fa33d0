"""Format "tasmota": payloads from the Tasmota docs (named beside each), malformed variants,
a fuzz, and the simulated board end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats.tasmota import TasmotaFormat
from sensord.ingest.reasons import NOT_JSON, SCHEMA, TOO_LARGE, TOPIC
from simulators import devices
from tests.ingest.formats.support import (
    check_readings,
    create,
    json_values,
    parse_or_refused,
    refused,
)

NOW = 1_800_000_000.0

# https://tasmota.github.io/docs/AM2301/ ("Sensor sends a tele/%topic%/SENSOR JSON response")
AM2301 = (
    b'{\n  "Time": "2019-01-01T00:00:00",\n  "AM2301": {\n    "Temperature": 24.6,\n'
    b'    "Humidity": 58.2\n  },\n  "TempUnit": "C"\n}'
)
# https://tasmota.github.io/docs/DS18x20/
DS18B20 = b'{"Time":"2019-01-01T00:00:00","DS18B20":{"Temperature":49.7},"TempUnit":"C"}'
# https://tasmota.github.io/docs/MQTT/ ("Telemetry data will be sent by prefix tele like …")
MQTT_DOC = b'{"Time":"2017-02-16T10:13:52", "DS18B20":{"Temperature":20.6}}'
# https://tasmota.github.io/docs/Teleinfo/ ("Default data"), FullTopic
# emoncms/ch2i/factory/%topic%/%prefix%/, topic denky_D6C0C0
TELEINFO_TOPIC = "emoncms/ch2i/factory/denky_D6C0C0/tele/SENSOR"
TELEINFO = (
    b'{"Time":"2021-10-26T17:28:45","ENERGY":{"TotalStartTime":"2021-10-25T15:22:04",'
    b'"Total":9098.245,"Yesterday":6822.685,"Today":2275.560,"Period": 9,"Power":170,'
    b'"Current":1.000,"Load":6},"TIC":{"ADCO":"021528603314","OPTARIF":"HC..","ISOUSC":15,'
    b'"HCHC":920750,"HCHP":2275560,"PTEC":"HP..","IINST":1,"IMAX":2,"PAPP":170,"HHPHC":"A",'
    b'"MOTDETAT":0},"ESP32":{"Temperature":36.1},"TempUnit":"C"}'
)
# https://github.com/ferrets6/wattson (internal/mqtt test: a Sonoff dual meter's
# tele/tasmota/SENSOR, one value per channel)
DUAL_METER = (
    b'{"Time":"2026-09-18T11:19:21","ENERGY":{"TotalStartTime":"2026-09-16T00:00:00",'
    b'"Total":[2.813,0.254],"Yesterday":[1.530,0.125],"Today":[0.772,0.059],"Power":[52,5],'
    b'"ApparentPower":[66,10],"ReactivePower":[40,9],"Factor":[0.79,0.50],"Voltage":235,'
    b'"Current":[0.278,0.044],"BL09XX":{"Temperature":46.5}}}'
)
# https://tasmota.github.io/docs/ADC/ ("Supply voltage is published in tele/%topic%/STATE")
STATE_VCC = (
    b'{"Time":"2019-10-31T11:14:59","Uptime":"0T18:36:12","UptimeSec":66972,"Vcc":3.423,'
    b'"Heap":28,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":6,"POWER":"OFF",'
    b'"Wifi":{"AP":1,"SSId":"Tasmota","BSSId":"00:00:00:00:00:00","Channel":13,"RSSI":100,'
    b'"LinkCount":1,"Downtime":"0T00:00:06"}}'
)
# https://tasmota.github.io/docs/DeepSleep/ (TelePeriod example: `Time` and `Epoch`)
STATE_EPOCH = (
    b'{"Time":"2019-09-04T13:08:48","Epoch":1567595328,"Uptime":"0T00:00:14","UptimeSec":14,'
    b'"Heap":24,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":20,"MqttCount":1,"Wifi":{"AP":1,'
    b'"SSId":"MyWLAN","BSSId":"AA:FF:AA:AA:AA:AA","Channel":11,"RSSI":100,"LinkCount":1,'
    b'"Downtime":"0T00:00:08","DeepSleep":300,"Heap":25160}}'
)


def make(**options: object) -> TasmotaFormat:
    return create("tasmota", TasmotaFormat, **options)


def table(readings: list[Reading]) -> dict[tuple[str, str], tuple[float, str | None]]:
    return {(r.labels.get("sensor", ""), r.kind): (r.value, r.unit) for r in readings}


def test_registered_with_the_firmwares_default_topics() -> None:
    assert formats.get("tasmota") is TasmotaFormat
    assert make().default_topics == ("tele/+/SENSOR", "tele/+/STATE", "tele/+/LWT")


def test_the_sensor_docs_examples() -> None:
    fmt = make()
    readings = fmt.parse("tele/tasmota_5A9AE8/SENSOR", AM2301, NOW)
    assert table(readings) == {
        ("AM2301", "temperature"): (24.6, "°C"),
        ("AM2301", "humidity"): (58.2, "%"),
    }
    for r in readings:
        assert (r.site, r.device, r.ts) == ("home", "tasmota_5A9AE8", NOW)  # no timezone: now
    assert table(fmt.parse("tele/pool/SENSOR", DS18B20, NOW)) == {
        ("DS18B20", "temperature"): (49.7, "°C")
    }
    assert table(fmt.parse("tele/tasmota/SENSOR", MQTT_DOC, NOW)) == {
        ("DS18B20", "temperature"): (20.6, "°C")
    }
    assert fmt.skipped == {}


def test_two_sensors_of_one_board_stay_two_and_temp_unit_f_is_fahrenheit() -> None:
    payload = (
        b'{"Time":"2020-03-25T20:32:43","AM2301":{"Temperature":72.7,"Humidity":14.9,'
        b'"DewPoint":22.1},"DS18B20-1":{"Id":"0119123F8828","Temperature":70.2},'
        b'"DS18B20-2":{"Id":"0119123F8829","Temperature":69.8},"TempUnit":"F"}'
    )
    assert table(make().parse("tele/rack/SENSOR", payload, NOW)) == {
        ("AM2301", "temperature"): (72.7, "°F"),
        ("AM2301", "humidity"): (14.9, "%"),
        ("AM2301", "dew_point"): (22.1, "°F"),
        ("DS18B20-1", "temperature"): (70.2, "°F"),
        ("DS18B20-2", "temperature"): (69.8, "°F"),
    }


def test_energy_under_a_custom_full_topic() -> None:
    fmt = make(full_topic="emoncms/ch2i/factory/%topic%/%prefix%/")
    assert fmt.default_topics == (
        "emoncms/ch2i/factory/+/tele/SENSOR",
        "emoncms/ch2i/factory/+/tele/STATE",
        "emoncms/ch2i/factory/+/tele/LWT",
    )
    readings = fmt.parse(TELEINFO_TOPIC, TELEINFO, NOW)
    assert {r.device for r in readings} == {"denky_D6C0C0"}
    got = table(readings)
    assert {k: v for k, v in got.items() if k[0] != "TIC"} == {
        ("ENERGY", "energy"): (9098.245, "kWh"),
        ("ENERGY", "energy_yesterday"): (6822.685, "kWh"),
        ("ENERGY", "energy_today"): (2275.56, "kWh"),
        ("ENERGY", "energy_period"): (9.0, "Wh"),
        ("ENERGY", "power"): (170.0, "W"),
        ("ENERGY", "current"): (1.0, "A"),
        ("ENERGY", "load"): (6.0, None),
        ("ESP32", "temperature"): (36.1, "°C"),
    }
    assert got[("TIC", "papp")] == (170.0, None)  # a meter's own numbers keep their names
    assert fmt.skipped == {"text": 3}  # TIC's OPTARIF, PTEC, HHPHC (ADCO is digits)


def test_a_dual_meter_is_one_sensor_per_channel_and_factor_is_percent() -> None:
    got = table(make().parse("tele/tasmota/SENSOR", DUAL_METER, NOW))
    assert got[("ENERGY1", "power")] == (52.0, "W")
    assert got[("ENERGY2", "power")] == (5.0, "W")
    assert got[("ENERGY1", "power_factor")] == (79.0, "%")
    assert got[("ENERGY2", "power_factor")] == (50.0, "%")
    assert got[("ENERGY1", "apparent_power")] == (66.0, "VA")
    assert got[("ENERGY2", "reactive_power")] == (9.0, "var")
    assert got[("ENERGY", "voltage")] == (235.0, "V")  # one voltage for both channels
    assert got[("BL09XX", "temperature")] == (46.5, "°C")  # a sensor inside ENERGY
    assert len(got) == 18  # 8 fields x 2 channels, Voltage, BL09XX


def test_state_takes_the_useful_numbers() -> None:
    fmt = make()
    assert table(fmt.parse("tele/tasmota/STATE", STATE_VCC, NOW)) == {
        ("", "uptime"): (66972.0, "s"),
        ("Vcc", "voltage"): (3.423, "V"),
        ("", "heap"): (28.0, "kB"),
        ("", "load_avg"): (19.0, None),
        ("", "mqtt_count"): (6.0, None),
        ("", "power_state"): (0.0, None),
        ("", "wifi_quality"): (100.0, "%"),
        ("", "wifi_link_count"): (1.0, None),
    }
    assert fmt.skipped == {}  # the status text is left out, not counted
    relays = (
        b'{"Time":"2025-05-17T10:34:29","POWER1":"OFF","POWER2":"ON","POWERX":"ON",'
        b'"Dimmer":40,"Wifi":{"RSSI":62,"Signal":-69}}'
    )
    assert table(fmt.parse("tele/tasmota/STATE", relays, NOW)) == {
        ("POWER1", "power_state"): (0.0, None),
        ("POWER2", "power_state"): (1.0, None),
        ("", "dimmer"): (40.0, "%"),
        ("", "wifi_quality"): (62.0, "%"),
        ("", "signal_strength"): (-69.0, "dBm"),
    }


def test_epoch_is_utc_and_used_whatever_the_timezone() -> None:
    epoch = 1567595328.0
    for fmt in (make(), make(timezone="America/New_York")):
        readings = fmt.parse("tele/tasmota/STATE", STATE_EPOCH, epoch + 1)
        assert {r.ts for r in readings} == {epoch}


def test_time_is_local_in_the_configured_zone() -> None:
    berlin = make(timezone="Europe/Berlin")
    # 2019-01-01T00:00:00 in Berlin (CET, UTC+1) is 2018-12-31T23:00:00Z
    expected = datetime(2018, 12, 31, 23, tzinfo=UTC).timestamp()
    (one, two) = berlin.parse("tele/t/SENSOR", AM2301, expected + 60)
    assert one.ts == two.ts == expected
    utc = make(timezone="UTC")
    payload = b'{"Time":"2019-09-04T13:08:48.250","DS18B20":{"Temperature":20}}'
    ts = datetime(2019, 9, 4, 13, 8, 48, 250_000, tzinfo=UTC).timestamp()
    assert utc.parse("tele/t/SENSOR", payload, ts + 5)[0].ts == ts


def test_unusable_times_fall_back_to_the_receive_time() -> None:
    fmt = make(timezone="UTC")
    for time in (b'"1970-01-01T00:00:12"', b'"soon"', b"5", b"null", b'"2019.02.15 01:00:50"'):
        payload = b'{"Time":' + time + b',"DS18B20":{"Temperature":20}}'
        assert fmt.parse("tele/t/SENSOR", payload, NOW)[0].ts == NOW
    assert fmt.skipped == {}
    ahead = datetime.fromtimestamp(NOW + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
    payload = b'{"Time":"' + ahead + b'","DS18B20":{"Temperature":20}}'
    assert fmt.parse("tele/t/SENSOR", payload, NOW)[0].ts == NOW
    assert fmt.skipped == {"clock_skew": 1}


@pytest.mark.parametrize(
    ("payload", "value"), [(b"Online", 1.0), (b"Offline", 0.0), (b"online\n", 1.0)]
)
def test_lwt_is_online(payload: bytes, value: float) -> None:
    (r,) = make().parse("tele/tasmota_5A9AE8/LWT", payload, NOW)
    assert (r.site, r.device, r.kind, r.value, r.unit, r.ts) == (
        "home",
        "tasmota_5A9AE8",
        "online",
        value,
        None,
        NOW,
    )


def test_other_tele_topics_carry_nothing_to_read() -> None:
    fmt = make()
    # https://tasmota.github.io/docs/MQTT/ (a RESULT) and an INFO1 as Tasmota 13 sends it
    assert fmt.parse("tele/tasmota/RESULT", b'{"POWER":"OFF"}', NOW) == []
    info = b'{"Info1":{"Module":"Generic","Version":"13.1.0(tasmota)"}}'
    assert fmt.parse("tele/tasmota/INFO1", info, NOW) == []
    assert fmt.parse("tele/tasmota/POWER_LOW", b"ON", NOW) == []


def test_topics_with_slashes_and_other_tokens() -> None:
    # https://tasmota.github.io/docs/MQTT/#fulltopic: "tasmota/bedroom/%topic%/%prefix%/"
    fmt = make(full_topic="tasmota/bedroom/%topic%/%prefix%/")
    assert fmt.default_topics[0] == "tasmota/bedroom/+/tele/SENSOR"
    (r,) = fmt.parse("tasmota/bedroom/lamp/tele/SENSOR", DS18B20, NOW)
    assert r.device == "lamp"
    # a %topic% with a slash ("line/lamp1") under the default FullTopic
    (r,) = make().parse("tele/line/lamp1/SENSOR", DS18B20, NOW)
    assert r.device == "line/lamp1"
    host = make(full_topic="%prefix%/%hostname%/%topic%", tele_prefix="telemetry")
    assert host.default_topics[2] == "telemetry/+/+/LWT"
    (r,) = host.parse("telemetry/tasmota-F17F56-8022/plug/LWT", b"Online", NOW)
    assert r.device == "plug"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"full_topic": "%prefix%/devices/"}, "^full_topic: must contain %topic%"),
        ({"full_topic": "%topic%/%topic%/"}, "^full_topic: must contain %topic%"),
        ({"full_topic": "+/%topic%/"}, "^full_topic: must not contain MQTT wildcards"),
        ({"full_topic": 5}, "^full_topic: "),
        ({"tele_prefix": "a/b"}, "^tele_prefix: "),
        ({"timezone": "Mars/Olympus"}, "^timezone: unknown time zone 'Mars/Olympus'"),
        ({"timezone": 1}, "^timezone: "),
        (
            {"prefix": "tele"},
            "^prefix: unknown tasmota option; known: full_topic, tele_prefix, timezone$",
        ),
    ],
)
def test_bad_options_name_their_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_text_null_and_nested_fields_are_skipped_and_counted_the_rest_kept() -> None:
    fmt = make()
    payload = (
        b'{"Time":"2020-08-30T10:15:00","Switch1":"OFF","IP":"192.168.1.77",'
        b'"ANALOG":{"Temperature":100.1,"Range":null,"A0":{"x":{"y":1}}},'
        b'"SR04":{"Distance":12.5,"Mode":"fast"},"TempUnit":"F"}'
    )
    assert table(fmt.parse("tele/shellyB/SENSOR", payload, NOW)) == {
        ("Switch1", "switch"): (0.0, None),
        ("ANALOG", "temperature"): (100.1, "°F"),
        ("SR04", "distance"): (12.5, "cm"),
    }
    assert fmt.skipped == {"text": 2, "null": 1, "nested": 1}


def test_ingest_units_convert() -> None:
    fmt = make(units={"temperature": "C"})
    payload = b'{"AM2301":{"Temperature":212},"TempUnit":"F"}'
    (r,) = fmt.parse("tele/t/SENSOR", payload, NOW)
    assert r.value == pytest.approx(100.0)
    assert r.unit == "C"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("tele/t/SENSOR", b"21.5", SCHEMA),
        ("tele/t/SENSOR", b'["AM2301"]', SCHEMA),
        ("tele/t/STATE", b'"ON"', SCHEMA),
        ("tele/t/SENSOR", b'{"AM2301":', NOT_JSON),
        ("tele/t/STATE", b"\xff", NOT_JSON),
        ("tele/t/SENSOR", b"[" * 5000 + b"]" * 5000, NOT_JSON),
        ("tele/t/SENSOR", b'{"x":"' + b"a" * 70_000 + b'"}', TOO_LARGE),
        ("tele/t/LWT", b"Maybe", SCHEMA),
        ("tele/t/LWT", b"x" * 70_000, TOO_LARGE),
        ("stat/t/SENSOR", AM2301, TOPIC),
        ("tele/SENSOR", AM2301, TOPIC),
    ],
)
def test_malformed_messages_are_refused_with_a_reason_naming_the_format(
    topic: str, payload: bytes, reason: str
) -> None:
    assert refused(make(), topic, payload, NOW, "tasmota").reason == reason


def test_the_simulated_board_round_trips() -> None:
    sim = devices.get("tasmota")("tasmota_A1B2C3", "home")
    fmt = make(timezone="UTC")
    values = {
        "temperature": 21.5,
        "humidity": 40.0,
        "power": 52.0,
        "voltage": 231.0,
        "current": 0.25,
        "energy": 14.834,
        "power_factor": 61.0,
    }
    got: list[Reading] = []
    msgs = [*sim.birth(), *sim.state(values, NOW - 10), *sim.state(values, NOW), *sim.death()]
    for topic, payload, _qos, _retain in msgs:
        got.extend(fmt.parse(topic, payload, NOW + 1))
    assert [(r.device, r.value) for r in got if r.kind == "online"] == [
        ("tasmota_A1B2C3", 1.0),
        ("tasmota_A1B2C3", 0.0),
    ]
    last = [r for r in got if r.ts == NOW]
    sensors = {(r.labels.get("sensor", ""), r.kind): r.value for r in last}
    assert sensors[("AM2301", "temperature")] == sensors[("DS18B20", "temperature")] == 21.5
    assert sensors[("AM2301", "humidity")] == 40.0
    for kind in ("power", "voltage", "current", "energy", "power_factor"):
        assert sensors[("ENERGY", kind)] == values[kind]
    assert sensors[("", "power_state")] == 1.0
    assert sensors[("", "uptime")] == 10.0
    assert fmt.skipped == {}


_JSON = json_values(dict_size=6)
_KEYS = st.sampled_from(
    [
        "Time",
        "Epoch",
        "TempUnit",
        "PressureUnit",
        "AM2301",
        "ENERGY",
        "Wifi",
        "POWER",
        "POWER1",
        "Switch1",
        "Temperature",
        "Factor",
        "Vcc",
    ]
)
_OBJECTS = st.dictionaries(_KEYS | st.text(max_size=6), _JSON, max_size=6)
_TOPICS = st.sampled_from(
    ["tele/a/SENSOR", "tele/a/STATE", "tele/a/LWT", "tele/a/INFO1", "stat/a/x", "tele/a/b/SENSOR"]
)


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, payload=st.binary(max_size=64))
def test_fuzz_bytes(topic: str, payload: bytes) -> None:
    check_readings(parse_or_refused(make(), topic, payload, NOW, "tasmota"), finite_ts=True)


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, data=_OBJECTS | _JSON, zone=st.sampled_from([None, "UTC", "Europe/Berlin"]))
def test_fuzz_json(topic: str, data: object, zone: str | None) -> None:
    fmt = make() if zone is None else make(timezone=zone)
    check_readings(
        parse_or_refused(fmt, topic, json.dumps(data).encode(), NOW, "tasmota"), finite_ts=True
    )
