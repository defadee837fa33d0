"""The SQLite state file, and the engine restarted on it: no re-announcement, no lost
resolution, `for` timers and deadman clocks that resume (or restart after a long outage)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sensord.alerts.lifecycle import build_event
from sensord.delivery.outbox import Outbox
from sensord.errors import StateFileError
from sensord.events import Reading
from sensord.ops.metrics import Metrics
from sensord.rules import AlertTransition, ClockRecord, Rule, RuleEngine, StateRecord
from sensord.state.store import StateStore

HOUR = 3600.0


def rule(**fields: object) -> Rule:
    return Rule.model_validate({"name": "hot", **fields})


def reading(value: float, ts: float, device: str = "t-1") -> Reading:
    return Reading(site="plant-1", device=device, kind="temperature", value=value, ts=ts)


def persist(engine: RuleEngine, store: StateStore, now: float) -> None:
    """What the service does on each tick: changed states, clocks and the heartbeat."""
    store.save(engine.take_dirty(), engine.clocks(), saved_at=now, started_at=engine.start)


def restart(
    rules: list[Rule], path: Path, now: float, tolerance: float = HOUR
) -> tuple[RuleEngine, StateStore, list[AlertTransition]]:
    store = StateStore.open(path)
    engine = RuleEngine(rules)
    out = engine.restore(store.load(), now, tolerance)
    store.save(engine.take_dirty())
    return engine, store, out


def statuses(transitions: list[AlertTransition]) -> list[tuple[float, str]]:
    return [(t.observed_at, t.status) for t in transitions]


# ---------------------------------------------------------------- the file itself


def test_store_creates_parents_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with StateStore.open(path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        # a page cache that holds every sensor's rows (negative: KiB), not SQLite's 2 MiB
        assert store.conn.execute("PRAGMA cache_size").fetchone()[0] == -65536
    assert path.is_file()


def test_records_round_trip_and_idle_records_delete(tmp_path: Path) -> None:
    labels = {"zone": "n", "site": "s", "device": "d", "kind": "k"}
    rec = StateRecord(
        "hot",
        '{"x": 1}',
        labels,
        pending_since=None,
        firing_since=10.0,
        clearing_since=12.5,
        last_value=81.5,
        last_ts=12.5,
        announced_since=10.0,
        flapping=True,
        flap_history=0b1011,
    )
    declared = StateRecord("dead", "{}", {"device": "t-9"}, expect="t-9", firing_since=5.0)
    with StateStore.open(tmp_path / "s.db") as store:
        store.save([rec, declared], [ClockRecord(labels, 99.0)], saved_at=100.0, started_at=1.0)
    with StateStore.open(tmp_path / "s.db") as store:
        snap = store.load()
        assert sorted(snap.records, key=lambda r: r.rule) == [declared, rec]
        assert list(snap.records[1].labels) == ["zone", "site", "device", "kind"]  # order kept
        assert snap.clocks == [ClockRecord(labels, 99.0)]
        assert (snap.saved_at, snap.started_at) == (100.0, 1.0)
        store.save([StateRecord("hot", '{"x": 1}', labels)])  # all empty: the row goes
        assert store.counts() == (1, 1)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "s.db") as store:
        rec = StateRecord("hot", "{}", {"device": "d"}, firing_since=1.0)

        def fail_after_write() -> None:
            with store.transaction() as conn:
                store.write(conn, [rec])
                raise RuntimeError("the outbox insert failed")

        with pytest.raises(RuntimeError):
            fail_after_write()
        assert store.counts() == (0, 0)
        with store.transaction() as conn:
            store.write(conn, [rec])
        assert store.counts() == (1, 0)


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE rule_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateFileError, match="schema 99"):
        StateStore.open(path)


# ---------------------------------------------------------------- restart


def test_firing_alert_is_not_announced_again(tmp_path: Path) -> None:
    rules = [rule(above=80, clear_below=75)]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        assert statuses(engine.evaluate(reading(90, 100), 100)) == [(100, "firing")]
        persist(engine, store, 101)
    engine, store, out = restart(rules, tmp_path / "s.db", 130)
    assert out == []
    assert engine.evaluate(reading(91, 131), 131) == []  # still firing: nothing to say
    assert engine.evaluate(reading(78, 132), 132) == []  # hysteresis band survives too
    [resolved] = engine.evaluate(reading(70, 133), 133)
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == ("resolved", 100, 133)
    store.close()


def test_resolved_while_down_is_sent_on_first_evaluation(tmp_path: Path) -> None:
    rules = [rule(above=80)]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(90, 100), 100)
        persist(engine, store, 100)
    engine, store, out = restart(rules, tmp_path / "s.db", 500)
    assert out == []
    [resolved] = engine.evaluate(reading(50, 500), 500)
    assert (resolved.status, resolved.starts_at) == ("resolved", 100)
    persist(engine, store, 501)
    assert store.counts()[0] == 0  # nothing left to restore
    store.close()


@pytest.mark.parametrize(
    ("restart_at", "tolerance", "fires_at", "starts_at"),
    [
        pytest.param(3, HOUR, 10, 0, id="pending-resumes"),
        pytest.param(3, 1, 13, 3, id="outage-longer-than-tolerance-restarts-for"),
    ],
)
def test_pending_for_timer_across_restart(
    tmp_path: Path, restart_at: float, tolerance: float, fires_at: float, starts_at: float
) -> None:
    rules = [rule(above=80, **{"for": "10s"})]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        assert engine.evaluate(reading(85, 0), 0) == []
        persist(engine, store, 1)
    engine, store, _ = restart(rules, tmp_path / "s.db", restart_at, tolerance)
    out: list[AlertTransition] = []
    t = restart_at
    while t <= 20:
        out += engine.evaluate(reading(85, t), t)
        t += 1
    [firing] = out
    assert (firing.observed_at, firing.starts_at) == (fires_at, starts_at)
    store.close()


def test_deadman_clock_survives_restart(tmp_path: Path) -> None:
    rules = [rule(absent_for="60s")]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(20, 0), 0)
        persist(engine, store, 10)
    engine, store, _ = restart(rules, tmp_path / "s.db", 30)  # 20 s down
    assert engine.tick(79) == []
    # 60 s of silence heard: 10 before the stop, 50 after the restart; none came since
    [firing] = engine.tick(80)
    assert firing.labels["device"] == "t-1"
    persist(engine, store, 81)
    store.close()
    engine, store, _ = restart(rules, tmp_path / "s.db", 90)
    assert engine.tick(200) == []  # the restored deadman alert is not announced again
    [resolved] = engine.evaluate(reading(20, 201), 201)
    assert (resolved.status, resolved.starts_at) == ("resolved", 80)
    store.close()


def test_deadman_clock_restarts_after_long_outage(tmp_path: Path) -> None:
    rules = [rule(absent_for="60s")]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(20, 0), 0)
        persist(engine, store, 10)
    back = 10 + 2 * HOUR
    engine, store, _ = restart(rules, tmp_path / "s.db", back)
    assert engine.tick(back + 59) == []
    assert statuses(engine.tick(back + 60)) == [(back + 60, "firing")]
    store.close()


def test_declared_sensor_alert_is_restored(tmp_path: Path) -> None:
    rules = [rule(absent_for="60s", expect=["t-9"])]
    engine = RuleEngine(rules, start=0)
    with StateStore.open(tmp_path / "s.db") as store:
        assert statuses(engine.tick(60)) == [(60, "firing")]
        persist(engine, store, 61)
    engine, store, out = restart(rules, tmp_path / "s.db", 70)
    assert out == []
    assert engine.tick(200) == []  # not announced again
    [resolved] = engine.evaluate(reading(1, 201, device="t-9"), 201)
    assert (resolved.status, resolved.starts_at) == ("resolved", 60)
    store.close()


@pytest.mark.parametrize(
    "new_rules",
    [
        pytest.param([rule(above=90)], id="rule-changed-while-down"),
        pytest.param([], id="rule-removed-while-down"),
    ],
)
def test_alerts_of_changed_or_removed_rules_resolve_at_restart(
    tmp_path: Path, new_rules: list[Rule]
) -> None:
    old = rule(above=80, severity="critical")
    engine = RuleEngine([old])
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(85, 100), 100)
        persist(engine, store, 100)
    engine, store, out = restart(new_rules, tmp_path / "s.db", 200)
    [resolved] = out
    assert (resolved.status, resolved.rule, resolved.starts_at) == ("resolved", old, 100)
    assert resolved.labels["device"] == "t-1"
    assert store.counts()[0] == 0
    store.close()


def test_alert_state_and_outbox_rows_commit_together(tmp_path: Path) -> None:
    """The service writes a transition's state and its outbox rows in one transaction."""
    store = StateStore.open(tmp_path / "s.db")
    outbox = Outbox(store.conn, 100, Metrics(CollectorRegistry()))
    engine = RuleEngine([rule(above=80)])
    [firing] = engine.evaluate(reading(90, 1), 1)
    records = engine.take_dirty()

    def crash_after_both() -> None:
        with store.transaction() as conn:
            store.write(conn, records)
            outbox.add([build_event(firing)])
            raise OSError("power cut")

    with pytest.raises(OSError, match="power cut"):
        crash_after_both()
    assert store.counts() == (0, 0)
    assert store.conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    with store.transaction() as conn:
        store.write(conn, records)
        outbox.add([build_event(firing)])
    assert store.counts() == (1, 0)
    # (Outbox's in-memory count resyncs at head() after a caller's rollback)
    assert store.conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    store.close()
