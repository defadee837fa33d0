"""The load: N temperature readings as pre-encoded MQTT PUBLISH packets, and the publisher.

The publisher runs as its own process (`python -m bench.load ...`) so that it never
shares the GIL with the in-process sensord receiver. It writes packets built in advance
straight to a socket, because the alternatives measured slower or lossy on this machine
(100k ~51-byte payloads, README.md): `mosquitto_pub -l -q 1` exited with status 0 after
only ~34.5k of 100k had reached the broker, and a `-l` process publishes to a single
topic; paho with 1000 QoS 1 publishes in flight managed ~3-6k msgs/s; this writer
~35-60k msgs/s at QoS 1 (window 1000) and ~170k msgs/s at QoS 0.

Protocol with the parent: the child connects, prints `ready`, waits for a line on stdin,
publishes everything (QoS 1: at most `window` unacknowledged), disconnects, and prints
one JSON line `{"sent": n, "seconds": s}`.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence

from bench.broker import MAX_PACKET_ID

TOPIC_ROOT = "bench"
TOPIC_FILTER = f"{TOPIC_ROOT}/#"
TOPIC_TEMPLATE = f"{TOPIC_ROOT}/{{site}}/{{device}}/{{kind}}"
BASE_TS_MS = 1_764_331_200_123

CONNACK_OK = b"\x20\x02"
PUBACK = 0x40
DISCONNECT = b"\xe0\x00"


def topic(i: int) -> str:
    return f"{TOPIC_ROOT}/plant-{i % 10}/t-{i % 100}/temperature"


def payload(i: int) -> bytes:
    """`{"value": 21.53, "ts": 1764331200123, "unit": "C"}`: 20.00..26.99 °C, never alerting."""
    value = 20 + (i * 37 % 700) / 100
    return f'{{"value": {value:.2f}, "ts": {BASE_TS_MS + i}, "unit": "C"}}'.encode()


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    cid = client_id.encode()
    # MQTT 3.1.1, clean session
    body = b"\x00\x04MQTT\x04\x02" + struct.pack("!HH", keepalive, len(cid)) + cid
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic_name: str, body: bytes, qos: int, packet_id: int) -> bytes:
    name = topic_name.encode()
    header = struct.pack("!H", len(name)) + name
    if qos:
        header += struct.pack("!H", packet_id)
    return bytes([0x30 | qos << 1]) + remaining_length(len(header) + len(body)) + header + body


def build_packets(messages: int, qos: int) -> list[bytes]:
    # packet ids cycle through 1..65535; the window keeps far fewer than that unacked
    return [
        publish_packet(topic(i), payload(i), qos, i % MAX_PACKET_ID + 1) for i in range(messages)
    ]


def mean_payload_bytes(messages: int) -> float:
    sample = range(0, messages, max(1, messages // 1000))
    return sum(len(payload(i)) for i in sample) / len(sample)


class RawPublisher:
    """Just enough MQTT 3.1.1 to publish: CONNECT, PUBLISH (QoS 0/1), PUBACK, DISCONNECT."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=30.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        connack = self._recv_exactly(4)
        if connack[:2] != CONNACK_OK or connack[3] != 0:
            msg = f"broker refused the connection: CONNACK {connack.hex()}"
            raise ConnectionError(msg)

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def publish_qos0(self, packets: Sequence[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def publish_qos1(self, packets: Sequence[bytes], window: int) -> None:
        """Keep at most `window` publishes unacknowledged; each PUBACK is 4 bytes."""
        if not 1 <= window <= MAX_PACKET_ID:
            msg = f"window must be within 1..{MAX_PACKET_ID}, got {window}"
            raise ValueError(msg)
        total = len(packets)
        sent = acked = 0
        pending = b""
        while acked < total:
            if sent < total and sent - acked < window // 2 + 1:
                upto = min(total, acked + window)
                self.sock.sendall(b"".join(packets[sent:upto]))
                sent = upto
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"broker closed the connection after {acked} PUBACKs")
            pending += data
            whole = len(pending) // 4 * 4
            for k in range(0, whole, 4):
                if pending[k] != PUBACK or pending[k + 1] != 2:
                    msg = f"expected a PUBACK, got {pending[k : k + 4].hex()}"
                    raise ConnectionError(msg)
            acked += whole // 4
            pending = pending[whole:]

    def close(self) -> None:
        try:
            self.sock.sendall(DISCONNECT)
        finally:
            self.sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), required=True)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--client-id", default="bench-pub")
    args = parser.parse_args(argv)

    packets = build_packets(args.messages, args.qos)
    pub = RawPublisher(args.port, args.client_id)
    print("ready", flush=True)
    if not sys.stdin.readline():
        pub.close()
        return 1  # the parent went away
    start = time.perf_counter()
    if args.qos:
        pub.publish_qos1(packets, args.window)
    else:
        pub.publish_qos0(packets)
    seconds = time.perf_counter() - start
    pub.close()
    print(json.dumps({"sent": len(packets), "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
