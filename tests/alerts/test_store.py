from __future__ import annotations

from pathlib import Path

from sensord.alerts.silences import Matcher
from sensord.alerts.store import AlertStore, InhibitRule, RepeatPolicy
from sensord.delivery.outbox import Outbox, open_state_db
from sensord.events import AlertEvent
from sensord.ops.metrics import Metrics
from tests.support import make_event


def test_expired_silences_are_kept_a_day_then_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = AlertStore(open_state_db(path))
    old = store.add_silence([Matcher.parse("site=a")], 0.0, 1000.0, "me", "old")
    recent = store.add_silence([Matcher.parse("site=b")], 0.0, 90_000.0, "me", "recent")
    store.gc_silences(now=1000.0 + 86_400.0 + 1)
    assert set(store.silences) == {recent.id}
    assert set(AlertStore(open_state_db(path)).silences) == {recent.id}  # gone on disk too
    assert old.id not in AlertStore(open_state_db(path)).silences


def _event(device: str, severity: str, status: str = "firing") -> AlertEvent:
    fp = f"{device}-{severity}"
    body = make_event(device=device, severity=severity, status=status, fingerprint=fp)
    return AlertEvent.model_validate(body)


def test_inhibition_and_severity_counts_follow_fire_resolve_and_restart(tmp_path: Path) -> None:
    """The indexes behind inhibition and status stay right as alerts come and go, and
    after a restart (they are rebuilt from the state file)."""
    path = tmp_path / "s.db"
    rule = InhibitRule(
        (Matcher.parse("severity=critical"),), (Matcher.parse("severity=warning"),), ("device",)
    )
    store = AlertStore(open_state_db(path), [rule])
    with store.transaction():
        assert store.fire(_event("t-1", "critical"), 100.0)
        assert not store.fire(_event("t-1", "warning"), 100.0)  # inhibited: same device
        assert store.fire(_event("t-2", "warning"), 100.0)  # another device: notified
    assert store.by_severity == {"critical": 1, "warning": 2}
    assert store.inhibited_by("t-1-warning", _event("t-1", "warning").labels) == "t-1-critical"
    restarted = AlertStore(open_state_db(path), [rule])
    assert restarted.by_severity == {"critical": 1, "warning": 2}
    assert restarted.inhibited_by("x", _event("t-1", "warning").labels) == "t-1-critical"
    with restarted.transaction():
        assert restarted.resolve(_event("t-1", "critical", "resolved"))
        # the source resolved: the held warning is published on the next reconcile
        assert [e.fingerprint for e, _ in restarted.due(101.0, RepeatPolicy())] == ["t-1-warning"]
    assert restarted.inhibited_by("x", _event("t-1", "warning").labels) is None
    assert restarted.by_severity == {"warning": 2}
    with restarted.transaction():
        restarted.resolve(_event("t-1", "warning", "resolved"))
        restarted.resolve(_event("t-2", "warning", "resolved"))
    assert restarted.by_severity == {}
    assert restarted._sources == [{}]


def test_each_channel_is_reminded_at_its_own_interval_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    policy = RepeatPolicy(
        (
            ("a", 3.0, lambda e: True),
            ("b", 4.0, lambda e: True),
            ("w", 1.0, lambda e: e.severity.value == "warning"),  # takes no critical alert
        )
    )
    store = AlertStore(open_state_db(path))
    first = _event("t-1", "critical")
    with store.transaction():
        assert store.fire(first, 0.0)
    told: dict[int, list[tuple[str, ...] | None]] = {}
    ids = {first.event_id}
    for t in range(13):
        if t == 7:  # a restart: the channels' clocks come back from the state file
            store = AlertStore(open_state_db(path))
        with store.transaction():
            due = store.due(float(t), policy)
        told[t] = [channels for _, channels in due]
        for event, _ in due:
            assert (event.fingerprint, event.starts_at) == (first.fingerprint, first.starts_at)
            ids.add(event.event_id)
    assert {t: c for t, c in told.items() if c} == {
        3: [("a",)],
        4: [("b",)],
        6: [("a",)],
        8: [("b",)],
        9: [("a",)],
        12: [("a", "b")],
    }
    assert len(ids) == 7  # each repeat is a new event of the same alert
    store.ack(first.fingerprint, "me", "on it", now=12.5)
    with store.transaction():
        assert store.due(100.0, policy) == []  # acknowledged: no more repeats


def test_a_state_file_from_before_per_channel_repeats_opens_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """Tables written by sensord 0.1 (no `repeats`, no `repeat_for` column) gain them."""
    path = tmp_path / "old.db"
    event = _event("t-1", "critical")
    conn = open_state_db(path)
    conn.executescript(
        "CREATE TABLE alerts (fingerprint TEXT PRIMARY KEY, event TEXT NOT NULL,"
        " notified INTEGER NOT NULL, last_sent REAL, acked_by TEXT, acked_at REAL,"
        " ack_comment TEXT);"
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
        " UNIQUE, fingerprint TEXT NOT NULL, routing_key TEXT NOT NULL, body BLOB NOT NULL,"
        " created REAL NOT NULL);"
    )
    conn.execute(
        "INSERT INTO alerts VALUES (?, ?, 1, 50.0, NULL, NULL, NULL)",
        (event.fingerprint, event.model_dump_json()),
    )
    conn.execute(
        "INSERT INTO outbox (event_id, fingerprint, routing_key, body, created)"
        " VALUES ('e1', 'fp', 'critical.s.k', x'7b7d', 1.0)"
    )
    conn.close()
    store = AlertStore(open_state_db(path))
    box = Outbox(open_state_db(path), 10, Metrics())
    assert store.alerts[event.fingerprint].last_sent == 50.0
    assert [(r.event_id, r.repeat_for) for r in box.head(10)] == [("e1", None)]
    with store.transaction():
        due = store.due(60.0, RepeatPolicy.every(5.0))
    assert [channels for _, channels in due] == [("*",)]
