"""The channel for each `[[channels]]` type."""

from __future__ import annotations

from typing import TextIO

from sensord.notify.alertmanager import AlertmanagerChannel
from sensord.notify.base import NotificationChannel
from sensord.notify.console import ConsoleChannel
from sensord.notify.email import EmailChannel
from sensord.notify.file import FileChannel
from sensord.notify.mqtt import MqttChannel
from sensord.notify.webhook import SlackChannel, WebhookChannel
from sensord.ops.config import (
    AlertmanagerChannelSettings,
    ChannelSettings,
    ConsoleChannelSettings,
    EmailChannelSettings,
    FileChannelSettings,
    MqttChannelSettings,
    Settings,
    SlackChannelSettings,
    WebhookChannelSettings,
)


def make_channel(
    ch: ChannelSettings, settings: Settings, external_url: str, console: TextIO | None = None
) -> NotificationChannel:
    """The channel for one `[[channels]]` entry; relative paths resolve against the config."""
    if isinstance(ch, ConsoleChannelSettings):
        return ConsoleChannel(ch, console)
    if isinstance(ch, FileChannelSettings):
        return FileChannel(ch, settings.resolve(ch.path))
    if isinstance(ch, WebhookChannelSettings):
        secret = settings.resolve(ch.hmac_secret_file) if ch.hmac_secret_file else None
        return WebhookChannel(ch, external_url, secret)
    if isinstance(ch, SlackChannelSettings):
        return SlackChannel(ch)
    if isinstance(ch, MqttChannelSettings):
        password = settings.resolve(ch.password_file) if ch.password_file else None
        return MqttChannel(ch, password)
    if isinstance(ch, EmailChannelSettings):
        password = settings.resolve(ch.password_file) if ch.password_file else None
        ca_file = settings.resolve(ch.ca_file) if ch.ca_file else None
        return EmailChannel(ch, password, ca_file)
    if isinstance(ch, AlertmanagerChannelSettings):
        return AlertmanagerChannel(ch)
    raise AssertionError(f"unknown channel type {ch!r}")  # the union is exhaustive
