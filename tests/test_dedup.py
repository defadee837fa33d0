from __future__ import annotations

from pathlib import Path

from sensord.dedup import HandledEvents
from sensord.outbox import open_state_db


def test_handled_events_are_remembered_per_channel_and_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    handled = HandledEvents(open_state_db(path))
    assert not handled.seen("hook", "e1")
    handled.record("hook", "e1", now=1000.0)
    assert handled.seen("hook", "e1")
    assert not handled.seen("console", "e1")  # each channel notifies once on its own
    handled.conn.close()
    again = HandledEvents(open_state_db(path))
    assert again.seen("hook", "e1")


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    handled = HandledEvents(open_state_db(tmp_path / "s.db"), keep=100.0)
    handled.record("hook", "old", now=1000.0)
    handled.record("hook", "new", now=1090.0)
    assert handled.prune(now=1150.0) == 1
    assert not handled.seen("hook", "old")
    assert handled.seen("hook", "new")
