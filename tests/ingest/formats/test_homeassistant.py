"""Format "homeassistant": Home Assistant MQTT discovery, templates and their bounds."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.formats import FormatOptions, create, names
from sensord.ingest.formats._ha_template import ENV, TemplateRefused, compile_template
from sensord.ingest.formats.homeassistant import HomeAssistantFormat
from sensord.ingest.units import Conversion
from simulators.devices import get as get_device
from tests.ingest.formats.support import FakeLink, check_readings, json_values, parse_or_refused

NOW = 1_700_000_000.0


def make(
    *, max_sensors: int = 10_000, bind: bool = True, **options: object
) -> tuple[HomeAssistantFormat, FakeLink]:
    fmt = create(
        "homeassistant",
        FormatOptions(
            topic_template="",
            max_payload=65536,
            options=options,
            site="home",
            max_sensors=max_sensors,
        ),
    )
    assert isinstance(fmt, HomeAssistantFormat)
    link = FakeLink("homeassistant")
    if bind:
        fmt.bind(link)
    return fmt, link


def send(fmt: HomeAssistantFormat, topic: str, payload: object) -> list[Reading]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return fmt.parse(topic, raw, NOW)


def values(readings: list[Reading]) -> dict[tuple[str, str], float]:
    return {(r.device, r.kind): r.value for r in readings}


# https://www.home-assistant.io/integrations/mqtt/#sensors ("Setting up a sensor with
# multiple measurement values"): two configs, one state topic, two value templates
BEDROOM_T = (
    "homeassistant/sensor/sensorBedroomT/config",
    {
        "device_class": "temperature",
        "name": "Temperature",
        "state_topic": "homeassistant/sensor/sensorBedroom/state",
        "unit_of_measurement": "°C",
        "value_template": "{{ value_json.temperature}}",
    },
)
BEDROOM_H = (
    "homeassistant/sensor/sensorBedroomH/config",
    {
        "device_class": "humidity",
        "name": "Humidity",
        "state_topic": "homeassistant/sensor/sensorBedroom/state",
        "unit_of_measurement": "%",
        "value_template": "{{ value_json.humidity}}",
    },
)
BEDROOM_STATE = b'{ "temperature": 23.20, "humidity": 43.70 }'

# https://www.home-assistant.io/integrations/mqtt/#motion-detection-binary-sensor
GARDEN = (
    "homeassistant/binary_sensor/garden/config",
    {
        "name": "garden",
        "device_class": "motion",
        "state_topic": "homeassistant/binary_sensor/garden/state",
    },
)

# https://www.home-assistant.io/integrations/mqtt/#using-abbreviations-and-base-topic (the
# switch of that example, as a sensor: the same `~` and abbreviated keys)
IRRIGATION = (
    "homeassistant/sensor/irrigation/config",
    {"~": "homeassistant/sensor/irrigation", "name": "garden", "stat_t": "~/state"},
)

# https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload (device-based
# discovery, HA 2024.11+): shared options at the root, components under `cmps`
DEVICE_CONFIG = (
    "homeassistant/device/0AFFD2/config",
    {
        "dev": {"ids": "0AFFD2", "name": "Bedroom sensor", "mf": "Bla electronics", "mdl": "xya"},
        "o": {"name": "bla2mqtt", "sw": "2.1", "url": "https://bla2mqtt.example.com/support"},
        "cmps": {
            "some_unique_component_id1": {
                "p": "sensor",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
                "value_template": "{{ value_json.temperature}}",
                "unique_id": "temp01ae_t",
            },
            "some_unique_id2": {
                "p": "sensor",
                "device_class": "humidity",
                "unit_of_measurement": "%",
                "value_template": "{{ value_json.humidity}}",
                "unique_id": "temp01ae_h",
            },
        },
        "state_topic": "sensorBedroom/state",
        "qos": 2,
    },
)

# A Zigbee2MQTT discovery config of an Aqara WSDCGQ11LM, in the shape that
# https://github.com/Koenkk/zigbee2mqtt/blob/master/lib/extension/homeassistant.ts publishes
# (availability list with a value_template on bridge/state, device identifiers and name,
# origin); written after it, fields abridged, not a byte-for-byte capture
Z2M_TEMP = (
    "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
    {
        "availability": [
            {"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}
        ],
        "device": {
            "identifiers": ["zigbee2mqtt_0x00158d0001a2b3c4"],
            "manufacturer": "Aqara",
            "model": "Temperature and humidity sensor (WSDCGQ11LM)",
            "name": "living_room",
        },
        "device_class": "temperature",
        "enabled_by_default": True,
        "object_id": "living_room_temperature",
        "origin": {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"},
        "state_class": "measurement",
        "state_topic": "zigbee2mqtt/living_room",
        "unique_id": "0x00158d0001a2b3c4_temperature_zigbee2mqtt",
        "unit_of_measurement": "°C",
        "value_template": "{{ value_json.temperature }}",
    },
)


def test_registered_with_default_topics() -> None:
    assert "homeassistant" in names()
    fmt, _ = make()
    assert fmt.default_topics == ("homeassistant/+/+/config", "homeassistant/+/+/+/config")
    other, _ = make(prefix="ha/disc")
    assert other.default_topics == ("ha/disc/+/+/config", "ha/disc/+/+/+/config")
    assert send(other, "ha/disc/sensor/x/config", BEDROOM_T[1]) == []
    assert other.discovered()["sensors"] == 1


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a/#"}, "prefix"),
        ({"prefix": "a/"}, "prefix"),
        ({"max_template": 0}, "max_template"),
        ({"max_config": "big"}, "max_config"),
        ({"template_budget_ms": -1}, "template_budget_ms"),
        ({"max_topics": True}, "max_topics"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_options(options: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        create(
            "homeassistant", FormatOptions(topic_template="", max_payload=65536, options=options)
        )


def test_docs_two_sensors_on_one_state_topic() -> None:
    fmt, link = make()
    assert send(fmt, *BEDROOM_T) == []
    assert send(fmt, *BEDROOM_H) == []
    assert link.subscribed == ["homeassistant/sensor/sensorBedroom/state"]  # once for both
    out = fmt.parse("homeassistant/sensor/sensorBedroom/state", BEDROOM_STATE, NOW)
    # no dev: the device is the object id of each config topic
    assert values(out) == {
        ("sensorBedroomT", "temperature"): 23.2,
        ("sensorBedroomH", "humidity"): 43.7,
    }
    assert {r.unit for r in out} == {"°C", "%"}
    assert all(r.site == "home" and r.ts == NOW and r.labels == {} for r in out)


def test_docs_binary_sensor_and_forget_on_empty_config() -> None:
    fmt, link = make()
    send(fmt, *GARDEN)
    state = "homeassistant/binary_sensor/garden/state"
    assert values(fmt.parse(state, b"ON", NOW)) == {("garden", "motion"): 1.0}
    assert values(fmt.parse(state, b"OFF", NOW)) == {("garden", "motion"): 0.0}
    assert fmt.parse(state, b"maybe", NOW) == []
    assert fmt.skipped == {"state": 1}
    assert fmt.parse(GARDEN[0], b"", NOW) == []  # mosquitto_pub -r -m '' : deleted
    assert link.unsubscribed == [state]
    assert fmt.parse(state, b"ON", NOW) == []
    assert fmt.discovered()["sensors"] == 0


def test_docs_abbreviations_and_base_topic() -> None:
    fmt, link = make()
    send(fmt, *IRRIGATION)
    assert link.subscribed == ["homeassistant/sensor/irrigation/state"]
    out = fmt.parse("homeassistant/sensor/irrigation/state", b"12.5", NOW)
    # no device class, no known kind in the ids or the name: the object id
    assert values(out) == {("irrigation", "irrigation"): 12.5}


def test_base_topic_at_the_end() -> None:
    fmt, link = make()
    send(
        fmt, "homeassistant/sensor/x/config", {"~": "dev1", "stat_t": "state/~", "dev_cla": "power"}
    )
    assert link.subscribed == ["state/dev1"]


def test_device_based_discovery() -> None:
    fmt, link = make()
    send(fmt, *DEVICE_CONFIG)
    out = fmt.parse("sensorBedroom/state", BEDROOM_STATE, NOW)
    assert values(out) == {
        ("Bedroom sensor", "temperature"): 23.2,
        ("Bedroom sensor", "humidity"): 43.7,
    }
    assert {r.labels["sensor"] for r in out} == {"some_unique_component_id1", "some_unique_id2"}
    # a component reduced to its platform is removed, the other stays
    topic, config = DEVICE_CONFIG
    changed = json.loads(json.dumps(config))
    changed["cmps"]["some_unique_id2"] = {"p": "sensor"}
    send(fmt, topic, changed)
    assert values(fmt.parse("sensorBedroom/state", BEDROOM_STATE, NOW)) == {
        ("Bedroom sensor", "temperature"): 23.2
    }
    send(fmt, topic, b"")
    assert fmt.discovered()["sensors"] == 0
    assert link.unsubscribed == ["sensorBedroom/state"]


def test_zigbee2mqtt_config_with_availability_template() -> None:
    fmt, link = make()
    send(fmt, *Z2M_TEMP)
    assert set(link.subscribed) == {"zigbee2mqtt/living_room", "zigbee2mqtt/bridge/state"}
    out = fmt.parse(
        "zigbee2mqtt/living_room", b'{"temperature":21.4,"humidity":55,"linkquality":90}', NOW
    )
    assert values(out) == {("living_room", "temperature"): 21.4}
    assert out[0].labels == {}  # object id "temperature" is the kind: no label
    online = fmt.parse("zigbee2mqtt/bridge/state", b'{"state":"online"}', NOW)
    assert [(r.device, r.kind, r.value, r.unit) for r in online] == [
        ("living_room", "online", 1.0, None)
    ]
    offline = fmt.parse("zigbee2mqtt/bridge/state", b'{"state":"offline"}', NOW)
    assert offline[0].value == 0.0
    assert fmt.discovered() == {
        "sensors": 1,
        "topics": 2,
        "templates_disabled": 0,
        "devices": {"living_room": ["online", "temperature"]},
    }


def test_availability_topic_and_custom_payloads() -> None:
    fmt, _ = make()
    config = {
        "stat_t": "t/state",
        "dev_cla": "battery",
        "avty_t": "t/lwt",
        "pl_avail": "Online",
        "pl_not_avail": "Offline",
        "dev": {"ids": ["abc"]},
    }
    send(fmt, "homeassistant/sensor/node1/batt/config", config)
    assert values(fmt.parse("t/lwt", b"Online", NOW)) == {("abc", "online"): 1.0}
    assert values(fmt.parse("t/lwt", b"Offline", NOW)) == {("abc", "online"): 0.0}
    assert fmt.parse("t/lwt", b"online", NOW) == []  # not this device's word
    out = fmt.parse("t/state", b"88", NOW)
    assert [(r.device, r.kind, r.value, r.unit, r.labels) for r in out] == [
        ("abc", "battery", 88.0, "%", {"sensor": "batt"})
    ]


def test_binary_door_is_inverted_to_contact() -> None:
    fmt, _ = make()
    send(
        fmt,
        "homeassistant/binary_sensor/front/config",
        {"stat_t": "d/s", "dev_cla": "door", "pl_on": "1", "pl_off": "0"},
    )
    assert values(fmt.parse("d/s", b"1", NOW)) == {("front", "contact"): 0.0}  # open
    assert values(fmt.parse("d/s", b"0", NOW)) == {("front", "contact"): 1.0}  # closed


def test_value_template_filters_follow_home_assistant() -> None:
    fmt, _ = make()
    send(
        fmt,
        "homeassistant/sensor/a/config",
        {"stat_t": "s", "dev_cla": "temperature", "val_tpl": "{{ value_json.t | float }}"},
    )
    assert fmt.parse("s", b'{"other": 1}', NOW) == []  # missing: skipped, never 0.0
    assert fmt.skipped == {"template": 1}
    assert values(fmt.parse("s", b'{"t": "21.5"}', NOW)) == {("a", "temperature"): 21.5}
    assert fmt.parse("s", b"not json", NOW) == []  # value_json undefined
    send(
        fmt,
        "homeassistant/sensor/b/config",
        {
            "stat_t": "s2",
            "dev_cla": "temperature",
            "val_tpl": "{{ (value | replace(',', '.') | float * 1.8 + 32) | round(1) }}",
        },
    )
    assert values(fmt.parse("s2", b"21,5", NOW)) == {("b", "temperature"): 70.7}
    send(
        fmt,
        "homeassistant/sensor/c/config",
        {
            "stat_t": "s3",
            "dev_cla": "precipitation",
            "val_tpl": "{{ '%0.1f'|format(value_json.RainTotal) }}",
        },
    )
    assert values(fmt.parse("s3", b'{"RainTotal": 3.14159}', NOW)) == {("c", "precipitation"): 3.1}


def test_unit_conversion_per_ingest_units() -> None:
    fmt = create(
        "homeassistant",
        FormatOptions(topic_template="", max_payload=65536, units={"temperature": "°F"}),
    )
    fmt.parse(BEDROOM_T[0], json.dumps(BEDROOM_T[1]).encode(), NOW)
    (reading,) = fmt.parse("homeassistant/sensor/sensorBedroom/state", b'{"temperature": 100}', NOW)
    assert reading.unit == Conversion("°F").target.name  # the [ingest.units] spelling
    assert reading.value == pytest.approx(212.0)


def test_other_components_are_counted_and_ignored() -> None:
    fmt, link = make()
    config = {
        "~": "homeassistant/switch/irrigation",
        "name": "garden",
        "cmd_t": "~/set",
        "stat_t": "~/state",
    }
    assert send(fmt, "homeassistant/switch/irrigation/config", config) == []
    assert fmt.skipped == {"component": 1}
    assert link.subscribed == []


def test_subscriptions_wait_for_bind() -> None:
    fmt, link = make(bind=False)
    send(fmt, *BEDROOM_T)
    send(fmt, *Z2M_TEMP)
    fmt.bind(link)
    assert set(link.subscribed) == {
        "homeassistant/sensor/sensorBedroom/state",
        "zigbee2mqtt/living_room",
        "zigbee2mqtt/bridge/state",
    }


def test_restart_rebuilds_from_retained_configs() -> None:
    # the broker redelivers every retained config to the new process: the same sensors
    for _ in range(2):
        fmt, _ = make()
        for topic, config in (BEDROOM_T, BEDROOM_H, GARDEN):
            send(fmt, topic, config)
        assert fmt.discovered()["sensors"] == 3


def test_update_moves_subscription() -> None:
    fmt, link = make()
    send(fmt, "homeassistant/sensor/a/config", {"stat_t": "old", "dev_cla": "power"})
    send(fmt, "homeassistant/sensor/a/config", {"stat_t": "new", "dev_cla": "power"})
    assert link.active == {"new"}
    assert fmt.parse("old", b"1", NOW) == []
    assert values(fmt.parse("new", b"5", NOW)) == {("a", "power"): 5.0}


# ---- refusals: malformed and hostile configs

HOSTILE_TEMPLATES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for i in range(100000000) %}x{% endfor %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% set x = value ~ value %}{{ x }}",
    "{{ lipsum(100000) }}",
    "{{ cycler }}",
    "{{ value.replace('a', 'bb') }}",
    "{{ value | regex_findall('(a+)+$') }}",
    "{% include 'x' %}",
    "{{ value_json.temperature",  # syntax
    "{{ " + "(" * 400 + "1" + ")" * 400 + " }}",  # parser recursion
    "{{ value|attr('__class__') }}",
]


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_hostile_template_refused(template: str) -> None:
    fmt, _ = make()
    with pytest.raises(PayloadError) as err:
        send(fmt, "homeassistant/sensor/x/config", {"stat_t": "s", "val_tpl": template})
    assert err.value.detail.startswith("homeassistant: ")
    assert "value_template" in err.value.detail
    assert fmt.discovered()["sensors"] == 0


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ 99 ** 99 ** 99 }}",
        "{{ '%999999999d' | format(1) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ value | replace('a', 'aaaaaaaaaaaaaaaa') | replace('a', 'aaaaaaaaaaaaaaaa') }}",
        "{{ [1] * 100000000 }}",
        "{{ value_json['__class__'] | int }}",
    ],
)
def test_amplifying_template_fails_at_render_not_the_process(template: str) -> None:
    fmt, _ = make()
    send(fmt, "homeassistant/sensor/x/config", {"stat_t": "s", "val_tpl": template})
    start = time.perf_counter()
    assert fmt.parse("s", b'{"a": "' + b"a" * 1000 + b'"}', NOW) == []
    assert time.perf_counter() - start < 1.0
    assert fmt.skipped.get("template") == 1


def test_sandbox_escape_is_a_security_error() -> None:
    # the sandbox itself (not only the compile-time check) stops attribute access by item
    template = compile_template("{{ value_json['__class__'] | string }}", 1024)
    assert template.render({"value": "", "value_json": {}}) == ""
    with pytest.raises(TemplateRefused, match="__class__"):
        compile_template("{{ ''.__class__ }}", 1024)


@pytest.mark.parametrize(
    "source",
    [
        "{{ value_json.temperature }}",
        "{{ value }}",
        "{% if value_json.t is defined %}{{ value_json.t | float * 2 }}{% else %}none{% endif %}",
        "{{ value_json.missing }}|{{ value.split(',')[0] }}",
        "{{ 'ON' if value_json.t > 20 else 'OFF' }}",
    ],
)
def test_fast_render_is_jinja2_render(source: str) -> None:
    # _renderer reuses one Context (Jinja2 internals): the same text as Template.render,
    # render after render, with and without value_json
    fast = compile_template(source, 1024)
    slow = ENV.from_string(source)
    contexts: list[dict[str, object]] = [
        {"value": "1,2", "value_json": {"temperature": 1.5, "t": 30}},
        {"value": "3"},
        {"value": "a,b", "value_json": {"t": 10}},
    ]
    for context in contexts:
        assert _outcome(fast.render, context) == _outcome(slow.render, context)


def _outcome(render: Callable[[dict[str, object]], str], context: dict[str, object]) -> str:
    try:
        return render(context)
    except Exception as exc:  # noqa: BLE001 - the error's type is the outcome compared
        return type(exc).__name__


def test_template_size_cap() -> None:
    fmt, _ = make(max_template=64)
    big = "{{ value_json.temperature }}" + " " * 64
    with pytest.raises(PayloadError, match=r"value_template: .* > 64"):
        send(fmt, "homeassistant/sensor/x/config", {"stat_t": "s", "val_tpl": big})


def test_slow_template_is_disabled_after_strikes(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt, _ = make(template_budget_ms=0.000001)  # every render is over this budget
    send(
        fmt,
        "homeassistant/sensor/x/config",
        {"stat_t": "s", "dev_cla": "power", "val_tpl": "{{ value }}"},
    )
    for _ in range(3):
        assert len(fmt.parse("s", b"5", NOW)) == 1  # an over-budget render still counts
    assert fmt.parse("s", b"5", NOW) == []
    assert fmt.skipped == {"template_slow": 3, "template_disabled": 1}
    assert fmt.discovered()["templates_disabled"] == 1
    # a new config compiles a new template
    send(
        fmt,
        "homeassistant/sensor/x/config",
        {"stat_t": "s", "dev_cla": "power", "val_tpl": "{{ value }}"},
    )
    assert fmt.discovered()["templates_disabled"] == 0


def test_worst_case_allowed_template_is_cheap() -> None:
    # the largest allowed template over the largest payload: each node once, no amplifier
    piece = "(value ~ value)|length + "
    source = "{{ " + piece * ((1024 - 10) // len(piece)) + "0 }}"
    template = compile_template(source, 1024)
    start = time.perf_counter()
    template.render({"value": "x" * 65536})
    assert time.perf_counter() - start < 0.5


def test_sensor_cap() -> None:
    fmt, link = make(max_sensors=2)
    send(fmt, *BEDROOM_T)
    send(fmt, *BEDROOM_H)
    assert send(fmt, *GARDEN) == []
    assert fmt.skipped == {"sensor_cap": 1}
    assert fmt.discovered()["sensors"] == 2
    send(fmt, *BEDROOM_T)  # an update of a known sensor is not over the cap
    assert fmt.skipped == {"sensor_cap": 1}
    send(fmt, BEDROOM_H[0], b"")  # room again
    send(fmt, *GARDEN)
    assert fmt.discovered()["sensors"] == 2
    assert "homeassistant/binary_sensor/garden/state" in link.active


def test_topic_cap() -> None:
    fmt, _ = make(max_topics=2)
    send(fmt, *Z2M_TEMP)  # state + availability: 2 topics
    send(fmt, *BEDROOM_T)
    assert fmt.skipped == {"topic_cap": 1}
    assert fmt.discovered()["sensors"] == 1


def test_availability_list_cap() -> None:
    fmt, _ = make()
    config = {"stat_t": "s", "avty": [{"t": f"a/{i}"} for i in range(9)]}
    with pytest.raises(PayloadError, match="availability"):
        send(fmt, "homeassistant/sensor/x/config", config)


def test_config_size_cap() -> None:
    fmt, _ = make(max_config=256)
    config = {"stat_t": "s", "name": "n" * 300}
    with pytest.raises(PayloadError) as err:
        send(fmt, "homeassistant/sensor/x/config", config)
    assert err.value.reason == "too_large"
    assert "homeassistant" in err.value.detail


@pytest.mark.parametrize(
    "config",
    [
        {"name": "no state topic"},
        {"stat_t": ""},
        {"stat_t": 5},
        {"stat_t": "sensors/#"},
        {"stat_t": "a/+/b"},
        {"stat_t": "homeassistant/sensor/other/config"},
        {"stat_t": "s" * 2000},
        {"stat_t": "s", "dev": "not an object"},
        {"stat_t": "s", "dev": {"name": "n" * 300}},
        {"stat_t": "s", "unit_of_meas": ["°C"]},
        {"stat_t": "s", "~": 3},
        {"stat_t": "s", "avty": "x"},
        {"stat_t": "s", "avty": [{"pl_avail": "up"}]},
        {"stat_t": "s", "avty_t": "x/#"},
        {"stat_t": "s", "val_tpl": 12},
        {"stat_t": "s", "pl_on": {"x": 1}},
        {"stat_t": "s", "dev_cla": True},
    ],
)
def test_malformed_config_keeps_the_old_sensor(config: dict[str, object]) -> None:
    fmt, link = make()
    topic = "homeassistant/sensor/x/config"
    send(fmt, topic, {"stat_t": "good", "dev_cla": "temperature", "unit_of_meas": "°C"})
    with pytest.raises(PayloadError) as err:
        send(fmt, topic, config)
    assert err.value.detail.startswith("homeassistant: ")
    assert values(fmt.parse("good", b"20", NOW)) == {("x", "temperature"): 20.0}
    assert link.active == {"good"}


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_config_not_a_json_object(payload: bytes) -> None:
    fmt, _ = make()
    fmt.max_payload = 200_000
    fmt.max_config = 200_000
    with pytest.raises(PayloadError) as err:
        fmt.parse("homeassistant/sensor/x/config", payload, NOW)
    assert "homeassistant" in err.value.detail


def test_device_config_with_one_bad_component_changes_nothing() -> None:
    fmt, _ = make()
    send(fmt, *DEVICE_CONFIG)
    topic, config = DEVICE_CONFIG
    bad = json.loads(json.dumps(config))
    bad["cmps"]["some_unique_id2"]["value_template"] = "{% for x in value %}{% endfor %}"
    with pytest.raises(PayloadError):
        send(fmt, topic, bad)
    assert fmt.discovered()["sensors"] == 2


def test_unique_id_taken_by_another_config_is_refused() -> None:
    fmt, _ = make()
    send(fmt, *Z2M_TEMP)
    hijack = dict(Z2M_TEMP[1], state_topic="evil/topic")
    with pytest.raises(PayloadError, match="unique_id"):
        send(fmt, "homeassistant/sensor/evil/config", hijack)
    assert values(fmt.parse("zigbee2mqtt/living_room", b'{"temperature": 1}', NOW)) == {
        ("living_room", "temperature"): 1.0
    }


def test_state_payload_not_utf8_is_refused() -> None:
    fmt, _ = make()
    send(fmt, *GARDEN)
    with pytest.raises(PayloadError, match=r"homeassistant: .*UTF-8"):
        fmt.parse("homeassistant/binary_sensor/garden/state", b"\xff", NOW)


def test_unknown_topics_give_nothing() -> None:
    fmt, _ = make()
    assert fmt.parse("homeassistant/status", b"online", NOW) == []
    assert fmt.parse("homeassistant/a/b/c/d/config", b"{}", NOW) == []
    assert fmt.parse("elsewhere", b"1", NOW) == []


# ---- the simulated device


def test_simulated_device_round_trip() -> None:
    fmt, link = make()
    device = get_device("homeassistant")("kitchen 1", "home")
    out: list[Reading] = []
    for topic, payload, _qos, retain in device.birth():
        if topic.endswith("/config"):
            assert retain
        out += fmt.parse(topic, payload, NOW)
    assert [(r.device, r.kind, r.value) for r in out] == [("kitchen 1", "online", 1.0)]
    assert link.active == {"sensord-sim/kitchen_1/state", "sensord-sim/kitchen_1/status"}
    for topic, payload, _qos, _retain in device.state({"temperature": 21.5, "humidity": 40.0}, NOW):
        out = fmt.parse(topic, payload, NOW)
    assert values(out) == {("kitchen 1", "temperature"): 21.5, ("kitchen 1", "humidity"): 40.0}
    assert {r.unit for r in out} == {"°C", "%"}
    for topic, payload, _qos, _retain in device.death():
        out = fmt.parse(topic, payload, NOW)
    assert values(out) == {("kitchen 1", "online"): 0.0}
    assert fmt.discovered()["devices"] == {"kitchen 1": ["humidity", "online", "temperature"]}
    assert fmt.skipped == {}


# ---- fuzz


def _parse(fmt: HomeAssistantFormat, topic: str, payload: bytes) -> list[Reading]:
    """parse, where a refusal must be a PayloadError naming the format."""
    return parse_or_refused(fmt, topic, payload, NOW, "homeassistant")


_JSON = json_values(text_size=20, max_leaves=12)
config_keys = st.sampled_from(
    [
        "stat_t",
        "state_topic",
        "dev_cla",
        "val_tpl",
        "unit_of_meas",
        "dev",
        "avty",
        "avty_t",
        "~",
        "uniq_id",
        "pl_on",
        "name",
        "cmps",
    ]
)
templates = st.sampled_from(
    [
        "{{ value }}",
        "{{ value_json.a }}",
        "{{ value_json.a | float }}",
        "{{ value | int * 2 }}",
        "{{ value_json }}",
    ]
)


@settings(max_examples=100, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(config_keys, _JSON | templates | st.just("~/s"), max_size=8),
    st.sampled_from(
        [
            "homeassistant/sensor/x/config",
            "homeassistant/binary_sensor/n/y/config",
            "homeassistant/device/d/config",
        ]
    ),
    st.binary(max_size=64) | _JSON.map(lambda v: json.dumps(v).encode()),
)
def test_fuzz_configs_and_states(config: dict[str, object], topic: str, state: bytes) -> None:
    fmt, _ = make()
    _parse(fmt, topic, json.dumps(config).encode())
    for sensor in list(fmt.sensors.values()):
        for t in sensor.topics:
            check_readings(_parse(fmt, t, state))


@settings(max_examples=100, database=None)
@given(st.binary(max_size=256), st.sampled_from(["homeassistant/sensor/x/config", "s", "a"]))
def test_fuzz_bytes(payload: bytes, topic: str) -> None:
    fmt, _ = make()
    send(
        fmt,
        "homeassistant/sensor/a/config",
        {"stat_t": "s", "val_tpl": "{{ value_json.v }}", "avty_t": "a"},
    )
    check_readings(_parse(fmt, topic, payload))


@settings(max_examples=100, database=None)
@given(st.text(max_size=80))
def test_fuzz_templates(source: str) -> None:
    try:
        template = compile_template(source, 1024)
    except TemplateRefused:
        return
    with contextlib.suppress(Exception):  # any render error is the caller's skip
        template.render({"value": "1", "value_json": {"a": 1}})


def test_states_before_their_config_are_held_and_read_when_it_arrives() -> None:
    """After a restart a persistent session delivers the queued states right away, the
    retained configs only after the SUBSCRIBE: nothing of them is lost."""
    fmt, _link = make()
    state = "homeassistant/sensor/sensorBedroom/state"
    assert fmt.parse(state, b'{"temperature": 20.5, "humidity": 40}', NOW - 20) == []
    assert fmt.parse(state, BEDROOM_STATE, NOW - 10) == []
    out = send(fmt, *BEDROOM_T)  # the config: its held states are read now
    assert [(r.kind, r.value, r.ts) for r in out] == [
        ("temperature", 20.5, NOW - 20),
        ("temperature", 23.2, NOW - 10),
    ]
    # the humidity sensor on the same topic reads them too, and only it
    out = send(fmt, *BEDROOM_H)
    assert [(r.kind, r.value, r.ts) for r in out] == [
        ("humidity", 40.0, NOW - 20),
        ("humidity", 43.7, NOW - 10),
    ]
    assert send(fmt, *BEDROOM_H) == []  # an update of a sensor that has read them
    assert fmt.skipped == {}


def test_held_states_are_bounded_and_counted_when_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from sensord.ingest.formats import homeassistant

    monkeypatch.setattr(homeassistant, "EARLY_MAX", 3)
    fmt, _link = make()
    for i in range(5):
        fmt.parse(f"nobody/{i}", b"1", NOW + i)
    assert fmt.skipped == {"no_config": 2}  # the two oldest
    fmt.parse("nobody/late", b"1", NOW + homeassistant.EARLY_MAX_AGE + 10)
    assert fmt.skipped == {"no_config": 5}  # too old: the other three
