"""A resolved event reads as a resolution: clear thresholds, generated summaries, and the
`resolved_summary` template (sensord/rules/resolution.py, sensord/alerts/lifecycle.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sensord.alerts.lifecycle import build_event
from sensord.events import Reading
from sensord.rules import AlertTransition, Rule, RuleEngine
from sensord.rules.resolution import clear_threshold, is_clear, resolution_summary

T1 = {"site": "plant-1", "device": "t-1", "kind": "temperature"}


def rule(**spec: Any) -> Rule:
    return Rule.model_validate({"name": "r", **spec})


ABOVE = rule(above=80)
ABOVE_HYST = rule(above=80, clear_below=75)
BELOW = rule(below=30)
BELOW_HYST = rule(below=30, clear_above=33)
OUTSIDE = rule(outside=[30, 60])
OUTSIDE_HYST = rule(outside=[30, 60], clear_above=33, clear_below=57)
INSIDE = rule(inside=[-2, 2])
INSIDE_HYST = rule(inside=[-2, 2], clear_below=-4, clear_above=4)
DEADMAN = rule(absent_for="60s")
AVG = rule(above=8, aggregate={"fn": "avg", "window": "10m"})
RATE = rule(below=-5, rate={"per": "1h"})


@pytest.mark.parametrize(
    ("r", "value", "expected"),
    [
        (ABOVE, 56.6, 80),
        (ABOVE_HYST, 56.6, 75),
        (ABOVE_HYST, None, 75),
        (BELOW, 31, 30),
        (BELOW_HYST, 34, 33),
        (OUTSIDE, 31, 30),  # the nearer bound
        (OUTSIDE, 59, 60),
        (OUTSIDE_HYST, 40, 33),
        (OUTSIDE_HYST, 50, 57),
        (OUTSIDE, None, None),
        (INSIDE, -3, -2),  # the bound on the value's side
        (INSIDE, 3, 2),
        (INSIDE_HYST, -5, -4),
        (INSIDE_HYST, 5, 4),
        (DEADMAN, 20, None),
        (AVG, 7.2, 8),
        (RATE, -4.8, -5),
    ],
)
def test_clear_threshold(r: Rule, value: float | None, expected: float | None) -> None:
    assert clear_threshold(r, value) == expected


@pytest.mark.parametrize(
    ("r", "value", "expected"),
    [
        (ABOVE, 80, True),  # not in breach any more: the bound itself is clear
        (ABOVE, 80.5, False),
        (ABOVE_HYST, 74.9, True),
        (ABOVE_HYST, 75, False),  # the hysteresis band: still firing
        (ABOVE_HYST, 78, False),
        (BELOW, 30, True),
        (BELOW, 29, False),
        (BELOW_HYST, 33.1, True),
        (BELOW_HYST, 33, False),
        (OUTSIDE, 30, True),
        (OUTSIDE, 60, True),
        (OUTSIDE, 61, False),
        (OUTSIDE_HYST, 45, True),
        (OUTSIDE_HYST, 58, False),
        (OUTSIDE_HYST, 32, False),
        (INSIDE, -2.5, True),
        (INSIDE, 2, False),
        (INSIDE_HYST, -3, False),
        (INSIDE_HYST, 4.5, True),
        (DEADMAN, 20, False),
    ],
)
def test_is_clear(r: Rule, value: float, expected: bool) -> None:
    assert is_clear(r, value) is expected


@pytest.mark.parametrize(
    ("r", "labels", "value", "expected"),
    [
        (ABOVE_HYST, T1, 56.6, "plant-1/t-1 temperature 56.6, back below 75"),
        (ABOVE, T1, 74.0, "plant-1/t-1 temperature 74, back below 80"),
        (BELOW_HYST, T1, 34, "plant-1/t-1 temperature 34, back above 33"),
        (OUTSIDE_HYST, T1, 45, "plant-1/t-1 temperature 45, back between 33 and 57"),
        (OUTSIDE, T1, 60, "plant-1/t-1 temperature 60, back between 30 and 60"),
        (INSIDE_HYST, T1, -5, "plant-1/t-1 temperature -5, back below -4"),
        (INSIDE_HYST, T1, 4.5, "plant-1/t-1 temperature 4.5, back above 4"),
        (AVG, T1, 7.25, "plant-1/t-1 temperature avg 7.25 over 10m, back below 8"),
        (RATE, T1, -4.8, "plant-1/t-1 temperature rate -4.8/1h, back above -5"),
        (DEADMAN, T1, 20, "plant-1/t-1 temperature reporting again"),
        # a resolution without a value that came back: a changed or removed rule's alert
        (DEADMAN, T1, None, "plant-1/t-1 temperature no longer firing"),
        (ABOVE_HYST, T1, 91, "plant-1/t-1 temperature 91, no longer firing"),
        (ABOVE_HYST, T1, None, "plant-1/t-1 temperature no longer firing"),
        # a declared, never-heard sensor has the rule's literal match labels only
        (DEADMAN, {"device": "front-door"}, 1, "front-door reporting again"),
        (DEADMAN, {"site": "p", "device": "d", "zone": "n"}, 1, "p/d reporting again"),
    ],
)
def test_resolution_summary(
    r: Rule, labels: dict[str, str], value: float | None, expected: str
) -> None:
    assert resolution_summary(r, labels, value) == expected


def reading(value: float, ts: float, device: str = "t-1") -> Reading:
    return Reading(site="plant-1", device=device, kind="temperature", value=value, ts=ts)


def episode(r: Rule, *values: float) -> list[AlertTransition]:
    engine = RuleEngine([r])
    out: list[AlertTransition] = []
    for i, v in enumerate(values):
        out += engine.evaluate(reading(v, 1_700_000_000 + i), 1_700_000_000 + i)
    return out


SUMMARY = "{site}/{device} temperature {value:.1f} above {threshold:g}"


def test_a_resolved_event_has_a_generated_summary_and_keeps_its_threshold() -> None:
    hot = rule(above=80, clear_below=75, annotations={"summary": SUMMARY, "runbook": "{rule}"})
    firing, resolved = (build_event(tr) for tr in episode(hot, 81.25, 78, 56.6))
    assert firing.annotations == {
        "summary": "plant-1/t-1 temperature 81.2 above 80",
        "runbook": "r",
    }
    assert resolved.status == "resolved"
    assert resolved.annotations == {
        "summary": "plant-1/t-1 temperature 56.6, back below 75",
        "runbook": "r",
    }
    # the body contract: `threshold` is the rule's firing threshold on both events
    assert firing.threshold == resolved.threshold == 80.0
    assert resolved.value == 56.6


def test_resolved_summary_template_and_clear_threshold_field() -> None:
    hot = rule(
        above=80,
        clear_below=75,
        annotations={
            "summary": SUMMARY,
            "resolved_summary": "{device} cooled to {value:.1f} (< {clear_threshold:g})",
        },
    )
    firing, resolved = (build_event(tr) for tr in episode(hot, 81.25, 56.6))
    # resolved_summary is sensord's instruction, not an annotation of the alert
    assert firing.annotations == {"summary": "plant-1/t-1 temperature 81.2 above 80"}
    assert resolved.annotations == {"summary": "t-1 cooled to 56.6 (< 75)"}


def test_resolved_summary_without_a_summary() -> None:
    hot = rule(above=80, annotations={"resolved_summary": "{device} fine again"})
    firing, resolved = (build_event(tr) for tr in episode(hot, 81, 70))
    assert firing.annotations == {}
    assert resolved.annotations == {"summary": "t-1 fine again"}


def test_no_summary_no_generated_one() -> None:
    hot = rule(above=80, annotations={"runbook": "https://wiki/{rule}"})
    _, resolved = (build_event(tr) for tr in episode(hot, 81, 70))
    assert resolved.annotations == {"runbook": "https://wiki/r"}


def test_clear_threshold_in_a_firing_template() -> None:
    hot = rule(
        above=80,
        clear_below=75,
        annotations={"summary": "{value:g} above {threshold:g}, clears under {clear_threshold}"},
    )
    [firing] = (build_event(tr) for tr in episode(hot, 81))
    assert firing.annotations == {"summary": "81 above 80, clears under 75.0"}


def test_deadman_resolution_through_the_engine() -> None:
    silent = rule(absent_for="60s", annotations={"summary": "{device} sent nothing for 60s"})
    engine = RuleEngine([silent])
    engine.evaluate(reading(20, 0), 0)
    [firing] = engine.tick(60)
    [resolved] = engine.evaluate(reading(21, 70), 70)
    assert build_event(firing).annotations == {"summary": "t-1 sent nothing for 60s"}
    event = build_event(resolved)
    assert event.annotations == {"summary": "plant-1/t-1 temperature reporting again"}
    assert event.threshold == 60.0  # absent_for, as on the firing event


def test_a_removed_rule_does_not_claim_the_value_came_back() -> None:
    hot = rule(above=80, annotations={"summary": SUMMARY})
    engine = RuleEngine([hot])
    [_firing] = engine.evaluate(reading(91, 0), 0)
    [resolved] = engine.replace_rules([], 10)
    assert build_event(resolved).annotations == {
        "summary": "plant-1/t-1 temperature 91, no longer firing"
    }
