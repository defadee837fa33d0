"""Rules: YAML loading with file:line errors, the pure engine (tables), and alert events."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest

from sensord.alerts.lifecycle import build_event, fingerprint
from sensord.errors import ConfigError, Problem
from sensord.events import Reading, Severity
from sensord.rules import AlertTransition, Rule, RuleEngine, load_rule_file, load_rules

# The example from ARCHITECTURE.md, "Rule files, YAML (contract)", verbatim.
CONTRACT_RULES = """\
rules:
  - name: critical-temperature        # unique
    match: {kind: temperature}        # label globs: site, device, kind, any label
    above: 80                         # or below: X
    clear_below: 75                   # hysteresis; default: the condition no longer holds
    for: 10s                          # must hold this long before firing
    severity: critical                # critical | warning | info
    labels: {team: facilities}
    annotations:
      summary: "{site}/{device} temperature {value} above {threshold}"
  - name: sensor-silent
    match: {kind: temperature}
    absent_for: 60s                   # deadman: no reading for this long
    severity: warning
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rule_problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_rule_file(path)
    assert info.value.problems
    return info.value.problems


def make_rule(**fields: object) -> Rule:
    return Rule.model_validate({"name": "r", **fields})


def reading(
    value: float,
    ts: float,
    *,
    device: str = "t-1",
    site: str = "plant-1",
    kind: str = "temperature",
    labels: dict[str, str] | None = None,
) -> Reading:
    return Reading(site=site, device=device, kind=kind, value=value, ts=ts, labels=labels or {})


# ---------------------------------------------------------------- loading


def test_contract_example_loads(tmp_path: Path) -> None:
    rules = load_rule_file(write(tmp_path / "r.yaml", CONTRACT_RULES))
    assert [r.name for r in rules] == ["critical-temperature", "sensor-silent"]
    hot, silent = rules
    assert hot.match == {"kind": "temperature"}
    assert hot.above == 80.0
    assert hot.clear_below == 75.0
    assert hot.for_ == 10.0
    assert hot.severity is Severity.CRITICAL
    assert hot.labels == {"team": "facilities"}
    assert hot.threshold == 80.0
    assert "summary" in hot.annotations
    assert silent.absent_for == 60.0
    assert silent.severity is Severity.WARNING


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here yet\n", "rules: []\n"])
def test_empty_file_has_no_rules(tmp_path: Path, text: str) -> None:
    assert load_rule_file(write(tmp_path / "r.yaml", text)) == []


def test_load_rules_globs_relative_to_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "a.yaml", "rules:\n  - name: a\n    above: 1\n")
    write(tmp_path / "rules" / "b.yaml", "rules:\n  - name: b\n    below: 1\n")
    write(tmp_path / "rules" / "ignored.txt", "not yaml: [")
    rules = load_rules(["rules/*.yaml"], tmp_path)
    assert [r.name for r in rules] == ["a", "b"]


def test_load_rules_absolute_pattern(tmp_path: Path) -> None:
    path = write(tmp_path / "abs" / "a.yaml", "rules:\n  - name: a\n    above: 1\n")
    rules = load_rules([str(path)], tmp_path / "elsewhere")
    assert [r.name for r in rules] == ["a"]


