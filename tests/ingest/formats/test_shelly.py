"""Format "shelly" (sensord/ingest/formats/shelly.py): Gen2/Gen3 RPC notifications,
status topics and `online`, with payloads from Shelly's own API docs and a device capture."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions
from sensord.ingest.formats.shelly import ShellyFormat
from simulators import devices
from tests.ingest.formats.support import (
    JSON_VALUES,
    check_readings,
    create,
    parse_or_refused,
    refused,
)

NOW = 1_700_000_000.0
HT = "shellyplusht-08b61fcb7f3c"
HUGE = b"1" + b"0" * 400  # a JSON integer too large for a double


def make(**options: object) -> ShellyFormat:
    return create("shelly", ShellyFormat, **options)


def table(readings: list[Reading]) -> list[tuple[str, str, str, float, str | None]]:
    return [(r.device, r.labels.get("sensor", ""), r.kind, r.value, r.unit) for r in readings]


# -- fixtures -------------------------------------------------------------------------------

# The Plus H&T's report of the issue/brief, in the shape of
# https://shelly-api-docs.shelly.cloud/gen2/General/Notifications#notifystatus (params: ts and
# one object per component, as in .../ComponentsAndServices/Temperature and .../Humidity)
HT_NOTIFY = {
    "src": HT,
    "dst": f"{HT}/events",
    "method": "NotifyStatus",
    "params": {
        "ts": 1631266595.43,
        "temperature:0": {"id": 0, "tC": 21.3, "tF": 70.3},
        "humidity:0": {"id": 0, "rh": 48.6},
    },
}

# https://shelly-api-docs.shelly.cloud/gen2/General/Notifications#notifystatus, Example 1:
# a button changed a relay's output: state, no measurement
DOCS_EXAMPLE_1 = {
    "src": "shellypro4pm-f008d1d8b8b8",
    "dst": "user_1",
    "method": "NotifyStatus",
    "params": {"ts": 1631186545.04, "switch:0": {"id": 0, "output": True, "source": "button"}},
}

# https://shelly-api-docs.shelly.cloud/gen2/General/Notifications#notifyevent
DOCS_NOTIFY_EVENT = {
    "src": "shellypro4pm-f008d1d8b8b8",
    "dst": "user_1",
    "method": "NotifyEvent",
    "params": {
        "ts": 1631266595.43,
        "events": [{"component": "input:0", "id": 0, "event": "single_push", "ts": 1631266595.43}],
    },
}

# A Plus H&T's NotifyFullStatus captured over MQTT, published at
# https://gist.github.com/NelsonMinar/494a0f53785c20290b395639548349fa (wifi trimmed to the
# fields shown there, its rssi value ours)
HT_FULL = {
    "src": "shellyplusht-b8d61a8b17cc",
    "dst": "shellyplusht-b8d61a8b17cc/events",
    "method": "NotifyFullStatus",
    "params": {
        "ts": 1680962879.62,
        "ble": {},
        "cloud": {"connected": False},
        "devicepower:0": {
            "id": 0,
            "battery": {"V": 0.43, "percent": 0},
            "external": {"present": True},
        },
        "ht_ui": {},
        "humidity:0": {"id": 0, "rh": 42.2},
        "mqtt": {"connected": True},
        "sys": {
            "mac": "B8D61A8B17CC",
            "restart_required": False,
            "time": None,
            "unixtime": None,
            "uptime": 3,
            "ram_size": 235300,
            "ram_free": 164244,
            "fs_size": 458752,
            "fs_free": 118784,
            "cfg_rev": 10,
            "kvs_rev": 0,
            "webhook_rev": 0,
            "available_updates": {},
            "wakeup_reason": {"boot": "deepsleep_wake", "cause": "status_update"},
            "wakeup_period": 600,
        },
        "temperature:0": {"id": 0, "tC": 19.8, "tF": 67.6},
        "wifi": {"sta_ip": "192.168.3.183", "status": "got ip", "ssid": "winos", "rssi": -58},
    },
}

# https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Shelly#shellygetstatus-example
# (a Pro 4PM's status; the two relays' objects), as the components of a NotifyFullStatus
PRO4PM_SWITCH_0 = {
    "id": 0,
    "source": "timer",
    "output": True,
    "timer_started_at": 1626935739.79,
    "timer_duration": 60,
    "apower": 8.9,
    "voltage": 237.5,
    "aenergy": {"total": 6.532, "by_minute": [45.199, 47.141, 88.397], "minute_ts": 1626935779},
    "temperature": {"tC": 23.5, "tF": 74.4},
}
PRO4PM_SWITCH_1 = {
    "id": 1,
    "source": "init",
    "output": False,
    "apower": 0,
    "voltage": 237.5,
    "aenergy": {"total": 0, "by_minute": [0, 0, 0], "minute_ts": 1626935779},
    "temperature": {"tC": 23.5, "tF": 74.4},
}

# https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/DevicePower#status
DEVICEPOWER = {"id": 0, "battery": {"V": 5.48, "percent": 100}, "external": {"present": False}}

# https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/EM#status (a Pro 3EM's
# em:0, after the docs' example: per-phase a_/b_/c_ fields, the neutral, the totals)
PRO3EM_EM: dict[str, object] = {
    "id": 0,
    "a_current": 4.029,
    "a_voltage": 236.1,
    "a_act_power": 951.2,
    "a_aprt_power": 951.9,
    "a_pf": 1,
    "b_current": 4.027,
    "b_voltage": 236.201,
    "b_act_power": -951.1,
    "b_aprt_power": 951.8,
    "b_pf": 1,
    "c_current": 3.03,
    "c_voltage": 236.402,
    "c_act_power": 715.4,
    "c_aprt_power": 715.9,
    "c_pf": 1,
    "n_current": None,
    "total_current": 11.029,
    "total_act_power": 2484.1,
    "total_aprt_power": 2484.5,
    "user_calibrated_phase": [],
}


def rpc(payload: object) -> bytes:
    return json.dumps(payload).encode()


# -- notifications --------------------------------------------------------------------------


def test_notify_status_of_a_plus_ht() -> None:
    fmt = make()
    readings = fmt.parse(f"{HT}/events/rpc", rpc(HT_NOTIFY), NOW)
    assert table(readings) == [
        (HT, "temperature:0", "temperature", 21.3, "°C"),
        (HT, "humidity:0", "humidity", 48.6, "%"),
    ]
    assert {r.ts for r in readings} == {1631266595.43}  # the device's params.ts
    assert {r.site for r in readings} == {"home"}
    assert fmt.skipped == {}  # tF and the ids are no measurement: ignored, not counted


def test_a_notification_of_state_alone_or_an_event_reads_nothing() -> None:
    fmt = make()
    assert fmt.parse("shellypro4pm-f008d1d8b8b8/events/rpc", rpc(DOCS_EXAMPLE_1), NOW) == []
    assert fmt.parse("shellypro4pm-f008d1d8b8b8/events/rpc", rpc(DOCS_NOTIFY_EVENT), NOW) == []
    # an RPC response that a client with src ".../events" receives on this topic
    response = {"id": 1, "src": HT, "dst": "x/events", "result": {"was_on": True}}
    assert fmt.parse("x/events/rpc", rpc(response), NOW) == []
    assert fmt.skipped == {}


def test_notify_full_status_of_a_plus_ht_captured_over_mqtt() -> None:
    dev = "shellyplusht-b8d61a8b17cc"
    readings = make().parse(f"{dev}/events/rpc", rpc(HT_FULL), NOW)
    assert sorted(table(readings)) == sorted(
        [
            (dev, "devicepower:0", "battery", 0.0, "%"),
            (dev, "devicepower:0", "voltage", 0.43, "V"),
            (dev, "devicepower:0", "external_power", 1.0, None),
            (dev, "humidity:0", "humidity", 42.2, "%"),
            (dev, "temperature:0", "temperature", 19.8, "°C"),
            (dev, "wifi", "signal_strength", -58.0, "dBm"),
        ]
    )


def test_two_relays_stay_two_sensors_with_their_power_energy_and_temperature() -> None:
    message = {
        "src": "shellypro4pm-f008d1d8b8b8",
        "dst": "x",
        "method": "NotifyFullStatus",
        "params": {"ts": 1626935780.0, "switch:0": PRO4PM_SWITCH_0, "switch:1": PRO4PM_SWITCH_1},
    }
    readings = make().parse("shellypro4pm-f008d1d8b8b8/events/rpc", rpc(message), NOW)
    dev = "shellypro4pm-f008d1d8b8b8"
    assert table(readings) == [
        (dev, "switch:0", "power", 8.9, "W"),
        (dev, "switch:0", "voltage", 237.5, "V"),
        (dev, "switch:0", "energy", 6.532, "Wh"),  # aenergy.total is in Wh on a Shelly
        (dev, "switch:0", "temperature", 23.5, "°C"),
        (dev, "switch:1", "power", 0.0, "W"),
        (dev, "switch:1", "voltage", 237.5, "V"),
        (dev, "switch:1", "energy", 0.0, "Wh"),
        (dev, "switch:1", "temperature", 23.5, "°C"),
    ]
    identities = {(r.device, r.kind, tuple(r.labels.items())) for r in readings}
    assert len(identities) == len(readings)


def test_energy_is_converted_per_ingest_units() -> None:
    fmt = make(units={"energy": "kWh", "temperature": "F"})
    readings = fmt.parse("p/status/switch:0", rpc(PRO4PM_SWITCH_0), NOW)
    by_kind = {r.kind: (r.value, r.unit) for r in readings}
    assert by_kind["energy"][1] == "kWh"
    assert by_kind["energy"][0] == pytest.approx(0.006532)
    assert by_kind["temperature"][1] == "F"
    assert by_kind["temperature"][0] == pytest.approx(74.3)


def test_a_three_phase_meter_has_one_sensor_per_phase_and_one_for_the_totals() -> None:
    fmt = make()
    readings = fmt.parse("shellypro3em-c8f09e0f1e3c/status/em:0", rpc(PRO3EM_EM), NOW)
    got = {(r.labels["sensor"], r.kind): r.value for r in readings}
    assert got[("em:0/a", "power")] == 951.2
    assert got[("em:0/b", "power")] == -951.1
    assert got[("em:0/c", "voltage")] == 236.402
    assert got[("em:0/a", "power_factor")] == 100.0  # a ratio, given in %
    assert got[("em:0/a", "apparent_power")] == 951.9
    assert got[("em:0", "current")] == 11.029
    assert got[("em:0", "power")] == 2484.1
    assert ("em:0/n", "current") not in got
    assert fmt.skipped == {"null": 1}  # n_current: null (no neutral sensor)


def test_a_smoke_alarm_is_a_binary_reading() -> None:
    message = {"method": "NotifyStatus", "params": {"ts": NOW, "smoke:0": {"id": 0, "alarm": True}}}
    (reading,) = make().parse("shellyplussmoke-a1/events/rpc", rpc(message), NOW)
    assert (reading.kind, reading.value, reading.unit) == ("smoke", 1.0, None)


# -- status topics and online -----------------------------------------------------------------


def test_a_status_topic_is_one_component_read_at_the_receive_time() -> None:
    fmt = make()
    readings = fmt.parse(f"{HT}/status/devicepower:0", rpc(DEVICEPOWER), NOW)
    assert table(readings) == [
        (HT, "devicepower:0", "battery", 100.0, "%"),
        (HT, "devicepower:0", "voltage", 5.48, "V"),
        (HT, "devicepower:0", "external_power", 0.0, None),
    ]
    assert {r.ts for r in readings} == {NOW}
    assert fmt.parse(f"{HT}/status/sys", rpc(HT_FULL["params"]["sys"]), NOW) == []  # type: ignore[index]  # a dict


def test_a_topic_prefix_with_slashes_is_the_device_for_every_topic() -> None:
    fmt = make(topic_prefix="shellies/kitchen")
    assert fmt.default_topics == (
        "shellies/kitchen/events/rpc",
        "shellies/kitchen/status/+",
        "shellies/kitchen/online",
    )
    assert ShellyFormat.default_topics == ("+/events/rpc", "+/status/+", "+/online")
    a = fmt.parse("shellies/kitchen/events/rpc", rpc(HT_NOTIFY), NOW)
    b = fmt.parse("shellies/kitchen/status/temperature:0", b'{"id":0,"tC":21.4,"tF":70.5}', NOW)
    (c,) = fmt.parse("shellies/kitchen/online", b"false", NOW)
    assert {r.device for r in [*a, *b, c]} == {"shellies/kitchen"}
    assert (c.kind, c.value, c.unit, c.labels) == ("online", 0.0, None, {})
    assert list(make(topic_prefix=["a", "b/+"]).default_topics)[3:] == [
        "b/+/events/rpc",
        "b/+/status/+",
        "b/+/online",
    ]


def test_online_true_and_false() -> None:
    fmt = make()
    (up,) = fmt.parse(f"{HT}/online", b"true", NOW)
    (down,) = fmt.parse(f"{HT}/online", b"false", NOW + 1)
    assert (up.device, up.kind, up.value, up.ts) == (HT, "online", 1.0, NOW)
    assert (down.value, down.ts) == (0.0, NOW + 1)


# -- skipped fields and time ------------------------------------------------------------------


def test_bad_fields_are_skipped_and_counted_and_the_rest_kept() -> None:
    fmt = make()
    message = {
        "method": "NotifyStatus",
        "params": {
            "ts": NOW,
            "temperature:100": {"id": 100, "tC": None, "tF": None, "errors": ["read"]},
            "temperature:101": {"id": 101, "tC": "hot"},
            "temperature:102": {"id": 102, "tC": float("nan")},
            "switch:0": {"aenergy": [1, 2]},
            "humidity:0": {"id": 0, "rh": 40},
        },
    }
    readings = fmt.parse("x/events/rpc", json.dumps(message).encode(), NOW)
    assert table(readings) == [("x", "humidity:0", "humidity", 40.0, "%")]
    assert fmt.skipped == {"null": 1, "text": 1, "non_finite": 1, "nested": 1}


def test_a_timestamp_far_ahead_skips_the_message_and_one_before_2000_is_the_receive_time() -> None:
    fmt = make()
    ahead = {"method": "NotifyStatus", "params": {"ts": NOW + 3600, "humidity:0": {"rh": 1}}}
    assert fmt.parse("x/events/rpc", rpc(ahead), NOW) == []
    assert fmt.skipped == {"clock_skew": 1}
    unset = {"method": "NotifyStatus", "params": {"ts": 12.5, "humidity:0": {"rh": 1}}}
    (reading,) = fmt.parse("x/events/rpc", rpc(unset), NOW)
    assert reading.ts == NOW
    no_ts = {"method": "NotifyFullStatus", "params": {"humidity:0": {"rh": 1}}}
    assert fmt.parse("x/events/rpc", rpc(no_ts), NOW)[0].ts == NOW


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (f"{HT}/events/rpc", b"{not json", "not_json"),
        (f"{HT}/events/rpc", b"[1, 2]", "schema"),
        (f"{HT}/events/rpc", b'{"src": "x", "params": {}}', "schema"),
        (f"{HT}/events/rpc", b'{"method": 7, "params": {}}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus"}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus", "params": [1]}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus", "params": {"ts": "now"}}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus", "params": {"ts": true}}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus", "params": {"ts": 1e999}}', "schema"),
        (f"{HT}/events/rpc", b'{"method": "NotifyStatus", "params": {"ts": %s}}' % HUGE, "schema"),
        (f"{HT}/status/switch:0", b"42", "schema"),
        (f"{HT}/status/switch:0", b"\xff\xfe", "not_json"),
        (f"{HT}/online", b"yes", "schema"),
        (f"{HT}/online", b"", "schema"),
        ("/events/rpc", rpc(HT_NOTIFY), "topic"),
        ("/online", b"true", "topic"),
        ("/status/switch:0", b"{}", "topic"),
        (f"{HT}/rpc", b"{}", "topic"),
        ("events/rpc", rpc(HT_NOTIFY), "topic"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason_naming_the_format(
    topic: str, payload: bytes, reason: str
) -> None:
    assert refused(make(), topic, payload, NOW, "shelly").reason == reason


def test_a_payload_over_max_payload_is_too_large() -> None:
    fmt = formats.create("shelly", FormatOptions("unused", 64))
    with pytest.raises(PayloadError) as info:
        fmt.parse(f"{HT}/events/rpc", rpc(HT_NOTIFY), NOW)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "x"}, "prefix: unknown option of format shelly; known: topic_prefix"),
        ({"topic_prefix": 3}, "topic_prefix: must be a string"),
        ({"topic_prefix": []}, "topic_prefix: must be a string"),
        ({"topic_prefix": "/"}, "topic_prefix: must be a string"),
        ({"topic_prefix": "a/#"}, "topic_prefix: 'a/#' may not hold '#'"),
        ({"topic_prefix": "$SYS"}, "topic_prefix: '\\$SYS' may not"),
    ],
)
def test_bad_options_are_errors_naming_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**options)


# -- fuzz -------------------------------------------------------------------------------------

_TOPICS = st.sampled_from(
    [f"{HT}/events/rpc", f"{HT}/status/switch:0", f"{HT}/status/em:0", f"{HT}/online", "a/b/c"]
)
_JSON = JSON_VALUES
_KEYS = st.sampled_from(
    ["tC", "rh", "apower", "aenergy", "battery", "a_act_power", "total_act", "pf"]
)
_COMPONENT = st.dictionaries(_KEYS | st.text(max_size=6), _JSON, max_size=6)
_NOTIFICATION = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["NotifyStatus", "NotifyFullStatus", "NotifyEvent"]) | _JSON,
        "params": st.dictionaries(
            st.sampled_from(["ts", "switch:0", "em:0", "devicepower:0", "smoke:0"]),
            _COMPONENT | _JSON,
            max_size=5,
        )
        | _JSON,
    }
)


def _check(topic: str, payload: bytes) -> None:
    """Readings with finite values and str labels, or a PayloadError naming the format."""
    check_readings(parse_or_refused(make(), topic, payload, NOW, "shelly"), nonempty_device=True)


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, payload=st.binary(max_size=200))
def test_fuzz_bytes_raise_nothing_but_payload_error(topic: str, payload: bytes) -> None:
    _check(topic, payload)


@settings(max_examples=100, database=None, deadline=None)
@given(topic=_TOPICS, document=_NOTIFICATION | _COMPONENT | _JSON)
def test_fuzz_json_raises_nothing_but_payload_error(topic: str, document: object) -> None:
    _check(topic, json.dumps(document).encode())


# -- the simulated device ---------------------------------------------------------------------


def test_the_simulated_plus_ht_reads_back_as_it_was_put_in() -> None:
    device = devices.get("shelly")("shellyplusht-0123456789ab", "home")
    fmt = make()
    ts = NOW - 5
    messages = [
        *device.birth(),
        *device.state({"temperature": 21.5, "humidity": 40.0, "battery": 87.0}, ts),
        *device.death(),
    ]
    readings = [r for topic, payload, _, _ in messages for r in fmt.parse(topic, payload, NOW)]
    online = [r.value for r in readings if r.kind == "online"]
    assert online == [1.0, 0.0]
    values = {
        (r.kind, r.labels.get("sensor"), r.value, r.ts) for r in readings if r.kind != "online"
    }
    for when in (ts, NOW):  # the RPC notification (device time) and the status topics
        assert ("temperature", "temperature:0", 21.5, when) in values
        assert ("humidity", "humidity:0", 40.0, when) in values
        assert ("battery", "devicepower:0", 87.0, when) in values
    assert {r.device for r in readings} == {"shellyplusht-0123456789ab"}
    assert fmt.skipped == {}
    retained = {topic for topic, _, _, retain in messages if retain}
    assert "shellyplusht-0123456789ab/status/temperature:0" in retained
    assert "shellyplusht-0123456789ab/online" in retained
