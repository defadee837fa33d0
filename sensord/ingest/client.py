"""MQTT ingest: paho-mqtt 2.x driven inside the asyncio loop (no thread hop per message).

Pattern of paho's examples/loop_asyncio.py and aiomqtt 2.x: paho's socket callbacks
register the socket with the loop's reader/writer; a 1 s task runs loop_misc (keepalive).
Each message is parsed to Readings and handed to a synchronous sink; a QoS 1 message is
acknowledged only after the sink returned.

paho stays in charge of the protocol; `IngestClient` (sensord/ingest/paho.py, the one
module that touches paho's internals) only changes how bytes move (measured
in bench/README.md): one loop pass reads up to READ_BATCH packets (or READ_BUDGET) instead
of one,
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
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.ingest.paho import IngestClient
from sensord.ingest.payload import TOPIC
from sensord.ingest.settings import IngestSettings, MqttSettings
from sensord.ingest.sources import NATIVE, Link, Router, Source, build_sources
from sensord.ops.metrics import Metrics
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.mqtt")

# (topic, device, kind): the duplicate guard's key. For a format whose readings are not
# named by their topic alone (a Tasmota board's two thermometers on one topic), the kind
# part carries the labels too: "temperature\x1fDS18B20" (`_on_message`)
SensorKey = tuple[str, str, str]
# (reading, receive time, key): the key only for a reading stamped by its sender, whose
# time identifies it; when it changes an alert the sink keeps that time with its key, in
# the transaction that records the change, and `remember` gives it back after a restart,
# so that the broker's redelivery of the reading is skipped
ReadingSink = Callable[[Reading, float, SensorKey | None], object]
LateSink = Callable[[Reading, float], object]  # a late reading: history only (docs/sources.md)
_SUBSCRIBE_CHUNK = 200  # filters per SUBSCRIBE packet (a discovery source may learn many)


BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# Packets handled per readable event before yielding to the loop: big enough to amortise
# the event-loop pass and the PUBACK send, small enough to keep HTTP and timers on time.
READ_BATCH = 512
# ... and read for at most this long (seconds) per loop pass, before the batch's commit: in
# an alert storm 512 readings took 0.2 s on a loaded host, and an HTTP request, which needs
# several loop passes, waited seconds behind them (bench.product: /metrics during the drain)
READ_BUDGET = 0.004


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
        on_late: LateSink | None = None,
    ) -> None:
        """`sink` takes each reading; `on_batch_end`, called after each read batch and
        before its QoS 1 messages are acknowledged, persists what the batch changed;
        `on_late` takes readings older than their sensor's newest (history, not rules)."""
        self.settings = settings
        self._on_batch_end = on_batch_end
        self._resume_pending = False  # a call_soon(_resume) is queued
        ingest = ingest if ingest is not None else IngestSettings()
        self._sink = sink
        self._metrics = metrics
        self._on_refused = on_refused
        self._on_late = on_late
        self.sources: list[Source] = build_sources(settings, ingest)
        self._router = Router(self.sources)
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its filters
        self._pending_subs = 0  # the connect's SUBSCRIBEs not yet acknowledged
        # sensor key -> (newest reading time processed, its value): redeliveries skip
        self._last_ts: dict[SensorKey, tuple[float, float | None]] = {}
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
        for src in self.sources:
            bind = getattr(src.format, "bind", None)
            if callable(bind):
                bind(Link(src, self._router, self._subscribe, self._unsubscribe, self._publish))

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
        if self._resume_pending:
            return  # the queued resume reads this: one MQTT batch per loop pass, not two
        self._read()

    def _read(self) -> None:
        client = self.client
        more = client.read_batch(READ_BATCH, time.monotonic() + READ_BUDGET)
        if self._on_batch_end is not None:
            self._on_batch_end()  # one commit for the batch, before any of it is acked
        client.flush_acks()  # after the batch: each of its readings has been processed
        if more or client.buffered:  # (never with a resume queued: see _on_readable)
            # bytes may sit in our buffer where epoll cannot see them: come back next pass.
            # One such call at a time: the socket's own readable event runs this too, and
            # each run used to queue one more, so that the loop's ready queue grew by one
            # callback per pass under a backlog and HTTP and timers waited seconds
            assert self._loop is not None
            self._resume_pending = True
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._resume_pending = False
        self._read()

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
        subs = self._router.subscriptions()
        self._subscribing.clear()
        self._pending_subs = 0
        for i in range(0, len(subs), _SUBSCRIBE_CHUNK):
            chunk = subs[i : i + _SUBSCRIBE_CHUNK]
            _rc, mid = client.subscribe(chunk)
            if mid is not None:
                self._subscribing[mid] = [f for f, _qos in chunk]
                self._pending_subs += 1
        self._session_present = bool(flags.session_present)

    # ---- a format's SourceLink (sources.Link) calls these

    def _subscribe(self, topic_filter: str, qos: int) -> None:
        if self.client.is_connected():  # else the next connect subscribes to it
            _rc, mid = self.client.subscribe(topic_filter, qos)
            if mid is not None:
                self._subscribing[mid] = [topic_filter]

    def _unsubscribe(self, topic_filter: str) -> None:
        if self.client.is_connected():
            self.client.unsubscribe(topic_filter)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self.client.is_connected():  # a request to a device: worthless once stale
            self.client.publish(topic, payload, qos, retain)

    def _on_subscribe(
        self, client: mqtt.Client, _ud: object, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        filters = self._subscribing.pop(mid, [])
        failed = [t for t, rc in zip(filters, rcs, strict=False) if rc.is_failure]
        if failed:
            log.error("MQTT broker refused the subscription to %s", ", ".join(failed))
        if self._pending_subs == 0 or len(filters) == 0:
            return  # a learned topic's SUBACK, or one this connection did not send
        self._pending_subs -= 1
        if self._pending_subs:
            return
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
            ", ".join(f"{t} ({src.name})" for src in self.sources for t in src.filters),
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
        source: Source | None = None
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                raise PayloadError(TOPIC, "topic is not valid UTF-8") from None
            source = self._router.single or self._router.route(topic)
            if source is None:
                raise PayloadError(TOPIC, f"topic {topic!r} matches no source's topics")
            source.messages += 1
            readings = source.parse(topic, msg.payload, now)
        except PayloadError as exc:
            self._refuse(msg, exc, source)
        else:
            last_ts = self._last_ts
            accepted = 0
            labelled = source.labelled
            for reading in readings:
                ts = reading.ts
                # a reading stamped with the receive time carries no identity to compare
                if ts != now and self._dedup_max:
                    labels = reading.labels
                    key = (
                        (topic, reading.device, "\x1f".join((reading.kind, *labels.values())))
                        if labelled and labels
                        else (topic, reading.device, reading.kind)
                    )
                    last = last_ts.get(key)
                    if last is not None and ts <= last[0]:
                        if ts == last[0] and (last[1] is None or last[1] == reading.value):
                            metrics.duplicates += 1  # the same reading again: a redelivery
                        else:  # older than its sensor's newest: late, never moves an alert
                            metrics.late += 1
                            if self._on_late is not None:
                                self._on_late(reading, now)
                        continue
                    if last is None and len(last_ts) >= self._dedup_max:
                        del last_ts[next(iter(last_ts))]  # bounded: forget the oldest sensor
                    last_ts[key] = (ts, reading.value)
                    accepted += 1
                    self._sink(reading, now, key)
                else:
                    accepted += 1
                    self._sink(reading, now, None)
            if readings:
                source.note_devices(readings)
            metrics.readings += accepted
            source.readings += accepted
        metrics.messages += 1  # last: once it moved, the message is fully accounted for
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def remember(self, seen: dict[SensorKey, float]) -> None:
        """Before connecting: reading times from a previous run (see ReadingSink), so that
        a redelivery of a reading that changed an alert is skipped after a restart as
        within a run (and an older one counted late)."""
        if self._dedup_max:
            for key, ts in seen.items():
                last = self._last_ts.get(key)
                if last is None or ts > last[0]:
                    self._last_ts[key] = (ts, None)

    def _refuse(self, msg: mqtt.MQTTMessage, exc: PayloadError, source: Source | None) -> None:
        self._metrics.count_invalid(exc.reason)
        if source is not None:
            source.refused += 1
            if source.name != NATIVE:  # name the source in the log and the quarantine
                exc = PayloadError(exc.reason, f"source {source.name}: {exc.detail}")
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