# (YAML text, line of the problem, words the message must contain)
RULE_ERRORS = [
    pytest.param(
        "rules:\n  - name: x\n    above: 1\n    thresold: 3\n",
        4,
        ["thresold", "unknown key", "'x'"],
        id="unknown-field",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: 80: 3\n",
        3,
        ["YAML syntax error"],
        id="yaml-syntax",
    ),
    pytest.param(
        "rules:\n  - name: x\n\tabove: 1\n",
        3,
        ["YAML syntax error"],
        id="yaml-tab",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: 1\n    severity: info\n    above: 2\n",
        5,
        ["duplicate key", "above"],
        id="duplicate-key",
    ),
    pytest.param(
        "rules:\n  - name: ok\n    above: 1\n  - name: x\n    above: 80\n    clear_below: 85\n",
        4,
        ["clear_below", "above"],
        id="clear_below-above-above",
    ),
    pytest.param(
        "rules:\n  - name: x\n    below: 80\n    clear_below: 75\n",
        2,
        ["clear_below", "above"],
        id="clear_below-with-below",
    ),
    pytest.param(
        "rules:\n  - name: x\n    below: 10\n    clear_above: 5\n",
        2,
        ["clear_above", "below"],
        id="clear_above-below-below",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: 80\n    below: 10\n",
        2,
        ["exactly one condition", "above", "below"],
        id="two-conditions",
    ),
    pytest.param(
        "rules:\n  - name: x\n    severity: info\n",
        2,
        ["exactly one condition"],
        id="no-condition",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: 1\n    for: 5 parsecs\n",
        4,
        ["for", "5 parsecs"],
        id="bad-for",
    ),
    pytest.param(
        "rules:\n  - name: x\n    absent_for: 60s\n    for: 10s\n",
        2,
        ["for", "absent_for"],
        id="for-with-absent_for",
    ),
    pytest.param(
        'rules:\n  - name: x\n    above: 1\n    annotations:\n      summary: "{value.__class__}"\n',
        4,
        ["annotations", "value.__class__", "not allowed"],
        id="template-attribute",
    ),
    pytest.param(
        'rules:\n  - name: x\n    above: 1\n    annotations:\n      summary: "{labels[x]}"\n',
        4,
        ["annotations", "labels[x]", "not allowed"],
        id="template-item",
    ),
    pytest.param(
        'rules:\n  - name: x\n    above: 1\n    annotations:\n      summary: "{value!r}"\n',
        4,
        ["annotations", "conversion"],
        id="template-conversion",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: 1\n    severity: page\n",
        4,
        ["severity"],
        id="bad-severity",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: .nan\n",
        3,
        ["above", "finite"],
        id="nan-threshold",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: !!float abc\n",
        3,
        ["abc"],
        id="bad-tagged-value",
    ),
    pytest.param(
        "rules:\n  - name: x\n    above: !celsius 3\n",
        3,
        ["!celsius"],
        id="unknown-tag",
    ),
    pytest.param(
        "- name: x\n  above: 1\n",
        1,
        ["rules"],
        id="not-a-mapping",
    ),
    pytest.param(
        "rule:\n  - name: x\n    above: 1\n",
        1,
        ["rule", "unknown key"],
        id="unknown-top-level-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), RULE_ERRORS)
def test_rule_file_errors(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    path = write(tmp_path / "bad.yaml", text)
    problems = rule_problems(path)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.file == str(path)
    assert problem.line == line
    for word in words:
        assert word in problem.message
    assert str(problem).startswith(f"{path}:{line}: ")


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path / "rules" / "a.yaml", "rules:\n  - name: hot\n    above: 80\n")
    second = write(
        tmp_path / "rules" / "b.yaml",
        "# more rules\nrules:\n  - name: cold\n    below: 0\n  - name: hot\n    above: 90\n",
    )
    with pytest.raises(ConfigError) as info:
        load_rules(["rules/*.yaml"], tmp_path)
    [problem] = info.value.problems
    assert problem.file == str(second)
    assert problem.line == 5
    assert "'hot'" in problem.message
    assert str(first) in problem.message


def test_problems_from_every_file_are_collected(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "rules:\n  - name: a\n    abovee: 1\n")
    b = write(tmp_path / "b.yaml", "rules:\n  - name: b\n    above: [1\n")
    with pytest.raises(ConfigError) as info:
        load_rules(["*.yaml"], tmp_path)
    files = [p.file for p in info.value.problems]
    assert files == [str(a), str(b)]
    assert info.value.problems[0].line == 3


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    write(tmp_path / "rules" / "a.yaml", "rules: []\n")
    with pytest.raises(ConfigError) as info:
        load_rules(["rules/*.yaml", "more/*.yaml"], tmp_path)
    [problem] = info.value.problems
    assert "more/*.yaml" in problem.file
    assert "no rule file" in problem.message


# ---------------------------------------------------------------- engine tables

TICK = None  # a step whose value is TICK is a scheduler tick at that time, not a reading

# (rule fields, steps as (time, value or TICK), expected transitions as (time, status))
ENGINE_CASES = [
    pytest.param({"above": 80}, [(0, 79), (1, 81)], [(1, "firing")], id="above-fires-at-once"),
    pytest.param({"above": 80}, [(0, 80), (1, 79)], [], id="equal-is-not-above"),
    pytest.param(
        {"above": 80, "for": "10s"},
        [(0, 81), (5, 82), (9.9, 83), (10, 84), (11, 85)],
        [(10, "firing")],
        id="for-fires-after-10s-of-reading-time",
    ),
    pytest.param(
        {"above": 80, "for": "10s"},
        [(0, 81), (5, 79), (10, 81), (15, 82), (19, 81), (20, 81)],
        [(20, "firing")],
        id="for-cancelled-by-a-cool-reading",
    ),
    pytest.param(
        {"above": 80, "for": "10s"},
        [(0, 81), (5, 79), (10, TICK), (30, TICK)],
        [],
        id="cancelled-pending-never-ticks",
    ),
    pytest.param(
        {"above": 80, "clear_below": 75},
        [(0, 81), (1, 78), (2, 76), (3, 75), (4, 74)],
        [(0, "firing"), (4, "resolved")],
        id="hysteresis",
    ),
    pytest.param(
        {"above": 80, "clear_below": 75, "for": "10s"},
        [(0, 81), (5, 78), (10, 81), (20, 81)],
        [(20, "firing")],
        id="hysteresis-band-cancels-pending",
    ),
    pytest.param(
        {"above": 80},
        [(0, 81), (1, 80)],
        [(0, "firing"), (1, "resolved")],
        id="no-clear_below-resolves-when-not-above",
    ),
    pytest.param(
        {"below": 5},
        [(0, 6), (1, 5), (2, 4), (3, 5)],
        [(2, "firing"), (3, "resolved")],
        id="below",
    ),
    pytest.param(
        {"below": 5, "clear_above": 10},
        [(0, 4), (1, 8), (2, 10), (3, 10.5)],
        [(0, "firing"), (3, "resolved")],
        id="below-clear_above",
    ),
    pytest.param(
        {"above": 80},
        [(0, 81), (1, 90), (2, 95), (3, 99), (4, 70), (5, 60), (6, 50)],
        [(0, "firing"), (4, "resolved")],
        id="one-firing-one-resolved-per-episode",
    ),
    pytest.param(
        {"above": 80},
        [(0, 81), (1, 70), (2, 81), (3, 82), (4, 70)],
        [(0, "firing"), (1, "resolved"), (2, "firing"), (4, "resolved")],
        id="two-episodes",
    ),
    pytest.param(
        {"above": 80, "for": "10s"},
        [(0, 81), (5, TICK), (9.99, TICK), (10, TICK), (11, TICK), (12, 85), (13, 70)],
        [(10, "firing"), (13, "resolved")],
        id="tick-fires-pending-without-new-reading",
    ),
    pytest.param(
        {"above": 80},
        [(0, 79), (100, TICK), (1000, TICK)],
        [],
        id="tick-with-nothing-pending",
    ),
    pytest.param(
        {"absent_for": "60s"},
        [(0, 20), (30, TICK), (59.9, TICK), (60, TICK), (61, TICK), (70, 21), (71, 22)],
        [(60, "firing"), (70, "resolved")],
        id="deadman",
    ),
    pytest.param(
        {"absent_for": "60s"},
        [(0, 20), (60, TICK), (70, 21), (100, TICK), (130, TICK), (200, TICK)],
        [(60, "firing"), (70, "resolved"), (130, "firing")],
        id="deadman-fires-again-after-new-silence",
    ),
    pytest.param(
        {"absent_for": "60s"},
        [(0, 20), (50, 21), (100, TICK), (110, TICK)],
        [(110, "firing")],
        id="deadman-clock-restarts-on-each-reading",
    ),
]


def play(rule: Rule, steps: list[tuple[float, float | None]]) -> list[AlertTransition]:
    engine = RuleEngine([rule])
    out: list[AlertTransition] = []
    for now, value in steps:
        if value is TICK:
            out += engine.tick(now)
        else:
            assert value is not None
            out += engine.observe(reading(value, now), now)
    return out


@pytest.mark.parametrize(("fields", "steps", "expected"), ENGINE_CASES)
def test_engine(
    fields: dict[str, object],
    steps: list[tuple[float, float | None]],
    expected: list[tuple[float, str]],
) -> None:
    transitions = play(make_rule(**fields), steps)
    assert [(t.observed_at, t.status) for t in transitions] == expected


def test_firing_and_resolved_transitions_carry_times_and_values() -> None:
    rule = make_rule(above=80, clear_below=75, **{"for": "10s"})
    firing, resolved = play(rule, [(100, 81), (105, 83), (110, 84), (120, 90), (130, 74)])
    assert firing.status == "firing"
    assert firing.starts_at == 100  # when the condition began to hold
    assert firing.observed_at == 110
    assert firing.value == 84
    assert firing.ends_at is None
    assert resolved.status == "resolved"
    assert resolved.starts_at == 100
    assert resolved.ends_at == 130
    assert resolved.value == 74
    assert resolved.labels == {"site": "plant-1", "device": "t-1", "kind": "temperature"}


def test_tick_firing_carries_last_value() -> None:
    [firing] = play(make_rule(above=80, **{"for": "10s"}), [(0, 81), (3, 86), (10, TICK)])
    assert (firing.starts_at, firing.observed_at, firing.value) == (0, 10, 86)


def test_deadman_transitions() -> None:
    firing, resolved = play(make_rule(absent_for="60s"), [(0, 20), (60, TICK), (75, 21.5)])
    assert (firing.status, firing.value, firing.starts_at, firing.ends_at) == (
        "firing",
        None,
        60,
        None,
    )
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == ("resolved", 60, 75)


@pytest.mark.parametrize(
    ("match", "labels", "matches"),
    [
        ({"device": "t-*"}, {"site": "plant-1", "device": "t-7", "kind": "temperature"}, True),
        ({"device": "t-*"}, {"site": "plant-1", "device": "h-7", "kind": "temperature"}, False),
        ({"device": "T-*"}, {"site": "plant-1", "device": "t-7", "kind": "temperature"}, False),
        ({"device": "t-*"}, {"site": "plant-1", "device": "T-7", "kind": "temperature"}, False),
        ({"site": "plant-?", "kind": "temp*"}, {"site": "plant-2", "kind": "temperature"}, True),
        (
            {"site": "plant-?", "kind": "humidity"},
            {"site": "plant-2", "kind": "temperature"},
            False,
        ),
        ({"zone": "north"}, {"site": "plant-1", "device": "t-7", "kind": "temperature"}, False),
        ({"zone": "north"}, {"site": "plant-1", "zone": "north"}, True),
        ({}, {"site": "plant-1"}, True),
    ],
)
def test_rule_matches(match: dict[str, str], labels: dict[str, str], matches: bool) -> None:
    assert make_rule(above=1, match=match).matches(labels) is matches


def test_engine_applies_match_globs() -> None:
    engine = RuleEngine([make_rule(above=80, match={"device": "t-*", "zone": "n*"})])
    assert engine.observe(reading(90, 0, device="t-1", labels={"zone": "north"}), 0) != []
    assert engine.observe(reading(90, 0, device="h-1", labels={"zone": "north"}), 0) == []
    assert engine.observe(reading(90, 0, device="t-2"), 0) == []  # no zone label: no match
    assert engine.observe(reading(90, 0, device="t-3", labels={"zone": "south"}), 0) == []


def test_engine_keeps_state_per_sensor() -> None:
    engine = RuleEngine([make_rule(above=80)])
    assert engine.observe(reading(70, 0, device="t-2"), 0) == []
    [a] = engine.observe(reading(90, 1, device="t-1"), 1)
    assert (a.status, a.labels["device"]) == ("firing", "t-1")
    assert engine.observe(reading(75, 2, device="t-2"), 2) == []  # t-2 has nothing to resolve
    [b] = engine.observe(reading(91, 3, device="t-2"), 3)
    assert (b.status, b.labels["device"]) == ("firing", "t-2")
    assert engine.observe(reading(95, 4, device="t-1"), 4) == []  # t-1 already firing
    [c] = engine.observe(reading(60, 5, device="t-1"), 5)
    assert (c.status, c.labels["device"]) == ("resolved", "t-1")
    assert engine.observe(reading(92, 6, device="t-2"), 6) == []  # t-2 still firing


def test_engine_deadman_per_sensor() -> None:
    engine = RuleEngine([make_rule(absent_for="60s")])
    engine.observe(reading(20, 0, device="t-1"), 0)
    engine.observe(reading(20, 30, device="t-2"), 30)
    [first] = engine.tick(60)
    assert first.labels["device"] == "t-1"
    [second] = engine.tick(90)
    assert second.labels["device"] == "t-2"
    assert engine.tick(500) == []


def test_every_matching_rule_is_evaluated() -> None:
    warn = Rule.model_validate({"name": "warm", "above": 30, "severity": "warning"})
    crit = Rule.model_validate({"name": "hot", "above": 80, "severity": "critical"})
    engine = RuleEngine([warn, crit])
    assert [t.rule.name for t in engine.observe(reading(50, 0), 0)] == ["warm"]
    assert [t.rule.name for t in engine.observe(reading(90, 1), 1)] == ["hot"]
    assert [(t.rule.name, t.status) for t in engine.observe(reading(20, 2), 2)] == [
        ("warm", "resolved"),
        ("hot", "resolved"),
    ]


# ---------------------------------------------------------------- alert events

EVENT_KEYS = {
    "event_id",
    "fingerprint",
    "status",
    "rule",
    "severity",
    "labels",
    "annotations",
    "value",
    "threshold",
    "starts_at",
    "ends_at",
    "observed_at",
}

HOT = Rule.model_validate(
    {
        "name": "critical-temperature",
        "match": {"kind": "temperature"},
        "above": 80,
        "severity": "critical",
        "labels": {"team": "facilities"},
        "annotations": {
            "summary": "{site}/{device} temperature {value:.1f} above {threshold:g}",
            "runbook": "see {runbook_url} for {alertname}",
        },
    }
)


def hot_episode(device: str = "t-7") -> tuple[AlertTransition, AlertTransition]:
    engine = RuleEngine([HOT])
    labels = {"area": "hall-2"}
    [firing] = engine.observe(reading(81.24, 1_700_000_000, device=device, labels=labels), 0)
    [resolved] = engine.observe(reading(70, 1_700_000_060, device=device, labels=labels), 0)
    return firing, resolved


def test_fingerprint_is_stable_and_per_sensor() -> None:
    firing, resolved = hot_episode()
    again, _ = hot_episode()
    other, _ = hot_episode(device="t-8")
    fp = build_event(firing).fingerprint
    assert fp == build_event(resolved).fingerprint
    assert fp == build_event(again).fingerprint
    assert fp != build_event(other).fingerprint
    assert fingerprint("r", {"a": "1", "b": "2"}) == fingerprint("r", {"b": "2", "a": "1"})
    assert fingerprint("r", {"a": "1"}) != fingerprint("s", {"a": "1"})
    # stable across processes and hosts (no salted hash()): sha256(rule, sorted labels)[:16]
    assert fingerprint("r", {"site": "s", "device": "d"}) == "8cd62955dfb4a241"


def test_event_labels_and_annotations() -> None:
    event = build_event(hot_episode()[0])
    assert event.labels == {
        "alertname": "critical-temperature",
        "site": "plant-1",
        "device": "t-7",
        "kind": "temperature",
        "area": "hall-2",
        "severity": "critical",
        "team": "facilities",
    }
    assert event.annotations["summary"] == "plant-1/t-7 temperature 81.2 above 80"
    assert event.annotations["runbook"] == "see {runbook_url} for critical-temperature"


def test_event_json_shape() -> None:
    firing, resolved = hot_episode()
    body = build_event(firing).model_dump(mode="json")
    assert set(body) == EVENT_KEYS
    assert body["status"] == "firing"
    assert body["rule"] == "critical-temperature"
    assert body["severity"] == "critical"
    assert body["value"] == pytest.approx(81.24)
    assert body["threshold"] == 80.0
    assert body["ends_at"] is None
    uuid.UUID(body["event_id"])
    starts = datetime.fromisoformat(body["starts_at"])
    assert starts.utcoffset() is not None
    assert starts.timestamp() == 1_700_000_000

    done = build_event(resolved).model_dump(mode="json")
    assert set(done) == EVENT_KEYS
    assert done["status"] == "resolved"
    assert datetime.fromisoformat(done["ends_at"]).timestamp() == 1_700_000_060
    assert done["starts_at"] == body["starts_at"]
    assert done["event_id"] != body["event_id"]


def test_routing_key() -> None:
    event = build_event(hot_episode()[0])
    assert event.routing_key == "critical.plant-1.temperature"


def test_deadman_event() -> None:
    silent = Rule.model_validate(
        {
            "name": "sensor-silent",
            "absent_for": "60s",
            "annotations": {"summary": "{device} silent, last value {value}"},
        }
    )
    engine = RuleEngine([silent])
    engine.observe(reading(20, 0), 0)
    [firing] = engine.tick(60)
    event = build_event(firing)
    body = event.model_dump(mode="json")
    assert body["value"] is None
    assert body["threshold"] == 60.0
    assert body["severity"] == "warning"
    assert event.annotations["summary"] == "t-1 silent, last value n/a"
    assert event.routing_key == "warning.plant-1.temperature"
