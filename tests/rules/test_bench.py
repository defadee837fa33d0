"""bench/rules.py runs and reports what it claims (no timing is asserted: CONVENTIONS.md 10)."""

from __future__ import annotations

from tests.support import run_bench


def test_rules_benchmark_smoke() -> None:
    result = run_bench(
        *("bench.rules", "--sensors", "50", "--readings", "3000", "--chunk", "1000"),
        *("--excursions", "0.05"),
        timeout=None,  # as before: only pytest's own timeout
    )
    threshold = result["scenarios"]["threshold"]
    assert threshold["evaluations"] == 3000 * 10  # every reading meets all ten rules
    assert threshold["memory"]["states"] == 50 * 10
    assert threshold["transitions"]["firing"] > 0
    grouped = result["scenarios"]["grouped"]
    assert grouped["evaluations"] == 3000 * 12  # the ten threshold rules and two group rules
    assert grouped["memory"]["states"] == 50 * 10 + 10 * 2  # 10 sites: one group per rule
    assert grouped["transitions"]["firing"] > 0
    mixed = result["scenarios"]["mixed"]
    assert mixed["ticks"]["count"] == 2  # one per simulated second: 3000 readings, 1 ms apart
    for scenario in result["scenarios"].values():
        for key in ("engine", "engine_unfolded", "bare_loop"):
            assert scenario[key]["evaluations_per_s"] > 0
        assert scenario["ratio_to_bare"] > 0
