"""The paho side: broker URL, connection, and publishes bounded by acknowledgements."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_PORT = 1883
MAX_INFLIGHT_LIMIT = 65_535
"""paho's packet ids are 16-bit: more QoS 1 publishes than this in flight wrap them."""


class SimulatorError(Exception):
    """Root of the simulator's errors; the message is meant for the user."""


class BrokerUrlError(SimulatorError):
    """The ``--mqtt`` URL cannot be used."""


class BrokerUnavailableError(SimulatorError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where and as whom to connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        # Shown in messages and progress, so the password never appears.
        user = ""
        if self.username is not None:
            user = urllib.parse.quote(self.username, safe="")
            user += ":***@" if self.password is not None else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{user}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt://[user[:pass]@]host[:port]``; raise `BrokerUrlError` naming the URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"invalid MQTT URL {url!r}: {exc}"
        raise BrokerUrlError(msg) from exc
    if parts.scheme == "mqtts":
        msg = f"{url!r}: mqtts:// (TLS) is not supported yet; use mqtt://"
        raise BrokerUrlError(msg)
    if parts.scheme != "mqtt":
        msg = f"invalid MQTT URL {url!r}: the scheme must be mqtt://"
        raise BrokerUrlError(msg)
    if not parts.hostname:
        msg = f"invalid MQTT URL {url!r}: no host"
        raise BrokerUrlError(msg)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        msg = f"invalid MQTT URL {url!r}: unexpected path, query or fragment"
        raise BrokerUrlError(msg)
    unquote = urllib.parse.unquote
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class MqttPublisher:
    """One paho client on its own network thread (``loop_start``).

    Every accepted publish stays *pending* until paho reports it done: the PUBACK for
    QoS 1, the socket write for QoS 0. ``room()`` tells the caller how many more it may
    publish without exceeding ``max_inflight``; ``wait()`` blocks on the oldest pending
    one instead of spinning. Outcomes are counted in ``sent`` (confirmed) and ``errors``
    (refused by paho, or lost with the connection).
    """

    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str,
        qos: int = 1,
        max_inflight: int = 1000,
        keepalive: int = 30,
    ) -> None:
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            msg = f"max_inflight must be within 1..{MAX_INFLIGHT_LIMIT}, got {max_inflight}"
            raise ValueError(msg)
        self.url = url
        self.qos = qos
        self.max_inflight = max_inflight
        self.sent = 0
        self.errors = 0
        self.connected = False
        self._keepalive = keepalive
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()
        self._connack = threading.Event()
        self._refused: str | None = None
        self._started = False

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        # No paho window (0): we bound in-flight ourselves. paho's default of 20 would throttle
        # QoS 1, and any window makes paho rescan every outstanding message on each PUBACK.
        client.max_inflight_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client

    # Callbacks run on paho's network thread: they only set flags and an Event.
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        else:
            self.connected = True
        self._connack.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False

    def connect(self, timeout: float = 10.0, cancelled: Callable[[], bool] | None = None) -> None:
        """Connect and wait for the CONNACK; raise `BrokerUnavailableError` naming the URL.

        Returns early, unconnected, once ``cancelled()`` is true (a stop signal).
        """
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=self._keepalive)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            msg = f"cannot connect to MQTT broker {self.url}: {reason}"
            raise BrokerUnavailableError(msg) from exc
        self._client.loop_start()
        self._started = True
        deadline = time.monotonic() + timeout
        # Short waits so that a stop signal is noticed while the broker is slow to answer.
        while not self._connack.wait(0.2):
            if cancelled is not None and cancelled():
                return
            if time.monotonic() >= deadline:
                self.close()
                msg = f"MQTT broker {self.url} did not answer CONNECT within {timeout:g} s"
                raise BrokerUnavailableError(msg)
        if self._refused is not None:
            self.close()
            msg = f"MQTT broker {self.url} refused the connection: {self._refused}"
            raise BrokerUnavailableError(msg)

    @property
    def in_flight(self) -> int:
        """Publishes handed to paho and not yet confirmed."""
        return len(self._pending)

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand one message to paho without blocking; call only when ``room()`` allows."""
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._pending.append(info)
        elif info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0:
            # paho keeps QoS>0 messages while disconnected and sends them after reconnecting,
            # so NO_CONN only means "not sent yet"; left as is it makes is_published() raise.
            info.rc = mqtt.MQTT_ERR_SUCCESS
            self._pending.append(info)
        else:
            self.errors += 1

    def settle(self) -> None:
        """Count the oldest pending publishes that paho has finished with."""
        pending = self._pending
        while pending:
            try:
                if not pending[0].is_published():
                    break
            except RuntimeError:
                # A QoS 0 packet still queued when the connection dropped (rc CONN_LOST).
                self.errors += 1
            else:
                self.sent += 1
            pending.popleft()

    def room(self) -> int:
        """How many more messages may be published now."""
        self.settle()
        return self.max_inflight - len(self._pending)

    def wait(self, timeout: float) -> None:
        """Block until the oldest pending publish completes, or ``timeout`` seconds."""
        if not self._pending:
            return
        # RuntimeError: lost with the connection, which settle() counts.
        with contextlib.suppress(RuntimeError):
            self._pending[0].wait_for_publish(timeout)
        self.settle()

    def abandon(self) -> None:
        """Count every publish still unconfirmed as an error (used once, at shutdown)."""
        self.settle()
        self.errors += len(self._pending)
        self._pending.clear()

    def close(self) -> None:
        """Disconnect and stop the network thread; safe to call more than once."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
