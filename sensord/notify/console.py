"""`console`: one line per notification on standard output."""

from __future__ import annotations

import sys
from typing import Literal, TextIO

from pydantic import field_validator

from sensord.events import AlertEvent
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import console_line, render
from sensord.notify.settings import ChannelSettingsBase, check_template


class ConsoleChannelSettings(ChannelSettingsBase):
    type: Literal["console"]
    template: str | None = None  # None: the built-in line (docs/channels.md)

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v)


class ConsoleChannel:
    def __init__(self, settings: ConsoleChannelSettings, stream: TextIO | None = None) -> None:
        self.name = settings.name
        self._template = settings.template
        self._stream = stream

    async def start(self) -> None:
        return None

    async def send(self, event: AlertEvent) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        if self._template is None:
            line = console_line(event)
        else:
            line = render(self._template, event, self.name)
        stream.write(line + "\n")
        stream.flush()

    async def close(self) -> None:
        return None


def _console(settings: ConsoleChannelSettings, context: ChannelContext) -> ConsoleChannel:
    return ConsoleChannel(settings, context.console)


register("console", ConsoleChannelSettings, _console)
