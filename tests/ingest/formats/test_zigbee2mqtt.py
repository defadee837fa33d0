"""Format "zigbee2mqtt": payloads from Zigbee2MQTT's own docs and issue threads (named
beside each), malformed variants, a fuzz, and the simulated device end to end."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats.zigbee2mqtt import Zigbee2MqttFormat
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

# https://github.com/Koenkk/zigbee2mqtt/issues/21808 (an Aqara WSDCGQ11LM, Z2M 1.36 log)
AQARA = (
    b'{"battery":97,"humidity":58.5,"linkquality":72,"power_outage_count":11574,'
    b'"pressure":1001.8,"temperature":22.4,"voltage":2995}'
)
# https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html#zigbee2mqtt-friendly-name
WSDCGQ01LM = b'{\n  "temperature": 27.34,\n  "humidity": 44.72\n}'
WXKG01LM = b'{\n  "action": "single"\n}'
RTCGQ01LM = b'{\n  "occupancy": true\n}'
LED1545G12 = b'{\n  "state": "ON",\n  "brightness": 215,\n  "color_temp": 325\n}'
# same page, zigbee2mqtt/bridge/info (its `config` and `config_schema` elided, as there)
BRIDGE_INFO = (
    b'{"version":"1.13.0-dev","commit":"772f6c0","coordinator":{"ieee_address":"0x12345678",'
    b'"type":"zStack30x","meta":{"revision":20190425}},"network":{"channel":15,"pan_id":5674,'
    b'"extended_pan_id":[0,11,22]},"log_level":"debug","permit_join":true}'
)
# same page, zigbee2mqtt/bridge/devices: the docs' entries, with the `exposes` that
# https://www.zigbee2mqtt.io/guide/usage/exposes.html and the device pages give
# (ZNCZ02LM: power W, voltage V; WSDCGQ11LM: as its device page; a lock from exposes.md)
BRIDGE_DEVICES = [
    {
        "ieee_address": "0x00158d00018255df",
        "type": "Router",
        "network_address": 29159,
        "supported": True,
        "friendly_name": "my_plug",
        "definition": {
            "model": "ZNCZ02LM",
            "vendor": "Xiaomi",
            "description": "Mi power plug ZigBee",
            "options": [],
            "exposes": [
                {
                    "type": "switch",
                    "features": [
                        {
                            "type": "binary",
                            "name": "state",
                            "property": "state",
                            "value_on": "ON",
                            "value_off": "OFF",
                            "value_toggle": "TOGGLE",
                            "access": 7,
                        }
                    ],
                },
                {"type": "numeric", "name": "power", "property": "power", "unit": "W", "access": 5},
                {
                    "type": "numeric",
                    "name": "voltage",
                    "property": "voltage",
                    "unit": "V",
                    "access": 5,
                },
            ],
        },
        "power_source": "Mains (single phase)",
        "interviewing": False,
        "interview_completed": True,
    },
    {
        "ieee_address": "0x00158d0002d7bcbf",
        "type": "EndDevice",
        "supported": True,
        "friendly_name": "garden/weather",
        "definition": {
            "model": "WSDCGQ11LM",
            "vendor": "Xiaomi",
            "description": "Aqara temperature, humidity and pressure sensor",
            "exposes": [
                # https://github.com/Koenkk/zigbee2mqtt/issues/11466 (its bridge/devices)
                {
                    "access": 1,
                    "description": "Voltage of the battery in millivolts",
                    "name": "voltage",
                    "property": "voltage",
                    "type": "numeric",
                    "unit": "mV",
                },
                {
                    "access": 1,
                    "description": "The measured atmospheric pressure",
                    "name": "pressure",
                    "property": "pressure",
                    "type": "numeric",
                    "unit": "hPa",
                },
            ],
        },
    },
    {
        "ieee_address": "0x00169a00022256da",
        "type": "Router",
        "supported": False,
        "friendly_name": "my_sensor",
        "definition": None,
    },
    {
        "ieee_address": "0x00169a0002225700",
        "type": "Router",
        "supported": True,
        "friendly_name": "door_lock",
        "definition": {
            "model": "lock",
            "exposes": [
                # https://www.zigbee2mqtt.io/guide/usage/exposes.html#lock
                {
                    "type": "lock",
                    "features": [
                        {
                            "type": "binary",
                            "name": "state",
                            "property": "state",
                            "value_on": "LOCK",
                            "value_off": "UNLOCK",
                            "access": 7,
                        },
                        {
                            "type": "enum",
                            "name": "lock_state",
                            "property": "lock_state",
                            "values": ["not_fully_locked", "locked", "unlocked"],
                            "access": 1,
                        },
                    ],
                },
                # exposes.md, "Composite": nested under its property, not learned
                {
                    "type": "composite",
                    "name": "color_xy",
                    "property": "color",
                    "features": [{"type": "numeric", "name": "x", "property": "x", "access": 7}],
                },
            ],
        },
    },
]


def make(**options: object) -> Zigbee2MqttFormat:
    return create("zigbee2mqtt", Zigbee2MqttFormat, **options)


def by_kind(readings: list[Reading]) -> dict[str, tuple[float, str | None]]:
    return {r.kind: (r.value, r.unit) for r in readings}


def test_registered_with_the_firmwares_default_topic() -> None:
    assert formats.get("zigbee2mqtt") is Zigbee2MqttFormat
    assert make().default_topics == ("zigbee2mqtt/#",)


def test_an_aqara_thermometer_is_one_reading_per_field() -> None:
    readings = make().parse("zigbee2mqtt/humidity_xiaomi_bad_stefan", AQARA, NOW)
    assert by_kind(readings) == {
        "battery": (97.0, "%"),
        "humidity": (58.5, "%"),
        "linkquality": (72.0, "lqi"),
        "power_outage_count": (11574.0, None),
        "pressure": (1001.8, "hPa"),
        "temperature": (22.4, "°C"),
        "voltage": (2995.0, "mV"),  # a battery's, in mV as Zigbee2MQTT documents
    }
    for r in readings:
        assert (r.site, r.device, r.ts, r.labels) == ("home", "humidity_xiaomi_bad_stefan", NOW, {})


def test_the_docs_examples() -> None:
    fmt = make()
    assert by_kind(fmt.parse("zigbee2mqtt/0x00158d0001", WSDCGQ01LM, NOW)) == {
        "temperature": (27.34, "°C"),
        "humidity": (44.72, "%"),
    }
    assert fmt.parse("zigbee2mqtt/switch", WXKG01LM, NOW) == []  # a text field only
    assert fmt.skipped == {"text": 1}
    (motion,) = fmt.parse("zigbee2mqtt/hall/motion", RTCGQ01LM, NOW)
    assert (motion.device, motion.kind, motion.value) == ("hall/motion", "occupancy", 1.0)
    assert by_kind(fmt.parse("zigbee2mqtt/bulb", LED1545G12, NOW)) == {
        "state": (1.0, None),
        "brightness": (215.0, None),
        "color_temp": (325.0, None),
    }


def test_friendly_names_may_contain_slashes() -> None:
    (r,) = make().parse("zigbee2mqtt/kitchen/floor/thermo", b'{"temperature": 21}', NOW)
    assert r.device == "kitchen/floor/thermo"


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"online", 1.0),
        (b"offline", 0.0),
        (b'{"state":"online"}', 1.0),
        (b'{"state":"offline"}', 0.0),
    ],
)
def test_availability_legacy_and_json(payload: bytes, value: float) -> None:
    # https://www.zigbee2mqtt.io/guide/configuration/device-availability.html#availability-payload
    (r,) = make().parse("zigbee2mqtt/kitchen/plug/availability", payload, NOW)
    assert (r.site, r.device, r.kind, r.value, r.unit) == (
        "home",
        "kitchen/plug",
        "online",
        value,
        None,
    )


@pytest.mark.parametrize("payload", [b"maybe", b'{"state":"on"}', b"{}", b'{"state":1}', b"[1]"])
def test_a_bad_availability_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        make().parse("zigbee2mqtt/plug/availability", payload, NOW)
    assert info.value.detail.startswith("zigbee2mqtt: ")


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("zigbee2mqtt/bridge/state", b"online"),
        ("zigbee2mqtt/bridge/state", b'{"state":"online"}'),
        ("zigbee2mqtt/bridge/info", BRIDGE_INFO),
        # the docs' bridge/logging and bridge/event examples
        (
            "zigbee2mqtt/bridge/logging",
            b'{"level": "info", "message": "Zigbee: allowing new devices to join."}',
        ),
        (
            "zigbee2mqtt/bridge/event",
            b'{"type":"device_joined","data":{"friendly_name":"0x90fd9ffffe6494fc",'
            b'"ieee_address":"0x90fd9ffffe6494fc"}}',
        ),
        ("zigbee2mqtt/bridge/response/permit_join", b'{"data":{"value":true},"status":"ok"}'),
        # commands (the docs' /set example, its "without JSON" variant, a /get)
        ("zigbee2mqtt/0x0fffffffffffffff/set", b'{ "state": "ON" }'),
        ("zigbee2mqtt/my_bulb/set/state", b"ON"),
        ("zigbee2mqtt/kitchen/bulb/get", b'{"state": ""}'),
        ("zigbee2mqtt/kitchen/bulb/get/state", b""),
        ("zigbee2mqtt/retained/cleared", b""),
    ],
)
def test_topics_that_carry_nothing_to_read(topic: str, payload: bytes) -> None:
    fmt = make()
    assert fmt.parse(topic, payload, NOW) == []
    assert fmt.skipped == {}


def test_bridge_devices_teaches_units_kinds_and_words() -> None:
    fmt = make()
    assert fmt.parse("zigbee2mqtt/bridge/devices", json.dumps(BRIDGE_DEVICES).encode(), NOW) == []
    assert fmt.discovered() == {
        "devices": ["door_lock", "garden/weather", "my_plug"],
        "properties": 6,
    }
    plug = fmt.parse("zigbee2mqtt/my_plug", b'{"state":"OFF","power":12.5,"voltage":231}', NOW)
    assert by_kind(plug) == {"state": (0.0, None), "power": (12.5, "W"), "voltage": (231.0, "V")}
    weather = fmt.parse("zigbee2mqtt/garden/weather", b'{"voltage":3005,"pressure":990}', NOW)
    assert by_kind(weather) == {"voltage": (3005.0, "mV"), "pressure": (990.0, "hPa")}
    lock = fmt.parse("zigbee2mqtt/door_lock", b'{"state":"LOCK","lock_state":"locked"}', NOW)
    assert by_kind(lock) == {"state": (1.0, None)}  # the learned words; an enum is text
    assert fmt.skipped == {"text": 1}


def test_an_endpoint_property_is_its_names_kind_with_a_sensor_label() -> None:
    # exposes.md: "property … is `name_endpoint`" when the expose has an `endpoint`
    device = {
        "friendly_name": "dual",
        "definition": {
            "exposes": [
                {
                    "type": "numeric",
                    "name": "temperature",
                    "property": "temperature_l1",
                    "endpoint": "l1",
                    "unit": "°C",
                    "access": 1,
                },
                {
                    "type": "numeric",
                    "name": "temperature",
                    "property": "temperature_l2",
                    "endpoint": "l2",
                    "unit": "°F",
                    "access": 1,
                },
            ]
        },
    }
    fmt = make()
    fmt.parse("zigbee2mqtt/bridge/devices", json.dumps([device]).encode(), NOW)
    one, two = fmt.parse("zigbee2mqtt/dual", b'{"temperature_l1": 20.5, "temperature_l2": 70}', NOW)
    assert (one.kind, one.value, one.unit, one.labels) == (
        "temperature",
        20.5,
        "°C",
        {"sensor": "l1"},
    )
    assert (two.kind, two.value, two.unit, two.labels) == (
        "temperature",
        70.0,
        "°F",
        {"sensor": "l2"},
    )


def test_raw_illuminance_beside_lux_is_not_illuminance() -> None:
    payload = b'{"illuminance": 18904, "illuminance_lux": 78}'
    assert by_kind(make().parse("zigbee2mqtt/motion", payload, NOW)) == {
        "illuminance_raw": (18904.0, None),
        "illuminance": (78.0, "lx"),
    }
    # learned: an `illuminance` without a unit is the raw one (Zigbee2MQTT 1.x exposes)
    device = {
        "friendly_name": "motion",
        "definition": {
            "exposes": [
                {"type": "numeric", "name": "illuminance", "property": "illuminance", "access": 1},
                {
                    "type": "numeric",
                    "name": "illuminance_lux",
                    "property": "illuminance_lux",
                    "unit": "lx",
                    "access": 1,
                },
            ]
        },
    }
    fmt = make()
    fmt.parse("zigbee2mqtt/bridge/devices", json.dumps([device]).encode(), NOW)
    assert by_kind(fmt.parse("zigbee2mqtt/motion", payload, NOW)) == {
        "illuminance_raw": (18904.0, None),
        "illuminance": (78.0, "lx"),
    }


def test_unlearned_voltage_reads_mains_as_volts_and_batteries_as_millivolts() -> None:
    fmt = make()
    assert by_kind(fmt.parse("zigbee2mqtt/plug", b'{"voltage": 229.5}', NOW)) == {
        "voltage": (229.5, "V")
    }
    assert by_kind(fmt.parse("zigbee2mqtt/th", b'{"voltage": 3005}', NOW)) == {
        "voltage": (3005.0, "mV")
    }


def test_a_malformed_device_list_is_refused_and_the_good_one_kept() -> None:
    fmt = make()
    fmt.parse("zigbee2mqtt/bridge/devices", json.dumps(BRIDGE_DEVICES).encode(), NOW)
    for bad in (b'{"devices": []}', b"not json", b'"x"'):
        with pytest.raises(PayloadError) as info:
            fmt.parse("zigbee2mqtt/bridge/devices", bad, NOW)
        assert info.value.detail.startswith("zigbee2mqtt: ")
    assert fmt.discovered()["properties"] == 6
    # entries of the wrong shape are passed over, the rest learned
    odd = [
        1,
        None,
        {"friendly_name": 5},
        {"friendly_name": "x", "definition": {"exposes": 3}},
        {"friendly_name": "y", "definition": {"exposes": [7, {"type": "numeric"}]}},
    ]
    fmt.parse("zigbee2mqtt/bridge/devices", json.dumps(odd + BRIDGE_DEVICES[:1]).encode(), NOW)
    assert fmt.discovered() == {"devices": ["my_plug"], "properties": 3}


def test_learned_properties_are_capped_by_max_sensors() -> None:
    fmt = make(max_sensors=4)
    fmt.parse("zigbee2mqtt/bridge/devices", json.dumps(BRIDGE_DEVICES).encode(), NOW)
    assert fmt.discovered()["properties"] == 4
    assert fmt.skipped == {"sensor_cap": 2}


def test_last_seen_is_the_readings_time() -> None:
    fmt = make()
    iso = b'{"temperature": 20, "last_seen": "2027-01-15T08:00:00.250Z"}'
    (r,) = fmt.parse("zigbee2mqtt/t", iso, NOW)
    assert r.ts == NOW + 0.25
    local = b'{"temperature": 20, "last_seen": "2027-01-15T10:00:00+02:00"}'
    assert fmt.parse("zigbee2mqtt/t", local, NOW)[0].ts == NOW
    epoch = b'{"temperature": 20, "last_seen": 1800000000500}'
    assert fmt.parse("zigbee2mqtt/t", epoch, NOW)[0].ts == NOW + 0.5
    for unusable in (b'"yesterday"', b'"2027-01-15T08:00:00"', b"true", b"null", b"{}"):
        payload = b'{"temperature": 20, "last_seen": ' + unusable + b"}"
        assert fmt.parse("zigbee2mqtt/t", payload, NOW)[0].ts == NOW
    assert fmt.skipped == {}
    ahead = b'{"temperature": 20, "last_seen": 1800099000000}'
    assert fmt.parse("zigbee2mqtt/t", ahead, NOW)[0].ts == NOW
    assert fmt.skipped == {"clock_skew": 1}


def test_text_nested_and_null_fields_are_skipped_and_counted_the_rest_kept() -> None:
    fmt = make()
    payload = (
        b'{"temperature": 21.5, "action": "single", "update": {"state": "idle", '
        b'"installed_version": 1}, "color": {"x": 0.3, "y": 0.3}, "battery": null, '
        b'"list": [1, 2], "device": {"ieeeAddr": "0x1"}, "elapsed": 1200, "contact": false}'
    )
    assert by_kind(fmt.parse("zigbee2mqtt/x", payload, NOW)) == {
        "temperature": (21.5, "°C"),
        "contact": (0.0, None),
    }
    assert fmt.skipped == {"text": 1, "nested": 2, "null": 1}


def test_ingest_units_convert() -> None:
    fmt = make(units={"temperature": "F", "pressure": "kPa"})
    temperature, pressure = fmt.parse(
        "zigbee2mqtt/t", b'{"temperature": 20, "pressure": 1000}', NOW
    )
    assert (temperature.value, temperature.unit) == (pytest.approx(68.0), "F")  # type: ignore[comparison-overlap]  # approx
    assert (pressure.value, pressure.unit) == (pytest.approx(100.0), "kPa")  # type: ignore[comparison-overlap]  # approx


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("zigbee2mqtt/t", b"21.5", SCHEMA),
        ("zigbee2mqtt/t", b"[1, 2]", SCHEMA),
        ("zigbee2mqtt/t", b'{"temperature": 21.5', NOT_JSON),
        ("zigbee2mqtt/t", b"\xff\xfe", NOT_JSON),
        ("zigbee2mqtt/t", b'{"temperature": ' + b"1" * 70_000 + b"}", TOO_LARGE),
        ("tasmota/t", b'{"temperature": 21.5}', TOPIC),
        ("zigbee2mqtt/", b'{"temperature": 21.5}', TOPIC),
    ],
)
def test_malformed_messages_are_refused_with_a_reason_naming_the_format(
    topic: str, payload: bytes, reason: str
) -> None:
    assert refused(make(), topic, payload, NOW, "zigbee2mqtt").reason == reason


def test_non_finite_and_huge_numbers_are_skipped() -> None:
    fmt = make()
    payload = (
        b'{"temperature": NaN, "humidity": Infinity, "pressure": 1'
        + b"0" * 400
        + b', "battery": 5}'
    )
    assert by_kind(fmt.parse("zigbee2mqtt/t", payload, NOW)) == {"battery": (5.0, "%")}
    assert fmt.skipped == {"non_finite": 3}


def test_options() -> None:
    fmt = make(base_topic="z2m/house")
    assert fmt.default_topics == ("z2m/house/#",)
    (r,) = fmt.parse("z2m/house/kitchen/t", b'{"temperature": 20}', NOW)
    assert r.device == "kitchen/t"
    assert fmt.parse("z2m/house/bridge/state", b"online", NOW) == []
    with pytest.raises(
        ValueError, match=r"^prefix: unknown zigbee2mqtt option; known: base_topic$"
    ):
        make(prefix="x")
    for bad in ("", "/", "z2m/#", 5):
        with pytest.raises(ValueError, match=r"^base_topic: "):
            make(base_topic=bad)


def test_the_simulated_device_round_trips() -> None:
    sim = devices.get("zigbee2mqtt")("living/thermo", "home")
    fmt = make()
    values = {
        "temperature": 21.5,
        "humidity": 40.0,
        "pressure": 1012.5,
        "battery": 100.0,
        "voltage": 3005.0,
        "linkquality": 120.0,
        "occupancy": 1.0,
    }
    got: list[Reading] = []
    for topic, payload, _qos, _retain in [
        *sim.birth(),
        *sim.state(values, NOW + 0.5),
        *sim.death(),
    ]:
        got.extend(fmt.parse(topic, payload, NOW + 1))
    online = [(r.device, r.value) for r in got if r.kind == "online"]
    assert online == [("living/thermo", 1.0), ("living/thermo", 0.0)]
    state = {r.kind: (r.value, r.unit, r.ts) for r in got if r.kind != "online"}
    assert {k: v for k, (v, _u, _t) in state.items()} == values
    assert state["voltage"][1] == "mV"  # learned from the simulated bridge/devices
    assert {t for _v, _u, t in state.values()} == {NOW + 0.5}  # from last_seen
    assert fmt.discovered() == {"devices": ["living/thermo"], "properties": 6}
    assert fmt.skipped == {}


_JSON = json_values(dict_size=6)
_TOPICS = st.sampled_from(
    [
        "zigbee2mqtt/a",
        "zigbee2mqtt/a/b",
        "zigbee2mqtt/a/availability",
        "zigbee2mqtt/bridge/devices",
        "zigbee2mqtt/a/set",
        "zigbee2mqtt/bridge/info",
        "other/a",
    ]
)


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, payload=st.binary(max_size=64))
def test_fuzz_bytes(topic: str, payload: bytes) -> None:
    check_readings(parse_or_refused(make(), topic, payload, NOW, "zigbee2mqtt"))


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, data=_JSON)
def test_fuzz_json(topic: str, data: object) -> None:
    fmt = make()
    payload = json.dumps(data).encode()
    check_readings(parse_or_refused(fmt, topic, payload, NOW, "zigbee2mqtt"))
    # and once more after learning whatever it was as a device's exposes
    exposes = [{"friendly_name": "a", "definition": {"exposes": [data]}}]
    check_readings(
        parse_or_refused(
            fmt, "zigbee2mqtt/bridge/devices", json.dumps(exposes).encode(), NOW, "zigbee2mqtt"
        )
    )
    check_readings(parse_or_refused(fmt, topic, payload, NOW, "zigbee2mqtt"))
