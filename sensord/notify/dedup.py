"""Idempotent notification: a persistent record of the event ids each channel handled.

RabbitMQ delivers at least once: a consumer that notified and then died before its ack
gets the message again. Channels check `seen()` before sending and `record()` after, so
a redelivered event is acknowledged without a second notification. Entries older than
`keep` seconds are pruned (a redelivery comes within minutes, not days).
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_events (
    channel  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (channel, event_id)
) WITHOUT ROWID
"""


class HandledEvents:
    def __init__(self, conn: sqlite3.Connection, keep: float = 7 * 86400.0) -> None:
        self.conn = conn
        self.keep = keep
        conn.execute(SCHEMA)
        conn.execute("CREATE INDEX IF NOT EXISTS handled_events_at ON handled_events (at)")
        self._last_prune = 0.0

    def seen(self, channel: str, event_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM handled_events WHERE channel = ? AND event_id = ?", (channel, event_id)
        ).fetchone()
        return row is not None

    def record(self, channel: str, event_id: str, now: float | None = None) -> None:
        at = now if now is not None else time.time()
        self.conn.execute(
            "INSERT OR REPLACE INTO handled_events (channel, event_id, at) VALUES (?, ?, ?)",
            (channel, event_id, at),
        )
        if at - self._last_prune > 3600:
            self.prune(at)

    def prune(self, now: float | None = None) -> int:
        at = now if now is not None else time.time()
        self._last_prune = at
        cur = self.conn.execute("DELETE FROM handled_events WHERE at < ?", (at - self.keep,))
        return cur.rowcount
