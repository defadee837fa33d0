"""Group rules (`aggregate.by`) across restarts (through the SQLite state file), hot
reloads, and the loader's errors for impossible combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.alerts.lifecycle import fingerprint
from sensord.errors import ConfigError
from sensord.events import Reading
from sensord.rules import AlertTransition, Rule, RuleEngine, load_rule_file
from sensord.state.store import StateStore
from tests.rules.test_groups import group_rule as plain_group_rule

HOUR = 3600.0
GROUP = {"site": "plant-1", "kind": "temperature"}


def group_rule(**fields: object) -> Rule:
    """test_groups' site average, with a hysteresis band (28) unless told otherwise."""
    return plain_group_rule(**{"clear_below": 28, **fields})


def reading(value: float, ts: float, device: str = "t-1") -> Reading:
    return Reading(site="plant-1", device=device, kind="temperature", value=value, ts=ts)


def persist(engine: RuleEngine, store: StateStore, now: float) -> None:
    """What the service does on each tick: changed states, clocks and the heartbeat."""
    store.save(engine.take_dirty(), engine.clocks(), saved_at=now, started_at=engine.start)


def restart(
    rules: list[Rule], path: Path, now: float
) -> tuple[RuleEngine, StateStore, list[AlertTransition]]:
    store = StateStore.open(path)
    engine = RuleEngine(rules)
    out = engine.restore(store.load(), now, HOUR)
    store.save(engine.take_dirty())
    return engine, store, out


# ---------------------------------------------------------------- restart


def test_a_firing_group_is_restored_firing_and_resolves_later(tmp_path: Path) -> None:
    rules = [group_rule()]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(29, 100, "t-1"), 100)
        [firing] = engine.evaluate(reading(33, 101, "t-2"), 101)  # avg 31
        persist(engine, store, 102)
        [record] = store.load().records
        assert (record.rule, record.labels, record.firing_since) == ("site-too-warm", GROUP, 101)
    engine, store, out = restart(rules, tmp_path / "s.db", 130)
    assert out == []  # not announced again
    assert list(engine.sensors()) == []  # the group's record made no sensor
    [(rule, labels)] = engine.firing()
    assert (rule.name, labels) == ("site-too-warm", GROUP)
    # windows are not saved: the group judges the readings after the restart
    assert engine.evaluate(reading(29, 131, "t-1"), 131) == []  # 29: in the band, firing
    [resolved] = engine.evaluate(reading(20, 132, "t-2"), 132)  # avg 24.5 < 28
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == ("resolved", 101, 132)
    assert fingerprint(resolved.rule.name, resolved.labels) == fingerprint(
        firing.rule.name, firing.labels
    )
    persist(engine, store, 133)
    assert store.counts()[0] == 0  # the idle group's row is gone
    store.close()


def test_a_pending_group_resumes_its_for_timer(tmp_path: Path) -> None:
    rules = [group_rule(**{"for": "10s"})]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        assert engine.evaluate(reading(35, 0), 0) == []
        persist(engine, store, 1)
    engine, store, _ = restart(rules, tmp_path / "s.db", 3)
    assert engine.evaluate(reading(35, 5, "t-2"), 5) == []
    [firing] = engine.evaluate(reading(35, 10, "t-3"), 10)
    assert (firing.starts_at, firing.labels) == (0, GROUP)
    store.close()


def test_a_group_and_a_sensor_with_equal_labels_keep_apart(tmp_path: Path) -> None:
    """by: [site, device, kind] gives a group the labels of a sensor; the two states
    (of two rules) are stored and restored each to its own owner."""
    whole = group_rule(
        name="per-device-group",
        aggregate={"fn": "max", "window": "5m", "by": ["site", "device", "kind"]},
    )
    plain = group_rule(name="plain", aggregate=None, clear_below=None, above=30)
    rules = [whole, plain]
    engine = RuleEngine(rules)
    with StateStore.open(tmp_path / "s.db") as store:
        out = engine.evaluate(reading(40, 0), 0)
        assert sorted(t.rule.name for t in out) == ["per-device-group", "plain"]
        assert out[0].labels == out[1].labels  # the same labels, two owners
        persist(engine, store, 1)
        assert store.counts()[0] == 2
    engine, store, out = restart(rules, tmp_path / "s.db", 2)
    assert out == []
    assert engine.state_count == 2  # one sensor state, one group: not two sensor states
    assert sorted(r.name for r, _ in engine.firing()) == ["per-device-group", "plain"]
    resolved = engine.evaluate(reading(10, 3), 3)
    # the plain rule resolves on the raw 10; the group's max over its window is 10 too
    assert sorted((t.rule.name, t.status) for t in resolved) == [
        ("per-device-group", "resolved"),
        ("plain", "resolved"),
    ]
    store.close()


