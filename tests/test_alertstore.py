from __future__ import annotations

from pathlib import Path

from sensord.alertstore import AlertStore
from sensord.outbox import open_state_db
from sensord.silences import Matcher


def test_expired_silences_are_kept_a_day_then_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = AlertStore(open_state_db(path))
    old = store.add_silence([Matcher.parse("site=a")], 0.0, 1000.0, "me", "old")
    recent = store.add_silence([Matcher.parse("site=b")], 0.0, 90_000.0, "me", "recent")
    store.gc_silences(now=1000.0 + 86_400.0 + 1)
    assert set(store.silences) == {recent.id}
    assert set(AlertStore(open_state_db(path)).silences) == {recent.id}  # gone on disk too
    assert old.id not in AlertStore(open_state_db(path)).silences
