"""Alert state in the SQLite state file: what survives a restart of the rule engine.

The state file's one connection (`sensord.outbox.open_state_db`: WAL, `synchronous=NORMAL`)
is owned by the service and shared with the outbox: `transaction()` is the unit of
atomicity, so that an alert transition's state and its outbox rows commit together
(`Outbox.add` joins an open transaction). Writes are small and rare: the states the
engine reports as changed, written in the call that changed them, and the deadman
clocks, batched once per tick.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from sensord.delivery.outbox import open_state_db
from sensord.errors import StateFileError
from sensord.events import LabelsMemo
from sensord.rules import ClockRecord, Snapshot, StateRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rule_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- one row per (rule, sensor) that is pending, firing, clearing or flapping
CREATE TABLE IF NOT EXISTS alert_state (
    rule            TEXT NOT NULL,
    sensor          TEXT NOT NULL,   -- canonical JSON of the labels (or of the expect entry)
    rule_json       TEXT NOT NULL,   -- the definition the state belongs to
    labels          TEXT NOT NULL,   -- JSON, in the engine's order
    expect          TEXT,
    pending_since   REAL,
    firing_since    REAL,
    clearing_since  REAL,
    last_value      REAL,
    last_ts         REAL,
    announced_since REAL,
    flapping        INTEGER NOT NULL DEFAULT 0,
    flap_history    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rule, sensor)
) WITHOUT ROWID;
-- per sensor, the time of the newest reading that changed an alert: after a restart, the
-- MQTT duplicate guard skips redeliveries of it and of older readings
CREATE TABLE IF NOT EXISTS reading_guard (
    topic  TEXT NOT NULL,
    device TEXT NOT NULL,
    kind   TEXT NOT NULL,
    ts     REAL NOT NULL,
    PRIMARY KEY (topic, device, kind)
) WITHOUT ROWID;
-- a central rules process (--role rules): per readings stream, the offset of the next
-- message to read, committed with the state and outbox rows that message caused
CREATE TABLE IF NOT EXISTS stream_offset (
    stream TEXT PRIMARY KEY,
    next   INTEGER NOT NULL
) WITHOUT ROWID;
-- deadman clocks of the sensors that absent_for rules watch
CREATE TABLE IF NOT EXISTS sensor_clock (
    sensor    TEXT PRIMARY KEY,
    labels    TEXT NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
"""


def _sensor_id(labels: dict[str, str], expect: str | None) -> str:
    if expect is not None:
        return json.dumps({"expect": expect, "labels": labels}, sort_keys=True)
    return json.dumps(labels, sort_keys=True)


# (sensor id, labels JSON) per sensor labels dict: encoded once, not twice per transition
_LABEL_JSON: LabelsMemo[tuple[str, str]] = LabelsMemo(
    lambda _, labels: (_sensor_id(labels, None), json.dumps(labels))
)


def _label_json(labels: dict[str, str]) -> tuple[str, str]:
    return _LABEL_JSON.get(None, labels)


