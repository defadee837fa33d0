"""`file`: one JSON line per notification, appended to a file."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from sensord.errors import NotifyError
from sensord.events import AlertEvent
from sensord.notify.registry import ChannelContext, register
from sensord.notify.render import rfc3339
from sensord.notify.settings import ChannelSettingsBase


class FileChannelSettings(ChannelSettingsBase):
    type: Literal["file"]
    path: Path
    fsync: bool = False


def file_line(event: AlertEvent, channel: str, now: datetime) -> bytes:
    record = {"channel": channel, "notified_at": rfc3339(now), **event.model_dump(mode="json")}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class FileChannel:
    def __init__(self, settings: FileChannelSettings, path: Path) -> None:
        self.name = settings.name
        self.path = path
        self._fsync = settings.fsync
        self._file: BinaryIO | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    async def send(self, event: AlertEvent) -> None:
        assert self._file is not None, "start() first"
        line = file_line(event, self.name, datetime.now(UTC))
        async with self._lock:  # one whole line per write, even with prefetch > 1
            try:
                self._file.write(line)
                self._file.flush()
                if self._fsync:
                    await asyncio.to_thread(os.fsync, self._file.fileno())
            except OSError as exc:  # a full disk may come back: retry
                raise NotifyError(f"{self.path}: {exc.strerror}", retryable=True) from exc

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _file(settings: FileChannelSettings, context: ChannelContext) -> FileChannel:
    return FileChannel(settings, context.resolve(settings.path))


register("file", FileChannelSettings, _file)
