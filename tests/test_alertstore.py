from __future__ import annotations

from pathlib import Path

from sensord.alertstore import AlertStore, InhibitRule
from sensord.events import AlertEvent
from sensord.outbox import open_state_db
from sensord.silences import Matcher
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
        assert [e.fingerprint for e in restarted.due(101.0, 0)] == ["t-1-warning"]
    assert restarted.inhibited_by("x", _event("t-1", "warning").labels) is None
    assert restarted.by_severity == {"warning": 2}
    with restarted.transaction():
        restarted.resolve(_event("t-1", "warning", "resolved"))
        restarted.resolve(_event("t-2", "warning", "resolved"))
    assert restarted.by_severity == {}
    assert restarted._sources == [{}]
