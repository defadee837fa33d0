"""WAL checkpoints off the event loop.

With `synchronous=NORMAL` a commit appends to the WAL without fsync; the fsyncs happen at
checkpoints, which SQLite runs by default inside the commit that crosses 1,000 WAL pages:
on the event loop, 3 to 30 ms every few hundred commits on these machines, enough to be an
alert's p99. sensord turns the automatic checkpoint off on its connection and runs a
PASSIVE checkpoint every second on a connection of its own in a worker thread (SQLite
does the I/O without the GIL), which never blocks the writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from sensord.ops.aio import first
from sensord.ops.ratelimit import RateLimitedLog

log = logging.getLogger("sensord.state")

INTERVAL = 1.0


class Checkpointer:
    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._conn: sqlite3.Connection | None = None  # one, kept: no allocation churn
        self._error_log = RateLimitedLog(log, interval=300.0, burst=1)

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, WAL frames, frames checkpointed)."""
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=5.0, check_same_thread=False
            )
        busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return int(busy), int(frames), int(done)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await first(stop.wait(), asyncio.sleep(self.interval))
                try:
                    await asyncio.to_thread(self.checkpoint)
                except sqlite3.Error as exc:
                    self._error_log.warning(
                        "cannot checkpoint the state file %s: %s", self.path, exc
                    )
        finally:
            self.close()
