"""The chaos suite's pure parts: the reference evaluator, the plan, the burst, the schedule."""

from __future__ import annotations

import pytest

from sensord.ingest.payload import REASONS
from tests.chaos.plan import (
    ABOVE,
    BURST_REASONS,
    CLEAR_BELOW,
    AlertPlan,
    FaultKind,
    PlanReading,
    device_values,
    malformed,
    reference_transitions,
    schedule,
)


def series(*values: float, device: str = "a-0") -> list[PlanReading]:
    return [PlanReading(i * 0.5, device, v, 1000 + i) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((50, 90, 91, 60), [("firing", 1001), ("resolved", 1003)]),
        ((50, 78, 79, 60), []),  # the band alone never fires
        ((90, 78, 77, 74), [("firing", 1000), ("resolved", 1003)]),  # the band keeps it firing
        ((80, 75, 80.5, 75), [("firing", 1002)]),  # on a threshold is neither breach nor clear
        (
            (90, 60, 90, 60),
            [("firing", 1000), ("resolved", 1001), ("firing", 1002), ("resolved", 1003)],
        ),
    ],
)
def test_reference_evaluator_is_threshold_with_hysteresis(
    values: tuple[float, ...], expected: list[tuple[str, int]]
) -> None:
    assert [(t.status, t.ts_ms) for t in reference_transitions(series(*values))] == expected


def test_devices_are_evaluated_apart() -> None:
    readings = series(90, device="a-0") + series(60, 90, device="a-1")
    got = [(t.device, t.status) for t in reference_transitions(readings)]
    assert got == [("a-0", "firing"), ("a-1", "firing")]


def test_plan_values_stay_clear_of_the_thresholds_and_alert_often() -> None:
    values = device_values(7, "a-3", 400)
    assert len(values) == 400
    for v in values:
        assert abs(v - ABOVE) >= 0.5
        assert abs(v - CLEAR_BELOW) >= 0.5
    plan = AlertPlan(7, 12, 0.5, 60, 1_764_331_200_000)
    assert len(plan.readings) == 12 * 120
    assert [r.due for r in plan.readings] == sorted(r.due for r in plan.readings)
    expected = plan.expected()
    assert len(expected) > 12 * 4  # a few episodes per device per minute
    assert plan.expected() == AlertPlan(7, 12, 0.5, 60, 1_764_331_200_000).expected()
    per_device: dict[str, list[int]] = {}
    for r in plan.readings:
        per_device.setdefault(r.device, []).append(r.ts_ms)
    assert all(ts == sorted(set(ts)) for ts in per_device.values())  # unique, increasing


def test_the_burst_covers_every_refusal_reason_of_sensord() -> None:
    assert set(BURST_REASONS) == set(REASONS)
    reasons = [malformed(i, "root", 0)[2] for i in range(len(BURST_REASONS))]
    assert reasons == list(BURST_REASONS)
    topic, payload, _ = malformed(BURST_REASONS.index("too_large"), "root", 0)
    assert len(payload) > 65536
    assert topic == "root/chaos/m-4/temperature"


def test_the_full_schedule_is_the_issues() -> None:
    faults = schedule(300)
    kinds = [f.kind for f in faults]
    assert kinds.count(FaultKind.SIGKILL) == 3
    [cut] = [f for f in faults if f.kind is FaultKind.RABBITMQ_CUT]
    assert cut.duration == 30
    [flap] = [f for f in faults if f.kind is FaultKind.RABBITMQ_FLAP]
    assert flap.count == 5
    [hook] = [f for f in faults if f.kind is FaultKind.WEBHOOK_503]
    assert hook.duration == 60
    assert any(
        hook.at < f.at < hook.at + hook.duration for f in faults if f.kind is FaultKind.SIGKILL
    )
    assert {FaultKind.MOSQUITTO_RESTART, FaultKind.MALFORMED_BURST} <= set(kinds)
    assert all(f.at + f.duration < 300 - 30 for f in faults)  # time to drain at the end
    short = schedule(60)
    assert len({f.kind for f in short}) == len(FaultKind)  # every kind, once
    assert all(f.at + f.duration < 60 for f in short)
