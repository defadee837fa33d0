"""MQTT ingest: paho-mqtt 2.x driven inside the asyncio loop (no thread hop per message).

Pattern of paho's examples/loop_asyncio.py and aiomqtt 2.x: paho's socket callbacks
register the socket with the loop's reader/writer; a 1 s task runs loop_misc (keepalive).
Each message is parsed to Readings and handed to a synchronous sink; a QoS 1 message is
acknowledged only after the sink returned.

paho stays in charge of the protocol; `IngestClient` only changes how bytes move (measured
in bench/README.md): one readable event reads up to READ_BATCH packets instead of one,
paho's three recv() per packet are served from one buffered recv(), and the PUBACKs of a
batch leave in one send() once every message of the batch has been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.payload import TOPIC, PayloadParser
from sensord.ingest.settings import IngestSettings, MqttSettings
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.mqtt")

SensorKey = tuple[str, str, str]  # (topic, device, kind): the duplicate guard's key
# (reading, receive time, topic): the topic only for a reading stamped by its sender, whose
# time identifies it; when it changes an alert the sink keeps that time with its key, in
# the transaction that records the change, and `remember` gives it back after a restart,
# so that the broker's redelivery of the reading is skipped
ReadingSink = Callable[[Reading, float, str | None], object]

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# Packets handled per readable event before yielding to the loop: big enough to amortise
# the event-loop pass and the PUBACK send, small enough to keep HTTP and timers on time.
READ_BATCH = 512
RECV_SIZE = 65536
_PUBACK = 0x40
_PUBACK_FMT = struct.Struct("!BBH")
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class IngestClient(mqtt.Client):
    """paho's Client with buffered reads, batched PUBACKs and no per-message filter match.

    Overrides four private paho 2.2 methods (`_sock_recv`, `_sock_close`, `_packet_read`,
    `_handle_on_message`) and uses `_in_packet`, `_packet_handle`, `_packet_queue`,
    `_loop_rc_handle`;
    the real-broker tests run through all of them, so an incompatible paho fails there.
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
        packet = self._in_packet
        packet["command"] = buf[pos]
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

    def read_batch(self, max_packets: int) -> bool:
        """Handle up to max_packets packets; True if more may be waiting (socket or buffer)."""
        try:
            for _ in range(max_packets):
                if self._sock is None:
                    return False
                rc = self._packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return False
                if rc > 0:
                    self._loop_rc_handle(rc)
                    return False
            return True
        finally:
            # paho's keepalive watches incoming bytes; once per batch is often enough
            self._last_bytes_received = time.monotonic()


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho drops the socket of a failed TLS handshake without closing it: close it here."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(s: MqttSettings) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (else the system CAs); present a client cert."""
    ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
    if s.cert_file is not None and s.key_file is not None:
        ctx.load_cert_chain(str(s.cert_file), str(s.key_file))
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


RefusalSink = Callable[[bytes, bytes, str, str], None]  # topic, payload, reason, detail


