"""paho's private names that sensord/ingest/paho.py relies on: present, with the same shape.

IngestClient overrides and calls private methods of paho-mqtt 2.2 (pinned `>=2.2,<2.3`).
Before a new paho is let in, these must pass: a renamed method or a changed parameter list
fails here by name, instead of as a silently slower or broken ingest in production.
(tests/ingest/test_framing.py checks what each override does.)
"""

from __future__ import annotations

import importlib.metadata
import inspect

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sensord.ingest.paho import IngestClient

# name -> the parameters (after self) that IngestClient passes or accepts, in order
OVERRIDDEN = {
    "_sock_recv": ["bufsize"],
    "_sock_close": [],
    "_packet_read": [],
    "_handle_on_message": ["message"],
}
CALLED = {
    "_packet_handle": [],
    "_packet_queue": ["command", "packet", "mid", "qos"],  # then optional ones only
    "_loop_rc_handle": ["rc"],
    "loop_write": [],
    "ack": ["mid", "qos"],
}
# IngestClient fills and resets these keys of paho's in-flight packet itself
IN_PACKET_KEYS = {"command", "remaining_length", "packet"}


def paho_params(name: str) -> list[inspect.Parameter]:
    method = getattr(mqtt.Client, name, None)
    assert callable(method), f"paho-mqtt {PAHO} has no Client.{name}: sensord/ingest/paho.py"
    params = list(inspect.signature(method).parameters.values())
    assert params, f"paho Client.{name} takes no self?"
    assert params[0].name == "self"
    return params[1:]


PAHO = importlib.metadata.version("paho-mqtt")


def test_paho_is_the_minor_version_the_overrides_were_written_for() -> None:
    assert PAHO.startswith("2.2."), (
        f"paho-mqtt {PAHO}: sensord/ingest/paho.py was written for 2.2.x; check every "
        "private method it uses (this file) before widening the pin in pyproject.toml"
    )


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_method_exists_with_the_same_parameters(name: str) -> None:
    params = paho_params(name)
    assert [p.name for p in params] == OVERRIDDEN[name], (
        f"paho Client.{name}{inspect.signature(getattr(mqtt.Client, name))} changed; "
        "IngestClient overrides it"
    )
    assert all(p.default is inspect.Parameter.empty for p in params)
    # and IngestClient really overrides it, with the same parameters
    ours = IngestClient.__dict__.get(name)
    assert ours is not None, f"IngestClient no longer overrides {name}"
    assert [p.name for p in list(inspect.signature(ours).parameters.values())[1:]] == (
        OVERRIDDEN[name]
    )


@pytest.mark.parametrize("name", sorted(CALLED))
def test_each_called_method_exists_and_takes_what_is_passed(name: str) -> None:
    params = paho_params(name)
    expected = CALLED[name]
    assert [p.name for p in params[: len(expected)]] == expected, (
        f"paho Client.{name}{inspect.signature(getattr(mqtt.Client, name))} changed; "
        "IngestClient calls it"
    )
    extra = params[len(expected) :]
    assert all(p.default is not inspect.Parameter.empty for p in extra), (
        f"paho Client.{name} takes new required parameters: {[p.name for p in extra]}"
    )


def test_instance_state_that_ingest_client_reads_and_writes() -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, manual_ack=True)
    packet = client._in_packet
    assert isinstance(packet, dict)
    assert packet.keys() >= IN_PACKET_KEYS, f"paho's _in_packet is now {sorted(packet)}"
    assert packet["command"] == 0  # 0 means: no packet half-read (IngestClient tests it)
    assert isinstance(packet["packet"], bytearray)
    assert client._sock is None  # the connected socket, None when down
    assert isinstance(client._last_bytes_received, float)  # paho's keepalive clock
    # client.py's refusal path keeps the raw topic bytes, valid UTF-8 or not
    message = mqtt.MQTTMessage(mid=1, topic=b"s/\xff")
    assert message._topic == b"s/\xff"


def test_publish_reaches_handle_on_message() -> None:
    """IngestClient takes every message at `_handle_on_message`: paho's PUBLISH handler
    must still deliver there (for QoS 0 and 1) and not past it."""
    source = inspect.getsource(mqtt.Client._handle_publish)
    assert source.count("self._handle_on_message(message)") >= 2, (
        "paho's _handle_publish no longer hands messages to _handle_on_message"
    )


_BODIES = [
    (0x30, b"\x00\x03a/b" + b"21.5"),  # QoS 0
    (0x32, b"\x00\x03a/b\x12\x34" + b'{"value": 1}'),  # QoS 1, packet id 0x1234
    (0x33, b"\x00\x01t\x00\x07"),  # retained, empty payload
    (0x3A, b"\x00\x02\xc3\xa9\xff\xfe" + bytes(range(256))),  # dup, UTF-8 topic, binary
    (0x31, b"\x00\x05\xff\xfe\x00\x01x" + b"v"),  # a topic that is not UTF-8: kept raw
]


@pytest.mark.parametrize(("command", "body"), _BODIES)
def test_the_publish_fast_path_builds_the_message_paho_builds(command: int, body: bytes) -> None:
    """IngestClient decodes MQTT 3.1.x PUBLISH itself (sensord/ingest/paho.py,
    _decode_publish); each field must be what paho's decode_publish gives."""
    from paho.mqtt import _packet

    from sensord.ingest.paho import _decode_publish

    buf = b"\x00\x00" + body  # the decoder reads from an offset into the receive buffer
    ours = _decode_publish(command, buf, 2, len(buf))
    ref = _packet.decode_publish(command, body, mqtt.MQTTv311)
    assert ours is not None
    assert (ours._topic, ours.mid, ours.qos, ours.retain, ours.dup, ours.payload) == (
        ref.topic,
        ref.mid,
        ref.qos,
        ref.retain,
        ref.dup,
        ref.payload,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\x00\x00payload",  # an empty topic: paho raises MalformedPacket
        b"\x00\x09a/b",  # a topic length past the end
        b"\x00\x03a/b\x01",  # QoS 1 with half a packet id
    ],
)
def test_anything_unusual_is_left_to_paho(body: bytes) -> None:
    from sensord.ingest.paho import _decode_publish

    assert _decode_publish(0x32, body, 0, len(body)) is None
