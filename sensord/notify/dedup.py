"""Idempotent notification: a persistent record of the event ids each channel handled.

RabbitMQ delivers at least once: a consumer that notified and then died before its ack
gets the message again. Channels check `seen()` before sending and `record()` after, so
a redelivered event is acknowledged without a second notification. Entries older than
`keep` seconds are pruned (a redelivery comes within minutes, not days).

Notify workers that share the state file (one host, docs/scale-out.md) also share a claim
per event being sent: two copies of one event (an edge that published it again because
its confirm was lost in a node's death) delivered to two workers at once are sent by one;
the other waits until the claim ends (then it is `seen`), is released (the send failed),
or is older than `CLAIM_TTL` (its holder died).
"""

from __future__ import annotations

import sqlite3
import time

CLAIM_TTL = 15.0  # seconds a claim of a worker that died blocks the others

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_events (
    channel  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (channel, event_id)
) WITHOUT ROWID
"""


CLAIMS = """
CREATE TABLE IF NOT EXISTS sending_events (
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
        conn.execute(CLAIMS)
        conn.execute("CREATE INDEX IF NOT EXISTS handled_events_at ON handled_events (at)")
        self._last_prune = 0.0

    def seen(self, channel: str, event_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM handled_events WHERE channel = ? AND event_id = ?", (channel, event_id)
        ).fetchone()
        return row is not None

    def claim(self, channel: str, event_id: str, now: float | None = None) -> bool:
        """Take the right to send this event; False while another holds a live claim."""
        at = now if now is not None else time.time()
        cur = self.conn.execute(
            "INSERT INTO sending_events (channel, event_id, at) VALUES (?, ?, ?)"
            " ON CONFLICT (channel, event_id) DO UPDATE SET at = excluded.at"
            " WHERE sending_events.at < ?",
            (channel, event_id, at, at - CLAIM_TTL),
        )
        return cur.rowcount == 1

    def release(self, channel: str, event_id: str) -> None:
        self.conn.execute(
            "DELETE FROM sending_events WHERE channel = ? AND event_id = ?", (channel, event_id)
        )

    def record(self, channel: str, event_id: str, now: float | None = None) -> None:
        at = now if now is not None else time.time()
        self.conn.execute(
            "INSERT OR REPLACE INTO handled_events (channel, event_id, at) VALUES (?, ?, ?)",
            (channel, event_id, at),
        )
        self.release(channel, event_id)
        if at - self._last_prune > 3600:
            self.prune(at)

    def prune(self, now: float | None = None) -> int:
        at = now if now is not None else time.time()
        self._last_prune = at
        cur = self.conn.execute("DELETE FROM handled_events WHERE at < ?", (at - self.keep,))
        return cur.rowcount
