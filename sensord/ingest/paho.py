"""paho-mqtt's internals, in one module: `IngestClient`, paho's Client with its own framing.

sensord uses paho's public API everywhere else (sensord/ingest/client.py drives this class
like any paho Client). Speed forced these overrides (CONVENTIONS.md habit 12; measured in
bench/README.md): one readable event reads up to a batch of packets instead of one, paho's
three recv() per packet are served from one buffered recv(), the PUBACKs of a batch leave
in one send() once every message of the batch has been processed, and messages skip paho's
per-message topic-filter match.

They are written for paho-mqtt 2.2 (pinned `>=2.2,<2.3` in pyproject.toml). Overridden:
`_sock_recv`, `_sock_close`, `_packet_read`, `_handle_on_message`; used: `_in_packet`,
`_packet_handle`, `_packet_queue`, `_loop_rc_handle`, `_sock`, `_last_bytes_received`.
tests/ingest/test_paho.py checks that each still exists with the signature relied on, and
tests/ingest/test_framing.py drives each override over a socketpair: an upgrade of paho
fails there, loudly, not in production.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

log = logging.getLogger("sensord.mqtt")

RECV_SIZE = 65536
_PUBACK = 0x40
_PUBACK_FMT = struct.Struct("!BBH")
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class IngestClient(mqtt.Client):
    """paho's Client with buffered reads, batched PUBACKs and no per-message filter match.

    Overrides four private paho 2.2 methods (`_sock_recv`, `_sock_close`, `_packet_read`,
    `_handle_on_message`) and uses `_in_packet`, `_packet_handle`, `_packet_queue`,
    `_loop_rc_handle`: see the module docstring for the tests that guard each.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._acks: list[int] = []
        self._quickack = _QUICKACK
        self.on_reading_message: Callable[[mqtt.MQTTMessage], None] | None = None

    def _fill(self) -> bytes:
        """One recv() into the (drained) buffer; BlockingIOError when nothing waits, b''
        at EOF."""
        buf = super()._sock_recv(RECV_SIZE)
        if buf:
            if self._quickack is not None:
                self._ack_now()
            self._rbuf, self._rpos = buf, 0
        return buf

    # paho reads a packet as recv(1), recv(1..4), recv(rest): serve them from one recv()
    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = self._fill()  # BlockingIOError when drained
            if not buf:
                return buf  # EOF
            pos = 0
        end = pos + bufsize
        self._rpos = end
        if pos == 0 and end >= len(buf):
            return buf
        return buf[pos:end]

    def _ack_now(self) -> None:
        # Re-armed after each read (Linux clears it): the broker's Nagle (Mosquitto's
        # default, `set_tcp_nodelay false`) holds its next small writes until our ACK, and
        # Linux delays that ACK up to 40 ms: under load, 40 ms on every alert (bench.latency)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)  # type: ignore[union-attr]
        except (OSError, AttributeError):
            self._quickack = None  # not a TCP socket

    def _sock_close(self) -> None:
        super()._sock_close()
        # bytes and acks of a dead connection must not leak into the next one: the broker
        # redelivers whatever was not acknowledged on it
        self._rbuf, self._rpos = b"", 0
        self._acks.clear()

    @property
    def buffered(self) -> bool:
        """Bytes already read from the socket but not yet parsed (invisible to epoll)."""
        return self._rpos < len(self._rbuf)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho matches every topic against message_callback_add filters (~10% of a drain,
        # bench/README.md); sensord registers none
        cb = self.on_reading_message
        if cb is not None:
            cb(message)

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """Queue a PUBACK; `flush_acks` sends the batch (MQTT keeps them in order)."""
        if qos == 1:
            self._acks.append(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super().ack(mid, qos)

    def flush_acks(self) -> None:
        if not self._acks or self._sock is None:
            return
        pack = _PUBACK_FMT.pack
        data = b"".join([pack(_PUBACK, 2, mid) for mid in self._acks])
        self._acks.clear()
        # one out-packet holding every PUBACK of the batch: one send() instead of one each
        self._packet_queue(_PUBACK, data, 0, 0)
        self.loop_write()

    def _packet_read(self) -> MQTTErrorCode:
        """Frame a packet straight out of the buffer when it is all there, else paho's way.

        Only the framing (fixed header, remaining length) is done here; paho's
        `_packet_handle` still decodes and handles the packet, as it would after its own
        three reads. A packet split across recv()s goes through paho's incremental reader.
        """
        if self._in_packet["command"]:
            return super()._packet_read()
        if self._rpos >= len(self._rbuf):
            # the buffer is drained: refill it here, so that a packet that arrived alone
            # (a moderate rate: one reading per wake-up) is framed from it too, not by
            # paho's three recv() calls
            try:
                if not self._fill():
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST  # EOF, as paho reports it
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                return super()._packet_read()  # paho logs the error, reports the loss
        buf, pos = self._rbuf, self._rpos
        end_buf = len(buf)
        i, mult, length = pos + 1, 1, 0
        while True:
            if i >= end_buf or i - pos > 4:  # length incomplete here (or malformed): paho
                return super()._packet_read()
            byte = buf[i]
            i += 1
            length += (byte & 127) * mult
            mult *= 128
            if not byte & 128:
                break
        end = i + length
        if end > end_buf:
            return super()._packet_read()
        self._rpos = end
        command = buf[pos]
        if command & 0xF0 == 0x30 and command & 0x06 != 0x04 and self._protocol != mqtt.MQTTv5:
            message = _decode_publish(command, buf, i, end)
            if message is not None:
                self._handle_on_message(message)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        packet = self._in_packet
        packet["command"] = command
        packet["remaining_length"] = length
        packet["packet"] = buf[i:end]  # type: ignore[typeddict-item]  # bytes: paho decodes both
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            log.debug("malformed MQTT packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        packet["command"] = 0
        packet["remaining_length"] = 0
        packet["packet"] = bytearray()
        return rc

    def read_batch(self, max_packets: int, deadline: float | None = None) -> bool:
        """Handle up to max_packets packets, and stop early once `time.monotonic()` passes
        `deadline` (checked every 16 packets); True if more may be waiting (socket or
        buffer)."""
        clock = time.monotonic
        try:
            for i in range(max_packets):
                if self._sock is None:
                    return False
                rc = self._packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return False
                if rc > 0:
                    self._loop_rc_handle(rc)
                    return False
                if deadline is not None and i & 15 == 15 and clock() > deadline:
                    return True
            return True
        finally:
            # paho's keepalive watches incoming bytes; once per batch is often enough
            self._last_bytes_received = time.monotonic()


def _decode_publish(command: int, buf: bytes, start: int, end: int) -> mqtt.MQTTMessage | None:
    """An MQTT 3.1.x PUBLISH at QoS 0 or 1 as paho's `_handle_publish` would build it, with
    none of its per-message work that sensord does not use (its debug log line and topic
    decoding for it, the decode result tuple, the exception wrapper): ~a third of paho's
    cost per message. None for anything unusual (an empty topic, a truncated packet):
    paho's own path decodes it and raises what it raises. QoS 2, MQTT 5 (properties) and
    every other packet go through paho unchanged. sensord acknowledges manually
    (`manual_ack=True`), so paho's QoS 1 branch would only have called
    `_handle_on_message` too."""
    if end - start < 3:
        return None
    tlen = buf[start] << 8 | buf[start + 1]
    p = start + 2 + tlen
    qos = command >> 1 & 3
    mid = 0
    if qos:
        if p + 2 > end:
            return None
        mid = buf[p] << 8 | buf[p + 1]
        p += 2
    if tlen == 0 or p > end:
        return None
    message = mqtt.MQTTMessage(mid, buf[start + 2 : start + 2 + tlen])
    message.qos = qos
    message.retain = bool(command & 1)
    message.dup = bool(command & 8)
    message.payload = buf[p:end]
    message.timestamp = time.monotonic()
    return message
