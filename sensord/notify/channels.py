"""The channel for each `[[channels]]` entry, built by the factory its type registered."""

from __future__ import annotations

from typing import TextIO

import sensord.notify.builtin  # noqa: F401 - registers the built-in channel types
from sensord.notify.base import NotificationChannel
from sensord.notify.registry import ChannelContext, ChannelSettings, build_channel
from sensord.ops.config import Settings


def make_channel(
    ch: ChannelSettings, settings: Settings, external_url: str, console: TextIO | None = None
) -> NotificationChannel:
    """The channel for one `[[channels]]` entry; relative paths resolve against the config."""
    return build_channel(ch, ChannelContext(settings.resolve, external_url, console))
