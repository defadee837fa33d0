"""IngestClient's own framing of MQTT packets (sensord/ingest/paho.py), over a socketpair.

The real-broker tests go through it too; these feed it bytes split at every boundary,
packets that arrive alone (one per recv, the moderate-rate case), and an EOF, and check
that each PUBLISH comes out once, whole and in order.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sensord.ingest.paho import IngestClient

Wired = tuple[IngestClient, socket.socket, list[tuple[str, bytes]], "CountingSocket"]


def publish_packet(topic: str, payload: bytes, qos: int = 0, mid: int = 1) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", mid) if qos else b"") + payload
    length, enc = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        enc += bytes([byte | (128 if length else 0)])
        if not length:
            break
    return bytes([0x30 | (qos << 1)]) + enc + body


class CountingSocket:
    """The client's end, counting recv() calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


@pytest.fixture
def wired() -> Iterator[Wired]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = IngestClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="framing-test",
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    got: list[tuple[str, bytes]] = []
    client.on_reading_message = lambda m: got.append((m.topic, bytes(m.payload)))
    counting = CountingSocket(ours)
    client._sock = counting  # type: ignore[assignment]  # connected, as after CONNACK
    yield client, theirs, got, counting
    theirs.close()
    ours.close()


def test_packets_arriving_alone_are_framed_one_per_read(
    wired: Wired, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, theirs, got, sock = wired
    slow = 0
    paho_read = mqtt.Client._packet_read

    def counting(self: mqtt.Client) -> MQTTErrorCode:
        nonlocal slow
        slow += 1
        return paho_read(self)

    monkeypatch.setattr(mqtt.Client, "_packet_read", counting)
    for i in range(50):
        theirs.sendall(publish_packet(f"s/p/d-{i}/temperature", str(i).encode()))
        client.read_batch(16)
    assert got == [(f"s/p/d-{i}/temperature", str(i).encode()) for i in range(50)]
    assert not client.buffered
    # one recv() for the packet and one that finds the socket drained, and the packet
    # framed from the buffer: not by paho's incremental reader (recv(1), recv(1), rest)
    assert sock.recvs == 2 * 50
    assert slow == 0


def test_a_packet_split_at_every_byte_comes_out_once_and_whole(wired: Wired) -> None:
    client, theirs, got, _ = wired
    big = publish_packet("s/p/big/temperature", b"x" * 300)  # a 2-byte remaining length
    stream = publish_packet("s/p/a/temperature", b"1") + big + publish_packet("s/b", b"2", 1, 7)
    for cut in range(1, len(stream)):
        got.clear()
        theirs.sendall(stream[:cut])
        client.read_batch(16)
        theirs.sendall(stream[cut:])
        while client.read_batch(16) or client.buffered:
            pass
        assert got == [
            ("s/p/a/temperature", b"1"),
            ("s/p/big/temperature", b"x" * 300),
            ("s/b", b"2"),
        ], f"split at byte {cut}"


def test_many_packets_in_one_read_and_a_drained_socket(wired: Wired) -> None:
    client, theirs, got, _ = wired
    theirs.sendall(b"".join(publish_packet(f"t/{i}", b"v") for i in range(100)))
    while client.read_batch(7):
        pass
    assert [t for t, _ in got] == [f"t/{i}" for i in range(100)]
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_AGAIN  # nothing waits


def test_eof_is_reported_as_a_lost_connection(wired: Wired) -> None:
    client, theirs, got, _ = wired
    theirs.sendall(publish_packet("t/last", b"v"))
    theirs.shutdown(socket.SHUT_WR)
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [("t/last", b"v")]
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
