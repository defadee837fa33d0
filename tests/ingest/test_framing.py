"""IngestClient's own framing of MQTT packets (sensord/ingest/paho.py), over a socketpair.

The real-broker tests go through it too; these feed it bytes split at every boundary,
packets that arrive alone (one per recv, the moderate-rate case), and an EOF, and check
that each PUBLISH comes out once, whole and in order. Each method IngestClient overrides
(`_sock_recv`, `_sock_close`, `_packet_read`, `_handle_on_message`) and each private one it
calls (`_packet_queue` by flush_acks, `_loop_rc_handle` by read_batch) has a test of its own
here; tests/ingest/test_paho.py checks their names and signatures in paho itself.
"""

from __future__ import annotations

import socket
import struct
import time
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
        self.sends = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

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


def test_sock_recv_serves_pahos_small_reads_from_one_recv(wired: Wired) -> None:
    client, theirs, _, sock = wired
    first, second = publish_packet("t/a", b"1"), publish_packet("t/b", b"22")
    theirs.sendall(first + second)
    # paho's incremental reader asks for 1 byte, then the length byte, then the rest
    assert client._sock_recv(1) == first[:1]
    assert client._sock_recv(1) == first[1:2]
    assert client._sock_recv(len(first) - 2) == first[2:]
    assert client.buffered
    assert client._sock_recv(4096) == second  # the rest of the buffer, no more
    assert sock.recvs == 1
    assert not client.buffered
    with pytest.raises(BlockingIOError):  # drained: as a non-blocking socket would say
        client._sock_recv(1)
    theirs.shutdown(socket.SHUT_WR)
    assert client._sock_recv(1) == b""  # EOF


def test_sock_close_drops_the_buffer_and_the_unsent_acks_of_the_connection(
    wired: Wired,
) -> None:
    client, theirs, got, sock = wired
    closed: list[object] = []
    client.on_socket_close = lambda _c, _ud, s: closed.append(s)
    theirs.sendall(publish_packet("t/a", b"1", 1, 7) + publish_packet("t/b", b"2", 1, 8))
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # one of two, framed
    client.ack(7, 1)
    assert client.buffered
    client._sock_close()
    assert client._sock is None
    assert closed == [sock]  # paho's own close ran: callback, then the socket closed
    assert sock.sock.fileno() == -1
    assert not client.buffered  # t/b belongs to the dead connection: the broker resends it
    client.flush_acks()  # nothing queued, no socket: a no-op, not an error
    assert client._acks == []
    assert got == [("t/a", b"1")]


def test_packet_read_refuses_a_malformed_packet_and_frames_the_next_one(wired: Wired) -> None:
    client, theirs, got, _ = wired
    # a PUBLISH of one byte: too short for its topic length
    theirs.sendall(b"\x30\x01\x00" + publish_packet("t/ok", b"1"))
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert client._in_packet["command"] == 0  # reset: the next packet starts clean
    assert client._in_packet["packet"] == bytearray()
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [("t/ok", b"1")]


def test_handle_on_message_skips_pahos_filters_and_on_message(wired: Wired) -> None:
    client, theirs, got, _ = wired
    paho_side: list[str] = []
    client.message_callback_add("t/#", lambda _c, _ud, m: paho_side.append(m.topic))
    client.on_message = lambda _c, _ud, m: paho_side.append(m.topic)
    theirs.sendall(publish_packet("t/a", b"1") + publish_packet("u/b", b"2", 1, 3))
    while client.read_batch(16):
        pass
    assert got == [("t/a", b"1"), ("u/b", b"2")]
    assert paho_side == []
    client.on_reading_message = None  # no reader set: messages are dropped, nothing raises
    theirs.sendall(publish_packet("t/c", b"3"))
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(got) == 2


def test_flush_acks_sends_the_batchs_pubacks_in_one_send_in_order(wired: Wired) -> None:
    client, theirs, got, sock = wired
    mids = [7, 8, 300]
    theirs.sendall(b"".join(publish_packet(f"t/{m}", b"v", 1, m) for m in mids))
    while client.read_batch(16):
        pass
    assert [t for t, _ in got] == [f"t/{m}" for m in mids]
    for mid in mids:
        assert client.ack(mid, 1) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert sock.sends == 0  # queued, not sent: the batch is not processed yet
    client.flush_acks()
    assert sock.sends == 1
    assert theirs.recv(4096) == b"".join(struct.pack("!BBH", 0x40, 2, m) for m in mids)
    client.flush_acks()  # nothing left
    assert sock.sends == 1


def test_read_batch_hands_a_lost_connection_to_pahos_rc_handling(wired: Wired) -> None:
    client, theirs, got, _ = wired
    lost: list[object] = []
    client.on_disconnect = lambda _c, _ud, _flags, rc, _props: lost.append(rc)
    theirs.sendall(publish_packet("t/last", b"v"))
    theirs.shutdown(socket.SHUT_WR)
    assert client.read_batch(16) is False
    assert got == [("t/last", b"v")]
    assert client._sock is None  # paho's _loop_rc_handle closed it
    assert len(lost) == 1
    assert client.read_batch(16) is False  # no socket: nothing to read, nothing raises


def test_a_batch_stops_at_its_deadline_and_says_more_waits(wired: Wired) -> None:
    """A readable event is bounded in time too (READ_BUDGET), so that HTTP and timers get
    the loop between batches of an alert storm; nothing is lost across the cut."""
    client, theirs, got, _ = wired
    theirs.sendall(b"".join(publish_packet(f"t/{i}", b"v") for i in range(100)))
    assert client.read_batch(512, deadline=0.0) is True  # long past: stops after 16
    assert len(got) == 16
    while client.read_batch(512, deadline=time.monotonic() + 60):
        pass
    assert [t for t, _ in got] == [f"t/{i}" for i in range(100)]