def test_a_changed_group_rule_resolves_at_restart(tmp_path: Path) -> None:
    engine = RuleEngine([group_rule()])
    with StateStore.open(tmp_path / "s.db") as store:
        engine.evaluate(reading(35, 0), 0)
        persist(engine, store, 1)
    engine, store, out = restart([group_rule(above=40, clear_below=None)], tmp_path / "s.db", 2)
    [resolved] = out
    assert (resolved.status, resolved.labels, resolved.starts_at) == ("resolved", GROUP, 0)
    assert store.counts()[0] == 0
    store.close()


# ---------------------------------------------------------------- hot reload


def test_reload_keeps_an_unchanged_group_rule_with_its_window() -> None:
    engine = RuleEngine([group_rule()])
    engine.evaluate(reading(33, 0, "t-1"), 0)
    engine.evaluate(reading(29, 1, "t-2"), 1)  # avg 31, firing since 0
    other = Rule.model_validate({"name": "other", "above": 100})
    assert engine.replace_rules([group_rule(), other], 2) == []
    [(rule, labels)] = engine.firing()
    assert (rule.name, labels) == ("site-too-warm", GROUP)
    # the window survived: the resolving value is (33 + 29 + 20) / 3, not 20
    [resolved] = engine.evaluate(reading(20, 3, "t-3"), 3)
    assert resolved.value == pytest.approx(82 / 3)
    assert resolved.starts_at == 0


def test_reload_window_kept_is_visible_in_the_value() -> None:
    engine = RuleEngine([group_rule()])
    engine.evaluate(reading(33, 0, "t-1"), 0)
    assert engine.replace_rules([group_rule()], 1) == []
    # (33 + 25) / 2 = 29: in the band, still firing (25 alone would resolve it)
    assert engine.evaluate(reading(25, 2, "t-2"), 2) == []
    assert len(engine.firing()) == 1


def test_reload_resolves_a_changed_or_removed_group_rule() -> None:
    engine = RuleEngine([group_rule()])
    engine.evaluate(reading(35, 0), 0)
    [resolved] = engine.replace_rules([group_rule(above=50, clear_below=None)], 5)
    assert (resolved.status, resolved.labels, resolved.ends_at) == ("resolved", GROUP, 5)
    # the changed rule starts afresh, with an empty window, for the sensors already known
    assert engine.evaluate(reading(45, 6, "t-2"), 6) == []
    [firing] = engine.evaluate(reading(60, 7), 7)  # (45 + 60) / 2 = 52.5
    assert (firing.labels, firing.value) == (GROUP, 52.5)
    [gone] = engine.replace_rules([], 8)
    assert (gone.status, gone.rule.name) == ("resolved", "site-too-warm")
    assert engine.state_count == 0
    assert engine.firing() == []


def test_a_group_rule_added_at_reload_applies_to_known_sensors() -> None:
    plain = Rule.model_validate({"name": "plain", "above": 100})
    engine = RuleEngine([plain])
    engine.evaluate(reading(20, 0, "t-1"), 0)
    engine.replace_rules([plain, group_rule()], 1)
    [firing] = engine.evaluate(reading(35, 2, "t-1"), 2)
    assert (firing.rule.name, firing.labels) == ("site-too-warm", GROUP)


# ---------------------------------------------------------------- loader


def rule_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - name: g\n    match: {kind: temperature}\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        pytest.param(
            "    above: 30\n    aggregate: {fn: avg, window: 5m, by: [site]}\n"
            "    rate: {per: 1h}\n",
            2,
            ["rule 'g'", "aggregate.by", "rate"],
            id="with-rate",
        ),
        pytest.param(
            "    absent_for: 1m\n    aggregate: {fn: avg, window: 5m, by: [site]}\n",
            2,
            ["aggregate.by", "absent_for"],
            id="with-absent_for",
        ),
        pytest.param(
            "    above: 30\n    expect: [t-1]\n    aggregate: {fn: avg, window: 5m, by: [site]}\n",
            2,
            ["aggregate.by", "expect"],
            id="with-expect",
        ),
        pytest.param(
            "    above: 30\n    aggregate:\n      fn: avg\n      window: 5m\n      by: []\n",
            8,
            ["aggregate.by", "at least one label"],
            id="empty",
        ),
        pytest.param(
            "    above: 30\n    aggregate:\n      fn: avg\n      window: 5m\n"
            "      by: [site, kind, site]\n",
            8,
            ["aggregate.by", "'site' is listed twice"],
            id="duplicate",
        ),
        pytest.param(
            "    above: 30\n    aggregate:\n      fn: avg\n      window: 5m\n"
            "      group_by: [site]\n",
            8,
            ["aggregate.group_by", "unknown key"],
            id="unknown-key-in-aggregate",
        ),
        pytest.param(
            "    above: 30\n    by: [site]\n",
            5,
            ["by", "unknown key"],
            id="by-outside-aggregate",
        ),
    ],
)
def test_group_rule_errors_name_the_line(
    tmp_path: Path, body: str, line: int, words: list[str]
) -> None:
    path = rule_file(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_rule_file(path)
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(path), line), problem
    for word in words:
        assert word in problem.message, problem.message