class StateStore:
    """The alert-state tables on a state-file connection (isolation_level=None: explicit
    transactions). `StateStore.open(path)` opens a file of its own (tests, tools)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        with self.transaction() as tx:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    tx.execute(statement)
            row = tx.execute("SELECT value FROM rule_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                tx.execute(
                    "INSERT INTO rule_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                path = conn.execute("PRAGMA database_list").fetchone()[2]
                raise StateFileError(
                    f"{path}: state file schema {row[0]}, this sensord knows {SCHEMA_VERSION}"
                    " (written by another version: restore a matching sensord or move it away)"
                )

    @classmethod
    def open(cls, path: Path) -> StateStore:
        return cls(open_state_db(path))

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: commits on success, rolls back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- the duplicate guard's memory

    def remember_reading(self, key: tuple[str, str, str], ts: float) -> None:
        """The reading of sensor `key` stamped `ts` changed an alert, in a transaction of
        its own (the service passes `guard` to `write` instead, in the change's)."""
        with self.transaction() as conn:
            self.write(conn, guards={key: ts})

    def remembered_readings(self) -> dict[tuple[str, str, str], float]:
        rows = self.conn.execute("SELECT topic, device, kind, ts FROM reading_guard")
        return {(topic, device, kind): ts for topic, device, kind, ts in rows}

    # ---- writing

    def write(
        self,
        conn: sqlite3.Connection,
        records: Sequence[StateRecord] = (),
        clocks: Sequence[ClockRecord] = (),
        *,
        saved_at: float | None = None,
        started_at: float | None = None,
        guards: Mapping[tuple[str, str, str], float] | None = None,
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        """Write inside an open transaction (the caller's, so more can join it). `guards`:
        per (topic, device, kind), the time of the newest reading that changed an alert;
        `offsets`: per readings stream, the next offset to read (--role rules)."""
        delete = [
            (
                r.rule,
                _label_json(r.labels)[0] if r.expect is None else _sensor_id(r.labels, r.expect),
            )
            for r in records
            if r.idle
        ]
        upsert = []
        for r in records:
            if r.idle:
                continue
            if r.expect is None:
                sid, plain = _label_json(r.labels)
            else:
                sid, plain = _sensor_id(r.labels, r.expect), json.dumps(r.labels)
            upsert.append(
                (
                    r.rule,
                    sid,
                    r.rule_json,
                    plain,
                    r.expect,
                    r.pending_since,
                    r.firing_since,
                    r.clearing_since,
                    r.last_value,
                    r.last_ts,
                    r.announced_since,
                    int(r.flapping),
                    r.flap_history,
                )
            )
        if delete:
            conn.executemany("DELETE FROM alert_state WHERE rule = ? AND sensor = ?", delete)
        if upsert:
            conn.executemany(
                "INSERT OR REPLACE INTO alert_state VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", upsert
            )
        if clocks:
            conn.executemany(
                "INSERT OR REPLACE INTO sensor_clock VALUES (?,?,?)",
                [
                    (json.dumps(c.labels, sort_keys=True), json.dumps(c.labels), c.last_seen)
                    for c in clocks
                ],
            )
        if guards:
            conn.executemany(
                "INSERT OR REPLACE INTO reading_guard VALUES (?, ?, ?, ?)",
                [(topic, device, kind, ts) for (topic, device, kind), ts in guards.items()],
            )
        if offsets:
            conn.executemany(
                "INSERT OR REPLACE INTO stream_offset VALUES (?, ?)", list(offsets.items())
            )
        if saved_at is not None:
            conn.execute(
                "INSERT OR REPLACE INTO rule_meta VALUES ('saved_at', ?)", (repr(saved_at),)
            )
        if started_at is not None:
            conn.execute(
                "INSERT OR REPLACE INTO rule_meta VALUES ('started_at', ?)", (repr(started_at),)
            )

    def save(
        self,
        records: Sequence[StateRecord] = (),
        clocks: Sequence[ClockRecord] = (),
        *,
        saved_at: float | None = None,
        started_at: float | None = None,
    ) -> None:
        """Write in a transaction of its own."""
        with self.transaction() as conn:
            self.write(conn, records, clocks, saved_at=saved_at, started_at=started_at)

    # ---- reading

    def load(self) -> Snapshot:
        conn = self.conn
        meta = dict(conn.execute("SELECT key, value FROM rule_meta").fetchall())
        records = [
            StateRecord(
                rule=row[0],
                rule_json=row[1],
                labels=json.loads(row[2]),
                expect=row[3],
                pending_since=row[4],
                firing_since=row[5],
                clearing_since=row[6],
                last_value=row[7],
                last_ts=row[8],
                announced_since=row[9],
                flapping=bool(row[10]),
                flap_history=row[11],
            )
            for row in conn.execute(
                "SELECT rule, rule_json, labels, expect, pending_since, firing_since,"
                " clearing_since, last_value, last_ts, announced_since, flapping, flap_history"
                " FROM alert_state ORDER BY rule, sensor"
            )
        ]
        clocks = [
            ClockRecord(json.loads(labels), last_seen)
            for labels, last_seen in conn.execute(
                "SELECT labels, last_seen FROM sensor_clock ORDER BY sensor"
            )
        ]
        saved = meta.get("saved_at")
        started = meta.get("started_at")
        return Snapshot(
            records,
            clocks,
            saved_at=float(saved) if saved is not None else None,
            started_at=float(started) if started is not None else None,
        )

    def offsets(self) -> dict[str, int]:
        """Per readings stream, the next offset to read (--role rules)."""
        return dict(self.conn.execute("SELECT stream, next FROM stream_offset").fetchall())

    def counts(self) -> tuple[int, int]:
        """(alert_state rows, sensor_clock rows): for tests and the status page."""
        a = self.conn.execute("SELECT count(*) FROM alert_state").fetchone()[0]
        c = self.conn.execute("SELECT count(*) FROM sensor_clock").fetchone()[0]
        return int(a), int(c)