class MqttBridge:
    def __init__(
        self,
        settings: MqttSettings,
        sink: ReadingSink,
        metrics: Metrics,
        *,
        ingest: IngestSettings | None = None,
        on_refused: RefusalSink | None = None,
        on_batch_end: Callable[[], object] | None = None,
    ) -> None:
        """`sink` takes each reading; `on_batch_end`, called after each read batch and
        before its QoS 1 messages are acknowledged, persists what the batch changed."""
        self.settings = settings
        self._on_batch_end = on_batch_end
        ingest = ingest if ingest is not None else IngestSettings()
        self._sink = sink
        self._metrics = metrics
        self._on_refused = on_refused
        self._parser = PayloadParser(
            settings.templates,
            settings.max_payload,
            units=ingest.units,
            max_clock_skew=ingest.max_clock_skew,
        )
        # (topic, device, kind) -> newest reading time processed: QoS 1 redeliveries skip
        self._last_ts: dict[SensorKey, float] = {}
        self._dedup_max = ingest.dedup_sensors
        self._invalid_log = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._misc_task: asyncio.Task[None] | None = None
        self._disconnected: asyncio.Event = asyncio.Event()
        self.connected = asyncio.Event()  # set while subscribed
        self._was_up = False
        self._session_present = False
        self.client = self._make_client()

    def _make_client(self) -> IngestClient:
        s = self.settings
        v5 = s.protocol == "5"
        client = IngestClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            # MQTT 5 has no clean_session: clean_start goes with connect()
            clean_session=None if v5 else not s.persistent_session,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        username, password = s.credentials()
        if username is not None:
            client.username_pw_set(username, password)
        if s.tls:
            client.tls_set_context(tls_context(s))
            client.tls_insecure_set(s.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_reading_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _connect(self) -> None:
        """Blocking connect (TCP, TLS handshake, CONNECT sent): runs in an executor thread."""
        s = self.settings
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            if s.persistent_session:
                props.SessionExpiryInterval = int(s.session_expiry)
            self.client.connect(
                s.host,
                s.port,
                s.keepalive,
                clean_start=not s.persistent_session,
                properties=props,
            )
        else:
            self.client.connect(s.host, s.port, s.keepalive)

    # ---- paho socket callbacks: may run in the connect thread, so hop only when needed

    def _in_loop(self, fn: Callable[..., object], *args: Any) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, _ud: object, sock: Any) -> None:
        self._in_loop(self._attach, sock)

    def _attach(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._on_readable)
        if self._misc_task is None or self._misc_task.done():
            self._misc_task = self._loop.create_task(self._misc_loop(), name="mqtt-misc")

    def _on_socket_close(self, client: mqtt.Client, _ud: object, sock: Any) -> None:
        self._in_loop(self._detach, sock)

    def _detach(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _on_register_write(self, client: mqtt.Client, _ud: object, sock: Any) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._loop.add_writer(sock, client.loop_write)
        else:
            self._loop.call_soon_threadsafe(self._loop.add_writer, sock, client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, _ud: object, sock: Any) -> None:
        self._in_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _on_readable(self) -> None:
        client = self.client
        more = client.read_batch(READ_BATCH)
        if self._on_batch_end is not None:
            self._on_batch_end()  # one commit for the batch, before any of it is acked
        client.flush_acks()  # after the batch: each of its readings has been processed
        if more or client.buffered:
            # bytes may sit in our buffer where epoll cannot see them: come back next pass
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)

    async def _misc_loop(self) -> None:
        # paho's keepalive and retry timers need a call about once a second
        while self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1.0)

    # ---- protocol callbacks (event loop thread)

    def _on_connect(
        self, client: mqtt.Client, _ud: object, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.settings.safe_url, rc)
            return
        client.subscribe([(t, int(self.settings.qos)) for t in self.settings.topics])
        self._session_present = bool(flags.session_present)

    def _on_subscribe(
        self, client: mqtt.Client, _ud: object, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        failed = [t for t, rc in zip(self.settings.topics, rcs, strict=False) if rc.is_failure]
        if failed:
            log.error("MQTT broker refused the subscription to %s", ", ".join(failed))
        # ready only now: a reading published before the SUBACK may not be routed to us
        self._was_up = True
        self._metrics.mqtt_connected.set(1)
        self.connected.set()
        log.info(
            "connected to MQTT %s as %r (MQTT %s, session %s), subscribed to %s",
            self.settings.safe_url,
            self.settings.client_id,
            self.settings.protocol,
            "resumed" if self._session_present else "new",
            ", ".join(self.settings.topics),
        )

    def _on_disconnect(
        self, client: mqtt.Client, _ud: object, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._metrics.mqtt_connected.set(0)
        self.connected.clear()
        self._disconnected.set()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        metrics = self._metrics
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                raise PayloadError(TOPIC, "topic is not valid UTF-8") from None
            readings = self._parser.parse(topic, msg.payload, now)
        except PayloadError as exc:
            self._refuse(msg, exc)
        else:
            last_ts = self._last_ts
            for reading in readings:
                ts = reading.ts
                # a reading stamped with the receive time carries no identity to compare
                if ts != now and self._dedup_max:
                    key = (topic, reading.device, reading.kind)
                    last = last_ts.get(key)
                    if last is not None and ts <= last:
                        metrics.duplicates += 1
                        continue
                    if last is None and len(last_ts) >= self._dedup_max:
                        del last_ts[next(iter(last_ts))]  # bounded: forget the oldest sensor
                    last_ts[key] = ts
                metrics.readings += 1
                self._sink(reading, now, topic if ts != now else None)
        metrics.messages += 1  # last: once it moved, the message is fully accounted for
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def remember(self, seen: dict[SensorKey, float]) -> None:
        """Before connecting: reading times from a previous run (see ReadingSink), so that
        a redelivery of a reading that changed an alert, or of an older one, is skipped
        after a restart as within a run."""
        if self._dedup_max:
            for key, ts in seen.items():
                if ts > self._last_ts.get(key, float("-inf")):
                    self._last_ts[key] = ts

    def _refuse(self, msg: mqtt.MQTTMessage, exc: PayloadError) -> None:
        self._metrics.count_invalid(exc.reason)
        raw_topic: bytes = msg._topic  # the undecoded topic, even when not UTF-8
        self._invalid_log.warning(
            "refused MQTT message on %r: %s: %s",
            raw_topic[:200].decode("utf-8", "replace"),
            exc.reason,
            exc.detail,
        )
        if self._on_refused is not None:
            self._on_refused(raw_topic, bytes(msg.payload), exc.reason, exc.detail)

    # ---- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, and reconnect forever with capped, jittered backoff, until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        s = self.settings
        backoff = BACKOFF_START
        failures = 0
        while not stop.is_set():
            self._disconnected.clear()
            self._was_up = False
            try:
                await self._loop.run_in_executor(None, self._connect)
            except (OSError, ssl.SSLError, ValueError) as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "MQTT broker %s unreachable (%s); retrying (attempt %d)",
                        s.safe_url,
                        exc,
                        failures,
                    )
                delay = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, BACKOFF_MAX)
                await _wait_any(stop, delay)
                continue
            stop_wait = asyncio.ensure_future(stop.wait())
            disc_wait = asyncio.ensure_future(self._disconnected.wait())
            await asyncio.wait({stop_wait, disc_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            disc_wait.cancel()
            if stop.is_set():
                break
            if self._was_up:  # a session that worked: retry soon
                backoff = BACKOFF_START
                failures = 0
            log.warning("lost the MQTT connection to %s; reconnecting", s.safe_url)
            await _wait_any(stop, backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX)
        await self.close()

    async def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()
            await _wait_any(self._disconnected, 2.0)
        if self._misc_task is not None:
            self._misc_task.cancel()
        sock = self.client.socket()
        if sock is not None and self._loop is not None:
            self._detach(sock)  # type: ignore[arg-type]
        self._metrics.mqtt_connected.set(0)


async def _wait_any(event: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, returning early when the event is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
