"""`mqtt`: a JSON notification published to a topic template, optionally retained."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import field_validator

from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import render, rfc3339
from sensord.notify.settings import ChannelSettingsBase, check_template
from sensord.ops.settings import Duration


class MqttChannelSettings(ChannelSettingsBase):
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("password_file",)

    type: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic_template: str = "alerts/{site}/{device}"
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must be mqtt://host:port")
        return v

    @field_validator("topic_template")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        check_template(v)
        if "+" in v or "#" in v:
            raise ValueError("a topic to publish to cannot contain the wildcards + or #")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


def mqtt_payload(event: AlertEvent, channel: str) -> bytes:
    record = {"channel": channel, "notified_at": rfc3339(datetime.now(UTC))}
    record.update(event.model_dump(mode="json"))
    return json.dumps(record, separators=(",", ":")).encode()


class MqttChannel:
    """paho with its own network thread: notifications are few, the thread keeps it simple.

    With `retain`, each alert keeps its own retained message: the topic is the template
    plus `/<fingerprint>` unless the template already uses `{fingerprint}`; a resolution is
    published (not retained) and then the retained message is cleared with an empty one.
    """

    def __init__(self, settings: MqttChannelSettings, password_file: Path | None = None) -> None:
        self.name = settings.name
        self._s = settings
        self._password_file = password_file
        # unique by default: two notify processes with one client id would keep
        # disconnecting each other (MQTT session takeover)
        default_id = f"sensord-notify-{settings.name}-{uuid.uuid4().hex[:8]}"
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or default_id,
            clean_session=True,
        )

    def topic(self, event: AlertEvent) -> str:
        topic = render(self._s.topic_template, event, self.name)
        if self._s.retain and "{fingerprint}" not in self._s.topic_template:
            topic = f"{topic}/{event.fingerprint}"
        return topic

    async def start(self) -> None:
        if self._s.username is not None:
            password = None
            if self._password_file is not None:
                password = self._password_file.read_text().strip()
            self._client.username_pw_set(self._s.username, password)
        self._client.reconnect_delay_set(1, 30)
        # connect_async + loop_start: the thread keeps reconnecting while the broker is down
        self._client.connect_async(self._s.host, self._s.port, keepalive=30)
        self._client.loop_start()

    async def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self._s.qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise NotifyError(
                f"mqtt {self._s.host}:{self._s.port}: {mqtt.error_string(info.rc)}",
                retryable=True,
            )
        if self._s.qos == 0:
            return
        try:
            await asyncio.to_thread(info.wait_for_publish, self._s.timeout)
        except (RuntimeError, ValueError) as exc:
            raise NotifyError(f"mqtt publish to {topic}: {exc}", retryable=True) from exc
        if not info.is_published():
            raise NotifyError(f"mqtt publish to {topic}: not acknowledged", retryable=True)

    async def send(self, event: AlertEvent) -> None:
        topic = self.topic(event)
        payload = mqtt_payload(event, self.name)
        if self._s.retain and event.status == "resolved":
            await self._publish(topic, payload, retain=False)
            await self._publish(topic, b"", retain=True)  # clears the retained alert
        else:
            await self._publish(topic, payload, retain=self._s.retain)

    async def close(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)


def _mqtt(settings: MqttChannelSettings, context: ChannelContext) -> MqttChannel:
    return MqttChannel(settings, context.resolve_optional(settings.password_file))


register("mqtt", MqttChannelSettings, _mqtt)
