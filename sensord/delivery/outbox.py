"""Transactional outbox: alert events wait in the SQLite state file until RabbitMQ confirms.

The caller writes an alert transition's events inside its own transaction (with whatever
state it records), commits, and only then acknowledges the MQTT message that caused it:
a crash at any point loses nothing. `OutboxDrain` publishes rows in order with publisher
confirms and deletes a row only once its own confirm arrived.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

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


CACHE_KIB = 65536


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
    # SQLite's page cache: up to 64 MiB instead of its 2 MiB default. A storm touches rows
    # of every sensor (alert state, alert, redelivery guard): with the default cache, 10,000
    # sensors' pages no longer fit, and each batch read them back from the file (the
    # pipeline alone, bench/README.md: ~8 % of its CPU in a storm). Memory is taken as the
    # file's pages are read, never more than the file.
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def open_memory_db() -> sqlite3.Connection:
    """For roles that record no alerts (notify): an outbox that stays empty."""
    return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)


class OutboxRow(NamedTuple):
    """A tuple: written by executemany as it is, no conversion per row."""

    seq: int
    event_id: str
    fingerprint: str
    routing_key: str
    body: bytes
    created: float
    repeat_for: str | None = None  # a repeat: the channels it is for, comma-separated


_INSERT = (
    "INSERT OR IGNORE INTO outbox"
    " (seq, event_id, fingerprint, routing_key, body, created, repeat_for)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class Outbox:
    """The `outbox` table, mirrored in memory: the drain never reads back a row just
    written, and the row count costs no COUNT(*).

    Rows are numbered here (`seq`, increasing), so that a row written inside a caller's
    transaction is known without reading it back. Until that transaction is seen to have
    committed, its rows are *staged*: `head()` settles them first (one primary-key lookup
    per `add`): committed rows join the mirror, rolled-back ones are forgotten.
    """

    def __init__(self, conn: sqlite3.Connection, max_rows: int, metrics: Metrics) -> None:
        self.conn = conn
        self.max_rows = max_rows
        self._metrics = metrics
        conn.execute(SCHEMA)
        if "repeat_for" not in {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}:
            conn.execute("ALTER TABLE outbox ADD COLUMN repeat_for TEXT")  # sensord <= 0.1
        self._rows: deque[OutboxRow] = deque()
        # per add() in a caller's transaction: its rows, and whether all were inserted
        self._staged: list[tuple[list[OutboxRow], bool]] = []
        self._next_seq = 1
        self._reload()

    def _reload(self) -> None:
        """The mirror from the table: at open, and after anything it cannot follow."""
        cur = self.conn.execute(
            "SELECT seq, event_id, fingerprint, routing_key, body, created, repeat_for"
            " FROM outbox ORDER BY seq"
        )
        self._rows = deque(OutboxRow(*row) for row in cur)
        self._staged.clear()
        (top,) = self.conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM outbox), 0),"
            " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))"
        ).fetchone()
        self._next_seq = int(top) + 1
        self._update_metrics()

    def __len__(self) -> int:
        return len(self._rows) + sum(len(rows) for rows, _ in self._staged)

    def _update_metrics(self) -> None:
        self._metrics.outbox_pending.set(len(self))

    def oldest_age(self, now: float | None = None) -> float:
        self._settle()
        if not self._rows:
            return 0.0
        return max(0.0, (now or time.time()) - self._rows[0].created)

    def add(
        self,
        events: list[AlertEvent],
        now: float | None = None,
        repeat_for: Sequence[tuple[str, ...] | None] = (),
        *,
        bodies: Sequence[bytes] = (),
    ) -> None:
        """Insert rows; commits unless the caller holds a transaction (then it commits).
        `repeat_for`, when given, has one entry per event: None, or the channels a repeat
        is for. `bodies`, when given, are the events already serialised (once, by the
        caller, which stored the same bytes elsewhere)."""
        if not events:
            return
        self._settle()
        created = now if now is not None else time.time()
        targets = repeat_for or [None] * len(events)
        encoded = bodies or [e.model_dump_json().encode() for e in events]
        seq = self._next_seq
        rows = [
            OutboxRow(
                seq + i,
                e.event_id,
                e.fingerprint,
                e.routing_key,
                body,
                created,
                None if t is None else ",".join(t),
            )
            for i, (e, t, body) in enumerate(zip(events, targets, encoded, strict=True))
        ]
        self._next_seq = seq + len(rows)
        own = not self.conn.in_transaction
        if own:
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = self.conn.executemany(_INSERT, rows).rowcount
            overflow = len(self) + inserted - self.max_rows
            if overflow > 0:
                self._drop_oldest(overflow)
            if own:
                self.conn.execute("COMMIT")
        except BaseException:
            if own:
                self.conn.execute("ROLLBACK")
                self._reload()
            else:
                # the caller's transaction is still open and will roll back: the table
                # is followed again once it ended (reading it now would see its rows)
                self._staged.append(([], False))
            raise
        if overflow > 0 and not own:
            # the caller may still roll the drop back: follow the table from its commit on
            self._staged.append(([], False))
        if own:
            if inserted == len(rows) and overflow <= 0:
                self._rows.extend(rows)
            else:  # an event id already there (INSERT OR IGNORE), or a drop: rare
                self._reload()
        else:
            self._staged.append((rows, inserted == len(rows)))
        self._update_metrics()

    def _settle(self) -> None:
        """Staged rows whose transaction ended: committed ones join the mirror."""
        if not self._staged or self.conn.in_transaction:
            return
        staged, self._staged = self._staged, []
        exists = self.conn.execute
        for rows, complete in staged:
            if not complete:
                self._reload()  # a partial insert or a drop of old rows: follow the table
                return
            if exists("SELECT 1 FROM outbox WHERE seq = ?", (rows[-1].seq,)).fetchone():
                self._rows.extend(rows)
        self._update_metrics()

    def _drop_oldest(self, n: int) -> None:
        """Overflow policy: the oldest events go, counted and logged (they are the stalest)."""
        dropped = self.conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)"
            " RETURNING seq",
            (n,),
        ).fetchall()
        gone = {seq for (seq,) in dropped}
        self._rows = deque(r for r in self._rows if r.seq not in gone)
        self._metrics.alerts_dropped.inc(len(dropped))
        log.error(
            "outbox full (%d rows, [amqp] max_pending): dropped the %d oldest alert event(s)",
            self.max_rows,
            len(dropped),
        )

    def head(self, limit: int, after: int = 0) -> list[OutboxRow]:
        """The first `limit` rows (of those numbered above `after`), oldest first."""
        self._settle()
        rows = self._rows
        start = 0
        if after:
            n = len(rows)
            while start < n and rows[start].seq <= after:  # the rows in flight: a few batches
                start += 1
        if start == 0 and limit >= len(rows):
            return list(rows)
        return list(itertools.islice(rows, start, start + limit))

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        first, last = seqs[0], seqs[-1]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if all(b - a == 1 for a, b in itertools.pairwise(seqs)):
                # a run of consecutive numbers (the drain's confirmed prefix): one range
                # statement instead of one lookup per row (~15 % less CPU for 512 rows)
                self.conn.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
            else:
                self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        rows = self._rows
        n = len(seqs)
        if n <= len(rows) and all(rows[i].seq == s for i, s in enumerate(seqs)):
            for _ in range(n):  # the drain deletes a prefix of head(): the common case
                rows.popleft()
        else:
            gone = set(seqs)
            self._rows = deque(r for r in rows if r.seq not in gone)
        self._update_metrics()
