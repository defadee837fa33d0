"""MQTT ingest: paho-mqtt 2.x driven inside the asyncio loop (no thread hop per message).

Pattern of paho's examples/loop_asyncio.py and aiomqtt 2.x: paho's socket callbacks
register the socket with the loop's reader/writer; a 1 s task runs loop_misc (keepalive).
Each message is parsed to a Reading and handed to a synchronous sink; a QoS 1 message is
acknowledged only after the sink returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from sensord.config import MqttSettings
from sensord.errors import PayloadError
from sensord.events import Reading
from sensord.metrics import Metrics
from sensord.payload import TOPIC, PayloadParser
from sensord.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.mqtt")

ReadingSink = Callable[[Reading, float], None]

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


class MqttBridge:
    def __init__(self, settings: MqttSettings, sink: ReadingSink, metrics: Metrics) -> None:
        self.settings = settings
        self._sink = sink
        self._metrics = metrics
        self._parser = PayloadParser(settings.topic_template, settings.max_payload)
        self._invalid_log = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._misc_task: asyncio.Task[None] | None = None
        self._disconnected: asyncio.Event = asyncio.Event()
        self.connected = asyncio.Event()  # set while subscribed
        self._was_up = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=not s.persistent_session,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        username, password = s.credentials()
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

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
        self._loop.add_reader(sock, self.client.loop_read)
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
        self._was_up = True
        self._metrics.mqtt_connected.set(1)
        self.connected.set()
        log.info(
            "connected to MQTT %s as %r (session %s), subscribed to %s",
            self.settings.safe_url,
            self.settings.client_id,
            "resumed" if flags.session_present else "new",
            ", ".join(self.settings.topics),
        )

    def _on_disconnect(
        self, client: mqtt.Client, _ud: object, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._metrics.mqtt_connected.set(0)
        self.connected.clear()
        self._disconnected.set()

    def _on_message(self, client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                raise PayloadError(TOPIC, "topic is not valid UTF-8") from None
            reading = self._parser.parse(topic, bytes(msg.payload), now)
        except PayloadError as exc:
            self._metrics.count_invalid(exc.reason)
            self._invalid_log.warning(
                "refused MQTT message on %r: %s: %s",
                msg._topic[:200].decode("utf-8", "replace"),
                exc.reason,
                exc.detail,
            )
        else:
            self._metrics.readings += 1
            self._sink(reading, now)
        if msg.qos:
            client.ack(msg.mid, msg.qos)

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
                await self._loop.run_in_executor(
                    None, self.client.connect, s.host, s.port, s.keepalive
                )
            except OSError as exc:
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
