"""The leanest Python QoS 1 receiver: a reference for bench.ceiling, not a part of sensord.

`python bench/bare_client.py PORT CLIENT_ID N MODE`: connects with clean session off
(the session and its subscription exist already, made by `mosquitto_sub -c -E`), reads
PUBLISH packets straight off the socket, acknowledges each (one write per read), and exits
after N, printing how many PUBLISHes it counted. MODE `frames`: framing and PUBACKs
only; `json`: also `json.loads` of every payload, the least any reader of JSON readings
does. Standard library only, imported
lazily by nothing: its start-up is Python's own.
"""

import json
import socket
import sys
from collections.abc import Callable


def connect(port: int, client_id: str) -> socket.socket:
    """MQTT 3.1.1 CONNECT, clean session off (flags 0), keepalive 60 s; CONNACK is read
    by `drain` with the first messages."""
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x00\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"\x10" + bytes([len(var)]) + var)
    return sock


def drain(
    sock: socket.socket, total: int, loads: Callable[[bytes], object] | None
) -> tuple[int, bytes]:
    """Read until `total` PUBLISHes arrived, acknowledging each: (how many were counted,
    what is left unparsed)."""
    buf = b""
    seen = 0
    while seen < total:
        data = sock.recv(1 << 20)
        if not data:
            raise SystemExit(f"broker closed the connection after {seen} messages")
        buf += data
        pos, end = 0, len(buf)
        acks = []
        while pos + 2 <= end:
            first = buf[pos]
            # remaining length: up to 4 bytes, 7 bits each. Inlined on purpose, as in
            # simulators/wire.py: this file imports nothing of the project (its start-up
            # is Python's own) and a call per message would be most of its cost
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            if length < 0 or i + length > end:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                tlen = (buf[i] << 8) | buf[i + 1]
                start = i + 2 + tlen
                if first & 0x06:  # QoS 1 or 2: a packet id follows the topic
                    acks.append(b"\x40\x02" + buf[start : start + 2])
                    start += 2
                if loads is not None:
                    loads(buf[start : i + length])
                seen += 1
            elif kind == 2 and buf[i + 1] != 0:  # CONNACK, refused
                raise SystemExit(f"broker refused the connection: {buf[i + 1]}")
            pos = i + length
        buf = buf[pos:]
        if acks:
            sock.sendall(b"".join(acks))
    return seen, buf


def leave(sock: socket.socket, buf: bytes) -> None:
    """The broker reads its input in order: its PINGRESP says it has taken every PUBACK
    sent before, so the session is left with nothing unacknowledged (as mosquitto_sub -C
    leaves it). The backlog is exactly N messages: nothing but the PINGRESP comes now."""
    sock.sendall(b"\xc0\x00")
    while not buf.endswith(b"\xd0\x00"):
        data = sock.recv(1 << 20)
        if not data:
            raise SystemExit("broker closed the connection before PINGRESP")
        buf += data
    sock.sendall(b"\xe0\x00")
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(1 << 16):
        pass
    sock.close()


def main() -> None:
    port, client_id, total, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sock = connect(port, client_id)
    seen, rest = drain(sock, total, json.loads if mode == "json" else None)
    leave(sock, rest)
    print(seen)


if __name__ == "__main__":
    main()
