"""Active alerts, silences and acknowledgements, kept in the SQLite state file.

The edge decides here whether a transition is notified: a firing alert that is silenced
or inhibited is tracked but not published; when the silence expires or the inhibiting
alert resolves, it is published then. A resolution is published only for an alert whose
firing was. Long-firing alerts are re-announced every `repeat_interval` (same
fingerprint and starts_at, new event id) unless acknowledged; each channel has its own
interval (`RepeatPolicy`), and a repeat names the channels it is for.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sensord.alerts.silences import Matcher, matches_all
from sensord.events import AlertEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    notified    INTEGER NOT NULL,
    last_sent   REAL,
    acked_by    TEXT,
    acked_at    REAL,
    ack_comment TEXT
);
CREATE TABLE IF NOT EXISTS silences (
    id         TEXT PRIMARY KEY,
    matchers   TEXT NOT NULL,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    author     TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(slots=True)
class ActiveAlert:
    event: AlertEvent  # the last firing event sent or held for this episode
    notified: bool
    last_sent: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    ack_comment: str | None = None
    # per channel, when it was last re-announced to (absent: at last_sent)
    repeats: dict[str, float] = field(default_factory=dict)
    next_due: float | None = None  # in memory: the earliest repeat of any channel


@dataclass(frozen=True, slots=True)
class RepeatPolicy:
    """Per channel: its repeat interval (> 0) and whether it takes an alert at all."""

    channels: tuple[tuple[str, float, Callable[[AlertEvent], bool]], ...] = ()

    @classmethod
    def every(cls, interval: float) -> RepeatPolicy:
        """One interval for every channel (as `[alerts] repeat_interval` alone)."""
        return cls((("*", interval, lambda _e: True),) if interval > 0 else ())

    def intervals(self, event: AlertEvent) -> list[tuple[str, float]]:
        return [(name, iv) for name, iv, takes in self.channels if takes(event)]


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    author: str
    comment: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "author": self.author,
            "comment": self.comment,
            "state": "active"
            if self.active(now)
            else ("pending" if now < self.starts_at else "expired"),
        }


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass
class AlertStore:
    conn: sqlite3.Connection
    inhibit: list[InhibitRule] = field(default_factory=list)
    alerts: dict[str, ActiveAlert] = field(default_factory=dict)
    silences: dict[str, Silence] = field(default_factory=dict)
    # kept up to date by _put/_pop, so that status and inhibition never scan every alert:
    # active alerts per severity, and per inhibit rule the active sources by `equal` values
    by_severity: dict[str, int] = field(default_factory=dict, init=False)
    _sources: list[dict[tuple[str | None, ...], set[str]]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.conn.executescript(SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(alerts)")}
        if "repeats" not in columns:  # a state file of sensord <= 0.1: a column more
            self.conn.execute("ALTER TABLE alerts ADD COLUMN repeats TEXT")
        self._sources = [{} for _ in self.inhibit]
        for event, notified, last_sent, by, at, comment, repeats in self.conn.execute(
            "SELECT event, notified, last_sent, acked_by, acked_at, ack_comment, repeats"
            " FROM alerts"
        ):
            self._put(
                ActiveAlert(
                    AlertEvent.model_validate_json(event),
                    bool(notified),
                    last_sent,
                    by,
                    at,
                    comment,
                    json.loads(repeats) if repeats else {},
                )
            )
        for row in self.conn.execute(
            "SELECT id, matchers, starts_at, ends_at, author, comment, created_at FROM silences"
        ):
            sid, matchers, *rest = row
            parsed = tuple(Matcher.parse(m) for m in json.loads(matchers))
            self.silences[sid] = Silence(sid, parsed, *rest)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction for state changes and the outbox rows they cause."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- decisions

    def silenced_by(self, labels: dict[str, str], now: float) -> str | None:
        for s in self.silences.values():
            if s.active(now) and matches_all(list(s.matchers), labels):
                return s.id
        return None

    def inhibited_by(self, fingerprint: str, labels: dict[str, str]) -> str | None:
        for rule, sources in zip(self.inhibit, self._sources, strict=True):
            if not matches_all(list(rule.target), labels):
                continue
            for fp in sources.get(tuple(labels.get(name) for name in rule.equal), ()):
                if fp != fingerprint:
                    return fp
        return None

    def is_inhibit_source(self, labels: dict[str, str]) -> bool:
        return any(matches_all(list(rule.source), labels) for rule in self.inhibit)

    def suppressed(self, event: AlertEvent, now: float) -> bool:
        return (
            self.silenced_by(event.labels, now) is not None
            or self.inhibited_by(event.fingerprint, event.labels) is not None
        )

    # ---- alert lifecycle

    def _put(self, alert: ActiveAlert) -> None:
        fp = alert.event.fingerprint
        self._pop(fp)
        self.alerts[fp] = alert
        labels = alert.event.labels
        severity = alert.event.severity.value
        self.by_severity[severity] = self.by_severity.get(severity, 0) + 1
        for rule, sources in zip(self.inhibit, self._sources, strict=True):
            if matches_all(list(rule.source), labels):
                sources.setdefault(tuple(labels.get(n) for n in rule.equal), set()).add(fp)

    def _pop(self, fingerprint: str) -> ActiveAlert | None:
        alert = self.alerts.pop(fingerprint, None)
        if alert is None:
            return None
        labels = alert.event.labels
        severity = alert.event.severity.value
        self.by_severity[severity] -= 1
        if not self.by_severity[severity]:
            del self.by_severity[severity]
        for rule, sources in zip(self.inhibit, self._sources, strict=True):
            key = tuple(labels.get(n) for n in rule.equal)
            fps = sources.get(key)
            if fps is not None:
                fps.discard(fingerprint)
                if not fps:
                    del sources[key]
        return alert

    def _save(self, alert: ActiveAlert, body: bytes | None = None) -> None:
        """`body`: the event already serialised (the pipeline's, shared with the outbox)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO alerts (fingerprint, event, notified, last_sent, acked_by,"
            " acked_at, ack_comment, repeats) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.event.fingerprint,
                alert.event.model_dump_json() if body is None else body.decode(),
                int(alert.notified),
                alert.last_sent,
                alert.acked_by,
                alert.acked_at,
                alert.ack_comment,
                json.dumps(alert.repeats) if alert.repeats else None,
            ),
        )

    def fire(self, event: AlertEvent, now: float, body: bytes | None = None) -> bool:
        """Record a firing transition; True when it is to be notified now."""
        notify = not (self.silences or self.inhibit) or not self.suppressed(event, now)
        alert = ActiveAlert(event, notify, now if notify else None)
        self._put(alert)
        self._save(alert, body)
        return notify

    def resolve(self, event: AlertEvent) -> bool:
        """Record a resolution; True when it is to be notified (its firing was)."""
        alert = self._pop(event.fingerprint)
        self.conn.execute("DELETE FROM alerts WHERE fingerprint = ?", (event.fingerprint,))
        return alert is None or alert.notified

    def due(
        self, now: float, policy: RepeatPolicy
    ) -> list[tuple[AlertEvent, tuple[str, ...] | None]]:
        """Firing events to send now, each with the channels it is for: held alerts no
        longer suppressed (None: every channel), and repeats (the channels whose own
        interval has passed since they were last told)."""
        out: list[tuple[AlertEvent, tuple[str, ...] | None]] = []
        for alert in self.alerts.values():
            channels: tuple[str, ...] | None = None
            if alert.notified:
                if alert.acked_by is not None or alert.last_sent is None:
                    continue
                if alert.next_due is None:
                    alert.next_due = self._next_due(alert, policy)
                if now < alert.next_due:
                    continue  # the common case, decided without matching anything
                since = alert.last_sent
                channels = tuple(
                    name
                    for name, iv in policy.intervals(alert.event)
                    if now - alert.repeats.get(name, since) >= iv
                )
                if not channels:
                    alert.next_due = self._next_due(alert, policy)
                    continue
            if self.suppressed(alert.event, now):
                continue
            event = alert.event.model_copy(update={"event_id": str(uuid.uuid4())})
            if channels is None:  # first told now: every channel's clock starts here
                alert.repeats = {}
            else:
                assert alert.last_sent is not None  # a repeat follows a notification
                for name, _iv in policy.intervals(alert.event):
                    alert.repeats.setdefault(name, alert.last_sent)
                alert.repeats.update(dict.fromkeys(channels, now))
            alert.event, alert.notified, alert.last_sent = event, True, now
            alert.next_due = self._next_due(alert, policy)
            self._save(alert)
            out.append((event, channels))
        return out

    @staticmethod
    def _next_due(alert: ActiveAlert, policy: RepeatPolicy) -> float:
        since = alert.last_sent or 0.0
        return min(
            (alert.repeats.get(name, since) + iv for name, iv in policy.intervals(alert.event)),
            default=math.inf,
        )

    def ack(self, fingerprint: str, by: str, comment: str, now: float | None = None) -> bool:
        alert = self.alerts.get(fingerprint)
        if alert is None:
            return False
        alert.acked_by, alert.acked_at, alert.ack_comment = by, now or time.time(), comment
        with self.transaction():
            self._save(alert)
        return True

    # ---- silences

    def add_silence(
        self, matchers: list[Matcher], starts_at: float, ends_at: float, author: str, comment: str
    ) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        s = Silence(
            str(uuid.uuid4()), tuple(matchers), starts_at, ends_at, author, comment, time.time()
        )
        with self.transaction():
            self.conn.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, author, comment,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    s.id,
                    json.dumps([str(m) for m in matchers]),
                    s.starts_at,
                    s.ends_at,
                    s.author,
                    s.comment,
                    s.created_at,
                ),
            )
        self.silences[s.id] = s
        return s

    def expire_silence(self, sid: str, now: float | None = None) -> bool:
        s = self.silences.get(sid)
        if s is None:
            return False
        end = now or time.time()
        expired = Silence(
            s.id, s.matchers, min(s.starts_at, end), end, s.author, s.comment, s.created_at
        )
        with self.transaction():
            self.conn.execute(
                "UPDATE silences SET ends_at = ?, starts_at = ? WHERE id = ?",
                (expired.ends_at, expired.starts_at, sid),
            )
        self.silences[sid] = expired
        return True

    def gc_silences(self, now: float, keep: float = 86400.0) -> None:
        """Forget silences that expired more than `keep` seconds ago."""
        old = [sid for sid, s in self.silences.items() if s.ends_at < now - keep]
        if old:
            with self.transaction():
                self.conn.executemany("DELETE FROM silences WHERE id = ?", [(i,) for i in old])
            for sid in old:
                del self.silences[sid]

    def alert_json(self, alert: ActiveAlert, now: float) -> dict[str, object]:
        ev = alert.event
        silenced = self.silenced_by(ev.labels, now)
        inhibited = self.inhibited_by(ev.fingerprint, ev.labels)
        return {
            **json.loads(ev.model_dump_json()),
            "state": "suppressed" if (silenced or inhibited) else "active",
            "silenced_by": silenced,
            "inhibited_by": inhibited,
            "notified": alert.notified,
            "acked_by": alert.acked_by,
            "acked_at": alert.acked_at,
            "ack_comment": alert.ack_comment,
        }
