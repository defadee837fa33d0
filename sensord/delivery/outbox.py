"""Transactional outbox: alert events wait in the SQLite state file until RabbitMQ confirms.

The caller writes an alert transition's events inside its own transaction (with whatever
state it records), commits, and only then acknowledges the MQTT message that caused it:
a crash at any point loses nothing. `OutboxDrain` publishes rows in order with publisher
confirms and deletes a row only once its own confirm arrived.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sensord.events import AlertEvent
from sensord.ops.metrics import Metrics

log = logging.getLogger("sensord.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body        BLOB NOT NULL,
    created     REAL NOT NULL,
    repeat_for  TEXT
)
"""


def open_state_db(
    path: Path, synchronous: str = "NORMAL", *, autocheckpoint: bool = True
) -> sqlite3.Connection:
    """The state file: WAL, so readers never block the writer; autocommit off by default.
    `autocheckpoint=False`: the caller runs a `sensord.checkpoint.Checkpointer`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL survives a crash of sensord (SIGKILL); FULL also survives power loss.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def open_memory_db() -> sqlite3.Connection:
    """For roles that record no alerts (notify): an outbox that stays empty."""
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    fingerprint: str
    routing_key: str
    body: bytes
    created: float
    repeat_for: str | None = None  # a repeat: the channels it is for, comma-separated


class Outbox:
    """The `outbox` table, with its row count kept in memory (no COUNT(*) per reading)."""

    def __init__(self, conn: sqlite3.Connection, max_rows: int, metrics: Metrics) -> None:
        self.conn = conn
        self.max_rows = max_rows
        self._metrics = metrics
        conn.execute(SCHEMA)
        if "repeat_for" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
            conn.execute("ALTER TABLE outbox ADD COLUMN repeat_for TEXT")  # sensord <= 0.1
        (self._count,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._update_metrics()

    def __len__(self) -> int:
        return int(self._count)

    def _update_metrics(self) -> None:
        self._metrics.outbox_pending.set(self._count)

    def oldest_age(self, now: float | None = None) -> float:
        row = self.conn.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, (now or time.time()) - row[0])

    def add(
        self,
        events: list[AlertEvent],
        now: float | None = None,
        repeat_for: Sequence[tuple[str, ...] | None] = (),
    ) -> None:
        """Insert rows; commits unless the caller holds a transaction (then it commits).
        `repeat_for`, when given, has one entry per event: None, or the channels a repeat
        is for."""
        if not events:
            return
        created = now if now is not None else time.time()
        targets = repeat_for or [None] * len(events)
        rows = [
            (
                e.event_id,
                e.fingerprint,
                e.routing_key,
                e.model_dump_json().encode(),
                created,
                None if t is None else ",".join(t),
            )
            for e, t in zip(events, targets, strict=True)
        ]
        own = not self.conn.in_transaction
        if own:
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = self.conn.executemany(
                "INSERT OR IGNORE INTO outbox"
                " (event_id, fingerprint, routing_key, body, created, repeat_for)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            ).rowcount
            self._count += inserted
            if self._count > self.max_rows:
                self._drop_oldest(self._count - self.max_rows)
            if own:
                self.conn.execute("COMMIT")
        except BaseException:
            if own:
                self.conn.execute("ROLLBACK")
            (self._count,) = self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
            raise
        self._update_metrics()

    def _drop_oldest(self, n: int) -> None:
        """Overflow policy: the oldest events go, counted and logged (they are the stalest)."""
        dropped = self.conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)"
            " RETURNING event_id",
            (n,),
        ).fetchall()
        self._count -= len(dropped)
        self._metrics.alerts_dropped.inc(len(dropped))
        log.error(
            "outbox full (%d rows, [amqp] max_pending): dropped the %d oldest alert event(s)",
            self.max_rows,
            len(dropped),
        )

    def head(self, limit: int) -> list[OutboxRow]:
        cur = self.conn.execute(
            "SELECT seq, event_id, fingerprint, routing_key, body, created, repeat_for"
            " FROM outbox"
            " ORDER BY seq LIMIT ?",
            (limit,),
        )
        rows = [OutboxRow(*row) for row in cur.fetchall()]
        if len(rows) < limit and self._count != len(rows):
            # a caller's transaction rolled back rows counted by add(): resync
            self._count = len(rows)
            self._update_metrics()
        return rows

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._count -= len(seqs)
        self._update_metrics()
