"""Format "esphome" (sensord/ingest/formats/esphome.py): state topics, node status and the
node's Home Assistant discovery configs, shaped as ESPHome's MQTT component publishes them."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats.esphome import EsphomeFormat
from simulators import devices
from tests.ingest.formats.support import (
    JSON_VALUES,
    FakeLink,
    check_readings,
    create,
    parse_or_refused,
    refused,
)

NOW = 1_700_000_000.0


def make(**options: object) -> EsphomeFormat:
    return create("esphome", EsphomeFormat, **options)


def one(fmt: EsphomeFormat, topic: str, payload: bytes) -> Reading:
    (reading,) = fmt.parse(topic, payload, NOW)
    return reading


# -- fixtures -------------------------------------------------------------------------------
# https://esphome.io/components/mqtt.html#mqtt-component-base-configuration: state topics are
# `<topic_prefix>/<component_type>/<object_id>/state`, the prefix the node's name by default;
# sensors publish the number with accuracy_decimals, binary sensors ON / OFF; birth message
# `<topic_prefix>/status` "online", last will "offline"; discovery under "homeassistant".

# A discovery config as esphome/components/mqtt/mqtt_component.cpp `send_discovery_` and
# mqtt_sensor.cpp build it (abbreviated keys, USE_MQTT_ABBREVIATIONS), for a node named
# "livingroom" with `sensor: - platform: dht … temperature: name: "Living Room Temperature"`
TEMPERATURE_CONFIG = {
    "dev_cla": "temperature",
    "unit_of_meas": "°C",
    "stat_cla": "measurement",
    "name": "Living Room Temperature",
    "stat_t": "livingroom/sensor/living_room_temperature/state",
    "avty_t": "livingroom/status",
    "uniq_id": "ESPsensorliving_room_temperature",
    "dev": {
        "ids": "a4cf12d3e4f5",
        "name": "livingroom",
        "sw": "esphome v2024.6.4 Jul  1 2024, 10:00:00",
        "mdl": "esp32dev",
        "mf": "espressif",
        "sa": "",
    },
}
TEMPERATURE_CONFIG_TOPIC = "homeassistant/sensor/livingroom/living_room_temperature/config"
DOOR_CONFIG = {
    "dev_cla": "door",
    "name": "Front Door",
    "stat_t": "livingroom/binary_sensor/front_door/state",
    "avty_t": "livingroom/status",
    "uniq_id": "ESPbinary_sensorfront_door",
    "dev": TEMPERATURE_CONFIG["dev"],
}
DOOR_CONFIG_TOPIC = "homeassistant/binary_sensor/livingroom/front_door/config"


def config(payload: Mapping[str, object], **changes: object) -> bytes:
    return json.dumps({**payload, **changes}, ensure_ascii=False).encode()


# -- state topics ---------------------------------------------------------------------------


def test_a_sensor_state_without_discovery() -> None:
    fmt = make()
    r = one(fmt, "livingroom/sensor/living_room_temperature/state", b"21.5")
    assert (r.site, r.device, r.kind, r.value, r.ts) == (
        "home",
        "livingroom",
        "temperature",
        21.5,
        NOW,
    )
    assert r.labels == {"sensor": "living_room_temperature"}
    assert r.unit == "°C"  # the kind's usual unit, when no discovery config says otherwise


@pytest.mark.parametrize(
    ("object_id", "kind"),
    [
        ("temperature", "temperature"),
        ("living_room_temperature", "temperature"),
        ("temperature_outside", "temperature"),
        ("outside_temp", "temperature"),
        ("bme280_pressure", "pressure"),
        ("dht_humidity", "humidity"),
        ("wifi_signal", "signal_strength"),
        ("battery_voltage", "voltage"),
        ("battery_level", "battery"),
        ("pm_2_5", "pm25"),
        ("scd30_co2", "co2"),
        ("apparent_power", "apparent_power"),
        ("kitchen_power_factor", "power_factor"),
        ("uptime", "uptime"),
        ("Fancy-Thing", "fancy_thing"),
    ],
)
def test_the_kind_from_an_object_id(object_id: str, kind: str) -> None:
    r = one(make(), f"node/sensor/{object_id}/state", b"1")
    assert r.kind == kind
    assert r.labels == {"sensor": object_id}


def test_two_temperature_sensors_of_one_node_stay_two_sensors() -> None:
    fmt = make()
    a = one(fmt, "node/sensor/temperature/state", b"21")
    b = one(fmt, "node/sensor/outside_temperature/state", b"3.5")
    assert a.kind == b.kind == "temperature"
    assert a.device == b.device
    assert a.labels != b.labels


def test_nan_and_text_are_skipped_and_counted() -> None:
    fmt = make()
    assert fmt.parse("node/sensor/temperature/state", b"nan", NOW) == []
    assert fmt.parse("node/sensor/temperature/state", b"warm", NOW) == []
    assert fmt.parse("node/sensor/temperature/state", b"", NOW) == []
    assert fmt.parse("node/sensor/temperature/state", b"ON", NOW) == []  # no state word here
    assert fmt.parse("node/sensor/temperature/state", b"1" * 100, NOW) == []
    assert fmt.skipped == {"non_finite": 1, "text": 4}


@pytest.mark.parametrize(
    ("object_id", "payload", "kind", "value"),
    [
        ("motion", b"ON", "motion", 1.0),
        ("hall_motion", b"OFF", "motion", 0.0),
        ("door", b"ON", "contact", 0.0),  # ON = open; contact is 1 when closed
        ("door", b"OFF", "contact", 1.0),
        ("water_leak", b"ON", "water_leak", 1.0),
        ("button", b"ON", "button", 1.0),
        ("power", b"ON", "power_detected", 1.0),  # not kind power (W)
    ],
)
def test_binary_sensors(object_id: str, payload: bytes, kind: str, value: float) -> None:
    r = one(make(), f"node/binary_sensor/{object_id}/state", payload)
    assert (r.kind, r.value, r.unit, r.labels) == (kind, value, None, {"sensor": object_id})


def test_status_online_and_offline() -> None:
    fmt = make()
    up = one(fmt, "livingroom/status", b"online")
    down = one(fmt, "livingroom/status", b"offline")
    assert (up.device, up.kind, up.value, up.unit, up.labels) == (
        "livingroom",
        "online",
        1.0,
        None,
        {},
    )
    assert down.value == 0.0
    assert fmt.parse("homeassistant/status", b"online", NOW) == []  # Home Assistant's birth


def test_a_topic_prefix_with_slashes_is_the_device() -> None:
    fmt = make(topic_prefix="home/livingroom")
    assert fmt.default_topics[:3] == (
        "home/livingroom/sensor/+/state",
        "home/livingroom/binary_sensor/+/state",
        "home/livingroom/status",
    )
    assert fmt.default_topics[3:] == (
        "homeassistant/sensor/+/+/config",
        "homeassistant/binary_sensor/+/+/config",
    )
    assert one(fmt, "home/livingroom/sensor/temperature/state", b"20").device == "home/livingroom"
    assert one(fmt, "home/livingroom/status", b"online").device == "home/livingroom"


# -- discovery ------------------------------------------------------------------------------


def test_a_discovery_config_gives_unit_and_kind_of_its_state_topic() -> None:
    fmt = make(units={"temperature": "C"})
    topic = "livingroom/sensor/living_room_temperature/state"
    cfg = config(TEMPERATURE_CONFIG, unit_of_meas="°F", dev_cla="temperature")
    assert fmt.parse(TEMPERATURE_CONFIG_TOPIC, cfg, NOW) == []
    r = one(fmt, topic, b"70.7")
    assert (r.device, r.kind, r.unit) == ("livingroom", "temperature", "C")
    assert r.value == pytest.approx(21.5)
    assert fmt.discovered() == {
        "sensors": {
            topic: {
                "device": "livingroom",
                "kind": "temperature",
                "unit": "°F",
                "sensor": "living_room_temperature",
            }
        }
    }


def test_the_device_class_names_the_kind_over_the_object_id() -> None:
    fmt = make()
    cfg = config(TEMPERATURE_CONFIG, dev_cla="carbon_dioxide", unit_of_meas="ppm")
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, cfg, NOW)
    r = one(fmt, "livingroom/sensor/living_room_temperature/state", b"612")
    assert (r.kind, r.unit) == ("co2", "ppm")


def test_a_door_discovered_reads_as_contact_inverted() -> None:
    fmt = make()
    fmt.parse(DOOR_CONFIG_TOPIC, config(DOOR_CONFIG), NOW)
    r = one(fmt, "livingroom/binary_sensor/front_door/state", b"ON")
    assert (r.kind, r.value, r.labels) == ("contact", 0.0, {"sensor": "front_door"})
    moisture = config(DOOR_CONFIG, dev_cla="moisture")
    fmt.parse(DOOR_CONFIG_TOPIC, moisture, NOW)
    r = one(fmt, "livingroom/binary_sensor/front_door/state", b"ON")
    assert (r.kind, r.value) == ("water_leak", 1.0)
    fmt.parse(DOOR_CONFIG_TOPIC, config(DOOR_CONFIG, dev_cla="power"), NOW)
    assert one(fmt, "livingroom/binary_sensor/front_door/state", b"ON").kind == "power_detected"


def test_an_empty_config_forgets_the_sensor() -> None:
    fmt = make()
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, config(TEMPERATURE_CONFIG, dev_cla="humidity"), NOW)
    topic = "livingroom/sensor/living_room_temperature/state"
    assert one(fmt, topic, b"1").kind == "humidity"
    assert fmt.parse(TEMPERATURE_CONFIG_TOPIC, b"", NOW) == []
    assert fmt.discovered() == {"sensors": {}}
    assert one(fmt, topic, b"1").kind == "temperature"  # from the object_id again


def test_a_malformed_config_is_refused_and_the_good_one_kept() -> None:
    fmt = make()
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, config(TEMPERATURE_CONFIG, unit_of_meas="°F"), NOW)
    for bad in (
        b"{nope",
        b"[1]",
        config(TEMPERATURE_CONFIG, stat_t=None),
        config(TEMPERATURE_CONFIG, stat_t="x/#"),
        config(TEMPERATURE_CONFIG, stat_t="x" * 300),
        config(TEMPERATURE_CONFIG, unit_of_meas=7),
        config(TEMPERATURE_CONFIG, dev_cla=["temperature"]),
    ):
        with pytest.raises(PayloadError) as info:
            fmt.parse(TEMPERATURE_CONFIG_TOPIC, bad, NOW)
        assert info.value.detail.startswith("esphome: ")
    assert one(fmt, "livingroom/sensor/living_room_temperature/state", b"70").unit == "°F"


def test_learned_sensors_are_capped_and_the_refusal_counted() -> None:
    fmt = make(max_sensors=2)
    for i in range(3):
        cfg = config(
            TEMPERATURE_CONFIG, stat_t=f"n/sensor/t{i}/state", dev_cla="humidity", unit_of_meas="%"
        )
        fmt.parse(f"homeassistant/sensor/n/t{i}/config", cfg, NOW)
    assert len(fmt.discovered()["sensors"]) == 2  # type: ignore[arg-type]  # a dict
    assert fmt.skipped == {"sensor_cap": 1}
    assert one(fmt, "n/sensor/t2/state", b"5").kind == "t2"  # still read, from its topic
    # a config already learned may change within the cap
    cfg = config(TEMPERATURE_CONFIG, stat_t="n/sensor/t0/state", dev_cla="pressure")
    fmt.parse("homeassistant/sensor/n/t0/config", cfg, NOW)
    assert one(fmt, "n/sensor/t0/state", b"5").kind == "pressure"


def test_a_custom_state_topic_is_subscribed_and_forgotten_with_its_config() -> None:
    fmt = make()
    link = FakeLink("esphome")
    fmt.bind(link)
    cfg = config(TEMPERATURE_CONFIG, stat_t="custom/lr/temp")
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, cfg, NOW)
    assert link.subscribed == ["custom/lr/temp"]
    r = one(fmt, "custom/lr/temp", b"22.25")
    assert (r.device, r.kind, r.labels, r.unit) == (
        "livingroom",
        "temperature",
        {"sensor": "living_room_temperature"},
        "°C",
    )
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, b"", NOW)
    assert link.unsubscribed == ["custom/lr/temp"]
    # a config on the default layout needs no subscription of its own
    fmt.parse(TEMPERATURE_CONFIG_TOPIC, config(TEMPERATURE_CONFIG), NOW)
    assert link.subscribed == ["custom/lr/temp"]


def test_configs_of_other_components_and_shapes_are_ignored() -> None:
    fmt = make()
    assert fmt.parse("homeassistant/switch/livingroom/relay/config", b"{}", NOW) == []
    assert fmt.parse("homeassistant/sensor/flat_id/config", b"{}", NOW) == []
    assert fmt.parse("homeassistant/sensor/a/b/state", b"1", NOW) == []
    assert fmt.discovered() == {"sensors": {}}


def test_discovery_off() -> None:
    fmt = make(discovery_prefix="")
    assert list(fmt.default_topics) == ["+/sensor/+/state", "+/binary_sensor/+/state", "+/status"]
    assert EsphomeFormat.default_topics[3] == "homeassistant/sensor/+/+/config"
    custom = make(discovery_prefix="ha")
    assert custom.default_topics[3:] == ("ha/sensor/+/+/config", "ha/binary_sensor/+/+/config")


# -- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("livingroom/status", b"up", "schema"),
        ("livingroom/status", b"", "schema"),
        ("/status", b"online", "topic"),
        ("livingroom/sensor/t", b"1", "topic"),
        ("livingroom/sensor/t/command", b"1", "topic"),
        ("livingroom/switch/relay/state", b"ON", "topic"),
        ("/sensor/t/state", b"1", "topic"),
        ("livingroom/sensor//state", b"1", "topic"),
        ("livingroom/debug", b"x", "topic"),
        (TEMPERATURE_CONFIG_TOPIC, b"\xff", "not_json"),
        (TEMPERATURE_CONFIG_TOPIC, b'"text"', "schema"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason_naming_the_format(
    topic: str, payload: bytes, reason: str
) -> None:
    assert refused(make(), topic, payload, NOW, "esphome").reason == reason


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "x"}, "prefix: unknown option of format esphome; known: discovery_prefix"),
        ({"discovery_prefix": 3}, "discovery_prefix: must be"),
        ({"discovery_prefix": "ha/+"}, "discovery_prefix: must be"),
        ({"topic_prefix": ["a", 1]}, "topic_prefix: must be a string"),
        ({"topic_prefix": "a/#"}, "topic_prefix: 'a/#' may not hold '#'"),
    ],
)
def test_bad_options_are_errors_naming_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**options)


# -- fuzz -----------------------------------------------------------------------------------

_TOPICS = st.sampled_from(
    [
        "node/sensor/temperature/state",
        "node/binary_sensor/door/state",
        "node/status",
        TEMPERATURE_CONFIG_TOPIC,
        DOOR_CONFIG_TOPIC,
        "livingroom/sensor/living_room_temperature/state",
        "custom/topic",
        "x",
    ]
)
_JSON = JSON_VALUES
_CONFIG = st.dictionaries(
    st.sampled_from(["stat_t", "unit_of_meas", "dev_cla", "~", "state_topic", "name"]),
    _JSON | st.sampled_from(["livingroom/sensor/living_room_temperature/state", "~/state", "°C"]),
    max_size=5,
)


def _check(fmt: EsphomeFormat, topic: str, payload: bytes) -> None:
    """Readings with finite values and str labels, or a PayloadError naming the format."""
    readings = parse_or_refused(fmt, topic, payload, NOW, "esphome")
    check_readings(readings, nonempty_device=True, nonempty_kind=True)


@settings(max_examples=100, database=None, deadline=None)
@given(messages=st.lists(st.tuples(_TOPICS, st.binary(max_size=80)), max_size=4))
def test_fuzz_bytes_raise_nothing_but_payload_error(messages: list[tuple[str, bytes]]) -> None:
    fmt = make(max_sensors=2)
    fmt.bind(FakeLink("esphome"))
    for topic, payload in messages:
        _check(fmt, topic, payload)


@settings(max_examples=100, database=None, deadline=None)
@given(messages=st.lists(st.tuples(_TOPICS, _CONFIG | _JSON), max_size=4))
def test_fuzz_json_raises_nothing_but_payload_error(messages: list[tuple[str, object]]) -> None:
    fmt = make(max_sensors=2)
    fmt.bind(FakeLink("esphome"))
    for topic, document in messages:
        _check(fmt, topic, json.dumps(document).encode())
        _check(fmt, "livingroom/sensor/living_room_temperature/state", b"1.5")


# -- the simulated device -------------------------------------------------------------------


def test_the_simulated_node_reads_back_as_it_was_put_in() -> None:
    node = devices.get("esphome")("greenhouse", "home")
    fmt = make(units={"temperature": "C"})
    messages = [
        *node.birth(),
        *node.state({"temperature": 21.5, "humidity": 40.0, "contact": 1.0}, NOW - 5),
        *node.state({"contact": 0.0}, NOW - 1),
        *node.death(),
    ]
    readings = [r for topic, payload, _, _ in messages for r in fmt.parse(topic, payload, NOW)]
    got = [(r.device, r.kind, r.labels.get("sensor"), r.value, r.unit) for r in readings]
    assert got == [
        ("greenhouse", "online", None, 1.0, None),
        ("greenhouse", "temperature", "temperature", 21.5, "C"),
        ("greenhouse", "humidity", "humidity", 40.0, "%"),
        ("greenhouse", "contact", "door", 1.0, None),
        ("greenhouse", "contact", "door", 0.0, None),
        ("greenhouse", "online", None, 0.0, None),
    ]
    assert len(fmt.discovered()["sensors"]) == 3  # type: ignore[arg-type]  # a dict
    assert fmt.skipped == {}
    assert all(retain for _, _, _, retain in messages)  # ESPHome retains all of these
